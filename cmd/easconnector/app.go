package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/easconnector/easconnector/cache"
	"github.com/easconnector/easconnector/config"
	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/mdm"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/pipeline/notify"
	"github.com/easconnector/easconnector/runspace"
)

// appMode says which parts of the connector a command needs.
type appMode int

const (
	// modeDaemon (run): state lock, notifier; the Exchange connection is
	// retried until it succeeds, so a service started during an Exchange
	// outage waits instead of failing.
	modeDaemon appMode = iota
	// modeOnce (sync): state lock, notifier; one connection attempt.
	modeOnce
	// modeDryRun (plan): no lock, since a running service may own the state
	// directory: the engine works on a copy of the state in a temporary
	// directory and writes nothing to Exchange.
	modeDryRun
)

// mailboxCacheAge bounds how old a cached mailbox snapshot may be; the
// daily full sync re-reads every mailbox anyway.
const mailboxCacheAge = 24 * time.Hour

// closeFloor is the least time given to closing the Exchange sessions at
// shutdown, even when the in-flight sync used up the shutdown budget: a
// shell left open holds one of the account's PowerShell quota slots.
const closeFloor = 3 * time.Second

// app is the connector's components, built in dependency order by
// startApp (state directory → runspace pool → Exchange client → MDM source
// → caches → notifier → engine; the MDM source, which needs only the file,
// is built before connecting) and torn down in reverse by stop.
type app struct {
	cfg      *config.Config
	log      *slog.Logger
	mode     appMode
	stateDir string // the configured state directory
	lock     *stateLock
	tmpDir   string // modeDryRun: the engine's private state directory

	pool         *runspace.Pool
	client       *exchange.Client
	orgDefault   exchange.AccessLevel // as Exchange reported it at start
	source       mdm.Source
	mdmSet       *metrics.Set
	cacheSet     *metrics.Set
	mailboxes    *cache.MailboxCache
	fingerprints *cache.FingerprintCache
	state        *pipeline.State
	notifier     *notify.Notifier
	notifyStop   context.CancelFunc
	notifyDone   chan struct{}
	engine       *pipeline.Engine
}

// appOptions tune startApp.
type appOptions struct {
	mode     appMode
	progress func(pipeline.ProgressEvent)
	// writeGrace is how long a write that is in flight when its sync is
	// cancelled may take to finish (see drainExchange).
	writeGrace time.Duration
	// lockCommand names the command in the lock file ("run", "sync").
	lockCommand string
}

// startApp builds the components in dependency order. On error, what was
// built is stopped again.
func startApp(ctx context.Context, cfg *config.Config, log *slog.Logger, o appOptions) (a *app, err error) {
	a = &app{cfg: cfg, log: log, mode: o.mode, stateDir: cfg.Sync.StateDir}
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeFloor)
			defer cancel()
			_ = a.stop(sctx)
			a = nil
		}
	}()

	// State directory: owner-only, and locked against a second writer.
	if err := config.MkdirPrivate(a.stateDir); err != nil {
		return a, fmt.Errorf("sync.state_dir: %w", err)
	}
	if err := config.CheckPrivateDir(a.stateDir); err != nil {
		return a, err
	}
	if o.mode != modeDryRun {
		if a.lock, err = lockStateDir(a.stateDir, o.lockCommand); err != nil {
			return a, err
		}
	}

	// Everything that reads secrets or can be wrong in the file, before
	// connecting to Exchange (which a service may wait for): the MDM
	// source, which makes no request yet, and the notifier's options.
	a.mdmSet = metrics.NewSet()
	if a.source, err = cfg.MDMSource(log, a.mdmSet); err != nil {
		return a, err
	}
	wantNotifier := cfg.Notify.Enabled && o.mode != modeDryRun
	var nopts notify.Options
	if wantNotifier {
		if nopts, err = cfg.NotifyOptions(); err != nil {
			return a, err
		}
	}
	if cfg.Policy.DefaultAccessLevel != "" {
		if _, err := cfg.PipelinePolicy(""); err != nil {
			return a, err
		}
	}

	// Runspace pool.
	ropts, err := cfg.RunspaceOptions()
	if err != nil {
		return a, err
	}
	ropts.Logger, ropts.Metrics = log, metrics.NewSet()
	if a.pool, err = runspace.NewPool(ropts); err != nil {
		return a, fmt.Errorf("exchange: %w", err)
	}
	if err := startPool(ctx, a.pool, log, o.mode == modeDaemon); err != nil {
		return a, err
	}

	// Exchange client, and the org default the policy reasons about when
	// the file does not declare one.
	a.client = exchange.New(a.pool)
	if cfg.Policy.DefaultAccessLevel == "" {
		s, err := a.client.OrgSettings(ctx)
		if err != nil {
			return a, fmt.Errorf("read the ActiveSync organization settings: %w", err)
		}
		a.orgDefault = s.DefaultAccessLevel
	}
	eopts, err := cfg.PipelineOptions(a.orgDefault)
	if err != nil {
		return a, err
	}

	// Caches: only a long-lived process gains from them.
	if o.mode == modeDaemon {
		a.cacheSet = metrics.NewSet()
		if a.mailboxes, err = cache.NewMailboxCache(cache.Options{Metrics: a.cacheSet}, mailboxCacheAge); err != nil {
			return a, fmt.Errorf("mailbox cache: %w", err)
		}
		if a.fingerprints, err = cache.NewFingerprintCache(cache.Options{Metrics: a.cacheSet}); err != nil {
			return a, fmt.Errorf("fingerprint cache: %w", err)
		}
	}

	// State: loaded here rather than by the engine, because the notifier
	// records sent notices in it.
	st, status, err := pipeline.LoadState(a.stateDir)
	if err != nil {
		return a, err
	}
	if status.Origin != pipeline.StateLoaded && status.Origin != pipeline.StateNew {
		log.Warn("state: "+status.Message, "origin", status.Origin, "path", status.Path)
	}
	a.state = st
	engineDir := a.stateDir
	if o.mode == modeDryRun {
		if a.tmpDir, err = os.MkdirTemp("", "easconnector-plan-"); err != nil {
			return a, fmt.Errorf("plan: %w", err)
		}
		engineDir = a.tmpDir
	}

	// Notifier.
	if wantNotifier {
		nopts.Store, nopts.Logger = st, log
		if a.notifier, err = notify.New(nopts); err != nil {
			return a, err
		}
		nctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		a.notifyStop, a.notifyDone = cancel, make(chan struct{})
		go func() {
			defer close(a.notifyDone)
			if err := a.notifier.Run(nctx); err != nil {
				log.Error("notify", "err", err)
			}
		}()
	}

	// Engine.
	eopts.Exchange = &drainExchange{Client: a.client, grace: o.writeGrace}
	eopts.MDM = a.source
	eopts.StateDir = engineDir
	eopts.State = st
	eopts.Caches = pipeline.Caches{Mailboxes: a.mailboxes, Fingerprints: a.fingerprints}
	if a.notifier != nil {
		eopts.Notifier = a.notifier
	}
	eopts.Logger = log
	eopts.Progress = o.progress
	if a.engine, err = pipeline.New(eopts); err != nil {
		return a, err
	}
	return a, nil
}

// startPool opens the pool's first session. With retry (the service), a
// failure other than a refused login is retried with a growing, jittered
// pause until it succeeds or ctx ends: a service started while Exchange is
// down waits for it. A refused login is never retried, since repeating it
// can lock the service account out.
func startPool(ctx context.Context, p *runspace.Pool, log *slog.Logger, retry bool) error {
	wait := 5 * time.Second
	for {
		err := p.Start(ctx)
		switch {
		case err == nil:
			return nil
		case !retry || ctx.Err() != nil || runspace.Classify(err) == runspace.ClassAuth:
			return &connectError{err}
		}
		pause := wait/2 + rand.N(wait/2+1)
		log.Warn("exchange: no server reachable; retrying", "retry_in", pause.Round(time.Second), "err", err)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return &connectError{err}
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Minute)
	}
}

// connectError is a failure to open the first Exchange session.
type connectError struct{ err error }

func (e *connectError) Error() string { return "exchange: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// metricSets returns the metric sets of the components, for /metrics.
func (a *app) metricSets() []*metrics.Set {
	sets := []*metrics.Set{a.pool.Metrics(), a.mdmSet}
	if a.cacheSet != nil {
		sets = append(sets, a.cacheSet)
	}
	if a.notifier != nil {
		sets = append(sets, a.notifier.Metrics())
	}
	return append(sets, a.engine.Metrics())
}

// drainNotices waits, until ctx ends, for the notices a sync queued to
// be sent, so that a one-shot sync does not exit with mail unsent.
func (a *app) drainNotices(ctx context.Context) {
	if a.notifier == nil {
		return
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for notifyBacklog(a.notifier) > 0 {
		select {
		case <-ctx.Done():
			a.log.Warn("notify: stopping with mail unsent; the next sync queues it again", "unsent", notifyBacklog(a.notifier))
			return
		case <-t.C:
		}
	}
}

// notifyBacklog is how many queued messages are not sent, failed or
// dropped yet. notify offers no call for it, so it is read from the
// notifier's counters.
func notifyBacklog(n *notify.Notifier) int {
	var buf bytes.Buffer
	n.Metrics().WritePrometheus(&buf)
	var queued, settled, queue float64
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(name, "easconnector_notify_queued_total"):
			queued += v
		case strings.HasPrefix(name, "easconnector_notify_sent_total"),
			strings.HasPrefix(name, "easconnector_notify_failed_total"),
			strings.HasPrefix(name, "easconnector_notify_dropped_total"):
			settled += v
		case name == "easconnector_notify_queue_length":
			queue = v
		}
	}
	return int(max(queue, queued-settled))
}

// stop tears the components down in reverse order of start. The engine
// waits for a running sync (cancel its context first). ctx bounds closing
// the Exchange sessions.
func (a *app) stop(ctx context.Context) error {
	var errs []error
	engineClosed := false
	if a.engine != nil {
		var err error
		if engineClosed, err = a.closeEngine(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if a.notifier != nil {
		a.notifyStop()
		select {
		case <-a.notifyDone:
		case <-ctx.Done():
			a.log.Warn("notify: did not stop in time")
		}
		// The notifier records sent notices in the state after the
		// engine's last save; once the engine is closed, this save races
		// with nothing.
		if engineClosed {
			if err := pipeline.SaveState(a.stateDir, a.state); err != nil {
				errs = append(errs, err)
			}
		}
	}
	a.fingerprints.Close()
	a.mailboxes.Close()
	if a.pool != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeFloor)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) > closeFloor {
			cancel()
			cctx, cancel = context.WithDeadline(context.WithoutCancel(ctx), dl)
		}
		if err := a.pool.Close(cctx); err != nil {
			errs = append(errs, fmt.Errorf("close Exchange sessions: %w", err))
		}
		cancel()
	}
	if a.tmpDir != "" {
		if err := os.RemoveAll(a.tmpDir); err != nil {
			errs = append(errs, err)
		}
	}
	if a.lock != nil {
		if err := a.lock.unlock(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// closeEngine closes the engine (which waits for a running sync, then
// saves the state), giving up when ctx ends: a sync that ignores its
// cancellation must not keep the process alive. The state file is written
// atomically, so abandoning it cannot corrupt it.
func (a *app) closeEngine(ctx context.Context) (closed bool, err error) {
	done := make(chan error, 1)
	go func() { done <- a.engine.Close() }()
	select {
	case err := <-done:
		return true, err
	case <-ctx.Done():
		return false, fmt.Errorf("the running sync did not stop within the shutdown timeout; exiting without waiting for it (state: last save kept in %s)",
			filepath.Join(a.stateDir, pipeline.StateFile))
	}
}

// drainExchange is the Exchange client as the engine sees it, with one
// change for shutdown: a write that has started when its sync is
// cancelled runs to its end (within grace) instead of being cut off, since
// a cancelled WinRS request costs its session and leaves the write's
// outcome unknown. Once the sync is cancelled, no new write starts.
// Reads are cancelled at once: they change nothing.
type drainExchange struct {
	*exchange.Client
	grace time.Duration
}

var _ pipeline.Exchange = (*drainExchange)(nil)

// detach returns the context for one write and the function that ends it.
func (x *drainExchange) detach(ctx context.Context) (context.Context, func()) {
	if ctx.Err() != nil {
		return ctx, func() {}
	}
	wctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	finished := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTimer(x.grace)
		defer t.Stop()
		select {
		case <-finished:
		case <-t.C:
			cancel(fmt.Errorf("write still running %s after the sync was cancelled (%w)", x.grace, context.Cause(ctx)))
		}
	})
	return wctx, func() {
		close(finished)
		stop()
		cancel(nil)
	}
}

func (x *drainExchange) SetCASMailbox(ctx context.Context, identity string, allowed, blocked runspace.ListEdit) error {
	wctx, done := x.detach(ctx)
	defer done()
	return x.Client.SetCASMailbox(wctx, identity, allowed, blocked)
}

func (x *drainExchange) SetOrgSettings(ctx context.Context, u exchange.OrgSettingsUpdate) error {
	wctx, done := x.detach(ctx)
	defer done()
	return x.Client.SetOrgSettings(wctx, u)
}

func (x *drainExchange) NewDeviceAccessRule(ctx context.Context, ch exchange.Characteristic, query string, level exchange.AccessLevel) error {
	wctx, done := x.detach(ctx)
	defer done()
	return x.Client.NewDeviceAccessRule(wctx, ch, query, level)
}

func (x *drainExchange) SetDeviceAccessRule(ctx context.Context, identity string, level exchange.AccessLevel) error {
	wctx, done := x.detach(ctx)
	defer done()
	return x.Client.SetDeviceAccessRule(wctx, identity, level)
}

func (x *drainExchange) RemoveDeviceAccessRule(ctx context.Context, identity string) error {
	wctx, done := x.detach(ctx)
	defer done()
	return x.Client.RemoveDeviceAccessRule(wctx, identity)
}

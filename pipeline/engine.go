package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/easconnector/easconnector/cache"
	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/mdm"
	"github.com/easconnector/easconnector/pipeline/notify"
	"github.com/easconnector/easconnector/runspace"
)

// Exchange is what the engine needs from Exchange: exactly the
// exchange.Client methods it calls.
type Exchange interface {
	MobileDevices(ctx context.Context, f exchange.DeviceFilter, each func(exchange.MobileDevice, error) error) error
	CASMailboxes(ctx context.Context, identities []string, each func(exchange.CASMailbox) error) error
	SetCASMailbox(ctx context.Context, identity string, allowed, blocked runspace.ListEdit) error
	OrgSettings(ctx context.Context) (exchange.OrgSettings, error)
	SetOrgSettings(ctx context.Context, u exchange.OrgSettingsUpdate) error
	DeviceAccessRules(ctx context.Context) ([]exchange.DeviceAccessRule, error)
	NewDeviceAccessRule(ctx context.Context, ch exchange.Characteristic, query string, level exchange.AccessLevel) error
	SetDeviceAccessRule(ctx context.Context, identity string, level exchange.AccessLevel) error
	RemoveDeviceAccessRule(ctx context.Context, identity string) error
}

var _ Exchange = (*exchange.Client)(nil)

// Notifier is the notify stage's sink: *notify.Notifier. Enqueue must not
// block; Resolved forgets a device's notices once it is allowed again.
type Notifier interface {
	Enqueue(notify.Notice) (bool, error)
	Resolved(mailbox, deviceID string) error
}

var _ Notifier = (*notify.Notifier)(nil)

// Caches are the optional caches that save a quick sync work. A nil cache
// is a disabled one: the result is the same, only more is read.
type Caches struct {
	Mailboxes    *cache.MailboxCache
	Fingerprints *cache.FingerprintCache
}

// OrgConfig is the organization configuration a full sync re-asserts when
// the policy is enabled. The zero value leaves every setting alone.
type OrgConfig struct {
	// DefaultAccessLevel asserts Policy.OrgDefault as the organization's
	// DefaultAccessLevel. A change that tightens access (Allow →
	// Quarantine → Block) counts every device it would shut out towards
	// the blast-radius guard, and is made only after every mailbox write
	// of the sync succeeded, so that compliant devices hold their allow
	// entries before the default closes behind them.
	DefaultAccessLevel bool
	// AdminMailRecipients, when non-nil, replaces the recipients of
	// quarantine mails (an empty, non-nil slice clears them).
	AdminMailRecipients []string
	// UserMailInsert, when non-nil, replaces the footer of quarantine
	// mails (at most exchange.MaxUserMailInsert characters).
	UserMailInsert *string
	// DeviceAccessRules turns the policy's platform exceptions whose action
	// is allow, block or quarantine into ActiveSync device access rules,
	// named as Exchange names them ("<value> (<characteristic>)"), so that
	// Exchange treats a new partnership right away. Only rules the
	// connector created (State.Rules) are ever changed or removed; an
	// administrator's rule for the same value is reported and left alone.
	DeviceAccessRules bool
}

// Engine defaults.
const (
	DefaultWorkers        = runspace.DefaultSize
	DefaultWriteAttempts  = 3
	DefaultRetryBackoff   = 500 * time.Millisecond
	DefaultHeldPlanMaxAge = 24 * time.Hour
	// DefaultSaveEvery: writes are released in batches of this many
	// mailboxes, each batch's intent (pending entries in the state, intent
	// lines in the audit log) made durable in one commit before its first
	// write is sent. A larger batch costs fewer fsyncs per write; a kill
	// leaves at most one batch (and the writes in flight) to reconcile at
	// the next start, one Get-CASMailbox read per 50 or so mailboxes.
	DefaultSaveEvery = 500
)

// Options configure an Engine. Exchange, MDM and StateDir are required;
// every other zero value takes the default noted.
type Options struct {
	Exchange Exchange
	MDM      mdm.Source
	Policy   Policy
	Org      OrgConfig
	Guard    GuardConfig
	// StateDir holds state.json, audit.jsonl and held plans.
	StateDir string
	// Audit tunes the audit log's rotation (zero: the defaults).
	Audit AuditOptions
	// State, if set, is used instead of loading StateDir/state.json; load
	// it with LoadState when the notifier needs it as its SentStore.
	State *State
	// AdoptExisting treats list entries present before the first full sync
	// as the connector's (adopt_existing).
	AdoptExisting bool
	// Workers bounds concurrent writes and per-mailbox reads (default
	// DefaultWorkers); set it to the runspace pool's size, which bounds
	// remote concurrency anyway.
	Workers int
	// WriteAttempts bounds the Set-CASMailbox attempts for one mailbox in
	// one sync (default 3); RetryBackoff is the first pause between them,
	// doubling, with jitter (default 500ms).
	WriteAttempts int
	RetryBackoff  time.Duration
	// HeldPlanMaxAge: older held plans cannot be approved (default 24h;
	// negative: any age).
	HeldPlanMaxAge time.Duration
	// SaveEvery: see DefaultSaveEvery.
	SaveEvery int
	Caches    Caches
	// Notifier receives notices for targeted users' devices that are
	// blocked or left in quarantine; nil sends none.
	Notifier Notifier
	// Metrics is the engine's own set (nil: a new one; see Engine.Metrics).
	Metrics *metrics.Set
	Logger  *slog.Logger
	// Clock returns the current time (default time.Now).
	Clock func() time.Time
	// Progress, if set, is called (never concurrently) as a sync advances.
	Progress func(ProgressEvent)
}

func (o *Options) resolve() error {
	switch {
	case o.Exchange == nil:
		return errors.New("pipeline: Exchange: required")
	case o.MDM == nil:
		return errors.New("pipeline: MDM: required")
	case strings.TrimSpace(o.StateDir) == "":
		return errors.New("pipeline: StateDir: required")
	case o.Workers < 0:
		return fmt.Errorf("pipeline: Workers: must not be negative, got %d", o.Workers)
	case o.WriteAttempts < 0:
		return fmt.Errorf("pipeline: WriteAttempts: must not be negative, got %d", o.WriteAttempts)
	case o.RetryBackoff < 0:
		return fmt.Errorf("pipeline: RetryBackoff: must not be negative, got %s", o.RetryBackoff)
	case o.SaveEvery < 0:
		return fmt.Errorf("pipeline: SaveEvery: must not be negative, got %d", o.SaveEvery)
	}
	if err := o.Policy.Validate(); err != nil {
		return fmt.Errorf("pipeline: policy.%w", err)
	}
	if err := o.Guard.Validate(); err != nil {
		return fmt.Errorf("pipeline: guard.%w", err)
	}
	if o.Org.DefaultAccessLevel && o.Policy.OrgDefault == "" {
		return errors.New("pipeline: org.default_access_level: the policy declares no org_default")
	}
	for i, a := range o.Org.AdminMailRecipients {
		if strings.TrimSpace(a) == "" || strings.ContainsAny(a, "\r\n") {
			return fmt.Errorf("pipeline: org.admin_mail_recipients[%d]: %q is not an address", i, a)
		}
	}
	if o.Org.UserMailInsert != nil {
		if n := len([]rune(*o.Org.UserMailInsert)); n > exchange.MaxUserMailInsert {
			return fmt.Errorf("pipeline: org.user_mail_insert: %d characters, Exchange allows %d", n, exchange.MaxUserMailInsert)
		}
	}
	if o.Workers == 0 {
		o.Workers = DefaultWorkers
	}
	if o.WriteAttempts == 0 {
		o.WriteAttempts = DefaultWriteAttempts
	}
	if o.RetryBackoff == 0 {
		o.RetryBackoff = DefaultRetryBackoff
	}
	if o.HeldPlanMaxAge == 0 {
		o.HeldPlanMaxAge = DefaultHeldPlanMaxAge
	}
	if o.SaveEvery == 0 {
		o.SaveEvery = DefaultSaveEvery
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return nil
}

// Errors of Sync.
var (
	// ErrSyncRunning: another Sync is running; the caller coalesces.
	ErrSyncRunning = errors.New("a sync is already running")
	// ErrMDM wraps every failure to read or trust the MDM: the sync wrote
	// nothing and the connector is degraded.
	ErrMDM = errors.New("mdm unavailable")
	// ErrClosed: the engine was closed.
	ErrClosed = errors.New("engine closed")
)

// Engine runs syncs: one at a time, each a staged pipeline (discover →
// join → decide → plan → guard → apply → notify → report). It keeps the
// state, the audit log and the last sync's per-device decisions. All
// methods are safe for concurrent use; Sync refuses to run twice at once.
type Engine struct {
	opts   Options
	ex     Exchange
	log    *slog.Logger
	now    func() time.Time
	st     *State
	status Status
	audit  *Audit
	stages *StageMetrics
	m      *engineMetrics

	flight sync.Mutex // held by the running Sync

	mu   sync.Mutex // guards the fields below
	base *baseline  // the last sync's mailboxes and decisions
	// view is what Devices shows while base is nil: the rows of the
	// devices file (an earlier process's last sync), or those of an
	// approval applied before this process had a baseline. Never planned
	// against.
	view    *baseline
	retry   map[string]string
	current *SyncResult
	hist    *History
	closed  bool

	devs *deviceSaver // writes StateDir/devices.bin off the sync's path
}

// New validates opts, loads the state (unless opts.State is given) and
// opens the audit log. It makes no remote call.
func New(opts Options) (*Engine, error) {
	if err := opts.resolve(); err != nil {
		return nil, err
	}
	e := &Engine{
		opts:   opts,
		ex:     opts.Exchange,
		log:    opts.Logger,
		now:    opts.Clock,
		stages: NewStageMetrics(opts.Metrics),
		m:      newEngineMetrics(opts.Metrics),
		retry:  map[string]string{},
	}
	if opts.State != nil {
		e.st = opts.State
		e.status = Status{Origin: StateLoaded, Path: opts.StateDir, Message: "state given by the caller"}
	} else {
		st, status, err := LoadState(opts.StateDir)
		if err != nil {
			return nil, fmt.Errorf("pipeline: %w", err)
		}
		e.st, e.status = st, status
		if status.Origin != StateLoaded {
			e.log.Warn("pipeline: "+status.Message, "origin", status.Origin)
		}
	}
	// The last successes survive a restart in the state, so the gauges do
	// too: an alert on "no successful sync in 26 h" must not fire because
	// the process restarted.
	marks := e.st.Marks()
	for kind, at := range map[SyncKind]time.Time{SyncFull: marks.LastFull, SyncQuick: marks.LastQuick} {
		if !at.IsZero() {
			e.m.lastSuccess[kind].Set(float64(at.UnixNano()) / 1e9)
		}
	}
	// The history and the devices list of earlier runs (a service started
	// after `easconnector sync` runs shows them at once); both are only
	// shown, so a damaged file is logged and started afresh.
	hist, err := LoadHistory(opts.StateDir)
	if err != nil {
		e.log.Warn("pipeline: sync history lost; starting a new one", "err", err)
	}
	e.hist = hist
	view, err := loadDevices(opts.StateDir)
	if err != nil {
		e.log.Warn("pipeline: devices list of the last run lost; it fills with the next sync", "err", err)
	}
	if view != nil {
		e.view = view.b
	}
	e.devs = newDeviceSaver(opts.StateDir, e.log)
	audit, err := OpenAudit(opts.StateDir, opts.Audit)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	e.audit = audit
	return e, nil
}

// Metrics returns the engine's metric set.
func (e *Engine) Metrics() *metrics.Set { return e.opts.Metrics }

// State returns the engine's state (for the notifier's SentStore and the
// status page); use its methods, not its fields.
func (e *Engine) State() *State { return e.st }

// StateStatus says how the state was loaded.
func (e *Engine) StateStatus() Status { return e.status }

// Close waits for a running sync to end, then flushes and closes the audit
// log and saves the state. Sync fails with ErrClosed afterwards.
func (e *Engine) Close() error {
	e.flight.Lock()
	defer e.flight.Unlock()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	e.devs.wait()
	err := e.audit.Close()
	if serr := SaveState(e.opts.StateDir, e.st); err == nil {
		err = serr
	}
	return err
}

// Current returns the running sync's result so far, if one is running.
func (e *Engine) Current() (SyncResult, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.current == nil {
		return SyncResult{}, false
	}
	return *e.current, true
}

// LastResults returns the results of the last syncs, newest first (at
// most 32), including those of earlier processes (History).
func (e *Engine) LastResults() []SyncResult {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]SyncResult, len(e.hist.Recent))
	for i, r := range e.hist.Recent {
		out[len(out)-1-i] = r
	}
	return out
}

// LastSync returns the last finished sync of kind, however many syncs of
// the other kind followed it, and whether there was one.
func (e *Engine) LastSync(kind SyncKind) (SyncResult, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.hist.Last[kind]
	return r, ok
}

// LastSuccess returns the last sync of kind that ended without an error
// (see History), and whether there was one.
func (e *Engine) LastSuccess(kind SyncKind) (SyncResult, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.hist.LastOK[kind]
	return r, ok
}

// Devices returns the rows of the last sync's decisions that match q, from
// offset, at most limit (≤ 0: all), sorted by mailbox and device id, and
// how many match in all. Before the first sync there are none; a quick
// sync refreshes the rows of the mailboxes it read. Until this process's
// first sync they are those of the last sync of an earlier one (the
// devices file); while it has no baseline, a full sync whose plan a guard
// held shows its decisions (nothing written yet), and an approval the
// mailboxes it applied.
func (e *Engine) Devices(q DeviceQuery, offset, limit int) ([]DeviceRow, int) {
	e.mu.Lock()
	b := e.base
	if b == nil {
		b = e.view
	}
	e.mu.Unlock()
	if b == nil {
		return nil, 0
	}
	offset = max(offset, 0)
	var out []DeviceRow
	total := 0
	for _, mb := range b.order {
		if q.User != "" && !strings.EqualFold(q.User, mb.smtp) && !strings.EqualFold(q.User, mb.upn) {
			continue
		}
		for i := range mb.devs {
			rw := &mb.devs[i]
			if (q.Decision != "" && rw.decision() != q.Decision) || (q.Reason != "" && rw.reason() != q.Reason) {
				continue
			}
			if total >= offset && (limit <= 0 || len(out) < limit) {
				out = append(out, rw.export(mb))
			}
			total++
		}
	}
	return out, total
}

// Sync runs one sync (or applies a held plan, see SyncRequest) and
// returns its Report; the Report is nil only with ErrSyncRunning or
// ErrClosed. The error is nil when the sync ran to the end, even if some
// mailbox writes failed (Report.Failures; they are retried). Otherwise it
// wraps ErrMDM (the MDM was unreadable or failed a sanity guard: nothing
// written, degraded), is a *GuardError (the blast radius guard held the
// plan, Report.Held; nothing written), or is the infrastructure or
// context error that stopped the sync (writes already made are recorded
// in the state and the audit log).
//
// A quick sync needs the decisions of an earlier sync of this process to
// know what can have changed; without them (after a start) it runs as a
// full sync and says so in Report.Escalated.
//
// When Sync returns, every goroutine it started has exited, except the
// one writing the devices file (StateDir/devices.bin), which Close waits
// for.
func (e *Engine) Sync(ctx context.Context, req SyncRequest) (rep *Report, err error) {
	if !e.flight.TryLock() {
		return nil, ErrSyncRunning
	}
	defer e.flight.Unlock()
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	switch req.Kind {
	case "":
		req.Kind = SyncQuick
	case SyncFull, SyncQuick:
	default:
		return nil, fmt.Errorf("sync kind %q: want full or quick", req.Kind)
	}
	start := e.now()
	id := req.ID
	if id == "" {
		id = NewSyncID(start)
	}
	r := &run{e: e, dry: req.DryRun, rep: &Report{SyncResult: SyncResult{ID: id, Kind: req.Kind, Trigger: req.Trigger, Start: start}, DryRun: req.DryRun}}
	e.mu.Lock()
	cur := r.rep.SyncResult
	e.current = &cur
	e.mu.Unlock()
	defer func() {
		if p := recover(); p != nil {
			e.log.Error("pipeline: sync panicked", "sync", id, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("sync %s: internal error: %v", id, p)
		}
		e.finish(r, err)
		rep = r.rep
	}()
	if !r.dry {
		// Writes an earlier run recorded and never saw confirmed are
		// reconciled before anything is planned, in every kind of sync.
		if err = e.recoverPending(ctx, r); err != nil {
			return r.rep, err
		}
	}
	switch {
	case req.ApproveID != "":
		err = e.approve(ctx, r, req.ApproveID)
	case req.Kind == SyncQuick:
		err = e.quick(ctx, r)
	default:
		err = e.full(ctx, r)
	}
	if err == nil {
		err = r.applyErr
	}
	return r.rep, err
}

// finish records the end of a sync: the result, metrics, the audit log
// and the state.
func (e *Engine) finish(r *run, err error) {
	res := &r.rep.SyncResult
	r.tally.Fill(res)
	if !r.dry {
		if ferr := e.audit.Flush(); ferr != nil && err == nil {
			err = ferr
		}
		if r.dirty {
			if serr := SaveState(e.opts.StateDir, e.st); serr != nil {
				e.log.Error("pipeline: save state", "sync", res.ID, "err", serr)
				if err == nil {
					err = serr
				}
			}
		}
	}
	res.End = e.now()
	if err != nil {
		res.Error = err.Error()
		if errors.Is(err, ErrMDM) {
			r.rep.Degraded = true
		}
		if res.Guard.Result == "" {
			res.Guard = GuardOutcomeOf(err, "")
			if res.Guard.Result == GuardHeld && r.rep.Held != nil {
				res.Guard.HeldPlanID = r.rep.Held.ID
			}
		}
	}
	if res.Guard.Result == "" {
		res.Guard = GuardOutcome{Result: GuardPassed}
	}
	if !r.dry {
		e.m.record(r.rep, err)
	}
	e.mu.Lock()
	e.current = nil
	var hist History
	if !r.dry {
		e.hist.add(*res)
		hist = e.hist.clone()
	}
	e.mu.Unlock()
	if !r.dry {
		// Only shown, so a failure is logged and not the sync's.
		if herr := SaveHistory(e.opts.StateDir, &hist); herr != nil {
			e.log.Warn("pipeline: save sync history", "sync", res.ID, "err", herr)
		}
	}
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelWarn
	}
	e.log.Log(context.Background(), level, "pipeline: sync finished", "sync", res.ID, "kind", res.Kind,
		"dry_run", r.dry, "devices", res.Devices, "mailboxes", res.Mailboxes, "writes", res.Writes,
		"changes", res.Changes, "failures", res.Failures, "conflicts", res.Conflicts,
		"skipped", r.rep.SkippedTotal(), "guard", res.Guard.Result, "duration", res.Duration().Round(time.Millisecond), "err", err)
}

// run is the bookkeeping of one sync.
type run struct {
	e     *Engine
	dry   bool
	rep   *Report
	tally Tally
	// dirty: the state changed and must be saved.
	dirty bool
	// applyErr: the intent of a batch of writes could not be made
	// durable, so the writes were not sent; the sync fails with it.
	applyErr error

	pmu sync.Mutex // serialises Progress and the apply bookkeeping
}

func (r *run) progress(stage Stage, done, total int) {
	if r.e.opts.Progress == nil {
		return
	}
	r.pmu.Lock()
	defer r.pmu.Unlock()
	r.e.opts.Progress(ProgressEvent{SyncID: r.rep.ID, Kind: r.rep.Kind, Stage: stage, Done: done, Total: total})
}

// publish replaces the baseline and the retry set.
func (e *Engine) publish(b *baseline, retry map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if b != nil {
		e.base = b
		e.view = nil
		e.devs.save(b)
	}
	if retry != nil {
		e.retry = retry
	}
}

// publishView replaces what Devices shows while there is no baseline.
func (e *Engine) publishView(v *baseline) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.view = v
	e.devs.save(v)
}

// snapshotView returns the view Devices shows without a baseline.
func (e *Engine) snapshotView() *baseline {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.view
}

// snapshotBase returns the baseline and a copy of the retry set.
func (e *Engine) snapshotBase() (*baseline, map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	retry := make(map[string]string, len(e.retry))
	for k, v := range e.retry {
		retry[k] = v
	}
	return e.base, retry
}

// mdmError marks a failure to read or trust the MDM; an error caused by
// ctx ending is returned as is.
func mdmError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return err
	}
	return fmt.Errorf("%w: %w", ErrMDM, err)
}

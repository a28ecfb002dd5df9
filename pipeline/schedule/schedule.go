package schedule

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Kind is the kind of a sync.
type Kind string

// The kinds of sync. A full sync does everything a quick sync does.
const (
	Quick Kind = "quick"
	Full  Kind = "full"
)

// ParseKind accepts "quick" or "full", case-insensitively.
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(s) {
	case string(Quick):
		return Quick, nil
	case string(Full):
		return Full, nil
	}
	return "", fmt.Errorf("sync kind %q: want quick or full", s)
}

// SyncFunc runs one sync. It must return soon after ctx ends; the cause of
// ctx (context.Cause) is ErrStopping at shutdown and ErrSyncTimeout when the
// sync overran Options.SyncTimeout.
type SyncFunc func(ctx context.Context, kind Kind, id string) error

// Defaults for Options.
const (
	DefaultQuickInterval   = 2 * time.Hour
	DefaultFullAt          = "03:00"
	DefaultRetryMin        = time.Minute
	DefaultRetryMax        = 30 * time.Minute
	DefaultSyncTimeout     = 6 * time.Hour
	DefaultShutdownTimeout = 30 * time.Second

	// DefaultJitterDivisor gives the default jitter: QuickInterval/12,
	// ±10 minutes for the default 2 hours.
	DefaultJitterDivisor = 12

	// MinQuickInterval bounds QuickInterval from below.
	MinQuickInterval = time.Minute

	// FullCatchUp is the age of the last successful full sync above which
	// Run starts with a full sync.
	FullCatchUp = 24 * time.Hour
)

// maxSleep caps one wait of the scheduler, so that a wall-clock step (NTP,
// a resumed virtual machine) delays a due sync by at most this much.
const maxSleep = 10 * time.Minute

// Errors.
var (
	// ErrStopping is the cause of a running sync's context when Run's
	// context has ended.
	ErrStopping = errors.New("scheduler stopping")
	// ErrSyncTimeout is the cause of a sync's context when the sync overran
	// Options.SyncTimeout.
	ErrSyncTimeout = errors.New("sync overran its timeout")
	// ErrShutdownTimeout is returned by Run when the running sync did not
	// return within Options.ShutdownTimeout after Run's context ended.
	ErrShutdownTimeout = errors.New("sync did not stop within the shutdown timeout")
	// ErrAlreadyRunning is returned by a second concurrent Run.
	ErrAlreadyRunning = errors.New("scheduler already running")
)

// Options configure a Scheduler. The zero value of every field selects its
// default.
type Options struct {
	// QuickInterval is the time from the end of one sync to the start of
	// the next quick sync (DefaultQuickInterval); at least MinQuickInterval.
	QuickInterval time.Duration
	// Jitter bounds the random offset, in [-Jitter, +Jitter], added to each
	// quick interval; QuickInterval/DefaultJitterDivisor by default, and
	// less than QuickInterval/2.
	Jitter time.Duration
	// FullAt is the local time of the daily full sync, "HH:MM"
	// (DefaultFullAt).
	FullAt string
	// Location is the time zone of FullAt (time.Local by default).
	Location *time.Location
	// LastFull is the end of the last successful full sync, from the
	// persisted state; when it is zero or older than FullCatchUp, Run starts
	// with a full sync.
	LastFull time.Time
	// LastSync is the end of the last successful sync of any kind; the
	// first quick sync is due QuickInterval after it (after LastFull when
	// it is zero, QuickInterval after start when both are zero).
	LastSync time.Time
	// RetryMin and RetryMax bound the backoff after a failed sync
	// (DefaultRetryMin, DefaultRetryMax). The n-th consecutive failure waits
	// between 3/4 and all of min(RetryMin·2^(n-1), RetryMax).
	RetryMin, RetryMax time.Duration
	// SyncTimeout ends a sync that runs longer (DefaultSyncTimeout), so that
	// a hung sync cannot stop the schedule for good.
	SyncTimeout time.Duration
	// ShutdownTimeout bounds how long Run waits for the running sync to
	// return once Run's context has ended (DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// Seed seeds the jitter; zero picks a random seed.
	Seed uint64
	// Clock is the source of time (SystemClock by default).
	Clock Clock
	// NewID returns the id of a new sync. By default it is the UTC start
	// time and 8 random hex digits, "20260102T030000Z-1a2b3c4d", which sort
	// by time.
	NewID func(now time.Time) string
	// Logger receives one line per sync start, end and retry decision
	// (discarded when nil).
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.QuickInterval == 0 {
		o.QuickInterval = DefaultQuickInterval
	}
	if o.Jitter == 0 {
		o.Jitter = o.QuickInterval / DefaultJitterDivisor
	}
	if o.FullAt == "" {
		o.FullAt = DefaultFullAt
	}
	if o.Location == nil {
		o.Location = time.Local
	}
	if o.RetryMin == 0 {
		o.RetryMin = DefaultRetryMin
	}
	if o.RetryMax == 0 {
		o.RetryMax = DefaultRetryMax
	}
	if o.SyncTimeout == 0 {
		o.SyncTimeout = DefaultSyncTimeout
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	if o.Clock == nil {
		o.Clock = SystemClock()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

func (o *Options) validate() (TimeOfDay, error) {
	switch {
	case o.QuickInterval < MinQuickInterval:
		return TimeOfDay{}, fmt.Errorf("schedule: QuickInterval must be at least %v, got %v", MinQuickInterval, o.QuickInterval)
	case o.Jitter < 0 || o.Jitter >= o.QuickInterval/2:
		return TimeOfDay{}, fmt.Errorf("schedule: Jitter must be between 0 and half of QuickInterval (%v), got %v", o.QuickInterval/2, o.Jitter)
	case o.RetryMin <= 0:
		return TimeOfDay{}, fmt.Errorf("schedule: RetryMin must be positive, got %v", o.RetryMin)
	case o.RetryMax < o.RetryMin:
		return TimeOfDay{}, fmt.Errorf("schedule: RetryMax must be at least RetryMin (%v), got %v", o.RetryMin, o.RetryMax)
	case o.SyncTimeout < 0:
		return TimeOfDay{}, fmt.Errorf("schedule: SyncTimeout must not be negative, got %v", o.SyncTimeout)
	case o.ShutdownTimeout < 0:
		return TimeOfDay{}, fmt.Errorf("schedule: ShutdownTimeout must not be negative, got %v", o.ShutdownTimeout)
	}
	tod, err := ParseTimeOfDay(o.FullAt)
	if err != nil {
		return TimeOfDay{}, fmt.Errorf("schedule: FullAt: %w", err)
	}
	return tod, nil
}

// Why a sync runs; it appears in logs and Status.
const (
	TriggerManual    = "manual"
	TriggerScheduled = "scheduled"
	TriggerStartup   = "startup"
	TriggerRetry     = "retry"
)

// Sync describes a running or pending sync.
type Sync struct {
	ID      string
	Kind    Kind
	Since   time.Time // start of a running sync; first request of a pending one
	Trigger string    // TriggerManual, TriggerScheduled, TriggerStartup, TriggerRetry
}

// Status is a snapshot of the scheduler for status pages.
type Status struct {
	Running   *Sync // nil when no sync runs
	Pending   *Sync // a requested sync that waits for the running one
	NextQuick time.Time
	NextFull  time.Time
	// Failures counts consecutive failed syncs; RetryAt is the time before
	// which no scheduled sync starts (zero after a success).
	Failures int
	RetryAt  time.Time
	LastSync time.Time
	LastFull time.Time
}

// Scheduler runs syncs one at a time; see the package comment. Its methods
// are safe for concurrent use.
type Scheduler struct {
	opts Options
	tod  TimeOfDay
	sync SyncFunc
	log  *slog.Logger
	wake chan struct{}

	set          *metrics.Set
	triggersNew  *metrics.Counter
	triggersCoal *metrics.Counter
	runsOK       map[Kind]*metrics.Counter
	runsFailed   map[Kind]*metrics.Counter

	mu        sync.Mutex
	rng       *mrand.Rand
	started   bool
	running   *Sync
	pending   *Sync
	dueQuick  time.Time // next quick sync by the interval
	daily     time.Time // next daily full sync slot
	dailyDone date      // calendar day whose daily slot has been used
	fullAt    time.Time // catch-up or retry full sync; zero if none
	catchUp   bool      // fullAt is the start-up catch-up
	notBefore time.Time // backoff: no scheduled sync before this
	failures  int
	jitter    time.Duration // jitter of the current quick interval
	lastSync  time.Time
	lastFull  time.Time
}

// New returns a scheduler that calls sync. It checks opts and returns an
// error naming the field that is wrong.
func New(opts Options, sync SyncFunc) (*Scheduler, error) {
	if sync == nil {
		return nil, errors.New("schedule: sync function is nil")
	}
	opts.setDefaults()
	tod, err := opts.validate()
	if err != nil {
		return nil, err
	}
	seed := opts.Seed
	if seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:])
	}
	s := &Scheduler{
		opts:     opts,
		tod:      tod,
		sync:     sync,
		log:      opts.Logger,
		wake:     make(chan struct{}, 1),
		rng:      mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		lastSync: opts.LastSync,
		lastFull: opts.LastFull,
		set:      metrics.NewSet(),
	}
	if s.lastSync.Before(s.lastFull) {
		s.lastSync = s.lastFull
	}
	s.initMetrics()
	now := opts.Clock.Now()
	s.mu.Lock()
	s.planStartLocked(now)
	s.mu.Unlock()
	return s, nil
}

func (s *Scheduler) initMetrics() {
	s.triggersNew = s.set.NewCounter(`easconnector_schedule_triggers_total{coalesced="false"}`)
	s.triggersCoal = s.set.NewCounter(`easconnector_schedule_triggers_total{coalesced="true"}`)
	s.runsOK = map[Kind]*metrics.Counter{}
	s.runsFailed = map[Kind]*metrics.Counter{}
	for _, k := range []Kind{Quick, Full} {
		s.runsOK[k] = s.set.NewCounter(fmt.Sprintf(`easconnector_schedule_runs_total{kind=%q,result="ok"}`, k))
		s.runsFailed[k] = s.set.NewCounter(fmt.Sprintf(`easconnector_schedule_runs_total{kind=%q,result="failed"}`, k))
	}
	s.set.NewGauge("easconnector_schedule_consecutive_failures", func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(s.failures)
	})
	s.set.NewGauge("easconnector_schedule_running", func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.running != nil {
			return 1
		}
		return 0
	})
	s.set.NewGauge("easconnector_schedule_next_quick_timestamp_seconds", func() float64 {
		q, _ := s.Next()
		return float64(q.Unix())
	})
	s.set.NewGauge("easconnector_schedule_next_full_timestamp_seconds", func() float64 {
		_, f := s.Next()
		return float64(f.Unix())
	})
}

// Metrics returns the scheduler's metrics set, to be registered for /metrics.
func (s *Scheduler) Metrics() *metrics.Set { return s.set }

// planStartLocked sets the first due times from the persisted last syncs.
func (s *Scheduler) planStartLocked(now time.Time) {
	s.jitter = s.drawJitterLocked()
	if s.lastSync.IsZero() {
		s.dueQuick = now.Add(s.opts.QuickInterval + s.jitter)
	} else {
		s.dueQuick = s.lastSync.Add(s.opts.QuickInterval + s.jitter)
	}
	s.daily = nextDaily(now, s.tod, s.opts.Location, 0)
	if s.lastFull.IsZero() || now.Sub(s.lastFull) > FullCatchUp {
		s.fullAt = now
		s.catchUp = true
	}
}

func (s *Scheduler) drawJitterLocked() time.Duration {
	j := s.opts.Jitter
	if j == 0 {
		return 0
	}
	return time.Duration(s.rng.Int64N(int64(2*j)+1)) - j
}

// backoffLocked returns the wait after the n-th consecutive failure.
func (s *Scheduler) backoffLocked(n int) time.Duration {
	d := s.opts.RetryMin
	for i := 1; i < n && d < s.opts.RetryMax; i++ {
		d *= 2
	}
	d = min(d, s.opts.RetryMax)
	return d - time.Duration(s.rng.Int64N(int64(d/4)+1))
}

func (s *Scheduler) newIDLocked(now time.Time) string {
	if s.opts.NewID != nil {
		return s.opts.NewID(now)
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], s.rng.Uint32())
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// dueQuickLocked and dueFullLocked are the effective due times, after the
// backoff.
func (s *Scheduler) dueQuickLocked() time.Time { return later(s.dueQuick, s.notBefore) }

func (s *Scheduler) dueFullLocked() time.Time {
	d := s.daily
	if !s.fullAt.IsZero() && s.fullAt.Before(d) {
		d = s.fullAt
	}
	return later(d, s.notBefore)
}

// Next returns when the next quick and the next full sync are due. A
// pending manual request runs as soon as the running sync ends, whatever
// Next says; see Status.
func (s *Scheduler) Next() (quick, full time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dueQuickLocked(), s.dueFullLocked()
}

// Status returns a snapshot of the scheduler.
func (s *Scheduler) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{
		NextQuick: s.dueQuickLocked(),
		NextFull:  s.dueFullLocked(),
		Failures:  s.failures,
		RetryAt:   s.notBefore,
		LastSync:  s.lastSync,
		LastFull:  s.lastFull,
	}
	if s.running != nil {
		r := *s.running
		st.Running = &r
	}
	if s.pending != nil {
		p := *s.pending
		st.Pending = &p
	}
	return st
}

// Trigger requests a sync of the given kind (Full, or Quick for any other
// value; validate user input with ParseKind). It never blocks. When no
// request is pending it creates one, with a new id, that starts as soon as
// no sync runs (at once when idle). When a request is already pending (a
// sync is running), the new one joins it: the id is the pending one's,
// coalesced is true, and a full request upgrades a pending quick one.
// Requests made when Run is not running wait for the next Run.
func (s *Scheduler) Trigger(kind Kind) (id string, coalesced bool) {
	if kind != Full {
		kind = Quick
	}
	s.mu.Lock()
	now := s.opts.Clock.Now()
	if s.pending != nil {
		if kind == Full {
			s.pending.Kind = Full
		}
		id, coalesced = s.pending.ID, true
		s.triggersCoal.Inc()
	} else {
		s.pending = &Sync{ID: s.newIDLocked(now), Kind: kind, Since: now, Trigger: TriggerManual}
		id = s.pending.ID
		s.triggersNew.Inc()
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	s.log.Info("sync requested", "id", id, "kind", kind, "coalesced", coalesced)
	return id, coalesced
}

// pickLocked starts the sync that is due at now, if any, and returns it.
func (s *Scheduler) pickLocked(now time.Time) *Sync {
	var run *Sync
	if s.pending != nil {
		run, s.pending = s.pending, nil
	}
	fullDue := !s.dueFullLocked().After(now)
	quickDue := !s.dueQuickLocked().After(now)
	if run == nil && (fullDue || quickDue) {
		trigger := TriggerScheduled
		switch {
		case s.failures > 0:
			trigger = TriggerRetry
		case fullDue && s.catchUp:
			trigger = TriggerStartup
		}
		run = &Sync{ID: s.newIDLocked(now), Kind: Quick, Trigger: trigger}
	}
	if run == nil {
		return nil
	}
	if fullDue {
		run.Kind = Full
	}
	run.Since = now
	s.running = run

	// Provisional due times while the sync runs; finishLocked sets the
	// final ones. A full sync uses up today's daily slot if it is due.
	s.jitter = s.drawJitterLocked()
	s.dueQuick = now.Add(s.opts.QuickInterval + s.jitter)
	if run.Kind == Full {
		s.fullAt = time.Time{}
		s.catchUp = false
		if !s.daily.After(now) {
			s.dailyDone = dateOf(s.daily, s.opts.Location)
			s.daily = nextDaily(now, s.tod, s.opts.Location, s.dailyDone)
		}
	}
	return run
}

type result struct {
	run *Sync
	err error
	end time.Time
}

// finishLocked records the end of a sync and sets the next due times.
func (s *Scheduler) finishLocked(r result) {
	s.running = nil
	if r.err == nil {
		s.failures = 0
		s.notBefore = time.Time{}
		s.lastSync = r.end
		s.dueQuick = r.end.Add(s.opts.QuickInterval + s.jitter)
		if r.run.Kind == Full {
			s.lastFull = r.end
		}
		s.runsOK[r.run.Kind].Inc()
		s.log.Info("sync done", "id", r.run.ID, "kind", r.run.Kind, "trigger", r.run.Trigger,
			"duration", r.end.Sub(r.run.Since))
		return
	}
	s.runsFailed[r.run.Kind].Inc()
	s.failures++
	wait := s.backoffLocked(s.failures)
	s.notBefore = r.end.Add(wait)
	// The failed kind is retried after the backoff; a full sync due in the
	// meantime (the daily slot) waits for the backoff as well.
	if r.run.Kind == Full {
		s.fullAt = s.notBefore
	} else {
		s.dueQuick = s.notBefore
	}
	s.log.Error("sync failed", "id", r.run.ID, "kind", r.run.Kind, "trigger", r.run.Trigger,
		"duration", r.end.Sub(r.run.Since), "failures", s.failures, "retry_in", wait, "err", r.err)
}

// waitLocked returns how long to sleep before something is due.
func (s *Scheduler) waitLocked(now time.Time) time.Duration {
	next := s.dueQuickLocked()
	if f := s.dueFullLocked(); f.Before(next) {
		next = f
	}
	return min(max(next.Sub(now), 0), maxSleep)
}

// Run runs syncs until ctx ends. Then it cancels the running sync (cause
// ErrStopping), waits up to ShutdownTimeout for it to return, and returns
// nil, or an error wrapping ErrShutdownTimeout when the sync is still
// running (its goroutine is abandoned: the process is about to exit).
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return ErrAlreadyRunning
	}
	s.started = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.started = false
		s.mu.Unlock()
	}()

	done := make(chan result, 1)
	var (
		cancel  context.CancelCauseFunc
		current *Sync
	)
	for {
		s.mu.Lock()
		now := s.opts.Clock.Now()
		if s.running == nil {
			if run := s.pickLocked(now); run != nil {
				current = run
				cancel = s.launch(ctx, run, done)
			}
		}
		var timer Timer
		var tick <-chan time.Time
		if s.running == nil {
			timer = s.opts.Clock.NewTimer(s.waitLocked(now))
			tick = timer.C()
		}
		s.mu.Unlock()

		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return s.stop(cancel, current, done)
		case <-tick:
		case <-s.wake:
		case r := <-done:
			cancel(nil)
			cancel, current = nil, nil
			s.mu.Lock()
			s.finishLocked(r)
			s.mu.Unlock()
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// launch starts run in its own goroutine, which sends its result on done.
func (s *Scheduler) launch(parent context.Context, run *Sync, done chan<- result) context.CancelCauseFunc {
	// Cancellation is ours: stop cancels with ErrStopping, so the sync can
	// tell shutdown from other errors. Values of parent are kept.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	s.log.Info("sync start", "id", run.ID, "kind", run.Kind, "trigger", run.Trigger)
	go func() {
		sctx, stop := context.WithTimeoutCause(ctx, s.opts.SyncTimeout, ErrSyncTimeout)
		defer stop()
		err := s.call(sctx, run)
		done <- result{run: run, err: err, end: s.opts.Clock.Now()}
	}()
	return cancel
}

// call runs the callback and turns a panic into an error, so that a bug in
// one sync is retried with backoff rather than ending the daemon.
func (s *Scheduler) call(ctx context.Context, run *Sync) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("sync %s panicked: %v\n%s", run.ID, p, debug.Stack())
		}
	}()
	return s.sync(ctx, run.Kind, run.ID)
}

func (s *Scheduler) stop(cancel context.CancelCauseFunc, current *Sync, done <-chan result) error {
	if cancel == nil {
		return nil
	}
	cancel(ErrStopping)
	s.log.Info("stopping: waiting for the running sync", "id", current.ID, "timeout", s.opts.ShutdownTimeout)
	t := s.opts.Clock.NewTimer(s.opts.ShutdownTimeout)
	defer t.Stop()
	select {
	case r := <-done:
		s.mu.Lock()
		if r.err == nil {
			s.finishLocked(r)
		} else {
			// Stopped, not failed: no failure count, no retry to plan.
			s.running = nil
			s.log.Info("sync stopped", "id", r.run.ID, "kind", r.run.Kind, "err", r.err)
		}
		s.mu.Unlock()
		return nil
	case <-t.C():
		return fmt.Errorf("stop scheduler: %s sync %s: %w (%v)", current.Kind, current.ID, ErrShutdownTimeout, s.opts.ShutdownTimeout)
	}
}

package schedule

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // DST tests need Europe/Berlin everywhere
)

// guard bounds every wait of a test on the scheduler's goroutines; tests
// never sleep, they only fail when the scheduler gets stuck.
const guard = 10 * time.Second

type call struct {
	kind  Kind
	id    string
	at    time.Time
	ctx   context.Context
	reply chan error
}

type harness struct {
	t      *testing.T
	clk    *fakeClock
	s      *Scheduler
	calls  chan call
	cancel context.CancelFunc
	runErr chan error
}

// start runs a scheduler on a fake clock set to now. Its sync callback hands
// each call to the test and returns what the test replies.
func start(t *testing.T, opts Options, now time.Time) *harness {
	t.Helper()
	h := newHarness(t, opts, now, nil)
	h.run()
	return h
}

func newHarness(t *testing.T, opts Options, now time.Time, fn SyncFunc) *harness {
	t.Helper()
	h := &harness{t: t, clk: newFakeClock(now), calls: make(chan call), runErr: make(chan error, 1)}
	opts.Clock = h.clk
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	if fn == nil {
		fn = func(ctx context.Context, kind Kind, id string) error {
			c := call{kind: kind, id: id, at: h.clk.Now(), ctx: ctx, reply: make(chan error, 1)}
			select {
			case h.calls <- c:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			select {
			case err := <-c.reply:
				return err
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
	s, err := New(opts, fn)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	h.s = s
	return h
}

func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.runErr <- h.s.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		// The fake clock does not move by itself: release a shutdown wait.
		for {
			select {
			case <-h.runErr:
				return
			case tm := <-h.clk.created:
				h.clk.Advance(tm.when)
			case <-time.After(guard):
				h.t.Error("Run did not return after cancel")
				return
			}
		}
	})
}

// idle waits until the scheduler arms its timer, i.e. is idle, and returns
// the timer.
func (h *harness) idle() *fakeTimer {
	h.t.Helper()
	select {
	case tm := <-h.clk.created:
		return tm
	case c := <-h.calls:
		h.t.Fatalf("unexpected %s sync %s at %v while waiting for idle", c.kind, c.id, c.at)
	case <-time.After(guard):
		h.t.Fatal("scheduler did not go idle")
	}
	return nil
}

// expectCall waits for a sync to start without moving the clock.
func (h *harness) expectCall() call {
	h.t.Helper()
	select {
	case c := <-h.calls:
		return c
	case tm := <-h.clk.created:
		h.t.Fatalf("scheduler went idle (timer for %v) instead of starting a sync", tm.when)
	case <-time.After(guard):
		h.t.Fatal("no sync started")
	}
	return call{}
}

// advanceToCall moves the clock from timer to timer until a sync starts.
func (h *harness) advanceToCall() call {
	h.t.Helper()
	for {
		select {
		case c := <-h.calls:
			return c
		case tm := <-h.clk.created:
			h.clk.Advance(tm.when)
		case <-time.After(guard):
			h.t.Fatal("no sync started")
		}
	}
}

var t0 = time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC)

func TestStartupCatchUp(t *testing.T) {
	f := func(name string, lastFull, lastSync time.Time, wantFull bool) {
		t.Run(name, func(t *testing.T) {
			h := start(t, Options{LastFull: lastFull, LastSync: lastSync}, t0)
			if !wantFull {
				tm := h.idle()
				if !tm.when.After(t0) {
					t.Fatalf("idle timer at %v, want after %v", tm.when, t0)
				}
				return
			}
			c := h.expectCall()
			if c.kind != Full || !c.at.Equal(t0) {
				t.Fatalf("first sync = %s at %v, want full at %v", c.kind, c.at, t0)
			}
			if st := h.s.Status(); st.Running == nil || st.Running.Trigger != TriggerStartup {
				t.Fatalf("Status().Running = %+v, want trigger %q", st.Running, TriggerStartup)
			}
			c.reply <- nil
			h.idle()
			q, full := h.s.Next()
			if d := q.Sub(t0); d < DefaultQuickInterval-10*time.Minute || d > DefaultQuickInterval+10*time.Minute {
				t.Errorf("Next() quick = %v, want 2h±10m after %v", q, t0)
			}
			if want := time.Date(2026, 6, 11, 3, 0, 0, 0, time.UTC); !full.Equal(want) {
				t.Errorf("Next() full = %v, want %v", full, want)
			}
		})
	}
	f("never", time.Time{}, time.Time{}, true)
	f("stale", t0.Add(-25*time.Hour), t0.Add(-time.Hour), true)
	f("recent", t0.Add(-23*time.Hour), t0.Add(-time.Hour), false)
	f("recent full, no quick", t0.Add(-time.Hour), time.Time{}, false)
}

// TestStartupQuickOverdue: a quick sync overdue at start runs at once.
func TestStartupQuickOverdue(t *testing.T) {
	h := start(t, Options{LastFull: t0.Add(-20 * time.Hour), LastSync: t0.Add(-3 * time.Hour)}, t0)
	if c := h.expectCall(); c.kind != Quick || !c.at.Equal(t0) {
		t.Fatalf("first sync = %s at %v, want quick at %v", c.kind, c.at, t0)
	}
}

// runQuickSyncs lets n syncs run, each succeeding at once, and returns their
// kinds and start times.
func runSyncs(t *testing.T, seed uint64, n int) (kinds []Kind, starts []time.Time) {
	h := start(t, Options{Seed: seed, LastFull: t0.Add(-time.Hour), LastSync: t0}, t0)
	for range n {
		c := h.advanceToCall()
		kinds = append(kinds, c.kind)
		starts = append(starts, c.at)
		c.reply <- nil
	}
	return kinds, starts
}

func TestQuickIntervalJitter(t *testing.T) {
	const n = 40
	kinds, starts := runSyncs(t, 7, n)
	prev := t0
	offsets := map[time.Duration]bool{}
	fulls := 0
	for i, at := range starts {
		switch kinds[i] {
		case Full:
			fulls++
			if h, m, _ := at.Clock(); h != 3 || m != 0 {
				t.Errorf("full sync %d at %v, want 03:00", i, at)
			}
		case Quick:
			off := at.Sub(prev) - DefaultQuickInterval
			if off < -10*time.Minute || off > 10*time.Minute {
				t.Errorf("quick sync %d started %v after the previous sync, want 2h±10m", i, at.Sub(prev))
			}
			offsets[off] = true
		}
		prev = at
	}
	if fulls != 3 {
		t.Errorf("full syncs = %d over %v, want 3 (one a day)", fulls, starts[n-1].Sub(t0))
	}
	if len(offsets) < n/2 {
		t.Errorf("only %d distinct jitter offsets in %d quick syncs: jitter not applied", len(offsets), n-fulls)
	}
	// The same seed gives the same schedule.
	_, again := runSyncs(t, 7, n)
	for i := range starts {
		if !starts[i].Equal(again[i]) {
			t.Fatalf("seed 7: sync %d at %v, then at %v: schedule not reproducible", i, starts[i], again[i])
		}
	}
	_, other := runSyncs(t, 8, n)
	same := 0
	for i := range starts {
		if starts[i].Equal(other[i]) {
			same++
		}
	}
	if same == n {
		t.Error("seeds 7 and 8 give the same schedule")
	}
}

func TestTriggerCoalesces(t *testing.T) {
	h := start(t, Options{LastFull: t0.Add(-time.Hour), LastSync: t0}, t0)
	h.idle()
	id1, co := h.s.Trigger(Quick)
	if co {
		t.Fatal("Trigger() on an idle scheduler: coalesced = true, want false")
	}
	c1 := h.expectCall()
	if c1.kind != Quick || c1.id != id1 {
		t.Fatalf("sync = %s %s, want quick %s", c1.kind, c1.id, id1)
	}

	// During the sync: the first request creates the next sync, the others
	// join it, and a full request upgrades it.
	id2, co2 := h.s.Trigger(Quick)
	id3, co3 := h.s.Trigger(Quick)
	id4, co4 := h.s.Trigger(Full)
	id5, co5 := h.s.Trigger(Quick)
	if id2 == id1 || co2 {
		t.Errorf("Trigger() during a sync = %s, %v; want a new id, not coalesced", id2, co2)
	}
	for _, r := range []struct {
		id string
		co bool
	}{{id3, co3}, {id4, co4}, {id5, co5}} {
		if r.id != id2 || !r.co {
			t.Errorf("Trigger() = %s, %v; want %s, coalesced", r.id, r.co, id2)
		}
	}
	if st := h.s.Status(); st.Pending == nil || st.Pending.Kind != Full || st.Pending.ID != id2 {
		t.Errorf("Status().Pending = %+v, want full %s", st.Pending, id2)
	}
	c1.reply <- nil
	c2 := h.expectCall()
	if c2.kind != Full || c2.id != id2 {
		t.Fatalf("next sync = %s %s, want full %s", c2.kind, c2.id, id2)
	}
	c2.reply <- nil
	h.idle() // nothing else pending
}

// TestScheduledFullUpgradesPendingQuick: a manual quick request pending when
// the daily full sync comes due runs as that full sync.
func TestScheduledFullUpgradesPendingQuick(t *testing.T) {
	start0 := time.Date(2026, 6, 10, 2, 0, 0, 0, time.UTC)
	h := start(t, Options{LastFull: start0.Add(-23 * time.Hour), LastSync: start0.Add(-time.Hour)}, start0)
	h.idle()
	idA, _ := h.s.Trigger(Quick)
	a := h.expectCall()
	if a.id != idA {
		t.Fatalf("sync id = %s, want %s", a.id, idA)
	}
	idB, _ := h.s.Trigger(Quick)
	h.clk.Advance(time.Date(2026, 6, 10, 3, 5, 0, 0, time.UTC)) // the daily slot passes during sync A
	a.reply <- nil
	b := h.expectCall()
	if b.kind != Full || b.id != idB {
		t.Fatalf("sync after the daily slot = %s %s, want full %s", b.kind, b.id, idB)
	}
	b.reply <- nil
	h.idle()
	if _, full := h.s.Next(); !full.Equal(time.Date(2026, 6, 11, 3, 0, 0, 0, time.UTC)) {
		t.Errorf("Next() full = %v, want tomorrow 03:00 (today's slot is used)", full)
	}
}

func TestRetryBackoff(t *testing.T) {
	h := start(t, Options{LastFull: t0.Add(-time.Hour), LastSync: t0}, t0)
	h.idle()
	h.s.Trigger(Quick)
	c := h.expectCall()
	prevGap := time.Duration(0)
	for n := 1; n <= 12; n++ {
		failedAt := c.at
		c.reply <- fmt.Errorf("exchange unreachable (attempt %d)", n)
		c = h.advanceToCall()
		gap := c.at.Sub(failedAt)
		want := min(time.Minute<<(n-1), 30*time.Minute)
		if gap < want*3/4 || gap > want {
			t.Errorf("failure %d: retried after %v, want between %v and %v", n, gap, want*3/4, want)
		}
		if want < 30*time.Minute && gap <= prevGap {
			t.Errorf("failure %d: retry gap %v not above the previous %v", n, gap, prevGap)
		}
		if c.kind != Quick {
			t.Errorf("failure %d: retry kind = %s, want quick", n, c.kind)
		}
		st := h.s.Status()
		if st.Failures != n || st.Running == nil || st.Running.Trigger != TriggerRetry {
			t.Errorf("failure %d: Status() = failures %d, running %+v; want %d failures, a retry", n, st.Failures, st.Running, n)
		}
		prevGap = gap
	}
	// Success resets the backoff: the next sync is a quick one 2h±10m later.
	end := c.at
	c.reply <- nil
	c = h.advanceToCall()
	if gap := c.at.Sub(end); c.kind != Quick || gap < 110*time.Minute || gap > 130*time.Minute {
		t.Errorf("after success: %s sync after %v, want quick after 2h±10m", c.kind, gap)
	}
	if st := h.s.Status(); st.Failures != 0 || !st.RetryAt.IsZero() {
		t.Errorf("after success: Status() failures = %d, RetryAt = %v; want 0, zero", st.Failures, st.RetryAt)
	}
}

// TestFailedFullRetriedAsFull: a failed full sync is retried as a full sync
// after the backoff.
func TestFailedFullRetriedAsFull(t *testing.T) {
	h := start(t, Options{RetryMin: 20 * time.Minute, RetryMax: time.Hour, LastSync: t0.Add(-115 * time.Minute)}, t0)
	c := h.expectCall() // start-up catch-up
	if c.kind != Full {
		t.Fatalf("first sync = %s, want full", c.kind)
	}
	c.reply <- errors.New("graph: 503")
	tm := h.idle()
	q, f := h.s.Next()
	if f.Before(t0.Add(15*time.Minute)) || f.After(t0.Add(20*time.Minute)) || q.Before(f) {
		t.Errorf("Next() = %v, %v; want the full retry 15-20m after %v, quick not before it", q, f, t0)
	}
	h.clk.Advance(tm.when)
	c = h.advanceToCall()
	if c.kind != Full || c.at.Sub(t0) < 15*time.Minute {
		t.Errorf("retry = %s after %v, want full after ≥15m", c.kind, c.at.Sub(t0))
	}
}

func TestPanicIsRetried(t *testing.T) {
	panicked := make(chan struct{})
	var h *harness
	n := 0
	h = newHarness(t, Options{LastFull: t0.Add(-time.Hour), LastSync: t0}, t0, func(ctx context.Context, kind Kind, id string) error {
		n++
		if n == 1 {
			close(panicked)
			panic("nil map in plan")
		}
		c := call{kind: kind, id: id, at: h.clk.Now(), reply: make(chan error, 1)}
		h.calls <- c
		return <-c.reply
	})
	h.run()
	h.idle()
	h.s.Trigger(Full)
	<-panicked
	c := h.advanceToCall()
	if gap := c.at.Sub(t0); gap < 45*time.Second || gap > time.Minute {
		t.Errorf("retry after panic %v later, want 45s-1m", gap)
	}
	var buf bytes.Buffer
	h.s.Metrics().WritePrometheus(&buf)
	if !strings.Contains(buf.String(), `easconnector_schedule_runs_total{kind="full",result="failed"} 1`) {
		t.Errorf("metrics do not count the panicked sync as failed:\n%s", buf.String())
	}
	c.reply <- nil
}

func TestTriggerBeforeRun(t *testing.T) {
	h := newHarness(t, Options{LastFull: t0.Add(-time.Hour), LastSync: t0}, t0, nil)
	id, _ := h.s.Trigger(Full)
	h.run()
	if c := h.expectCall(); c.id != id || c.kind != Full {
		t.Fatalf("sync = %s %s, want full %s", c.kind, c.id, id)
	}
}

func TestRunTwice(t *testing.T) {
	h := start(t, Options{LastFull: t0.Add(-time.Hour), LastSync: t0}, t0)
	h.idle()
	if err := h.s.Run(context.Background()); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second Run() = %v, want ErrAlreadyRunning", err)
	}
}

func TestShutdownCancelsRunningSync(t *testing.T) {
	h := start(t, Options{LastFull: t0.Add(-time.Hour), LastSync: t0}, t0)
	h.idle()
	h.s.Trigger(Full)
	c := h.expectCall()
	h.cancel()
	select {
	case <-c.ctx.Done():
	case <-time.After(guard):
		t.Fatal("sync context not cancelled at shutdown")
	}
	if cause := context.Cause(c.ctx); !errors.Is(cause, ErrStopping) {
		t.Errorf("context.Cause() = %v, want ErrStopping", cause)
	}
	c.reply <- context.Cause(c.ctx)
	h.idle() // the shutdown timer
	select {
	case err := <-h.runErr:
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
		h.runErr <- err // for the cleanup
	case <-time.After(guard):
		t.Fatal("Run did not return")
	}
	if st := h.s.Status(); st.Running != nil || st.Failures != 0 {
		t.Errorf("Status() after stop = running %+v, failures %d; want idle, 0 (stopped is not failed)", st.Running, st.Failures)
	}
}

func TestShutdownTimeout(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	h := newHarness(t, Options{ShutdownTimeout: 5 * time.Second, LastFull: t0.Add(-time.Hour), LastSync: t0}, t0,
		func(ctx context.Context, kind Kind, id string) error {
			close(started)
			<-release // ignores ctx
			return nil
		})
	h.run()
	defer close(release)
	h.idle()
	h.s.Trigger(Quick)
	<-started
	h.cancel()
	tm := h.idle()
	if d := tm.when.Sub(t0); d != 5*time.Second {
		t.Errorf("shutdown wait = %v, want 5s", d)
	}
	h.clk.Advance(tm.when)
	select {
	case err := <-h.runErr:
		if !errors.Is(err, ErrShutdownTimeout) {
			t.Errorf("Run() = %v, want ErrShutdownTimeout", err)
		}
		h.runErr <- err
	case <-time.After(guard):
		t.Fatal("Run did not return after the shutdown timeout")
	}
}

func TestSyncTimeout(t *testing.T) {
	got := make(chan error, 1)
	h := newHarness(t, Options{SyncTimeout: time.Millisecond, LastFull: t0.Add(-time.Hour), LastSync: t0}, t0,
		func(ctx context.Context, kind Kind, id string) error {
			<-ctx.Done() // the one real timer of these tests: 1ms
			got <- context.Cause(ctx)
			return context.Cause(ctx)
		})
	h.run()
	h.idle()
	h.s.Trigger(Quick)
	select {
	case err := <-got:
		if !errors.Is(err, ErrSyncTimeout) {
			t.Errorf("context.Cause() = %v, want ErrSyncTimeout", err)
		}
	case <-time.After(guard):
		t.Fatal("sync not cancelled after SyncTimeout")
	}
	h.idle()
	if st := h.s.Status(); st.Failures != 1 {
		t.Errorf("Status().Failures = %d, want 1", st.Failures)
	}
}

func TestDailyFullAcrossDST(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	f := func(name, fullAt string, from time.Time, want []string) {
		t.Run(name, func(t *testing.T) {
			opts := Options{FullAt: fullAt, Location: berlin, QuickInterval: 5 * time.Hour,
				LastFull: from.Add(-time.Hour), LastSync: from}
			h := start(t, opts, from)
			var got []string
			for len(got) < len(want) {
				c := h.advanceToCall()
				if c.kind == Full {
					got = append(got, c.at.In(berlin).Format("2006-01-02 15:04 MST"))
				}
				c.reply <- nil
			}
			if strings.Join(got, ", ") != strings.Join(want, ", ") {
				t.Errorf("full syncs at\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
	f("spring forward", "03:00", time.Date(2026, 3, 27, 12, 0, 0, 0, berlin), []string{
		"2026-03-28 03:00 CET", "2026-03-29 03:00 CEST", "2026-03-30 03:00 CEST"})
	f("spring forward, slot in the gap", "02:30", time.Date(2026, 3, 27, 12, 0, 0, 0, berlin), []string{
		"2026-03-28 02:30 CET", "2026-03-29 03:30 CEST", "2026-03-30 02:30 CEST"})
	f("fall back, ambiguous slot runs once", "02:30", time.Date(2026, 10, 23, 12, 0, 0, 0, berlin), []string{
		"2026-10-24 02:30 CEST", "2026-10-25 02:30 CET", "2026-10-26 02:30 CET"})
}

func TestNextDaily(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	tod := TimeOfDay{Hour: 3}
	f := func(from time.Time, done date, want time.Time) {
		t.Helper()
		if got := nextDaily(from, tod, ny, done); !got.Equal(want) {
			t.Errorf("nextDaily(%v, done %d) = %v, want %v", from, done, got, want)
		}
	}
	f(time.Date(2026, 3, 7, 12, 0, 0, 0, ny), 0, time.Date(2026, 3, 8, 3, 0, 0, 0, ny))
	f(time.Date(2026, 3, 8, 1, 0, 0, 0, ny), 0, time.Date(2026, 3, 8, 3, 0, 0, 0, ny))
	f(time.Date(2026, 3, 8, 3, 0, 0, 0, ny), 0, time.Date(2026, 3, 9, 3, 0, 0, 0, ny)) // strictly after
	f(time.Date(2026, 3, 8, 1, 0, 0, 0, ny), 20260308, time.Date(2026, 3, 9, 3, 0, 0, 0, ny))
	// 03:00 to 03:00 across the spring change is 23 hours of real time.
	a := nextDaily(time.Date(2026, 3, 6, 12, 0, 0, 0, ny), tod, ny, 0)
	b := nextDaily(a, tod, ny, 0)
	if d := b.Sub(a); d != 23*time.Hour {
		t.Errorf("daily slots %v and %v are %v apart, want 23h", a, b, d)
	}
}

func TestOptionsValidation(t *testing.T) {
	f := func(opts Options, want string) {
		t.Helper()
		_, err := New(opts, func(context.Context, Kind, string) error { return nil })
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(%+v) error = %v, want mention of %q", opts, err, want)
		}
	}
	f(Options{QuickInterval: 30 * time.Second}, "QuickInterval")
	f(Options{QuickInterval: time.Hour, Jitter: 30 * time.Minute}, "Jitter")
	f(Options{Jitter: -time.Second}, "Jitter")
	f(Options{FullAt: "3am"}, "FullAt")
	f(Options{FullAt: "24:00"}, "FullAt")
	f(Options{RetryMin: 2 * time.Hour}, "RetryMax")
	f(Options{RetryMin: -time.Second}, "RetryMin")
	f(Options{SyncTimeout: -time.Second}, "SyncTimeout")
	if _, err := New(Options{}, nil); err == nil {
		t.Error("New() with nil sync function: error = nil")
	}
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{"quick": Quick, "FULL": Full, "Quick": Quick} {
		if got, err := ParseKind(in); err != nil || got != want {
			t.Errorf("ParseKind(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "delta", "full "} {
		if _, err := ParseKind(in); err == nil {
			t.Errorf("ParseKind(%q) error = nil", in)
		}
	}
}

func TestParseTimeOfDay(t *testing.T) {
	for in, want := range map[string]TimeOfDay{"03:00": {3, 0}, "3:05": {3, 5}, "23:59": {23, 59}, "00:00": {0, 0}} {
		if got, err := ParseTimeOfDay(in); err != nil || got != want {
			t.Errorf("ParseTimeOfDay(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "3", "24:00", "12:60", "12:5", "-1:00", "+3:00", "003:00", "12:00:00", " 3:00"} {
		if _, err := ParseTimeOfDay(in); err == nil {
			t.Errorf("ParseTimeOfDay(%q) error = nil", in)
		}
	}
}

func FuzzParseTimeOfDay(f *testing.F) {
	for _, s := range []string{"03:00", "3:00", "24:00", "", "1:1", "٣:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tod, err := ParseTimeOfDay(s)
		if err != nil {
			return
		}
		if tod.Hour < 0 || tod.Hour > 23 || tod.Minute < 0 || tod.Minute > 59 {
			t.Fatalf("ParseTimeOfDay(%q) = %v: out of range", s, tod)
		}
		if back, err := ParseTimeOfDay(tod.String()); err != nil || back != tod {
			t.Fatalf("ParseTimeOfDay(%q) = %v; String() %q parses to %v, %v", s, tod, tod.String(), back, err)
		}
	})
}

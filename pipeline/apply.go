package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/panjf2000/ants/v2"

	"github.com/easconnector/easconnector/cache"
	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/runspace"
)

// poolReleaseTimeout bounds the wait for an ants pool's goroutines once
// its last task returned.
const poolReleaseTimeout = 10 * time.Second

// maxFailureLogs bounds the per-mailbox failures logged in one sync; the
// rest are counted and listed in the report.
const maxFailureLogs = 10

// errTaskAborted is the outcome of a task that panicked.
var errTaskAborted = errors.New("task aborted")

// forEach calls fn(i) for every i in [0, n) on an ants pool of at most
// workers goroutines. A slot is acquired (or ctx given up on) before each
// task is handed to the pool, so that the pool never blocks the loop for
// long and a cancelled ctx stops handing out work at once. It returns the
// number of tasks started, after every started task has returned and the
// pool's goroutines have exited, and ctx's error if it stopped early. A
// panicking task is logged and counted as returned.
func forEach(ctx context.Context, workers, n int, log *slog.Logger, fn func(i int)) (int, error) {
	if n <= 0 {
		return 0, ctx.Err()
	}
	workers = max(1, min(workers, n))
	slots := make(chan struct{}, workers)
	var wg sync.WaitGroup
	pool, err := ants.NewPoolWithFuncGeneric(workers, func(i int) {
		defer func() {
			<-slots
			wg.Done()
		}()
		fn(i)
	}, ants.WithPanicHandler(func(p any) {
		log.Error("pipeline: task panicked", "panic", p)
	}))
	if err != nil {
		return 0, fmt.Errorf("worker pool: %w", err)
	}
	defer func() {
		if err := pool.ReleaseTimeout(poolReleaseTimeout); err != nil {
			log.Error("pipeline: worker pool did not stop", "err", err)
		}
	}()
	started := 0
	var stop error
loop:
	for i := range n {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			stop = ctx.Err()
			break loop
		}
		wg.Add(1)
		if err := pool.Invoke(i); err != nil {
			wg.Done()
			<-slots
			stop = fmt.Errorf("worker pool: %w", err)
			break
		}
		started++
	}
	wg.Wait()
	return started, stop
}

// permanent reports whether a write error will not go away by retrying
// within this sync.
func permanent(err error) bool {
	if errors.Is(err, runspace.ErrInvalidCall) || errors.Is(err, exchange.ErrInvalidDeviceID) ||
		errors.Is(err, runspace.ErrPoolClosed) || errors.Is(err, runspace.ErrAuth) || errors.Is(err, runspace.ErrNotStarted) {
		return true
	}
	var re *runspace.RemoteError
	return errors.As(err, &re) && strings.HasSuffix(re.Type, "ManagementObjectNotFoundException")
}

// backoff is the pause before attempt+1: RetryBackoff doubling per
// attempt, with jitter in [d/2, d).
func (e *Engine) backoff(attempt int) time.Duration {
	d := e.opts.RetryBackoff << min(attempt-1, 10)
	return d/2 + rand.N(d/2+1)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// write sends one mailbox's plan, retrying failures with backoff, and
// returns the attempts made and the last error.
func (e *Engine) write(ctx context.Context, p *MailboxPlan) (int, error) {
	for attempt := 1; ; attempt++ {
		err := e.ex.SetCASMailbox(ctx, p.Identity, p.Allowed, p.Blocked)
		if err == nil || attempt >= e.opts.WriteAttempts || permanent(err) || ctx.Err() != nil {
			return attempt, err
		}
		if serr := sleepCtx(ctx, e.backoff(attempt)); serr != nil {
			return attempt, err
		}
	}
}

// applyPlans writes every planned mailbox, Workers at a time. One mailbox
// failing never stops the others; ctx ending stops handing out writes.
// Each outcome is recorded as it comes (ownership, audit, cache, metrics);
// the state is saved every SaveEvery writes, at most once a second.
func (e *Engine) applyPlans(ctx context.Context, r *run, writes []*mbox) {
	if len(writes) == 0 {
		return
	}
	r.dirty = true
	sv := newSaver(e)
	_ = e.stages.Run(StageApply, func() (map[string]int, error) {
		r.progress(StageApply, 0, len(writes))
		done := 0
		_, err := forEach(ctx, e.opts.Workers, len(writes), e.log, func(i int) {
			mb := writes[i]
			attempts, err := 0, errTaskAborted
			defer func() {
				r.pmu.Lock()
				e.recordWrite(r, mb, attempts, err, sv)
				done++
				d := done
				r.pmu.Unlock()
				if e.opts.Progress != nil && (d%100 == 0 || d == len(writes)) {
					r.progress(StageApply, d, len(writes))
				}
			}()
			attempts, err = e.write(ctx, mb.plan)
		})
		sv.close()
		items := map[string]int{"ok": r.rep.Writes, "failed": r.rep.Failures, "not_started": len(writes) - done}
		return items, err
	})
}

// recordWrite books one mailbox's outcome; r.pmu is held.
func (e *Engine) recordWrite(r *run, mb *mbox, attempts int, err error, sv *saver) {
	mb.attempts = attempts
	now := e.now()
	if err == nil {
		mb.written = true
		e.st.SetOwned(mb.identity(), mb.plan.NewOwned)
		entries := mb.plan.AuditEntries(r.rep.ID, now)
		for i := range entries {
			if mb.smtp != "" {
				entries[i].Mailbox = mb.smtp
			}
		}
		if aerr := e.audit.Write(entries...); aerr != nil {
			e.log.Error("pipeline: audit log", "sync", r.rep.ID, "err", aerr)
		}
		e.m.written(mb.plan)
		r.rep.Writes++
		r.rep.Changes += len(mb.plan.Changes)
		e.opts.Caches.Mailboxes.Set(mb.identity(), cache.MailboxSnapshot{
			Allowed: editList(mb.allowed, mb.plan.Allowed), Blocked: editList(mb.blocked, mb.plan.Blocked), FetchedAt: now,
		})
		sv.wrote()
		return
	}
	// Failed, or unknown whether Exchange applied it: claim both what we
	// meant to add and what we meant to remove, and read it again next
	// sync.
	mb.failed = true
	e.st.SetOwned(mb.identity(), mb.plan.OwnedIfUncertain())
	e.opts.Caches.Mailboxes.Del(mb.identity())
	r.rep.Failures++
	e.m.failures.Inc()
	if len(r.rep.Failed) < maxSamples {
		r.rep.Failed = append(r.rep.Failed, MailboxFailure{Mailbox: mb.smtp, Identity: mb.identity(), Attempts: attempts, Error: err.Error()})
	}
	if r.rep.Failures <= maxFailureLogs {
		e.log.Warn("pipeline: mailbox write failed; retried next sync", "sync", r.rep.ID, "mailbox", mb.smtp, "attempts", attempts, "err", err)
	}
}

// editList applies a list edit (case-insensitively for removals).
func editList(cur []string, ed runspace.ListEdit) []string {
	out := make([]string, 0, len(cur)+len(ed.Add))
	for _, id := range cur {
		if !containsFold(ed.Remove, id) {
			out = append(out, id)
		}
	}
	for _, id := range ed.Add {
		if !containsFold(out, id) {
			out = append(out, id)
		}
	}
	return out
}

func containsFold(list []string, id string) bool {
	k := foldID(id)
	for _, s := range list {
		if foldID(s) == k {
			return true
		}
	}
	return false
}

// saver saves the state in the background during a long apply: after
// every SaveEvery writes, at most once a second, one save at a time.
type saver struct {
	e     *Engine
	every int
	// n and last are guarded by the caller of wrote (run.pmu).
	n       int
	last    time.Time
	kick    chan struct{}
	done    chan struct{}
	closeMu sync.Once
}

func newSaver(e *Engine) *saver {
	s := &saver{e: e, every: e.opts.SaveEvery, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go s.loop()
	return s
}

func (s *saver) loop() {
	defer close(s.done)
	for range s.kick {
		if err := SaveState(s.e.opts.StateDir, s.e.st); err != nil {
			s.e.log.Error("pipeline: periodic state save", "err", err)
		}
	}
}

// wrote counts one successful write; the caller serialises calls.
func (s *saver) wrote() {
	s.n++
	if s.n < s.every || time.Since(s.last) < time.Second {
		return
	}
	s.n, s.last = 0, time.Now()
	select {
	case s.kick <- struct{}{}:
	default: // a save is pending already
	}
}

// close stops the saver once a pending save is done; the final save is
// the sync's own.
func (s *saver) close() {
	s.closeMu.Do(func() { close(s.kick) })
	<-s.done
}

// settleUnwritten records the ownership of planned mailboxes that write
// nothing: a plan drops claims on entries that are gone (claimed after an
// uncertain write) and, before the first full sync with adopt_existing,
// adopts the entries present, without any write. Their plans are then
// dropped to free memory. Call it once the guards passed, never on a dry
// run.
func (e *Engine) settleUnwritten(r *run, planned []*mbox) {
	for _, mb := range planned {
		if mb.plan == nil || !mb.plan.Empty() {
			continue
		}
		id := mb.identity()
		if cur := e.st.OwnedOf(id); !sameOwned(cur, mb.plan.NewOwned) {
			e.st.SetOwned(id, mb.plan.NewOwned)
			r.dirty = true
		}
		mb.plan = nil
	}
}

// sameOwned compares two ownerships as sets, ignoring case.
func sameOwned(a, b Owned) bool {
	same := func(x, y []string) bool {
		if len(x) != len(y) {
			return false
		}
		for _, id := range x {
			if !containsFold(y, id) {
				return false
			}
		}
		return true
	}
	return same(a.Allowed, b.Allowed) && same(a.Blocked, b.Blocked)
}

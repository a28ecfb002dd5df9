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
	return forEachGated(ctx, workers, n, log, nil, fn)
}

// forEachGated is forEach with a gate called in order, from one goroutine,
// before task i is handed out (while earlier tasks run): a gate error
// stops handing out work and is returned. Tasks start in index order, so
// the tasks started are [0, started).
func forEachGated(ctx context.Context, workers, n int, log *slog.Logger, gate func(i int) error, fn func(i int)) (int, error) {
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
		if gate != nil {
			if err := gate(i); err != nil {
				stop = err
				break
			}
		}
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
//
// Intent is recorded before acting (DESIGN.md §5): writes are released
// in batches of SaveEvery, and before a batch's first write is sent,
// commitIntent records every entry the batch adds or removes as pending in
// the state and as intent lines in the audit log, and makes both durable
// with one fsync each (group commit): a kill at any point leaves every
// entry Exchange may have applied claimed in the state file. The next
// batch is committed while the last writes of the one before still run,
// so the pool never drains at a batch boundary. Each outcome is then
// recorded as it comes (ownership, done lines, cache, metrics) without an
// fsync: until the next commit or the end of the sync saves it, the
// pending record covers it.
func (e *Engine) applyPlans(ctx context.Context, r *run, writes []*mbox) {
	if len(writes) == 0 {
		return
	}
	r.dirty = true
	_ = e.stages.Run(StageApply, func() (map[string]int, error) {
		r.progress(StageApply, 0, len(writes))
		done, committed := 0, 0
		gate := func(i int) error {
			if i < committed {
				return nil
			}
			end := min(len(writes), i+e.opts.SaveEvery)
			if err := e.commitIntent(r, writes[i:end]); err != nil {
				return err
			}
			committed = end
			return nil
		}
		_, err := forEachGated(ctx, e.opts.Workers, len(writes), e.log, gate, func(i int) {
			mb := writes[i]
			attempts, err := 0, errTaskAborted
			defer func() {
				r.pmu.Lock()
				e.recordWrite(r, mb, attempts, err)
				done++
				d := done
				r.pmu.Unlock()
				if e.opts.Progress != nil && (d%100 == 0 || d == len(writes)) {
					r.progress(StageApply, d, len(writes))
				}
			}()
			attempts, err = e.write(ctx, mb.plan)
		})
		if err != nil && ctx.Err() == nil {
			// The intent could not be made durable: no write of the batch
			// was sent. Stop the sync before any further write.
			r.applyErr = err
			e.log.Error("pipeline: record intent; writes stopped", "sync", r.rep.ID, "err", err)
		}
		items := map[string]int{"ok": r.rep.Writes, "failed": r.rep.Failures, "not_started": len(writes) - done}
		return items, err
	})
}

// auditMailbox is how the audit log names a mailbox.
func auditMailbox(mb *mbox) string {
	if mb.smtp != "" {
		return mb.smtp
	}
	return mb.identity()
}

// commitIntent records the pending writes of batch in the state and their
// intent lines in the audit log, then makes both durable: the audit log is
// flushed with one fsync and the state saved with one (temporary file,
// fsync, rename, directory fsync). No write of the batch may be sent
// before it returned nil.
func (e *Engine) commitIntent(r *run, batch []*mbox) error {
	now := e.now()
	var lines []AuditEntry
	for _, mb := range batch {
		e.st.AddPending(mb.identity(), Pending{DN: mb.dn, Mailbox: mb.smtp, SyncID: r.rep.ID, Changes: mb.plan.Changes})
		lines = append(lines, changeEntries(mb.plan.Changes, r.rep.ID, auditMailbox(mb), PhaseIntent, now)...)
	}
	if err := e.audit.Write(lines...); err != nil {
		return fmt.Errorf("record intent of %d writes: %w", len(batch), err)
	}
	if err := e.audit.Flush(); err != nil {
		return fmt.Errorf("record intent of %d writes: %w", len(batch), err)
	}
	if err := SaveState(e.opts.StateDir, e.st); err != nil {
		return fmt.Errorf("record intent of %d writes: %w", len(batch), err)
	}
	e.m.intentCommits.Inc()
	return nil
}

// recordWrite books one mailbox's outcome; r.pmu is held.
func (e *Engine) recordWrite(r *run, mb *mbox, attempts int, err error) {
	mb.attempts = attempts
	now := e.now()
	if err == nil {
		mb.written = true
		e.st.SettlePending(mb.identity(), mb.plan.NewOwned)
		if aerr := e.audit.Write(changeEntries(mb.plan.Changes, r.rep.ID, auditMailbox(mb), PhaseDone, now)...); aerr != nil {
			e.log.Error("pipeline: audit log", "sync", r.rep.ID, "err", aerr)
		}
		e.m.written(mb.plan)
		r.rep.Writes++
		r.rep.Changes += len(mb.plan.Changes)
		e.opts.Caches.Mailboxes.Set(mb.identity(), cache.MailboxSnapshot{
			Allowed: editList(mb.allowed, mb.plan.Allowed), Blocked: editList(mb.blocked, mb.plan.Blocked), FetchedAt: now,
		})
		return
	}
	// Failed, or unknown whether Exchange applied it: claim both what we
	// meant to add and what we meant to remove, and keep the pending
	// record, which the next sync reconciles (and audits) before it plans.
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

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/easconnector/easconnector/config"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/pipeline/schedule"
	"github.com/easconnector/easconnector/runspace"
	"github.com/easconnector/easconnector/server"
)

// triggerApproval is the trigger of a sync that applies an approved plan;
// triggerCLI that of `easconnector sync` run locally (the service stopped),
// which a service started later shows from the history.
const (
	triggerApproval = "approval"
	triggerCLI      = "cli"
)

// maxSyncNotes bounds the per-sync notes the backend keeps (the engine's
// history keeps the last 32 results and the last of each kind).
const maxSyncNotes = 64

// backend implements server.Backend over the engine, the scheduler, the
// runspace pool's endpoints, the held plans and the audit log. It is also
// the scheduler's sync function, which is where approvals are applied and
// administrators told about a held plan.
type backend struct {
	a        *app
	sched    *schedule.Scheduler // set before the scheduler runs
	log      *slog.Logger
	stateDir string
	maxAge   time.Duration // held plans older than this cannot be approved
	guard    pipeline.GuardConfig
	admins   []string // digest recipients

	mu        sync.Mutex
	approvals []string             // approved plan ids, applied by the next syncs in order
	notes     map[string]*syncNote // by sync id
	order     []string             // note ids, oldest first
	heldSent  string               // held plan id the admins were last told about
	lastErr   error                // error of the last sync, nil after a success
	lastID    string               // the sync lastErr is of

	heldMu    sync.Mutex
	heldCache map[string]heldEntry // by file name
}

// heldEntry is a held plan's summary (without its plans) and the file's
// size and time when it was read: a plan for a large fleet is megabytes,
// and the status is asked for at every page view.
type heldEntry struct {
	size int64
	mod  time.Time
	hp   *pipeline.HeldPlan
}

// syncNote is what the backend knows about a sync beyond its result.
type syncNote struct {
	trigger string
	result  string // pipeline.Result*
}

var _ server.Backend = (*backend)(nil)

func newBackend(a *app, cfg *config.Config) *backend {
	return &backend{
		a: a, log: a.log, stateDir: a.stateDir, maxAge: cfg.Guard.PlanMaxAge.Duration,
		guard: cfg.GuardConfig(), admins: cfg.Notify.AdminRecipients, notes: map[string]*syncNote{},
		heldCache: map[string]heldEntry{},
	}
}

func (b *backend) note(id string) *syncNote {
	n := b.notes[id]
	if n == nil {
		n = &syncNote{}
		b.notes[id] = n
		b.order = append(b.order, id)
		if len(b.order) > maxSyncNotes {
			delete(b.notes, b.order[0])
			b.order = b.order[1:]
		}
	}
	return n
}

// runSync is the scheduler's sync function: one engine sync, or the
// application of the oldest approved plan.
func (b *backend) runSync(ctx context.Context, kind schedule.Kind, id string) error {
	req := pipeline.SyncRequest{Kind: pipeline.SyncKind(kind), ID: id}
	trigger := ""
	if st := b.sched.Status(); st.Running != nil && st.Running.ID == id {
		trigger = st.Running.Trigger
	}
	b.mu.Lock()
	if len(b.approvals) > 0 {
		req.ApproveID, b.approvals = b.approvals[0], b.approvals[1:]
		trigger = triggerApproval
	}
	more := len(b.approvals) > 0
	b.note(id).trigger = trigger
	b.mu.Unlock()
	req.Trigger = trigger

	rep, err := b.a.engine.Sync(ctx, req)
	result := pipeline.ResultOf(rep, err)
	b.mu.Lock()
	b.note(id).result = result
	b.lastErr, b.lastID = err, id
	b.mu.Unlock()
	if more {
		b.sched.Trigger(schedule.Full)
	}
	b.afterSync(rep, err)

	var ge *pipeline.GuardError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ge) && ge.Kind == pipeline.GuardBlastRadius:
		// Held: the verdict will not change by retrying soon, and every
		// retry would hold another plan. The next scheduled sync
		// re-evaluates; the status shows the plan meanwhile.
		return nil
	case req.ApproveID != "" && !errors.Is(err, pipeline.ErrMDM) && ctx.Err() == nil && !isInfrastructure(err):
		// The plan could not be approved (gone, too old): nothing to retry.
		b.log.Error("approve held plan", "plan", req.ApproveID, "err", err)
		return nil
	}
	return err
}

// isInfrastructure reports whether err comes from Exchange being
// unreachable or refusing us, which a retry may cure.
func isInfrastructure(err error) bool {
	switch runspace.Classify(err) {
	case runspace.ClassTransport, runspace.ClassTimeout, runspace.ClassThrottle, runspace.ClassFault,
		runspace.ClassAuth, runspace.ClassTLS, runspace.ClassInit, runspace.ClassProtocol:
		return true
	}
	return errors.Is(err, runspace.ErrAllServersDown) || errors.Is(err, runspace.ErrSessionBroken)
}

// afterSync tells administrators about a newly held plan (once, not at
// every sync that holds it again) and prunes held plans too old to be
// approved.
func (b *backend) afterSync(rep *pipeline.Report, err error) {
	if rep != nil && rep.Held != nil && b.a.notifier != nil && len(b.admins) > 0 {
		b.mu.Lock()
		first := b.heldSent == ""
		b.heldSent = rep.Held.ID
		b.mu.Unlock()
		if first {
			hp := rep.Held
			lines := []string{
				hp.Reason,
				fmt.Sprintf("Devices that would lose access: %d (limit %d); mailboxes to write: %d.", hp.Counts.Revocations, b.guard.BlastLimit(hp.Devices), hp.Counts.Writes),
				"Nothing was written. Review the plan: easconnector plan --show " + hp.ID,
				"Apply it: easconnector sync --approve " + hp.ID + " (or the Approve button of the status page).",
				"Until then every sync stops at the same guard.",
			}
			if derr := b.a.notifier.Digest(b.admins, "easconnector: plan held for approval ("+fmt.Sprint(hp.Counts.Revocations)+" devices would lose access)", lines); derr != nil {
				b.log.Warn("notify administrators of the held plan", "err", derr)
			}
		}
	} else if err == nil {
		b.mu.Lock()
		b.heldSent = ""
		b.mu.Unlock()
	}
	b.pruneHeld()
}

// listHeld returns the held plans without their plans, oldest first,
// reading only files that are new or changed since the last call.
func (b *backend) listHeld() []*pipeline.HeldPlan {
	dir := filepath.Join(b.stateDir, pipeline.HeldDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			b.log.Warn("list held plans", "err", err)
		}
		return nil
	}
	b.heldMu.Lock()
	defer b.heldMu.Unlock()
	seen := make(map[string]bool, len(ents))
	var out []*pipeline.HeldPlan
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		seen[e.Name()] = true
		c, ok := b.heldCache[e.Name()]
		if !ok || c.size != info.Size() || !c.mod.Equal(info.ModTime()) {
			hp, err := pipeline.LoadHeldPlan(b.stateDir, id)
			if err != nil {
				b.log.Warn("held plan unreadable", "file", filepath.Join(dir, e.Name()), "err", err)
				continue
			}
			hp.Plans = nil
			c = heldEntry{size: info.Size(), mod: info.ModTime(), hp: hp}
			b.heldCache[e.Name()] = c
		}
		out = append(out, c.hp)
	}
	for name := range b.heldCache {
		if !seen[name] {
			delete(b.heldCache, name)
		}
	}
	slices.SortFunc(out, func(x, y *pipeline.HeldPlan) int { return x.CreatedAt.Compare(y.CreatedAt) })
	return out
}

// pruneHeld removes held plans that can no longer be approved: each sync a
// guard stops keeps a plan, which for a large fleet is megabytes.
func (b *backend) pruneHeld() {
	plans := b.listHeld()
	now := time.Now()
	for _, hp := range plans {
		if hp.CheckApprovable(now, b.maxAge) != nil {
			if err := pipeline.RemoveHeldPlan(b.stateDir, hp.ID); err != nil {
				b.log.Warn("remove expired held plan", "plan", hp.ID, "err", err)
			}
		}
	}
}

// Ready implements server.Backend: ready once an Exchange server is up.
func (b *backend) Ready(ctx context.Context) error {
	if up, why := b.exchangeUp(); !up {
		return errors.New(why)
	}
	return nil
}

// exchangeUp reports whether a CAS endpoint is up, and why not.
func (b *backend) exchangeUp() (bool, string) {
	eps := b.a.pool.Endpoints()
	var last string
	for _, ep := range eps {
		if ep.State == runspace.StateUp {
			return true, ""
		}
		if last == "" {
			last = ep.LastError
		}
	}
	why := "no Exchange server reachable"
	if last != "" {
		why += ": " + last
	}
	return false, why
}

// Status implements server.Backend.
func (b *backend) Status(ctx context.Context) server.Status {
	var st server.Status
	for _, ep := range b.a.pool.Endpoints() {
		state := ep.State
		if state == runspace.StateProbing {
			state = "backoff"
		}
		st.Servers = append(st.Servers, server.ServerState{Name: ep.Server, State: state, Sessions: ep.Sessions, LastError: ep.LastError})
	}
	// The last sync of each kind is kept apart from the recent ones, so a
	// day of quick syncs never hides the last full one; both outlive a
	// restart (and include `easconnector sync` runs), from the history in
	// the state directory.
	eng := b.a.engine
	st.LastFull, st.LastFullSuccess = b.found(eng.LastSync(pipeline.SyncFull)), b.found(eng.LastSuccess(pipeline.SyncFull))
	st.LastQuick, st.LastQuickSuccess = b.found(eng.LastSync(pipeline.SyncQuick)), b.found(eng.LastSuccess(pipeline.SyncQuick))
	results := eng.LastResults()
	if cur, ok := b.a.engine.Current(); ok {
		sr := b.syncResult(&cur, server.ResultRunning)
		st.Running = &sr
	}
	if b.sched != nil {
		st.NextQuick, st.NextFull = b.sched.Next()
	}
	held := b.currentHeld()
	if held != nil {
		st.HeldPlan = b.summary(held)
	}

	st.Status = server.StatusConnected
	if up, why := b.exchangeUp(); !up {
		st.Status, st.Reason = server.StatusDisconnected, why
		return st
	}
	b.mu.Lock()
	lastErr, lastID := b.lastErr, b.lastID
	b.mu.Unlock()
	if len(results) > 0 && results[0].ID != lastID {
		// The engine has recorded a sync whose error runSync has not
		// (it is returning), or the last sync is of an earlier run or of
		// `easconnector sync`: its result says whether the connector
		// keeps up. A held plan speaks for itself (currentHeld).
		lastErr = nil
		switch msg := results[0].Error; {
		case msg == "" || results[0].Guard.Result == pipeline.GuardHeld:
		case strings.HasPrefix(msg, pipeline.ErrMDM.Error()+": "):
			lastErr = fmt.Errorf("%w: %s", pipeline.ErrMDM, strings.TrimPrefix(msg, pipeline.ErrMDM.Error()+": "))
		default:
			lastErr = errors.New(msg)
		}
	}
	switch {
	case held != nil:
		st.Status = server.StatusDegraded
		st.Reason = fmt.Sprintf("a guard holds plan %s for approval: %s", held.ID, held.Reason)
	case errors.Is(lastErr, pipeline.ErrMDM):
		st.Status, st.Reason = server.StatusDegraded, "the MDM could not be read or trusted; nothing was changed: "+lastErr.Error()
	case lastErr != nil:
		st.Status, st.Reason = server.StatusDegraded, "the last sync failed: "+lastErr.Error()
	case len(results) > 0 && results[0].Failures > 0:
		st.Status = server.StatusDegraded
		st.Reason = fmt.Sprintf("the last sync could not write %d mailboxes; they are retried next sync", results[0].Failures)
	}
	return st
}

// found converts the result of Engine.LastSync or LastSuccess; nil when
// there was none.
func (b *backend) found(r pipeline.SyncResult, ok bool) *server.SyncResult {
	if !ok {
		return nil
	}
	sr := b.syncResult(&r, "")
	return &sr
}

// currentHeld returns the newest plan a guard held that can still be
// approved. Plans `easconnector plan` kept are not a hold: they do not make
// the service degraded.
func (b *backend) currentHeld() *pipeline.HeldPlan {
	plans := b.listHeld()
	now := time.Now()
	for i := len(plans) - 1; i >= 0; i-- {
		if plans[i].Source == pipeline.HeldByGuard && plans[i].CheckApprovable(now, b.maxAge) == nil {
			return plans[i]
		}
	}
	return nil
}

func (b *backend) summary(hp *pipeline.HeldPlan) *server.PlanSummary {
	return &server.PlanSummary{
		ID: hp.ID, SyncID: hp.SyncID, Created: hp.CreatedAt, NewBlocks: hp.Counts.Revocations,
		Limit: b.guard.BlastLimit(hp.Devices), Mailboxes: hp.Counts.Writes, Reason: hp.Reason, Source: hp.Source,
	}
}

// syncResult converts an engine result; result overrides the computed one.
func (b *backend) syncResult(r *pipeline.SyncResult, result string) server.SyncResult {
	out := server.SyncResult{
		ID: r.ID, Kind: string(r.Kind), Start: r.Start, End: r.End, Error: r.Error,
		Counts: map[string]int{}, Writes: r.Writes, Failures: r.Failures,
	}
	for d, n := range r.CountsByDecision {
		out.Counts[string(d)] = n
	}
	out.Trigger = r.Trigger // kept in the history: also of earlier runs
	b.mu.Lock()
	n := b.notes[r.ID]
	if n != nil {
		out.Trigger = n.trigger
		if result == "" {
			result = n.result
		}
	}
	b.mu.Unlock()
	if result == "" { // a sync this backend did not run
		switch {
		case r.Guard.Result == pipeline.GuardHeld:
			result = pipeline.ResultHeld
		case r.Error != "":
			result = pipeline.ResultFailed
		case r.Failures > 0:
			result = pipeline.ResultPartial
		default:
			result = pipeline.ResultOK
		}
	}
	switch result {
	case pipeline.ResultOK, server.ResultRunning:
		out.Result = result
	case pipeline.ResultHeld:
		out.Result = server.ResultHeld
	case pipeline.ResultCancelled:
		out.Result = server.ResultCancelled
	case pipeline.ResultPartial:
		out.Result = server.ResultFailed
		if out.Error == "" {
			out.Error = fmt.Sprintf("%d mailbox writes failed; they are retried next sync", r.Failures)
		}
	default: // failed, degraded
		out.Result = server.ResultFailed
	}
	return out
}

// TriggerSync implements server.Backend.
func (b *backend) TriggerSync(ctx context.Context, kind string) (string, bool, error) {
	k, err := schedule.ParseKind(kind)
	if err != nil {
		return "", false, fmt.Errorf("%w: %v", server.ErrInvalid, err)
	}
	id, coalesced := b.sched.Trigger(k)
	return id, coalesced, nil
}

// Syncs implements server.Backend.
func (b *backend) Syncs(ctx context.Context, limit int) []server.SyncResult {
	var out []server.SyncResult
	if cur, ok := b.a.engine.Current(); ok {
		out = append(out, b.syncResult(&cur, server.ResultRunning))
	}
	results := b.a.engine.LastResults()
	for i := range results {
		if len(out) >= limit {
			break
		}
		out = append(out, b.syncResult(&results[i], ""))
	}
	return out
}

// Devices implements server.Backend.
func (b *backend) Devices(ctx context.Context, q server.DeviceQuery) (server.DevicePage, error) {
	rows, total := b.a.engine.Devices(pipeline.DeviceQuery{
		Decision: pipeline.Decision(q.Decision), Reason: pipeline.Reason(q.Reason), User: q.User,
	}, q.Offset, q.Limit)
	page := server.DevicePage{Total: total, Devices: make([]server.DeviceRow, 0, len(rows))}
	for _, r := range rows {
		page.Devices = append(page.Devices, server.DeviceRow{
			Mailbox: r.Mailbox, User: r.User, DeviceID: r.DeviceID, DeviceType: r.DeviceType, DeviceModel: r.DeviceModel,
			Decision: string(r.Decision), Reason: string(r.Reason), ExchangeState: string(r.ExchangeState), ExchangeAfter: string(r.ExchangeAfter), Compliance: string(r.Compliance),
		})
	}
	return page, nil
}

// Plan implements server.Backend.
func (b *backend) Plan(ctx context.Context, id string) (*server.HeldPlan, error) {
	hp, err := loadHeld(b.stateDir, id)
	if err != nil {
		return nil, err
	}
	out := &server.HeldPlan{PlanSummary: *b.summary(hp), Changes: []server.PlanChange{}}
	for i := range hp.Plans {
		p := &hp.Plans[i]
		for _, c := range p.Changes {
			from, to := listMove(c.List, c.Op)
			mb := p.Mailbox
			if mb == "" {
				mb = p.Identity
			}
			out.Changes = append(out.Changes, server.PlanChange{Mailbox: mb, DeviceID: c.DeviceID, From: from, To: to, Reason: string(c.Reason)})
		}
	}
	return out, nil
}

// loadHeld loads a held plan, mapping "not found" onto the server's error.
func loadHeld(dir, id string) (*pipeline.HeldPlan, error) {
	hp, err := pipeline.LoadHeldPlan(dir, id)
	if errors.Is(err, pipeline.ErrHeldPlanNotFound) {
		return nil, fmt.Errorf("held plan %s: %w", id, server.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", server.ErrInvalid, err)
	}
	return hp, nil
}

// listMove says where a list change takes a device: "not blocked" →
// "blocked" for an addition to the blocked list, and so on.
func listMove(l pipeline.List, op pipeline.Op) (from, to string) {
	if op == pipeline.OpAdd {
		return "not " + string(l), string(l)
	}
	return string(l), "not " + string(l)
}

// ApprovePlan implements server.Backend: the plan is applied by the next
// sync, which is requested at once.
func (b *backend) ApprovePlan(ctx context.Context, id string) (string, error) {
	hp, err := loadHeld(b.stateDir, id)
	if err != nil {
		return "", err
	}
	if err := hp.CheckApprovable(time.Now(), b.maxAge); err != nil {
		return "", fmt.Errorf("%w: %v", server.ErrConflict, err)
	}
	b.mu.Lock()
	if slices.Contains(b.approvals, id) {
		b.mu.Unlock()
		return "", fmt.Errorf("%w: plan %s is approved already and waits for its sync", server.ErrConflict, id)
	}
	b.approvals = append(b.approvals, id)
	b.mu.Unlock()
	kind := schedule.Full
	if hp.Kind == pipeline.SyncQuick {
		kind = schedule.Quick
	}
	syncID, _ := b.sched.Trigger(kind)
	b.log.Info("held plan approved", "plan", id, "sync", syncID)
	return syncID, nil
}

// Changes implements server.Backend: the newest entries of the audit log.
func (b *backend) Changes(ctx context.Context, limit int) []server.Change {
	entries, err := pipeline.ReadAuditTail(b.stateDir, limit)
	if err != nil {
		b.log.Warn("read audit log", "err", err)
	}
	out := make([]server.Change, 0, len(entries))
	for _, e := range entries {
		if !e.Applied() {
			continue // an intent, a write that never took effect, an org write
		}
		from, to := string(e.List), "not "+string(e.List)
		if e.To == pipeline.Present {
			from, to = to, from
		}
		out = append(out, server.Change{Time: e.Time, SyncID: e.SyncID, Mailbox: e.Mailbox, DeviceID: e.Device, From: from, To: to, Reason: string(e.Reason)})
	}
	return out
}

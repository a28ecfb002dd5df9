package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// fakeBackend is a Backend over fixed data that records what it is asked.
type fakeBackend struct {
	mu       sync.Mutex
	status   Status
	syncs    []SyncResult
	devices  []DeviceRow
	plans    map[string]*HeldPlan
	approved map[string]bool
	changes  []Change
	readyErr error
	pending  string // id of the requested sync not yet started
	nextID   int
	queries  []DeviceQuery
	kinds    []string    // TriggerSync calls
	trigger  chan string // TriggerSync kinds, for tests that wait
}

var _ Backend = (*fakeBackend)(nil)

const fakePlanID = "plan-20260610T030012Z"

// newFakeBackend returns a fleet of 2,500 devices, two Exchange servers (one
// down), a held plan and some history, relative to now.
func newFakeBackend(now time.Time) *fakeBackend {
	f := &fakeBackend{plans: map[string]*HeldPlan{}, approved: map[string]bool{}, trigger: make(chan string, 16)}
	decisions := []struct{ decision, reason, state, compliance string }{
		{"Allow", "Compliant", "Allowed", "compliant"},
		{"Allow", "Compliant", "Allowed", "inGracePeriod"},
		{"Block", "NotCompliant", "Blocked", "noncompliant"},
		{"Default", "NotEnrolled", "Quarantined", ""},
		{"Allow", "Exempt", "Allowed", ""},
	}
	counts, states := map[string]int{}, map[string]int{}
	for i := range 2500 {
		d := decisions[i%len(decisions)]
		f.devices = append(f.devices, DeviceRow{
			Mailbox: fmt.Sprintf("user%04d@contoso.com", i/2), User: fmt.Sprintf("user%04d@contoso.com", i/2),
			DeviceID: fmt.Sprintf("Appl%08X", i), DeviceType: "iPhone", DeviceModel: "iPhone15,2",
			Decision: d.decision, DecisionText: d.decision, Reason: d.reason, ExchangeStateBefore: d.state, ExchangeState: d.state,
			Compliance: d.compliance, MDMLastSync: now.Add(-time.Duration(i) * time.Minute).UTC(),
		})
		if d.decision == "Default" {
			f.devices[i].DecisionText = "Default (Quarantine)"
		}
		counts[d.decision]++
		states[d.state]++
	}
	full := SyncResult{ID: "20260610T030000Z-5eed0001", Kind: "full", Trigger: "scheduled", Start: now.Add(-7 * time.Hour),
		End: now.Add(-7*time.Hour + 4*time.Minute + 12*time.Second), Result: ResultOK, Counts: counts, Writes: 318, Failures: 2,
		Lag: &LagStats{Devices: 40, P50: 62, P95: 118, Max: 170}}
	fleet := &FleetCounts{SyncID: full.ID, At: full.End, Total: 2500, Decisions: counts, ExchangeStatesBefore: states,
		ListsAfter: map[string]int{"Allowed": 1500, "Blocked": 500, "Neither": 500}}
	full.Fleet = fleet
	quick := SyncResult{ID: "20260610T091500Z-5eed0002", Kind: "quick", Trigger: "scheduled", Start: now.Add(-50 * time.Minute),
		End: now.Add(-50*time.Minute + 38*time.Second), Result: ResultHeld, Counts: map[string]int{"Allow": 12, "Block": 812},
		Error: "guard: 812 new blocks exceed the limit of 500"}
	failed := SyncResult{ID: "20260610T071500Z-5eed0003", Kind: "quick", Trigger: "scheduled", Start: now.Add(-3 * time.Hour),
		End: now.Add(-3*time.Hour + 9*time.Second), Result: ResultFailed, Counts: map[string]int{},
		Error: "mdm: token endpoint: 503 Service Unavailable"}
	f.syncs = []SyncResult{quick, failed, full}
	plan := &HeldPlan{PlanSummary: PlanSummary{ID: fakePlanID, SyncID: quick.ID, Created: quick.End, NewBlocks: 812, Limit: 500,
		Mailboxes: 790, Reason: "812 new blocks exceed max(500, 10% of 2,500 devices)"}}
	for i := range 812 {
		plan.Changes = append(plan.Changes, PlanChange{Mailbox: fmt.Sprintf("user%04d@contoso.com", i), DeviceID: fmt.Sprintf("Andr%08X", i),
			From: "Default", To: "Block", Reason: "NotCompliant"})
	}
	f.plans[plan.ID] = plan
	for i := range 40 {
		f.changes = append(f.changes, Change{Time: now.Add(-time.Duration(i) * 7 * time.Minute), SyncID: full.ID,
			Mailbox: fmt.Sprintf("user%04d@contoso.com", i), DeviceID: fmt.Sprintf("Appl%08X", i), From: PlaceBlocked, To: PlaceAllowed, Reason: "Compliant",
			Summary: "allowed, was blocked"})
	}
	f.status = Status{
		Status: StatusDegraded, Reason: "ex02.contoso.local unreachable; sessions run on ex01",
		Servers: []ServerState{
			{Name: "EX01", Address: "ex01.contoso.local", State: "up", Sessions: 8},
			{Name: "EX02", Address: "ex02.contoso.local", State: "down", LastError: "dial tcp 10.0.0.12:5986: connect: connection refused"},
		},
		DefaultMeans: "Quarantine", Fleet: fleet,
		LastFull: &full, LastQuick: &quick, NextQuick: now.Add(70 * time.Minute), NextFull: now.Add(17 * time.Hour),
		HeldPlan: &plan.PlanSummary,
	}
	return f
}

func (f *fakeBackend) Ready(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readyErr
}

func (f *fakeBackend) Status(context.Context) Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeBackend) TriggerSync(_ context.Context, kind string) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kinds = append(f.kinds, kind)
	select {
	case f.trigger <- kind:
	default:
	}
	if f.pending != "" {
		return f.pending, true, nil
	}
	f.nextID++
	f.pending = fmt.Sprintf("20260610T101500Z-%08x", f.nextID)
	return f.pending, false, nil
}

func (f *fakeBackend) triggered() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.kinds...)
}

func (f *fakeBackend) Syncs(_ context.Context, limit int) []SyncResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs[:min(limit, len(f.syncs))]
}

func (f *fakeBackend) match(q DeviceQuery) []DeviceRow {
	var out []DeviceRow
	for _, d := range f.devices {
		if (q.Decision == "" || d.Decision == q.Decision) && (q.Reason == "" || d.Reason == q.Reason) &&
			(q.User == "" || strings.EqualFold(d.Mailbox, q.User) || strings.EqualFold(d.User, q.User)) {
			out = append(out, d)
		}
	}
	return out
}

func (f *fakeBackend) Devices(_ context.Context, q DeviceQuery) (DevicePage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	all := f.match(q)
	lo := min(q.Offset, len(all))
	hi := min(lo+q.Limit, len(all))
	return DevicePage{Total: len(all), Devices: all[lo:hi]}, nil
}

func (f *fakeBackend) Plan(_ context.Context, id string) (*HeldPlan, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.plans[id]
	if !ok {
		return nil, fmt.Errorf("plan %s: %w", id, ErrNotFound)
	}
	return p, nil
}

func (f *fakeBackend) ApprovePlan(_ context.Context, id string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.plans[id]; !ok {
		return "", fmt.Errorf("plan %s: %w", id, ErrNotFound)
	}
	if f.approved[id] {
		return "", fmt.Errorf("plan %s was approved already: %w", id, ErrConflict)
	}
	f.approved[id] = true
	return "20260610T102000Z-a11ce000", nil
}

func (f *fakeBackend) DeviceStories(_ context.Context, q string, limit int) ([]DeviceStory, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []DeviceStory
	for _, d := range f.devices {
		if len(out) < limit && (strings.EqualFold(d.DeviceID, q) || strings.EqualFold(d.Mailbox, q) || strings.EqualFold(d.User, q)) {
			st := DeviceStory{DeviceRow: d, Writes: []Change{}, Notices: []Notice{}}
			for _, c := range f.changes {
				if c.DeviceID == d.DeviceID {
					st.Writes = append(st.Writes, c)
				}
			}
			if len(st.Writes) > 0 {
				st.LastWrittenTo = st.Writes[0].To
			}
			if d.Decision == "Block" {
				st.Notices = append(st.Notices, Notice{State: "blocked", Sent: f.syncs[2].End})
			}
			out = append(out, st)
		}
	}
	return out, nil
}

func (f *fakeBackend) Changes(_ context.Context, limit int) []Change {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changes[:min(limit, len(f.changes))]
}

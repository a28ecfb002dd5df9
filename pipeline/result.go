package pipeline

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync/atomic"
	"time"
)

// SyncKind is what a sync reads: everything, or only what can have changed.
type SyncKind string

// Sync kinds.
const (
	SyncFull  SyncKind = "full"
	SyncQuick SyncKind = "quick"
)

// NewSyncID returns a sortable, unique sync id: the UTC start time and 32
// random bits, e.g. 20250301T030000Z-9f86d081.
func NewSyncID(start time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return start.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// Guard results.
const (
	GuardPassed     = "passed"      // every guard passed; writes went ahead
	GuardHeld       = "held"        // a guard stopped the sync; the plan is held
	GuardNotReached = "not_reached" // the sync failed before the guards ran
	GuardApproved   = "approved"    // a held plan was applied on approval
)

// GuardOutcome is what the guards did in one sync.
type GuardOutcome struct {
	Result     string    `json:"result"`
	Kind       GuardKind `json:"kind,omitempty"`
	HeldPlanID string    `json:"held_plan_id,omitempty"`
	Message    string    `json:"message,omitempty"`
}

// GuardOutcomeOf turns CheckSnapshot's or CheckBlastRadius's error into an
// outcome; heldID names the held plan, if one was kept.
func GuardOutcomeOf(err error, heldID string) GuardOutcome {
	var ge *GuardError
	switch {
	case err == nil:
		return GuardOutcome{Result: GuardPassed}
	case errors.As(err, &ge):
		return GuardOutcome{Result: GuardHeld, Kind: ge.Kind, HeldPlanID: heldID, Message: ge.Error()}
	default:
		return GuardOutcome{Result: GuardNotReached, Message: err.Error()}
	}
}

// SyncResult is the record of one sync, as the status API and page show
// it. It is filled by one goroutine (the report stage); Tally collects the
// concurrent counts.
type SyncResult struct {
	ID      string    `json:"id"`
	Kind    SyncKind  `json:"kind"`
	Trigger string    `json:"trigger,omitempty"` // SyncRequest.Trigger
	Start   time.Time `json:"start"`
	End     time.Time `json:"end,omitzero"`
	// Devices and Mailboxes are the partnerships decided on and the
	// mailboxes planned.
	Devices          int              `json:"devices"`
	Mailboxes        int              `json:"mailboxes"`
	CountsByDecision map[Decision]int `json:"counts_by_decision"`
	CountsByReason   map[Reason]int   `json:"counts_by_reason"`
	// Writes is the Set-CASMailbox calls that succeeded; Changes the list
	// entries they added or removed.
	Writes  int `json:"writes"`
	Changes int `json:"changes"`
	// Failures is the mailboxes whose write failed (retried next sync).
	Failures  int          `json:"failures"`
	Conflicts int          `json:"conflicts"`
	Guard     GuardOutcome `json:"guard"`
	// Error is the infrastructure failure that stopped the sync, if any.
	Error string `json:"error,omitempty"`
}

// Duration is how long the sync took (zero while it runs).
func (r *SyncResult) Duration() time.Duration {
	if r.End.IsZero() {
		return 0
	}
	return r.End.Sub(r.Start)
}

// OK reports whether the sync finished without an error, a held plan or a
// failed write.
func (r *SyncResult) OK() bool {
	return r.Error == "" && r.Failures == 0 && r.Guard.Result != GuardHeld && r.Guard.Result != GuardNotReached
}

// Tally counts decisions and reasons from concurrent deciders without
// locks or allocation. The zero value is ready to use.
type Tally struct {
	decisions [len(decisionList)]atomic.Int64
	reasons   [len(reasonList)]atomic.Int64
}

// Add counts one device.
func (t *Tally) Add(d Decision, r Reason) {
	if i := decisionIndex(d); i >= 0 {
		t.decisions[i].Add(1)
	}
	if i := reasonIndex(r); i >= 0 {
		t.reasons[i].Add(1)
	}
}

// Fill copies the counts into r.
func (t *Tally) Fill(r *SyncResult) {
	r.CountsByDecision = make(map[Decision]int, len(decisionList))
	r.CountsByReason = make(map[Reason]int, len(reasonList))
	for i, d := range decisionList {
		if n := t.decisions[i].Load(); n > 0 {
			r.CountsByDecision[d] = int(n)
		}
	}
	for i, rs := range reasonList {
		if n := t.reasons[i].Load(); n > 0 {
			r.CountsByReason[rs] = int(n)
		}
	}
}

func decisionIndex(d Decision) int {
	for i, x := range decisionList {
		if x == d {
			return i
		}
	}
	return -1
}

func reasonIndex(r Reason) int {
	for i, x := range reasonList {
		if x == r {
			return i
		}
	}
	return -1
}

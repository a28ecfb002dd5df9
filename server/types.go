package server

import (
	"context"
	"errors"
	"time"
)

// Backend is what the admin server needs from the daemon. The daemon
// implements it over the pipeline, the scheduler and the state; methods are
// called concurrently from request goroutines and must honour ctx.
type Backend interface {
	// Ready returns nil when the daemon can do its job (configuration
	// loaded, state readable, first connection attempts made), else an
	// error saying why not; /readyz reports it.
	Ready(ctx context.Context) error
	// Status returns the connector's status. The server sets Version.
	Status(ctx context.Context) Status
	// TriggerSync requests a sync of kind "quick" or "full" (already
	// validated); it must not wait for the sync.
	TriggerSync(ctx context.Context, kind string) (id string, coalesced bool, err error)
	// Syncs returns up to limit syncs, newest first, including a running
	// one (Result "running").
	Syncs(ctx context.Context, limit int) []SyncResult
	// Devices returns one page of devices matching q (fields already
	// validated: Decision and Reason are canonical names or empty, User is
	// an exact, case-insensitive match on mailbox address or UPN, or empty).
	Devices(ctx context.Context, q DeviceQuery) (DevicePage, error)
	// Plan returns a plan held by the guard; an error wrapping ErrNotFound
	// when there is no such plan.
	Plan(ctx context.Context, id string) (*HeldPlan, error)
	// ApprovePlan approves a held plan and requests the sync that applies
	// it; ErrNotFound for an unknown plan, ErrConflict for one that was
	// approved already or superseded.
	ApprovePlan(ctx context.Context, id string) (syncID string, err error)
	// Changes returns up to limit entries of the audit log, newest first.
	Changes(ctx context.Context, limit int) []Change
}

// Errors a Backend wraps to choose the HTTP status.
var (
	ErrNotFound = errors.New("not found")               // 404
	ErrConflict = errors.New("conflict")                // 409
	ErrInvalid  = errors.New("invalid request")         // 400
	ErrBusy     = errors.New("temporarily unavailable") // 503
)

// Connector states, as the old Intune Exchange connector named them.
const (
	StatusConnected    = "connected"
	StatusDegraded     = "degraded"
	StatusDisconnected = "disconnected"
)

// Sync results.
const (
	ResultOK        = "ok"
	ResultFailed    = "failed"
	ResultHeld      = "held" // the guard held the plan; nothing was written
	ResultRunning   = "running"
	ResultCancelled = "cancelled"
)

// Status is GET /api/v1/status.
type Status struct {
	// Status is StatusConnected, StatusDegraded or StatusDisconnected;
	// Reason says why it is not connected.
	Status  string        `json:"status"`
	Reason  string        `json:"reason,omitempty"`
	Servers []ServerState `json:"servers"`
	// LastFull and LastQuick are the last finished sync of each kind,
	// whatever its result; LastFullSuccess and LastQuickSuccess the last
	// one that succeeded (the same sync when the last one did), however
	// many syncs of the other kind followed.
	LastFull         *SyncResult  `json:"lastFull,omitempty"`
	LastQuick        *SyncResult  `json:"lastQuick,omitempty"`
	LastFullSuccess  *SyncResult  `json:"lastFullSuccess,omitempty"`
	LastQuickSuccess *SyncResult  `json:"lastQuickSuccess,omitempty"`
	Running          *SyncResult  `json:"running,omitempty"`
	NextQuick        time.Time    `json:"nextQuick,omitzero"`
	NextFull         time.Time    `json:"nextFull,omitzero"`
	HeldPlan         *PlanSummary `json:"heldPlan,omitempty"`
	Version          string       `json:"version"`
}

// ServerState is one Exchange endpoint of the runspace pool.
type ServerState struct {
	Name      string `json:"name"`
	State     string `json:"state"` // e.g. up, down, backoff
	Sessions  int    `json:"sessions"`
	LastError string `json:"lastError,omitempty"`
}

// SyncResult is one sync.
type SyncResult struct {
	ID       string         `json:"id"`
	Kind     string         `json:"kind"`              // quick or full
	Trigger  string         `json:"trigger,omitempty"` // manual, scheduled, startup, retry, approval
	Start    time.Time      `json:"start"`
	End      time.Time      `json:"end,omitzero"`
	Result   string         `json:"result"` // ResultOK, ResultFailed, …
	Error    string         `json:"error,omitempty"`
	Counts   map[string]int `json:"counts"` // devices by decision
	Writes   int            `json:"writes"` // Set-CASMailbox calls that changed a list
	Failures int            `json:"failures"`
}

// PlanSummary describes a plan held by the guard.
type PlanSummary struct {
	ID        string    `json:"id"`
	SyncID    string    `json:"syncId,omitempty"`
	Created   time.Time `json:"created"`
	NewBlocks int       `json:"newBlocks"`
	Limit     int       `json:"limit"` // the new-block limit the plan exceeded
	Mailboxes int       `json:"mailboxes"`
	Reason    string    `json:"reason,omitempty"`
	// Source is "guard" (a sync's guard held it: the service is degraded
	// until it is approved, discarded or expires) or "plan" (kept by
	// `easconnector plan` for review).
	Source string `json:"source,omitempty"`
}

// HeldPlan is GET /api/v1/plans/{id}: the summary and every change.
type HeldPlan struct {
	PlanSummary
	Changes []PlanChange `json:"changes"`
}

// PlanChange is one planned list change.
type PlanChange struct {
	Mailbox  string `json:"mailbox"`
	DeviceID string `json:"deviceId"`
	From     string `json:"from"` // decision before
	To       string `json:"to"`   // decision after
	Reason   string `json:"reason"`
}

// DeviceQuery selects devices for GET /api/v1/devices.
type DeviceQuery struct {
	Decision string
	Reason   string
	User     string
	Offset   int
	Limit    int
}

// DevicePage is one page of devices. The server adds Next.
type DevicePage struct {
	Total   int         `json:"total"`
	Offset  int         `json:"offset"`
	Limit   int         `json:"limit"`
	Next    string      `json:"next,omitempty"` // URL of the next page
	Devices []DeviceRow `json:"devices"`
}

// DeviceRow is one device with the connector's decision.
type DeviceRow struct {
	Mailbox       string `json:"mailbox"`
	User          string `json:"user"`
	DeviceID      string `json:"deviceId"`
	DeviceType    string `json:"deviceType"`
	DeviceModel   string `json:"deviceModel"`
	Decision      string `json:"decision"`
	Reason        string `json:"reason"`
	ExchangeState string `json:"exchangeState"` // DeviceAccessState as read, before the sync wrote
	// ExchangeAfter is what the mailbox's own lists give the device after
	// the sync (Allowed, Blocked), empty when rules or the org default decide.
	ExchangeAfter string `json:"exchangeAfter,omitempty"`
	Compliance    string `json:"compliance"` // MDM complianceState, "" when not enrolled
}

// Change is one audit log entry: a list change the connector made.
type Change struct {
	Time     time.Time `json:"time"`
	SyncID   string    `json:"syncId"`
	Mailbox  string    `json:"mailbox"`
	DeviceID string    `json:"deviceId"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Reason   string    `json:"reason"`
}

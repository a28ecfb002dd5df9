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
	// DeviceStories returns the devices a search matches (q already
	// validated: a mailbox address, UPN or display name, or a DeviceId,
	// exact and case-insensitive), at most limit, each with its full story.
	DeviceStories(ctx context.Context, q string, limit int) ([]DeviceStory, error)
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
	// DefaultMeans is what a Default decision currently leads to when no
	// device access rule of Exchange matches: the organization's
	// DefaultAccessLevel (Allow, Block or Quarantine) as the policy sees
	// it ("" when unknown).
	DefaultMeans string `json:"defaultMeans,omitempty"`
	// Fleet counts every partnership of the last sync's view: by the
	// connector's decision and by the state Exchange reported when the
	// sync read it (before the sync's own writes).
	Fleet   *FleetCounts `json:"fleet,omitempty"`
	Version string       `json:"version"`
}

// FleetCounts are the partnerships of one sync's view of the fleet.
type FleetCounts struct {
	SyncID string    `json:"syncId"`
	At     time.Time `json:"at"`
	Total  int       `json:"total"`
	// Decisions: Allow, Block, Default, NoChange.
	Decisions map[string]int `json:"decisions"`
	// ExchangeStatesBefore are DeviceAccessState values (Allowed, Blocked,
	// Quarantined, DeviceDiscovery, Unknown) as Exchange last reported
	// them to the connector (a full sync reads every device, a quick sync
	// the ones it reads again), before the connector's writes.
	ExchangeStatesBefore map[string]int `json:"exchangeStatesBefore"`
	// ListsAfter is what the mailboxes' own lists give the devices after
	// the sync's writes: Allowed, Blocked, or Neither (device access rules
	// and the org default decide). Exchange applies it at each device's
	// next request.
	ListsAfter map[string]int `json:"listsAfter,omitempty"`
}

// ServerState is one Exchange endpoint of the runspace pool.
type ServerState struct {
	// Name is the Exchange server's name (CAS01) as Get-ClientAccessService
	// reports it, else Address. Address is the endpoint the connector
	// connects to (configured or discovered FQDN or IP address). Before
	// address existed, name held the address.
	Name      string `json:"name"`
	Address   string `json:"address"`
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
	// Lag is the change-to-enforcement lag of the sync's writes, where
	// the MDM gives the time of the change (docs/operations.md).
	Lag *LagStats `json:"lag,omitempty"`
	// Fleet is the whole fleet after the sync, when the daemon counted it.
	Fleet *FleetCounts `json:"fleet,omitempty"`
}

// LagStats summarises change-to-enforcement lags, in seconds: for each
// list entry a sync wrote because of the device's MDM compliance, the
// time from the MDM record's last check-in (Graph lastSyncDateTime, when
// the compliance change reached the MDM) to the audit log's write time.
type LagStats struct {
	Devices int     `json:"devices"`
	P50     float64 `json:"p50Seconds"`
	P95     float64 `json:"p95Seconds"`
	Max     float64 `json:"maxSeconds"`
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
	Mailbox     string `json:"mailbox"`
	User        string `json:"user"`
	DeviceID    string `json:"deviceId"`
	DeviceType  string `json:"deviceType"`
	DeviceModel string `json:"deviceModel"`
	Decision    string `json:"decision"`
	// DecisionText is the decision for people: "Default (Quarantine)"
	// says what Default leads to now (Status.DefaultMeans).
	DecisionText string `json:"decisionText"`
	Reason       string `json:"reason"`
	// ExchangeStateBefore is DeviceAccessState as the sync read it,
	// before its own write. ExchangeState is the same value under its old
	// name, kept for clients written before the rename; it will go.
	ExchangeStateBefore string `json:"exchangeStateBefore"`
	ExchangeState       string `json:"exchangeState"`
	// ExchangeAfter is what the mailbox's own lists give the device after
	// the sync (Allowed, Blocked), empty when rules or the org default decide.
	ExchangeAfter string `json:"exchangeAfter,omitempty"`
	Compliance    string `json:"compliance"` // MDM complianceState, "" when not enrolled
	// MDMLastSync is the MDM record's last check-in (lastSyncDateTime).
	MDMLastSync time.Time `json:"mdmLastSync,omitzero"`
}

// DeviceStory is everything the connector knows about one partnership:
// GET /api/v1/device?q=….
type DeviceStory struct {
	DeviceRow
	UPN string `json:"upn,omitempty"`
	// LastWrittenTo is where the connector's last write in the audit log
	// put the device id on the mailbox: PlaceAllowed, PlaceBlocked,
	// PlaceNeither, or "" when the log holds no write for it.
	LastWrittenTo string `json:"lastWrittenTo"`
	// Writes are the audit log's last entries for the device, newest first.
	Writes []Change `json:"writes"`
	// Notices are the mails sent to the user about the device.
	Notices []Notice `json:"notices"`
}

// Notice is a mail the connector sent about a device.
type Notice struct {
	State string    `json:"state"` // blocked or quarantined
	Sent  time.Time `json:"sent"`
}

// Change is one device change the connector made on a mailbox: the audit
// log's entries of one write for one device (removing it from one list
// and adding it to the other is one change).
type Change struct {
	Time     time.Time `json:"time"`
	SyncID   string    `json:"syncId"`
	Mailbox  string    `json:"mailbox"`
	DeviceID string    `json:"deviceId"`
	// From and To are where the device id was and is: "allowed",
	// "blocked" or "neither" (left to Exchange's rules and default).
	From   string `json:"from"`
	To     string `json:"to"`
	Reason string `json:"reason"`
	// Summary reads "blocked, was allowed".
	Summary string `json:"summary"`
}

// Places of a device id on a mailbox (Change.From, Change.To).
const (
	PlaceAllowed = "allowed"
	PlaceBlocked = "blocked"
	PlaceNeither = "neither"
)

package pipeline

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/mdm"
)

// SyncRequest asks the Engine for one sync.
type SyncRequest struct {
	// Kind is SyncFull or SyncQuick (empty means quick). A quick sync runs
	// as a full one when there is no baseline to compare with (see
	// Engine.Sync).
	Kind SyncKind
	// DryRun reads, decides, plans and checks the guards, and writes
	// nothing: no Exchange change, no state, no audit, no notice, no held
	// plan. The Report carries the whole change set.
	DryRun bool
	// ApproveID applies the held plan with this id (sync --approve) instead
	// of a sync of Kind.
	ApproveID string
	// ID is the sync id; empty means NewSyncID(now). The scheduler passes
	// its own so that its logs and ours agree.
	ID string
	// Trigger says what started the sync (e.g. "startup", "manual",
	// "cli"); it is kept in the result and the history, so a later
	// process can still say it.
	Trigger string
}

// Skip reasons: why a device partnership was not acted on. They are
// bounded, like Reason.
const (
	// SkipInvalidDeviceID: the DeviceId fails exchange.ValidDeviceID; the
	// phone chose it, and it never reaches a cmdlet.
	SkipInvalidDeviceID = string(ReasonInvalidDeviceID)
	// SkipUndecodable: Exchange sent an object that does not decode.
	SkipUndecodable = "Undecodable"
	// SkipBadDN: the device's DistinguishedName names no mailbox.
	SkipBadDN = "BadDistinguishedName"
	// SkipMailboxNotFound: the device's mailbox was not returned by
	// Get-CASMailbox, even when asked for by name: writing without its
	// current lists would be writing blind.
	SkipMailboxNotFound = "MailboxNotFound"
	// SkipMailboxUnreadable: the mailbox's devices or lists could not be
	// read in a quick sync; it is read again next sync.
	SkipMailboxUnreadable = "MailboxUnreadable"
)

// maxSamples bounds the per-item samples a Report keeps.
const maxSamples = 100

// SkippedDevice is one device partnership that was not acted on.
// Identity and DeviceID are as Exchange reported them, Go-quoted and
// truncated: they may be hostile.
type SkippedDevice struct {
	Reason   string `json:"reason"`
	Identity string `json:"identity"`
	DeviceID string `json:"device_id,omitempty"`
	Error    string `json:"error,omitempty"`
}

// MailboxFailure is one mailbox whose write failed after retries; it is
// written again next sync.
type MailboxFailure struct {
	Mailbox  string `json:"mailbox"`  // primary SMTP address
	Identity string `json:"identity"` // as written (Guid)
	Attempts int    `json:"attempts"`
	Error    string `json:"error"`
}

// PlannedMailbox is one mailbox's write with the names an administrator
// recognises.
type PlannedMailbox struct {
	MailboxPlan
	Mailbox string `json:"mailbox"` // primary SMTP address
	Name    string `json:"name,omitempty"`
}

// RefusedEntry is one list change of a held plan that approval did not
// apply because Exchange or the state changed since the plan was made.
type RefusedEntry struct {
	Mailbox  string `json:"mailbox"`
	DeviceID string `json:"device_id"`
	List     List   `json:"list"`
	Op       Op     `json:"op"`
	Why      string `json:"why"`
}

// OrgChange is one organization-level change (ActiveSync settings or a
// device access rule) that a full sync made or, on a dry run or a held
// plan, would make.
type OrgChange struct {
	Setting string `json:"setting"` // DefaultAccessLevel, AdminMailRecipients, UserMailInsert, Rule
	Target  string `json:"target,omitempty"`
	From    string `json:"from"`
	To      string `json:"to"`
	Applied bool   `json:"applied"`
	Error   string `json:"error,omitempty"`
}

// Report is everything one Sync did or, on a dry run, would do. Its
// embedded SyncResult is what status pages keep; the rest is for the CLI
// (`plan`, `sync --json`) and logs.
type Report struct {
	SyncResult
	DryRun bool `json:"dry_run,omitempty"`
	// Degraded: the MDM could not be read, or its data failed a sanity
	// guard; nothing was written and the connector's status is degraded.
	Degraded bool `json:"degraded,omitempty"`
	// Escalated says why a quick sync was run as a full one.
	Escalated string `json:"escalated,omitempty"`
	// Counts summarises the plans; Plans are the mailboxes with a write
	// (on a dry run: that would be written), sorted by mailbox.
	Counts PlanCounts       `json:"plan_counts"`
	Plans  []PlannedMailbox `json:"plans,omitempty"`
	// Org lists organization-level changes.
	Org []OrgChange `json:"org,omitempty"`
	// OrgConflicts are platform exceptions whose rule an administrator
	// made differently; the administrator's rule is left alone.
	OrgConflicts []string `json:"org_conflicts,omitempty"`
	// ShadowedExceptions are platform exceptions that Exchange's own rule
	// order (user agent, OS, model, type; first match) overrides for some
	// devices; UntargetedReached are the policy's device access rules that
	// decide for devices of users the policy does not target (full syncs
	// only; platform.go).
	ShadowedExceptions []ShadowedException `json:"shadowed_exceptions,omitempty"`
	UntargetedReached  []UntargetedReach   `json:"untargeted_reached,omitempty"`
	// Skipped counts partnerships not acted on, by skip reason;
	// SkippedSamples shows up to 100 of them.
	Skipped        map[string]int  `json:"skipped,omitempty"`
	SkippedSamples []SkippedDevice `json:"skipped_samples,omitempty"`
	// Failed lists the mailboxes whose write failed (up to 100).
	Failed []MailboxFailure `json:"failed,omitempty"`
	// Refused lists held-plan entries approval did not apply.
	Refused []RefusedEntry `json:"refused,omitempty"`
	// Collisions are EAS ids the MDM reports for several users.
	Collisions []Collision `json:"collisions,omitempty"`
	// Held describes the plan the blast-radius guard kept (without its
	// plans; load them with LoadHeldPlan).
	Held *HeldPlan `json:"held,omitempty"`
	// Notices is the number of user notices queued.
	Notices int `json:"notices"`
	// MDMRecords is the snapshot's record count; ReadMailboxes the
	// mailboxes read from Exchange (all of them in a full sync, the
	// affected ones in a quick sync).
	MDMRecords    int `json:"mdm_records"`
	ReadMailboxes int `json:"read_mailboxes"`
	// Recovered counts the entries of writes an earlier run left pending
	// (killed before Exchange confirmed them), reconciled against Exchange
	// before this sync planned.
	Recovered int `json:"recovered,omitempty"`
}

func (r *Report) skip(reason, identity, deviceID string, err error) {
	if r.Skipped == nil {
		r.Skipped = map[string]int{}
	}
	r.Skipped[reason]++
	if len(r.SkippedSamples) < maxSamples {
		s := SkippedDevice{Reason: reason, Identity: clip(identity), DeviceID: clip(deviceID)}
		if err != nil {
			s.Error = err.Error()
		}
		r.SkippedSamples = append(r.SkippedSamples, s)
	}
}

// SkippedTotal is the number of partnerships not acted on.
func (r *Report) SkippedTotal() int {
	n := 0
	for _, v := range r.Skipped {
		n += v
	}
	return n
}

// clip renders a possibly hostile string for a report: Go-quoted (control
// characters and invalid UTF-8 escaped) and cut to 96 bytes.
func clip(s string) string {
	const limit = 96
	if len(s) <= limit {
		return strings.Trim(fmt.Sprintf("%q", s), `"`)
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strings.Trim(fmt.Sprintf("%q", s[:cut]), `"`) + fmt.Sprintf("…(%d bytes)", len(s))
}

// DeviceRow is one partnership with the connector's decision, as the last
// sync saw it.
type DeviceRow struct {
	Mailbox     string   `json:"mailbox"` // primary SMTP address
	User        string   `json:"user"`    // display name
	UPN         string   `json:"upn,omitempty"`
	DeviceID    string   `json:"device_id"`
	DeviceType  string   `json:"device_type"`
	DeviceModel string   `json:"device_model"`
	Decision    Decision `json:"decision"`
	Reason      Reason   `json:"reason"`
	// ExchangeState is DeviceAccessState as read, before this sync wrote:
	// the state Exchange stored at the phone's last request (or that a
	// Set-CASMailbox wrote since: Allowed or Blocked for a listed id,
	// Unknown for an id taken out of both lists), not a live evaluation.
	ExchangeState exchange.AccessState `json:"exchange_state"`
	// ExchangeAfter is the access the mailbox's own lists give the device
	// after this sync (Allowed or Blocked; the lists as read when the write
	// failed or none was needed); empty when neither list names the device,
	// so that device access rules or the org default decide. Exchange
	// applies it at the device's next request; Get-MobileDevice shows it at
	// once, as Set-CASMailbox rewrites the stored state of the ids it lists.
	ExchangeAfter exchange.AccessState `json:"exchange_after,omitempty"`
	// Compliance is the MDM record's state, "" when not enrolled.
	Compliance mdm.Compliance `json:"compliance,omitempty"`
	// MDMLastSync is the MDM record's last check-in (Graph
	// lastSyncDateTime), zero when not enrolled or unknown.
	MDMLastSync time.Time `json:"mdm_last_sync,omitzero"`
}

// DeviceQuery selects rows for Engine.Devices. Empty fields match all.
type DeviceQuery struct {
	Decision Decision
	Reason   Reason
	// User matches the mailbox's primary SMTP address or the user's UPN,
	// exactly and case-insensitively.
	User string
}

// ProgressEvent reports a sync's progress to a CLI progress bar. Total is
// 0 while unknown.
type ProgressEvent struct {
	SyncID string
	Kind   SyncKind
	Stage  Stage
	Done   int
	Total  int
}

// Package mdm reads the MDM's verdict on devices: a complete snapshot of
// device records (Microsoft Graph managedDevices, or a JSON/CSV export from
// any MDM) and the members of the policy's included and excluded groups.
//
// A Source returns either a complete snapshot or an error: a partial
// snapshot is never returned, because the sync engine must not act on it.
package mdm

import (
	"context"
	"time"
)

// Compliance is the MDM's compliance state (Graph complianceState).
type Compliance string

// Compliance states, as Graph names them.
const (
	ComplianceUnknown       Compliance = "unknown"
	ComplianceCompliant     Compliance = "compliant"
	ComplianceNoncompliant  Compliance = "noncompliant"
	ComplianceConflict      Compliance = "conflict"
	ComplianceError         Compliance = "error"
	ComplianceInGracePeriod Compliance = "inGracePeriod"
	ComplianceConfigManager Compliance = "configManager"
)

// Record is one managed device as the MDM knows it.
type Record struct {
	ID          string // MDM device id (Graph id); dedupe key
	EASDeviceID string // join key to Exchange DeviceId (case-insensitive)
	// UserID is the owner's Entra object id (Graph managedDevice userId),
	// "" when the MDM gives none (a userless device, an export without the
	// column). It is the key that ties a record to group members, whose
	// UPN and mail Graph may withhold (see Member).
	UserID            string
	UserPrincipalName string     // owner's UPN
	Email             string     // owner's e-mail address(es), as the MDM reports it
	Compliance        Compliance //
	EnrolledAt        time.Time  // enrolment time (zero if unknown)
	LastSyncAt        time.Time  // last successful check-in with the MDM
	Platform          string     // operating system: iOS, Android, Windows, …
	OSVersion         string
	Model             string
	EASActivated      bool   // Graph easActivated: the MDM saw the device activate EAS
	ManagementAgent   string // Graph managementAgent: mdm, easMdm, eas, …
	// Conflict is set when another user's record (by UPN, or e-mail when
	// there is no UPN, case-insensitively) carries the same EASDeviceID
	// (case-insensitively): a cloned or spoofed id, or a phone that changed
	// hands, which the sync must not take on trust and should report.
	Conflict bool
}

// Member is one user in a group, as the MDM's directory reports it.
//
// ID is the user's Entra object id, the key the sync joins on. Graph
// always sends it; UserPrincipalName and Mail are null when the
// application may list group members (GroupMember.Read.All) but not read
// users (User.Read.All): Graph then returns each user member with only its
// id and @odata.type ("Limited information returned for inaccessible
// member objects", microsoftgraph/microsoft-graph-docs-contrib
// concepts/permissions-overview.md). A file export may give a member
// without an id, by UPN or mail alone.
type Member struct {
	ID                string
	UserPrincipalName string
	Mail              string
}

// Named reports whether the member carries a UPN or a mail address, that
// is, whether the directory let us read its properties.
func (m *Member) Named() bool { return m.UserPrincipalName != "" || m.Mail != "" }

// Snapshot is a complete read of the MDM.
type Snapshot struct {
	Records []Record
	// Groups maps a configured group id to its transitive user members.
	Groups  map[string][]Member
	TakenAt time.Time
	// Pages and Requests describe the read, for metrics and logs.
	Pages    int
	Requests int
	// NoEASID counts records the MDM holds without an easDeviceId: they are
	// left out of Records (nothing can join on them) but still count
	// towards the snapshot's size, see Total.
	NoEASID int
	// Conflicts counts the EAS device ids that appear on records of more
	// than one user; every such record has Conflict set.
	Conflicts int
	// Unnamed counts the group members (over all groups read) that came
	// without a UPN and without mail: with Graph, a sign that the
	// application lacks User.Read.All; such members can be matched to a
	// mailbox only through a device record carrying their id.
	Unnamed int
}

// Total is the number of device records the MDM returned, including those
// without an EAS device id: the figure to compare with the last good
// snapshot when judging whether a read is complete.
func (s *Snapshot) Total() int { return len(s.Records) + s.NoEASID }

// Source reads a complete snapshot: every device record and the members of
// the given groups. It returns an error, never a partial snapshot.
type Source interface {
	Snapshot(ctx context.Context, groups []string) (*Snapshot, error)
}

package pipeline

import (
	"slices"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/runspace"
)

// List names one of a mailbox's two device lists.
type List string

// The lists.
const (
	ListAllowed List = "allowed" // ActiveSyncAllowedDeviceIDs
	ListBlocked List = "blocked" // ActiveSyncBlockedDeviceIDs
)

// Op is what a change does to a list entry.
type Op string

// Ops.
const (
	OpAdd    Op = "add"
	OpRemove Op = "remove"
)

// Owned is the list entries of one mailbox that the connector wrote, in the
// case it wrote them. The zero value owns nothing.
type Owned struct {
	Allowed []string `json:"allowed,omitempty"`
	Blocked []string `json:"blocked,omitempty"`
}

// IsZero reports whether nothing is owned.
func (o Owned) IsZero() bool { return len(o.Allowed) == 0 && len(o.Blocked) == 0 }

// DeviceDecision is Decide's verdict on one partnership of the mailbox.
type DeviceDecision struct {
	DeviceID string // as Exchange reports it
	Decision Decision
	Reason   Reason
}

// MailboxInput is everything PlanMailbox needs for one mailbox.
type MailboxInput struct {
	// Identity is the mailbox as Set-CASMailbox -Identity takes it.
	Identity string
	// Allowed and Blocked are the current lists as Get-CASMailbox reports
	// them (ActiveSyncAllowedDeviceIDs, ActiveSyncBlockedDeviceIDs).
	Allowed, Blocked []string
	// Owned is what State says we wrote to this mailbox.
	Owned Owned
	// Devices are the decisions for the mailbox's partnerships. Several
	// partnerships whose ids differ only in case are one entry; if their
	// decisions differ, NoChange wins, then Block, Default, Allow.
	Devices []DeviceDecision
	// Complete says Devices lists every partnership of the mailbox, so our
	// entries for any other id are orphans (the partnership was removed)
	// and are removed. Set it only in a full sync with an enabled policy: a
	// quick sync sees only some devices, and a disabled policy writes
	// nothing.
	Complete bool
	// Adopt treats every valid entry present and not owned as ours. Set it
	// from State.MayAdopt(adopt_existing): only before the first full sync.
	Adopt bool
}

// Change is one list entry written by a plan, for the audit log.
type Change struct {
	DeviceID string   `json:"device_id"`
	List     List     `json:"list"`
	Op       Op       `json:"op"`
	Decision Decision `json:"decision"`
	Reason   Reason   `json:"reason"`
}

// Conflict is an administrator's entry (present, not ours) that contradicts
// a decision: Allow while the admin blocked the device, or Block while the
// admin allowed it. The administrator wins: the plan adds nothing against
// the entry and removes our own contradicting entries; the conflict is
// reported with reason AdminOverride. A Default decision never conflicts:
// it leaves the device to Exchange, and the admin's lists are part of that.
type Conflict struct {
	DeviceID     string   `json:"device_id"`
	Decision     Decision `json:"decision"` // what the policy wanted
	Reason       Reason   `json:"reason"`   // why it wanted it
	AdminAllowed bool     `json:"admin_allowed,omitempty"`
	AdminBlocked bool     `json:"admin_blocked,omitempty"`
}

// MailboxPlan is the write for one mailbox: one Set-CASMailbox with
// -ActiveSyncAllowedDeviceIDs @{Add=…;Remove=…} and the same for the
// blocked list. Every id in an edit passes exchange.ValidDeviceID; ids are
// added in the case Exchange reports the device and removed in the case the
// list holds them.
type MailboxPlan struct {
	Identity  string            `json:"identity"`
	Allowed   runspace.ListEdit `json:"allowed"`
	Blocked   runspace.ListEdit `json:"blocked"`
	Changes   []Change          `json:"changes,omitempty"`
	Conflicts []Conflict        `json:"conflicts,omitempty"`
	// Invalid lists device ids the policy wanted in a list (rows 2–3 come
	// before the DeviceId check) that ValidDeviceID refuses: never written.
	Invalid []string `json:"invalid,omitempty"`
	// NewOwned is the mailbox's ownership once the write has succeeded.
	NewOwned Owned `json:"new_owned"`
}

// Empty reports whether the plan writes nothing. Conflicts and Invalid are
// reports, not writes.
func (p *MailboxPlan) Empty() bool {
	return len(p.Allowed.Add) == 0 && len(p.Allowed.Remove) == 0 &&
		len(p.Blocked.Add) == 0 && len(p.Blocked.Remove) == 0
}

// OwnedIfUncertain is the ownership to record when the write failed or its
// outcome is unknown (a timeout after Exchange may have applied it): what
// we meant to add and what we meant to remove are both claimed. The next
// sync reads the lists again and drops claims on entries that are absent,
// so claiming too much costs nothing, while claiming too little would turn
// our own entries into the administrator's for ever.
func (p *MailboxPlan) OwnedIfUncertain() Owned {
	o := Owned{
		Allowed: mergeIDs(p.NewOwned.Allowed, p.Allowed.Remove),
		Blocked: mergeIDs(p.NewOwned.Blocked, p.Blocked.Remove),
	}
	return o
}

func mergeIDs(a, b []string) []string {
	if len(b) == 0 {
		return slices.Clone(a)
	}
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// foldID is the case-insensitive key of a device id. EAS ids are ASCII, and
// folding only ASCII keeps a non-ASCII id (which never validates) from
// colliding with a valid one (the Kelvin sign lower-cases to "k").
func foldID(id string) string {
	for i := 0; i < len(id); i++ {
		if c := id[i]; 'A' <= c && c <= 'Z' {
			b := []byte(id)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return id
}

// slot is everything known about one folded device id on the mailbox.
type slot struct {
	key            string
	inA, inB       []string // entries present, as listed
	ownedA, ownedB bool     // State says we wrote the key to the list
	device         string   // id as Exchange reports the device
	dec            Decision
	reason         Reason
	decided        bool
}

// decisionRank orders merged decisions: the more conservative wins, and an
// unknown decision counts as NoChange.
func decisionRank(d Decision) int {
	switch d {
	case Allow:
		return 0
	case Default:
		return 1
	case Block:
		return 2
	default:
		return 3
	}
}

// PlanMailbox plans the write that brings one mailbox's lists in line with
// its devices' decisions (DESIGN.md §5):
//
//   - Allow: the id in the allowed list, not in the blocked list; Block: the
//     reverse; Default: in neither; NoChange: untouched.
//   - Only entries we own (or adopt) are removed. An entry present and not
//     ours is the administrator's: never removed, and when it contradicts
//     the decision the plan yields and reports a Conflict.
//   - An id with no decision is left alone, unless Complete says its
//     partnership is gone: then our entries for it are removed.
//   - Only ids that pass exchange.ValidDeviceID are written; an invalid id
//     present in a list is the administrator's.
//
// Applying the plan and planning again with NewOwned gives an empty plan.
// PlanMailbox is pure and safe for concurrent use; its output is sorted by
// device id.
func PlanMailbox(in MailboxInput) MailboxPlan {
	slots := make(map[string]*slot, len(in.Devices)+len(in.Allowed)+len(in.Blocked))
	get := func(id string) *slot {
		k := foldID(id)
		s := slots[k]
		if s == nil {
			s = &slot{key: k}
			slots[k] = s
		}
		return s
	}
	for _, id := range in.Allowed {
		s := get(id)
		if !slices.Contains(s.inA, id) {
			s.inA = append(s.inA, id)
		}
	}
	for _, id := range in.Blocked {
		s := get(id)
		if !slices.Contains(s.inB, id) {
			s.inB = append(s.inB, id)
		}
	}
	for _, id := range in.Owned.Allowed {
		if s := slots[foldID(id)]; s != nil {
			s.ownedA = true
		}
	}
	for _, id := range in.Owned.Blocked {
		if s := slots[foldID(id)]; s != nil {
			s.ownedB = true
		}
	}
	for _, d := range in.Devices {
		s := get(d.DeviceID)
		if s.device == "" || (!exchange.ValidDeviceID(s.device) && exchange.ValidDeviceID(d.DeviceID)) {
			s.device = d.DeviceID
		}
		if !s.decided || decisionRank(d.Decision) > decisionRank(s.dec) {
			s.dec, s.reason, s.decided = d.Decision, d.Reason, true
		}
	}
	keys := make([]string, 0, len(slots))
	for k := range slots {
		keys = append(keys, k)
	}
	slices.Sort(keys)

	plan := MailboxPlan{Identity: in.Identity}
	for _, k := range keys {
		plan.planSlot(slots[k], in.Complete, in.Adopt)
	}
	return plan
}

// split divides the entries of one list into ours and the administrator's.
// An entry is ours when it is a valid id and we own its key (or adopt).
func split(entries []string, owned, adopt bool) (ours, admin []string) {
	for _, e := range entries {
		if (owned || adopt) && exchange.ValidDeviceID(e) {
			ours = append(ours, e)
		} else {
			admin = append(admin, e)
		}
	}
	return ours, admin
}

func (plan *MailboxPlan) planSlot(s *slot, complete, adopt bool) {
	oursA, adminA := split(s.inA, s.ownedA, adopt)
	oursB, adminB := split(s.inB, s.ownedB, adopt)
	dec, reason := s.dec, s.reason
	if !s.decided {
		if !complete || (len(oursA) == 0 && len(oursB) == 0) {
			dec = NoChange
		} else {
			dec, reason = Default, ReasonPartnershipGone
		}
	}
	if dec != Allow && dec != Block && dec != Default {
		// NoChange (or an unknown decision, treated the same): keep what we
		// hold, write nothing.
		plan.NewOwned.Allowed = append(plan.NewOwned.Allowed, oursA...)
		plan.NewOwned.Blocked = append(plan.NewOwned.Blocked, oursB...)
		return
	}
	wantA, wantB := dec == Allow, dec == Block
	removeReason := reason
	switch {
	case dec == Allow && len(adminB) > 0, dec == Block && len(adminA) > 0:
		plan.Conflicts = append(plan.Conflicts, Conflict{
			DeviceID: firstNonEmpty(s.device, first(s.inA), first(s.inB)), Decision: dec, Reason: reason,
			AdminAllowed: len(adminA) > 0, AdminBlocked: len(adminB) > 0,
		})
		// The administrator's entry wins: hold nothing against it.
		wantA, wantB = false, false
		removeReason = ReasonAdminOverride
	}
	plan.list(&plan.Allowed, &plan.NewOwned.Allowed, ListAllowed, s, wantA, oursA, adminA, dec, reason, removeReason)
	plan.list(&plan.Blocked, &plan.NewOwned.Blocked, ListBlocked, s, wantB, oursB, adminB, dec, reason, removeReason)
}

func (plan *MailboxPlan) list(edit *runspace.ListEdit, owned *[]string, l List, s *slot, want bool, ours, admin []string, dec Decision, reason, removeReason Reason) {
	if want {
		*owned = append(*owned, ours...)
		if len(ours)+len(admin) > 0 {
			return // already there (ours, or the administrator agrees)
		}
		if !exchange.ValidDeviceID(s.device) {
			if !slices.Contains(plan.Invalid, s.device) {
				plan.Invalid = append(plan.Invalid, s.device)
			}
			return
		}
		edit.Add = append(edit.Add, s.device)
		*owned = append(*owned, s.device)
		plan.Changes = append(plan.Changes, Change{DeviceID: s.device, List: l, Op: OpAdd, Decision: dec, Reason: reason})
		return
	}
	for _, id := range ours {
		edit.Remove = append(edit.Remove, id)
		plan.Changes = append(plan.Changes, Change{DeviceID: id, List: l, Op: OpRemove, Decision: dec, Reason: removeReason})
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// PlanCounts summarises plans for guards, logs and held plans.
type PlanCounts struct {
	Mailboxes    int `json:"mailboxes"`     // plans considered
	Writes       int `json:"writes"`        // plans that write (Set-CASMailbox calls)
	AllowAdds    int `json:"allow_adds"`    // entries added to allowed lists
	AllowRemoves int `json:"allow_removes"` // entries removed from allowed lists
	BlockAdds    int `json:"block_adds"`    // entries added to blocked lists
	BlockRemoves int `json:"block_removes"` // entries removed from blocked lists
	// Revocations counts devices that lose access: added to a blocked list
	// or removed from an allowed list (in an org whose default is
	// Quarantine or Block, losing an allow entry keeps the phone out as
	// surely as a block).
	Revocations int `json:"revocations"`
	Conflicts   int `json:"conflicts"`
	Invalid     int `json:"invalid"`
}

// CountPlans adds up plans.
func CountPlans(plans []MailboxPlan) PlanCounts {
	var c PlanCounts
	for i := range plans {
		p := &plans[i]
		c.Mailboxes++
		if !p.Empty() {
			c.Writes++
		}
		c.AllowAdds += len(p.Allowed.Add)
		c.AllowRemoves += len(p.Allowed.Remove)
		c.BlockAdds += len(p.Blocked.Add)
		c.BlockRemoves += len(p.Blocked.Remove)
		c.Conflicts += len(p.Conflicts)
		c.Invalid += len(p.Invalid)
		c.Revocations += revocations(p)
	}
	return c
}

// revocations counts distinct devices of p added to blocked or removed from
// allowed.
func revocations(p *MailboxPlan) int {
	n := len(p.Blocked.Add)
	for _, id := range p.Allowed.Remove {
		k := foldID(id)
		if !slices.ContainsFunc(p.Blocked.Add, func(b string) bool { return foldID(b) == k }) {
			n++
		}
	}
	return n
}

package pipeline

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/easconnector/easconnector/mdm"
)

// Scope answers whether a mailbox's user is in the policy's included and
// excluded groups. It is built once per sync from the MDM snapshot and is
// safe for concurrent use.
//
// Exchange knows a mailbox's user by primary SMTP address (and UPN when a
// record supplied it); the directory knows a group member by Entra object
// id, and tells its UPN and mail only to an application that may read
// users (see mdm.Member). So the scope joins in two steps: the user's
// addresses → the user's object id, from the members' own UPN and mail
// when readable and from the MDM records (managedDevice userId beside its
// userPrincipalName and emailAddress, which Intune always gives); then
// the object id ∈ the groups' member ids. A member that names itself by
// UPN or mail also matches on those directly (file exports may give no
// id).
//
// A user whom neither source can name (no enrolled device of theirs, and
// member properties unreadable) may still be one of the groups' unnamed
// members. Then the scope says Unknown rather than guessing, and Decide
// takes the conservative path (see ReasonScopeUnknown).
type Scope struct {
	included, excluded *groupIndex
	// byAddr maps a lower-cased UPN or address to the object id it was
	// seen with; multi holds the rare addresses seen with several ids (all
	// of them, the first included).
	byAddr map[string]string
	multi  map[string][]string
	// Unnamed counts the members of the policy's groups that carry no UPN
	// or mail and whose id is on no MDM record: they match no mailbox.
	Unnamed int
}

// groupIndex is the union of the members of one kind of group (included
// or excluded).
type groupIndex struct {
	ids   map[string]struct{} // lower-cased object ids
	addrs map[string]struct{} // lower-cased UPNs and mail addresses of named members
	// opaque: some member can be matched to no mailbox (no UPN or mail,
	// and its id is on no record), so a user we cannot name may be it.
	opaque bool
}

func (g *groupIndex) has(set map[string]struct{}, k string) bool {
	_, ok := set[k]
	return ok
}

// ErrScopeUnresolvable is returned (wrapped) by NewScope when the included
// groups have members but not one of them can be matched to a mailbox:
// then the policy would silently target nobody.
var ErrScopeUnresolvable = errors.New("no member of the included groups can be matched to a mailbox")

// NewScope indexes the members of the policy's groups by object id and by
// lower-cased UPN and mail, and the users' addresses by object id from the
// members and the snapshot's records. Every configured group must be in
// the snapshot, even with no members: a snapshot without the excluded
// group's members would target the very users the policy exempts, so that
// is an error, not an empty group. So is an included membership none of
// whose members can be matched (ErrScopeUnresolvable): the MDM gave ids
// that no record carries and no UPN or mail, which is an app that cannot
// read users and a tenant whose records lack userId; acting on it would
// turn every device NotTargeted.
func NewScope(p *Policy, snap *mdm.Snapshot) (*Scope, error) {
	if snap == nil {
		return nil, fmt.Errorf("scope: no mdm snapshot")
	}
	s := &Scope{byAddr: make(map[string]string, len(snap.Records)), multi: map[string][]string{}}
	// Pass 1: every address → object id pairing the snapshot offers.
	for i := range snap.Records {
		r := &snap.Records[i]
		id := strings.ToLower(strings.TrimSpace(r.UserID))
		if id == "" {
			continue
		}
		s.learn(r.UserPrincipalName, id)
		for addr := range addresses(r.Email) {
			s.learn(addr, id)
		}
	}
	kinds := []struct {
		kind   string
		groups []string
		dst    **groupIndex
	}{{"included", p.IncludedGroups, &s.included}, {"excluded", p.ExcludedGroups, &s.excluded}}
	for _, k := range kinds {
		for _, gid := range k.groups {
			ms, ok := snap.Groups[gid]
			if !ok {
				return nil, fmt.Errorf("scope: mdm snapshot has no members for %s group %s", k.kind, gid)
			}
			for _, m := range ms {
				if id := strings.ToLower(strings.TrimSpace(m.ID)); id != "" {
					s.learn(m.UserPrincipalName, id)
					s.learn(m.Mail, id)
				}
			}
		}
	}
	nameable := make(map[string]struct{}, len(s.byAddr))
	for _, id := range s.byAddr {
		nameable[id] = struct{}{}
	}
	for _, ids := range s.multi {
		for _, id := range ids {
			nameable[id] = struct{}{}
		}
	}
	// Pass 2: the groups, and whether each member can be matched.
	for _, k := range kinds {
		g := &groupIndex{ids: map[string]struct{}{}, addrs: map[string]struct{}{}}
		members, matchable := 0, 0
		for _, gid := range k.groups {
			for _, m := range snap.Groups[gid] {
				members++
				named := false
				for _, a := range []string{m.UserPrincipalName, m.Mail} {
					if a = strings.ToLower(strings.TrimSpace(a)); a != "" {
						g.addrs[a] = struct{}{}
						named = true
					}
				}
				id := strings.ToLower(strings.TrimSpace(m.ID))
				if id != "" {
					g.ids[id] = struct{}{}
				}
				if _, ok := nameable[id]; named || ok {
					matchable++
				} else {
					g.opaque = true
					s.Unnamed++
				}
			}
		}
		if k.kind == "included" && members > 0 && matchable == 0 {
			return nil, fmt.Errorf("scope: %w: the %d members came with neither userPrincipalName nor mail "+
				"(grant the application %s) and no managed device record carries their object id (managedDevice userId)",
				ErrScopeUnresolvable, members, mdm.PermUsers)
		}
		*k.dst = g
	}
	return s, nil
}

// learn records that addr (a UPN or address, any case) belongs to object
// id (lower-cased).
func (s *Scope) learn(addr, id string) {
	addr = strings.ToLower(strings.TrimSpace(addr))
	if addr == "" {
		return
	}
	switch first, ok := s.byAddr[addr]; {
	case !ok:
		s.byAddr[addr] = id
	case first == id:
	default:
		if ids := s.multi[addr]; ids == nil {
			s.multi[addr] = []string{first, id}
		} else if !slices.Contains(ids, id) {
			s.multi[addr] = append(ids, id)
		}
	}
}

// addresses yields the addresses of an MDM e-mail field, which may list
// several (";", "," or space separated, "SMTP:" prefixes dropped).
func addresses(field string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for a := range strings.FieldsFuncSeq(field, func(r rune) bool { return r == ';' || r == ',' || r == ' ' }) {
			if a = strings.TrimPrefix(strings.TrimPrefix(a, "SMTP:"), "smtp:"); a != "" && !yield(a) {
				return
			}
		}
	}
}

// ids returns the object ids u is known by: u.ID, else those its primary
// SMTP address and UPN were seen with.
func (s *Scope) ids(u User) []string {
	if u.ID != "" {
		return []string{strings.ToLower(u.ID)}
	}
	var out []string
	for _, k := range []string{u.PrimarySmtp, u.UPN} {
		if k == "" {
			continue
		}
		k = strings.ToLower(k)
		id, ok := s.byAddr[k]
		if !ok {
			continue
		}
		ids := s.multi[k]
		if ids == nil {
			ids = []string{id}
		}
		for _, id := range ids {
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	return out
}

// UserID returns u's Entra object id when the snapshot names exactly one
// for u's addresses, else "".
func (s *Scope) UserID(u User) string {
	if ids := s.ids(u); len(ids) == 1 {
		return ids[0]
	}
	return ""
}

// tri is a membership answer: no, yes, or cannot tell.
type tri uint8

const (
	no tri = iota
	yes
	unknown
)

// in answers whether u, known by ids, belongs to g.
func (s *Scope) in(g *groupIndex, u User, ids []string) tri {
	for _, k := range []string{u.PrimarySmtp, u.UPN} {
		if k != "" && g.has(g.addrs, strings.ToLower(k)) {
			return yes
		}
	}
	switch {
	case len(ids) == 0 && g.opaque:
		return unknown // u may be one of the members nobody can name
	case len(ids) == 0:
		return no
	}
	var ans tri
	for i, id := range ids {
		a := no
		if g.has(g.ids, id) {
			a = yes
		}
		if i > 0 && a != ans {
			return unknown // u's addresses point to several users who disagree
		}
		ans = a
	}
	return ans
}

// Of returns u's membership: a member matches when its object id is u's
// (u.ID, or the id the snapshot ties to u's primary SMTP address or UPN),
// or when its UPN or mail equals u's primary SMTP address or UPN,
// case-insensitively. When that cannot be told (see Scope), Unknown is
// set; Excluded is set only when u is known to be excluded, and Included
// only when u is known to be included.
func (s *Scope) Of(u User) Membership {
	ids := s.ids(u)
	ex, inc := s.in(s.excluded, u, ids), s.in(s.included, u, ids)
	switch {
	case ex == yes:
		return Membership{Excluded: true, Included: inc == yes}
	case inc == no:
		return Membership{} // not targeted, whatever the exclusion
	case ex == no && inc == yes:
		return Membership{Included: true}
	default:
		return Membership{Included: inc == yes, Unknown: true}
	}
}

// Collision is one EAS device id that the MDM reports for more than one
// user: a red flag (a cloned or spoofed id) worth an administrator's look.
type Collision struct {
	EASDeviceID string   `json:"eas_device_id"`
	Users       []string `json:"users"` // lower-cased UPNs (or mail when no UPN)
}

// Index is the MDM snapshot's records by lower-cased EAS device id. It is
// read-only after Join and safe for concurrent use.
type Index struct {
	byEAS map[string][]*mdm.Record
	// Collisions lists EAS ids reported for several users, sorted by id.
	Collisions []Collision
	// Duplicates counts records dropped because another record had the same
	// MDM id (the older check-in is dropped).
	Duplicates int
	// NoEASID counts records without an EAS device id (devices that do not
	// use Exchange ActiveSync); they join nothing.
	NoEASID int
}

// Join indexes records by EAS device id, case-insensitively. Records with
// the same MDM id are deduplicated (Newer picks the survivor). Several
// records for one EAS id are kept, so that Lookup can choose the one of the
// mailbox's own user; ids reported for several users are listed in
// Collisions. Join keeps pointers into records, which must not change
// afterwards.
func Join(records []mdm.Record) *Index {
	ix := &Index{byEAS: make(map[string][]*mdm.Record, len(records))}
	byID := make(map[string]*mdm.Record, len(records))
	for i := range records {
		r := &records[i]
		if r.ID != "" {
			if prev, ok := byID[r.ID]; ok {
				ix.Duplicates++
				if !Newer(r, prev) {
					continue
				}
				ix.remove(prev)
			}
			byID[r.ID] = r
		}
		if strings.TrimSpace(r.EASDeviceID) == "" {
			ix.NoEASID++
			continue
		}
		k := strings.ToLower(r.EASDeviceID)
		ix.byEAS[k] = append(ix.byEAS[k], r)
	}
	for k, rs := range ix.byEAS {
		if len(rs) < 2 {
			continue
		}
		var users []string
		for _, r := range rs {
			u := strings.ToLower(r.UserPrincipalName)
			if u == "" {
				u = strings.ToLower(r.Email)
			}
			if !slices.Contains(users, u) {
				users = append(users, u)
			}
		}
		if len(users) > 1 {
			slices.Sort(users)
			ix.Collisions = append(ix.Collisions, Collision{EASDeviceID: k, Users: users})
		}
	}
	slices.SortFunc(ix.Collisions, func(a, b Collision) int { return strings.Compare(a.EASDeviceID, b.EASDeviceID) })
	return ix
}

func (ix *Index) remove(r *mdm.Record) {
	k := strings.ToLower(r.EASDeviceID)
	rs := ix.byEAS[k]
	if i := slices.Index(rs, r); i >= 0 {
		rs = slices.Delete(rs, i, i+1)
	}
	if len(rs) == 0 {
		delete(ix.byEAS, k)
	} else {
		ix.byEAS[k] = rs
	}
	if strings.TrimSpace(r.EASDeviceID) == "" {
		ix.NoEASID--
	}
}

// Len is the number of distinct EAS ids indexed.
func (ix *Index) Len() int { return len(ix.byEAS) }

// Lookup returns the record for the EAS device id on a mailbox of user u,
// and whether it is u's own (MatchUser). When several records carry the id,
// u's own records are preferred, then the order of Newer; otherwise the
// first of any user's records in that order is returned (a UserMismatch).
// It returns nil, false when the MDM does not know the id. The result does
// not depend on the order of the records Join was given.
func (ix *Index) Lookup(easID string, u User) (*mdm.Record, bool) {
	rs := ix.byEAS[strings.ToLower(easID)]
	var best *mdm.Record
	bestSame := false
	for _, r := range rs {
		same := MatchUser(r, u)
		switch {
		case best == nil,
			same && !bestSame,
			same == bestSame && Newer(r, best):
			best, bestSame = r, same
		}
	}
	return best, bestSame
}

// Newer reports whether record a takes precedence over b for the same
// device. The order is total, so a decision never depends on the order in
// which the MDM returned its records (Graph's order is not stable):
//  1. the more recent check-in (LastSyncAt) wins;
//  2. on a tie, the more restrictive compliance wins: not compliant
//     (noncompliant, conflict, error) over any other state (unknown,
//     configManager) over compliant (compliant, inGracePeriod), so that a
//     tie can never open mail access;
//  3. then the lower MDM record id (byte order), then the lower EAS id.
func Newer(a, b *mdm.Record) bool {
	if c := a.LastSyncAt.Compare(b.LastSyncAt); c != 0 {
		return c > 0
	}
	if ra, rb := restrictiveness(a.Compliance), restrictiveness(b.Compliance); ra != rb {
		return ra > rb
	}
	if a.ID != b.ID {
		return a.ID < b.ID
	}
	return a.EASDeviceID < b.EASDeviceID
}

// restrictiveness ranks compliance states for Newer's tie-break.
func restrictiveness(c mdm.Compliance) int {
	switch {
	case notCompliant(c):
		return 2
	case compliant(c):
		return 0
	default:
		return 1
	}
}

package pipeline

import (
	"fmt"
	"slices"
	"strings"

	"github.com/easconnector/easconnector/mdm"
)

// Scope answers whether a mailbox's user is in the policy's included and
// excluded groups. It is built once per sync from the MDM snapshot and is
// safe for concurrent use.
type Scope struct {
	included map[string]struct{}
	excluded map[string]struct{}
}

// NewScope indexes the members of the policy's groups by lower-cased UPN
// and mail. Every configured group must be in the snapshot, even with no
// members: a snapshot without the excluded group's members would target the
// very users the policy exempts, so that is an error, not an empty group.
func NewScope(p *Policy, snap *mdm.Snapshot) (*Scope, error) {
	if snap == nil {
		return nil, fmt.Errorf("scope: no mdm snapshot")
	}
	s := &Scope{included: map[string]struct{}{}, excluded: map[string]struct{}{}}
	add := func(set map[string]struct{}, kind string, groups []string) error {
		for _, g := range groups {
			members, ok := snap.Groups[g]
			if !ok {
				return fmt.Errorf("scope: mdm snapshot has no members for %s group %s", kind, g)
			}
			for _, m := range members {
				for _, k := range []string{m.UserPrincipalName, m.Mail} {
					if k = strings.TrimSpace(k); k != "" {
						set[strings.ToLower(k)] = struct{}{}
					}
				}
			}
		}
		return nil
	}
	if err := add(s.included, "included", p.IncludedGroups); err != nil {
		return nil, err
	}
	if err := add(s.excluded, "excluded", p.ExcludedGroups); err != nil {
		return nil, err
	}
	return s, nil
}

// Of returns u's membership: a group member matches when its UPN or mail
// equals the user's primary SMTP address or UPN, case-insensitively.
func (s *Scope) Of(u User) Membership {
	in := func(set map[string]struct{}) bool {
		for _, k := range []string{u.PrimarySmtp, u.UPN} {
			if k == "" {
				continue
			}
			if _, ok := set[strings.ToLower(k)]; ok {
				return true
			}
		}
		return false
	}
	return Membership{Excluded: in(s.excluded), Included: in(s.included)}
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

package pipeline

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/mdm"
)

func TestScope(t *testing.T) {
	snap := &mdm.Snapshot{Groups: map[string][]mdm.Member{
		"inc": {
			{UserPrincipalName: "Alice.Anderson1@contoso.com"},
			{Mail: "BOB@contoso.com"},
			{UserPrincipalName: "carol@corp.local", Mail: "carol@contoso.com"},
		},
		"exc": {{UserPrincipalName: "carol@corp.local"}},
	}}
	p := testPolicy()
	s, err := NewScope(p, snap)
	if err != nil {
		t.Fatalf("NewScope() = %v", err)
	}
	f := func(u User, want Membership) {
		t.Helper()
		if got := s.Of(u); got != want {
			t.Errorf("Of(%+v) = %+v, want %+v", u, got, want)
		}
	}
	f(alice, Membership{Included: true})
	f(User{PrimarySmtp: "alice.anderson1@CONTOSO.com"}, Membership{Included: true})
	f(User{PrimarySmtp: "bob@contoso.com"}, Membership{Included: true})
	f(User{PrimarySmtp: "carol@contoso.com", UPN: "carol@corp.local"}, Membership{Included: true, Excluded: true})
	f(User{PrimarySmtp: "dan@contoso.com"}, Membership{})
	f(User{}, Membership{})

	p.ExcludedGroups = []string{"exc", "gone"}
	if _, err := NewScope(p, snap); err == nil || !strings.Contains(err.Error(), "excluded group gone") {
		t.Errorf("NewScope(missing excluded group) = %v, want an error naming it", err)
	}
	if _, err := NewScope(p, nil); err == nil {
		t.Error("NewScope(nil snapshot) = nil error")
	}
}

// TestScopeByObjectID: the directory withholds the members' UPN and mail
// (an app with GroupMember.Read.All only), so members are bare object ids.
// A mailbox's user is tied to an id through the MDM records (userId beside
// UPN and e-mail address) and is in a group when that id is a member. A
// user no record names, while a group has members nobody can name, is
// Unknown; a user whose addresses lead to two ids that disagree, too.
func TestScopeByObjectID(t *testing.T) {
	const (
		aliceID = "a0000000-0000-4000-8000-000000000001"
		bobID   = "b0000000-0000-4000-8000-000000000002"
		carolID = "c0000000-0000-4000-8000-000000000003"
		danID   = "d0000000-0000-4000-8000-000000000004" // no device: nobody can name dan
		eveID   = "e0000000-0000-4000-8000-000000000005"
	)
	snap := &mdm.Snapshot{
		Records: []mdm.Record{
			{ID: "1", UserID: aliceID, UserPrincipalName: "alice@corp.local", Email: "alice@contoso.com"},
			{ID: "2", UserID: strings.ToUpper(bobID), UserPrincipalName: "bob@contoso.com"},
			{ID: "3", UserID: carolID, UserPrincipalName: "carol@contoso.com"},
			{ID: "4", UserID: eveID, UserPrincipalName: "eve@contoso.com"},
			{ID: "5", UserID: aliceID, Email: "SMTP:eve@contoso.com"}, // eve's address on alice's id: ambiguous
			{ID: "6", UserPrincipalName: "frank@contoso.com"},         // no userId: joins by nothing
		},
		Groups: map[string][]mdm.Member{
			"inc": {{ID: aliceID}, {ID: bobID}, {ID: danID}, {ID: eveID}},
			"exc": {{ID: strings.ToUpper(bobID)}},
		},
	}
	p := testPolicy()
	s, err := NewScope(p, snap)
	if err != nil {
		t.Fatalf("NewScope() = %v", err)
	}
	f := func(u User, want Membership) {
		t.Helper()
		if got := s.Of(u); got != want {
			t.Errorf("Of(%+v) = %+v, want %+v", u, got, want)
		}
	}
	f(User{PrimarySmtp: "alice@contoso.com"}, Membership{Included: true})                          // by the record's e-mail address
	f(User{PrimarySmtp: "Alice@Contoso.com", UPN: "alice@corp.local"}, Membership{Included: true}) // and UPN
	f(User{PrimarySmtp: "bob@contoso.com"}, Membership{Included: true, Excluded: true})
	f(User{PrimarySmtp: "carol@contoso.com"}, Membership{})            // named, in neither group
	f(User{PrimarySmtp: "dan@contoso.com"}, Membership{Unknown: true}) // could be the unnamed member
	f(User{PrimarySmtp: "frank@contoso.com"}, Membership{Unknown: true})
	f(User{PrimarySmtp: "eve@contoso.com"}, Membership{Included: true})          // both of eve's ids are included
	f(User{PrimarySmtp: "x@contoso.com", ID: danID}, Membership{Included: true}) // an id given wins
	if got := s.UserID(User{PrimarySmtp: "ALICE@contoso.com"}); got != aliceID {
		t.Errorf("UserID(alice) = %q, want %s", got, aliceID)
	}
	if got := s.UserID(User{PrimarySmtp: "eve@contoso.com"}); got != "" {
		t.Errorf("UserID(eve) = %q, want \"\" (two ids)", got)
	}
	if s.Unnamed != 1 {
		t.Errorf("Unnamed = %d, want 1 (dan)", s.Unnamed)
	}

	// eve's two ids disagree once alice leaves the included group.
	snap.Groups["inc"] = []mdm.Member{{ID: bobID}, {ID: danID}, {ID: eveID}}
	if s, err = NewScope(p, snap); err != nil {
		t.Fatal(err)
	}
	f(User{PrimarySmtp: "eve@contoso.com"}, Membership{Unknown: true})
	f(User{PrimarySmtp: "alice@contoso.com"}, Membership{}) // known, not included

	// A user with a known id is certainly not an unnamed member (each
	// member has an id); a user known not to be included stays
	// NotTargeted whatever the exclusion.
	snap.Groups["exc"] = []mdm.Member{{ID: danID}}
	if s, err = NewScope(p, snap); err != nil {
		t.Fatal(err)
	}
	f(User{PrimarySmtp: "bob@contoso.com"}, Membership{Included: true})
	f(User{PrimarySmtp: "carol@contoso.com"}, Membership{})

	// Members readable: UPN and mail name them, no record needed.
	snap.Groups["exc"] = []mdm.Member{{ID: danID, UserPrincipalName: "dan@contoso.com"}}
	if s, err = NewScope(p, snap); err != nil {
		t.Fatal(err)
	}
	f(User{PrimarySmtp: "dan@contoso.com"}, Membership{Included: true, Excluded: true})
	f(User{PrimarySmtp: "frank@contoso.com"}, Membership{}) // dan is named now, in either group

	// Not one included member can be matched: an infrastructure error
	// naming the permission, never a policy that targets nobody.
	snap.Groups["exc"] = []mdm.Member{}
	snap.Groups["inc"] = []mdm.Member{{ID: danID}, {ID: "f0000000-0000-4000-8000-000000000006"}}
	_, err = NewScope(p, snap)
	if !errors.Is(err, ErrScopeUnresolvable) || !strings.Contains(err.Error(), mdm.PermUsers) {
		t.Errorf("NewScope(unmatchable included members) = %v, want ErrScopeUnresolvable naming %s", err, mdm.PermUsers)
	}
	snap.Groups["inc"] = []mdm.Member{}
	if _, err := NewScope(p, snap); err != nil {
		t.Errorf("NewScope(empty included group) = %v, want nil (an empty group targets nobody, by the admin's choice)", err)
	}
}

func TestJoin(t *testing.T) {
	t0 := now.Add(-time.Hour)
	recs := []mdm.Record{
		{ID: "1", EASDeviceID: "ApplAAA", UserPrincipalName: "alice@contoso.com", LastSyncAt: t0},
		{ID: "2", EASDeviceID: "applaaa", UserPrincipalName: "mallory@contoso.com", LastSyncAt: t0.Add(time.Minute)},
		{ID: "3", EASDeviceID: "ApplBBB", UserPrincipalName: "bob@contoso.com", LastSyncAt: t0, Compliance: mdm.ComplianceNoncompliant},
		{ID: "3", EASDeviceID: "ApplBBB", UserPrincipalName: "bob@contoso.com", LastSyncAt: t0.Add(time.Hour), Compliance: mdm.ComplianceCompliant},
		{ID: "3", EASDeviceID: "ApplBBB", UserPrincipalName: "bob@contoso.com", LastSyncAt: t0.Add(-time.Hour), Compliance: mdm.ComplianceError},
		{ID: "4", EASDeviceID: "", UserPrincipalName: "carol@contoso.com"},
		{ID: "5", EASDeviceID: "ApplCCC", UserPrincipalName: "carol@contoso.com", LastSyncAt: t0},
		{ID: "6", EASDeviceID: "APPLCCC", UserPrincipalName: "Carol@contoso.com", LastSyncAt: t0.Add(time.Minute), Compliance: mdm.ComplianceCompliant},
	}
	ix := Join(recs)
	if ix.Len() != 3 || ix.Duplicates != 2 || ix.NoEASID != 1 {
		t.Errorf("Join() Len=%d Duplicates=%d NoEASID=%d, want 3, 2, 1", ix.Len(), ix.Duplicates, ix.NoEASID)
	}
	want := []Collision{{EASDeviceID: "applaaa", Users: []string{"alice@contoso.com", "mallory@contoso.com"}}}
	if !reflect.DeepEqual(ix.Collisions, want) {
		t.Errorf("Collisions = %+v, want %+v", ix.Collisions, want)
	}
	f := func(id string, u User, wantID string, wantSame bool) {
		t.Helper()
		r, same := ix.Lookup(id, u)
		gotID := ""
		if r != nil {
			gotID = r.ID
		}
		if gotID != wantID || same != wantSame {
			t.Errorf("Lookup(%q, %s) = %q, %v; want %q, %v", id, u.PrimarySmtp, gotID, same, wantID, wantSame)
		}
	}
	f("APPLAAA", User{PrimarySmtp: "alice@contoso.com"}, "1", true) // own record preferred over a newer one
	f("applaaa", User{PrimarySmtp: "mallory@contoso.com"}, "2", true)
	f("ApplAAA", User{PrimarySmtp: "eve@contoso.com"}, "2", false) // latest check-in of anyone
	f("applbbb", User{PrimarySmtp: "bob@contoso.com"}, "3", true)
	if r, _ := ix.Lookup("applbbb", User{}); r == nil || r.Compliance != mdm.ComplianceCompliant {
		t.Errorf("duplicate MDM id: kept %+v, want the latest check-in (compliant)", r)
	}
	f("applccc", User{PrimarySmtp: "carol@contoso.com"}, "6", true) // same user twice: latest wins, no collision
	f("ApplZZZ", alice, "", false)
	f("", alice, "", false)
}

// TestJoinPopulation joins a generated fleet the way the sync will and
// checks the decisions add up: every device decided, exempt users never
// blocked.
func TestJoinPopulation(t *testing.T) {
	pop := population.Generate(population.Options{Seed: 7, Devices: 3000, Now: now})
	snap := &mdm.Snapshot{Groups: map[string][]mdm.Member{}}
	for _, r := range pop.MDM {
		snap.Records = append(snap.Records, mdm.Record{
			ID: r.ID, EASDeviceID: r.EASDeviceID, UserPrincipalName: r.UserPrincipalName, Email: r.Email,
			Compliance: mdm.Compliance(r.ComplianceState), EnrolledAt: r.EnrolledAt, LastSyncAt: r.LastSyncAt,
		})
	}
	for _, g := range []population.Group{pop.Included, pop.Excluded} {
		snap.Groups[g.ID] = []mdm.Member{}
		for _, mi := range g.Members {
			snap.Groups[g.ID] = append(snap.Groups[g.ID], mdm.Member{UserPrincipalName: pop.Mailboxes[mi].UPN})
		}
	}
	p := testPolicy()
	p.IncludedGroups, p.ExcludedGroups = []string{pop.Included.ID}, []string{pop.Excluded.ID}
	scope, err := NewScope(p, snap)
	if err != nil {
		t.Fatal(err)
	}
	ix := Join(snap.Records)
	if len(ix.Collisions) != 0 {
		t.Errorf("generated fleet has collisions: %+v", ix.Collisions)
	}
	var tally Tally
	for _, d := range pop.Devices {
		mb := pop.Mailboxes[d.Mailbox]
		u := User{PrimarySmtp: mb.PrimarySmtp, UPN: mb.UPN}
		rec, same := ix.Lookup(d.DeviceID, u)
		in := Input{Device: iphone(d.DeviceID), User: u, Scope: scope.Of(u), Record: rec, SameUser: same}
		dec, r := Decide(p, in, now)
		if in.Scope.Excluded && dec == Block {
			t.Fatalf("exempt user's device %s blocked (%s)", d.DeviceID, r)
		}
		tally.Add(dec, r)
	}
	var res SyncResult
	tally.Fill(&res)
	total := 0
	for _, n := range res.CountsByDecision {
		total += n
	}
	if total != len(pop.Devices) || res.CountsByReason[ReasonCompliant] == 0 || res.CountsByReason[ReasonNotEnrolled] == 0 ||
		res.CountsByReason[ReasonExempt] == 0 || res.CountsByReason[ReasonNotCompliant] == 0 {
		t.Errorf("tally = %v / %v over %d devices", res.CountsByDecision, res.CountsByReason, len(pop.Devices))
	}
}

// TestJoinTieBreak pins the documented precedence of records for one
// device: latest check-in, then the most restrictive compliance, then the
// record id, whatever order the MDM returned them in.
func TestJoinTieBreak(t *testing.T) {
	t0 := now.Add(-time.Hour)
	rec := func(id string, at time.Time, c mdm.Compliance) mdm.Record {
		return mdm.Record{ID: id, EASDeviceID: "ApplTIE", UserPrincipalName: "alice@contoso.com", LastSyncAt: at, Compliance: c}
	}
	f := func(name string, recs []mdm.Record, wantID string) {
		t.Helper()
		for _, order := range [][]mdm.Record{recs, reversed(recs)} {
			r, _ := Join(order).Lookup("appltie", alice)
			if r == nil || r.ID != wantID {
				t.Errorf("%s: Lookup = %+v, want record %s", name, r, wantID)
			}
		}
	}
	f("latest check-in wins over restrictiveness",
		[]mdm.Record{rec("a", t0, mdm.ComplianceNoncompliant), rec("b", t0.Add(time.Second), mdm.ComplianceCompliant)}, "b")
	f("tie: noncompliant over compliant",
		[]mdm.Record{rec("a", t0, mdm.ComplianceCompliant), rec("b", t0, mdm.ComplianceNoncompliant)}, "b")
	f("tie: unknown over compliant",
		[]mdm.Record{rec("a", t0, mdm.ComplianceInGracePeriod), rec("b", t0, mdm.ComplianceUnknown)}, "b")
	f("tie: error over unknown",
		[]mdm.Record{rec("a", t0, mdm.ComplianceUnknown), rec("b", t0, mdm.ComplianceError)}, "b")
	f("tie: lower record id",
		[]mdm.Record{rec("b", t0, mdm.ComplianceCompliant), rec("a", t0, mdm.ComplianceCompliant)}, "a")
	// The same MDM id twice with the same check-in: the restrictive copy
	// survives the deduplication.
	dup := []mdm.Record{rec("x", t0, mdm.ComplianceCompliant), rec("x", t0, mdm.ComplianceNoncompliant)}
	for _, order := range [][]mdm.Record{dup, reversed(dup)} {
		ix := Join(order)
		if r, _ := ix.Lookup("appltie", alice); r == nil || r.Compliance != mdm.ComplianceNoncompliant || ix.Duplicates != 1 {
			t.Errorf("duplicate MDM id, same check-in: kept %+v (duplicates %d), want the noncompliant copy", r, ix.Duplicates)
		}
	}
}

func reversed(rs []mdm.Record) []mdm.Record {
	out := make([]mdm.Record, len(rs))
	for i, r := range rs {
		out[len(rs)-1-i] = r
	}
	return out
}

// TestJoinOrderIndependent shuffles an MDM snapshot full of ties (several
// records per device with the same check-in and different compliance, and
// duplicated MDM ids) many times: no decision may change.
func TestJoinOrderIndependent(t *testing.T) {
	pop := population.Generate(population.Options{Seed: 11, Devices: 1500, Now: now})
	compl := []mdm.Compliance{mdm.ComplianceCompliant, mdm.ComplianceNoncompliant, mdm.ComplianceUnknown,
		mdm.ComplianceInGracePeriod, mdm.ComplianceError, mdm.ComplianceConflict, mdm.ComplianceConfigManager}
	rng := rand.New(rand.NewPCG(11, 12))
	var recs []mdm.Record
	for i, r := range pop.MDM {
		base := mdm.Record{
			ID: r.ID, EASDeviceID: r.EASDeviceID, UserPrincipalName: r.UserPrincipalName, Email: r.Email,
			Compliance: mdm.Compliance(r.ComplianceState), EnrolledAt: r.EnrolledAt, LastSyncAt: r.LastSyncAt,
		}
		recs = append(recs, base)
		switch i % 3 {
		case 0: // a second record (another MDM id) with the same check-in
			twin := base
			twin.ID = base.ID + "-twin"
			twin.Compliance = compl[rng.IntN(len(compl))]
			recs = append(recs, twin)
		case 1: // the same MDM id again, same check-in, other compliance
			dup := base
			dup.Compliance = compl[rng.IntN(len(compl))]
			recs = append(recs, dup)
		}
	}
	p := testPolicy()
	decide := func(recs []mdm.Record) []string {
		ix := Join(recs)
		out := make([]string, 0, len(pop.Devices))
		for _, d := range pop.Devices {
			mb := pop.Mailboxes[d.Mailbox]
			u := User{PrimarySmtp: mb.PrimarySmtp, UPN: mb.UPN}
			rec, same := ix.Lookup(d.DeviceID, u)
			dec, reason := Decide(p, Input{Device: iphone(d.DeviceID), User: u, Scope: Membership{Included: true}, Record: rec, SameUser: same}, now)
			out = append(out, string(dec)+"/"+string(reason))
		}
		return out
	}
	want := decide(recs)
	for run := range 50 {
		shuffled := append([]mdm.Record(nil), recs...)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got := decide(shuffled)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("shuffle %d: device %s decided %s, was %s in MDM order", run, pop.Devices[i].DeviceID, got[i], want[i])
			}
		}
	}
}

// BenchmarkScope builds the scope of a 50,000-device fleet whose members
// come as bare object ids (an app without User.Read.All) and scopes every
// mailbox: the per-sync cost of the join by id.
func BenchmarkScope(b *testing.B) {
	pop := population.Generate(population.Options{Seed: 3, Devices: 50_000, Now: now})
	snap := &mdm.Snapshot{Groups: map[string][]mdm.Member{}}
	for _, r := range pop.MDM {
		snap.Records = append(snap.Records, mdm.Record{ID: r.ID, UserID: r.UserID, EASDeviceID: r.EASDeviceID,
			UserPrincipalName: r.UserPrincipalName, Email: r.Email})
	}
	for _, g := range []population.Group{pop.Included, pop.Excluded} {
		for _, i := range g.Members {
			snap.Groups[g.ID] = append(snap.Groups[g.ID], mdm.Member{ID: pop.Mailboxes[i].EntraID})
		}
	}
	p := testPolicy()
	p.IncludedGroups, p.ExcludedGroups = []string{pop.Included.ID}, []string{pop.Excluded.ID}
	b.ReportAllocs()
	for b.Loop() {
		s, err := NewScope(p, snap)
		if err != nil {
			b.Fatal(err)
		}
		for i := range pop.Mailboxes {
			u := User{PrimarySmtp: pop.Mailboxes[i].PrimarySmtp}
			u.ID = s.UserID(u)
			_ = s.Of(u)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(pop.Mailboxes)), "ns/mailbox")
	b.ReportMetric(float64(len(pop.Mailboxes)), "mailboxes")
}

package pipeline_test

import (
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/pipeline"
)

// affectedBy returns the DNs (lower-cased) of the mailboxes churn can
// have changed: the mailbox of each new phone, and every mailbox with a
// partnership on the EAS id of a record that flipped or vanished. before
// maps MDM record ids to EAS ids as they were before the churn.
func (f *fixture) affectedBy(changes []population.Change, before map[string]string) map[string]bool {
	f.t.Helper()
	byID := map[string][]string{}
	devs, _, err := f.sim.Org().Devices("", 0, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, d := range devs {
		dn, err := d.MailboxDN()
		if err != nil {
			continue
		}
		k := strings.ToLower(d.DeviceId)
		byID[k] = append(byID[k], strings.ToLower(dn))
	}
	out := map[string]bool{}
	for _, c := range changes {
		switch c.Kind {
		case population.NewPhone:
			out[strings.ToLower(f.pop.Mailboxes[f.pop.Devices[c.Device].Mailbox].DistinguishedName)] = true
		case population.ComplianceFlip, population.Unenroll:
			for _, dn := range byID[strings.ToLower(before[c.Record])] {
				out[dn] = true
			}
		}
	}
	return out
}

func (f *fixture) recordEASIDs() map[string]string {
	out := map[string]string{}
	for _, r := range f.snapshot().Records {
		out[r.ID] = r.EASDeviceID
	}
	return out
}

var dnInFilter = regexp.MustCompile(`DistinguishedName -eq '((?:[^']|'')*)'`)

// readsAndWrites sorts the cmdlets exsim served since seq by what they
// touched: the mailboxes whose devices were read (-Mailbox), whose lists
// were read (DN filter), and the identities written.
type touched struct {
	deviceReads, listReads, writes   map[string]bool
	unfilteredDevices, fullListReads int
}

func (f *fixture) touched(since uint64) touched {
	t := touched{deviceReads: map[string]bool{}, listReads: map[string]bool{}, writes: map[string]bool{}}
	for _, c := range f.sim.CallLog(since, 0) {
		switch c.Cmd {
		case "Get-MobileDevice":
			if mb, ok := c.Args["Mailbox"].(string); ok {
				t.deviceReads[strings.ToLower(mb)] = true
			} else {
				t.unfilteredDevices++
			}
		case "Get-CASMailbox":
			filter, _ := c.Args["Filter"].(string)
			if !strings.Contains(filter, "DistinguishedName") {
				t.fullListReads++
				continue
			}
			for _, m := range dnInFilter.FindAllStringSubmatch(filter, -1) {
				t.listReads[strings.ToLower(strings.ReplaceAll(m[1], "''", "'"))] = true
			}
		case "Set-CASMailbox":
			id, _ := c.Args["Identity"].(string)
			t.writes[strings.ToLower(id)] = true
		}
	}
	return t
}

// guidsOf maps mailbox DNs (lower-cased) to their Guids (lower-cased).
func (f *fixture) guidsOf(dns map[string]bool) map[string]bool {
	out := map[string]bool{}
	mbs, _ := f.sim.Org().Mailboxes(0, 0)
	for _, mb := range mbs {
		if dns[strings.ToLower(mb.DistinguishedName)] {
			out[strings.ToLower(mb.Guid)] = true
		}
	}
	return out
}

func subset(a, b map[string]bool) []string {
	var extra []string
	for k := range a {
		if !b[k] {
			extra = append(extra, k)
		}
	}
	slices.Sort(extra)
	return extra
}

// TestQuickSyncChurn: after 1% churn a quick sync reads the devices of
// exactly the affected mailboxes, reads lists and writes only among them,
// and leaves Exchange as the decision table says; a quick sync with
// nothing changed reads no mailbox and writes nothing.
func TestQuickSyncChurn(t *testing.T) { forModes(t, testQuickSyncChurn) }

func testQuickSyncChurn(t *testing.T, mode string) {
	f := newFixture(t, fixtureOptions{mode: mode})
	f.sync(pipeline.SyncFull)
	before := f.recordEASIDs()
	changes := f.churn(0.01)
	want := f.affectedBy(changes, before)
	if len(want) == 0 {
		t.Fatal("churn affected no mailbox")
	}

	seq := f.lastSeq()
	rep := f.sync(pipeline.SyncQuick)
	if rep.Kind != pipeline.SyncQuick || rep.Escalated != "" {
		t.Fatalf("quick sync ran as %s (%s)", rep.Kind, rep.Escalated)
	}
	got := f.touched(seq)
	if extra, missing := subset(got.deviceReads, want), subset(want, got.deviceReads); len(extra)+len(missing) > 0 {
		t.Errorf("quick sync read the devices of %d mailboxes, want the %d affected: extra %v, missing %v",
			len(got.deviceReads), len(want), extra, missing)
	}
	if extra := subset(got.listReads, want); len(extra) > 0 {
		t.Errorf("quick sync read the lists of unaffected mailboxes %v", extra)
	}
	if extra := subset(got.writes, f.guidsOf(want)); len(extra) > 0 {
		t.Errorf("quick sync wrote unaffected mailboxes %v", extra)
	}
	if got.unfilteredDevices != 2 || got.fullListReads != 0 {
		t.Errorf("quick sync: %d Get-MobileDevice without -Mailbox (want 2: new partnerships, quarantine), %d full Get-CASMailbox (want 0)",
			got.unfilteredDevices, got.fullListReads)
	}
	if rep.Writes == 0 {
		t.Errorf("1%% churn wrote nothing; plans %v", rep.Plans)
	}
	t.Logf("churn %d changes → %d affected mailboxes, %d list reads, %d writes", len(changes), len(want), len(got.listReads), rep.Writes)
	f.checkAccess()

	seq = f.lastSeq()
	rep = f.sync(pipeline.SyncQuick)
	got = f.touched(seq)
	if len(got.deviceReads)+len(got.listReads)+len(got.writes) != 0 || rep.Writes != 0 {
		t.Errorf("quick sync with nothing changed: %d device reads, %d list reads, %d writes", len(got.deviceReads), len(got.listReads), len(got.writes))
	}
}

// TestCacheDisabledSameResult: caches that drop every entry give the same
// syncs as working ones, only with more reads.
func TestCacheDisabledSameResult(t *testing.T) {
	run := func(noCache bool) (*fixture, []*pipeline.Report) {
		f := newFixture(t, fixtureOptions{noCache: noCache})
		reps := []*pipeline.Report{f.sync(pipeline.SyncFull)}
		f.churn(0.01)
		reps = append(reps, f.sync(pipeline.SyncQuick))
		f.churn(0.01)
		reps = append(reps, f.sync(pipeline.SyncQuick), f.sync(pipeline.SyncFull))
		return f, reps
	}
	cached, a := run(false)
	uncached, b := run(true)
	for i := range a {
		x, y := a[i], b[i]
		cx, cy := x.Counts, y.Counts
		if x.Kind == pipeline.SyncQuick {
			// Without caches a quick sync plans every mailbox it had to
			// read; what it writes must not differ.
			cx.Mailboxes, cx.Conflicts, cy.Mailboxes, cy.Conflicts = 0, 0, 0, 0
		}
		if x.Kind != y.Kind || x.Writes != y.Writes || x.Changes != y.Changes || cx != cy {
			t.Errorf("sync %d (%s): cached %d writes %d changes %+v; uncached %d writes %d changes %+v",
				i, x.Kind, x.Writes, x.Changes, x.Counts, y.Writes, y.Changes, y.Counts)
		}
		if !slices.EqualFunc(x.Plans, y.Plans, func(p, q pipeline.PlannedMailbox) bool {
			return p.Identity == q.Identity && slices.Equal(p.Allowed.Add, q.Allowed.Add) && slices.Equal(p.Allowed.Remove, q.Allowed.Remove) &&
				slices.Equal(p.Blocked.Add, q.Blocked.Add) && slices.Equal(p.Blocked.Remove, q.Blocked.Remove)
		}) {
			t.Errorf("sync %d (%s): plans differ between cached and uncached", i, x.Kind)
		}
	}
	if a[1].ReadMailboxes >= b[1].ReadMailboxes {
		t.Errorf("quick sync read %d mailboxes with caches and %d without; the caches saved nothing", a[1].ReadMailboxes, b[1].ReadMailboxes)
	}
	if !maps.EqualFunc(cached.lists(), uncached.lists(), func(p, q [2][]string) bool { return slices.Equal(p[0], q[0]) && slices.Equal(p[1], q[1]) }) {
		t.Error("Exchange ends in different states with and without caches")
	}
	uncached.checkAccess()
}

// TestAdminEntriesAndUntargeting: administrators' entries survive every
// sync; a user leaving the included group loses only the entries we made
// (the policy leaves untargeted users to Exchange here), in a quick sync.
func TestAdminEntriesAndUntargeting(t *testing.T) {
	f := newFixture(t, fixtureOptions{policy: func(p *pipeline.Policy) { p.Untargeted = pipeline.UntargetedDefault }})
	f.sync(pipeline.SyncFull)

	// A targeted user with an administrator's entry and entries of ours.
	excluded := map[int]bool{}
	for _, i := range f.pop.Excluded.Members {
		excluded[i] = true
	}
	victim := -1
	for _, i := range f.pop.Included.Members {
		mb := f.pop.Mailboxes[i]
		if excluded[i] || len(mb.Allowed)+len(mb.Blocked) == 0 {
			continue
		}
		if o := f.eng.State().OwnedOf(mb.Guid); !o.IsZero() {
			victim = i
			break
		}
	}
	if victim < 0 {
		t.Fatal("population has no targeted mailbox with both an admin entry and entries of ours")
	}
	mb := f.pop.Mailboxes[victim]
	cur, err := f.sim.Org().Mailbox(mb.DistinguishedName)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range mb.Allowed {
		if !containsFold(cur.ActiveSyncAllowedDeviceIDs, id) {
			t.Errorf("admin allow entry %s was removed", id)
		}
	}
	for _, id := range mb.Blocked {
		if !containsFold(cur.ActiveSyncBlockedDeviceIDs, id) {
			t.Errorf("admin block entry %s was removed", id)
		}
	}

	f.graph.Update(func(p *population.Population) {
		p.Included.Members = slices.DeleteFunc(p.Included.Members, func(i int) bool { return i == victim })
	})
	seq := f.lastSeq()
	rep := f.sync(pipeline.SyncQuick)
	got := f.touched(seq)
	if want := map[string]bool{strings.ToLower(mb.Guid): true}; !maps.Equal(got.writes, want) {
		t.Errorf("un-targeting one user wrote %v, want only %s", got.writes, mb.Guid)
	}
	cur, err = f.sim.Org().Mailbox(mb.DistinguishedName)
	if err != nil {
		t.Fatal(err)
	}
	norm := func(l []string) []string { l = slices.Clone(l); slices.Sort(l); return l }
	if !slices.Equal(norm(cur.ActiveSyncAllowedDeviceIDs), norm(mb.Allowed)) || !slices.Equal(norm(cur.ActiveSyncBlockedDeviceIDs), norm(mb.Blocked)) {
		t.Errorf("after un-targeting, lists are %v / %v, want only the admin's %v / %v",
			cur.ActiveSyncAllowedDeviceIDs, cur.ActiveSyncBlockedDeviceIDs, mb.Allowed, mb.Blocked)
	}
	if o := f.eng.State().OwnedOf(mb.Guid); !o.IsZero() {
		t.Errorf("state still owns %+v on the un-targeted mailbox", o)
	}
	if rep.CountsByReason[pipeline.ReasonNotTargeted] == 0 {
		t.Errorf("CountsByReason = %v, want NotTargeted", rep.CountsByReason)
	}
	f.checkAccess()
}

// TestLargeFleet runs the full and quick sync checks at 50,000 devices.
func TestLargeFleet(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("50,000 devices: not under -short or -race")
	}
	f := newFixture(t, fixtureOptions{devices: 50_000, size: 8})
	start := time.Now()
	rep := f.sync(pipeline.SyncFull)
	t.Logf("full sync: %d devices, %d mailboxes, %d writes in %s", rep.Devices, rep.Mailboxes, rep.Writes, time.Since(start).Round(time.Millisecond))
	f.checkAccess()
	f.sim.ResetCounters()
	if rep = f.sync(pipeline.SyncFull); rep.Writes != 0 || f.sim.Counters().WriteCmdlets != 0 {
		t.Errorf("unchanged full sync: %d writes, %d write cmdlets", rep.Writes, f.sim.Counters().WriteCmdlets)
	}
	before := f.recordEASIDs()
	want := f.affectedBy(f.churn(0.01), before)
	seq := f.lastSeq()
	start = time.Now()
	rep = f.sync(pipeline.SyncQuick)
	elapsed := time.Since(start).Round(time.Millisecond)
	got := f.touched(seq)
	if extra, missing := subset(got.deviceReads, want), subset(want, got.deviceReads); len(extra)+len(missing) > 0 {
		t.Errorf("quick sync read %d mailboxes, want the %d affected: extra %v, missing %v", len(got.deviceReads), len(want), extra, missing)
	}
	if extra := subset(got.writes, f.guidsOf(want)); len(extra) > 0 {
		t.Errorf("quick sync wrote unaffected mailboxes %v", extra)
	}
	t.Logf("quick sync after 1%% churn: %d mailboxes read, %d writes in %s", len(got.deviceReads), rep.Writes, elapsed)
	f.checkAccess()
}

// TestAdoptExisting: with adopt_existing, the first full sync takes the
// entries already in the lists as the connector's own (also on mailboxes
// it does not write), and adoption ends with that sync.
func TestAdoptExisting(t *testing.T) {
	f := newFixture(t, fixtureOptions{
		engine: func(o *pipeline.Options) { o.AdoptExisting = true },
		pop:    func(o *population.Options) { o.AdminEntryRate = 0.2 },
	})
	f.sync(pipeline.SyncFull)
	adopted, unwritten := 0, 0
	for i, mb := range f.pop.Mailboxes {
		if len(mb.Allowed)+len(mb.Blocked) == 0 {
			continue
		}
		o := f.eng.State().OwnedOf(mb.Guid)
		for _, id := range mb.Allowed {
			cur, _ := f.sim.Org().Mailbox(mb.Guid)
			if containsFold(cur.ActiveSyncAllowedDeviceIDs, id) && !containsFold(o.Allowed, id) {
				t.Errorf("mailbox %d: allowed %s present but not adopted (owned %v)", i, id, o.Allowed)
			}
		}
		adopted += len(o.Allowed) + len(o.Blocked)
		if len(f.calls(0, "Set-CASMailbox")) > 0 && !f.wrote(mb.Guid) {
			unwritten++
		}
	}
	if adopted == 0 || unwritten == 0 {
		t.Errorf("adopted %d entries, on %d mailboxes that were not written; want both", adopted, unwritten)
	}
	if f.eng.State().MayAdopt(true) {
		t.Error("adoption still open after the first full sync")
	}
}

// wrote reports whether a Set-CASMailbox named identity.
func (f *fixture) wrote(identity string) bool {
	for _, c := range f.calls(0, "Set-CASMailbox") {
		if id, _ := c.Args["Identity"].(string); strings.EqualFold(id, identity) {
			return true
		}
	}
	return false
}

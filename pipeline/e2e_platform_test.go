package pipeline_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/pipeline"
)

// TestShadowedPlatformException: an administrator's device access rule on
// an earlier characteristic (DeviceOS before DeviceModel in Exchange's
// order) overrides the policy's "Nine Work" quarantine exception for some
// devices. Exchange then lets those phones in; the sync must say so, in
// its report and plan output, instead of counting on an exception that
// does not hold.
func TestShadowedPlatformException(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	org := f.sim.Org()
	var nine *exsim.Verdict
	var os, mbDN, devID string
	for _, x := range f.expectations() {
		if x.why == pipeline.ReasonPlatformRule && strings.EqualFold(x.device.DeviceModel, "Nine Work") && x.device.DeviceOS != "" {
			os, mbDN, devID = x.device.DeviceOS, x.mailbox.DistinguishedName, x.device.DeviceId
			break
		}
	}
	if os == "" {
		t.Fatal("the population has no targeted Nine Work device with an OS")
	}
	if _, err := org.AddRule(exchange.CharDeviceOS, os, exchange.LevelAllow); err != nil {
		t.Fatal(err)
	}
	rep := f.sync(pipeline.SyncFull)

	// Exchange really lets the phone in, by the administrator's rule.
	v, err := org.Evaluate(mbDN, devID)
	if err != nil {
		t.Fatal(err)
	}
	nine = &v
	wantRule := os + " (DeviceOS)"
	if nine.State != exchange.AccessAllowed || nine.Rule != wantRule {
		t.Fatalf("Exchange's verdict for %s = %+v, want Allowed by %s", devID, *nine, wantRule)
	}
	var found *pipeline.ShadowedException
	for i := range rep.ShadowedExceptions {
		if s := &rep.ShadowedExceptions[i]; s.Exception == "Nine Work (DeviceModel)" && s.Rule == wantRule {
			found = s
		}
	}
	if found == nil || found.Level != exchange.LevelAllow || found.Devices == 0 || found.Action != pipeline.ActionQuarantine {
		t.Fatalf("ShadowedExceptions = %+v, want Nine Work (DeviceModel) shadowed by %s", rep.ShadowedExceptions, wantRule)
	}
	if !strings.Contains(found.String(), "Exchange tries device access rule \""+wantRule+"\" first (Allow)") {
		t.Errorf("message = %q", found.String())
	}

	// Without the administrator's rule nothing is shadowed.
	if err := org.RemoveRule(wantRule); err != nil {
		t.Fatal(err)
	}
	if rep := f.sync(pipeline.SyncFull); len(rep.ShadowedExceptions) != 0 {
		t.Errorf("ShadowedExceptions without the admin rule = %+v", rep.ShadowedExceptions)
	}
}

// TestUntargetedReachedByRules: the policy's platform exceptions become
// organization-wide rules, so with untargeted = "default" a device of a
// user the policy does not target is decided by them. The sync reports it
// (the connector writes nothing into mailboxes it does not target).
func TestUntargetedReachedByRules(t *testing.T) {
	f := newFixture(t, fixtureOptions{policy: func(p *pipeline.Policy) { p.Untargeted = pipeline.UntargetedDefault }})
	org := f.sim.Org()
	var mb exchange.CASMailbox
	for _, x := range f.expectations() {
		if x.why == pipeline.ReasonNotTargeted {
			mb = x.mailbox
			break
		}
	}
	if mb.DistinguishedName == "" {
		t.Fatal("the population has no untargeted user")
	}
	if _, err := org.AddDevice(exsim.DeviceSpec{Mailbox: mb.DistinguishedName, DeviceId: "NINEOUTSIDE1", DeviceType: "Nine", DeviceModel: "Nine Work"}); err != nil {
		t.Fatal(err)
	}
	rep := f.sync(pipeline.SyncFull)
	var reach *pipeline.UntargetedReach
	for i := range rep.UntargetedReached {
		if rep.UntargetedReached[i].Rule == "Nine Work (DeviceModel)" {
			reach = &rep.UntargetedReached[i]
		}
	}
	if reach == nil || reach.Devices == 0 || reach.Level != exchange.LevelQuarantine {
		t.Fatalf("UntargetedReached = %+v, want the Nine Work rule reaching untargeted devices", rep.UntargetedReached)
	}
	// Exchange quarantines the untargeted phone by the policy's rule, and
	// the connector wrote nothing into its mailbox.
	if v, _ := org.Evaluate(mb.DistinguishedName, "NINEOUTSIDE1"); v.State != exchange.AccessQuarantined || v.Rule != "Nine Work (DeviceModel)" {
		t.Errorf("untargeted phone = %+v", v)
	}
	after, err := org.Mailbox(mb.DistinguishedName)
	if err != nil {
		t.Fatal(err)
	}
	if containsFold(after.ActiveSyncAllowedDeviceIDs, "NINEOUTSIDE1") || containsFold(after.ActiveSyncBlockedDeviceIDs, "NINEOUTSIDE1") {
		t.Errorf("the connector wrote into an untargeted mailbox: %+v", after)
	}
}

// TestShutOutCountUnderStoredState: Get-MobileDevice shows the state
// stored at each phone's last request, and Set-CASMailbox leaves Unknown on
// a device whose entry it removed until the phone connects again. Such a
// phone, left to Exchange, is let in by an Allow default at its next
// request, so tightening the default shuts it out as surely as one whose
// stored state says Allowed: the guard's count must include it.
func TestShutOutCountUnderStoredState(t *testing.T) {
	f := newFixture(t, fixtureOptions{orgLevel: exchange.LevelAllow, engine: func(o *pipeline.Options) {
		o.Guard.MaxNewBlocks, o.Guard.MaxNewBlocksRatio = 0, 0 // every revocation is held: the message carries the count
	}})
	shutOut := func() int {
		t.Helper()
		rep, err := f.eng.Sync(testCtx(t, 2*time.Minute), pipeline.SyncRequest{Kind: pipeline.SyncFull, DryRun: true})
		if err == nil {
			t.Fatalf("dry run passed the guard: %+v", rep.Guard)
		}
		m := regexp.MustCompile(`of them (\d+) by changing DefaultAccessLevel from Allow to Quarantine`).FindStringSubmatch(rep.Guard.Message)
		if m == nil {
			t.Fatalf("guard message %q names no shut-out count", rep.Guard.Message)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	before := shutOut()
	if before == 0 {
		t.Fatal("nothing shut out to begin with")
	}
	// Three unlisted phones left to Exchange: an administrator adds and
	// removes an entry for each (Set-CASMailbox), so Exchange shows
	// Unknown until they connect again.
	org := f.sim.Org()
	n := 0
	for _, x := range f.expectations() {
		if n == 3 {
			break
		}
		if x.dec != pipeline.Default || x.why != pipeline.ReasonNotEnrolled || x.device.DeviceAccessState != exchange.AccessAllowed ||
			containsFold(x.mailbox.ActiveSyncAllowedDeviceIDs, x.device.DeviceId) || containsFold(x.mailbox.ActiveSyncBlockedDeviceIDs, x.device.DeviceId) {
			continue
		}
		dn := x.mailbox.DistinguishedName
		if err := org.EditLists(dn, exsim.ListChange{Add: []string{x.device.DeviceId}}, exsim.ListChange{}); err != nil {
			t.Fatal(err)
		}
		if err := org.EditLists(dn, exsim.ListChange{Remove: []string{x.device.DeviceId}}, exsim.ListChange{}); err != nil {
			t.Fatal(err)
		}
		d, err := org.Device(x.device.Identity)
		if err != nil || d.DeviceAccessState != exchange.AccessUnknown {
			t.Fatalf("stored state after the entry went = %s, %v; want Unknown", d.DeviceAccessState, err)
		}
		n++
	}
	if n < 3 {
		t.Fatalf("only %d unlisted, unenrolled, allowed phones", n)
	}
	if after := shutOut(); after != before {
		t.Errorf("shut-out count = %d after three phones show Unknown, want %d as before: they still get the default at their next request", after, before)
	}
}

// TestStoredStateFollowsWrites: Set-CASMailbox rewrites the stored state
// of the devices whose ids it lists, so after a sync Get-MobileDevice shows
// for every listed device what the devices list's ExchangeAfter says the
// lists give it, and a phone the sync let in is no longer shown as the
// Quarantined it was read with.
func TestStoredStateFollowsWrites(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.sync(pipeline.SyncFull)
	rows, total := f.eng.Devices(pipeline.DeviceQuery{}, 0, 0)
	if total == 0 {
		t.Fatal("no device rows")
	}
	org := f.sim.Org()
	type key struct{ mailbox, id string }
	stored := map[key]exchange.AccessState{}
	devs, _, err := org.Devices("", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	mbs, _ := org.Mailboxes(0, 0)
	smtp := map[string]string{}
	for _, mb := range mbs {
		smtp[strings.ToLower(mb.Name)] = strings.ToLower(mb.PrimarySmtpAddress)
	}
	for _, d := range devs {
		owner, _, _ := strings.Cut(d.Identity, `\ExchangeActiveSyncDevices\`)
		stored[key{smtp[strings.ToLower(owner)], strings.ToLower(d.DeviceId)}] = d.DeviceAccessState
	}
	letIn, bad := 0, 0
	for _, r := range rows {
		if r.ExchangeAfter == "" {
			continue
		}
		want, ok := stored[key{strings.ToLower(r.Mailbox), strings.ToLower(r.DeviceID)}]
		if !ok {
			continue
		}
		if r.ExchangeState == exchange.AccessQuarantined && r.ExchangeAfter == exchange.AccessAllowed {
			letIn++
		}
		if want != r.ExchangeAfter {
			bad++
			if bad <= 5 {
				t.Errorf("%s on %s: lists give %s, Get-MobileDevice shows %s", r.DeviceID, r.Mailbox, r.ExchangeAfter, want)
			}
		}
	}
	if letIn == 0 {
		t.Fatal("the sync let no quarantined phone in")
	}
	if bad > 5 {
		t.Errorf("… %d rows in all", bad)
	}
}

// TestQuickSyncRestoresRemovedEntry: someone takes one of the connector's
// allow entries out with Set-CASMailbox; Exchange then shows the phone as
// Unknown until it connects again (and then applies the Quarantine
// default). The quick sync nominates it by that stored state and puts the
// entry back before the phone's next request, with no MDM change to
// prompt it.
func TestQuickSyncRestoresRemovedEntry(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.sync(pipeline.SyncFull)
	org := f.sim.Org()
	var mbDN, id string
	for _, x := range f.expectations() {
		if x.dec == pipeline.Allow && x.why == pipeline.ReasonCompliant && containsFold(x.mailbox.ActiveSyncAllowedDeviceIDs, x.device.DeviceId) &&
			!containsFold(f.adminAllowed[strings.ToLower(x.mailbox.DistinguishedName)], x.device.DeviceId) {
			mbDN, id = x.mailbox.DistinguishedName, x.device.DeviceId
			break
		}
	}
	if id == "" {
		t.Fatal("no device allowed by the connector")
	}
	if err := org.EditLists(mbDN, exsim.ListChange{Remove: []string{id}}, exsim.ListChange{}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute)
	rep := f.sync(pipeline.SyncQuick)
	if rep.Kind != pipeline.SyncQuick {
		t.Fatalf("sync kind = %s (%s)", rep.Kind, rep.Escalated)
	}
	mb, err := org.Mailbox(mbDN)
	if err != nil {
		t.Fatal(err)
	}
	if !containsFold(mb.ActiveSyncAllowedDeviceIDs, id) {
		t.Fatalf("quick sync did not restore the allow entry of %s (read %d mailboxes)", id, rep.ReadMailboxes)
	}
	if st, _ := org.Access(mbDN, id); st != exchange.AccessAllowed {
		t.Errorf("access of %s = %s, want Allowed", id, st)
	}
}

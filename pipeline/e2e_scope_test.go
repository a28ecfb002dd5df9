package pipeline_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/loadtest/graphsim"
	"github.com/easconnector/easconnector/mdm"
	"github.com/easconnector/easconnector/pipeline"
)

// TestScopeWithoutUserRead: the Graph app holds GroupMember.Read.All but
// not User.Read.All, so graphsim answers as Graph does then: group members
// with only @odata.type and id, every other property null. The connector
// joins members, device records and mailboxes by Entra object id, so the
// compliant phones of included users are allowed exactly as with full
// permissions; a user with no device record of their own is ScopeUnknown
// and left to Exchange's org default (never the untargeted Allow). Before
// the join by id, every device here was NotTargeted.
func TestScopeWithoutUserRead(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	full := f.expectations() // the decision table with full permissions
	f.graph.SetGrants(graphsim.Grants{NoUsers: true})

	snap := f.snapshot()
	if snap.Unnamed == 0 {
		t.Fatal("graphsim returned named members in NoUsers mode")
	}
	rep := f.sync(pipeline.SyncFull)
	t.Logf("full sync without User.Read.All: %d devices, %d writes, counts %v", rep.Devices, rep.Writes, rep.CountsByDecision)
	f.checkAccess() // Exchange matches the decision table under the limited answer

	limited := f.expectations()
	if len(limited) != len(full) {
		t.Fatalf("%d partnerships, want %d", len(limited), len(full))
	}
	compliant, unknown := 0, 0
	for i, x := range limited {
		w := full[i]
		if x.device.DeviceId != w.device.DeviceId {
			t.Fatalf("partnership %d: %s, want %s", i, x.device.DeviceId, w.device.DeviceId)
		}
		switch {
		case w.why == pipeline.ReasonCompliant:
			compliant++
			if x.dec != pipeline.Allow || x.why != pipeline.ReasonCompliant {
				t.Errorf("%s on %s: %s (%s) without User.Read.All, %s (%s) with it", x.device.DeviceId,
					x.mailbox.PrimarySmtpAddress, x.dec, x.why, w.dec, w.why)
			}
		case x.why == pipeline.ReasonScopeUnknown:
			unknown++
			if x.dec == pipeline.Block || (x.dec == pipeline.Allow && w.dec != pipeline.Allow) {
				t.Errorf("%s on %s: scope unknown gave %s (full permissions: %s %s)", x.device.DeviceId,
					x.mailbox.PrimarySmtpAddress, x.dec, w.dec, w.why)
			}
		case x.dec != w.dec || x.why != w.why:
			t.Errorf("%s on %s: %s (%s) without User.Read.All, %s (%s) with it", x.device.DeviceId,
				x.mailbox.PrimarySmtpAddress, x.dec, x.why, w.dec, w.why)
		}
	}
	t.Logf("%d compliant partnerships allowed as with full permissions, %d scope-unknown", compliant, unknown)
	if compliant == 0 || unknown == 0 {
		t.Errorf("%d compliant, %d scope-unknown partnerships: the fleet must exercise both", compliant, unknown)
	}
	rows, n := f.eng.Devices(pipeline.DeviceQuery{Reason: pipeline.ReasonCompliant}, 0, 0)
	if n != compliant || len(rows) != n {
		t.Errorf("engine rows with reason Compliant = %d, want %d", n, compliant)
	}
	if _, n := f.eng.Devices(pipeline.DeviceQuery{Reason: pipeline.ReasonScopeUnknown}, 0, 0); n != unknown {
		t.Errorf("engine rows with reason ScopeUnknown = %d, want %d", n, unknown)
	}

	// Nothing changed: a quick sync under the same answer writes nothing.
	before := f.lastSeq()
	if rep := f.sync(pipeline.SyncQuick); rep.Writes != 0 {
		t.Errorf("unchanged quick sync: %d writes", rep.Writes)
	}
	if n := len(f.calls(before, "Set-CASMailbox")); n != 0 {
		t.Errorf("unchanged quick sync: %d Set-CASMailbox", n)
	}
	// User.Read.All granted: the quick sync takes in the users whose
	// scope became known, and Exchange matches the full decision table.
	f.graph.SetGrants(graphsim.Grants{})
	f.sync(pipeline.SyncQuick)
	f.checkAccess()
	if _, n := f.eng.Devices(pipeline.DeviceQuery{Reason: pipeline.ReasonScopeUnknown}, 0, 0); n != 0 {
		t.Errorf("after granting User.Read.All: %d ScopeUnknown rows, want 0", n)
	}
}

// TestScopeMembersWithoutIDs: members that come without an object id
// cannot be joined; the sync stops before any write, degraded, with an
// error naming the permission to check.
func TestScopeMembersWithoutIDs(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.graph.DropMemberIDs(true)
	before := f.lastSeq()
	for _, kind := range []pipeline.SyncKind{pipeline.SyncFull, pipeline.SyncQuick} {
		rep, err := f.eng.Sync(testCtx(t, 2*time.Minute), pipeline.SyncRequest{Kind: kind})
		if !errors.Is(err, pipeline.ErrMDM) || !strings.Contains(err.Error(), mdm.PermMembers) || !strings.Contains(err.Error(), "id: missing") {
			t.Fatalf("%s sync: err = %v, want ErrMDM naming %s", kind, err, mdm.PermMembers)
		}
		if rep.Writes != 0 || !rep.Degraded {
			t.Errorf("%s sync: %d writes, degraded %v", kind, rep.Writes, rep.Degraded)
		}
	}
	if n := len(f.calls(before, "Set-CASMailbox")) + len(f.calls(before, "Set-ActiveSyncOrganizationSettings")) +
		len(f.calls(before, "New-ActiveSyncDeviceAccessRule")); n != 0 {
		t.Fatalf("%d writes reached Exchange", n)
	}
	f.graph.DropMemberIDs(false)
	f.sync(pipeline.SyncFull)
	f.checkAccess()
}

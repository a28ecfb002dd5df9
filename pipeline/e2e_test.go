package pipeline_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/pipeline/notify"
	"github.com/easconnector/easconnector/runspace"
)

// TestFullSync: after a full sync every partnership's effective access in
// Exchange is what the decision table says (administrators' entries
// winning), the platform exceptions exist as device access rules, the
// per-device rows and metrics are there, notices went out once, and a
// second full sync with nothing changed writes nothing at all.
func TestFullSync(t *testing.T) {
	f := newFixture(t, fixtureOptions{orgLevel: exchange.LevelAllow})
	// The org starts at Exchange's default, Allow: tightening it to the
	// policy's Quarantine shuts out every unmanaged device, which the
	// guard must count. Raise the limit for this test; the guard test
	// checks the hold.
	f.eng = f.newEngine(nil)
	before := f.lastSeq()
	rep, err := f.eng.Sync(testCtx(t, 3*time.Minute), pipeline.SyncRequest{Kind: pipeline.SyncFull})
	if !isGuard(err, pipeline.GuardBlastRadius) {
		t.Fatalf("first full sync against an Allow org: err = %v, want the blast radius guard (DefaultAccessLevel tightens)", err)
	}
	if !strings.Contains(err.Error(), "DefaultAccessLevel from Allow to Quarantine") || rep.Held == nil {
		t.Fatalf("guard error = %v, held = %v; want the default level change named and a held plan", err, rep.Held)
	}
	if n := len(f.calls(before, "Set-CASMailbox")) + len(f.calls(before, "Set-ActiveSyncOrganizationSettings")); n != 0 {
		t.Fatalf("the held sync wrote %d times", n)
	}
	// Approving applies the held mailbox writes and then the default.
	rep, err = f.eng.Sync(testCtx(t, 3*time.Minute), pipeline.SyncRequest{ApproveID: rep.Held.ID})
	if err != nil {
		t.Fatalf("approve: %v", err)
	}
	if rep.Guard.Result != pipeline.GuardApproved || rep.Writes == 0 || rep.Failures != 0 {
		t.Fatalf("approve: guard %s, %d writes, %d failures", rep.Guard.Result, rep.Writes, rep.Failures)
	}
	if got := f.sim.Org().Settings().DefaultAccessLevel; got != exchange.LevelQuarantine {
		t.Fatalf("after approval DefaultAccessLevel = %s, want Quarantine", got)
	}

	t.Logf("approval: %d writes, %d changes, refused %d, org %+v", rep.Writes, rep.Changes, len(rep.Refused), rep.Org)
	rep = f.sync(pipeline.SyncFull)
	t.Logf("full sync after approval: %d devices, %d mailboxes, %d writes, counts %v, skipped %v, org %+v", rep.Devices, rep.Mailboxes, rep.Writes, rep.CountsByDecision, rep.Skipped, rep.Org)
	f.checkAccess()
	if rep.Devices != f.sim.Org().DeviceCount() {
		t.Errorf("Report.Devices = %d, want %d", rep.Devices, f.sim.Org().DeviceCount())
	}
	if rep.CountsByDecision[pipeline.Allow] == 0 || rep.CountsByDecision[pipeline.Block] == 0 || rep.CountsByDecision[pipeline.Default] == 0 {
		t.Errorf("CountsByDecision = %v, want every decision represented", rep.CountsByDecision)
	}
	rules := f.sim.Org().Rules()
	if len(rules) != 2 {
		t.Errorf("device access rules = %+v, want the two platform exceptions", rules)
	}
	if got := f.eng.State().OwnedRules(); len(got) != 2 {
		t.Errorf("OwnedRules = %v, want 2", got)
	}

	rows, total := f.eng.Devices(pipeline.DeviceQuery{}, 0, 10)
	if total != rep.Devices || len(rows) != 10 {
		t.Errorf("Devices() = %d rows of %d, want 10 of %d", len(rows), total, rep.Devices)
	}
	blocked, nb := f.eng.Devices(pipeline.DeviceQuery{Decision: pipeline.Block, Reason: pipeline.ReasonNotCompliant}, 0, 0)
	if nb == 0 || len(blocked) != nb {
		t.Errorf("Devices(Block, NotCompliant) = %d rows of %d", len(blocked), nb)
	}
	mine, nm := f.eng.Devices(pipeline.DeviceQuery{User: strings.ToUpper(blocked[0].Mailbox)}, 0, 0)
	if nm == 0 || mine[0].Mailbox != blocked[0].Mailbox {
		t.Errorf("Devices(User %s) = %v", blocked[0].Mailbox, mine)
	}

	// Notices: blocked and quarantined targeted devices, once.
	sent := f.notices.take()
	byState := map[notify.State]int{}
	for _, n := range sent {
		byState[n.State]++
	}
	if byState[notify.StateBlocked] == 0 || byState[notify.StateQuarantined] == 0 {
		t.Errorf("notices by state = %v, want blocked and quarantined ones", byState)
	}

	var buf bytes.Buffer
	f.eng.Metrics().WritePrometheus(&buf)
	for _, want := range []string{
		`easconnector_sync_total{kind="full",result="ok"}`, `easconnector_sync_total{kind="full",result="held"}`,
		`easconnector_sync_guard_trips_total{guard="blast_radius"} 1`, `easconnector_sync_devices{decision="Allow"}`,
		`easconnector_sync_list_entries_written_total{list="allowed",op="add"}`, `easconnector_sync_stage_duration_seconds_bucket{stage="apply"`,
		`easconnector_sync_last_success_timestamp_seconds{kind="full"}`,
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// Nothing changed: a second full sync issues no write cmdlet at all
	// and sends no notice again.
	f.sim.ResetCounters()
	rep = f.sync(pipeline.SyncFull)
	if c := f.sim.Counters(); c.WriteCmdlets != 0 {
		t.Errorf("unchanged full sync: %d write cmdlets (%v), want 0", c.WriteCmdlets, c.Cmdlets)
	}
	if rep.Writes != 0 || len(rep.Plans) != 0 || len(rep.Org) != 0 {
		t.Errorf("unchanged full sync: %d writes, %d plans, org %v", rep.Writes, len(rep.Plans), rep.Org)
	}
	if n := f.notices.take(); len(n) != 0 {
		t.Errorf("unchanged full sync sent %d notices again", len(n))
	}
	checkAllowlisted(t, f.sim)
}

// checkAllowlisted checks that every call exsim received is allowlisted.
func checkAllowlisted(t *testing.T, sim *exsim.Sim) {
	t.Helper()
	for _, c := range sim.CallLog(0, 0) {
		if !runspace.Allowed(c.Cmd) {
			t.Errorf("call %d ran %q, not in the allowlist", c.Seq, c.Cmd)
		}
	}
}

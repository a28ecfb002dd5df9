package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/runspace"
)

// TestMDMFailuresWriteNothing: an MDM that is empty, shrunk, truncated,
// looping, down or without tokens makes the sync change nothing and
// report degraded, and the state is left as it was.
func TestMDMFailuresWriteNothing(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.sync(pipeline.SyncFull)
	f.churn(0.02) // something to do, were the MDM trusted
	statePath := filepath.Join(f.dir, pipeline.StateFile)
	for _, tc := range []struct {
		name   string
		break_ func()
		fix    func()
		guard  pipeline.GuardKind
	}{
		{name: "empty", guard: pipeline.GuardMDMEmpty,
			break_: func() { f.graph.Update(func(p *population.Population) { p.MDM = p.MDM[:0:0] }) }},
		{name: "shrunk", guard: pipeline.GuardMDMShrunk,
			break_: func() {
				f.graph.Update(func(p *population.Population) { p.MDM = p.MDM[: len(p.MDM)/4 : len(p.MDM)/4] })
			}},
		{name: "truncated", break_: func() { f.graph.TruncateNext(1 << 20) }},
		{name: "nextLink loop", break_: func() { f.graph.NextLinkLoop(true) }},
		{name: "outage", break_: func() { f.graph.SetOutage(true) }},
		{name: "token endpoint down", break_: func() { f.graph.RevokeTokens(); f.graph.SetTokenDown(true) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each case starts from the healthy population.
			var keep []population.MDMRecord
			f.graph.Update(func(p *population.Population) { keep = slices.Clone(p.MDM) })
			tc.break_()
			defer func() {
				f.graph.Reset()
				f.graph.Update(func(p *population.Population) { p.MDM = keep })
			}()
			state, err := os.ReadFile(statePath)
			if err != nil {
				t.Fatal(err)
			}
			f.sim.ResetCounters()
			for _, kind := range []pipeline.SyncKind{pipeline.SyncQuick, pipeline.SyncFull} {
				rep, err := f.eng.Sync(testCtx(t, 2*time.Minute), pipeline.SyncRequest{Kind: kind})
				if !errors.Is(err, pipeline.ErrMDM) || !rep.Degraded {
					t.Fatalf("%s sync: err = %v, degraded %v; want ErrMDM and degraded", kind, err, rep.Degraded)
				}
				if tc.guard != "" && !isGuard(err, tc.guard) {
					t.Errorf("%s sync: err = %v, want guard %s", kind, err, tc.guard)
				}
				if rep.Writes != 0 || pipeline.ResultOf(rep, err) != pipeline.ResultDegraded {
					t.Errorf("%s sync: %d writes, result %s", kind, rep.Writes, pipeline.ResultOf(rep, err))
				}
			}
			if c := f.sim.Counters(); c.WriteCmdlets != 0 {
				t.Errorf("%d write cmdlets reached Exchange", c.WriteCmdlets)
			}
			if now, _ := os.ReadFile(statePath); string(now) != string(state) {
				t.Error("the state file changed")
			}
		})
	}
	// Healthy again: the sync goes ahead.
	f.sync(pipeline.SyncFull)
	f.checkAccess()
}

// editOf decodes a list edit as exsim logged it.
func editOf(t *testing.T, v any) runspace.ListEdit {
	t.Helper()
	var e runspace.ListEdit
	if v == nil {
		return e
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("list edit %s: %v", b, err)
	}
	slices.Sort(e.Add)
	slices.Sort(e.Remove)
	return e
}

func sortedEdit(e runspace.ListEdit) runspace.ListEdit {
	e.Add, e.Remove = slices.Sorted(slices.Values(e.Add)), slices.Sorted(slices.Values(e.Remove))
	return e
}

// TestBlastRadiusHoldAndApprove: when the MDM says every device is non
// compliant, the guard stops the sync before any write and keeps the plan;
// approving it applies exactly the kept plan, once.
func TestBlastRadiusHoldAndApprove(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.sync(pipeline.SyncFull)
	f.graph.Update(func(p *population.Population) {
		for i := range p.MDM {
			p.MDM[i].ComplianceState = "noncompliant"
		}
	})
	seq := f.lastSeq()
	rep, err := f.eng.Sync(testCtx(t, 2*time.Minute), pipeline.SyncRequest{Kind: pipeline.SyncFull})
	if !isGuard(err, pipeline.GuardBlastRadius) || rep.Held == nil {
		t.Fatalf("err = %v, held %v; want the blast-radius guard and a held plan", err, rep.Held)
	}
	if n := len(f.calls(seq, "Set-CASMailbox")); n != 0 {
		t.Fatalf("%d Set-CASMailbox calls before the guard", n)
	}
	if rep.Guard.Result != pipeline.GuardHeld || rep.Guard.HeldPlanID != rep.Held.ID || pipeline.ResultOf(rep, err) != pipeline.ResultHeld {
		t.Errorf("Guard = %+v, result %s", rep.Guard, pipeline.ResultOf(rep, err))
	}
	held, err := pipeline.LoadHeldPlan(f.dir, rep.Held.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]runspace.ListEdit{}
	for _, p := range held.Plans {
		want[strings.ToLower(p.Identity)+"/allowed"] = sortedEdit(p.Allowed)
		want[strings.ToLower(p.Identity)+"/blocked"] = sortedEdit(p.Blocked)
	}
	if held.Counts.BlockAdds < 1000*e2eDevices()/5000 {
		t.Errorf("held plan blocks %d devices, want most of them", held.Counts.BlockAdds)
	}

	seq = f.lastSeq()
	rep, err = f.eng.Sync(testCtx(t, 2*time.Minute), pipeline.SyncRequest{ApproveID: held.ID})
	if err != nil || len(rep.Refused) != 0 || rep.Failures != 0 {
		t.Fatalf("approve: err %v, %d refused (first %+v), failures %d", err, len(rep.Refused), rep.Refused[:min(1, len(rep.Refused))], rep.Failures)
	}
	got := map[string]runspace.ListEdit{}
	for _, c := range f.calls(seq, "Set-CASMailbox") {
		id, _ := c.Args["Identity"].(string)
		got[strings.ToLower(id)+"/allowed"] = editOf(t, c.Args["ActiveSyncAllowedDeviceIDs"])
		got[strings.ToLower(id)+"/blocked"] = editOf(t, c.Args["ActiveSyncBlockedDeviceIDs"])
	}
	if !maps.EqualFunc(got, want, func(a, b runspace.ListEdit) bool {
		return slices.Equal(a.Add, b.Add) && slices.Equal(a.Remove, b.Remove)
	}) {
		t.Errorf("approval wrote %d list edits, the held plan has %d; they differ", len(got), len(want))
	}
	if _, err := pipeline.LoadHeldPlan(f.dir, held.ID); !errors.Is(err, pipeline.ErrHeldPlanNotFound) {
		t.Errorf("held plan still there after approval: %v", err)
	}
	if _, err := f.eng.Sync(testCtx(t, time.Minute), pipeline.SyncRequest{ApproveID: held.ID}); !errors.Is(err, pipeline.ErrHeldPlanNotFound) {
		t.Errorf("second approval: err = %v, want ErrHeldPlanNotFound", err)
	}
}

// TestApproveRefusesAdminChanges: entries an administrator contradicted
// after the plan was held are refused, the rest applied.
func TestApproveRefusesAdminChanges(t *testing.T) {
	f := newFixture(t, fixtureOptions{engine: func(o *pipeline.Options) { o.Guard.MaxNewBlocks, o.Guard.MaxNewBlocksRatio = 0, 0 }})
	rep, err := f.eng.Sync(testCtx(t, 2*time.Minute), pipeline.SyncRequest{Kind: pipeline.SyncFull})
	if !isGuard(err, pipeline.GuardBlastRadius) {
		t.Fatalf("err = %v, want the guard (no revocation allowed)", err)
	}
	held, err := pipeline.LoadHeldPlan(f.dir, rep.Held.ID)
	if err != nil {
		t.Fatal(err)
	}
	// The administrator allows one device we meant to block.
	var victim pipeline.PlannedMailbox
	for _, p := range held.Plans {
		if len(p.Blocked.Add) > 0 {
			victim = p
			break
		}
	}
	dev := victim.Blocked.Add[0]
	mb, err := f.sim.Org().Mailbox(victim.Identity)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.sim.Org().EditLists(mb.DistinguishedName, exsim.ListChange{Add: []string{dev}}, exsim.ListChange{}); err != nil {
		t.Fatal(err)
	}
	rep, err = f.eng.Sync(testCtx(t, 2*time.Minute), pipeline.SyncRequest{ApproveID: held.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Refused) != 1 || rep.Refused[0].DeviceID != dev || rep.Refused[0].Op != pipeline.OpAdd {
		t.Fatalf("Refused = %+v, want the block of %s", rep.Refused, dev)
	}
	if st, _ := f.sim.Org().Access(mb.DistinguishedName, dev); st != exchange.AccessAllowed {
		t.Errorf("%s is %s, want Allowed (the administrator's entry wins)", dev, st)
	}
	if rep.Writes < held.Counts.Writes-1 {
		t.Errorf("approval wrote %d mailboxes, the plan had %d", rep.Writes, held.Counts.Writes)
	}
}

// hostileIDs are DeviceIds a phone may report that must never reach a
// cmdlet.
var hostileIDs = []string{
	"'; Remove-Mailbox x -Confirm:$false; '",
	"$(Remove-Mailbox x -Confirm:$false)",
	"Appl`nRemove-Mailbox",
	"Appl\u2018; Remove-Mailbox x; \u2019",
	"Appl\r\nRemove-Mailbox x",
	"Appl\x00Remove",
	strings.Repeat("A", 10<<10),
}

// TestHostileDeviceIDs: devices with hostile ids are skipped and reported,
// every other device of their mailboxes is still handled, and Exchange
// only ever sees allowlisted cmdlets with none of those strings.
func TestHostileDeviceIDs(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	mbs, _ := f.sim.Org().Mailboxes(0, len(hostileIDs))
	for i, id := range hostileIDs {
		if _, err := f.sim.Org().AddDevice(exsim.DeviceSpec{Mailbox: mbs[i].DistinguishedName, DeviceId: id, DeviceType: "iPhone"}); err != nil {
			t.Fatalf("AddDevice(%.40q): %v", id, err)
		}
	}
	rep := f.sync(pipeline.SyncFull)
	if rep.Skipped[pipeline.SkipInvalidDeviceID] != len(hostileIDs) || len(rep.SkippedSamples) != len(hostileIDs) {
		t.Errorf("Skipped = %v (%d samples), want %d invalid device ids", rep.Skipped, len(rep.SkippedSamples), len(hostileIDs))
	}
	for _, s := range rep.SkippedSamples {
		if strings.ContainsAny(s.DeviceID, "\x00\r\n") || len(s.DeviceID) > 200 {
			t.Errorf("skipped sample not quoted and clipped: %q", s.DeviceID)
		}
	}
	f.checkAccess()
	// Exchange keeps them in quarantine; a quick sync knows them already.
	seq := f.lastSeq()
	rep = f.sync(pipeline.SyncQuick)
	if got := f.touched(seq); rep.SkippedTotal() != 0 || len(got.deviceReads) != 0 {
		t.Errorf("quick sync with nothing changed read %d mailboxes again and skipped %v", len(got.deviceReads), rep.Skipped)
	}
	f.churn(0.01)
	f.sync(pipeline.SyncQuick)
	for _, c := range f.sim.CallLog(0, 0) {
		if !runspace.Allowed(c.Cmd) {
			t.Errorf("call %d ran %q, not in the allowlist", c.Seq, c.Cmd)
		}
		args, _ := json.Marshal(c.Args)
		for _, bad := range []string{"Remove-Mailbox", "$(", "`", "\u2018", `\u0000`, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} {
			if strings.Contains(string(args), bad) {
				t.Errorf("call %d (%s) carries %q: %.200s", c.Seq, c.Cmd, bad, args)
			}
		}
	}
}

// TestListenerKilledMidApply: a CAS that dies in the middle of the writes
// costs nothing but time: the sync completes on the other server and
// Exchange ends exactly as after a fault-free run.
func TestListenerKilledMidApply(t *testing.T) {
	reference := newFixture(t, fixtureOptions{})
	reference.sync(pipeline.SyncFull)

	f := newFixture(t, fixtureOptions{listeners: 2})
	killAt := uint64(e2eDevices() / 20)
	stop := make(chan struct{})
	killed := make(chan error, 1)
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				killed <- errors.New("never reached the writes")
				return
			case <-tick.C:
				if f.sim.Counters().Cmdlets["Set-CASMailbox"] >= killAt {
					killed <- f.sim.Kill(0)
					return
				}
			}
		}
	}()
	rep := f.sync(pipeline.SyncFull)
	close(stop)
	if err := <-killed; err != nil {
		t.Fatalf("kill listener 0: %v", err)
	}
	if f.sim.Up(0) {
		t.Fatal("listener 0 still up")
	}
	if rep.Writes == 0 {
		t.Fatal("the sync wrote nothing")
	}
	if !maps.EqualFunc(f.lists(), reference.lists(), func(p, q [2][]string) bool { return slices.Equal(p[0], q[0]) && slices.Equal(p[1], q[1]) }) {
		t.Error("Exchange differs from the fault-free run")
	}
	f.checkAccess()
	f.sim.ResetCounters()
	f.sync(pipeline.SyncFull)
	if c := f.sim.Counters(); c.WriteCmdlets != 0 {
		t.Errorf("a full sync after the failover wrote %d times", c.WriteCmdlets)
	}
}

// TestSyncCancelled: a sync whose context ends (while reading, while
// writing) returns the context's error with no goroutine of its own left,
// records what it wrote, and the next sync finishes the job.
func TestSyncCancelled(t *testing.T) {
	for _, tc := range []struct {
		name string
		when func(exsim.Counters) bool
	}{
		{"reading", func(c exsim.Counters) bool { return c.Cmdlets["Get-MobileDevice"] > 0 }},
		{"writing", func(c exsim.Counters) bool { return c.Cmdlets["Set-CASMailbox"] >= uint64(e2eDevices()/25) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, fixtureOptions{})
			ctx, cancel := context.WithCancel(testCtx(t, 2*time.Minute))
			go func() {
				for !tc.when(f.sim.Counters()) && ctx.Err() == nil {
					time.Sleep(200 * time.Microsecond)
				}
				cancel()
			}()
			before := goroutineIDs()
			rep, err := f.eng.Sync(ctx, pipeline.SyncRequest{Kind: pipeline.SyncFull})
			cancel()
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			checkNoPipelineGoroutines(t, before)
			if pipeline.ResultOf(rep, err) != pipeline.ResultCancelled {
				t.Errorf("result %s, want cancelled", pipeline.ResultOf(rep, err))
			}
			written := f.sim.Counters().Cmdlets["Set-CASMailbox"]
			// Every write the report counts as done reached Exchange; a
			// write cut by the cancellation is counted as failed whether or
			// not its Set-CASMailbox got there (its outcome is unknown, so
			// its ownership is claimed with OwnedIfUncertain).
			if tc.name == "writing" && (written == 0 || int(written) < rep.Writes || int(written) > rep.Writes+rep.Failures) {
				t.Errorf("Exchange saw %d writes, the report %d written and %d failed", written, rep.Writes, rep.Failures)
			}
			f.sync(pipeline.SyncFull)
			f.checkAccess()
		})
	}
}

// TestSyncRunningAndDryRun: a second Sync while one runs is refused; a
// dry run writes nothing (no cmdlet, no state, no held plan) and plans
// exactly what the real sync then writes.
func TestSyncRunningAndDryRun(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	if err := f.sim.SetFaults(exsim.Faults{Slowdown: 300 * time.Millisecond, Cmdlets: []string{"Get-MobileDevice"}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var dry *pipeline.Report
	go func() {
		var err error
		dry, err = f.eng.Sync(testCtx(t, 2*time.Minute), pipeline.SyncRequest{Kind: pipeline.SyncFull, DryRun: true})
		done <- err
	}()
	for f.sim.Counters().Cmdlets["Get-MobileDevice"] == 0 {
		time.Sleep(time.Millisecond)
	}
	if _, err := f.eng.Sync(testCtx(t, time.Minute), pipeline.SyncRequest{Kind: pipeline.SyncQuick}); !errors.Is(err, pipeline.ErrSyncRunning) {
		t.Errorf("concurrent Sync: err = %v, want ErrSyncRunning", err)
	}
	if _, ok := f.eng.Current(); !ok {
		t.Error("Current() reports no running sync")
	}
	if err := <-done; err != nil {
		t.Fatalf("dry run: %v", err)
	}
	_ = f.sim.SetFaults(exsim.Faults{})
	if c := f.sim.Counters(); c.WriteCmdlets != 0 || len(dry.Plans) == 0 || !dry.DryRun {
		t.Fatalf("dry run: %d write cmdlets, %d plans", c.WriteCmdlets, len(dry.Plans))
	}
	if _, err := os.Stat(filepath.Join(f.dir, pipeline.StateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dry run wrote the state: %v", err)
	}
	if len(f.eng.LastResults()) != 0 {
		t.Errorf("dry run recorded in LastResults")
	}
	rep := f.sync(pipeline.SyncFull)
	if len(rep.Plans) != len(dry.Plans) || rep.Writes != len(dry.Plans) {
		t.Errorf("real sync wrote %d (%d plans), the dry run planned %d", rep.Writes, len(rep.Plans), len(dry.Plans))
	}
	for i := range rep.Plans {
		if i < len(dry.Plans) && (rep.Plans[i].Identity != dry.Plans[i].Identity || len(rep.Plans[i].Changes) != len(dry.Plans[i].Changes)) {
			t.Errorf("plan %d: real %s %d changes, dry %s %d changes", i, rep.Plans[i].Identity, len(rep.Plans[i].Changes), dry.Plans[i].Identity, len(dry.Plans[i].Changes))
			break
		}
	}
	if res := f.eng.LastResults(); len(res) != 1 || res[0].ID != rep.ID {
		t.Errorf("LastResults = %+v", res)
	}
}

// TestOrgConfiguration: the full sync asserts the org settings the policy
// declares, creates rules for platform exceptions, leaves an
// administrator's contradicting rule alone (and says so), and removes only
// its own rules when an exception goes away.
func TestOrgConfiguration(t *testing.T) {
	insert := "Enroll your phone at https://portal.example.com"
	f := newFixture(t, fixtureOptions{engine: func(o *pipeline.Options) {
		o.Org.AdminMailRecipients = []string{"eas-admins@contoso.com"}
		o.Org.UserMailInsert = &insert
	}})
	org := f.sim.Org()
	if _, err := org.AddRule(exchange.CharDeviceModel, "Nine Work", exchange.LevelBlock); err != nil {
		t.Fatal(err)
	}
	if _, err := org.AddRule(exchange.CharDeviceType, "BlackBerry", exchange.LevelBlock); err != nil {
		t.Fatal(err)
	}
	rep := f.sync(pipeline.SyncFull)
	s := org.Settings()
	if s.UserMailInsert != insert || !slices.Equal(s.AdminMailRecipients, []string{"eas-admins@contoso.com"}) {
		t.Errorf("org settings = %+v", s)
	}
	if len(rep.OrgConflicts) != 1 || !strings.Contains(rep.OrgConflicts[0], "Nine Work (DeviceModel)") {
		t.Errorf("OrgConflicts = %v, want the administrator's Nine Work rule", rep.OrgConflicts)
	}
	if r, err := org.Rule("Nine Work (DeviceModel)"); err != nil || r.AccessLevel != exchange.LevelBlock {
		t.Errorf("admin rule = %+v, %v; want it untouched (Block)", r, err)
	}
	if r, err := org.Rule("WindowsMail (DeviceType)"); err != nil || r.AccessLevel != exchange.LevelAllow {
		t.Errorf("our rule = %+v, %v", r, err)
	}
	if got := f.eng.State().OwnedRules(); !slices.Equal(got, []string{"WindowsMail (DeviceType)"}) {
		t.Errorf("OwnedRules = %v", got)
	}
	f.checkAccess()

	// The exception goes: our rule goes, the administrators' stay.
	f.policy.PlatformExceptions = f.policy.PlatformExceptions[1:]
	f.eng = f.newEngine(nil)
	f.sync(pipeline.SyncFull)
	var names []string
	for _, r := range org.Rules() {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"BlackBerry (DeviceType)", "Nine Work (DeviceModel)"}) {
		t.Errorf("rules = %v, want only the administrator's", names)
	}
	if got := f.eng.State().OwnedRules(); len(got) != 0 {
		t.Errorf("OwnedRules = %v, want none", got)
	}
	f.checkAccess()
	f.sim.ResetCounters()
	f.sync(pipeline.SyncFull)
	if c := f.sim.Counters(); c.WriteCmdlets != 0 {
		t.Errorf("unchanged full sync wrote %d times: %v", c.WriteCmdlets, c.Cmdlets)
	}
}

// TestRestartEscalatesQuick: after a restart a quick sync has nothing to
// compare with and runs as a full one; the state carries ownership over.
func TestRestartEscalatesQuick(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.sync(pipeline.SyncFull)
	f.eng = f.newEngine(nil)
	if st := f.eng.StateStatus(); st.Origin != pipeline.StateLoaded {
		t.Fatalf("state %s: %s", st.Origin, st.Message)
	}
	f.sim.ResetCounters()
	rep := f.sync(pipeline.SyncQuick)
	if rep.Kind != pipeline.SyncFull || rep.Escalated == "" || rep.Writes != 0 {
		t.Errorf("quick after restart: kind %s (%q), %d writes; want a full sync writing nothing", rep.Kind, rep.Escalated, rep.Writes)
	}
}

// TestApproveRechecksMDM: the MDM reports every phone noncompliant, the
// guard holds the plan, and before the approval most phones turn compliant
// again. The approval must not block them: it applies only the held
// changes today's decision still makes, and reports the rest as dropped.
func TestApproveRechecksMDM(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.sync(pipeline.SyncFull)
	var saved []population.MDMRecord
	f.graph.Update(func(p *population.Population) {
		saved = slices.Clone(p.MDM)
		for i := range p.MDM {
			p.MDM[i].ComplianceState = "noncompliant"
		}
	})
	rep, err := f.eng.Sync(testCtx(t, 2*time.Minute), pipeline.SyncRequest{Kind: pipeline.SyncFull})
	if !isGuard(err, pipeline.GuardBlastRadius) || rep.Held == nil {
		t.Fatalf("err = %v, held %v; want the blast-radius guard and a held plan", err, rep.Held)
	}
	held, err := pipeline.LoadHeldPlan(f.dir, rep.Held.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Everyone but the first mailbox's devices recovers: the MDM is as it
	// was before, except for those.
	victim := held.Plans[0]
	stillBad := map[string]bool{}
	for _, id := range victim.Blocked.Add {
		stillBad[strings.ToLower(id)] = true
	}
	f.graph.Update(func(p *population.Population) {
		for i := range p.MDM {
			if !stillBad[strings.ToLower(p.MDM[i].EASDeviceID)] {
				p.MDM[i].ComplianceState = saved[i].ComplianceState
			}
		}
	})
	seq := f.lastSeq()
	rep, err = f.eng.Sync(testCtx(t, 2*time.Minute), pipeline.SyncRequest{ApproveID: held.ID})
	if err != nil || rep.Failures != 0 {
		t.Fatalf("approve: err %v, failures %d", err, rep.Failures)
	}
	for _, c := range f.calls(seq, "Set-CASMailbox") {
		id, _ := c.Args["Identity"].(string)
		if !strings.EqualFold(id, victim.Identity) {
			t.Errorf("approval wrote mailbox %s, whose phones are compliant again", id)
		}
	}
	if len(rep.Refused) == 0 || !strings.Contains(rep.Refused[0].Why, "now decided") {
		t.Fatalf("Refused = %d entries (first %+v), want the recovered phones' blocks dropped with today's decision", len(rep.Refused), rep.Refused[:min(1, len(rep.Refused))])
	}
	if held.Counts.BlockAdds-len(victim.Blocked.Add) > 0 && len(rep.Refused) < held.Counts.BlockAdds-len(victim.Blocked.Add) {
		t.Errorf("dropped %d entries, want at least the %d blocks of recovered phones", len(rep.Refused), held.Counts.BlockAdds-len(victim.Blocked.Add))
	}
	mb, err := f.sim.Org().Mailbox(victim.Identity)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range victim.Blocked.Add {
		if st, _ := f.sim.Org().Access(mb.DistinguishedName, id); st != exchange.AccessBlocked {
			t.Errorf("%s, still noncompliant, is %s after the approval, want Blocked", id, st)
		}
	}
	f.checkAccess()
}

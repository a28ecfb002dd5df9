package pipeline

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/runspace"
)

func ids(s ...string) []string { return s }

func dd(id string, d Decision, r Reason) DeviceDecision {
	return DeviceDecision{DeviceID: id, Decision: d, Reason: r}
}

func TestPlanMailbox(t *testing.T) {
	type want struct {
		allowed, blocked runspace.ListEdit
		owned            Owned
		conflicts        []Conflict
		invalid          []string
	}
	cases := []struct {
		name string
		in   MailboxInput
		want want
	}{
		{"allow a new device",
			MailboxInput{Devices: []DeviceDecision{dd("ApplA1", Allow, ReasonCompliant)}},
			want{allowed: runspace.ListEdit{Add: ids("ApplA1")}, owned: Owned{Allowed: ids("ApplA1")}}},
		{"block moves our allow entry",
			MailboxInput{Allowed: ids("ApplA1"), Owned: Owned{Allowed: ids("ApplA1")}, Devices: []DeviceDecision{dd("ApplA1", Block, ReasonNotCompliant)}},
			want{allowed: runspace.ListEdit{Remove: ids("ApplA1")}, blocked: runspace.ListEdit{Add: ids("ApplA1")}, owned: Owned{Blocked: ids("ApplA1")}}},
		{"default removes ours and keeps the admin's without conflict",
			MailboxInput{Allowed: ids("ApplA1", "ApplA2"), Owned: Owned{Allowed: ids("ApplA1")},
				Devices: []DeviceDecision{dd("ApplA1", Default, ReasonNotEnrolled), dd("ApplA2", Default, ReasonNotEnrolled)}},
			want{allowed: runspace.ListEdit{Remove: ids("ApplA1")}}},
		{"block against an admin allow: conflict, nothing added",
			MailboxInput{Allowed: ids("ApplA1"), Devices: []DeviceDecision{dd("ApplA1", Block, ReasonNotCompliant)}},
			want{conflicts: []Conflict{{DeviceID: "ApplA1", Decision: Block, Reason: ReasonNotCompliant, AdminAllowed: true}}}},
		{"admin allow added over our block: ours goes, admin wins",
			MailboxInput{Allowed: ids("ApplA1"), Blocked: ids("ApplA1"), Owned: Owned{Blocked: ids("ApplA1")},
				Devices: []DeviceDecision{dd("ApplA1", Block, ReasonNotCompliant)}},
			want{blocked: runspace.ListEdit{Remove: ids("ApplA1")},
				conflicts: []Conflict{{DeviceID: "ApplA1", Decision: Block, Reason: ReasonNotCompliant, AdminAllowed: true}}}},
		{"allow against an admin block: conflict, our allow goes",
			MailboxInput{Allowed: ids("ApplA1"), Blocked: ids("ApplA1"), Owned: Owned{Allowed: ids("ApplA1")},
				Devices: []DeviceDecision{dd("ApplA1", Allow, ReasonCompliant)}},
			want{allowed: runspace.ListEdit{Remove: ids("ApplA1")},
				conflicts: []Conflict{{DeviceID: "ApplA1", Decision: Allow, Reason: ReasonCompliant, AdminBlocked: true}}}},
		{"admin entry that agrees: nothing written, nothing owned",
			MailboxInput{Allowed: ids("ApplA1"), Devices: []DeviceDecision{dd("ApplA1", Allow, ReasonCompliant)}},
			want{}},
		{"adopt makes existing entries ours",
			MailboxInput{Allowed: ids("ApplA1"), Blocked: ids("ApplB1"), Adopt: true,
				Devices: []DeviceDecision{dd("ApplA1", Block, ReasonNotCompliant), dd("ApplB1", Block, ReasonNotCompliant)}},
			want{allowed: runspace.ListEdit{Remove: ids("ApplA1")}, blocked: runspace.ListEdit{Add: ids("ApplA1")},
				owned: Owned{Blocked: ids("ApplA1", "ApplB1")}}},
		{"adopt never takes an invalid entry",
			MailboxInput{Allowed: ids("bad-id"), Adopt: true, Devices: []DeviceDecision{dd("bad-id", Default, ReasonNotTargeted)}},
			want{}},
		{"ids compare case-insensitively, written as Exchange reports them",
			MailboxInput{Allowed: ids("appla1"), Owned: Owned{Allowed: ids("APPLA1")}, Devices: []DeviceDecision{dd("ApplA1", Block, ReasonNotCompliant)}},
			want{allowed: runspace.ListEdit{Remove: ids("appla1")}, blocked: runspace.ListEdit{Add: ids("ApplA1")}, owned: Owned{Blocked: ids("ApplA1")}}},
		{"present in another case is present",
			MailboxInput{Allowed: ids("appla1"), Owned: Owned{Allowed: ids("appla1")}, Devices: []DeviceDecision{dd("ApplA1", Allow, ReasonCompliant)}},
			want{owned: Owned{Allowed: ids("appla1")}}},
		{"every case variant of ours is removed",
			MailboxInput{Allowed: ids("appla1", "APPLA1"), Owned: Owned{Allowed: ids("ApplA1")}, Devices: []DeviceDecision{dd("ApplA1", Default, ReasonNotEnrolled)}},
			want{allowed: runspace.ListEdit{Remove: ids("appla1", "APPLA1")}}},
		{"an exempt user's invalid id is reported, never written",
			MailboxInput{Devices: []DeviceDecision{dd("bad;id", Allow, ReasonExempt)}},
			want{invalid: ids("bad;id")}},
		{"an invalid entry is never removed, even if state claims it",
			MailboxInput{Blocked: ids("a-b"), Owned: Owned{Blocked: ids("a-b")}, Devices: []DeviceDecision{dd("a-b", Default, ReasonNotTargeted)}},
			want{}},
		{"no change keeps entries and ownership",
			MailboxInput{Blocked: ids("ApplA1"), Owned: Owned{Blocked: ids("ApplA1")}, Complete: true, Devices: []DeviceDecision{dd("ApplA1", NoChange, ReasonDisabled)}},
			want{owned: Owned{Blocked: ids("ApplA1")}}},
		{"partnership gone in a complete plan: ours removed, admin's kept",
			MailboxInput{Allowed: ids("ApplOld", "ApplAdm"), Owned: Owned{Allowed: ids("ApplOld")}, Complete: true},
			want{allowed: runspace.ListEdit{Remove: ids("ApplOld")}}},
		{"partnership not seen in a partial plan: kept",
			MailboxInput{Allowed: ids("ApplOld"), Owned: Owned{Allowed: ids("ApplOld")}},
			want{owned: Owned{Allowed: ids("ApplOld")}}},
		{"owned but absent: ownership dropped, nothing re-added for no decision",
			MailboxInput{Owned: Owned{Allowed: ids("ApplGone")}, Complete: true},
			want{}},
		{"owned but removed by the admin: re-added for an allow",
			MailboxInput{Owned: Owned{Allowed: ids("ApplA1")}, Devices: []DeviceDecision{dd("ApplA1", Allow, ReasonCompliant)}},
			want{allowed: runspace.ListEdit{Add: ids("ApplA1")}, owned: Owned{Allowed: ids("ApplA1")}}},
		{"two partnerships one id: the stricter decision wins",
			MailboxInput{Devices: []DeviceDecision{dd("ApplA1", Allow, ReasonCompliant), dd("appla1", Block, ReasonNotCompliant)}},
			want{blocked: runspace.ListEdit{Add: ids("ApplA1")}, owned: Owned{Blocked: ids("ApplA1")}}},
		{"ours in both lists: allow keeps the allow",
			MailboxInput{Allowed: ids("ApplA1"), Blocked: ids("ApplA1"), Owned: Owned{Allowed: ids("ApplA1"), Blocked: ids("ApplA1")},
				Devices: []DeviceDecision{dd("ApplA1", Allow, ReasonCompliant)}},
			want{blocked: runspace.ListEdit{Remove: ids("ApplA1")}, owned: Owned{Allowed: ids("ApplA1")}}},
		{"output sorted by device id",
			MailboxInput{Devices: []DeviceDecision{dd("ZZ9", Block, ReasonNotCompliant), dd("aa1", Block, ReasonNotCompliant), dd("MM5", Block, ReasonNotCompliant)}},
			want{blocked: runspace.ListEdit{Add: ids("aa1", "MM5", "ZZ9")}, owned: Owned{Blocked: ids("aa1", "MM5", "ZZ9")}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.in.Identity = "contoso.com/Users/Alice"
			got := PlanMailbox(c.in)
			check := func(what string, got, want any) {
				t.Helper()
				if !reflect.DeepEqual(got, want) {
					t.Errorf("PlanMailbox() %s = %+v, want %+v", what, got, want)
				}
			}
			check("allowed", got.Allowed, c.want.allowed)
			check("blocked", got.Blocked, c.want.blocked)
			check("new owned", got.NewOwned, c.want.owned)
			check("conflicts", got.Conflicts, c.want.conflicts)
			check("invalid", got.Invalid, c.want.invalid)
			if got.Identity != c.in.Identity {
				t.Errorf("Identity = %q", got.Identity)
			}
			if got.Empty() != (len(got.Changes) == 0) {
				t.Errorf("Empty() = %v with %d changes", got.Empty(), len(got.Changes))
			}
			checkPlan(t, c.in, got)
		})
	}
}

func TestPlanChangesAndAudit(t *testing.T) {
	p := PlanMailbox(MailboxInput{
		Identity: "mb1", Allowed: ids("ApplA1", "ApplAdm"), Blocked: ids("ApplB1"),
		Owned: Owned{Allowed: ids("ApplA1"), Blocked: ids("ApplB1")},
		Devices: []DeviceDecision{
			dd("ApplA1", Block, ReasonNotCompliant), dd("ApplB1", Allow, ReasonCompliant), dd("ApplAdm", Block, ReasonNotCompliant),
		},
	})
	want := []Change{
		{DeviceID: "ApplA1", List: ListAllowed, Op: OpRemove, Decision: Block, Reason: ReasonNotCompliant},
		{DeviceID: "ApplA1", List: ListBlocked, Op: OpAdd, Decision: Block, Reason: ReasonNotCompliant},
		{DeviceID: "ApplB1", List: ListAllowed, Op: OpAdd, Decision: Allow, Reason: ReasonCompliant},
		{DeviceID: "ApplB1", List: ListBlocked, Op: OpRemove, Decision: Allow, Reason: ReasonCompliant},
	}
	if !reflect.DeepEqual(p.Changes, want) {
		t.Errorf("Changes = %+v\nwant %+v", p.Changes, want)
	}
	if len(p.Conflicts) != 1 || p.Conflicts[0].DeviceID != "ApplAdm" {
		t.Errorf("Conflicts = %+v, want one for ApplAdm", p.Conflicts)
	}
	audit := p.AuditEntries("sync-1", now)
	if len(audit) != 4 || audit[0].From != Present || audit[0].To != Absent || audit[1].From != Absent || audit[1].To != Present ||
		audit[0].Mailbox != "mb1" || audit[0].SyncID != "sync-1" || !audit[0].Time.Equal(now) {
		t.Errorf("AuditEntries = %+v", audit)
	}
	c := CountPlans([]MailboxPlan{p, PlanMailbox(MailboxInput{Identity: "mb2"})})
	wantCounts := PlanCounts{Mailboxes: 2, Writes: 1, AllowAdds: 1, AllowRemoves: 1, BlockAdds: 1, BlockRemoves: 1, Revocations: 1, Conflicts: 1}
	if c != wantCounts {
		t.Errorf("CountPlans() = %+v, want %+v", c, wantCounts)
	}
}

func TestOwnedIfUncertain(t *testing.T) {
	in := MailboxInput{
		Allowed: ids("ApplA1"), Owned: Owned{Allowed: ids("ApplA1")},
		Devices: []DeviceDecision{dd("ApplA1", Block, ReasonNotCompliant), dd("ApplC1", Allow, ReasonCompliant)},
	}
	p := PlanMailbox(in)
	got := p.OwnedIfUncertain()
	want := Owned{Allowed: ids("ApplA1", "ApplC1"), Blocked: ids("ApplA1")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("OwnedIfUncertain() = %+v, want %+v", got, want)
	}
	// Whether the write happened or not, planning with the uncertain
	// ownership converges: nothing of ours becomes the administrator's.
	for _, applied := range []bool{false, true} {
		next := in
		next.Owned = got
		if applied {
			next.Allowed, next.Blocked = apply(in.Allowed, p.Allowed), apply(in.Blocked, p.Blocked)
		}
		p2 := PlanMailbox(next)
		if len(p2.Conflicts) != 0 {
			t.Errorf("applied=%v: conflicts %+v after an uncertain write", applied, p2.Conflicts)
		}
		next.Allowed, next.Blocked, next.Owned = apply(next.Allowed, p2.Allowed), apply(next.Blocked, p2.Blocked), p2.NewOwned
		if p3 := PlanMailbox(next); !p3.Empty() {
			t.Errorf("applied=%v: third plan not empty: %+v", applied, p3)
		}
	}
}

// apply edits a list the way Set-CASMailbox @{Add=…;Remove=…} does.
func apply(list []string, e runspace.ListEdit) []string {
	var out []string
	for _, id := range list {
		if !slices.Contains(e.Remove, id) {
			out = append(out, id)
		}
	}
	return append(out, e.Add...)
}

// checkPlan asserts the plan invariants: shared by the table, the property
// test and FuzzPlan.
func checkPlan(t testing.TB, in MailboxInput, p MailboxPlan) {
	t.Helper()
	owned := func(list []string) map[string]bool {
		m := map[string]bool{}
		for _, id := range list {
			m[foldID(id)] = true
		}
		return m
	}
	ownA, ownB := owned(in.Owned.Allowed), owned(in.Owned.Blocked)
	dec := map[string]Decision{}
	devs := map[string][]string{}
	for _, d := range in.Devices {
		k := foldID(d.DeviceID)
		if cur, ok := dec[k]; !ok || decisionRank(d.Decision) > decisionRank(cur) {
			dec[k] = d.Decision
		}
		devs[k] = append(devs[k], d.DeviceID)
	}
	for _, e := range []struct {
		name    string
		edit    runspace.ListEdit
		current []string
		own     map[string]bool
		want    Decision
	}{{"allowed", p.Allowed, in.Allowed, ownA, Allow}, {"blocked", p.Blocked, in.Blocked, ownB, Block}} {
		seen := map[string]bool{}
		for _, id := range slices.Concat(e.edit.Add, e.edit.Remove) {
			if !exchange.ValidDeviceID(id) {
				t.Fatalf("%s edit writes invalid id %q", e.name, id)
			}
			if seen[id] {
				t.Fatalf("%s edit names %q twice", e.name, id)
			}
			seen[id] = true
		}
		for _, id := range e.edit.Remove {
			if !slices.Contains(e.current, id) {
				t.Fatalf("%s: removes %q, which is not in the list %q", e.name, id, e.current)
			}
			if !e.own[foldID(id)] && !in.Adopt {
				t.Fatalf("%s: removes administrator entry %q (owned %v)", e.name, id, e.own)
			}
			if d, ok := dec[foldID(id)]; ok && d == NoChange {
				t.Fatalf("%s: removes %q whose decision is NoChange", e.name, id)
			}
			if _, ok := dec[foldID(id)]; !ok && !in.Complete {
				t.Fatalf("%s: removes %q, which has no decision, from a partial plan", e.name, id)
			}
		}
		for _, id := range e.edit.Add {
			k := foldID(id)
			if slices.ContainsFunc(e.current, func(c string) bool { return foldID(c) == k }) {
				t.Fatalf("%s: adds %q, already present in %q", e.name, id, e.current)
			}
			if dec[k] != e.want || !slices.Contains(devs[k], id) {
				t.Fatalf("%s: adds %q with decision %q", e.name, id, dec[k])
			}
		}
	}
	for _, a := range p.Allowed.Add {
		if slices.ContainsFunc(p.Blocked.Add, func(b string) bool { return foldID(b) == foldID(a) }) {
			t.Fatalf("%q added to both lists", a)
		}
	}
	// After the write: every device is where its decision puts it, unless
	// the administrator's entry says otherwise.
	allowed, blocked := apply(in.Allowed, p.Allowed), apply(in.Blocked, p.Blocked)
	has := func(list []string, k string) bool {
		return slices.ContainsFunc(list, func(c string) bool { return foldID(c) == k })
	}
	adminHas := func(list []string, own map[string]bool, k string) bool {
		return slices.ContainsFunc(list, func(c string) bool {
			return foldID(c) == k && (!exchange.ValidDeviceID(c) || (!own[k] && !in.Adopt))
		})
	}
	conflicts := map[string]bool{}
	for _, c := range p.Conflicts {
		conflicts[foldID(c.DeviceID)] = true
	}
	for k, d := range dec {
		adminA, adminB := adminHas(in.Allowed, ownA, k), adminHas(in.Blocked, ownB, k)
		valid := slices.ContainsFunc(devs[k], exchange.ValidDeviceID)
		wantConflict := (d == Allow && adminB) || (d == Block && adminA)
		if conflicts[k] != wantConflict {
			t.Fatalf("device %s decision %s adminA=%v adminB=%v: conflict reported %v", k, d, adminA, adminB, conflicts[k])
		}
		switch {
		case wantConflict:
			if (d == Allow && has(allowed, k) && !adminA) || (d == Block && has(blocked, k) && !adminB) {
				t.Fatalf("device %s: our %s entry kept against the administrator's", k, d)
			}
		case d == Allow && valid:
			if !has(allowed, k) || has(blocked, k) {
				t.Fatalf("device %s Allow: after the write allowed=%q blocked=%q", k, allowed, blocked)
			}
		case d == Block && valid:
			if !has(blocked, k) || (has(allowed, k) && !adminA) {
				t.Fatalf("device %s Block: after the write allowed=%q blocked=%q", k, allowed, blocked)
			}
		case d == Default:
			if (has(allowed, k) && !adminA) || (has(blocked, k) && !adminB) {
				t.Fatalf("device %s Default: our entry left, allowed=%q blocked=%q", k, allowed, blocked)
			}
		}
	}
	// NewOwned names only entries present after the write.
	for _, id := range p.NewOwned.Allowed {
		if !slices.Contains(allowed, id) {
			t.Fatalf("NewOwned.Allowed has %q, absent after the write %q", id, allowed)
		}
	}
	for _, id := range p.NewOwned.Blocked {
		if !slices.Contains(blocked, id) {
			t.Fatalf("NewOwned.Blocked has %q, absent after the write %q", id, blocked)
		}
	}
	// Idempotence: planning again against the written lists writes nothing,
	// with or without adoption still open.
	for _, adopt := range []bool{false, in.Adopt} {
		next := in
		next.Allowed, next.Blocked, next.Owned, next.Adopt = allowed, blocked, p.NewOwned, adopt
		if p2 := PlanMailbox(next); !p2.Empty() {
			t.Fatalf("second plan (adopt=%v) not empty: allowed %+v blocked %+v\nfirst %+v\ninput %+v", adopt, p2.Allowed, p2.Blocked, p, in)
		}
	}
}

// planGen draws mailbox inputs over a small pool of ids (case variants,
// invalid ids) so that collisions between lists, ownership and decisions
// are frequent.
type planGen struct{ pick func(n int) int }

var (
	planPool  = []string{"ApplA1", "appla1", "APPLA1", "ApplB2", "applb2", "Andr3", "NINE4", "WP5", "bad-id", "a b", "\u212a", "k", "K", ""}
	planDecs  = []Decision{Allow, Block, Default, NoChange, "Bogus"}
	planReasn = []Reason{ReasonCompliant, ReasonNotCompliant, ReasonNotEnrolled, ReasonExempt, ReasonDisabled}
)

func (g planGen) subset(max int) []string {
	var out []string
	for range g.pick(max + 1) {
		out = append(out, planPool[g.pick(len(planPool))])
	}
	return out
}

func (g planGen) input() MailboxInput {
	in := MailboxInput{
		Identity: "mb",
		Allowed:  g.subset(5),
		Blocked:  g.subset(4),
		Owned:    Owned{Allowed: g.subset(4), Blocked: g.subset(4)},
		Complete: g.pick(2) == 0,
		Adopt:    g.pick(4) == 0,
	}
	for range g.pick(6) {
		in.Devices = append(in.Devices, DeviceDecision{
			DeviceID: planPool[g.pick(len(planPool))], Decision: planDecs[g.pick(len(planDecs))], Reason: planReasn[g.pick(len(planReasn))],
		})
	}
	return in
}

func TestPlanProperties(t *testing.T) {
	n := 50_000
	if testing.Short() {
		n = 20_000
	}
	const seed = 1234
	r := rand.New(rand.NewPCG(seed, 2))
	g := planGen{r.IntN}
	var writes, conflicts int
	for i := range n {
		in := g.input()
		p := PlanMailbox(in)
		if i == 0 {
			t.Logf("seed %d", seed)
		}
		checkPlan(t, in, p)
		if !p.Empty() {
			writes++
		}
		conflicts += len(p.Conflicts)
	}
	if writes < n/4 || conflicts < n/20 {
		t.Errorf("generator too tame: %d writes, %d conflicts in %d plans", writes, conflicts, n)
	}
}

// TestDisabledWritesNothing: a disabled policy decides NoChange for every
// device, and a plan of NoChange decisions writes nothing.
func TestDisabledWritesNothing(t *testing.T) {
	p := testPolicy()
	p.Enabled = false
	g := seeded(99)
	pg := planGen{g.pick}
	for range 5000 {
		in := pg.input()
		in.Complete = false // a disabled policy never plans orphan removal
		for i := range in.Devices {
			di := g.input()
			di.Device.DeviceId = in.Devices[i].DeviceID
			in.Devices[i].Decision, in.Devices[i].Reason = Decide(p, di, now)
		}
		if plan := PlanMailbox(in); !plan.Empty() {
			t.Fatalf("disabled policy writes: %+v for %+v", plan, in)
		}
	}
}

// FuzzPlan: random lists, ownership and decisions from fuzz bytes; the plan
// invariants hold (administrator entries never removed, nothing invalid
// written, idempotence).
func FuzzPlan(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3, 0, 1, 2, 2, 3, 4, 1, 0, 2, 5, 6, 1, 1, 1, 0, 3, 0, 0, 1, 2, 3, 1, 0, 1})
	f.Add([]byte("\x05\x08\x09\x0a\x0b\x0c\x02\x0a\x0b\x02\x00\x01\x00\x00\x03\x00\x01\x01\x02\x03"))
	f.Fuzz(func(t *testing.T, data []byte) {
		in := planGen{fromBytes(data).pick}.input()
		checkPlan(t, in, PlanMailbox(in))
	})
}

func BenchmarkPlanMailbox(b *testing.B) {
	in := MailboxInput{
		Identity: "contoso.com/Users/Alice", Allowed: ids("ApplA1", "ApplA2"), Blocked: ids("ApplB1"),
		Owned: Owned{Allowed: ids("ApplA1")},
		Devices: []DeviceDecision{
			dd("ApplA1", Block, ReasonNotCompliant), dd("ApplA2", Allow, ReasonCompliant), dd("ApplC3", Allow, ReasonCompliant),
		},
	}
	b.ReportAllocs()
	for b.Loop() {
		PlanMailbox(in)
	}
}

func BenchmarkDecide(b *testing.B) {
	p := testPolicy()
	p.PlatformExceptions = []PlatformException{{Characteristic: exchange.CharDeviceType, Value: "Android", Action: ActionBlock}}
	in := targeted()
	b.ReportAllocs()
	for b.Loop() {
		Decide(p, in, now)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "devices/s")
}

func ExamplePlanMailbox() {
	p := PlanMailbox(MailboxInput{
		Identity: "contoso.com/Users/Alice",
		Allowed:  []string{"ApplOLD", "ApplADMIN"}, // ApplADMIN: put there by an administrator
		Owned:    Owned{Allowed: []string{"ApplOLD"}},
		Devices: []DeviceDecision{
			{DeviceID: "ApplOLD", Decision: Block, Reason: ReasonNotCompliant},
			{DeviceID: "ApplADMIN", Decision: Block, Reason: ReasonNotCompliant},
		},
	})
	fmt.Printf("allowed %+v\nblocked %+v\nconflicts %d\n", p.Allowed, p.Blocked, len(p.Conflicts))
	// Output:
	// allowed {Add:[] Remove:[ApplOLD]}
	// blocked {Add:[ApplOLD] Remove:[]}
	// conflicts 1
}

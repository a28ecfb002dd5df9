package pipeline

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/mdm"
)

var now = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

var alice = User{PrimarySmtp: "Alice.Anderson1@contoso.com", UPN: "alice.anderson1@contoso.com"}

func testPolicy() *Policy {
	return &Policy{
		Enabled:        true,
		IncludedGroups: []string{"inc"},
		ExcludedGroups: []string{"exc"},
		Unmanaged:      ActionBlock,
		Untargeted:     UntargetedAuto,
		Grace:          24 * time.Hour,
		StaleAfter:     30 * 24 * time.Hour,
		OrgDefault:     exchange.LevelQuarantine,
	}
}

func iphone(id string) exchange.MobileDevice {
	return exchange.MobileDevice{
		DeviceId: id, DeviceType: "iPhone", DeviceModel: "iPhone15C2",
		DeviceOS: "iOS 17.5.1 21F90", DeviceUserAgent: "Apple-iPhone15C2/2105.90",
	}
}

func record(c mdm.Compliance) *mdm.Record {
	return &mdm.Record{
		ID: "mdm-1", EASDeviceID: "applabc123def456", UserPrincipalName: alice.UPN, Email: alice.PrimarySmtp,
		Compliance: c, EnrolledAt: now.Add(-10 * 24 * time.Hour), LastSyncAt: now.Add(-time.Hour), Platform: "iOS",
	}
}

// targeted is a targeted user's enrolled, compliant iPhone: row 7.
func targeted() Input {
	return Input{Device: iphone("ApplABC123DEF456"), User: alice, Scope: Membership{Included: true}, Record: record(mdm.ComplianceCompliant), SameUser: true}
}

func TestDecideTable(t *testing.T) {
	type tc struct {
		name   string
		policy func(*Policy)
		input  func(*Input)
		want   Decision
		reason Reason
	}
	blockIPhone := func(p *Policy) {
		p.PlatformExceptions = []PlatformException{{Characteristic: exchange.CharDeviceType, Value: "iphone", Action: ActionBlock}}
	}
	cases := []tc{
		// Row 1.
		{"1 disabled", func(p *Policy) { p.Enabled = false }, nil, NoChange, ReasonDisabled},
		{"1 disabled beats excluded and noncompliant", func(p *Policy) { p.Enabled = false },
			func(in *Input) { in.Scope.Excluded = true; in.Record.Compliance = mdm.ComplianceNoncompliant }, NoChange, ReasonDisabled},
		// Row 2.
		{"2 excluded wins over included, auto with org quarantine allows", nil,
			func(in *Input) { in.Scope.Excluded = true; in.Record.Compliance = mdm.ComplianceNoncompliant }, Allow, ReasonExempt},
		{"2 excluded, auto with org allow leaves to default", func(p *Policy) { p.OrgDefault = exchange.LevelAllow },
			func(in *Input) { in.Scope.Excluded = true }, Default, ReasonExempt},
		{"2 excluded, untargeted default", func(p *Policy) { p.Untargeted = UntargetedDefault },
			func(in *Input) { in.Scope.Excluded = true }, Default, ReasonExempt},
		{"2 excluded comes before the DeviceId check", nil,
			func(in *Input) { in.Scope.Excluded = true; in.Device.DeviceId = "bad-id" }, Allow, ReasonExempt},
		// Row 3.
		{"3 not included, auto with org block allows", func(p *Policy) { p.OrgDefault = exchange.LevelBlock },
			func(in *Input) { in.Scope.Included = false }, Allow, ReasonNotTargeted},
		{"3 not included, untargeted allow in an allow org", func(p *Policy) { p.OrgDefault = exchange.LevelAllow; p.Untargeted = UntargetedAllow },
			func(in *Input) { in.Scope.Included = false }, Allow, ReasonNotTargeted},
		// Row 3a: scope unknown. The org default is Quarantine, so the
		// untargeted action (auto) is Allow.
		{"3a unknown scope, compliant device of the user: both ways Allow", nil,
			func(in *Input) { in.Scope = Membership{Unknown: true} }, Allow, ReasonScopeUnknown},
		{"3a unknown scope, unenrolled: Default, not the untargeted Allow", nil,
			func(in *Input) { in.Scope = Membership{Unknown: true}; in.Record = nil; in.SameUser = false }, Default, ReasonScopeUnknown},
		{"3a unknown scope, noncompliant: Default, never Block", nil,
			func(in *Input) {
				in.Scope = Membership{Included: true, Unknown: true}
				in.Record.Compliance = mdm.ComplianceNoncompliant
			}, Default, ReasonScopeUnknown},
		{"3a unknown scope, unmanaged allow: both ways Allow", func(p *Policy) { p.Unmanaged = ActionAllow },
			func(in *Input) { in.Scope = Membership{Unknown: true}; in.Record = nil; in.SameUser = false }, Allow, ReasonScopeUnknown},
		{"3a unknown scope, untargeted default, unmanaged block: Default", func(p *Policy) { p.Unmanaged = ActionBlock; p.Untargeted = UntargetedDefault },
			func(in *Input) { in.Scope = Membership{Unknown: true}; in.Record = nil; in.SameUser = false }, Default, ReasonScopeUnknown},
		{"3a unknown scope, invalid DeviceId changes nothing", nil,
			func(in *Input) { in.Scope = Membership{Unknown: true}; in.Device.DeviceId = "bad-id" }, NoChange, ReasonInvalidDeviceID},
		{"3 known not included beats unknown", nil,
			func(in *Input) { in.Scope = Membership{} }, Allow, ReasonNotTargeted},
		// Row 4.
		{"4 invalid DeviceId", nil, func(in *Input) { in.Device.DeviceId = "abc;Remove-Mailbox" }, NoChange, ReasonInvalidDeviceID},
		{"4 empty DeviceId", nil, func(in *Input) { in.Device.DeviceId = "" }, NoChange, ReasonInvalidDeviceID},
		// Row 5.
		{"5 override allows compliant despite a block exception", func(p *Policy) { blockIPhone(p); p.OverrideDefaultRule = true }, nil, Allow, ReasonCompliant},
		{"5 override does not help another user's record", func(p *Policy) { blockIPhone(p); p.OverrideDefaultRule = true },
			func(in *Input) { in.SameUser = false }, Block, ReasonPlatformRule},
		// Row 6.
		{"6 block exception without override", blockIPhone, nil, Block, ReasonPlatformRule},
		{"6 allow exception for an unmanaged device", func(p *Policy) {
			p.PlatformExceptions = []PlatformException{{Characteristic: exchange.CharUserAgent, Value: "Apple-iPhone15C2/2105.90", Action: ActionAllow}}
		}, func(in *Input) { in.Record = nil; in.SameUser = false }, Allow, ReasonPlatformRule},
		{"6 quarantine exception leaves to the org default", func(p *Policy) {
			p.PlatformExceptions = []PlatformException{{Characteristic: exchange.CharDeviceOS, Value: "iOS 17.5.1 21F90", Action: ActionQuarantine}}
		}, func(in *Input) { in.Record.Compliance = mdm.ComplianceNoncompliant }, Default, ReasonPlatformRule},
		{"6 first matching exception wins", func(p *Policy) {
			p.PlatformExceptions = []PlatformException{
				{Characteristic: exchange.CharDeviceModel, Value: "Pixel 8", Action: ActionAllow},
				{Characteristic: exchange.CharDeviceModel, Value: "IPHONE15C2", Action: ActionDefault},
				{Characteristic: exchange.CharDeviceType, Value: "iPhone", Action: ActionBlock},
			}
		}, nil, Default, ReasonPlatformRule},
		// Row 7.
		{"7 compliant, same user", nil, nil, Allow, ReasonCompliant},
		{"7 in grace period counts as compliant", nil, func(in *Input) { in.Record.Compliance = mdm.ComplianceInGracePeriod }, Allow, ReasonCompliant},
		{"7 non-matching exception does not apply", func(p *Policy) {
			p.PlatformExceptions = []PlatformException{{Characteristic: exchange.CharDeviceType, Value: "Android", Action: ActionBlock}}
		}, nil, Allow, ReasonCompliant},
		// Row 8.
		{"8 noncompliant", nil, func(in *Input) { in.Record.Compliance = mdm.ComplianceNoncompliant }, Block, ReasonNotCompliant},
		{"8 conflict", func(p *Policy) { p.Unmanaged = ActionAllow }, func(in *Input) { in.Record.Compliance = mdm.ComplianceConflict }, Block, ReasonNotCompliant},
		{"8 error, another user's record", nil, func(in *Input) { in.Record.Compliance = mdm.ComplianceError; in.SameUser = false }, Block, ReasonNotCompliant},
		// Row 9.
		{"9 unknown after grace takes the unmanaged action", nil, func(in *Input) { in.Record.Compliance = mdm.ComplianceUnknown }, Block, ReasonPendingEvaluation},
		{"9 unknown within grace is never blocked", nil, func(in *Input) {
			in.Record.Compliance = mdm.ComplianceUnknown
			in.Record.EnrolledAt = now.Add(-time.Hour)
		}, Default, ReasonPendingEvaluation},
		{"9 unknown enrolment time counts as within grace", nil, func(in *Input) {
			in.Record.Compliance = mdm.ComplianceUnknown
			in.Record.EnrolledAt = time.Time{}
		}, Default, ReasonPendingEvaluation},
		{"9 unrecognised compliance counts as unknown", func(p *Policy) { p.Unmanaged = ActionAllow },
			func(in *Input) { in.Record.Compliance = mdm.ComplianceConfigManager }, Allow, ReasonPendingEvaluation},
		{"9 grace off blocks at once", func(p *Policy) { p.Grace = 0 }, func(in *Input) {
			in.Record.Compliance = mdm.ComplianceUnknown
			in.Record.EnrolledAt = now.Add(-time.Minute)
		}, Block, ReasonPendingEvaluation},
		// Row 10.
		{"10 stale compliant record", nil, func(in *Input) { in.Record.LastSyncAt = now.Add(-31 * 24 * time.Hour) }, Block, ReasonStale},
		{"10 stale noncompliant record, unmanaged default", func(p *Policy) { p.Unmanaged = ActionDefault }, func(in *Input) {
			in.Record.Compliance = mdm.ComplianceNoncompliant
			in.Record.LastSyncAt = now.Add(-60 * 24 * time.Hour)
		}, Default, ReasonStale},
		{"10 stale_after 0 never stale", func(p *Policy) { p.StaleAfter = 0 }, func(in *Input) { in.Record.LastSyncAt = now.Add(-365 * 24 * time.Hour) }, Allow, ReasonCompliant},
		{"10 unknown last check-in is not stale", nil, func(in *Input) { in.Record.LastSyncAt = time.Time{} }, Allow, ReasonCompliant},
		// Row 11.
		{"11 compliant record of another user", nil, func(in *Input) { in.SameUser = false }, Block, ReasonUserMismatch},
		{"11 unmanaged quarantine", func(p *Policy) { p.Unmanaged = ActionQuarantine }, func(in *Input) { in.SameUser = false }, Default, ReasonUserMismatch},
		// Row 12.
		{"12 no record", nil, func(in *Input) { in.Record = nil; in.SameUser = false }, Block, ReasonNotEnrolled},
		{"12 no record, unmanaged default", func(p *Policy) { p.Unmanaged = ActionDefault }, func(in *Input) { in.Record = nil }, Default, ReasonNotEnrolled},
		{"12 no record, unmanaged allow", func(p *Policy) { p.Unmanaged = ActionAllow; p.OrgDefault = exchange.LevelAllow }, func(in *Input) { in.Record = nil }, Allow, ReasonNotEnrolled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := testPolicy()
			if c.policy != nil {
				c.policy(p)
			}
			if err := p.Validate(); err != nil {
				t.Fatalf("test policy invalid: %v", err)
			}
			in := targeted()
			if c.input != nil {
				c.input(&in)
			}
			d, r := Decide(p, in, now)
			if d != c.want || r != c.reason {
				t.Errorf("Decide() = %s, %s; want %s, %s", d, r, c.want, c.reason)
			}
		})
	}
}

func TestDecideNilPolicyIsDisabled(t *testing.T) {
	if d, r := Decide(nil, targeted(), now); d != NoChange || r != ReasonDisabled {
		t.Errorf("Decide(nil) = %s, %s; want NoChange, Disabled", d, r)
	}
}

func TestDecideDoesNotAllocate(t *testing.T) {
	p := testPolicy()
	p.PlatformExceptions = []PlatformException{{Characteristic: exchange.CharDeviceType, Value: "Android", Action: ActionBlock}}
	in := targeted()
	in.Record.Compliance = mdm.ComplianceUnknown
	if n := testing.AllocsPerRun(100, func() { Decide(p, in, now) }); n != 0 {
		t.Errorf("Decide allocates %v times per call, want 0", n)
	}
}

func TestPolicyValidate(t *testing.T) {
	f := func(name string, mut func(*Policy), wantErr string) {
		t.Helper()
		p := testPolicy()
		mut(p)
		err := p.Validate()
		switch {
		case wantErr == "" && err != nil:
			t.Errorf("%s: Validate() = %v, want nil", name, err)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Errorf("%s: Validate() = %v, want an error containing %q", name, err, wantErr)
		}
	}
	f("valid", func(*Policy) {}, "")
	f("defaults", func(p *Policy) { *p = DefaultPolicy() }, "")
	f("enabled without included groups", func(p *Policy) { p.IncludedGroups = nil }, "included_groups")
	f("disabled without groups", func(p *Policy) { p.Enabled = false; p.IncludedGroups = nil }, "")
	f("blank excluded group", func(p *Policy) { p.ExcludedGroups = []string{"a", " "} }, "excluded_groups[1]")
	f("org default", func(p *Policy) { p.OrgDefault = "Deny" }, "org_default")
	f("unmanaged unknown", func(p *Policy) { p.Unmanaged = "wipe" }, "unmanaged")
	f("quarantine needs an org default of quarantine", func(p *Policy) { p.Unmanaged = ActionQuarantine; p.OrgDefault = exchange.LevelBlock }, "unmanaged: quarantine leaves")
	f("untargeted block is not a thing", func(p *Policy) { p.Untargeted = "block" }, "untargeted")
	f("negative grace", func(p *Policy) { p.Grace = -time.Second }, "grace")
	f("negative stale", func(p *Policy) { p.StaleAfter = -time.Second }, "stale_after")
	f("exception characteristic", func(p *Policy) {
		p.PlatformExceptions = []PlatformException{{Characteristic: exchange.CharXMSWLHeader, Value: "x", Action: ActionBlock}}
	}, "platform_exceptions[0].characteristic")
	f("exception value", func(p *Policy) {
		p.PlatformExceptions = []PlatformException{{Characteristic: exchange.CharDeviceType, Value: "", Action: ActionBlock}}
	}, "platform_exceptions[0].value")
	f("exception action required", func(p *Policy) {
		p.PlatformExceptions = []PlatformException{{Characteristic: exchange.CharDeviceType, Value: "Nine"}}
	}, "platform_exceptions[0].action")
}

func TestParse(t *testing.T) {
	if a, err := ParseAction("Quarantine"); err != nil || a != ActionQuarantine {
		t.Errorf("ParseAction(Quarantine) = %q, %v", a, err)
	}
	if _, err := ParseAction("wipe"); err == nil {
		t.Error("ParseAction(wipe) = nil error")
	}
	if u, err := ParseUntargeted("AUTO"); err != nil || u != UntargetedAuto {
		t.Errorf("ParseUntargeted(AUTO) = %q, %v", u, err)
	}
	if _, err := ParseUntargeted("block"); err == nil {
		t.Error("ParseUntargeted(block) = nil error: exempt users must never be blocked")
	}
}

func TestMatchUser(t *testing.T) {
	f := func(rec *mdm.Record, u User, want bool) {
		t.Helper()
		if got := MatchUser(rec, u); got != want {
			t.Errorf("MatchUser(%+v, %+v) = %v, want %v", rec, u, got, want)
		}
	}
	f(nil, alice, false)
	f(&mdm.Record{UserPrincipalName: "ALICE.ANDERSON1@contoso.com"}, alice, true)
	f(&mdm.Record{UserPrincipalName: "alice.anderson1@contoso.com"}, User{PrimarySmtp: "Alice.Anderson1@Contoso.com"}, true)
	f(&mdm.Record{UserPrincipalName: "a@corp.local", Email: "SMTP:x@contoso.com; alice.anderson1@contoso.com"}, alice, true)
	f(&mdm.Record{UserPrincipalName: "bob@contoso.com", Email: "bob@contoso.com"}, alice, false)
	f(&mdm.Record{}, alice, false)
	f(&mdm.Record{UserPrincipalName: "alice.anderson1@contoso.com"}, User{}, false)
	// By object id: a record whose UPN predates a rename is still the user's.
	const aliceID = "6f1e2d3c-4b5a-4978-8877-665544332211"
	f(&mdm.Record{UserID: aliceID, UserPrincipalName: "alice.old@contoso.com"}, User{PrimarySmtp: alice.PrimarySmtp, ID: strings.ToUpper(aliceID)}, true)
	f(&mdm.Record{UserID: "7f1e2d3c-4b5a-4978-8877-665544332211", UserPrincipalName: "bob@contoso.com"}, User{PrimarySmtp: alice.PrimarySmtp, ID: aliceID}, false)
	f(&mdm.Record{UserID: aliceID}, User{PrimarySmtp: alice.PrimarySmtp}, false)
}

// decideGen draws random valid policies and inputs from a seeded source, so
// that a failing property names a reproducible seed.
type decideGen struct{ pick func(n int) int }

// seeded draws choices from a seeded PRNG.
func seeded(seed uint64) decideGen {
	r := rand.New(rand.NewPCG(seed, 1))
	return decideGen{r.IntN}
}

// fromBytes replays fuzz bytes as choices, so that the fuzzer's mutations
// steer the generator; it chooses 0 once the bytes are used up.
func fromBytes(b []byte) decideGen {
	return decideGen{func(n int) int {
		if len(b) == 0 {
			return 0
		}
		c := int(b[0])
		b = b[1:]
		return c % n
	}}
}

var (
	genActions     = []Action{ActionDefault, ActionAllow, ActionBlock, ActionQuarantine, ""}
	genUntargeted  = []Untargeted{UntargetedAuto, UntargetedAllow, UntargetedDefault, ""}
	genLevels      = []exchange.AccessLevel{exchange.LevelAllow, exchange.LevelBlock, exchange.LevelQuarantine}
	genCompliances = []mdm.Compliance{mdm.ComplianceUnknown, mdm.ComplianceCompliant, mdm.ComplianceNoncompliant,
		mdm.ComplianceConflict, mdm.ComplianceError, mdm.ComplianceInGracePeriod, mdm.ComplianceConfigManager, "retired"}
	genChars = []exchange.Characteristic{exchange.CharDeviceType, exchange.CharDeviceModel, exchange.CharDeviceOS, exchange.CharUserAgent}
	genVals  = []string{"iPhone", "Android", "Pixel 8", "iOS 17.5.1 21F90", "Nine/4.9.4", "SM-S918B"}
	genIDs   = []string{"ApplABC123DEF456", "androidc1234567890AB", "NINEXYZ", "bad-id", "", "a b", "WP12345"}
	genHours = []int{0, 1, 12, 23, 25, 24 * 7, 24 * 29, 24 * 31, 24 * 400}
)

func (g decideGen) policy() *Policy {
	for range 100 {
		p := &Policy{
			Enabled:             g.pick(8) != 0,
			IncludedGroups:      []string{"inc"},
			ExcludedGroups:      []string{"exc"},
			OverrideDefaultRule: g.pick(2) == 0,
			Unmanaged:           genActions[g.pick(len(genActions))],
			Untargeted:          genUntargeted[g.pick(len(genUntargeted))],
			Grace:               time.Duration(genHours[g.pick(len(genHours))]) * time.Hour,
			StaleAfter:          time.Duration(genHours[g.pick(len(genHours))]) * time.Hour,
			OrgDefault:          genLevels[g.pick(len(genLevels))],
		}
		for range g.pick(4) {
			p.PlatformExceptions = append(p.PlatformExceptions, PlatformException{
				Characteristic: genChars[g.pick(len(genChars))], Value: genVals[g.pick(len(genVals))],
				Action: genActions[g.pick(len(genActions)-1)],
			})
		}
		if p.Validate() == nil {
			return p
		}
	}
	return testPolicy() // an exhausted byteSource draws the same invalid policy
}

func (g decideGen) input() Input {
	devs := []exchange.MobileDevice{
		iphone(""),
		{DeviceType: "Android", DeviceModel: "SM-S918B", DeviceOS: "Android 14.0.0", DeviceUserAgent: "Android-SAMSUNG-SM-S918B/101.140000"},
		{DeviceType: "Nine", DeviceModel: "Nine Work", DeviceOS: "Android 13", DeviceUserAgent: "Nine/4.9.4"},
	}
	in := Input{Device: devs[g.pick(len(devs))], User: alice}
	in.Device.DeviceId = genIDs[g.pick(len(genIDs))]
	in.Scope = Membership{Excluded: g.pick(5) == 0, Included: g.pick(5) != 0}
	if !in.Scope.Excluded && g.pick(6) == 0 {
		in.Scope.Unknown = true // Scope.Of never sets Unknown with Excluded
	}
	if g.pick(4) != 0 {
		ago := func() time.Time {
			if g.pick(10) == 0 {
				return time.Time{}
			}
			return now.Add(-time.Duration(genHours[g.pick(len(genHours))]) * time.Hour)
		}
		in.Record = &mdm.Record{
			ID: "r", EASDeviceID: in.Device.DeviceId, UserPrincipalName: alice.UPN,
			Compliance: genCompliances[g.pick(len(genCompliances))], EnrolledAt: ago(), LastSyncAt: ago(),
		}
		if g.pick(4) == 0 {
			in.Record.UserPrincipalName = "mallory@contoso.com"
		}
		in.SameUser = MatchUser(in.Record, alice)
	}
	return in
}

// checkDecide asserts the properties every decision must have; it is shared
// by the property test and the fuzz target.
func checkDecide(t testing.TB, p *Policy, in Input, d Decision, r Reason) {
	t.Helper()
	if !p.Enabled {
		if d != NoChange || r != ReasonDisabled {
			t.Fatalf("disabled policy: Decide() = %s, %s; want NoChange, Disabled", d, r)
		}
		return
	}
	if d == NoChange && r != ReasonInvalidDeviceID {
		t.Fatalf("enabled policy: Decide() = NoChange, %s; only an invalid DeviceId changes nothing", r)
	}
	if in.Scope.Excluded && (d == Block || r != ReasonExempt) {
		t.Fatalf("excluded user: Decide() = %s, %s; want Exempt and never Block", d, r)
	}
	if in.Scope.Unknown && !in.Scope.Excluded {
		// Row 3a: never Block, Allow only when targeted and untargeted
		// alike would allow; the reason says why.
		known := in
		known.Scope = Membership{Included: true}
		td, _ := Decide(p, known, now)
		switch {
		case d == NoChange && r == ReasonInvalidDeviceID:
		case r != ReasonScopeUnknown:
			t.Fatalf("unknown scope: Decide() = %s, %s; want ScopeUnknown", d, r)
		case d == Block:
			t.Fatalf("unknown scope blocked: %s, %s", d, r)
		case d == Allow && (td != Allow || p.untargeted() != Allow):
			t.Fatalf("unknown scope allowed although targeted gives %s and untargeted %s", td, p.untargeted())
		case d != Default && d != td:
			t.Fatalf("unknown scope: Decide() = %s, want %s or Default", d, td)
		}
		return
	}
	if !in.Scope.Included && d == Block {
		t.Fatalf("untargeted user blocked: %s, %s", d, r)
	}
	if (in.Scope.Excluded || !in.Scope.Included) != (r == ReasonExempt || r == ReasonNotTargeted) {
		t.Fatalf("scope %+v gave reason %s", in.Scope, r)
	}
	if in.Scope.Excluded || !in.Scope.Included {
		return
	}
	if !exchange.ValidDeviceID(in.Device.DeviceId) {
		if d != NoChange || r != ReasonInvalidDeviceID {
			t.Fatalf("invalid DeviceId %q: Decide() = %s, %s", in.Device.DeviceId, d, r)
		}
		return
	}
	rec := in.Record
	fresh := rec != nil && (p.StaleAfter == 0 || rec.LastSyncAt.IsZero() || now.Sub(rec.LastSyncAt) <= p.StaleAfter)
	var exc *PlatformException
	for i := range p.PlatformExceptions {
		if p.PlatformExceptions[i].matches(&in.Device) {
			exc = &p.PlatformExceptions[i]
			break
		}
	}
	// A compliant, enrolled, targeted device of the same user is allowed,
	// except that without override a matching platform exception decides.
	if fresh && compliant(rec.Compliance) && in.SameUser {
		want := Allow
		if exc != nil && !p.OverrideDefaultRule {
			want = exc.Action.decision()
		}
		if d != want {
			t.Fatalf("compliant device of its user: Decide() = %s, %s; want %s (override %v, exception %+v)", d, r, want, p.OverrideDefaultRule, exc)
		}
	}
	if d == Block && r == ReasonPendingEvaluation && p.Grace > 0 && (rec.EnrolledAt.IsZero() || now.Sub(rec.EnrolledAt) < p.Grace) {
		t.Fatalf("blocked within grace: enrolled %v, grace %v", rec.EnrolledAt, p.Grace)
	}
	if d == Block && r != ReasonNotCompliant && r != ReasonPlatformRule && p.Unmanaged != ActionBlock {
		t.Fatalf("Block for %s although unmanaged = %q", r, p.Unmanaged)
	}
	if r == ReasonNotCompliant && !(fresh && notCompliant(rec.Compliance)) {
		t.Fatalf("NotCompliant for record %+v", rec)
	}
}

func TestDecideProperties(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 20_000
	}
	const seed = 20250301
	g := seeded(seed)
	seen := map[Reason]int{}
	for range n {
		p, in := g.policy(), g.input()
		d, r := Decide(p, in, now)
		checkDecide(t, p, in, d, r)
		seen[r]++
	}
	// The generator must reach every row, or the properties prove little.
	for _, r := range Reasons {
		if r == ReasonAdminOverride || r == ReasonPartnershipGone {
			continue // plan reasons
		}
		if seen[r] == 0 {
			t.Errorf("generator never reached reason %s (seed %d)", r, seed)
		}
	}
}

// FuzzDecide drives the policy and the input from fuzz bytes.
func FuzzDecide(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x01\x02\x03\x04\x05\x06\x07\x08 compliant device of alice"))
	f.Fuzz(func(t *testing.T, data []byte) {
		g := fromBytes(data)
		p, in := g.policy(), g.input()
		d, r := Decide(p, in, now)
		checkDecide(t, p, in, d, r)
	})
}

package exsim

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/population"
)

func TestAccessABQ(t *testing.T) {
	type rule struct {
		ch    exchange.Characteristic
		query string
		level exchange.AccessLevel
	}
	cases := []struct {
		name      string
		mailbox   string // identity used for the query
		device    string
		def       exchange.AccessLevel
		allowed   []string
		blocked   []string
		disabled  bool
		rules     []rule
		wantState exchange.AccessState
		wantWhy   exchange.AccessReason
		wantRule  string
	}{
		{name: "org default allow", device: "ApplAAAA1111", wantState: exchange.AccessAllowed, wantWhy: exchange.ReasonGlobal},
		{name: "org default quarantine", device: "ApplAAAA1111", def: exchange.LevelQuarantine,
			wantState: exchange.AccessQuarantined, wantWhy: exchange.ReasonGlobal},
		{name: "org default block", device: "ApplAAAA1111", def: exchange.LevelBlock,
			wantState: exchange.AccessBlocked, wantWhy: exchange.ReasonGlobal},
		{name: "personal allow beats default block", device: "ApplAAAA1111", def: exchange.LevelBlock,
			allowed: []string{"ApplAAAA1111"}, wantState: exchange.AccessAllowed, wantWhy: exchange.ReasonIndividual},
		{name: "list entries compare case-insensitively", device: "applaaaa1111", blocked: []string{"APPLAAAA1111"},
			wantState: exchange.AccessBlocked, wantWhy: exchange.ReasonIndividual},
		{name: "query id case does not matter", device: "APPLAAAA1111", allowed: []string{"ApplAAAA1111"}, def: exchange.LevelBlock,
			wantState: exchange.AccessAllowed, wantWhy: exchange.ReasonIndividual},
		{name: "EAS disabled beats personal allow", device: "ApplAAAA1111", allowed: []string{"ApplAAAA1111"}, disabled: true,
			wantState: exchange.AccessBlocked, wantWhy: exchange.ReasonPolicy},
		{name: "personal allow beats block rule", device: "ApplAAAA1111", allowed: []string{"ApplAAAA1111"},
			rules:     []rule{{exchange.CharDeviceType, "iPhone", exchange.LevelBlock}},
			wantState: exchange.AccessAllowed, wantWhy: exchange.ReasonIndividual},
		{name: "rule beats org default", device: "ApplAAAA1111", def: exchange.LevelQuarantine,
			rules:     []rule{{exchange.CharDeviceModel, "iPhone15C2", exchange.LevelAllow}},
			wantState: exchange.AccessAllowed, wantWhy: exchange.ReasonDeviceRule, wantRule: "iPhone15C2 (DeviceModel)"},
		// Rules are tried by characteristic: UserAgent, DeviceOS,
		// DeviceModel, DeviceType; the first match wins whatever its level.
		{name: "device OS rule before device model and type rules", device: "ApplAAAA1111",
			rules: []rule{{exchange.CharDeviceType, "iPhone", exchange.LevelAllow}, {exchange.CharDeviceOS, "iOS 17.5.1 21F90", exchange.LevelBlock},
				{exchange.CharDeviceModel, "iPhone15C2", exchange.LevelQuarantine}},
			wantState: exchange.AccessBlocked, wantWhy: exchange.ReasonDeviceRule, wantRule: "iOS 17.5.1 21F90 (DeviceOS)"},
		{name: "user agent rule before device type rule", device: "ApplAAAA1111",
			rules:     []rule{{exchange.CharDeviceType, "iPhone", exchange.LevelAllow}, {exchange.CharUserAgent, "Apple-iPhone15C2/2105.90", exchange.LevelQuarantine}},
			wantState: exchange.AccessQuarantined, wantWhy: exchange.ReasonDeviceRule, wantRule: "Apple-iPhone15C2/2105.90 (UserAgent)"},
		{name: "allowing user agent rule wins over blocking device type rule", device: "ApplAAAA1111",
			rules:     []rule{{exchange.CharDeviceType, "iPhone", exchange.LevelBlock}, {exchange.CharUserAgent, "Apple-iPhone15C2/2105.90", exchange.LevelAllow}},
			wantState: exchange.AccessAllowed, wantWhy: exchange.ReasonDeviceRule, wantRule: "Apple-iPhone15C2/2105.90 (UserAgent)"},
		{name: "allowing device model rule wins over quarantining device type rule", device: "ApplAAAA1111", def: exchange.LevelBlock,
			rules:     []rule{{exchange.CharDeviceType, "iPhone", exchange.LevelQuarantine}, {exchange.CharDeviceModel, "iPhone15C2", exchange.LevelAllow}},
			wantState: exchange.AccessAllowed, wantWhy: exchange.ReasonDeviceRule, wantRule: "iPhone15C2 (DeviceModel)"},
		{name: "blocking device model rule wins over allowing device type rule", device: "ApplAAAA1111",
			rules:     []rule{{exchange.CharDeviceType, "iPhone", exchange.LevelAllow}, {exchange.CharDeviceModel, "iPhone15C2", exchange.LevelBlock}},
			wantState: exchange.AccessBlocked, wantWhy: exchange.ReasonDeviceRule, wantRule: "iPhone15C2 (DeviceModel)"},
		{name: "XMSWLHeader rules take no part", device: "ApplAAAA1111", def: exchange.LevelQuarantine,
			rules:     []rule{{exchange.CharXMSWLHeader, "x", exchange.LevelAllow}},
			wantState: exchange.AccessQuarantined, wantWhy: exchange.ReasonGlobal},
		{name: "rule matches whole value only", device: "ApplAAAA1111", def: exchange.LevelBlock,
			rules:     []rule{{exchange.CharDeviceType, "iPh", exchange.LevelAllow}, {exchange.CharDeviceOS, "iOS*", exchange.LevelAllow}},
			wantState: exchange.AccessBlocked, wantWhy: exchange.ReasonGlobal},
		{name: "rule matches case-insensitively", device: "ApplAAAA1111", def: exchange.LevelBlock,
			rules:     []rule{{exchange.CharDeviceType, "IPHONE", exchange.LevelAllow}},
			wantState: exchange.AccessAllowed, wantWhy: exchange.ReasonDeviceRule, wantRule: "IPHONE (DeviceType)"},
		{name: "rules cannot match a device without partnership", device: "UNKNOWN42", def: exchange.LevelQuarantine,
			rules:     []rule{{exchange.CharDeviceType, "iPhone", exchange.LevelAllow}},
			wantState: exchange.AccessQuarantined, wantWhy: exchange.ReasonGlobal},
		{name: "personal lists apply without partnership", device: "UNKNOWN42", blocked: []string{"unknown42"},
			wantState: exchange.AccessBlocked, wantWhy: exchange.ReasonIndividual},
		{name: "mailbox by DN", mailbox: "CN=Alice Anderson,OU=Users,DC=contoso,DC=com", device: "androidc1234",
			def: exchange.LevelBlock, wantState: exchange.AccessBlocked, wantWhy: exchange.ReasonGlobal},
		{name: "mailbox by SMTP address", mailbox: "ALICE@contoso.com", device: "androidc1234", allowed: []string{"ANDROIDC1234"},
			wantState: exchange.AccessAllowed, wantWhy: exchange.ReasonIndividual},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Options{})
			smallOrg(t, s)
			o := s.Org()
			if tc.def != "" {
				st := o.Settings()
				st.DefaultAccessLevel = tc.def
				if err := o.SetOrg(st); err != nil {
					t.Fatal(err)
				}
			}
			if err := o.SetLists("alice", tc.allowed, tc.blocked); err != nil {
				t.Fatal(err)
			}
			if tc.disabled {
				if err := o.SetActiveSyncEnabled("alice", false); err != nil {
					t.Fatal(err)
				}
			}
			for _, r := range tc.rules {
				if _, err := o.AddRule(r.ch, r.query, r.level); err != nil {
					t.Fatal(err)
				}
			}
			mb := tc.mailbox
			if mb == "" {
				mb = "Alice Anderson"
			}
			v, err := o.Evaluate(mb, tc.device)
			if err != nil {
				t.Fatalf("Evaluate: %v", err)
			}
			if v.State != tc.wantState || v.Reason != tc.wantWhy || v.Rule != tc.wantRule {
				t.Fatalf("Evaluate(%s, %s) = %s/%s rule %q, want %s/%s rule %q", mb, tc.device, v.State, v.Reason, v.Rule,
					tc.wantState, tc.wantWhy, tc.wantRule)
			}
			// Get-MobileDevice reports the state stored at the last
			// request: after the phone connects, the same state.
			if v.Partnership && !tc.disabled {
				o.ContactAll()
				devs, _, err := o.Devices(mb, 0, 0)
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range devs {
					if strings.EqualFold(d.DeviceId, tc.device) && (d.DeviceAccessState != tc.wantState || d.DeviceAccessStateReason != tc.wantWhy) {
						t.Fatalf("device %s state = %s/%s, want %s/%s", d.DeviceId, d.DeviceAccessState, d.DeviceAccessStateReason, tc.wantState, tc.wantWhy)
					}
				}
			}
		})
	}
}

func TestAccessDiscoveryAndUnknown(t *testing.T) {
	s := newSim(t, Options{})
	smallOrg(t, s)
	o := s.Org()
	// Without device access rules there is nothing to discover: the
	// default level applies (Exchange enters discovery only when rules
	// exist).
	if st, why := o.Access("peggy", "ApplPEGGY"); st != exchange.AccessAllowed || why != exchange.ReasonGlobal {
		t.Fatalf("discovery device without rules = %s/%s, want Allowed/Global", st, why)
	}
	if _, err := o.AddRule(exchange.CharDeviceType, "Nine", exchange.LevelBlock); err != nil {
		t.Fatal(err)
	}
	if st, why := o.Access("peggy", "ApplPEGGY"); st != exchange.AccessDeviceDiscovery || why != exchange.ReasonDeviceRule {
		t.Fatalf("discovery device = %s/%s, want DeviceDiscovery/DeviceRule", st, why)
	}
	if err := o.SetLists("peggy", []string{"applpeggy"}, nil); err != nil {
		t.Fatal(err)
	}
	if st, why := o.Access("peggy", "ApplPEGGY"); st != exchange.AccessAllowed || why != exchange.ReasonIndividual {
		t.Fatalf("discovery device with allow entry = %s/%s, want Allowed/Individual", st, why)
	}
	done := false
	if _, err := o.UpdateDevice(`Peggy O'Brien\ExchangeActiveSyncDevices\iPhone§ApplPEGGY`, DevicePatch{Discovery: &done}); err != nil {
		t.Fatal(err)
	}
	if st, why := o.Access("nobody", "X"); st != exchange.AccessUnknown || why != exchange.ReasonUnknown {
		t.Fatalf("unknown mailbox = %s/%s, want Unknown/Unknown", st, why)
	}
	if st, _ := o.Access("dan", "ApplDAN"); st != exchange.AccessBlocked {
		t.Fatalf("EAS-disabled mailbox device = %s, want Blocked", st)
	}
}

// TestStoredState: Get-MobileDevice reports the state stored at the
// device's last request; Set-CASMailbox writes the state of listed devices
// at once and Unknown for a device whose entry it removed; rule and default
// changes reach a device at its next request only.
func TestStoredState(t *testing.T) {
	s := newSim(t, Options{})
	smallOrg(t, s)
	o := s.Org()
	const alice = "Alice Anderson"
	stored := func(id string) (exchange.AccessState, exchange.AccessReason) {
		t.Helper()
		devs, _, err := o.Devices(alice, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range devs {
			if strings.EqualFold(d.DeviceId, id) {
				return d.DeviceAccessState, d.DeviceAccessStateReason
			}
		}
		t.Fatalf("no device %s", id)
		return "", ""
	}
	f := func(step string, wantStored, wantLive exchange.AccessState, wantWhy exchange.AccessReason) {
		t.Helper()
		st, why := stored("ApplAAAA1111")
		live, _ := o.Access(alice, "ApplAAAA1111")
		if st != wantStored || why != wantWhy || live != wantLive {
			t.Errorf("%s: stored %s/%s live %s, want stored %s/%s live %s", step, st, why, live, wantStored, wantWhy, wantLive)
		}
	}
	f("first request", exchange.AccessAllowed, exchange.AccessAllowed, exchange.ReasonGlobal)
	if err := o.SetOrg(exchange.OrgSettings{DefaultAccessLevel: exchange.LevelQuarantine}); err != nil {
		t.Fatal(err)
	}
	f("default changed, phone not connected yet", exchange.AccessAllowed, exchange.AccessQuarantined, exchange.ReasonGlobal)
	if _, err := o.Contact(`Alice Anderson\ExchangeActiveSyncDevices\iPhone§ApplAAAA1111`); err != nil {
		t.Fatal(err)
	}
	f("after the phone's request", exchange.AccessQuarantined, exchange.AccessQuarantined, exchange.ReasonGlobal)
	if err := o.EditLists(alice, ListChange{Add: []string{"applaaaa1111"}}, ListChange{}); err != nil {
		t.Fatal(err)
	}
	f("allowed by Set-CASMailbox", exchange.AccessAllowed, exchange.AccessAllowed, exchange.ReasonIndividual)
	if err := o.EditLists(alice, ListChange{}, ListChange{Add: []string{"ApplAAAA1111"}}); err != nil {
		t.Fatal(err)
	}
	f("blocked by Set-CASMailbox", exchange.AccessBlocked, exchange.AccessBlocked, exchange.ReasonIndividual)
	if mb, _ := o.Mailbox(alice); len(mb.ActiveSyncAllowedDeviceIDs) != 0 {
		t.Errorf("adding to the blocked list left the allowed list %v", mb.ActiveSyncAllowedDeviceIDs)
	}
	if err := o.EditLists(alice, ListChange{}, ListChange{Remove: []string{"ApplAAAA1111"}}); err != nil {
		t.Fatal(err)
	}
	f("entry removed", exchange.AccessUnknown, exchange.AccessQuarantined, exchange.ReasonUnknown)
	o.ContactAll()
	f("after the next request", exchange.AccessQuarantined, exchange.AccessQuarantined, exchange.ReasonGlobal)

	// A disabled mailbox: requests are refused before ABQ, nothing changes.
	if err := o.SetActiveSyncEnabled(alice, false); err != nil {
		t.Fatal(err)
	}
	o.ContactAll()
	f("ActiveSync disabled", exchange.AccessQuarantined, exchange.AccessBlocked, exchange.ReasonGlobal)
}

// TestListsDisjoint: Set-CASMailbox keeps the lists disjoint and refuses a
// call that would leave an id in both.
func TestListsDisjoint(t *testing.T) {
	s := newSim(t, Options{})
	smallOrg(t, s)
	o := s.Org()
	lists := func() ([]string, []string) {
		mb, err := o.Mailbox("alice")
		if err != nil {
			t.Fatal(err)
		}
		return mb.ActiveSyncAllowedDeviceIDs, mb.ActiveSyncBlockedDeviceIDs
	}
	if err := o.SetLists("alice", []string{"A1", "A2"}, []string{"B1"}); err != nil {
		t.Fatal(err)
	}
	if err := o.EditLists("alice", ListChange{Add: []string{"b1"}}, ListChange{}); err != nil {
		t.Fatal(err)
	}
	if a, b := lists(); !slices.Equal(a, []string{"A1", "A2", "b1"}) || len(b) != 0 {
		t.Fatalf("after adding B1 to allowed: %v / %v", a, b)
	}
	if err := o.EditLists("alice", ListChange{}, ListChange{Set: true, Values: []string{"A2", "X"}}); err != nil {
		t.Fatal(err)
	}
	if a, b := lists(); !slices.Equal(a, []string{"A1", "b1"}) || !slices.Equal(b, []string{"A2", "X"}) {
		t.Fatalf("after setting blocked: %v / %v", a, b)
	}
	err := o.EditLists("alice", ListChange{Add: []string{"Z"}}, ListChange{Add: []string{"z"}})
	var oe *orgError
	if !errors.As(err, &oe) || oe.typ != typeIDInBothLists || oe.category != "InvalidData" ||
		oe.msg != "DeviceID Z is included in both the ActiveSyncAllowedDeviceIDs list and the ActiveSyncBlockedDeviceIDs list. It should be removed from one of the lists using the Set-CASMailbox cmdlet." {
		t.Fatalf("id in both lists: %v", err)
	}
	if a, b := lists(); !slices.Equal(a, []string{"A1", "b1"}) || !slices.Equal(b, []string{"A2", "X"}) {
		t.Fatalf("a refused call changed the lists: %v / %v", a, b)
	}
	// Moving an id from one list to the other in one call is fine.
	if err := o.EditLists("alice", ListChange{Remove: []string{"A1"}}, ListChange{Add: []string{"A1"}}); err != nil {
		t.Fatal(err)
	}
}

func TestListChangeApply(t *testing.T) {
	f := func(name string, cur []string, c ListChange, want []string) {
		t.Helper()
		if got := c.apply(cur); !slices.Equal(got, want) {
			t.Errorf("%s: apply(%v) = %v, want %v", name, cur, got, want)
		}
	}
	f("add new", []string{"A"}, ListChange{Add: []string{"B"}}, []string{"A", "B"})
	f("add present (other case) is no change", []string{"Abc"}, ListChange{Add: []string{"ABC"}}, []string{"Abc"})
	f("remove absent is no change", []string{"A"}, ListChange{Remove: []string{"Z"}}, []string{"A"})
	f("remove case-insensitive", []string{"A", "bb"}, ListChange{Remove: []string{"BB"}}, []string{"A"})
	f("add then remove", nil, ListChange{Add: []string{"X", "Y"}, Remove: []string{"x"}}, []string{"Y"})
	f("replace dedupes", []string{"A"}, ListChange{Set: true, Values: []string{"B", "b", "C"}}, []string{"B", "C"})
	f("clear", []string{"A"}, ListChange{Set: true}, nil)
	f("zero change", []string{"A"}, ListChange{}, []string{"A"})
}

func TestMailboxIdentityForms(t *testing.T) {
	s := newSim(t, Options{})
	smallOrg(t, s)
	o := s.Org()
	want, err := o.Mailbox("peggy")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"Peggy O'Brien", "PEGGY", `CONTOSO\peggy`, "peggy@contoso.com", want.Guid,
		"CN=Peggy O'Brien,OU=Users,DC=contoso,DC=com", "contoso.com/Users/Peggy O'Brien"} {
		got, err := o.Mailbox(id)
		if err != nil || got.Guid != want.Guid {
			t.Errorf("Mailbox(%q) = %v, %v; want %s", id, got.Name, err, want.Name)
		}
	}
	if _, err := o.AddMailbox(MailboxSpec{Name: "bob", SamAccountName: "bob2"}); err != nil {
		t.Fatal(err)
	}
	_, err = o.Mailbox("bob")
	var oe *orgError
	if !errors.As(err, &oe) || oe.typ != typeAmbiguous {
		t.Fatalf("Mailbox(bob) with two matches: %v, want ambiguous", err)
	}
	_, err = o.Mailbox("nobody")
	if !errors.As(err, &oe) || oe.msg != "The operation couldn't be performed because object 'nobody' couldn't be found on 'dc01.contoso.com'." {
		t.Fatalf("Mailbox(nobody): %v", err)
	}
}

func TestLoadPopulation(t *testing.T) {
	p := genPopulation(300)
	s := newSim(t, Options{Population: p})
	o := s.Org()
	mbs, total := o.Mailboxes(0, 0)
	if total != len(p.Mailboxes) || len(mbs) != total {
		t.Fatalf("mailboxes = %d, want %d", total, len(p.Mailboxes))
	}
	if o.DeviceCount() != len(p.Devices) {
		t.Fatalf("devices = %d, want %d", o.DeviceCount(), len(p.Devices))
	}
	for i, pd := range p.Devices[:50] {
		mb := p.Mailboxes[pd.Mailbox]
		devs, _, err := o.Devices(mb.Guid, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		for _, d := range devs {
			if d.DeviceId == pd.DeviceID && d.DeviceType == pd.Type {
				found = true
				if d.DistinguishedName != p.DeviceDN(pd) {
					t.Errorf("device %d DN = %q, want population's %q", i, d.DistinguishedName, p.DeviceDN(pd))
				}
				if want := mb.Name + `\ExchangeActiveSyncDevices\` + pd.Type + "§" + pd.DeviceID; d.Identity != want {
					t.Errorf("device %d Identity = %q, want %q", i, d.Identity, want)
				}
				if !d.FirstSyncTime.Equal(pd.FirstSync) {
					t.Errorf("device %d FirstSyncTime = %v, want %v", i, d.FirstSyncTime, pd.FirstSync)
				}
			}
		}
		if !found {
			t.Errorf("device %d (%s) missing", i, pd.DeviceID)
		}
	}
	// Admin-made entries in the population become list entries.
	for _, pm := range p.Mailboxes {
		if len(pm.Allowed)+len(pm.Blocked) == 0 {
			continue
		}
		got, err := o.Mailbox(pm.Guid)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.ActiveSyncAllowedDeviceIDs, pm.Allowed) || !slices.Equal(got.ActiveSyncBlockedDeviceIDs, pm.Blocked) {
			t.Fatalf("mailbox %s lists = %v/%v, want %v/%v", pm.Name, got.ActiveSyncAllowedDeviceIDs, got.ActiveSyncBlockedDeviceIDs, pm.Allowed, pm.Blocked)
		}
	}
}

func TestApplyChurn(t *testing.T) {
	p := genPopulation(300)
	s := newSim(t, Options{Population: p})
	before := s.Org().DeviceCount()
	changes, err := s.ApplyChurn(0.1, 0)
	if err != nil {
		t.Fatal(err)
	}
	newPhones := 0
	for _, c := range changes {
		if c.Kind == population.NewPhone {
			newPhones++
		}
	}
	if got := s.Org().DeviceCount(); got != before+newPhones {
		t.Fatalf("devices after churn = %d, want %d + %d new phones", got, before, newPhones)
	}
	// Applying again is harmless.
	n, err := s.ApplyChanges(changes)
	if err != nil || n != 0 {
		t.Fatalf("re-apply = %d, %v; want 0, nil", n, err)
	}
	if _, err := s.ApplyChanges([]population.Change{{Kind: population.NewPhone, Device: 1 << 30}}); err == nil ||
		!strings.Contains(err.Error(), "device index") {
		t.Fatalf("bad device index: %v", err)
	}
}

func TestSetOrgValidation(t *testing.T) {
	o := NewOrg("")
	long := strings.Repeat("x", exchange.MaxUserMailInsert+1)
	err := o.SetOrg(exchange.OrgSettings{DefaultAccessLevel: exchange.LevelBlock, UserMailInsert: long})
	if err == nil || !strings.Contains(err.Error(), "The maximum length is 256 and the length of the value provided is 257.") {
		t.Fatalf("long insert: %v", err)
	}
	if got := o.Settings().DefaultAccessLevel; got != exchange.LevelAllow {
		t.Fatalf("failed SetOrg changed DefaultAccessLevel to %s", got)
	}
	if err := o.SetOrg(exchange.OrgSettings{DefaultAccessLevel: "quarantine", AdminMailRecipients: []string{"not an address"}}); err == nil {
		t.Fatal("invalid recipient accepted")
	}
	if err := o.SetOrg(exchange.OrgSettings{DefaultAccessLevel: "quarantine", AdminMailRecipients: []string{"admin@contoso.com"},
		UserMailInsert: strings.Repeat("é", 256)}); err != nil {
		t.Fatalf("valid settings: %v", err)
	}
	if got := o.Settings(); got.DefaultAccessLevel != exchange.LevelQuarantine || len(got.AdminMailRecipients) != 1 {
		t.Fatalf("settings = %+v", got)
	}
}

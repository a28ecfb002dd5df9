package exsim

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/runspace"
)

func TestCmdletTableCoversAllowlist(t *testing.T) {
	var names []string
	for _, c := range cmdletTable {
		names = append(names, c.name)
	}
	// Get-Command is the session's own (psrp_pipeline.go getCommand): it
	// lists the granted cmdlets for easconnector check.
	names = append(names, getCommand.name)
	slices.Sort(names)
	if !slices.Equal(names, runspace.Allowlist) {
		t.Fatalf("simulated cmdlets = %v, want the bootstrap allowlist %v", names, runspace.Allowlist)
	}
}

func TestSetCASMailboxLists(t *testing.T) {
	s := newSim(t, Options{})
	smallOrg(t, s)
	c := openSession(t, s)
	get := func() ([]string, []string) {
		t.Helper()
		r := c.mustOK("Get-CASMailbox", map[string]any{"Identity": "alice"}, "ActiveSyncAllowedDeviceIDs", "ActiveSyncBlockedDeviceIDs")
		if len(r.objs) != 1 {
			t.Fatalf("Get-CASMailbox alice: %d objects", len(r.objs))
		}
		return strs(r.objs[0]["ActiveSyncAllowedDeviceIDs"]), strs(r.objs[0]["ActiveSyncBlockedDeviceIDs"])
	}
	set := func(args map[string]any) {
		t.Helper()
		args["Identity"] = "alice"
		c.mustOK("Set-CASMailbox", args)
	}
	edit := map[string]any{"add": []any{"ApplAAAA1111", "androidc1234"}}
	set(map[string]any{"ActiveSyncAllowedDeviceIDs": edit})
	set(map[string]any{"ActiveSyncAllowedDeviceIDs": edit}) // idempotent
	if a, b := get(); !slices.Equal(a, []string{"ApplAAAA1111", "androidc1234"}) || len(b) != 0 {
		t.Fatalf("after add twice: allowed %v blocked %v", a, b)
	}
	set(map[string]any{"ActiveSyncAllowedDeviceIDs": map[string]any{"remove": []any{"ANDROIDC1234", "absent"}},
		"ActiveSyncBlockedDeviceIDs": map[string]any{"add": "androidc1234"}})
	if a, b := get(); !slices.Equal(a, []string{"ApplAAAA1111"}) || !slices.Equal(b, []string{"androidc1234"}) {
		t.Fatalf("after move: allowed %v blocked %v", a, b)
	}
	if st, why := s.Org().Access("alice", "androidc1234"); st != exchange.AccessBlocked || why != exchange.ReasonIndividual {
		t.Fatalf("blocked device access = %s/%s", st, why)
	}
	// Adding to one list takes the id out of the other (Exchange keeps
	// them disjoint); the stored state of the device follows at once.
	set(map[string]any{"ActiveSyncAllowedDeviceIDs": map[string]any{"add": "ANDROIDC1234"}})
	if a, b := get(); !slices.Equal(a, []string{"ApplAAAA1111", "ANDROIDC1234"}) || len(b) != 0 {
		t.Fatalf("after allowing a blocked id: allowed %v blocked %v", a, b)
	}
	if r := c.mustOK("Get-MobileDevice", map[string]any{"Mailbox": "alice"}, "DeviceId", "DeviceAccessState", "DeviceAccessStateReason"); len(r.objs) == 0 {
		t.Fatal("alice has no devices")
	} else {
		for _, o := range r.objs {
			if o["DeviceId"] == "androidc1234" && (o["DeviceAccessState"] != "Allowed" || o["DeviceAccessStateReason"] != "Individual") {
				t.Errorf("stored state after Set-CASMailbox = %v", o)
			}
		}
	}
	// One call that leaves an id in both lists is refused, as Exchange does.
	r := c.do("Set-CASMailbox", map[string]any{"Identity": "alice", "ActiveSyncAllowedDeviceIDs": map[string]any{"add": "Z9"},
		"ActiveSyncBlockedDeviceIDs": map[string]any{"add": "z9"}})
	if r.err == nil || r.err.Type != typeIDInBothLists || r.err.Category != "InvalidData" ||
		!strings.HasPrefix(r.err.Msg, "DeviceID Z9 is included in both the ActiveSyncAllowedDeviceIDs list and the ActiveSyncBlockedDeviceIDs list.") {
		t.Fatalf("id in both lists: %+v", r.err)
	}
	set(map[string]any{"ActiveSyncAllowedDeviceIDs": []any{"X1", "X2"}}) // array replaces
	if a, _ := get(); !slices.Equal(a, []string{"X1", "X2"}) {
		t.Fatalf("after replace: %v", a)
	}
	// The bootstrap refuses a single value, and a bare null (which would
	// bind as $null and clear the list), for a multi-valued parameter.
	for _, v := range []any{"X3", nil} {
		r := c.do("Set-CASMailbox", map[string]any{"Identity": "alice", "ActiveSyncAllowedDeviceIDs": v})
		if r.err == nil || r.err.Type != typeRuntime || !strings.HasPrefix(r.err.Msg, "parameter ActiveSyncAllowedDeviceIDs of Set-CASMailbox is a list: ") {
			t.Fatalf("ActiveSyncAllowedDeviceIDs = %#v: %+v, want the bootstrap's refusal", v, r.err)
		}
	}
	if a, _ := get(); !slices.Equal(a, []string{"X1", "X2"}) {
		t.Fatalf("after refused null: %v", a)
	}
	clear := map[string]any{"clear": true} // an explicit clear binds $null
	set(map[string]any{"ActiveSyncAllowedDeviceIDs": clear, "ActiveSyncBlockedDeviceIDs": clear})
	if a, b := get(); len(a)+len(b) != 0 {
		t.Fatalf("after clear: allowed %v blocked %v", a, b)
	}
	// No change: Exchange warns.
	set(map[string]any{"ActiveSyncAllowedDeviceIDs": map[string]any{"remove": []any{"nothing"}}})
	if !strings.Contains(c.stderr.String(), "no settings of &apos;Alice Anderson&apos;") &&
		!strings.Contains(c.stderr.String(), "no settings of 'Alice Anderson' have been modified") {
		t.Fatalf("no-change warning missing from stderr: %q", c.stderr.String())
	}
	// Parameters outside the bootstrap's allowlist never reach the cmdlet,
	// common parameters included.
	for _, name := range []string{"ActiveSyncEnabled", "WhatIf", "Confirm", "OutVariable", "ErrorVariable", "PipelineVariable"} {
		r := c.do("Set-CASMailbox", map[string]any{"Identity": "alice", name: true})
		if r.err == nil || r.err.Msg != "parameter is not in the easconnector allowlist of Set-CASMailbox: "+name {
			t.Fatalf("-%s: %+v, want the bootstrap's refusal", name, r.err)
		}
	}
	if mb, _ := s.Org().Mailbox("alice"); !mb.ActiveSyncEnabled {
		t.Fatal("a refused call changed ActiveSyncEnabled")
	}
}

func TestParameterBindingErrors(t *testing.T) {
	s := newSim(t, Options{})
	smallOrg(t, s)
	c := openSession(t, s)
	cases := []struct {
		cmd      string
		args     map[string]any
		typ, cat string
		fqid     string
		msg      string
	}{
		{"Set-CASMailbox", map[string]any{"ActiveSyncAllowedDeviceIDs": []any{"x"}}, typeParamBinding, "InvalidArgument",
			"MissingMandatoryParameter,Set-CASMailbox", "Cannot process command because of one or more missing mandatory parameters: Identity."},
		{"New-ActiveSyncDeviceAccessRule", map[string]any{"Characteristic": "DeviceType"}, typeParamBinding, "InvalidArgument",
			"MissingMandatoryParameter,New-ActiveSyncDeviceAccessRule",
			"Cannot process command because of one or more missing mandatory parameters: QueryString AccessLevel."},
		{"Get-MobileDevice", map[string]any{"ResultSize": 0}, typeParamValidation, "InvalidData", "ParameterArgumentValidationError,Get-MobileDevice",
			"Cannot validate argument on parameter 'ResultSize'. The 0 argument is less than the minimum allowed range of 1. Supply an argument that is greater than or equal to 1 and then try the command again."},
		{"Get-MobileDevice", map[string]any{"ResultSize": "lots"}, typeParamBinding, "InvalidArgument", "CannotConvertArgumentNoMessage,Get-MobileDevice",
			"Cannot bind parameter 'ResultSize'. Cannot convert value \"lots\" to type \"Microsoft.Exchange.Data.Unlimited`1[System.UInt32]\". Error: \"Input string was not in a correct format.\""},
		// Refused by the bootstrap before PowerShell binds anything.
		{"Get-CASMailbox", map[string]any{"Identity": []any{"a", "b"}}, typeRuntime, "OperationStopped",
			"parameter Identity of Get-CASMailbox takes one value, not a list or an edit", "parameter Identity of Get-CASMailbox takes one value, not a list or an edit"},
		{"Get-CASMailbox", map[string]any{"Identity": "alice", "identity": "bob"}, typeRuntime, "OperationStopped",
			"parameter Identity of Get-CASMailbox given twice", "parameter Identity of Get-CASMailbox given twice"},
		{"Get-CASMailbox", map[string]any{"Ident1ty": "alice"}, typeRuntime, "OperationStopped",
			"parameter is not in the easconnector allowlist of Get-CASMailbox: Ident1ty", "parameter is not in the easconnector allowlist of Get-CASMailbox: Ident1ty"},
		{"Get-CASMailbox", map[string]any{"ident": "alice"}, typeRuntime, "OperationStopped", // no prefixes
			"parameter is not in the easconnector allowlist of Get-CASMailbox: ident", "parameter is not in the easconnector allowlist of Get-CASMailbox: ident"},
		{"Set-CASMailbox", map[string]any{"Identity": "alice", "Bogus": 1}, typeRuntime, "OperationStopped",
			"parameter is not in the easconnector allowlist of Set-CASMailbox: Bogus", "parameter is not in the easconnector allowlist of Set-CASMailbox: Bogus"},
		{"Get-MobileDevice", map[string]any{"OutVariable": "allowed"}, typeRuntime, "OperationStopped",
			"parameter is not in the easconnector allowlist of Get-MobileDevice: OutVariable", "parameter is not in the easconnector allowlist of Get-MobileDevice: OutVariable"},
		{"Set-ActiveSyncOrganizationSettings", map[string]any{"AdminMailRecipients": nil}, typeRuntime, "OperationStopped",
			"parameter AdminMailRecipients of Set-ActiveSyncOrganizationSettings is a list: null is refused (send a clear to empty it)", ""},
		{"Set-CASMailbox", map[string]any{"Identity": "alice", "ActiveSyncBlockedDeviceIDs": map[string]any{"add": nil}}, typeRuntime, "OperationStopped",
			"parameter ActiveSyncBlockedDeviceIDs of Set-CASMailbox: add is null", ""},
		{"Set-CASMailbox", map[string]any{"Identity": "alice", "ActiveSyncBlockedDeviceIDs": map[string]any{}}, typeRuntime, "OperationStopped",
			"parameter ActiveSyncBlockedDeviceIDs of Set-CASMailbox: empty edit", ""},
		{"Invoke-Expression", map[string]any{"Command": "Remove-Mailbox x"}, typeRuntime, "OperationStopped",
			"cmdlet is not in the easconnector allowlist: Invoke-Expression", "cmdlet is not in the easconnector allowlist: Invoke-Expression"},
		{"Set-ActiveSyncOrganizationSettings", map[string]any{"DefaultAccessLevel": "Deny"}, typeParamBinding, "InvalidArgument",
			"CannotConvertArgumentNoMessage,Set-ActiveSyncOrganizationSettings", ""},
		{"Set-ActiveSyncOrganizationSettings", map[string]any{"AdminMailRecipients": map[string]any{"add": []any{"admin"}}}, typeArgTransform, "InvalidData",
			"ParameterArgumentTransformationError,Set-ActiveSyncOrganizationSettings", ""},
	}
	for _, tc := range cases {
		r := c.do(tc.cmd, tc.args)
		if r.err == nil {
			t.Errorf("%s %v: no error", tc.cmd, tc.args)
			continue
		}
		if r.err.Type != tc.typ || r.err.Category != tc.cat || r.err.FQID != tc.fqid || tc.msg != "" && r.err.Msg != tc.msg {
			t.Errorf("%s %v:\n got %s / %s / %s / %q\nwant %s / %s / %s / %q", tc.cmd, tc.args, r.err.Type, r.err.Category, r.err.FQID, r.err.Msg,
				tc.typ, tc.cat, tc.fqid, tc.msg)
		}
	}
	// Any case binds, as the bootstrap's hashtable and PowerShell match.
	r := c.mustOK("get-casmailbox", map[string]any{"identity": "alice"}, "Name")
	if len(r.objs) != 1 || r.objs[0]["Name"] != "Alice Anderson" {
		t.Fatalf("lower-case Identity: %+v", r.objs)
	}
	// The session survives every error.
	if r := c.mustOK("Get-ExchangeServer", nil, "Name"); len(r.objs) != 1 {
		t.Fatalf("Get-ExchangeServer after errors: %+v", r)
	}
}

func TestNotFound(t *testing.T) {
	s := newSim(t, Options{})
	smallOrg(t, s)
	c := openSession(t, s)
	for _, cmd := range []struct {
		name string
		args map[string]any
	}{
		{"Get-CASMailbox", map[string]any{"Identity": "ghost"}},
		{"Set-CASMailbox", map[string]any{"Identity": "ghost", "ActiveSyncBlockedDeviceIDs": []any{"X"}}},
		{"Get-MobileDevice", map[string]any{"Mailbox": "ghost"}},
		{"Set-ActiveSyncDeviceAccessRule", map[string]any{"Identity": "ghost", "AccessLevel": "Block"}},
		{"Remove-ActiveSyncDeviceAccessRule", map[string]any{"Identity": "ghost", "Confirm": false}},
	} {
		r := c.do(cmd.name, cmd.args)
		want := "The operation couldn't be performed because object 'ghost' couldn't be found on 'dc01.contoso.com'."
		if r.err == nil || r.err.Msg != want || r.err.Type != typeNotFound || !strings.Contains(r.err.FQID, "ManagementObjectNotFoundException") {
			t.Errorf("%s: err = %+v, want %q", cmd.name, r.err, want)
		}
		// -ErrorAction is a common parameter: the bootstrap refuses it.
		args := map[string]any{"ErrorAction": "SilentlyContinue"}
		for k, v := range cmd.args {
			args[k] = v
		}
		if r := c.do(cmd.name, args); r.err == nil || r.err.Msg != "parameter is not in the easconnector allowlist of "+cmd.name+": ErrorAction" {
			t.Errorf("%s -ErrorAction SilentlyContinue = %+v, want the bootstrap's refusal", cmd.name, r.err)
		}
	}
}

func TestGetMobileDeviceResultSize(t *testing.T) {
	p := genPopulation(1200)
	s := newSim(t, Options{Population: p})
	c := openSession(t, s)
	r := c.mustOK("Get-MobileDevice", nil, "DeviceId")
	if r.count != 1000 {
		t.Fatalf("default ResultSize returned %d objects, want 1000", r.count)
	}
	if !strings.Contains(c.stderr.String(), "By default, only the first 1000 items are returned.") {
		t.Fatalf("default ResultSize warning missing: %q", c.stderr.String())
	}
	if r := c.mustOK("Get-MobileDevice", map[string]any{"ResultSize": "Unlimited"}, "DeviceId"); r.count != 1200 {
		t.Fatalf("ResultSize Unlimited returned %d, want 1200", r.count)
	}
	if r := c.mustOK("Get-MobileDevice", map[string]any{"ResultSize": 5}, "DeviceId", "Identity"); r.count != 5 {
		t.Fatalf("ResultSize 5 returned %d", r.count)
	}
	if !strings.Contains(c.stderr.String(), "There are more results available than are currently displayed.") {
		t.Fatal("explicit ResultSize warning missing")
	}
	// Exactly ResultSize matches: no warning.
	before := c.stderr.String()
	mb := p.Mailboxes[p.Devices[0].Mailbox]
	n := 0
	for _, d := range p.Devices {
		if d.Mailbox == p.Devices[0].Mailbox {
			n++
		}
	}
	if r := c.mustOK("Get-MobileDevice", map[string]any{"Mailbox": mb.Guid, "ResultSize": n}, "DeviceId"); r.count != n {
		t.Fatalf("mailbox devices = %d, want %d", r.count, n)
	}
	if c.stderr.String() != before {
		t.Fatalf("warning written with exactly ResultSize results: %q", strings.TrimPrefix(c.stderr.String(), before))
	}
	// Without Select the bootstrap sends no objects, but the call succeeds.
	if r := c.mustOK("Get-MobileDevice", map[string]any{"ResultSize": 10}); r.count != 0 {
		t.Fatalf("no Select: %d objects, want 0", r.count)
	}
	// Get-CASMailbox has the same default.
	if r := c.mustOK("Get-CASMailbox", map[string]any{"ResultSize": "unlimited"}, "Name"); r.count != len(p.Mailboxes) {
		t.Fatalf("Get-CASMailbox Unlimited = %d, want %d", r.count, len(p.Mailboxes))
	}
}

func TestGetMobileDeviceObjects(t *testing.T) {
	s := newSim(t, Options{})
	smallOrg(t, s)
	if _, err := s.Org().AddRule(exchange.CharDeviceType, "Nine", exchange.LevelQuarantine); err != nil {
		t.Fatal(err)
	}
	s.Org().ContactAll() // the phones connect: their states are stored
	c := openSession(t, s)
	sel := []string{"Identity", "DistinguishedName", "DeviceId", "DeviceType", "FirstSyncTime", "DeviceAccessState",
		"DeviceAccessStateReason", "DeviceAccessControlRule", "ClientType", "deviceModel", "NoSuchProperty"}
	r := c.mustOK("Get-MobileDevice", map[string]any{"Mailbox": "bob@contoso.com"}, sel...)
	if len(r.objs) != 1 {
		t.Fatalf("bob's devices: %d", len(r.objs))
	}
	o := r.objs[0]
	want := map[string]any{
		"Identity":                `Bob Baker\ExchangeActiveSyncDevices\Nine§NINEBOB`,
		"DistinguishedName":       "CN=Nine§NINEBOB,CN=ExchangeActiveSyncDevices,CN=Bob Baker,OU=Users,DC=contoso,DC=com",
		"DeviceId":                "NINEBOB",
		"DeviceType":              "Nine",
		"FirstSyncTime":           "2025-01-30T12:00:00.0000000Z",
		"DeviceAccessState":       "Quarantined",
		"DeviceAccessStateReason": "DeviceRule",
		"DeviceAccessControlRule": "Nine (DeviceType)",
		"ClientType":              "EAS",
		"deviceModel":             "Nine Work",
		"NoSuchProperty":          nil,
	}
	for k, v := range want {
		if o[k] != v {
			t.Errorf("%s = %#v, want %#v", k, o[k], v)
		}
	}
	// Keys keep Select's order, as the bootstrap's [ordered] hashtable does.
	if got := string(r.raw[0]); !strings.HasPrefix(got, `{"Identity":`) || !strings.HasSuffix(got, `"NoSuchProperty":null}`) {
		t.Errorf("object key order: %s", got)
	}
	// The decoded object fits exchange.MobileDevice.
	var md exchange.MobileDevice
	if err := json.Unmarshal(r.raw[0], &md); err != nil || md.FirstSyncTime.IsZero() || md.DeviceAccessState != exchange.AccessQuarantined {
		t.Fatalf("decode into exchange.MobileDevice: %+v, %v", md, err)
	}
}

func TestOrgSettingsAndRulesCmdlets(t *testing.T) {
	s := newSim(t, Options{Listeners: 2})
	smallOrg(t, s)
	c := openSession(t, s)
	c.mustOK("Set-ActiveSyncOrganizationSettings", map[string]any{"DefaultAccessLevel": "quarantine",
		"AdminMailRecipients": []any{"a@contoso.com"}, "UserMailInsert": "Enrol in Intune: https://aka.ms/enroll"})
	c.mustOK("Set-ActiveSyncOrganizationSettings", map[string]any{"AdminMailRecipients": map[string]any{"add": []any{"b@contoso.com"}, "remove": "a@contoso.com"}})
	r := c.mustOK("Get-ActiveSyncOrganizationSettings", nil, "DefaultAccessLevel", "AdminMailRecipients", "UserMailInsert", "Identity")
	o := r.objs[0]
	if o["DefaultAccessLevel"] != "Quarantine" || !slices.Equal(strs(o["AdminMailRecipients"]), []string{"b@contoso.com"}) ||
		o["Identity"] != "Mobile Mailbox Settings" {
		t.Fatalf("settings = %v", o)
	}
	r = c.do("Set-ActiveSyncOrganizationSettings", map[string]any{"UserMailInsert": strings.Repeat("x", 300)})
	if r.err == nil || r.err.Msg != "The length of the property is too long. The maximum length is 256 and the length of the value provided is 300." {
		t.Fatalf("long insert: %+v", r.err)
	}
	if s.Org().Settings().UserMailInsert != "Enrol in Intune: https://aka.ms/enroll" {
		t.Fatal("failed Set changed UserMailInsert")
	}

	r = c.mustOK("New-ActiveSyncDeviceAccessRule", map[string]any{"Characteristic": "DeviceModel", "QueryString": "Pixel 8",
		"AccessLevel": "Block"}, "Name", "Identity", "AccessLevel", "Characteristic", "QueryString")
	if r.objs[0]["Name"] != "Pixel 8 (DeviceModel)" || r.objs[0]["AccessLevel"] != "Block" {
		t.Fatalf("new rule = %v", r.objs)
	}
	if st, why := s.Org().Access("alice", "androidc1234"); st != exchange.AccessBlocked || why != exchange.ReasonDeviceRule {
		t.Fatalf("after block rule: %s/%s", st, why)
	}
	r = c.do("New-ActiveSyncDeviceAccessRule", map[string]any{"Characteristic": "DeviceModel", "QueryString": "Pixel 8", "AccessLevel": "Allow"})
	if r.err == nil || r.err.Type != typeADExists {
		t.Fatalf("duplicate rule: %+v", r.err)
	}
	c.mustOK("Set-ActiveSyncDeviceAccessRule", map[string]any{"Identity": "pixel 8 (devicemodel)", "AccessLevel": "Allow"})
	if st, _ := s.Org().Access("alice", "androidc1234"); st != exchange.AccessAllowed {
		t.Fatalf("after Set rule Allow: %s", st)
	}
	if r := c.mustOK("Get-ActiveSyncDeviceAccessRule", nil, "Name"); r.count != 1 {
		t.Fatalf("rules = %d", r.count)
	}
	c.mustOK("Remove-ActiveSyncDeviceAccessRule", map[string]any{"Identity": "Pixel 8 (DeviceModel)", "Confirm": false})
	if st, why := s.Org().Access("alice", "androidc1234"); st != exchange.AccessQuarantined || why != exchange.ReasonGlobal {
		t.Fatalf("after Remove rule: %s/%s", st, why)
	}

	for _, cmd := range []string{"Get-ExchangeServer", "Get-ClientAccessService"} {
		r = c.mustOK(cmd, nil, "Name", "Fqdn", "ServerRole")
		if r.count != 2 || r.objs[0]["Name"] != "CAS01" || r.objs[1]["Fqdn"] != "127.0.0.2" {
			t.Fatalf("%s = %v", cmd, r.objs)
		}
	}
	r = c.mustOK("Get-ExchangeServer", nil, "Name", "AdminDisplayVersion", "ServerRole")
	if r.count != 2 || r.objs[1]["Name"] != "CAS02" || r.objs[1]["AdminDisplayVersion"] != ExchangeVersion ||
		!slices.Equal(strs(r.objs[1]["ServerRole"]), []string{"Mailbox", "ClientAccess"}) {
		t.Fatalf("Get-ExchangeServer = %v", r.objs)
	}
}

func TestHostileStrings(t *testing.T) {
	s := newSim(t, Options{})
	smallOrg(t, s)
	hostile := []string{
		"'; Remove-Mailbox x -Confirm:$false; '",
		`"; Remove-Mailbox -Identity alice -Confirm:$false; "`,
		"$(Remove-Mailbox alice)",
		"`$x; @{Add='y'}",
		"a,b;c=d\\e+f<g>#h",
		"line\r\nbreak\ttab\x00nul",
		"\xff\xfe invalid utf-8",
		"ApplAAAA1111 -or DeviceId -like '*'",
	}
	o := s.Org()
	for i, h := range hostile {
		if _, err := o.AddDevice(DeviceSpec{Mailbox: "bob", DeviceId: h, DeviceType: "T" + h, DeviceModel: h, DeviceUserAgent: h,
			FirstSyncTime: fixedNow}); err != nil {
			t.Fatalf("add hostile device %d: %v", i, err)
		}
	}
	c := openSession(t, s)
	r := c.mustOK("Get-MobileDevice", map[string]any{"Mailbox": "bob", "ResultSize": "Unlimited"}, "DeviceId", "DeviceType", "DeviceModel", "Identity", "DistinguishedName")
	if r.count != len(hostile)+1 {
		t.Fatalf("bob's devices = %d, want %d", r.count, len(hostile)+1)
	}
	got := map[string]bool{}
	for _, obj := range r.objs {
		got[obj["DeviceId"].(string)] = true
		if obj["DeviceModel"] != obj["DeviceId"] && obj["DeviceId"] != "NINEBOB" {
			t.Errorf("model %q != id %q", obj["DeviceModel"], obj["DeviceId"])
		}
	}
	for _, h := range hostile {
		want := string([]rune(h)) // each invalid byte becomes U+FFFD
		if !got[want] {
			t.Errorf("hostile id %q not returned verbatim; got %v", want, got)
		}
	}
	// A hostile value is data: it matches nothing as code and is stored verbatim.
	before, _ := o.Mailboxes(0, 0)
	for _, h := range hostile[:4] {
		c.mustOK("Set-CASMailbox", map[string]any{"Identity": "bob", "ActiveSyncBlockedDeviceIDs": map[string]any{"add": h}})
		if r := c.do("Get-CASMailbox", map[string]any{"Identity": h}); r.err == nil || r.err.Type != typeNotFound {
			t.Errorf("Get-CASMailbox -Identity %q = %+v, want not found", h, r)
		}
		if r := c.do("Get-MobileDevice", map[string]any{"Mailbox": h}); r.err == nil || r.err.Type != typeNotFound {
			t.Errorf("Get-MobileDevice -Mailbox %q = %+v, want not found", h, r)
		}
		if st, why := o.Access("bob", h); st != exchange.AccessBlocked || why != exchange.ReasonIndividual {
			t.Errorf("Access(bob, %q) = %s/%s", h, st, why)
		}
	}
	after, _ := o.Mailboxes(0, 0)
	if len(after) != len(before) {
		t.Fatalf("mailboxes %d → %d", len(before), len(after))
	}
	bob, _ := o.Mailbox("bob")
	if !slices.Equal(bob.ActiveSyncBlockedDeviceIDs, hostile[:4]) {
		t.Fatalf("blocked list = %q, want %q", bob.ActiveSyncBlockedDeviceIDs, hostile[:4])
	}
	for _, mb := range []string{"alice", "peggy"} {
		if m, _ := o.Mailbox(mb); len(m.ActiveSyncBlockedDeviceIDs) != 0 {
			t.Fatalf("%s's list changed: %v", mb, m.ActiveSyncBlockedDeviceIDs)
		}
	}
	if st, _ := o.Access("bob", "NINEBOB"); st != exchange.AccessAllowed {
		t.Fatalf("bob's real phone = %s, want Allowed", st)
	}
	// A filter that quotes the hostile value (quote doubled) matches exactly it.
	h := hostile[0]
	f := fmt.Sprintf("DeviceId -eq '%s'", strings.ReplaceAll(h, "'", "''"))
	r = c.mustOK("Get-MobileDevice", map[string]any{"Filter": f}, "DeviceId")
	if r.count != 1 || r.objs[0]["DeviceId"] != h {
		t.Fatalf("filter %q = %v", f, r.objs)
	}
	// The call log keeps the arguments as data.
	var logged bool
	for _, call := range s.CallLog(0, 0) {
		if call.Cmd == "Set-CASMailbox" {
			if e, ok := call.Args["ActiveSyncBlockedDeviceIDs"].(map[string]any); ok && e["add"] == hostile[0] {
				logged = true
			}
		}
	}
	if !logged {
		t.Fatal("hostile Set-CASMailbox argument not in the call log verbatim")
	}
}

func TestFilterThroughCmdlets(t *testing.T) {
	p := genPopulation(400)
	s := newSim(t, Options{Population: p})
	o := s.Org()
	// Quarantine by default, allow some, put a few phones in discovery.
	if err := o.SetOrg(exchange.OrgSettings{DefaultAccessLevel: exchange.LevelQuarantine}); err != nil {
		t.Fatal(err)
	}
	mbs, _ := o.Mailboxes(0, 0)
	for i := 0; i < 5; i++ {
		if _, err := o.AddDevice(DeviceSpec{Mailbox: mbs[i].Guid, DeviceId: fmt.Sprintf("NEWPHONE%d", i), DeviceType: "iPhone",
			FirstSyncTime: fixedNow, Discovery: true}); err != nil {
			t.Fatal(err)
		}
	}
	devs, _, _ := o.Devices("", 0, 0)
	c := openSession(t, s)
	count := func(pred func(exchange.MobileDevice) bool) int {
		n := 0
		for _, d := range devs {
			if pred(d) {
				n++
			}
		}
		return n
	}
	cut := fixedNow.Add(-100 * 24 * time.Hour)
	cases := []struct {
		filter string
		want   int
	}{
		{"DeviceAccessState -eq 'Quarantined' -or DeviceAccessState -eq 'DeviceDiscovery'", count(func(d exchange.MobileDevice) bool {
			return d.DeviceAccessState == exchange.AccessQuarantined || d.DeviceAccessState == exchange.AccessDeviceDiscovery
		})},
		{"FirstSyncTime -gt '" + cut.Format("01/02/2006 15:04:05") + "'", count(func(d exchange.MobileDevice) bool { return d.FirstSyncTime.After(cut) })},
		{"FirstSyncTime -gt '" + cut.Format(time.RFC3339) + "'", count(func(d exchange.MobileDevice) bool { return d.FirstSyncTime.After(cut) })},
		{"(DeviceType -eq 'iPhone') -and -not (DeviceAccessStateReason -eq 'Individual')", count(func(d exchange.MobileDevice) bool {
			return d.DeviceType == "iPhone" && d.DeviceAccessStateReason != exchange.ReasonIndividual
		})},
		{"DeviceModel -like 'iPhone*'", count(func(d exchange.MobileDevice) bool { return strings.HasPrefix(d.DeviceModel, "iPhone") })},
		{"DeviceId -eq '" + devs[3].DeviceId + "' -or DeviceId -eq '" + devs[7].DeviceId + "'", 2},
		{"ProvisioningFlags -eq 0", len(devs)},
	}
	// An undocumented filterable property is refused with Exchange's error.
	if r := c.do("Get-MobileDevice", map[string]any{"Filter": "DistinguishedName -eq 'x'"}); r.err == nil ||
		!strings.Contains(r.err.Msg, `"DistinguishedName" is not a recognized filterable property.`) {
		t.Errorf("DistinguishedName filter: %+v", r.err)
	}
	for _, tc := range cases {
		r := c.mustOK("Get-MobileDevice", map[string]any{"Filter": tc.filter, "ResultSize": "Unlimited"}, "DeviceId")
		if r.count != tc.want || tc.want == 0 {
			t.Errorf("Filter %q: %d devices, want %d (must be > 0)", tc.filter, r.count, tc.want)
		}
	}
	// A name with an apostrophe, quoted by doubling.
	var obrien string
	for _, m := range mbs {
		if strings.Contains(m.Name, "O'Brien") {
			obrien = m.DistinguishedName
			break
		}
	}
	if obrien == "" {
		t.Fatal("population has no O'Brien")
	}
	r := c.mustOK("Get-CASMailbox", map[string]any{"Filter": "DistinguishedName -eq '" + strings.ReplaceAll(obrien, "'", "''") + "'"}, "DistinguishedName")
	if r.count != 1 || r.objs[0]["DistinguishedName"] != obrien {
		t.Fatalf("O'Brien filter = %v", r.objs)
	}
	r = c.mustOK("Get-CASMailbox", map[string]any{"Filter": "HasActiveSyncDevicePartnership -eq $true -and -not DisplayName -like 'CAS_{*'",
		"ResultSize": "Unlimited"}, "Name")
	if r.count != len(mbs) {
		t.Fatalf("HasActiveSyncDevicePartnership filter = %d, want %d", r.count, len(mbs))
	}
	if err := o.SetLists(mbs[0].Guid, []string{"LISTED1"}, nil); err != nil {
		t.Fatal(err)
	}
	r = c.mustOK("Get-CASMailbox", map[string]any{"Filter": "ActiveSyncAllowedDeviceIDs -eq 'listed1'"}, "Guid")
	if r.count != 1 || r.objs[0]["Guid"] != mbs[0].Guid {
		t.Fatalf("multi-valued filter = %v", r.objs)
	}

	errCases := []struct {
		filter, msg string
	}{
		{"LastSuccessSync -gt '01/01/2025'", "Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": \"\"LastSuccessSync\" is not a recognized filterable property. For a complete list of filterable properties see the command help.\r\n\"LastSuccessSync -gt '01/01/2025'\" at position 1.\""},
		{"DeviceId -eq 'x' -and", "Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": \"Invalid filter syntax. For a description of the filter parameter syntax see the command help.\r\n\"DeviceId -eq 'x' -and\" at position 22.\""},
		{"DeviceAccessState -eq 'Sideways'", ""},
		{"FirstSyncTime -gt 'yesterday'", ""},
	}
	for _, tc := range errCases {
		r := c.do("Get-MobileDevice", map[string]any{"Filter": tc.filter})
		if r.err == nil || r.err.Type != typeParamBinding || tc.msg != "" && r.err.Msg != tc.msg {
			t.Errorf("Filter %q: err = %+v, want %q", tc.filter, r.err, tc.msg)
		}
	}
}

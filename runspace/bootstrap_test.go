package runspace

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/easconnector/easconnector/internal/secret"
)

// TestCheckCallParams: only the parameters of the bootstrap's per-cmdlet
// allowlist pass, and a multi-valued parameter never gets nil. Each
// refusal names the cmdlet and the parameter.
func TestCheckCallParams(t *testing.T) {
	f := func(c Call, want string) {
		t.Helper()
		err := checkCall(c)
		switch {
		case want == "" && err != nil:
			t.Errorf("checkCall(%s %v) = %v, want nil", c.Cmd, c.Args, err)
		case want != "" && (!errors.Is(err, ErrInvalidCall) || !strings.Contains(err.Error(), want)):
			t.Errorf("checkCall(%s %v) = %v, want ErrInvalidCall containing %q", c.Cmd, c.Args, err, want)
		}
	}
	set := func(args map[string]any) Call {
		args["Identity"] = "alice"
		return Call{Cmd: "Set-CASMailbox", Args: args}
	}
	for _, common := range []string{"OutVariable", "ErrorVariable", "PipelineVariable", "WarningVariable",
		"InformationVariable", "OutBuffer", "ErrorAction", "Verbose", "WhatIf", "ov"} {
		f(set(map[string]any{common: "x"}), `Set-CASMailbox: parameter "`+common+`" is not in the allowlist of Set-CASMailbox`)
	}
	f(Call{Cmd: "Get-CASMailbox", Args: map[string]any{"Ident": "alice"}}, `parameter "Ident" is not in the allowlist`) // no prefixes
	f(Call{Cmd: "Get-CASMailbox", Args: map[string]any{"identity": "alice"}}, "")                                       // any case
	f(Call{Cmd: "Get-CASMailbox", Args: map[string]any{"identity": "a", "Identity": "b"}}, "parameter Identity given twice")
	f(Call{Cmd: "Get-ExchangeServer", Args: map[string]any{"Identity": "x"}}, `Get-ExchangeServer: parameter "Identity" is not in the allowlist`)
	f(set(map[string]any{"ActiveSyncAllowedDeviceIDs": []string(nil)}), "Set-CASMailbox -ActiveSyncAllowedDeviceIDs: nil list")
	f(set(map[string]any{"ActiveSyncAllowedDeviceIDs": nil}), "Set-CASMailbox -ActiveSyncAllowedDeviceIDs: nil for a list")
	f(set(map[string]any{"ActiveSyncAllowedDeviceIDs": (*ListEdit)(nil)}), "nil *ListEdit")
	f(set(map[string]any{"ActiveSyncAllowedDeviceIDs": ListEdit{}}), "Set-CASMailbox -ActiveSyncAllowedDeviceIDs: empty edit")
	f(set(map[string]any{"ActiveSyncAllowedDeviceIDs": "one"}), "a list takes []string, ListEdit or ClearList, not string")
	f(set(map[string]any{"ActiveSyncAllowedDeviceIDs": []string{}}), "")
	f(set(map[string]any{"ActiveSyncAllowedDeviceIDs": ListEdit{Add: []string{"A"}}}), "")
	f(set(map[string]any{"ActiveSyncBlockedDeviceIDs": &ListEdit{Remove: []string{"A"}}}), "")
	f(set(map[string]any{"ActiveSyncBlockedDeviceIDs": ClearList{}}), "")
	f(Call{Cmd: "Set-ActiveSyncOrganizationSettings", Args: map[string]any{"AdminMailRecipients": nil}},
		"Set-ActiveSyncOrganizationSettings -AdminMailRecipients: nil for a list")
	f(Call{Cmd: "Set-ActiveSyncOrganizationSettings", Args: map[string]any{"AdminMailRecipients": ClearList{}, "UserMailInsert": nil}}, "")
	f(Call{Cmd: "Get-CASMailbox", Args: map[string]any{"Identity": []string{"a"}}}, "Get-CASMailbox -Identity: takes one value")
	f(Call{Cmd: "Remove-ActiveSyncDeviceAccessRule", Args: map[string]any{"Identity": "r", "Confirm": false}}, "")
}

// TestWireArgsMatchGo: what checkCall lets through, the bootstrap's own
// checks (CheckWireArgs, which mirrors bootstrap.ps1) accept, under the
// canonical names, with a clear bound as $null.
func TestWireArgsMatchGo(t *testing.T) {
	c := Call{Cmd: "set-activesyncorganizationsettings", Args: map[string]any{
		"adminmailrecipients": ClearList{}, "DefaultAccessLevel": "Quarantine", "UserMailInsert": nil}}
	c.Cmd = "Set-ActiveSyncOrganizationSettings"
	if err := checkCall(c); err != nil {
		t.Fatal(err)
	}
	line, err := EncodeLine(Request{ID: 1, Cmd: c.Cmd, Args: c.Args})
	if err != nil {
		t.Fatal(err)
	}
	req, err := DecodeRequest(line)
	if err != nil {
		t.Fatal(err)
	}
	got, err := CheckWireArgs("SET-ActiveSyncOrganizationSettings", req.Args)
	if err != nil {
		t.Fatalf("CheckWireArgs() = %v", err)
	}
	if v, ok := got["AdminMailRecipients"]; !ok || v != nil || got["DefaultAccessLevel"] != "Quarantine" {
		t.Errorf("CheckWireArgs() = %v, want AdminMailRecipients: nil (a clear) under canonical names", got)
	}
	for _, bad := range []struct {
		args map[string]any
		want string
	}{
		{map[string]any{"AdminMailRecipients": nil}, "parameter AdminMailRecipients of Set-ActiveSyncOrganizationSettings is a list: null is refused"},
		{map[string]any{"OutVariable": "x"}, "parameter is not in the easconnector allowlist of Set-ActiveSyncOrganizationSettings: OutVariable"},
		{map[string]any{"AdminMailRecipients": []any{"a", nil}}, "list items must be strings"},
		{map[string]any{"AdminMailRecipients": map[string]any{"clear": "yes"}}, "an edit has only add and remove, got clear"},
		{map[string]any{"UserMailInsert": []any{"a"}}, "parameter UserMailInsert of Set-ActiveSyncOrganizationSettings takes one value"},
	} {
		if _, err := CheckWireArgs("Set-ActiveSyncOrganizationSettings", bad.args); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("CheckWireArgs(%v) = %v, want %q", bad.args, err, bad.want)
		}
	}
}

// TestAllowlistParsed: Go reads the same per-cmdlet lists as the script,
// and refuses a block it cannot read.
func TestAllowlistParsed(t *testing.T) {
	if len(Allowlist) != 12 || !Allowed("Set-CASMailbox") || Allowed("Invoke-Expression") {
		t.Fatalf("Allowlist = %v", Allowlist)
	}
	ps, ok := Params("set-casmailbox")
	want := []Param{{"Identity", false}, {"ActiveSyncAllowedDeviceIDs", true}, {"ActiveSyncBlockedDeviceIDs", true}}
	if !ok || !slices.Equal(ps, want) {
		t.Errorf("Params(Set-CASMailbox) = %v, want %v", ps, want)
	}
	if ps, ok := Params("Get-ClientAccessService"); !ok || len(ps) != 0 {
		t.Errorf("Params(Get-ClientAccessService) = %v, %v", ps, ok)
	}
	for _, bad := range []string{
		"'Get-X' = 'Get-X'",                 // the old form
		"'Get-X' = @('Identity'; 'Filter')", // not a list of names
		"'Get-X' = @('Iden tity')",
		"'Get-X' = @('Identity', 'identity')",
		"'Get-X' = @()\n'Get-X' = @()",
		"'Get-X' = @(Identity)",
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("parseAllowlist(%q) did not panic", bad)
				}
			}()
			parseAllowlist([]byte("# allowlist:begin\n$allowed = @{\n" + bad + "\n}\n# allowlist:end\n"))
		}()
	}
}

// TestSecondHopPasswordLine: the password is not in the JSON that the
// bootstrap hands to ConvertFrom-Json (a cmdlet, which module logging
// records), but on its own line; the script never passes it to a cmdlet.
func TestSecondHopPasswordLine(t *testing.T) {
	const pw = "Pa55w0rd-ünïcode"
	out, err := SessionConfig{Mode: ModeRemoting, ConnectionURI: "http://cas1/PowerShell/", User: `CONTOSO\svc`, Password: secret.New(pw)}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(out, []byte("\n"))
	if len(lines) != 3 || len(lines[2]) != 0 {
		t.Fatalf("Encode() = %q, want two lines", out)
	}
	cfg, err := DecodeSessionConfig(lines[0])
	if err != nil || cfg.User != `CONTOSO\svc` || !cfg.Password.IsZero() {
		t.Fatalf("config line = %+v, %v", cfg, err)
	}
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(strings.TrimSpace(string(lines[0])), FrameTag))
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil || strings.Contains(string(raw), pw) || m["password"] != nil {
		t.Fatalf("config JSON %s carries the password", raw)
	}
	if got, err := DecodePasswordLine(lines[1]); err != nil || got.Reveal() != pw {
		t.Fatalf("DecodePasswordLine() = %q, %v", got.Reveal(), err)
	}
	// A SessionConfig that ends up in a log line or an error shows no
	// password, whatever the verb.
	sc := SessionConfig{Mode: ModeRemoting, User: `CONTOSO\svc`, Password: secret.New(pw)}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		if got := fmt.Sprintf(verb, sc); strings.Contains(got, pw) || strings.Contains(got, fmt.Sprintf("%x", pw)) {
			t.Errorf("Sprintf(%s, SessionConfig) = %s: shows the password", verb, got)
		}
	}
	if js, _ := json.Marshal(sc); strings.Contains(string(js), pw) {
		t.Errorf("json.Marshal(SessionConfig) = %s: shows the password", js)
	}
	if out, _ := (SessionConfig{Mode: ModeSnapin}).Encode(); bytes.Count(out, []byte("\n")) != 1 {
		t.Fatalf("Encode() without a user = %q, want one line", out)
	}
	var code []string // the script without its comments
	for l := range strings.Lines(string(stage1)) {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			code = append(code, l)
		}
	}
	script := strings.Join(code, "")
	for _, banned := range []string{"ConvertTo-SecureString", "-AsPlainText", "$cfg.password"} {
		if strings.Contains(script, banned) {
			t.Errorf("bootstrap.ps1 contains %q", banned)
		}
	}
	for _, needed := range []string{"[System.Security.SecureString]::new()", ".AppendChar(", "[System.Management.Automation.PSCredential]::new("} {
		if !strings.Contains(script, needed) {
			t.Errorf("bootstrap.ps1 does not contain %q", needed)
		}
	}
}

package runspace

import (
	"errors"
	"strings"
	"testing"

	"github.com/easconnector/easconnector/runspace/psrp"
	"github.com/easconnector/easconnector/runspace/psrp/psrptest"
)

// The server's MaxEnvelopeSizekb as Windows reports it in the WinRM
// configuration (test_wsman_update_envelope_size_{150,500,4096}.yml), and
// the envelope the session then uses.
func TestEnvelopeSizeFromRecordedConfig(t *testing.T) {
	for _, c := range []struct {
		file     string
		kb, want int
	}{
		{"test_wsman_update_envelope_size_150.yml", 150, 153600},
		{"test_wsman_update_envelope_size_500.yml", 500, 512000},
		{"test_wsman_update_envelope_size_4096.yml", 4096, psrpMaxEnvelope},
	} {
		ex, err := psrptest.Load(c.file)
		if err != nil {
			t.Fatal(err)
		}
		kb, ok := parseMaxEnvelopeKB(ex[0].Response)
		if !ok || kb != c.kb {
			t.Errorf("%s: MaxEnvelopeSizekb = %d, %v; want %d", c.file, kb, ok, c.kb)
		}
		if got := min(kb*1024, psrpMaxEnvelope); got != c.want {
			t.Errorf("%s: envelope %d, want %d", c.file, got, c.want)
		}
		// A fragment of that size, base64-encoded, leaves room for the
		// SOAP header within the envelope.
		if f := fragmentSize(c.want); (f+2)/3*4+2048 > c.want+4 {
			t.Errorf("%s: fragment %d does not fit", c.file, f)
		}
	}
}

func TestPSRPCommandAllowlistAndValues(t *testing.T) {
	cmd, err := psrpCommand(Call{Cmd: "Set-CASMailbox", Args: map[string]any{
		"Identity":                   "ann@contoso.com",
		"ActiveSyncAllowedDeviceIDs": ListEdit{Add: []string{"A1"}},
		"ActiveSyncBlockedDeviceIDs": &ListEdit{Add: []string{"B1"}, Remove: []string{"C1"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range cmd.Params {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "ActiveSyncAllowedDeviceIDs,ActiveSyncBlockedDeviceIDs,Identity" {
		t.Errorf("params = %v", names)
	}
	if h, ok := cmd.Params[0].Value.(psrp.Hashtable); !ok || len(h) != 1 || h[0].Key != "Add" {
		t.Errorf("allowed edit = %#v, want @{Add=…} only", cmd.Params[0].Value)
	}
	if h := cmd.Params[1].Value.(psrp.Hashtable); len(h) != 2 || h[1].Key != "Remove" {
		t.Errorf("blocked edit = %#v", h)
	}
	for _, c := range []Call{
		{Cmd: "Set-CASMailbox", Args: map[string]any{"Identity": "x", "ScriptBlock": "x"}},
		{Cmd: "Get-MobileDevice", Args: map[string]any{"ResultSize": 1.5}},
		{Cmd: "Invoke-Expression", Args: map[string]any{"Command": "x"}},
	} {
		err := checkCall(c)
		if err == nil {
			_, err = psrpCommand(c)
		}
		if !errors.Is(err, ErrInvalidCall) {
			t.Errorf("%v: %v, want ErrInvalidCall", c, err)
		}
	}
	// Parameter names take the allowlist's canonical spelling; a clear is $null.
	cmd, err = psrpCommand(Call{Cmd: "Set-ActiveSyncOrganizationSettings", Args: map[string]any{"adminmailrecipients": ClearList{}}})
	if err != nil || len(cmd.Params) != 1 || cmd.Params[0].Name != "AdminMailRecipients" || cmd.Params[0].Value != nil {
		t.Errorf("clear = %+v, %v", cmd, err)
	}
}

func TestPSRPErrorClassification(t *testing.T) {
	f := func(ei psrp.ErrorInfo, class, remote string) {
		t.Helper()
		err := psrpRemoteError(&ei)
		if got := Classify(err); got != class {
			t.Errorf("%+v: Classify = %s, want %s", ei, got, class)
		}
		if got := RemoteClass(err); got != remote {
			t.Errorf("%+v: RemoteClass = %s, want %s", ei, got, remote)
		}
	}
	// Category and FullyQualifiedErrorId decide, in any language.
	f(psrp.ErrorInfo{FullyQualifiedErrorID: "[Server=CAS01,RequestId=1,TimeStamp=1] [FailureCategory=Cmdlet-ManagementObjectNotFoundException] 8E1D9B0C,Microsoft.Exchange.Management.Tasks.GetCASMailbox",
		Category: 13, CategoryName: "ObjectNotFound", ExceptionType: "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException", Message: "Objekt nicht gefunden"}, ClassRemote, ClassNotFound)
	f(psrp.ErrorInfo{FullyQualifiedErrorID: "x", Category: 18, CategoryName: "PermissionDenied", Message: "Zugriff verweigert"}, ClassRemote, ClassDenied)
	f(psrp.ErrorInfo{FullyQualifiedErrorID: "x", Category: 5, CategoryName: "InvalidArgument", Message: "?"}, ClassRemote, ClassInvalidArg)
	f(psrp.ErrorInfo{FullyQualifiedErrorID: "x", Category: 30, CategoryName: "QuotaExceeded", Message: "?"}, ClassThrottle, ClassThrottle)
	f(psrp.ErrorInfo{FullyQualifiedErrorID: "[FailureCategory=Cmdlet-OverBudgetException] ,Microsoft.Exchange.X", CategoryName: "NotSpecified", Message: "?"}, ClassThrottle, ClassThrottle)
	f(psrp.ErrorInfo{FullyQualifiedErrorID: "PSSessionStateBroken", CategoryName: "OpenError", Message: "?"}, ClassRemote, ClassRemote)
	if err := psrpRemoteError(&psrp.ErrorInfo{FullyQualifiedErrorID: "PSSessionStateBroken"}); !errors.Is(err, ErrSessionBroken) {
		t.Errorf("broken session record: %v", err)
	}
}

// FuzzParseReceive feeds ReceiveResponse bodies (seeded with Windows'
// recorded ones) to the tag scan: it must never panic, and whatever it
// accepts must be base64-decoded stream data.
func FuzzParseReceive(f *testing.F) {
	for _, name := range []string{"test_psrp_error_failed.yml", "test_psrp_long_running_cmdlet.yml"} {
		ex, err := psrptest.Load(name)
		if err != nil {
			f.Fatal(err)
		}
		for _, x := range ex {
			if strings.Contains(x.Response, "ReceiveResponse") {
				f.Add(x.Response)
			}
		}
	}
	f.Add(`<s:Envelope><s:Body><rsp:ReceiveResponse><rsp:Stream Name="stdout"/><rsp:Stream Name="stdout">!!</rsp:Stream></rsp:ReceiveResponse></s:Body></s:Envelope>`)
	f.Fuzz(func(t *testing.T, body string) {
		r, err := parseReceive(body)
		if err != nil {
			return
		}
		var a psrp.Assembler
		for _, s := range r.streams {
			if len(s) == 0 {
				t.Fatal("empty stream accepted")
			}
			_ = a.Write(s, func([]byte) error { return nil })
		}
	})
}

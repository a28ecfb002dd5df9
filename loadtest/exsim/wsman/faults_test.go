package wsman_test

import (
	"encoding/xml"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/masterzen/winrm"

	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
)

// windowsFault is every part of a fault that a client can act on.
type windowsFault struct {
	Code     string // s:Code/s:Value
	Subcode  string // s:Code/s:Subcode/s:Value
	Reason   string
	Detail   string // w:FaultDetail
	WSMan    string // f:WSManFault/@Code
	Message  string // f:Message text, nested provider faults flattened
	Provider string // f:ProviderFault/@provider, if any
}

func parseWindowsFault(t *testing.T, body string) windowsFault {
	t.Helper()
	var env struct {
		Fault struct {
			Code    string `xml:"Code>Value"`
			Subcode string `xml:"Code>Subcode>Value"`
			Reason  string `xml:"Reason>Text"`
			Detail  struct {
				FaultDetail string `xml:"FaultDetail"`
				WSManFault  struct {
					Code    string `xml:"Code,attr"`
					Message struct {
						Text     string `xml:",chardata"`
						Provider struct {
							Name string `xml:"provider,attr"`
							Text string `xml:",chardata"`
							// Windows may nest a whole WSManFault in a
							// provider fault (the "Shell provider" one).
							Inner string `xml:"WSManFault>Message"`
						} `xml:"ProviderFault"`
					} `xml:"Message"`
				} `xml:"WSManFault"`
			} `xml:"Detail"`
		} `xml:"Body>Fault"`
	}
	if err := xml.Unmarshal([]byte(body), &env); err != nil {
		t.Fatalf("fault: %v\n%s", err, body)
	}
	f := env.Fault
	m := f.Detail.WSManFault.Message
	return windowsFault{
		Code: f.Code, Subcode: f.Subcode, Reason: f.Reason, Detail: f.Detail.FaultDetail,
		WSMan: f.Detail.WSManFault.Code, Message: m.Text + m.Provider.Text + m.Provider.Inner, Provider: m.Provider.Name,
	}
}

func recordedFault(t *testing.T, name string) windowsFault {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "windows", name))
	if err != nil {
		t.Fatal(err)
	}
	return parseWindowsFault(t, string(b))
}

// TestFaultsAsWindowsSendsThem compares exsim's answers with the faults of
// real Windows hosts (testdata/windows, from pypsrp's recordings).
func TestFaultsAsWindowsSendsThem(t *testing.T) {
	f := newFixture(t, fixtureConfig{opts: wsman.Options{PowerShell: &echoHost{}, PowerShellConfigurations: []string{"Microsoft.Exchange"}}})
	shellID := f.createShell(t)
	const unknown = "87E77BEB-6761-4C48-9D70-A00266B8459A"
	badCmd := recordedFault(t, "winrs_bad_cmd_id_receive.xml")
	noShell := recordedFault(t, "psrp_is_alive_invalid_selectors_get.xml")

	const psShell = "0D8B5C4E-2F1A-4B3C-9D8E-7F6A5B4C3D2E"
	if status, _, body := f.post(t, psEnvelope(psURI, "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create", "", psCreateBody(psShell))); status != http.StatusOK {
		t.Fatalf("PowerShell Create: %d %s", status, body)
	}
	receiveNoCommand := strings.Replace(msg(winrm.NewGetOutputRequest(f.url(), shellID, unknown, "stdout stderr", params("PT5S", 153600))),
		`CommandId="`+unknown+`"`, "", 1)
	for _, tc := range []struct {
		name string
		body string
	}{
		{"cmd shell Receive, unknown CommandId", msg(winrm.NewGetOutputRequest(f.url(), shellID, unknown, "stdout stderr", params("PT5S", 153600)))},
		{"cmd shell Receive without CommandId", receiveNoCommand},
		{"cmd shell Send, unknown CommandId", msg(winrm.NewSendInputRequest(f.url(), shellID, unknown, []byte("x"), false, params("PT5S", 153600)))},
		{"cmd shell Signal, unknown CommandId", signalRequest(f, shellID, unknown, "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c")},
		{"PowerShell Receive, unknown CommandId", psEnvelope(psURI, "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive", psShell,
			`<rsp:Receive><rsp:DesiredStream CommandId="`+unknown+`">stdout</rsp:DesiredStream></rsp:Receive>`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := f.post(t, tc.body)
			if status != http.StatusInternalServerError {
				t.Fatalf("status = %d, want 500: %s", status, body)
			}
			if got := parseWindowsFault(t, body); got != badCmd {
				t.Errorf("fault = %+v\nWindows: %+v", got, badCmd)
			}
		})
	}

	t.Run("operation timeout", func(t *testing.T) {
		id := f.execute(t, shellID, "sleep")
		status, body := f.receive(t, shellID, id, "PT0.2S")
		if status != http.StatusInternalServerError {
			t.Fatalf("status = %d, want 500: %s", status, body)
		}
		if got, want := parseWindowsFault(t, body), recordedFault(t, "winrs_operation_timeout_receive.xml"); got != want {
			t.Errorf("fault = %+v\nWindows: %+v", got, want)
		}
	})
	t.Run("shell not found", func(t *testing.T) {
		const gone = "6F1903CA-E06A-4A8B-BDFC-B44203149D55"
		status, _, body := f.post(t, msg(winrm.NewGetOutputRequest(f.url(), gone, unknown, "stdout stderr", params("PT5S", 153600))))
		if status != http.StatusInternalServerError {
			t.Fatalf("status = %d, want 500: %s", status, body)
		}
		got := parseWindowsFault(t, body)
		if got.Code != noShell.Code || got.Subcode != noShell.Subcode || got.Reason != noShell.Reason || got.Detail != noShell.Detail || got.WSMan != noShell.WSMan {
			t.Errorf("fault = %+v\nWindows: %+v", got, noShell)
		}
		// The specific text goes to f:Message (Microsoft Learn's
		// InvalidShellID article quotes it), the generic one to Reason.
		if !strings.Contains(got.Message, "Windows Remote Shell with ShellId "+gone+" failed because the shell was not found on the server") {
			t.Errorf("f:Message = %q, want the shell's own text", got.Message)
		}
	})
}

// TestQuotaFaultsAsWindowsSendsThem: per-shell and per-plugin quota faults
// are s:Receiver w:InternalError with the quota in Reason (pypsrp #148).
func TestQuotaFaultsAsWindowsSendsThem(t *testing.T) {
	f := newFixture(t, fixtureConfig{opts: wsman.Options{MaxProcessesPerShell: 1}})
	shellID := f.createShell(t)
	f.execute(t, shellID, "sleep")
	status, _, body := f.post(t, msg(winrm.NewExecuteCommandRequest(f.url(), shellID, "sleep", nil, params("PT5S", 153600))))
	if status != http.StatusInternalServerError {
		t.Fatalf("status = %d, want 500: %s", status, body)
	}
	want := windowsFault{Code: "s:Receiver", Subcode: "w:InternalError", WSMan: "2150859241",
		Reason: "The WS-Management service cannot process the request. The maximum number of concurrent commands per shell has been exceeded. Retry the request later or raise the Maximum Commands per Shell quota."}
	want.Message = want.Reason
	if got := parseWindowsFault(t, string(body)); got != want {
		t.Errorf("MaxCommandsPerShell fault = %+v\nwant %+v", got, want)
	}

	for code := uint32(wsman.CodeMaxShellsPPQ); code <= wsman.CodeMinRequirementPPQ; code++ {
		fault := wsman.FaultPluginQuota(code)
		got := parseWindowsFault(t, string(fault.MarshalEnvelope("cas1", "uuid:1")))
		if got.Code != "s:Receiver" || got.Subcode != "w:InternalError" || got.WSMan != strconv.FormatUint(uint64(code), 10) ||
			!strings.HasPrefix(got.Reason, "The WS-Management service cannot process the request. ") || !strings.Contains(got.Reason, "quota") {
			t.Errorf("FaultPluginQuota(%d) = %+v", code, got)
		}
	}
}

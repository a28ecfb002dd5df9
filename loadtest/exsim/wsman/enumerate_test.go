package wsman_test

import (
	"encoding/xml"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
)

// enumResponse is what a client reads from an EnumerateResponse or
// PullResponse.
type enumResponse struct {
	Header struct {
		Action    string `xml:"http://schemas.xmlsoap.org/ws/2004/08/addressing Action"`
		RelatesTo string `xml:"http://schemas.xmlsoap.org/ws/2004/08/addressing RelatesTo"`
	} `xml:"http://www.w3.org/2003/05/soap-envelope Header"`
	Body struct {
		Resp []struct {
			XMLName xml.Name
			Context []string `xml:"http://schemas.xmlsoap.org/ws/2004/09/enumeration EnumerationContext"`
			Items   []struct {
				XMLName xml.Name
				Shells  []struct {
					ShellID     string `xml:"ShellId"`
					ResourceURI string `xml:"ResourceUri"`
					Owner       string `xml:"Owner"`
					RunTime     string `xml:"ShellRunTime"`
				} `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Shell"`
			} `xml:"Items"`
			End []struct{ XMLName xml.Name } `xml:"EndOfSequence"`
		} `xml:",any"`
	} `xml:"http://www.w3.org/2003/05/soap-envelope Body"`
}

func parseEnum(t *testing.T, status int, body string) enumResponse {
	t.Helper()
	if status != http.StatusOK {
		t.Fatalf("status %d, body %s", status, body)
	}
	var r enumResponse
	if err := xml.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("response is not XML: %v\n%s", err, body)
	}
	if len(r.Body.Resp) != 1 {
		t.Fatalf("body has %d elements: %s", len(r.Body.Resp), body)
	}
	return r
}

// The Enumerate pypsrp sent to Windows (testdata/pypsrp/PROVENANCE) is
// answered in the recorded shape: every shell of the caller in wsman:Items,
// an empty context and wsman:EndOfSequence; shells of other users are not
// listed.
func TestEnumerateShellsAsRecorded(t *testing.T) {
	f := newFixture(t, fixtureConfig{opts: wsman.Options{Users: map[string]string{testUser: testPass, "other": "pw"}}})
	ids := map[string]bool{}
	for range 3 {
		ids[f.createShell(t)] = true
	}
	if status, _, body := f.postAs(t, "other", "pw", createRequest(f)); status != http.StatusOK {
		t.Fatalf("Create as other: %d %s", status, body)
	}
	recReq, err := os.ReadFile("testdata/pypsrp/enumerate_shells_request.xml")
	if err != nil {
		t.Fatal(err)
	}
	recResp, err := os.ReadFile("testdata/pypsrp/enumerate_shells_response.xml")
	if err != nil {
		t.Fatal(err)
	}
	status, _, body := f.post(t, string(recReq))
	got := parseEnum(t, status, body)
	want := parseEnum(t, http.StatusOK, string(recResp))

	gr, wr := got.Body.Resp[0], want.Body.Resp[0]
	if got.Header.Action != want.Header.Action || gr.XMLName != wr.XMLName {
		t.Errorf("answer %s %v, recorded %s %v", got.Header.Action, gr.XMLName, want.Header.Action, wr.XMLName)
	}
	if got.Header.RelatesTo != "uuid:5E6EE511-87B0-4C03-8084-15EEC39AD510" {
		t.Errorf("RelatesTo = %q, want the request's MessageID", got.Header.RelatesTo)
	}
	if len(gr.Context) != 1 || gr.Context[0] != "" || len(gr.End) != 1 || gr.End[0].XMLName != wr.End[0].XMLName ||
		len(gr.Items) != 1 || gr.Items[0].XMLName != wr.Items[0].XMLName {
		t.Fatalf("answer shape %+v, recorded %+v", gr, wr)
	}
	if len(gr.Items[0].Shells) != len(ids) {
		t.Fatalf("%d shells listed, want the caller's %d:\n%s", len(gr.Items[0].Shells), len(ids), body)
	}
	for _, sh := range gr.Items[0].Shells {
		if !ids[sh.ShellID] || sh.Owner != testUser || sh.ResourceURI != "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd" ||
			!strings.HasPrefix(sh.RunTime, "P0DT0H0M") {
			t.Errorf("listed shell %+v", sh)
		}
	}
}

// Without OptimizeEnumeration the items come from Pull, MaxElements at a
// time, until wsen:EndOfSequence.
func TestEnumerateShellsPull(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	for range 3 {
		f.createShell(t)
	}
	status, _, body := f.post(t, enumRequest(f, "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd",
		`<n:Enumerate/>`))
	r := parseEnum(t, status, body)
	ctx := r.Body.Resp[0].Context
	if len(r.Body.Resp[0].Items) != 0 || len(ctx) != 1 || ctx[0] == "" || len(r.Body.Resp[0].End) != 0 {
		t.Fatalf("Enumerate without optimization = %s", body)
	}
	seen := 0
	for pulls := 0; ; pulls++ {
		if pulls == 5 {
			t.Fatal("no EndOfSequence after 5 pulls")
		}
		status, _, body := f.post(t, enumRequest(f, "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd",
			`<n:Pull><n:EnumerationContext>`+ctx[0]+`</n:EnumerationContext><n:MaxElements>2</n:MaxElements></n:Pull>`))
		r := parseEnum(t, status, body)
		resp := r.Body.Resp[0]
		if resp.XMLName.Local != "PullResponse" {
			t.Fatalf("answer to Pull: %s", body)
		}
		for _, it := range resp.Items {
			if it.XMLName.Space != "http://schemas.xmlsoap.org/ws/2004/09/enumeration" {
				t.Errorf("Pull items in namespace %s, want wsen's", it.XMLName.Space)
			}
			seen += len(it.Shells)
		}
		if len(resp.End) == 1 {
			break
		}
		ctx = resp.Context
	}
	if seen != 3 {
		t.Errorf("pulled %d shells, want 3", seen)
	}

	// Bad requests get faults.
	for _, c := range []struct {
		uri, body string
		code      uint64
	}{
		{"http://schemas.microsoft.com/wbem/wsman/1/windows/shell/other", `<n:Enumerate/>`, wsman.CodeResourceNotFound},
		{"http://schemas.microsoft.com/wbem/wsman/1/windows/shell", `<n:Pull><n:EnumerationContext>bogus</n:EnumerationContext></n:Pull>`, wsman.CodeInvalidParameter},
		{"http://schemas.microsoft.com/wbem/wsman/1/windows/shell", `<n:Enumerate><w:MaxElements>0</w:MaxElements></n:Enumerate>`, wsman.CodeInvalidParameter},
		{"http://schemas.microsoft.com/wbem/wsman/1/windows/shell", `<n:Enumerate><w:Filter/></n:Enumerate>`, wsman.CodeInvalidParameter},
	} {
		status, _, body := f.post(t, enumRequest(f, c.uri, c.body))
		wantFault(t, status, body, c.code)
	}
}

func createRequest(f *fixture) string {
	return strings.Replace(enumRequest(f, "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd",
		`<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>`),
		"enumeration/Enumerate<", "transfer/Create<", 1)
}

func enumRequest(f *fixture, uri, body string) string {
	action := "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate"
	if strings.HasPrefix(body, "<n:Pull") {
		action = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Pull"
	}
	return `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"` +
		` xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"` +
		` xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Header>` +
		`<a:To>` + f.url() + `</a:To><a:Action>` + action + `</a:Action><a:MessageID>uuid:0C5E6D1A-1B2C-4D3E-8F90-A1B2C3D4E5F6</a:MessageID>` +
		`<w:ResourceURI>` + uri + `</w:ResourceURI><w:OperationTimeout>PT20S</w:OperationTimeout></s:Header><s:Body>` + body +
		`</s:Body></s:Envelope>`
}

package runspace

import (
	"bytes"
	"encoding/xml"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/masterzen/winrm"
)

// The recorded Windows answer to pypsrp's Enumerate of the shell resource
// (testdata/pypsrp/PROVENANCE): two runspace pools of the account.
func TestParseShellEnumerationRecorded(t *testing.T) {
	data, err := os.ReadFile("testdata/pypsrp/enumerate_shells_response.xml")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	page, err := parseShellEnumeration(bytes.NewReader(data), now)
	if err != nil {
		t.Fatalf("parseShellEnumeration() error = %v", err)
	}
	if !page.end || page.context != "" || len(page.shells) != 2 {
		t.Fatalf("page = end %v, context %q, %d shells; want the end, no context, 2 shells", page.end, page.context, len(page.shells))
	}
	sh := page.shells[0]
	want := enumeratedShell{ID: "B6631D8E-65A0-49F2-9053-A1B156C95777", ResourceURI: "http://schemas.microsoft.com/powershell/Microsoft.PowerShell",
		Owner: `WIN-NNMU24VVKJ0\vagrant`, Created: now.Add(-9 * time.Second)}
	if sh != want {
		t.Errorf("shell 0 = %+v, want %+v", sh, want)
	}
	if page.shells[1].ID != "01AA3E43-9E21-424B-A7FC-BC16AA34F4CE" || !page.shells[1].Created.Equal(now) {
		t.Errorf("shell 1 = %+v", page.shells[1])
	}
	// Our own request asks for what pypsrp's did.
	tr := &transport{url: "https://cas.example:5986/wsman"}
	o := &Options{OperationTimeout: 20 * time.Second}
	env := tr.enumerateEnvelope(o)
	rec, err := os.ReadFile("testdata/pypsrp/enumerate_shells_request.xml")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := bodyShape(t, env), bodyShape(t, string(rec)); got != want {
		t.Errorf("Enumerate body = %s, recorded %s", got, want)
	}
	if headerResourceURI(env) != headerResourceURI(string(rec)) {
		t.Errorf("ResourceURI = %s, recorded %s", headerResourceURI(env), headerResourceURI(string(rec)))
	}
}

// bodyShape renders the elements of a SOAP body as {ns}name(text) in order.
func bodyShape(t *testing.T, s string) string {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(s))
	var b strings.Builder
	inBody := false
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch x := tok.(type) {
		case xml.StartElement:
			if x.Name.Local == "Body" {
				inBody = true
				continue
			}
			if inBody {
				b.WriteString("<{" + x.Name.Space + "}" + x.Name.Local + ">")
			}
		case xml.CharData:
			if inBody {
				b.WriteString(strings.TrimSpace(string(x)))
			}
		case xml.EndElement:
			if x.Name.Local == "Body" {
				inBody = false
			} else if inBody {
				b.WriteString("</" + x.Name.Local + ">")
			}
		}
	}
	return b.String()
}

func TestParseShellEnumerationPull(t *testing.T) {
	body := `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration"><s:Header/><s:Body>` +
		`<n:PullResponse><n:EnumerationContext>uuid:1</n:EnumerationContext><n:Items><rsp:Shell xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell">` +
		`<rsp:ShellId>A</rsp:ShellId><rsp:Name>easconnector-1</rsp:Name><rsp:ResourceUri>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</rsp:ResourceUri>` +
		`<rsp:ShellRunTime>P1DT2H3M4S</rsp:ShellRunTime></rsp:Shell></n:Items></n:PullResponse></s:Body></s:Envelope>`
	now := time.Now()
	page, err := parseShellEnumeration(strings.NewReader(body), now)
	if err != nil {
		t.Fatal(err)
	}
	if page.end || page.context != "uuid:1" || len(page.shells) != 1 || page.shells[0].Name != "easconnector-1" ||
		!page.shells[0].Created.Equal(now.Add(-(26*time.Hour + 3*time.Minute + 4*time.Second))) {
		t.Errorf("page = %+v", page)
	}
	for _, bad := range []string{
		`not xml`,
		`<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><x/></s:Body></s:Envelope>`,
		strings.Replace(body, "<rsp:ShellId>A</rsp:ShellId>", "", 1),
		strings.Replace(body, "P1DT2H3M4S", "P1Y", 1),
	} {
		if _, err := parseShellEnumeration(strings.NewReader(bad), now); !errors.Is(err, ErrProtocol) {
			t.Errorf("parseShellEnumeration(%.60q) error = %v, want ErrProtocol", bad, err)
		}
	}
}

func TestParseXSDuration(t *testing.T) {
	f := func(in string, want time.Duration, ok bool) {
		t.Helper()
		got, err := parseXSDuration(in)
		if (err == nil) != ok || got != want {
			t.Errorf("parseXSDuration(%q) = %v, %v; want %v, ok %v", in, got, err, want, ok)
		}
	}
	f("P0DT0H0M14S", 14*time.Second, true)
	f("PT7200.000S", 2*time.Hour, true)
	f("P2D", 48*time.Hour, true)
	f("PT2147483.647S", 2147483647*time.Millisecond, true)
	f("", 0, false)
	f("P", 0, false)
	f("14S", 0, false)
	f("P1M", 0, false) // months
	f("PT1D", 0, false)
	f("PTT1S", 0, false)
	f("PT-1S", 0, false)
	f("PTxS", 0, false)
}

// markCreate names a WinRS Create (the library's own request) and leaves a
// PSRP Create, which names its ShellId, as it is.
func TestMarkCreate(t *testing.T) {
	winrs := winrm.NewOpenShellRequest("http://cas:5985/wsman", winrm.NewParameters("PT20S", "en-US", envelopeSize))
	body, rec := markCreate(winrs.String())
	if !strings.HasPrefix(rec.marker, orphanMarkerPrefix) || rec.id != "" || rec.resource != resourceURICmd {
		t.Fatalf("WinRS Create record = %+v", rec)
	}
	if !strings.Contains(body, "<rsp:Shell><rsp:Name>"+rec.marker+"</rsp:Name><rsp:InputStreams>") {
		t.Errorf("WinRS Create body has no rsp:Name first in rsp:Shell: %s", body)
	}
	if err := xml.Unmarshal([]byte(body), new(struct{})); err != nil {
		t.Errorf("marked body is not XML: %v", err)
	}
	if _, rec2 := markCreate(winrs.String()); rec2.marker == rec.marker {
		t.Errorf("two Creates got the same marker %s", rec.marker)
	}

	s := &Session{opts: &Options{OperationTimeout: 20 * time.Second, ConfigurationName: "Microsoft.Exchange"}, tr: &transport{url: "http://cas/PowerShell/"}}
	s.ps = &psrpState{s: s, rpid: newGUID(), resourceURI: psrpResourcePrefix + "Microsoft.Exchange", envelope: psrpDefaultEnvelope}
	ps := s.createEnvelope([]byte("creation"))
	body, rec = markCreate(ps)
	if body != ps || rec.id != s.ps.rpid.String() || rec.marker != "" || rec.resource != psrpResourcePrefix+"Microsoft.Exchange" {
		t.Errorf("PSRP Create: record %+v, body changed %v", rec, body != ps)
	}
	del := s.deleteEnvelope()
	if selectorShellID(del) != s.ps.rpid.String() {
		t.Errorf("selectorShellID(Delete) = %q, want %s", selectorShellID(del), s.ps.rpid)
	}
}

func TestMatchOrphans(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	settle := 5 * time.Second
	lost := []lostShell{
		{seq: 1, marker: "easconnector-a", create: true, sent: t0, lost: t0.Add(5 * time.Second)},
		{seq: 2, marker: "easconnector-b", create: true, sent: t0.Add(time.Minute), lost: t0.Add(time.Minute + 5*time.Second)},
		{seq: 3, marker: "easconnector-c", create: true, sent: t0.Add(time.Hour), lost: t0.Add(time.Hour + 5*time.Second)},
	}
	cmd := func(id, name, owner string, created time.Time) enumeratedShell {
		return enumeratedShell{ID: id, Name: name, ResourceURI: resourceURICmd, Owner: owner, Created: created}
	}
	shells := []enumeratedShell{
		cmd("LIVE", "", `CORP\svc`, t0.Add(time.Second)),                 // a session's: never
		cmd("OTHER", "", `CORP\admin`, t0.Add(time.Second)),              // another account's
		cmd("NAMED", "easconnector-b", `CORP\svc`, t0.Add(-time.Hour)),   // by name, whatever its time
		cmd("FOREIGN", "admin shell", `CORP\svc`, t0.Add(2*time.Second)), // named, not ours
		{ID: "PS", ResourceURI: psrpResourcePrefix + "Microsoft.Exchange", Owner: "svc", Created: t0.Add(2 * time.Second)},
		cmd("EARLY", "", "svc@corp.example", t0.Add(-10*time.Second)), // before the window
		cmd("A1", "", `CORP\SVC`, t0.Add(3*time.Second)),
		cmd("A2", "", `CORP\svc`, t0.Add(4*time.Second)), // a second one in the window: one record, one shell
	}
	live := map[string]bool{"LIVE": true}
	got := matchOrphans(lost, shells, live, "svc@corp.example", settle, false, t0.Add(2*time.Hour))
	if len(got) != 2 || got[1] != "A1" || got[2] != "NAMED" {
		t.Errorf("matchOrphans() = %v, want 1:A1 2:NAMED", got)
	}
	// While a Create is in flight, only names are trusted.
	got = matchOrphans(lost, shells, live, "svc@corp.example", settle, true, t0.Add(2*time.Hour))
	if len(got) != 1 || got[2] != "NAMED" {
		t.Errorf("matchOrphans(creating) = %v, want 2:NAMED", got)
	}
}

func TestSameAccount(t *testing.T) {
	f := func(owner, user string, want bool) {
		t.Helper()
		if got := sameAccount(owner, user); got != want {
			t.Errorf("sameAccount(%q, %q) = %v, want %v", owner, user, got, want)
		}
	}
	f(`WIN-NNMU24VVKJ0\vagrant`, "vagrant", true)
	f(`CORP\svc-eas`, "svc-eas@corp.example", true)
	f("SVC-EAS", `corp\svc-eas`, true)
	f("", "svc", true)
	f(`CORP\admin`, "svc", false)
}

func TestLostAnswer(t *testing.T) {
	f := func(err error, want bool) {
		t.Helper()
		if got := lostAnswer(err); got != want {
			t.Errorf("lostAnswer(%v) = %v, want %v", err, got, want)
		}
	}
	f(&TransportError{Action: "Create", Err: errAborted}, true)
	f(&TransportError{Action: "Create", Err: errors.New("connection reset by peer")}, true)
	f(&TransportError{Action: "Create", Err: &net.OpError{Op: "dial", Err: errors.New("refused")}}, false)
	f(&TransportError{Action: "Create", Err: errCreateHeld}, false)
	f(&StatusError{StatusCode: 504}, true)
	f(&StatusError{StatusCode: 500}, false)
	f(&FaultError{Code: 2150859173}, false)
	f(nil, false)
}

func FuzzParseShellEnumeration(f *testing.F) {
	if data, err := os.ReadFile("testdata/pypsrp/enumerate_shells_response.xml"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		page, err := parseShellEnumeration(bytes.NewReader(data), time.Now())
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v is not ErrProtocol", err)
			}
			return
		}
		for _, sh := range page.shells {
			if sh.ID == "" {
				t.Fatalf("shell without id: %+v", sh)
			}
		}
	})
}

package wsman_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
)

// frag builds one whole PSRP fragment (MS-PSRP 2.2.4) around data.
func frag(id uint64, data string) []byte {
	b := binary.BigEndian.AppendUint64(nil, id)
	b = binary.BigEndian.AppendUint64(b, 0)
	b = append(b, 3)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// echoHost is a PowerShellHost whose pools answer "open" and echo the
// pool's input; a pipeline echoes its arguments and, when args say "wait",
// waits for ctrl_c and answers "stopped".
type echoHost struct {
	refuse error
	infos  chan wsman.PoolInfo
}

func (h *echoHost) OpenPool(info wsman.PoolInfo) (wsman.Pool, error) {
	if h.refuse != nil {
		return nil, h.refuse
	}
	if h.infos != nil {
		h.infos <- info
	}
	return echoPool{}, nil
}

type echoPool struct{}

func (echoPool) Run(ctx context.Context, in io.Reader, out io.Writer) {
	if _, err := out.Write(append(frag(1, "open"), frag(2, "second")...)); err != nil {
		return
	}
	buf := make([]byte, 4096)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			_, _ = out.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (echoPool) StartPipeline(cmd wsman.Command, args []byte) error {
	if string(args) == "refuse" {
		return errors.New("refused")
	}
	return nil
}

func (echoPool) RunPipeline(ctx context.Context, cmd wsman.Command, args []byte, interrupt <-chan struct{}, in io.Reader, out io.Writer) {
	_, _ = out.Write(frag(3, string(args)))
	if string(args) == "wait" {
		select {
		case <-interrupt:
			_, _ = out.Write(frag(4, "stopped"))
		case <-ctx.Done():
		}
	}
}

const psURI = "http://schemas.microsoft.com/powershell/Microsoft.Exchange"

func psEnvelope(uri, action, shellID, body string) string {
	sel := ""
	if shellID != "" {
		sel = `<w:SelectorSet><w:Selector Name="ShellId">` + shellID + `</w:Selector></w:SelectorSet>`
	}
	return `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Header>` +
		`<a:Action>` + action + `</a:Action><a:MessageID>uuid:00000000-0000-0000-0000-000000000001</a:MessageID>` +
		`<w:MaxEnvelopeSize>153600</w:MaxEnvelopeSize><w:OperationTimeout>PT2S</w:OperationTimeout><w:ResourceURI>` + uri + `</w:ResourceURI>` +
		sel + `<w:OptionSet><w:Option MustComply="true" Name="protocolversion">2.3</w:Option></w:OptionSet></s:Header><s:Body>` + body + `</s:Body></s:Envelope>`
}

func psCreateBody(shellID string) string {
	return fmt.Sprintf(`<rsp:Shell ShellId="%s"><rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams><creationXml xmlns="http://schemas.microsoft.com/powershell">%s</creationXml></rsp:Shell>`,
		shellID, base64.StdEncoding.EncodeToString(frag(1, "caps")))
}

// psReceive is the part of a ReceiveResponse the tests check.
type psReceive struct {
	Streams []struct {
		Name      string `xml:"Name,attr"`
		CommandID string `xml:"CommandId,attr"`
		End       string `xml:"End,attr"`
		Data      string `xml:",chardata"`
	} `xml:"Body>ReceiveResponse>Stream"`
	States []struct {
		State    string `xml:"State,attr"`
		ExitCode string `xml:"ExitCode"`
	} `xml:"Body>ReceiveResponse>CommandState"`
}

func parsePSReceive(t *testing.T, body string) psReceive {
	t.Helper()
	var r psReceive
	if err := xml.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("ReceiveResponse: %v\n%s", err, body)
	}
	return r
}

func TestPowerShellShell(t *testing.T) {
	host := &echoHost{infos: make(chan wsman.PoolInfo, 1)}
	f := newFixture(t, fixtureConfig{opts: wsman.Options{PowerShell: host, PowerShellConfigurations: []string{"Microsoft.Exchange"}}})
	const shellID = "0D8B5C4E-2F1A-4B3C-9D8E-7F6A5B4C3D2E"
	post := func(action, shell, body string) (int, string) {
		t.Helper()
		status, _, resp := f.post(t, psEnvelope(psURI, action, shell, body))
		return status, resp
	}
	status, body := post("http://schemas.xmlsoap.org/ws/2004/09/transfer/Create", "", psCreateBody(shellID))
	if status != http.StatusOK || !strings.Contains(body, `<rsp:ShellId>`+shellID+`</rsp:ShellId>`) || !strings.Contains(body, `<rsp:OutputStreams>stdout</rsp:OutputStreams>`) {
		t.Fatalf("Create: %d %s", status, body)
	}
	info := <-host.infos
	if info.ShellID != shellID || string(info.CreationXML) != string(frag(1, "caps")) || info.Configuration != "Microsoft.Exchange" || info.Options["PROTOCOLVERSION"] != "2.3" {
		t.Errorf("PoolInfo = %+v", info)
	}

	// The pool's Receive: one Stream per fragment, no CommandId, no state.
	status, body = post("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive", shellID, `<rsp:Receive><rsp:DesiredStream>stdout</rsp:DesiredStream></rsp:Receive>`)
	r := parsePSReceive(t, body)
	if status != http.StatusOK || len(r.Streams) != 2 || r.Streams[0].CommandID != "" || r.Streams[0].End != "" || len(r.States) != 0 {
		t.Fatalf("pool Receive: %d %+v", status, r)
	}

	// A second Create with the same ShellId is refused.
	status, body = post("http://schemas.xmlsoap.org/ws/2004/09/transfer/Create", "", psCreateBody(shellID))
	wantFault(t, status, body, wsman.CodeInvalidParameter)

	// A pipeline with the client's CommandId.
	const cmdID = "11111111-2222-4333-8444-555555555555"
	args := base64.StdEncoding.EncodeToString([]byte("hello"))
	status, body = post("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command", shellID,
		`<rsp:CommandLine CommandId="`+cmdID+`"><rsp:Command /><rsp:Arguments>`+args+`</rsp:Arguments></rsp:CommandLine>`)
	if status != http.StatusOK || !strings.Contains(body, `<rsp:CommandId>`+cmdID+`</rsp:CommandId>`) {
		t.Fatalf("Command: %d %s", status, body)
	}
	receiveCmd := func(id string) (int, string) {
		return post("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive", shellID,
			`<rsp:Receive><rsp:DesiredStream CommandId="`+id+`">stdout</rsp:DesiredStream></rsp:Receive>`)
	}
	status, body = receiveCmd(cmdID)
	r = parsePSReceive(t, body)
	if status != http.StatusOK || len(r.Streams) != 1 || r.Streams[0].CommandID != cmdID || len(r.States) != 1 ||
		!strings.HasSuffix(r.States[0].State, "/Done") || r.States[0].ExitCode != "0" {
		t.Fatalf("pipeline Receive: %d %+v", status, r)
	}
	if data, _ := base64.StdEncoding.DecodeString(r.Streams[0].Data); string(data) != string(frag(3, "hello")) {
		t.Errorf("pipeline output %q", data)
	}

	// ctrl_c, as MS-PSRP spells it, stops a waiting pipeline, which then
	// reports and ends; the shell lives on.
	const waitID = "21111111-2222-4333-8444-555555555555"
	args = base64.StdEncoding.EncodeToString([]byte("wait"))
	if status, body = post("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command", shellID,
		`<rsp:CommandLine CommandId="`+waitID+`"><rsp:Command /><rsp:Arguments>`+args+`</rsp:Arguments></rsp:CommandLine>`); status != http.StatusOK {
		t.Fatalf("Command: %d %s", status, body)
	}
	status, body = post("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal", shellID,
		`<rsp:Signal CommandId="`+waitID+`"><rsp:Code>http://schemas.microsoft.com/powershell/signal/crtl_c</rsp:Code></rsp:Signal>`)
	if status != http.StatusOK {
		t.Fatalf("Signal: %d %s", status, body)
	}
	var got []string
	r = psReceive{}
	for len(r.States) == 0 || !strings.HasSuffix(r.States[0].State, "/Done") {
		status, body = receiveCmd(waitID)
		if status != http.StatusOK {
			t.Fatalf("Receive after ctrl_c: %d %s", status, body)
		}
		r = parsePSReceive(t, body)
		for _, s := range r.Streams {
			d, _ := base64.StdEncoding.DecodeString(s.Data)
			got = append(got, string(d[21:]))
		}
	}
	if strings.Join(got, ",") != "wait,stopped" {
		t.Errorf("pipeline output after ctrl_c = %v, want wait,stopped", got)
	}

	// Terminate forgets it; the id may be used again (pypsrp
	// test_psrp_multiple_invocations.yml reuses it).
	if status, body = post("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal", shellID,
		`<rsp:Signal CommandId="`+waitID+`"><rsp:Code>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/Terminate</rsp:Code></rsp:Signal>`); status != http.StatusOK {
		t.Fatalf("Terminate: %d %s", status, body)
	}
	if status, body = post("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command", shellID,
		`<rsp:CommandLine CommandId="`+waitID+`"><rsp:Command /><rsp:Arguments>`+base64.StdEncoding.EncodeToString([]byte("again"))+`</rsp:Arguments></rsp:CommandLine>`); status != http.StatusOK {
		t.Fatalf("Command with a reused id: %d %s", status, body)
	}

	// An unknown CommandId answers as Windows does.
	status, body = receiveCmd("31111111-2222-4333-8444-555555555555")
	if msg := wantFault(t, status, body, wsman.CodeInvalidSelectors); !strings.Contains(msg, "command identifier that does not exist") {
		t.Errorf("unknown command fault message = %q", msg)
	}
	// Shell-level input reaches the pool.
	status, body = post("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send", shellID,
		`<rsp:Send><rsp:Stream Name="pr">`+base64.StdEncoding.EncodeToString(frag(9, "input"))+`</rsp:Stream></rsp:Send>`)
	if status != http.StatusOK {
		t.Fatalf("Send pr: %d %s", status, body)
	}
	status, body = post("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive", shellID, `<rsp:Receive><rsp:DesiredStream>stdout</rsp:DesiredStream></rsp:Receive>`)
	if r = parsePSReceive(t, body); status != http.StatusOK || len(r.Streams) != 1 {
		t.Fatalf("pool Receive after Send: %d %+v", status, r)
	}
	if status, body = post("http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete", shellID, ""); status != http.StatusOK {
		t.Fatalf("Delete: %d %s", status, body)
	}
}

func TestPowerShellShellRefusals(t *testing.T) {
	quota := wsman.FaultShellQuota("This user is allowed a maximum of 18 concurrent shells, which has been exceeded.")
	f := newFixture(t, fixtureConfig{opts: wsman.Options{PowerShell: &echoHost{refuse: quota}, PowerShellConfigurations: []string{"Microsoft.Exchange"}}})
	create := func(path, uri, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, f.ts.URL+path, strings.NewReader(psEnvelope(uri, "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create", "", body)))
		req.SetBasicAuth(testUser, testPass)
		req.Header.Set("Content-Type", "application/soap+xml;charset=UTF-8")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	good := psCreateBody("0D8B5C4E-2F1A-4B3C-9D8E-7F6A5B4C3D2E")
	for _, tc := range []struct {
		name, path, uri, body string
		want                  uint64
	}{
		{"quota from the host", "/PowerShell/", psURI, good, wsman.CodeMaxShells},
		{"unknown configuration", "/wsman", "http://schemas.microsoft.com/powershell/Microsoft.PowerShell", good, wsman.CodeResourceNotFound},
		{"cmd shell on the Exchange path", "/powershell", "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd", `<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>`, wsman.CodeResourceNotFound},
		{"ShellId not a GUID", "/PowerShell", psURI, psCreateBody("not-a-guid"), wsman.CodeInvalidParameter},
		{"no creationXml", "/PowerShell", psURI, `<rsp:Shell><rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams></rsp:Shell>`, wsman.CodeInvalidBody},
		{"stderr stream", "/PowerShell", psURI, strings.Replace(good, ">stdout<", ">stdout stderr<", 1), wsman.CodeInvalidParameter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := create(tc.path, tc.uri, tc.body)
			wantFault(t, status, body, tc.want)
		})
	}
}

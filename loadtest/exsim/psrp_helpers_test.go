package exsim

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/runspace/psrp"
	"github.com/easconnector/easconnector/runspace/psrp/psrptest"
)

// psClient is a minimal PSRP-over-WS-Man client for exsim's tests: the
// envelopes have the shape pypsrp sends (its recordings), the PSRP layer
// is the product's codec (runspace/psrp), so the server is checked against
// an implementation other than its own.
type psClient struct {
	t          testing.TB
	url, user  string
	pass       string
	http       *http.Client
	shellID    string
	rpid       psrp.GUID
	frag       psrp.Fragmenter
	asm        psrp.Assembler
	maxEnvelop int
}

func newPSClient(t testing.TB, s *Sim, i int) *psClient {
	return &psClient{t: t, url: s.PowerShellURL(i), user: DefaultUser, pass: DefaultPassword,
		http: &http.Client{Timeout: 30 * time.Second}, frag: psrp.Fragmenter{MaxFragment: 32 << 10}, maxEnvelop: 153600}
}

// envelope builds a request envelope like pypsrp's.
func (c *psClient) envelope(action, shellID, options, body string) string {
	var b strings.Builder
	b.WriteString(`<s:Envelope xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:wsman="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Header>`)
	fmt.Fprintf(&b, `<wsa:Action s:mustUnderstand="true">%s</wsa:Action>`, action)
	fmt.Fprintf(&b, `<wsman:MaxEnvelopeSize s:mustUnderstand="true">%d</wsman:MaxEnvelopeSize>`, c.maxEnvelop)
	fmt.Fprintf(&b, `<wsa:MessageID>uuid:%s</wsa:MessageID><wsman:OperationTimeout>PT5S</wsman:OperationTimeout>`, psrp.NewGUID())
	b.WriteString(`<wsa:ReplyTo><wsa:Address s:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:Address></wsa:ReplyTo>`)
	fmt.Fprintf(&b, `<wsman:ResourceURI s:mustUnderstand="true">%s</wsman:ResourceURI><wsa:To>%s</wsa:To>`, ResourceURI, c.url)
	if options != "" {
		b.WriteString(`<wsman:OptionSet s:mustUnderstand="true">` + options + `</wsman:OptionSet>`)
	}
	if shellID != "" {
		fmt.Fprintf(&b, `<wsman:SelectorSet><wsman:Selector Name="ShellId">%s</wsman:Selector></wsman:SelectorSet>`, shellID)
	}
	b.WriteString(`</s:Header><s:Body>` + body + `</s:Body></s:Envelope>`)
	return b.String()
}

func (c *psClient) post(env string) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.url, strings.NewReader(env))
	if err != nil {
		c.t.Fatal(err)
	}
	req.SetBasicAuth(c.user, c.pass)
	req.Header.Set("Content-Type", "application/soap+xml;charset=UTF-8")
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("post: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (c *psClient) message(typ psrp.MessageType, pid psrp.GUID, data []byte) []byte {
	c.t.Helper()
	frags, err := c.frag.Split(psrp.AppendMessage(nil, psrp.Message{Destination: psrp.DestinationServer, Type: typ, RPID: c.rpid, PID: pid, Data: data}))
	if err != nil {
		c.t.Fatal(err)
	}
	return bytes.Join(frags, nil)
}

const (
	wsCreate  = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
	wsDelete  = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
	wsCommand = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command"
	wsReceive = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive"
	wsSignal  = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal"
	wsSend    = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send"
)

// create opens the pool and returns the HTTP status and response envelope.
func (c *psClient) create() (int, *psrptest.Envelope) {
	c.t.Helper()
	c.rpid = psrp.NewGUID()
	c.shellID = strings.ToUpper(c.rpid.String())
	creation := append(c.message(psrp.SessionCapability, psrp.GUID{}, psrp.BuildSessionCapability()),
		c.message(psrp.InitRunspacePool, psrp.GUID{}, psrp.BuildInitRunspacePool())...)
	body := fmt.Sprintf(`<rsp:Shell ShellId="%s"><rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams><creationXml xmlns="http://schemas.microsoft.com/powershell">%s</creationXml></rsp:Shell>`,
		c.shellID, base64.StdEncoding.EncodeToString(creation))
	status, resp := c.post(c.envelope(wsCreate, "", `<wsman:Option MustComply="true" Name="protocolversion">2.3</wsman:Option>`, body))
	env, err := psrptest.ParseEnvelope(resp)
	if err != nil {
		c.t.Fatalf("create response: %v\n%s", err, resp)
	}
	return status, env
}

// receive long-polls the pool (commandID "") or a pipeline and returns the
// messages of that response.
func (c *psClient) receive(commandID string) (*psrptest.Envelope, []psrp.Message) {
	c.t.Helper()
	ds := `<rsp:DesiredStream>stdout</rsp:DesiredStream>`
	if commandID != "" {
		ds = fmt.Sprintf(`<rsp:DesiredStream CommandId="%s">stdout</rsp:DesiredStream>`, commandID)
	}
	_, resp := c.post(c.envelope(wsReceive, c.shellID, `<wsman:Option Name="WSMAN_CMDSHELL_OPTION_KEEPALIVE">True</wsman:Option>`, `<rsp:Receive>`+ds+`</rsp:Receive>`))
	env, err := psrptest.ParseEnvelope(resp)
	if err != nil {
		c.t.Fatalf("receive response: %v\n%s", err, resp)
	}
	var msgs []psrp.Message
	for _, p := range env.Payloads {
		if err := c.asm.Write(p.Data, func(b []byte) error {
			m, err := psrp.ParseMessage(b)
			if err != nil {
				return err
			}
			m.Data = bytes.Clone(m.Data)
			msgs = append(msgs, m)
			return nil
		}); err != nil {
			c.t.Fatalf("receive: %v", err)
		}
	}
	return env, msgs
}

// open creates the pool and reads until RUNSPACEPOOL_STATE.
func (c *psClient) open() []psrp.Message {
	c.t.Helper()
	status, env := c.create()
	if status != http.StatusOK || env.Body == "Fault" {
		c.t.Fatalf("create: HTTP %d, body %s, fault %s", status, env.Body, env.FaultCode)
	}
	var all []psrp.Message
	for range 10 {
		_, msgs := c.receive("")
		all = append(all, msgs...)
		for _, m := range msgs {
			if m.Type == psrp.RunspacePoolState {
				return all
			}
		}
	}
	c.t.Fatalf("no RUNSPACEPOOL_STATE in %d messages", len(all))
	return nil
}

// start sends a Command with the pipeline in its Arguments.
func (c *psClient) start(cmds []psrp.Command) (psrp.GUID, int, *psrptest.Envelope) {
	c.t.Helper()
	data, err := psrp.BuildCreatePipeline(cmds)
	if err != nil {
		c.t.Fatal(err)
	}
	pid := psrp.NewGUID()
	id := strings.ToUpper(pid.String())
	// As pypsrp does (src/pypsrp/powershell.py _invoke): the first
	// fragment in Arguments, the others on the pipeline's stdin.
	frags, err := c.frag.Split(psrp.AppendMessage(nil, psrp.Message{Destination: psrp.DestinationServer, Type: psrp.CreatePipeline, RPID: c.rpid, PID: pid, Data: data}))
	if err != nil {
		c.t.Fatal(err)
	}
	body := fmt.Sprintf(`<rsp:CommandLine CommandId="%s"><rsp:Command /><rsp:Arguments>%s</rsp:Arguments></rsp:CommandLine>`,
		id, base64.StdEncoding.EncodeToString(frags[0]))
	status, resp := c.post(c.envelope(wsCommand, c.shellID, `<wsman:Option Name="WINRS_SKIP_CMD_SHELL">False</wsman:Option>`, body))
	env, err := psrptest.ParseEnvelope(resp)
	if err != nil {
		c.t.Fatalf("command response: %v\n%s", err, resp)
	}
	for _, f := range frags[1:] {
		st, resp := c.post(c.envelope(wsSend, c.shellID, "", fmt.Sprintf(`<rsp:Send><rsp:Stream Name="stdin" CommandId="%s">%s</rsp:Stream></rsp:Send>`, id, base64.StdEncoding.EncodeToString(f))))
		if st != http.StatusOK {
			c.t.Fatalf("Send: HTTP %d %s", st, resp)
		}
	}
	return pid, status, env
}

// operationTimedOut is the fault code of a Receive that saw no output
// within its w:OperationTimeout (ERROR_WSMAN_OPERATION_TIMEDOUT,
// 0x80338029; MS-WSMV 3.1.4.14): the client polls again. Under load a large
// pipeline can take longer than one poll to start answering.
const operationTimedOut = "2150858793"

// run runs a pipeline to its PIPELINE_STATE and returns every message.
func (c *psClient) run(cmds ...psrp.Command) []psrp.Message {
	c.t.Helper()
	pid, status, env := c.start(cmds)
	if status != http.StatusOK {
		c.t.Fatalf("command: HTTP %d, fault %s", status, env.FaultCode)
	}
	return c.drain(pid)
}

func (c *psClient) drain(pid psrp.GUID) []psrp.Message {
	c.t.Helper()
	id := strings.ToUpper(pid.String())
	var all []psrp.Message
	for range 1000 {
		env, msgs := c.receive(id)
		if env.Body == "Fault" && env.FaultCode == operationTimedOut {
			continue // no output within the operation timeout: poll again, as WinRM clients do
		}
		if env.Body == "Fault" {
			c.t.Fatalf("receive: fault %s", env.FaultCode)
		}
		all = append(all, msgs...)
		if len(env.CommandStates) > 0 && strings.HasSuffix(env.CommandStates[0], "/Done") {
			c.signal(id, "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/Terminate")
			return all
		}
	}
	c.t.Fatal("pipeline never done")
	return nil
}

func (c *psClient) signal(commandID, code string) (int, *psrptest.Envelope) {
	c.t.Helper()
	status, resp := c.post(c.envelope(wsSignal, c.shellID, "", fmt.Sprintf(`<rsp:Signal CommandId="%s"><rsp:Code>%s</rsp:Code></rsp:Signal>`, commandID, code)))
	env, err := psrptest.ParseEnvelope(resp)
	if err != nil {
		c.t.Fatal(err)
	}
	return status, env
}

func (c *psClient) close() {
	c.t.Helper()
	if status, _ := c.post(c.envelope(wsDelete, c.shellID, "", "")); status != http.StatusOK {
		c.t.Errorf("delete: HTTP %d", status)
	}
}

// types lists the message types of msgs.
func types(msgs []psrp.Message) []psrp.MessageType {
	out := make([]psrp.MessageType, len(msgs))
	for i, m := range msgs {
		out[i] = m.Type
	}
	return out
}

// outputs decodes the PIPELINE_OUTPUT objects of msgs.
func outputs(t testing.TB, msgs []psrp.Message) []*psrp.Object {
	t.Helper()
	var out []*psrp.Object
	for _, m := range msgs {
		if m.Type != psrp.PipelineOutput {
			continue
		}
		v, err := psrp.DecodeValue(m.Data)
		if err != nil {
			t.Fatalf("PIPELINE_OUTPUT: %v\n%s", err, m.Data)
		}
		out = append(out, v.Obj)
	}
	return out
}

// finalState parses the last message, which must be PIPELINE_STATE.
func finalState(t testing.TB, msgs []psrp.Message) psrp.PipelineStateInfo {
	t.Helper()
	if len(msgs) == 0 || msgs[len(msgs)-1].Type != psrp.PipelineState {
		t.Fatalf("last message types %v, want PIPELINE_STATE last", types(msgs))
	}
	st, err := psrp.ParsePipelineState(msgs[len(msgs)-1].Data)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

package runspace

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"github.com/masterzen/simplexml/dom"
	"github.com/masterzen/winrm/soap"

	"github.com/easconnector/easconnector/runspace/psrp"
)

// The WS-Management binding of MS-PSRP (MS-PSRP 3.1.5.3), as Windows
// PowerShell and pypsrp speak it (recorded in jborean93/pypsrp
// tests/tests_pypsrp/responses/test_psrp_*.yml, kept in
// runspace/psrp/testdata/pypsrp):
//   - Create (3.1.5.3.1): ResourceURI http://schemas.microsoft.com/powershell/<configuration>,
//     option protocolversion (MustComply), body rsp:Shell with the client's own
//     ShellId, InputStreams "stdin pr", OutputStreams "stdout" and creationXml
//     (base64 of the SESSION_CAPABILITY and INIT_RUNSPACEPOOL fragments);
//   - Receive (3.1.5.3.7) of "stdout", with option WSMAN_CMDSHELL_OPTION_KEEPALIVE,
//     for the pool (no CommandId) or a pipeline (DesiredStream/@CommandId);
//   - Command (3.1.5.3.4): CommandLine/@CommandId = the pipeline id, an empty
//     Command and Arguments = base64 of the first CREATE_PIPELINE fragment(s);
//     option WINRS_SKIP_CMD_SHELL False;
//   - Send (3.1.5.3.5) of the remaining fragments on stream "stdin";
//   - Signal (3.1.5.3.9) powershell/signal/crtl_c to stop a pipeline, and
//     terminate once it is finished (as pypsrp does after every pipeline);
//   - Delete (3.1.5.3.11) of the shell.

const (
	psrpResourcePrefix = "http://schemas.microsoft.com/powershell/"
	nsPowerShell       = "http://schemas.microsoft.com/powershell"
	// signalStop is the stop signal of MS-PSRP 3.1.5.3.9, misspelled as the
	// specification and PowerShell itself spell it (WSManPluginConstants.
	// CtrlCSignal = "powershell/signal/crtl_c" on the server side).
	signalStop      = "powershell/signal/crtl_c"
	signalTerminate = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate"
	actionCreate    = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
	actionDelete    = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
	actionGet       = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
	actionCommand   = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command"
	actionSend      = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send"
	actionReceive   = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive"
	actionSignal    = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal"
	commandDone     = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
	wsmanConfigURI  = "http://schemas.microsoft.com/wbem/wsman/1/config"
)

// psEnvelope builds one request of the binding. shellID is empty for Create
// and the config Get; timeout overrides the OperationTimeout.
func (s *Session) psEnvelope(action, resourceURI, shellID, timeout string, options ...*soap.HeaderOption) *soap.SoapMessage {
	m := soap.NewMessage()
	h := m.Header().
		To(s.tr.url).
		ReplyTo("http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous").
		MaxEnvelopeSize(s.ps.envelope).
		Id("uuid:" + psrp.NewGUID().String()).
		Locale("en-US").
		Timeout(timeout).
		Action(action).
		ResourceURI(resourceURI)
	if shellID != "" {
		h = h.ShellId(shellID)
	}
	for _, o := range options {
		h = h.AddOption(o)
	}
	h.Build()
	return m
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// createEnvelope is the Create of the runspace pool.
func (s *Session) createEnvelope(creation []byte) string {
	m := s.psEnvelope(actionCreate, s.ps.resourceURI, "", s.opts.wsmanTimeout(), soap.NewHeaderOption("protocolversion", psrp.ProtocolVersion))
	shell := m.CreateBodyElement("Shell", soap.DOM_NS_WIN_SHELL)
	shell.SetAttr("ShellId", s.ps.rpid.String())
	m.CreateElement(shell, "InputStreams", soap.DOM_NS_WIN_SHELL).SetContent("stdin pr")
	m.CreateElement(shell, "OutputStreams", soap.DOM_NS_WIN_SHELL).SetContent("stdout")
	cx := dom.CreateElement("creationXml")
	shell.AddChild(cx)
	cx.SetNamespace("psh", nsPowerShell)
	cx.SetContent(b64(creation))
	// MS-PSRP 3.1.5.3.1: the protocolversion option MUST be complied with.
	return strings.Replace(m.String(), `Name="protocolversion">`, `Name="protocolversion" MustComply="true">`, 1)
}

func (s *Session) receiveEnvelope(commandID, timeout string) string {
	m := s.psEnvelope(actionReceive, s.ps.resourceURI, s.ps.rpid.String(), timeout, soap.NewHeaderOption("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "True"))
	r := m.CreateBodyElement("Receive", soap.DOM_NS_WIN_SHELL)
	ds := m.CreateElement(r, "DesiredStream", soap.DOM_NS_WIN_SHELL)
	if commandID != "" {
		ds.SetAttr("CommandId", commandID)
	}
	ds.SetContent("stdout")
	return m.String()
}

func (s *Session) commandEnvelope(commandID string, args []byte) string {
	m := s.psEnvelope(actionCommand, s.ps.resourceURI, s.ps.rpid.String(), s.opts.wsmanTimeout(), soap.NewHeaderOption("WINRS_SKIP_CMD_SHELL", "False"))
	cl := m.CreateBodyElement("CommandLine", soap.DOM_NS_WIN_SHELL)
	cl.SetAttr("CommandId", commandID)
	m.CreateElement(cl, "Command", soap.DOM_NS_WIN_SHELL)
	m.CreateElement(cl, "Arguments", soap.DOM_NS_WIN_SHELL).SetContent(b64(args))
	return m.String()
}

func (s *Session) sendEnvelope(commandID string, data []byte) string {
	m := s.psEnvelope(actionSend, s.ps.resourceURI, s.ps.rpid.String(), s.opts.wsmanTimeout())
	st := m.CreateElement(m.CreateBodyElement("Send", soap.DOM_NS_WIN_SHELL), "Stream", soap.DOM_NS_WIN_SHELL)
	st.SetAttr("Name", "stdin")
	st.SetAttr("CommandId", commandID)
	st.SetContent(b64(data))
	return m.String()
}

func (s *Session) signalEnvelope(commandID, code string) string {
	m := s.psEnvelope(actionSignal, s.ps.resourceURI, s.ps.rpid.String(), s.opts.wsmanTimeout())
	sig := m.CreateBodyElement("Signal", soap.DOM_NS_WIN_SHELL)
	sig.SetAttr("CommandId", commandID)
	m.CreateElement(sig, "Code", soap.DOM_NS_WIN_SHELL).SetContent(code)
	return m.String()
}

func (s *Session) deleteEnvelope() string {
	m := s.psEnvelope(actionDelete, s.ps.resourceURI, s.ps.rpid.String(), s.opts.wsmanTimeout())
	m.NewBody()
	return m.String()
}

// configEnvelope reads WinRM's configuration, which holds the server's
// MaxEnvelopeSizekb (recorded in test_wsman_update_envelope_size_*.yml).
func (s *Session) configEnvelope() string {
	m := s.psEnvelope(actionGet, wsmanConfigURI, "", "PT10S")
	m.NewBody()
	return m.String()
}

// receiveResult is what a ReceiveResponse carries.
type receiveResult struct {
	streams [][]byte // decoded rsp:Stream contents, in order
	done    bool     // a CommandState Done
}

// parseReceive reads a ReceiveResponse: every rsp:Stream (base64 PSRP
// fragments) and whether the command is Done. The envelope is the
// server's SOAP, already checked for faults by the transport; a tag scan
// finds what is needed without the cost of a full XML decoder over
// ~150 KB of base64 per response.
func parseReceive(body string) (receiveResult, error) {
	var r receiveResult
	sawBody := false
	for i := 0; ; {
		lt := strings.IndexByte(body[i:], '<')
		if lt < 0 {
			break
		}
		i += lt + 1
		gt := strings.IndexByte(body[i:], '>')
		if gt < 0 {
			return r, fmt.Errorf("wsman Receive: %w: unterminated tag", ErrProtocol)
		}
		tag := body[i : i+gt]
		i += gt + 1
		if tag == "" || tag[0] == '/' || tag[0] == '?' || tag[0] == '!' {
			continue
		}
		name, attrs, _ := strings.Cut(tag, " ")
		if c := strings.IndexByte(name, ':'); c >= 0 {
			name = name[c+1:]
		}
		name = strings.TrimSuffix(name, "/")
		switch name {
		case "ReceiveResponse":
			sawBody = true
		case "CommandState":
			if strings.Contains(attrs, `State="`+commandDone+`"`) {
				r.done = true
			}
		case "Stream":
			if strings.HasSuffix(tag, "/") {
				continue
			}
			end := strings.IndexByte(body[i:], '<')
			if end < 0 {
				return r, fmt.Errorf("wsman Receive: %w: unterminated stream", ErrProtocol)
			}
			text := strings.TrimSpace(body[i : i+end])
			i += end
			if text == "" {
				continue
			}
			b, err := base64.StdEncoding.DecodeString(text)
			if err != nil {
				return r, fmt.Errorf("wsman Receive: %w: stream: %v", ErrProtocol, err)
			}
			r.streams = append(r.streams, b)
		}
	}
	if !sawBody {
		return r, fmt.Errorf("wsman Receive: %w: no ReceiveResponse in the answer", ErrProtocol)
	}
	return r, nil
}

// parseMaxEnvelopeKB reads cfg:MaxEnvelopeSizekb from a config GetResponse.
func parseMaxEnvelopeKB(body string) (int, bool) {
	i := strings.Index(body, "MaxEnvelopeSizekb>")
	if i < 0 {
		return 0, false
	}
	rest := body[i+len("MaxEnvelopeSizekb>"):]
	j := strings.IndexByte(rest, '<')
	if j < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(rest[:j]))
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// fragmentSize is the largest fragment that fits one request of an
// envelope of env bytes once base64-encoded, leaving room for the SOAP
// header (about 1.5 KB with our options; pypsrp keeps the same margin).
func fragmentSize(env int) int {
	return (env - 2048) / 4 * 3
}

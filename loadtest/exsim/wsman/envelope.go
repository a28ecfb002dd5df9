package wsman

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// XML namespaces of WS-Management and WinRS.
const (
	nsSOAP       = "http://www.w3.org/2003/05/soap-envelope"
	nsAddressing = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
	nsTransfer   = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
	nsWSMan      = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
	nsWSManMS    = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"
	nsShell      = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
	nsWSManFault = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
	// nsPowerShell prefixes the resource URIs of PowerShell endpoints
	// (MS-PSRP 3.1.5.3: http://schemas.microsoft.com/powershell/<configuration>)
	// and is the namespace of creationXml.
	nsPowerShell = "http://schemas.microsoft.com/powershell"
)

// Actions, the resource and the signals of the WinRS subset served.
const (
	actionCreate = nsTransfer + "/Create"
	actionDelete = nsTransfer + "/Delete"
	actionGet    = nsTransfer + "/Get"
	// resourceURIConfig is the WinRM service configuration, which clients
	// Get to learn MaxEnvelopeSizekb (pypsrp
	// test_wsman_update_envelope_size_4096.yml).
	resourceURIConfig = "http://schemas.microsoft.com/wbem/wsman/1/config"
	actionCommand     = nsShell + "/Command"
	actionSend        = nsShell + "/Send"
	actionReceive     = nsShell + "/Receive"
	actionSignal      = nsShell + "/Signal"
	resourceURICmd    = nsShell + "/cmd"

	signalTerminate = nsShell + "/signal/terminate"
	signalCtrlC     = nsShell + "/signal/ctrl_c"
	signalCtrlBreak = nsShell + "/signal/ctrl_break"
	signalPSCtrlC   = "http://schemas.microsoft.com/powershell/signal/ctrl_c"
	// The stop signal: MS-PSRP 3.1.5.3.9 says the code "MUST be
	// powershell/signal/crtl_c"; pypsrp sends "powershell/signal/ctrl_c"
	// (src/pypsrp/shell.py SignalCode.PS_CTRL_C); both are taken, bare
	// or under http://schemas.microsoft.com/.
	signalPSCrtlC         = "http://schemas.microsoft.com/powershell/signal/crtl_c"
	signalPSCtrlCRelative = "powershell/signal/ctrl_c"
	signalPSCrtlCRelative = "powershell/signal/crtl_c"
	stateDone             = nsShell + "/CommandState/Done"
	stateRunning          = nsShell + "/CommandState/Running"
	anonymousReplyTo      = nsAddressing + "/role/anonymous"
	minEnvelopeSize       = 8192 // DSP0226: a service rejects a smaller MaxEnvelopeSize
	maxDurationSecond     = 1e9  // xs:duration values above this are clamped anyway; bound the arithmetic
)

// WINRS_* options the server understands. Shell options come from Create,
// command options from Command; commands see both (command wins).
const (
	OptionNoProfile        = "WINRS_NOPROFILE"
	OptionCodepage         = "WINRS_CODEPAGE"
	OptionConsoleModeStdin = "WINRS_CONSOLEMODE_STDIN"
	OptionSkipCmdShell     = "WINRS_SKIP_CMD_SHELL"
)

// request is one parsed and validated WS-Management request.
type request struct {
	action      string
	messageID   string
	to          string
	maxEnvelope int           // w:MaxEnvelopeSize in bytes; 0 when absent
	timeout     time.Duration // w:OperationTimeout; valid when hasTimeout
	hasTimeout  bool
	shellID     string            // w:Selector Name="ShellId", upper-cased
	resourceURI string            // w:ResourceURI as sent
	ps          bool              // resourceURI names a PowerShell endpoint
	options     map[string]string // w:OptionSet, names upper-cased

	shell   *shellBody
	command *commandBody
	send    []sendStream
	receive *receiveBody
	signal  *signalBody

	raw         []byte           // the envelope as received
	enumeration *enumerationBody // Enumerate and Pull (enumerate.go)
}

// shellBody is a Create's rsp:Shell. PowerShell clients choose the ShellId
// and send creationXml (MS-PSRP 3.1.5.3, wxf:Create; pypsrp
// tests/tests_pypsrp/responses/test_psrp_open_runspace.yml).
type shellBody struct {
	id          string // ShellId attribute, upper-cased; "" when absent
	inputs      []string
	outputs     []string
	creationXML []byte // decoded creationXml; nil when absent
}

type commandBody struct {
	id   string // CommandId attribute (PowerShell pipelines), upper-cased
	name string
	args []string
}

type sendStream struct {
	name      string
	commandID string
	end       bool
	data      []byte
}

type receiveBody struct {
	commandID string
	streams   []string
}

type signalBody struct {
	commandID string
	code      string
}

// XML shapes of requests. Repeated elements are slices so duplicates are
// detected instead of silently taking the last one.
type xmlEnvelope struct {
	XMLName xml.Name    `xml:"http://www.w3.org/2003/05/soap-envelope Envelope"`
	Header  []xmlHeader `xml:"http://www.w3.org/2003/05/soap-envelope Header"`
	Body    []xmlBody   `xml:"http://www.w3.org/2003/05/soap-envelope Body"`
}

type xmlHeader struct {
	To               []string       `xml:"http://schemas.xmlsoap.org/ws/2004/08/addressing To"`
	Action           []string       `xml:"http://schemas.xmlsoap.org/ws/2004/08/addressing Action"`
	MessageID        []string       `xml:"http://schemas.xmlsoap.org/ws/2004/08/addressing MessageID"`
	MaxEnvelopeSize  []string       `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd MaxEnvelopeSize"`
	OperationTimeout []string       `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd OperationTimeout"`
	ResourceURI      []string       `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd ResourceURI"`
	SelectorSet      []xmlNamedSet  `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd SelectorSet"`
	OptionSet        []xmlOptionSet `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd OptionSet"`
}

type xmlNamedSet struct {
	Selectors []xmlNamed `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd Selector"`
}

type xmlOptionSet struct {
	Options []xmlNamed `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd Option"`
}

type xmlNamed struct {
	Name  string `xml:"Name,attr"`
	Value string `xml:",chardata"`
}

type xmlBody struct {
	Shell       []xmlShell       `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Shell"`
	CommandLine []xmlCommandLine `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell CommandLine"`
	Send        []xmlSend        `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Send"`
	Receive     []xmlReceive     `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Receive"`
	Signal      []xmlSignal      `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Signal"`
	Other       []xmlAny         `xml:",any"`
}

type xmlAny struct {
	XMLName xml.Name
}

type xmlShell struct {
	ShellID       string   `xml:"ShellId,attr"`
	CreationXML   []string `xml:"http://schemas.microsoft.com/powershell creationXml"`
	InputStreams  []string `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell InputStreams"`
	OutputStreams []string `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell OutputStreams"`
}

type xmlCommandLine struct {
	CommandID string   `xml:"CommandId,attr"`
	Command   []string `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Command"`
	Arguments []string `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Arguments"`
}

type xmlSend struct {
	Streams []xmlStream `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Stream"`
}

type xmlStream struct {
	Name      string `xml:"Name,attr"`
	CommandID string `xml:"CommandId,attr"`
	End       string `xml:"End,attr"`
	Data      string `xml:",chardata"`
}

type xmlReceive struct {
	DesiredStream []xmlDesiredStream `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell DesiredStream"`
}

type xmlDesiredStream struct {
	CommandID string `xml:"CommandId,attr"`
	Streams   string `xml:",chardata"`
}

type xmlSignal struct {
	CommandID string   `xml:"CommandId,attr"`
	Code      []string `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Code"`
}

// parseEnvelope decodes and validates one request envelope. The returned
// request is never nil: when the header could be read, its messageID is set
// even if a fault is returned, so the fault can echo it in RelatesTo.
func parseEnvelope(data []byte) (*request, *Fault) {
	req := &request{raw: data}
	var env xmlEnvelope
	dec := xml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&env); err != nil {
		return req, faultInvalidBody(fmt.Sprintf("XML: %v.", err))
	}
	// Anything but whitespace or comments after the envelope is malformed.
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return req, faultInvalidBody(fmt.Sprintf("XML after envelope: %v.", err))
		}
		switch t := tok.(type) {
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return req, faultInvalidBody("Text after the envelope.")
			}
		case xml.Comment, xml.ProcInst:
		default:
			return req, faultInvalidBody("Element after the envelope.")
		}
	}
	if len(env.Header) != 1 {
		return req, faultHeaderRequired(fmt.Sprintf("The envelope has %d s:Header elements, want 1.", len(env.Header)))
	}
	if f := req.parseHeader(&env.Header[0]); f != nil {
		return req, f
	}
	if len(env.Body) != 1 {
		return req, faultInvalidBody(fmt.Sprintf("The envelope has %d s:Body elements, want 1.", len(env.Body)))
	}
	return req, req.parseBody(&env.Body[0])
}

func single(values []string, name string) (string, *Fault) {
	switch len(values) {
	case 0:
		return "", nil
	case 1:
		return strings.TrimSpace(values[0]), nil
	default:
		return "", faultInvalidHeader(fmt.Sprintf("Header %s appears %d times.", name, len(values)))
	}
}

func (req *request) parseHeader(h *xmlHeader) *Fault {
	var f *Fault
	// MessageID first, so every later fault can relate to the request.
	if req.messageID, f = single(h.MessageID, "a:MessageID"); f != nil {
		return f
	}
	if req.action, f = single(h.Action, "a:Action"); f != nil {
		return f
	}
	if req.messageID == "" {
		return faultHeaderRequired("Header a:MessageID is missing.")
	}
	if req.action == "" {
		return faultHeaderRequired("Header a:Action is missing.")
	}
	if req.to, f = single(h.To, "a:To"); f != nil {
		return f
	}
	size, f := single(h.MaxEnvelopeSize, "w:MaxEnvelopeSize")
	if f != nil {
		return f
	}
	if size != "" {
		n, err := strconv.Atoi(size)
		if err != nil || n <= 0 {
			return faultInvalidHeader(fmt.Sprintf("w:MaxEnvelopeSize %q is not a positive integer.", size))
		}
		if n < minEnvelopeSize {
			return faultEnvelopeTooSmall(fmt.Sprintf("w:MaxEnvelopeSize %d is below the minimum of %d.", n, minEnvelopeSize))
		}
		req.maxEnvelope = n
	}
	timeout, f := single(h.OperationTimeout, "w:OperationTimeout")
	if f != nil {
		return f
	}
	if timeout != "" {
		d, err := parseDuration(timeout)
		if err != nil {
			return faultInvalidTimeout(fmt.Sprintf("w:OperationTimeout %q: %v.", timeout, err))
		}
		req.timeout, req.hasTimeout = d, true
	}
	uri, f := single(h.ResourceURI, "w:ResourceURI")
	if f != nil {
		return f
	}
	switch req.action {
	case actionCreate, actionDelete, actionCommand, actionSend, actionReceive, actionSignal:
	case actionEnumerate, actionPull:
		return req.enumerationHeader(uri)
	case actionGet:
		if !strings.EqualFold(uri, resourceURIConfig) {
			return faultResourceNotFound(uri)
		}
		req.resourceURI = uri
		return nil
	default:
		return faultActionNotSupported(req.action)
	}
	req.resourceURI = uri
	switch {
	case strings.EqualFold(uri, resourceURICmd):
	case len(uri) > len(nsPowerShell)+1 && strings.EqualFold(uri[:len(nsPowerShell)+1], nsPowerShell+"/"):
		// Whether the server hosts that configuration is the Server's call.
		req.ps = true
	default:
		return faultResourceNotFound(uri)
	}
	if len(h.SelectorSet) > 1 {
		return faultInvalidHeader("Header w:SelectorSet appears more than once.")
	}
	for _, set := range h.SelectorSet {
		for _, sel := range set.Selectors {
			if !strings.EqualFold(sel.Name, "ShellId") {
				continue
			}
			if req.shellID != "" {
				return faultInvalidHeader("Selector ShellId appears more than once.")
			}
			req.shellID = strings.ToUpper(strings.TrimSpace(sel.Value))
		}
	}
	if len(h.OptionSet) > 1 {
		return faultInvalidHeader("Header w:OptionSet appears more than once.")
	}
	for _, set := range h.OptionSet {
		for _, opt := range set.Options {
			name := strings.ToUpper(strings.TrimSpace(opt.Name))
			if name == "" {
				return faultInvalidOptions("An option has no Name.")
			}
			if req.options == nil {
				req.options = make(map[string]string, len(set.Options))
			}
			if _, dup := req.options[name]; dup {
				return faultInvalidOptions("Option " + name + " appears more than once.")
			}
			req.options[name] = strings.TrimSpace(opt.Value)
		}
	}
	return validateOptions(req.options)
}

// validateOptions checks the WINRS_* values the server acts on.
func validateOptions(opts map[string]string) *Fault {
	for name, value := range opts {
		switch name {
		case OptionNoProfile, OptionConsoleModeStdin, OptionSkipCmdShell:
			if !strings.EqualFold(value, "TRUE") && !strings.EqualFold(value, "FALSE") {
				return faultInvalidOptions(fmt.Sprintf("Option %s=%q must be TRUE or FALSE.", name, value))
			}
		case OptionCodepage:
			if n, err := strconv.ParseUint(value, 10, 16); err != nil || n == 0 {
				return faultInvalidOptions(fmt.Sprintf("Option %s=%q is not a code page number.", name, value))
			}
		}
	}
	return nil
}

func (req *request) parseBody(b *xmlBody) *Fault {
	count := len(b.Shell) + len(b.CommandLine) + len(b.Send) + len(b.Receive) + len(b.Signal) + len(b.Other)
	want := 1
	if req.action == actionDelete || req.action == actionGet {
		want = 0
	}
	if count != want {
		return faultInvalidBody(fmt.Sprintf("The body of %s has %d elements, want %d.", shortAction(req.action), count, want))
	}
	switch req.action {
	case actionCreate:
		if len(b.Shell) != 1 {
			return faultInvalidBody("Create needs an rsp:Shell body.")
		}
		return req.parseShell(b.Shell[0])
	case actionDelete, actionGet:
		return nil
	case actionEnumerate, actionPull:
		return req.parseEnumeration()
	case actionCommand:
		if len(b.CommandLine) != 1 {
			return faultInvalidBody("Command needs an rsp:CommandLine body.")
		}
		cl := b.CommandLine[0]
		cb := &commandBody{id: strings.ToUpper(strings.TrimSpace(cl.CommandID)), args: cl.Arguments}
		switch {
		case req.ps:
			// A pipeline's rsp:Command is empty and its first fragments
			// travel base64 in rsp:Arguments (MS-PSRP 3.1.5.3, wxf:Command; pypsrp
			// test_psrp_multiple_commands.yml).
			if len(cl.Command) > 1 || len(cl.Arguments) == 0 {
				return faultInvalidBody("A PowerShell rsp:CommandLine needs one rsp:Command and the pipeline in rsp:Arguments.")
			}
			if len(cl.Command) == 1 {
				cb.name = strings.TrimSpace(cl.Command[0])
			}
		case len(cl.Command) != 1 || strings.TrimSpace(cl.Command[0]) == "":
			return faultInvalidBody("rsp:CommandLine needs exactly one non-empty rsp:Command.")
		default:
			cb.name = strings.TrimSpace(cl.Command[0])
		}
		req.command = cb
		return nil
	case actionSend:
		if len(b.Send) != 1 || len(b.Send[0].Streams) == 0 {
			return faultInvalidBody("Send needs an rsp:Send body with at least one rsp:Stream.")
		}
		for i, s := range b.Send[0].Streams {
			st, f := parseSendStream(i, s, req.ps)
			if f != nil {
				return f
			}
			req.send = append(req.send, st)
		}
		return nil
	case actionReceive:
		if len(b.Receive) != 1 || len(b.Receive[0].DesiredStream) != 1 {
			return faultInvalidBody("Receive needs an rsp:Receive body with one rsp:DesiredStream.")
		}
		ds := b.Receive[0].DesiredStream[0]
		rb := &receiveBody{commandID: strings.ToUpper(strings.TrimSpace(ds.CommandID))}
		// No CommandId: a shell-level Receive. PowerShell shells answer it
		// with the runspace pool's messages (MS-PSRP 3.1.5.3.7); a cmd
		// shell has no output of its own, and its shell's lookup answers
		// with faultUnknownCommand once the ShellId is known to be good.
		for _, name := range strings.Fields(ds.Streams) {
			if name != "stdout" && (name != "stderr" || req.ps) {
				return faultInvalidParameter(fmt.Sprintf("Stream %q is not an output stream of this shell.", name))
			}
			rb.streams = append(rb.streams, name)
		}
		if len(rb.streams) == 0 {
			return faultInvalidParameter("rsp:DesiredStream names no stream.")
		}
		req.receive = rb
		return nil
	case actionSignal:
		if len(b.Signal) != 1 || len(b.Signal[0].Code) != 1 {
			return faultInvalidBody("Signal needs an rsp:Signal body with one rsp:Code.")
		}
		sb := &signalBody{
			commandID: strings.ToUpper(strings.TrimSpace(b.Signal[0].CommandID)),
			code:      strings.TrimSpace(b.Signal[0].Code[0]),
		}
		if sb.commandID == "" {
			return faultInvalidParameter("rsp:Signal has no CommandId.")
		}
		req.signal = sb
		return nil
	}
	return faultActionNotSupported(req.action)
}

// parseShell reads a Create's rsp:Shell. A cmd shell has the streams stdin
// / stdout stderr; a PowerShell shell stdin pr / stdout (MS-PSRP 3.1.5.3, wxf:Create).
func (req *request) parseShell(s xmlShell) *Fault {
	sb := &shellBody{id: strings.ToUpper(strings.TrimSpace(s.ShellID))}
	kind, outs := "cmd shell", []string{"stdout", "stderr"}
	if req.ps {
		kind, outs = "PowerShell endpoint", []string{"stdout"}
	}
	for _, in := range s.InputStreams {
		for _, name := range strings.Fields(in) {
			if name != "stdin" && name != "pr" {
				return faultInvalidParameter(fmt.Sprintf("Input stream %q is not supported by the %s.", name, kind))
			}
			sb.inputs = append(sb.inputs, name)
		}
	}
	for _, out := range s.OutputStreams {
		for _, name := range strings.Fields(out) {
			if !slices.Contains(outs, name) {
				return faultInvalidParameter(fmt.Sprintf("Output stream %q is not supported by the %s.", name, kind))
			}
			sb.outputs = append(sb.outputs, name)
		}
	}
	switch {
	case len(s.CreationXML) > 1:
		return faultInvalidBody("rsp:Shell has more than one creationXml.")
	case len(s.CreationXML) == 1 && !req.ps:
		return faultInvalidBody("creationXml is only valid for a PowerShell endpoint.")
	case len(s.CreationXML) == 1:
		data, err := decodeBase64(s.CreationXML[0])
		if err != nil {
			return faultInvalidBody(fmt.Sprintf("creationXml is not base64: %v.", err))
		}
		sb.creationXML = data
	}
	req.shell = sb
	return nil
}

func parseSendStream(i int, s xmlStream, ps bool) (sendStream, *Fault) {
	st := sendStream{name: s.Name, commandID: strings.ToUpper(strings.TrimSpace(s.CommandID))}
	if st.name != "stdin" && (st.name != "pr" || !ps) {
		return st, faultInvalidParameter(fmt.Sprintf("rsp:Stream %d: Name %q is not an input stream of this shell.", i, s.Name))
	}
	if st.commandID == "" && !ps {
		return st, faultInvalidParameter(fmt.Sprintf("rsp:Stream %d has no CommandId.", i))
	}
	switch strings.ToLower(strings.TrimSpace(s.End)) {
	case "", "false", "0":
	case "true", "1":
		st.end = true
	default:
		return st, faultInvalidParameter(fmt.Sprintf("rsp:Stream %d: End=%q is not a boolean.", i, s.End))
	}
	data, err := decodeBase64(s.Data)
	if err != nil {
		return st, faultInvalidBody(fmt.Sprintf("rsp:Stream %d: content is not base64: %v.", i, err))
	}
	st.data = data
	return st, nil
}

// decodeBase64 decodes standard base64, ignoring the whitespace that XML
// formatting may add.
func decodeBase64(s string) ([]byte, error) {
	s = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
	return base64.StdEncoding.DecodeString(s)
}

// parseDuration parses the xs:duration subset WS-Management uses for
// OperationTimeout: days, hours, minutes and (fractional) seconds, e.g.
// PT60S, PT60.000S, PT5M0S, P0DT0H1M0S. Years and months have no fixed
// length and are refused; so are negative durations.
func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty duration")
	}
	if s[0] == '-' {
		return 0, errors.New("negative duration")
	}
	if s[0] != 'P' {
		return 0, errors.New("duration must start with P")
	}
	rest := s[1:]
	var (
		seconds   float64
		inTime    bool
		any       bool
		lastOrder int // enforces D < H < M < S
	)
	for len(rest) > 0 {
		if rest[0] == 'T' {
			if inTime {
				return 0, errors.New("T appears twice")
			}
			inTime = true
			rest = rest[1:]
			if rest == "" {
				return 0, errors.New("T without a time component")
			}
			continue
		}
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		if i == 0 || i == len(rest) {
			return 0, fmt.Errorf("malformed component %q", rest)
		}
		num, unit := rest[:i], rest[i]
		rest = rest[i+1:]
		if num[0] == '.' || num[len(num)-1] == '.' || strings.Count(num, ".") > 1 {
			return 0, fmt.Errorf("malformed number %q", num)
		}
		v, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed number %q", num)
		}
		var order int
		var unitSeconds float64
		switch {
		case !inTime && unit == 'D':
			order, unitSeconds = 1, 86400
		case !inTime && (unit == 'Y' || unit == 'M'):
			return 0, errors.New("years and months are not supported")
		case inTime && unit == 'H':
			order, unitSeconds = 2, 3600
		case inTime && unit == 'M':
			order, unitSeconds = 3, 60
		case inTime && unit == 'S':
			order, unitSeconds = 4, 1
		default:
			return 0, fmt.Errorf("unknown unit %q", unit)
		}
		if order <= lastOrder {
			return 0, fmt.Errorf("unit %q out of order", unit)
		}
		if strings.Contains(num, ".") && unit != 'S' {
			return 0, errors.New("only seconds may have a fraction")
		}
		lastOrder = order
		any = true
		seconds += v * unitSeconds
		if seconds > maxDurationSecond || math.IsInf(seconds, 0) {
			seconds = maxDurationSecond
		}
	}
	if !any {
		return 0, errors.New("duration has no component")
	}
	return time.Duration(seconds * float64(time.Second)), nil
}

// shortAction names an action for stats and messages.
func shortAction(action string) string {
	switch action {
	case actionCreate:
		return "Create"
	case actionDelete:
		return "Delete"
	case actionGet:
		return "Get"
	case actionCommand:
		return "Command"
	case actionSend:
		return "Send"
	case actionReceive:
		return "Receive"
	case actionSignal:
		return "Signal"
	}
	return "Other"
}

// Package psrptest reads the PSRP exchanges pypsrp recorded against real
// Windows hosts (runspace/psrp/testdata/pypsrp, see PROVENANCE there) for
// tests of the client and of exsim's server side. It is imported only by
// tests.
package psrptest

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// Exchange is one recorded request and what came back.
type Exchange struct {
	Request  string
	Response string // empty when the request failed below SOAP
	// HTTPStatus is the status of a transport_error entry (pypsrp records
	// a WS-Man fault answered with HTTP 500 this way, body in Response).
	HTTPStatus int
}

// Dir is the directory of the recordings.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "pypsrp")
}

// Load reads one recording by file name (e.g. "test_psrp_open_runspace.yml").
//
// The files use a small subset of YAML: "messages:", then entries of
// "- request: <xml>", "  response: <xml>" and "  transport_error:" with
// "    protocol:" / "    code:" lines. A long plain scalar may continue on
// lines indented four spaces; YAML folds each such line break into one
// space, and so does Load.
func Load(name string) ([]Exchange, error) {
	data, err := os.ReadFile(filepath.Join(Dir(), name))
	if err != nil {
		return nil, err
	}
	var out []Exchange
	var cur *string
	inErr := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case n == 1 && line == "messages:":
		case strings.HasPrefix(line, "- request: "):
			out = append(out, Exchange{Request: strings.TrimPrefix(line, "- request: ")})
			cur, inErr = &out[len(out)-1].Request, false
		case strings.HasPrefix(line, "  response: ") && len(out) > 0:
			out[len(out)-1].Response = strings.TrimPrefix(line, "  response: ")
			cur, inErr = &out[len(out)-1].Response, false
		case line == "  transport_error:" && len(out) > 0:
			cur, inErr = nil, true
		case inErr && strings.HasPrefix(line, "    code: "):
			c, err := strconv.Atoi(strings.TrimPrefix(line, "    code: "))
			if err != nil {
				return nil, fmt.Errorf("%s:%d: code: %w", name, n, err)
			}
			out[len(out)-1].HTTPStatus = c
		case inErr && strings.HasPrefix(line, "    protocol: "):
		case strings.HasPrefix(line, "    ") && cur != nil:
			*cur += " " + strings.TrimSpace(line)
		case strings.TrimSpace(line) == "":
		default:
			return nil, fmt.Errorf("%s:%d: unexpected line %.60q", name, n, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

// Envelope is the part of a WS-Man envelope the PSRP tests compare.
type Envelope struct {
	Action      string
	ResourceURI string
	Options     map[string]string // OptionSet: name -> value
	Selectors   map[string]string
	// Body is the local name of the body's first element (Shell,
	// CommandLine, Receive, ReceiveResponse, Signal, Fault, …).
	Body string
	// Shell attributes and streams of a Create.
	ShellID, InputStreams, OutputStreams string
	CommandID                            string // CommandLine/@CommandId or Signal/@CommandId
	SignalCode                           string
	// PSRP payloads in order: creationXml, Arguments, or Stream elements
	// (of Send and ReceiveResponse), base64-decoded.
	Payloads []Payload
	// CommandStates holds the State attribute of each CommandState.
	CommandStates []string
	FaultCode     string // WSManFault/@Code
}

// Payload is one base64 element of an envelope.
type Payload struct {
	Element   string // creationXml, Arguments, Stream
	Stream    string // Stream/@Name
	CommandID string // Stream/@CommandId
	Data      []byte
}

// ParseEnvelope extracts the fields of Envelope from a recorded envelope.
func ParseEnvelope(s string) (*Envelope, error) {
	d := xml.NewDecoder(strings.NewReader(s))
	e := &Envelope{Options: map[string]string{}, Selectors: map[string]string{}}
	var path []string
	var text strings.Builder
	var attrs []xml.Attr
	for {
		tok, err := d.Token()
		if err != nil {
			if err.Error() == "EOF" {
				return e, nil
			}
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			path = append(path, t.Name.Local)
			text.Reset()
			attrs = t.Attr
			get := func(n string) string {
				for _, a := range t.Attr {
					if a.Name.Local == n {
						return a.Value
					}
				}
				return ""
			}
			if len(path) == 3 && path[1] == "Body" {
				e.Body = t.Name.Local
			}
			switch t.Name.Local {
			case "Shell":
				if e.ShellID == "" {
					e.ShellID = get("ShellId")
				}
			case "CommandLine", "Signal":
				e.CommandID = get("CommandId")
			case "CommandState":
				e.CommandStates = append(e.CommandStates, get("State"))
			case "WSManFault":
				e.FaultCode = get("Code")
			}
		case xml.CharData:
			text.Write(t)
		case xml.EndElement:
			get := func(n string) string {
				for _, a := range attrs {
					if a.Name.Local == n {
						return a.Value
					}
				}
				return ""
			}
			v := strings.TrimSpace(text.String())
			switch t.Name.Local {
			case "Action":
				if len(path) == 3 && path[1] == "Header" {
					e.Action = v
				}
			case "ResourceURI":
				if len(path) == 3 && path[1] == "Header" {
					e.ResourceURI = v
				}
			case "Option":
				e.Options[get("Name")] = v
			case "Selector":
				if len(path) == 4 && path[1] == "Header" {
					e.Selectors[get("Name")] = v
				}
			case "InputStreams":
				e.InputStreams = v
			case "OutputStreams":
				e.OutputStreams = v
			case "Code":
				if len(path) >= 2 && path[len(path)-2] == "Signal" {
					e.SignalCode = v
				}
			case "creationXml", "Arguments", "Stream":
				if v != "" || t.Name.Local == "Stream" {
					b, err := base64.StdEncoding.DecodeString(v)
					if err != nil {
						return nil, fmt.Errorf("%s: %w", t.Name.Local, err)
					}
					e.Payloads = append(e.Payloads, Payload{Element: t.Name.Local, Stream: get("Name"), CommandID: get("CommandId"), Data: b})
				}
			}
			path = path[:len(path)-1]
			text.Reset()
		}
	}
}

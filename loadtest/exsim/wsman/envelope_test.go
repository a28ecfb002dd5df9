package wsman

import (
	"encoding/xml"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/masterzen/winrm"
	"github.com/masterzen/winrm/soap"
)

var update = flag.Bool("update", false, "rewrite testdata/fuzz/FuzzParseEnvelope from masterzen's request builders")

const testURL = "http://127.0.0.1:5985/wsman"

// clientRequests are the envelopes masterzen/winrm sends, built with its
// own request builders.
func clientRequests() map[string]string {
	p := winrm.NewParameters("PT60S", "en-US", 153600)
	const shellID, commandID = "67A74734-DD32-4F10-89DE-49A060483810", "1A6DEE6B-EC68-4DD6-87E9-030C0048ECC4"
	str := func(m *soap.SoapMessage) string {
		defer m.Free()
		return m.String()
	}
	return map[string]string{
		"create":      str(winrm.NewOpenShellRequest(testURL, p)),
		"command":     str(winrm.NewExecuteCommandRequest(testURL, shellID, "powershell.exe", []string{"-NoProfile", "-EncodedCommand", "JABQAHIAbwBnAHIAZQBzAHMA"}, p)),
		"command-xml": str(winrm.NewExecuteCommandRequest(testURL, shellID, "echo <a> & 'b'", []string{`"quoted" & <tagged>`}, p)),
		"send":        str(winrm.NewSendInputRequest(testURL, shellID, commandID, []byte("EASC1 eyJpZCI6MX0=\n"), false, p)),
		"send-end":    str(winrm.NewSendInputRequest(testURL, shellID, commandID, nil, true, p)),
		"receive":     str(winrm.NewGetOutputRequest(testURL, shellID, commandID, "stdout stderr", p)),
		"signal":      str(winrm.NewSignalRequest(testURL, shellID, commandID, p)),
		"delete":      str(winrm.NewDeleteShellRequest(testURL, shellID, p)),
	}
}

func TestParseClientRequests(t *testing.T) {
	reqs := clientRequests()
	check := func(name string, f func(t *testing.T, r *request)) {
		t.Run(name, func(t *testing.T) {
			r, fault := parseEnvelope([]byte(reqs[name]))
			if fault != nil {
				t.Fatalf("parseEnvelope(%s) fault = %v", name, fault)
			}
			if !strings.HasPrefix(r.messageID, "uuid:") || r.maxEnvelope != 153600 || r.timeout != 60*time.Second || !r.hasTimeout || r.to != testURL {
				t.Errorf("header = %+v", r)
			}
			f(t, r)
		})
	}
	check("create", func(t *testing.T, r *request) {
		if r.action != actionCreate || r.shellID != "" || r.options[OptionCodepage] != "65001" || r.options[OptionNoProfile] != "FALSE" {
			t.Errorf("request = %+v", r)
		}
	})
	check("command", func(t *testing.T, r *request) {
		if r.command == nil || r.command.name != "powershell.exe" || strings.Join(r.command.args, "|") != "-NoProfile|-EncodedCommand|JABQAHIAbwBnAHIAZQBzAHMA" {
			t.Errorf("command = %+v", r.command)
		}
		if r.options[OptionConsoleModeStdin] != "TRUE" || r.options[OptionSkipCmdShell] != "FALSE" || r.shellID != "67A74734-DD32-4F10-89DE-49A060483810" {
			t.Errorf("request = %+v", r)
		}
	})
	check("command-xml", func(t *testing.T, r *request) {
		if r.command.name != "echo <a> & 'b'" || len(r.command.args) != 1 || r.command.args[0] != `"quoted" & <tagged>` {
			t.Errorf("CDATA decoded to %+v", r.command)
		}
	})
	check("send", func(t *testing.T, r *request) {
		if len(r.send) != 1 || string(r.send[0].data) != "EASC1 eyJpZCI6MX0=\n" || r.send[0].end || r.send[0].commandID != "1A6DEE6B-EC68-4DD6-87E9-030C0048ECC4" {
			t.Errorf("send = %+v", r.send)
		}
	})
	check("send-end", func(t *testing.T, r *request) {
		if len(r.send) != 1 || len(r.send[0].data) != 0 || !r.send[0].end {
			t.Errorf("send = %+v", r.send)
		}
	})
	check("receive", func(t *testing.T, r *request) {
		if r.receive == nil || r.receive.commandID != "1A6DEE6B-EC68-4DD6-87E9-030C0048ECC4" || strings.Join(r.receive.streams, " ") != "stdout stderr" {
			t.Errorf("receive = %+v", r.receive)
		}
	})
	check("signal", func(t *testing.T, r *request) {
		if r.signal == nil || r.signal.code != signalTerminate {
			t.Errorf("signal = %+v", r.signal)
		}
	})
	check("delete", func(t *testing.T, r *request) {
		if r.action != actionDelete || r.shellID != "67A74734-DD32-4F10-89DE-49A060483810" {
			t.Errorf("request = %+v", r)
		}
	})
}

func TestParseEnvelopeFaults(t *testing.T) {
	reqs := clientRequests()
	f := func(name, body string, want uint32) {
		t.Helper()
		_, fault := parseEnvelope([]byte(body))
		if fault == nil || fault.Code != want {
			t.Errorf("%s: fault = %v, want code %d", name, fault, want)
		}
	}
	recv, send, create := reqs["receive"], reqs["send"], reqs["create"]
	f("empty", "", CodeInvalidBody)
	f("trailing element", create+"<x/>", CodeInvalidBody)
	f("two actions", strings.Replace(create, "<env:Header>", "<env:Header><a:Action>x</a:Action>", 1), CodeInvalidHeader)
	f("no header", regexp.MustCompile(`(?s)<env:Header>.*</env:Header>`).ReplaceAllString(create, ""), CodeHeaderRequired)
	f("no body", strings.Replace(strings.Replace(create, "<env:Body>", "<x:Body xmlns:x=\"urn:x\">", 1), "</env:Body>", "</x:Body>", 1), CodeInvalidBody)
	f("unknown action", strings.Replace(create, "transfer/Create", "transfer/Put", 1), CodeActionNotSupported)
	f("duplicate option", strings.Replace(create, "<w:OptionSet>", `<w:OptionSet><w:Option Name="winrs_codepage">437</w:Option>`, 1), CodeInvalidOptions)
	f("bad boolean option", strings.Replace(create, `"WINRS_NOPROFILE">FALSE`, `"WINRS_NOPROFILE">maybe`, 1), CodeInvalidOptions)
	f("years in timeout", strings.Replace(create, "PT60S", "P1Y", 1), CodeInvalidTimeout)
	f("negative envelope", strings.Replace(create, ">153600<", ">-1<", 1), CodeInvalidHeader)
	f("receive stdin", strings.Replace(recv, ">stdout stderr<", ">stdin<", 1), CodeInvalidParameter)
	f("send not base64", strings.Replace(send, "RUFTQzEgZXlKcFpDSTZNWDA9Cg==", "%%%", 1), CodeInvalidBody)
	f("send stream name", strings.Replace(send, `Name="stdin"`, `Name="stdout"`, 1), CodeInvalidParameter)
	f("send bad End", strings.Replace(send, `Name="stdin"`, `Name="stdin" End="perhaps"`, 1), CodeInvalidParameter)
	f("command without Command", regexp.MustCompile(`<rsp:Command>.*?</rsp:Command>`).ReplaceAllString(reqs["command"], ""), CodeInvalidBody)
	f("signal without code", regexp.MustCompile(`<rsp:Code>.*?</rsp:Code>`).ReplaceAllString(reqs["signal"], ""), CodeInvalidBody)
	f("create with body for delete", strings.Replace(create, "transfer/Create", "transfer/Delete", 1), CodeInvalidBody)
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "PT60S", want: 60 * time.Second},
		{in: "PT60.000S", want: 60 * time.Second},
		{in: "PT0.25S", want: 250 * time.Millisecond},
		{in: "PT5M0S", want: 5 * time.Minute},
		{in: "P0DT0H1M0S", want: time.Minute},
		{in: "P1D", want: 24 * time.Hour},
		{in: "PT1H30M", want: 90 * time.Minute},
		{in: "PT0S", want: 0},
		{in: "PT99999999999999999999S", want: 1e9 * time.Second},
		{in: "", wantErr: true},
		{in: "P", wantErr: true},
		{in: "PT", wantErr: true},
		{in: "-PT5S", wantErr: true},
		{in: "60", wantErr: true},
		{in: "P1Y", wantErr: true},
		{in: "P1M", wantErr: true},
		{in: "PT1.5M", wantErr: true},
		{in: "PT5S1M", wantErr: true},
		{in: "PT5", wantErr: true},
		{in: "PT.5S", wantErr: true},
		{in: "PT1..5S", wantErr: true},
		{in: "PTT5S", wantErr: true},
		{in: "P5H", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseDuration(tt.in)
		if (err != nil) != tt.wantErr || !tt.wantErr && got != tt.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestFormats(t *testing.T) {
	if got := xsDuration(7200 * time.Second); got != "PT7200.000S" {
		t.Errorf("xsDuration = %q", got)
	}
	if got := xsDayTime(26*time.Hour + 3*time.Minute + 4*time.Second + 500*time.Millisecond); got != "P1DT2H3M4S" {
		t.Errorf("xsDayTime = %q", got)
	}
	guid := regexp.MustCompile(`^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$`)
	seen := map[string]bool{}
	for range 100 {
		g := newGUID()
		if !guid.MatchString(g) || seen[g] {
			t.Fatalf("newGUID() = %q (seen before: %v)", g, seen[g])
		}
		seen[g] = true
	}
}

// TestResponsesParseWithClient checks the responses with masterzen's own
// response parsers, which read them with XPath.
func TestResponsesParseWithClient(t *testing.T) {
	create := marshalCreateResponse("uuid:1", createResult{address: testURL, shellID: "ABC", owner: `DOM\u<1>`, clientIP: "127.0.0.1", idle: time.Hour})
	if id, err := winrm.ParseOpenShellResponse(string(create)); err != nil || id != "ABC" {
		t.Errorf("ParseOpenShellResponse() = %q, %v", id, err)
	}
	if id, err := winrm.ParseExecuteCommandResponse(string(marshalCommandResponse("uuid:1", "C1"))); err != nil || id != "C1" {
		t.Errorf("ParseExecuteCommandResponse() = %q, %v", id, err)
	}
	var out, errb strings.Builder
	body := marshalReceiveResponse("uuid:1", receiveChunk{commandID: "C1", streams: []string{"stdout", "stderr"}, stdout: []byte("o"), stderr: []byte("e"), done: true, exitCode: -7})
	done, code, err := winrm.ParseSlurpOutputErrResponse(string(body), &out, &errb)
	if err != nil || !done || code != -7 || out.String() != "o" || errb.String() != "e" {
		t.Errorf("ParseSlurpOutputErrResponse() = %v, %d, %v, %q, %q", done, code, err, out.String(), errb.String())
	}
	// A fault is not a CommandResponse: the client reports the fault action.
	_, err = winrm.ParseExecuteCommandResponse(string(FaultCmdTooLong().MarshalEnvelope("HOST", "uuid:1")))
	if err == nil || !strings.Contains(err.Error(), "unsupported action: "+actionWSManFault) {
		t.Errorf("ParseExecuteCommandResponse(fault) error = %v", err)
	}
}

func TestReceiveBudgetFitsEnvelope(t *testing.T) {
	streams := []string{"stdout", "stderr"}
	for _, limit := range []int{8192, 9000, 9001, 9002, 9003, 153600} {
		room := limit - receiveOverhead("uuid:x", "C1", streams)
		budget := room/4*3 - 4
		for _, split := range []int{0, 1, 2, budget / 2, budget - 1, budget} {
			body := marshalReceiveResponse("uuid:x", receiveChunk{
				commandID: "C1", streams: streams,
				stdout: make([]byte, split), stderr: make([]byte, budget-split),
				done: true, exitCode: -2147483648,
			})
			if len(body) > limit {
				t.Errorf("limit %d, split %d/%d: response of %d bytes", limit, split, budget-split, len(body))
			}
		}
	}
}

// FuzzParseEnvelope feeds arbitrary bytes to the request parser: it must
// not panic, a request it accepts must be complete and consistent, and any
// response built from it must be well-formed XML.
func FuzzParseEnvelope(f *testing.F) {
	for _, body := range clientRequests() {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, fault := parseEnvelope(data)
		if req == nil {
			t.Fatal("parseEnvelope returned a nil request")
		}
		wellFormed := func(what string, b []byte) {
			if err := xml.Unmarshal(b, new(struct{})); err != nil {
				t.Fatalf("%s is not well-formed XML (%v): %s", what, err, b)
			}
		}
		if fault != nil {
			if fault.Code == 0 || fault.Reason == "" || fault.Subcode == "" {
				t.Fatalf("incomplete fault %+v", fault)
			}
			wellFormed("fault", fault.MarshalEnvelope("host", req.messageID))
			return
		}
		if req.messageID == "" || req.action == "" {
			t.Fatalf("accepted request without MessageID or Action: %+v", req)
		}
		if req.maxEnvelope != 0 && req.maxEnvelope < minEnvelopeSize || req.timeout < 0 || req.shellID != strings.ToUpper(req.shellID) {
			t.Fatalf("inconsistent header: %+v", req)
		}
		switch req.action {
		case actionCommand:
			if req.command == nil || req.command.name == "" {
				t.Fatalf("Command without command line: %+v", req)
			}
		case actionSend:
			if len(req.send) == 0 {
				t.Fatalf("Send without streams: %+v", req)
			}
		case actionReceive:
			if req.receive == nil || req.receive.commandID == "" || len(req.receive.streams) == 0 {
				t.Fatalf("Receive without stream: %+v", req)
			}
			wellFormed("receive response", marshalReceiveResponse(req.messageID, receiveChunk{commandID: req.receive.commandID, streams: req.receive.streams, stdout: data, done: true}))
		case actionSignal:
			if req.signal == nil || req.signal.commandID == "" {
				t.Fatalf("Signal without command: %+v", req)
			}
		case actionCreate:
			wellFormed("create response", marshalCreateResponse(req.messageID, createResult{address: req.to, shellID: "S", owner: req.options[OptionCodepage]}))
		case actionDelete:
		default:
			t.Fatalf("accepted unknown action %q", req.action)
		}
	})
}

// TestFuzzCorpus keeps the committed seed corpus equal to what the client
// builders produce (regenerate with -update).
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParseEnvelope")
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range clientRequests() {
		path := filepath.Join(dir, "client-"+name)
		if *update {
			content := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(stableIDs(body)))
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("seed corpus file missing (run go test -run TestFuzzCorpus -update): %v", err)
		}
	}
}

// stableIDs replaces the random MessageID so regenerating the corpus is
// reproducible.
func stableIDs(body string) string {
	return regexp.MustCompile(`uuid:[0-9a-fA-F-]{36}`).ReplaceAllString(body, "uuid:0F0E0D0C-0B0A-4908-8706-050403020100")
}

func BenchmarkParseEnvelope(b *testing.B) {
	for _, name := range []string{"send", "receive"} {
		body := []byte(clientRequests()[name])
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, f := parseEnvelope(body); f != nil {
					b.Fatal(f)
				}
			}
		})
	}
}

package exsim

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/runspace/psrp"
	"github.com/easconnector/easconnector/runspace/psrp/psrptest"
)

// Conformance of the server side against Windows: each recorded request of
// pypsrp's recordings (runspace/psrp/testdata/pypsrp, see PROVENANCE) is sent
// to exsim as recorded, with the one change that its ResourceURI names
// Microsoft.Exchange instead of Microsoft.PowerShell, and exsim's answer is
// compared with the recorded one structurally: action or fault code, the
// ShellId and streams, CommandState, the PSRP message types in order per
// pool and pipeline, and the CLIXML shape of the pool's messages.
//
// Where exsim must differ, the difference is the one an Exchange endpoint
// shows, and is checked as such:
//   - the recorded pipelines are scripts (or cmdlets outside Exchange's
//     allowlist), which Exchange's no-language runspace refuses: exsim's
//     pipeline ends in PIPELINE_STATE Failed where Windows ran it;
//   - exsim does not do the session key exchange (PUBLIC_KEY): easconnector
//     sends no SecureString; the recorded ENCRYPTED_SESSION_KEY answer is
//     therefore a Receive that times out;
//   - a recorded Receive that timed out while a long script ran is
//     answered at once, since exsim's refusal is immediate.

var conformanceRecordings = []string{
	"test_psrp_open_runspace.yml",
	"test_psrp_multiple_invocations.yml",
	"test_psrp_multiple_commands.yml",
	"test_psrp_error_failed.yml",
	"test_psrp_receive_failure.yml",
	"test_psrp_long_running_cmdlet.yml",
	"test_psrp_small_msg_size.yml",
	"test_psrp_stream_output_invocation.yml",
	"test_wsman_update_envelope_size_4096.yml",
}

const recordedResourceURI = "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"

// streamKey names the PSRP stream of a payload: the pool ("") or a
// pipeline's CommandId.
func streamKey(p psrptest.Payload) string { return strings.ToUpper(p.CommandID) }

// messageLog accumulates the messages one side sent, per stream.
type messageLog struct {
	asm  map[string]*psrp.Assembler
	msgs map[string][]psrp.Message
}

func (l *messageLog) add(t *testing.T, env *psrptest.Envelope) {
	t.Helper()
	if l.asm == nil {
		l.asm, l.msgs = map[string]*psrp.Assembler{}, map[string][]psrp.Message{}
	}
	if !strings.HasSuffix(env.Action, "/ReceiveResponse") {
		return
	}
	for _, p := range env.Payloads {
		k := streamKey(p)
		a := l.asm[k]
		if a == nil {
			a = &psrp.Assembler{}
			l.asm[k] = a
		}
		if err := a.Write(p.Data, func(b []byte) error {
			m, err := psrp.ParseMessage(b)
			if err != nil {
				return err
			}
			m.Data = slices.Clone(m.Data)
			l.msgs[k] = append(l.msgs[k], m)
			return nil
		}); err != nil {
			t.Fatalf("stream %q: %v", k, err)
		}
	}
}

func postRaw(t *testing.T, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(DefaultUser, DefaultPassword)
	req.Header.Set("Content-Type", "application/soap+xml;charset=UTF-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestPSRPConformanceWithWindowsRecordings(t *testing.T) {
	for _, name := range conformanceRecordings {
		t.Run(strings.TrimSuffix(name, ".yml"), func(t *testing.T) {
			rec, err := psrptest.Load(name)
			if err != nil {
				t.Fatal(err)
			}
			// Quiet: without the first pipeline's progress record, a
			// refused pipeline's answer is one message, which the one
			// recorded Receive gets whatever the machine's load.
			s := startSim(t, Options{MaxTimeout: 300 * time.Millisecond, Quiet: true})
			url := strings.TrimSuffix(s.Endpoint(0), "/wsman") + "/wsman"
			var want, got messageLog
			for i, x := range rec {
				wantEnv, err := psrptest.ParseEnvelope(x.Response)
				if err != nil {
					t.Fatalf("exchange %d: recorded response: %v", i, err)
				}
				reqEnv, err := psrptest.ParseEnvelope(x.Request)
				if err != nil {
					t.Fatalf("exchange %d: recorded request: %v", i, err)
				}
				status, body := postRaw(t, url, strings.ReplaceAll(x.Request, recordedResourceURI, ResourceURI))
				gotEnv, err := psrptest.ParseEnvelope(body)
				if err != nil {
					t.Fatalf("exchange %d: exsim response (HTTP %d): %v\n%s", i, status, err, body)
				}
				what := fmt.Sprintf("exchange %d (%s)", i, shortName(reqEnv.Action))
				compareExchange(t, what, reqEnv, wantEnv, gotEnv, status)
				want.add(t, wantEnv)
				got.add(t, gotEnv)
			}
			comparePSRPStreams(t, &want, &got)
			if t.Failed() {
				for _, c := range s.CallLog(0, 0) {
					t.Logf("call log: %s %s %s", c.Cmd, c.Result, c.Error)
				}
			}
		})
	}
}

func shortName(action string) string { return action[strings.LastIndexByte(action, '/')+1:] }

// compareExchange checks one answer against the recorded one.
func compareExchange(t *testing.T, what string, req, want, got *psrptest.Envelope, status int) {
	t.Helper()
	wantFault, gotFault := want.Body == "Fault", got.Body == "Fault"
	switch {
	case wantFault && gotFault:
		if got.FaultCode != want.FaultCode {
			t.Errorf("%s: fault code %s, Windows %s", what, got.FaultCode, want.FaultCode)
		}
		if status != http.StatusInternalServerError {
			t.Errorf("%s: fault with HTTP %d, want 500", what, status)
		}
		return
	case wantFault && want.FaultCode == "2150858793" && shortName(req.Action) == "Receive" && req.CommandID == "" && !gotFault:
		// The recorded script was still running; exsim refused it at once.
		return
	case !wantFault && gotFault && got.FaultCode == "2150858793" && onlyKeyExchange(t, want):
		// Only the pool's ENCRYPTED_SESSION_KEY answer may be missing.
		return
	case wantFault != gotFault:
		t.Errorf("%s: fault %v (code %s), Windows fault %v (code %s)", what, gotFault, got.FaultCode, wantFault, want.FaultCode)
		return
	}
	if got.Action != want.Action {
		t.Errorf("%s: action %s, Windows %s", what, got.Action, want.Action)
	}
	if got.Body != want.Body {
		t.Errorf("%s: body %s, Windows %s", what, got.Body, want.Body)
	}
	if want.Selectors["ShellId"] != got.Selectors["ShellId"] {
		t.Errorf("%s: ShellId %q, Windows %q", what, got.Selectors["ShellId"], want.Selectors["ShellId"])
	}
	if got.InputStreams != want.InputStreams || got.OutputStreams != want.OutputStreams {
		t.Errorf("%s: streams %q/%q, Windows %q/%q", what, got.InputStreams, got.OutputStreams, want.InputStreams, want.OutputStreams)
	}
	for _, p := range got.Payloads {
		if p.Element != "Stream" {
			continue
		}
		if p.Stream != "stdout" || !strings.EqualFold(p.CommandID, streamCommand(want)) {
			t.Errorf("%s: stream %s CommandId %q, Windows streams are stdout of %q", what, p.Stream, p.CommandID, streamCommand(want))
		}
	}
	// A finished pipeline's answer carries CommandState Done; the pool's
	// and a running pipeline's carry none. exsim's refused pipelines may be
	// Done where Windows' were still running, never the reverse.
	if len(want.CommandStates) > 0 && !slices.Equal(got.CommandStates, want.CommandStates) {
		t.Errorf("%s: CommandState %v, Windows %v", what, got.CommandStates, want.CommandStates)
	}
	if shortName(req.Action) == "Receive" && len(want.Payloads) > 0 && streamCommand(want) == "" && len(got.CommandStates) > 0 {
		t.Errorf("%s: a pool Receive answered with CommandState %v", what, got.CommandStates)
	}
}

// streamCommand is the CommandId of a recorded response's streams.
func streamCommand(e *psrptest.Envelope) string {
	for _, p := range e.Payloads {
		if p.Element == "Stream" {
			return p.CommandID
		}
	}
	return ""
}

// comparePSRPStreams compares the message types of the pool and of every
// pipeline, and the CLIXML shape of the pool's messages.
func comparePSRPStreams(t *testing.T, want, got *messageLog) {
	t.Helper()
	pool := func(l *messageLog) []psrp.MessageType {
		var out []psrp.MessageType
		for _, m := range l.msgs[""] {
			if m.Type != psrp.EncryptedSessionKey {
				out = append(out, m.Type)
			}
		}
		return out
	}
	if w, g := pool(want), pool(got); !slices.Equal(w, g) {
		t.Errorf("pool messages %v, Windows %v", g, w)
	}
	for i, m := range got.msgs[""] {
		var w *psrp.Message
		for j := range want.msgs[""] {
			if want.msgs[""][j].Type == m.Type {
				w = &want.msgs[""][j]
				break
			}
		}
		if w == nil {
			continue
		}
		if gs, ws := clixmlShape(t, m.Data), clixmlShape(t, w.Data); gs != ws {
			t.Errorf("pool message %d %v: CLIXML shape\n%s\nWindows\n%s", i, m.Type, gs, ws)
		}
		if m.RPID != w.RPID && m.Type != psrp.SessionCapability {
			t.Errorf("pool message %d %v: RPID %v, Windows %v", i, m.Type, m.RPID, w.RPID)
		}
	}
	for id, wm := range want.msgs {
		if id == "" {
			continue
		}
		gm := got.msgs[id]
		if len(gm) == 0 || gm[len(gm)-1].Type != psrp.PipelineState || wm[len(wm)-1].Type != psrp.PipelineState {
			t.Errorf("pipeline %s: messages %v, Windows %v: both must end in PIPELINE_STATE", id, types(gm), types(wm))
			continue
		}
		st, err := psrp.ParsePipelineState(gm[len(gm)-1].Data)
		if err != nil {
			t.Errorf("pipeline %s: %v", id, err)
			continue
		}
		if st.State != psrp.PipeFailed || st.Err == nil ||
			(st.Err.FullyQualifiedErrorID != "ScriptsNotAllowed" && st.Err.FullyQualifiedErrorID != "CommandNotFoundException") {
			t.Errorf("pipeline %s: state %v %+v, want Failed: Exchange refuses scripts and unknown commands", id, st.State, st.Err)
		}
		if gm[len(gm)-1].PID != wm[len(wm)-1].PID {
			t.Errorf("pipeline %s: PID %v, Windows %v", id, gm[len(gm)-1].PID, wm[len(wm)-1].PID)
		}
	}
}

// clixmlShape renders the element structure of CLIXML (names, N attributes,
// nesting), without text, RefIds or repeated list items.
func clixmlShape(t *testing.T, data []byte) string {
	t.Helper()
	n, err := parseCLIXML(data)
	if err != nil {
		t.Fatalf("clixml: %v", err)
	}
	var b strings.Builder
	var walk func(n *xnode, depth int)
	walk = func(n *xnode, depth int) {
		fmt.Fprintf(&b, "%s%s %s\n", strings.Repeat(" ", depth), n.name, n.n)
		last := ""
		for _, k := range n.kids {
			if (n.name == "LST" || n.name == "TN") && k.name == last {
				continue
			}
			last = k.name
			walk(k, depth+1)
		}
	}
	walk(n, 0)
	return b.String()
}

// onlyKeyExchange reports whether every message of a recorded answer is
// ENCRYPTED_SESSION_KEY.
func onlyKeyExchange(t *testing.T, e *psrptest.Envelope) bool {
	t.Helper()
	if len(e.Payloads) == 0 {
		return false
	}
	for _, p := range e.Payloads {
		f, _, err := psrp.ParseFragment(p.Data)
		if err != nil || !f.Start || !f.End {
			return false
		}
		m, err := psrp.ParseMessage(f.Blob)
		if err != nil || m.Type != psrp.EncryptedSessionKey {
			return false
		}
	}
	return true
}

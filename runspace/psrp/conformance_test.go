package psrp_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/easconnector/easconnector/runspace/psrp"
	"github.com/easconnector/easconnector/runspace/psrp/psrptest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

var recordings = []string{
	"test_psrp_open_runspace.yml",
	"test_psrp_multiple_invocations.yml",
	"test_psrp_multiple_commands.yml",
	"test_psrp_error_failed.yml",
	"test_psrp_receive_failure.yml",
	"test_psrp_long_running_cmdlet.yml",
	"test_psrp_small_msg_size.yml",
	"test_psrp_stream_output_invocation.yml",
}

// summarize decodes one message as a client or server would and renders
// what it says in one line.
func summarize(m psrp.Message) (string, error) {
	head := fmt.Sprintf("%s dest=%d rpid=%s pid=%s", m.Type, m.Destination, m.RPID, m.PID)
	switch m.Type {
	case psrp.EndOfPipelineInput:
		if len(m.Data) != 0 {
			return "", fmt.Errorf("%d bytes of data", len(m.Data))
		}
		return head, nil
	case psrp.RunspacePoolState:
		s, err := psrp.ParsePoolState(m.Data)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s state=%s err=%v", head, s.State, s.Err), nil
	case psrp.PipelineState:
		s, err := psrp.ParsePipelineState(m.Data)
		if err != nil {
			return "", err
		}
		if s.Err != nil {
			return fmt.Sprintf("%s state=%s fqid=%q category=%d/%s reason=%q activity=%q exception=%q message=%q target=%q", head, s.State,
				s.Err.FullyQualifiedErrorID, s.Err.Category, s.Err.CategoryName, s.Err.Reason, s.Err.Activity, s.Err.ExceptionType, s.Err.Message, s.Err.TargetObject), nil
		}
		return fmt.Sprintf("%s state=%s", head, s.State), nil
	case psrp.ErrorRecord:
		e, err := psrp.ParseErrorRecord(m.Data)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s fqid=%q category=%d/%s reason=%q activity=%q exception=%q message=%q target=%q", head,
			e.FullyQualifiedErrorID, e.Category, e.CategoryName, e.Reason, e.Activity, e.ExceptionType, e.Message, e.TargetObject), nil
	case psrp.ApplicationPrivateData:
		pd, err := psrp.ParseApplicationPrivateData(m.Data)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s ps=%s protocol=%s build=%s", head, pd.PSVersion, pd.PSRemotingProtocolVersion, pd.BuildVersion), nil
	case psrp.WarningRecord, psrp.VerboseRecord, psrp.DebugRecord, psrp.InformationRecord:
		s, err := psrp.ParseInformational(m.Data)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s text=%q", head, s), nil
	case psrp.CreatePipeline:
		v, err := psrp.DecodeValue(m.Data)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s %s", head, pipelineShape(v)), nil
	}
	v, err := psrp.DecodeValue(m.Data)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s value=%s", head, render(v)), nil
}

// render prints a decoded value compactly: its tag, name and text, or its
// object's type name, ToString and properties.
func render(v psrp.Value) string {
	var b strings.Builder
	var walk func(v psrp.Value, depth int)
	walk = func(v psrp.Value, depth int) {
		if v.Name != "" {
			b.WriteString(v.Name + "=")
		}
		if v.Kind != psrp.KindObject {
			fmt.Fprintf(&b, "%s(%q)", v.Tag, v.Text)
			return
		}
		if depth > 3 {
			b.WriteString("{…}")
			return
		}
		o := v.Obj
		b.WriteString("{")
		if len(o.TypeNames) > 0 {
			b.WriteString(o.TypeNames[0] + " ")
		}
		if o.ToString != "" {
			fmt.Fprintf(&b, "ToString=%q ", o.ToString)
		}
		if o.Primitive != nil {
			walk(*o.Primitive, depth+1)
			b.WriteString(" ")
		}
		for _, l := range [][]psrp.Value{o.MS, o.Props, o.List} {
			for _, x := range l {
				walk(x, depth+1)
				b.WriteString(" ")
			}
		}
		for _, en := range o.Dict {
			walk(en.Key, depth+1)
			b.WriteString(":")
			walk(en.Value, depth+1)
			b.WriteString(" ")
		}
		b.WriteString("}")
	}
	walk(v, 0)
	return b.String()
}

// pipelineShape summarizes a CREATE_PIPELINE: the flags and each command
// with its parameters.
func pipelineShape(v psrp.Value) string {
	var b strings.Builder
	o := v.Obj
	for _, n := range []string{"NoInput", "AddToHistory", "IsNested"} {
		x, _ := o.Prop(n)
		fmt.Fprintf(&b, "%s=%s ", n, x.Text)
	}
	ps, _ := o.Prop("PowerShell")
	cmds, _ := ps.Obj.Prop("Cmds")
	for _, c := range cmds.Obj.List {
		name, _ := c.Obj.Prop("Cmd")
		script, _ := c.Obj.Prop("IsScript")
		fmt.Fprintf(&b, "cmd=%q script=%s args=[", name.Text, script.Text)
		args, _ := c.Obj.Prop("Args")
		for _, a := range args.Obj.List {
			n, _ := a.Obj.Prop("N")
			val, _ := a.Obj.Prop("V")
			fmt.Fprintf(&b, "%s:%s ", n.String(), render(val))
		}
		b.WriteString("] ")
	}
	return strings.TrimSpace(b.String())
}

// decodeRecording replays every payload of a recording through the
// fragment assembler (one per direction, as each side keeps its own) and
// summarizes each message, with the WS-Man context of its envelope.
func decodeRecording(t *testing.T, name string) string {
	t.Helper()
	ex, err := psrptest.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	var toServer, toClient psrp.Assembler
	emit := func(dir string) func([]byte) error {
		return func(msg []byte) error {
			m, err := psrp.ParseMessage(msg)
			if err != nil {
				return err
			}
			s, err := summarize(m)
			if err != nil {
				return fmt.Errorf("%s: %w", m.Type, err)
			}
			fmt.Fprintf(&out, "  %s %s\n", dir, s)
			return nil
		}
	}
	for i, x := range ex {
		for j, side := range []string{x.Request, x.Response} {
			if side == "" {
				continue
			}
			env, err := psrptest.ParseEnvelope(side)
			if err != nil {
				t.Fatalf("%s #%d: %v", name, i, err)
			}
			dir, asm := ">", &toServer
			if j == 1 {
				dir, asm = "<", &toClient
			}
			fmt.Fprintf(&out, "%s %s %s", dir, lastPart(env.Action), env.Body)
			if x.HTTPStatus != 0 && j == 1 {
				fmt.Fprintf(&out, " http=%d", x.HTTPStatus)
			}
			if env.FaultCode != "" {
				fmt.Fprintf(&out, " fault=%s", env.FaultCode)
			}
			if env.SignalCode != "" {
				fmt.Fprintf(&out, " signal=%s", env.SignalCode)
			}
			for _, st := range env.CommandStates {
				fmt.Fprintf(&out, " state=%s", lastPart(st))
			}
			out.WriteString("\n")
			for _, p := range env.Payloads {
				if err := asm.Write(p.Data, emit(dir)); err != nil {
					t.Fatalf("%s #%d %s: %v", name, i, p.Element, err)
				}
			}
		}
	}
	if toServer.Pending() != 0 || toClient.Pending() != 0 {
		t.Errorf("%s: messages left half assembled: %d to server, %d to client", name, toServer.Pending(), toClient.Pending())
	}
	return out.String()
}

func lastPart(s string) string { return s[strings.LastIndexByte(s, '/')+1:] }

// TestRecordingsDecode decodes every fragment, message and CLIXML payload
// pypsrp recorded against Windows and compares the result with a golden
// summary (reviewed by hand against the raw XML; -update rewrites it).
func TestRecordingsDecode(t *testing.T) {
	for _, name := range recordings {
		t.Run(name, func(t *testing.T) {
			got := decodeRecording(t, name)
			golden := filepath.Join("testdata", "golden", strings.TrimSuffix(name, ".yml")+".txt")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("decoded %s differs from %s:\n%s", name, golden, got)
			}
		})
	}
}

package psrp_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/easconnector/easconnector/runspace/psrp"
)

// hostile are the strings of "Talk to Exchange" that must travel as data:
// quotes of every kind, subexpressions, backticks, newlines, NUL and other
// controls, literal escapes, surrogates and a 1 MB string.
var hostile = []string{
	``, `'`, `"`, `‘’‚‛“”„‟`, `$(Remove-Mailbox x)`, "`$x`n", "a\nb\r\nc", "nul\x00nul", "\x01\x1f\x7f\u0085",
	`_x000A_`, `_X000a_`, `__x__`, `_x`, `_xD800_`, "😀", "\xed\xa0\x80", "\xed\xb0\x80x", "\ufffe\uffff",
	`]]>`, `<Obj RefId="0"/>`, `&amp;`, "@{Add='x'}; Remove-Item", strings.Repeat("A_x0000_\n", 1<<20/9),
}

func roundTripString(t testing.TB, s string) {
	// Through a CommandParameter value, as a parameter travels.
	b, err := psrp.BuildCreatePipeline([]psrp.Command{{Name: "Set-CASMailbox", Params: []psrp.Param{{Name: "Identity", Value: s}}}})
	if err != nil {
		if !utf8.ValidString(s) && strings.ToValidUTF8(s, "") != s {
			return // invalid UTF-8 that is not WTF-8 is refused, never sent
		}
		t.Fatalf("BuildCreatePipeline(%.40q): %v", s, err)
	}
	v, err := psrp.DecodeValue(b)
	if err != nil {
		t.Fatalf("DecodeValue of %.40q: %v", s, err)
	}
	ps, _ := v.Obj.Prop("PowerShell")
	cmds, _ := ps.Obj.Prop("Cmds")
	args, _ := cmds.Obj.List[0].Obj.Prop("Args")
	val, _ := args.Obj.List[0].Obj.Prop("V")
	if val.Text != s {
		t.Fatalf("round trip of %.40q gave %.40q", s, val.Text)
	}
}

func TestHostileStringsRoundTrip(t *testing.T) {
	for _, s := range hostile {
		roundTripString(t, s)
	}
}

func FuzzStringRoundTrip(f *testing.F) {
	for _, s := range hostile[:len(hostile)-1] {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := psrp.AppendEscaped(nil, s); err != nil {
			return // refused input is never sent
		}
		roundTripString(t, s)
	})
}

func FuzzAssembler(f *testing.F) {
	fr := psrp.Fragmenter{MaxFragment: 30}
	parts, _ := fr.Split([]byte("hello, fragmented world"))
	f.Add(bytes.Join(parts, nil), 0)
	f.Add(psrp.AppendFragment(nil, psrp.Fragment{ObjectID: 1, Start: true, End: true, Blob: []byte("x")}), 3)
	f.Fuzz(func(t *testing.T, b []byte, split int) {
		var a psrp.Assembler
		a.MaxMessage = 1 << 16
		n := 0
		emit := func(m []byte) error {
			if len(m) > a.MaxMessage {
				t.Fatalf("message of %d bytes past the limit", len(m))
			}
			n++
			return nil
		}
		if split > 0 && split < len(b) {
			if a.Write(b[:split], emit) != nil {
				return
			}
			b = b[split:]
		}
		_ = a.Write(b, emit)
	})
}

func FuzzParseMessage(f *testing.F) {
	f.Add(psrp.AppendMessage(nil, psrp.Message{Destination: psrp.DestinationClient, Type: psrp.PipelineState, Data: []byte(`<Obj RefId="0"><MS><I32 N="PipelineState">4</I32></MS></Obj>`)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := psrp.ParseMessage(b)
		if err != nil {
			return
		}
		if !m.Type.Known() {
			t.Fatalf("unknown type %v accepted", m.Type)
		}
		switch m.Type {
		case psrp.RunspacePoolState:
			_, _ = psrp.ParsePoolState(m.Data)
		case psrp.PipelineState:
			_, _ = psrp.ParsePipelineState(m.Data)
		case psrp.ErrorRecord:
			_, _ = psrp.ParseErrorRecord(m.Data)
		case psrp.ApplicationPrivateData:
			_, _ = psrp.ParseApplicationPrivateData(m.Data)
		default:
			_, _ = psrp.ParseInformational(m.Data)
		}
	})
}

func FuzzDecodeCLIXML(f *testing.F) {
	f.Add([]byte(deviceCLIXML))
	f.Add([]byte(`<Obj RefId="0"><MS><Obj N="x" RefId="1"><LST><Ref RefId="1" /></LST></Obj></MS></Obj>`))
	f.Add([]byte(`<Obj RefId="0"><TNRef RefId="4" /></Obj>`))
	p := psrp.NewProjection([]string{"Identity", "DeviceId", "Tags", "FirstSyncTime", "DeviceAccessState"})
	f.Fuzz(func(t *testing.T, b []byte) {
		tree, terr := psrp.DecodeValue(b)
		out, err := p.AppendJSON(nil, b)
		if err == nil && !jsonValid(out) {
			t.Fatalf("projection wrote invalid JSON %q", out)
		}
		// Differential: where both decoders accept the object, the
		// streaming scanner must read a string property as the
		// encoding/xml-based tree does.
		if err != nil || terr != nil || tree.Kind != psrp.KindObject {
			return
		}
		v, ok := tree.Obj.Prop("DeviceId")
		if !ok || v.Kind != psrp.KindString || !utf8.ValidString(v.Text) {
			return
		}
		var got map[string]any
		if json.Unmarshal(out, &got) != nil {
			t.Fatalf("projection JSON %q does not decode", out)
		}
		if s, _ := got["DeviceId"].(string); s != v.Text {
			t.Fatalf("DeviceId: projection %q, tree %q", s, v.Text)
		}
	})
}

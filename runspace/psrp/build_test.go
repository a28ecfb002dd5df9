package psrp_test

import (
	"encoding/xml"
	"slices"
	"strings"
	"testing"

	"github.com/easconnector/easconnector/runspace/psrp"
	"github.com/easconnector/easconnector/runspace/psrp/psrptest"
)

// shape lists every element of a CLIXML document as its path of tag[N]
// steps, in document order, leaving out type names (TN/TNRef/T), whose
// form depends on what came first, and text.
func shape(t *testing.T, data []byte) []string {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(string(data)))
	var path, out []string
	for {
		tok, err := d.Token()
		if err != nil {
			return out
		}
		switch e := tok.(type) {
		case xml.StartElement:
			step := e.Name.Local
			for _, a := range e.Attr {
				if a.Name.Local == "N" {
					step += "[" + a.Value + "]"
				}
			}
			path = append(path, step)
			if e.Name.Local != "TN" && e.Name.Local != "TNRef" && e.Name.Local != "T" && !slices.Contains(path, "TN") {
				out = append(out, strings.Join(path, "/"))
			}
		case xml.EndElement:
			path = path[:len(path)-1]
		}
	}
}

// recordedMessages returns the messages the client sent in a recording,
// in order.
func recordedMessages(t *testing.T, name string) []psrp.Message {
	t.Helper()
	ex, err := psrptest.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	var asm psrp.Assembler
	var out []psrp.Message
	for _, x := range ex {
		env, err := psrptest.ParseEnvelope(x.Request)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range env.Payloads {
			err := asm.Write(p.Data, func(b []byte) error {
				m, err := psrp.ParseMessage(b)
				m.Data = append([]byte(nil), m.Data...)
				out = append(out, m)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return out
}

func firstOfType(t *testing.T, name string, typ psrp.MessageType) psrp.Message {
	t.Helper()
	for _, m := range recordedMessages(t, name) {
		if m.Type == typ {
			return m
		}
	}
	t.Fatalf("%s has no %s", name, typ)
	return psrp.Message{}
}

// argsShape keeps the part of a shape below the Args of each command of
// the pipeline's Cmds (pypsrp also repeats the commands in ExtraCmds).
func argsShape(paths []string) []string {
	var out []string
	for _, p := range paths {
		if i := strings.Index(p, "Obj[Args]"); i >= 0 && strings.HasPrefix(p, "Obj/MS/Obj[PowerShell]/MS/Obj[Cmds]/") {
			out = append(out, p[i:])
		}
	}
	return out
}

// TestBuildersMatchRecordedShape compares the CLIXML element shape of the
// messages we send with what pypsrp sent to Windows: SESSION_CAPABILITY and
// INIT_RUNSPACEPOOL of creationXml, CREATE_PIPELINE as a whole
// (test_psrp_error_failed.yml has the single-statement form, ExtraCmds nil)
// and its CommandParameter list (test_psrp_long_running_cmdlet.yml runs the
// cmdlet Start-Sleep -Seconds 10, IsScript false).
func TestBuildersMatchRecordedShape(t *testing.T) {
	const errFailed, longRunning = "test_psrp_error_failed.yml", "test_psrp_long_running_cmdlet.yml"
	noArgs, err := psrp.BuildCreatePipeline([]psrp.Command{{Name: "Get-Date"}})
	if err != nil {
		t.Fatal(err)
	}
	sleep, err := psrp.BuildCreatePipeline([]psrp.Command{{Name: "Start-Sleep", Params: []psrp.Param{{Name: "Seconds", Value: 10}}}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		what      string
		ours, rec []byte
		cut       func([]string) []string
	}{
		{"SESSION_CAPABILITY", psrp.BuildSessionCapability(), firstOfType(t, errFailed, psrp.SessionCapability).Data, nil},
		{"INIT_RUNSPACEPOOL", psrp.BuildInitRunspacePool(), firstOfType(t, errFailed, psrp.InitRunspacePool).Data, nil},
		{"CREATE_PIPELINE", noArgs, firstOfType(t, errFailed, psrp.CreatePipeline).Data, nil},
		{"CREATE_PIPELINE Args", sleep, firstOfType(t, longRunning, psrp.CreatePipeline).Data, argsShape},
	}
	for _, c := range cases {
		got, want := shape(t, c.ours), shape(t, c.rec)
		if c.cut != nil {
			got, want = c.cut(got), c.cut(want)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s shape:\n got %q\nwant %q", c.what, got, want)
		}
		if _, err := psrp.DecodeValue(c.ours); err != nil {
			t.Errorf("%s: ours does not decode: %v", c.what, err)
		}
	}
	ours, err := psrp.DecodeValue(sleep)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := psrp.DecodeValue(firstOfType(t, longRunning, psrp.CreatePipeline).Data)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := commandOf(t, ours), commandOf(t, rec); got != want {
		t.Errorf("command = %s, want %s", got, want)
	}
}

func commandOf(t *testing.T, v psrp.Value) string {
	t.Helper()
	ps, _ := v.Obj.Prop("PowerShell")
	cmds, _ := ps.Obj.Prop("Cmds")
	var b strings.Builder
	for _, c := range cmds.Obj.List {
		n, _ := c.Obj.Prop("Cmd")
		s, _ := c.Obj.Prop("IsScript")
		b.WriteString(n.Text + " script=" + s.Text)
		args, _ := c.Obj.Prop("Args")
		for _, a := range args.Obj.List {
			an, _ := a.Obj.Prop("N")
			av, _ := a.Obj.Prop("V")
			b.WriteString(" -" + an.Text + ":" + av.Tag + "(" + av.Text + ")")
		}
	}
	return b.String()
}

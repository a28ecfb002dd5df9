package exsim

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/easconnector/easconnector/runspace/psrp"
)

// FuzzCLIXMLText checks the server's string encoder against the product's
// decoder and its own: any string round-trips, with invalid UTF-8 made
// U+FFFD, and the output is XML text without raw control characters.
func FuzzCLIXMLText(f *testing.F) {
	for _, s := range []string{"", "plain", "a'b\"c", "$(x)`n", "line\r\nbreak", "nul\x00", "_x000A_", "_X000a_", "_x005F_", "\U00010437", "\xff\xfe", "\uFFFE\uFFFF", "<&>", "tab\t", strings.Repeat("é", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := string([]rune(s)) // each invalid byte becomes U+FFFD
		text := appendCLIXMLText(nil, s, false)
		for _, c := range text {
			if c < 0x20 {
				t.Fatalf("appendCLIXMLText(%q) = %q: raw control character", s, text)
			}
		}
		doc := append(append([]byte("<S>"), text...), "</S>"...)
		n, err := parseCLIXML(doc)
		if err != nil {
			t.Fatalf("appendCLIXMLText(%q) = %q: not XML: %v", s, text, err)
		}
		if got := decodeCLIXMLString(n.text); got != want && utf8.ValidString(s) {
			t.Fatalf("own decoder: %q -> %q -> %q", s, text, got)
		}
		v, err := psrp.DecodeValue(doc)
		if err != nil {
			t.Fatalf("product decoder rejects %q: %v", doc, err)
		}
		if v.Text != want {
			t.Fatalf("product decoder: %q -> %q -> %q, want %q", s, text, v.Text, want)
		}
	})
}

// FuzzCreatePipeline feeds arbitrary CREATE_PIPELINE data to the parser
// and the binder: they return a pipeline or an error, never panic, and a
// value that decodes is one the cmdlet layer accepts as a wire value.
func FuzzCreatePipeline(f *testing.F) {
	seed := func(cmds ...psrp.Command) {
		data, err := psrp.BuildCreatePipeline(cmds)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	seed(psrp.Command{Name: "Get-MobileDevice", Params: []psrp.Param{{Name: "ResultSize", Value: "Unlimited"}, {Name: "ActiveSync", Value: psrp.Switch{}}}})
	seed(psrp.Command{Name: "Set-CASMailbox", Params: []psrp.Param{{Name: "Identity", Value: "a'b"}, {Name: "ActiveSyncAllowedDeviceIDs", Value: psrp.Hashtable{{Key: "Add", Value: []string{"x", "_x000A_"}}}}}})
	seed(psrp.Command{Name: "Get-CASMailbox"}, psrp.Command{Name: "Select-Object", Params: []psrp.Param{{Name: "Property", Value: []string{"Identity"}}}})
	f.Add([]byte(`<Obj RefId="0"><MS><Obj N="PowerShell" RefId="1"><MS><Obj N="Cmds" RefId="2"><LST><Obj RefId="3"><MS><S N="Cmd">Get-MobileDevice</S><Obj N="Args" RefId="4"><LST><Obj RefId="5"><MS><Nil N="N" /><Ref N="V" RefId="3" /></MS></Obj></LST></Obj></MS></Obj></LST></Obj></MS></Obj></MS></Obj>`))
	s, err := New(Options{Quiet: true})
	if err != nil {
		f.Fatal(err)
	}
	pl := &pipeline{pool: &psPool{w: s.listeners[0].worker}}
	f.Fuzz(func(t *testing.T, data []byte) {
		def, err := parseCreatePipeline(data)
		if err != nil {
			return
		}
		var entry Call
		c, err := pl.prepare(t.Context(), def, &entry)
		if err != nil {
			return
		}
		if _, re := bindArgs(c.cmd, c.req.Args); re != nil && re.Msg == "" {
			t.Fatalf("binding error without a message for %q", data)
		}
	})
}

// FuzzAssembler feeds arbitrary bytes to the fragment reassembler: it
// errors or emits messages no longer than what it was fed.
func FuzzAssembler(f *testing.F) {
	var fr fragmenter
	fr.max = 8
	f.Add(fr.fragment(nil, []byte("0123456789abcdefghijklmnop")))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, 'x'})
	f.Fuzz(func(t *testing.T, data []byte) {
		var a assembler
		total := 0
		_ = a.write(data, func(m []byte) error {
			total += len(m)
			return nil
		})
		if total > len(data) {
			t.Fatalf("emitted %d bytes from %d", total, len(data))
		}
		// Split anywhere, the same bytes give the same messages.
		if len(data) > 1 {
			var whole, split [][]byte
			var a1, a2 assembler
			e1 := a1.write(data, func(m []byte) error { whole = append(whole, bytes.Clone(m)); return nil })
			e2 := a2.write(data[:len(data)/2], func(m []byte) error { split = append(split, bytes.Clone(m)); return nil })
			if e2 == nil {
				e2 = a2.write(data[len(data)/2:], func(m []byte) error { split = append(split, bytes.Clone(m)); return nil })
			}
			if (e1 == nil) != (e2 == nil) || e1 == nil && len(whole) != len(split) {
				t.Fatalf("whole: %d messages, %v; split: %d messages, %v", len(whole), e1, len(split), e2)
			}
		}
	})
}

package psrp_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/runspace/psrp"
)

func TestFragmentSplitAndReassemble(t *testing.T) {
	msgA := bytes.Repeat([]byte("a"), 100)
	msgB := bytes.Repeat([]byte("b"), 45)
	fr := psrp.Fragmenter{MaxFragment: psrp.FragmentHeaderSize + 20}
	fa, err := fr.Split(msgA)
	if err != nil {
		t.Fatal(err)
	}
	fb, _ := fr.Split(msgB)
	if len(fa) != 5 || len(fb) != 3 {
		t.Fatalf("fragments = %d and %d, want 5 and 3", len(fa), len(fb))
	}
	for _, f := range append(fa, fb...) {
		if len(f) > fr.MaxFragment {
			t.Fatalf("fragment of %d bytes, max %d", len(f), fr.MaxFragment)
		}
	}
	// Interleave the two objects and spread them over several writes, as
	// Windows may across Receive responses.
	writes := [][]byte{
		append(append([]byte{}, fa[0]...), fb[0]...),
		fa[1], append(append([]byte{}, fb[1]...), fa[2]...),
		append(append(append([]byte{}, fa[3]...), fb[2]...), fa[4]...),
	}
	var a psrp.Assembler
	var got []string
	for _, w := range writes {
		if err := a.Write(w, func(m []byte) error { got = append(got, string(m)); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 2 || got[0] != string(msgB) || got[1] != string(msgA) || a.Pending() != 0 {
		t.Fatalf("messages = %q (pending %d)", got, a.Pending())
	}
}

func TestFragmentErrors(t *testing.T) {
	frag := func(obj, id uint64, s, e bool, blob string) []byte {
		return psrp.AppendFragment(nil, psrp.Fragment{ObjectID: obj, FragmentID: id, Start: s, End: e, Blob: []byte(blob)})
	}
	cat := func(b ...[]byte) []byte { return bytes.Join(b, nil) }
	f := func(name string, in []byte, max int, want string) {
		t.Helper()
		a := psrp.Assembler{MaxMessage: max}
		err := a.Write(in, func([]byte) error { return nil })
		if err == nil || !errors.Is(err, psrp.ErrFragment) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", name, err, want)
		}
	}
	f("short header", make([]byte, 20), 0, "header")
	f("blob past end", frag(1, 0, true, true, "abc")[:23], 0, "blob length")
	f("no start", frag(1, 1, false, true, "x"), 0, "no start fragment")
	f("gap", cat(frag(1, 0, true, false, "x"), frag(1, 2, false, true, "y")), 0, "fragment 2, want 1")
	f("restart", cat(frag(1, 0, true, false, "x"), frag(1, 0, true, true, "y")), 0, "pending")
	f("start not 0", frag(1, 3, true, true, "x"), 0, "start fragment has id 3")
	f("too big", cat(frag(1, 0, true, false, "xxxx"), frag(1, 1, false, true, "yyyy")), 6, "larger than 6")
	bad := frag(1, 0, true, true, "x")
	bad[16] |= 0x4
	f("flags", bad, 0, "unknown flags")
}

func TestMessageGUIDByteOrder(t *testing.T) {
	rp, err := psrp.ParseGUID("04777930-1347-422B-AA4D-33BDC2570979")
	if err != nil {
		t.Fatal(err)
	}
	b := psrp.AppendMessage(nil, psrp.Message{Destination: psrp.DestinationServer, Type: psrp.CreatePipeline, RPID: rp, Data: []byte("<S>x</S>")})
	// .NET Guid.ToByteArray: 30 79 77 04 | 47 13 | 2B 42 | AA 4D 33 BD C2 57 09 79.
	wantRP := []byte{0x30, 0x79, 0x77, 0x04, 0x47, 0x13, 0x2b, 0x42, 0xaa, 0x4d, 0x33, 0xbd, 0xc2, 0x57, 0x09, 0x79}
	if !bytes.Equal(b[8:24], wantRP) || !bytes.Equal(b[0:8], []byte{2, 0, 0, 0, 0x06, 0x10, 0x02, 0}) {
		t.Fatalf("header = % x", b[:24])
	}
	m, err := psrp.ParseMessage(append(b[:40:40], "\xef\xbb\xbf<S>x</S>"...))
	if err != nil || m.RPID != rp || string(m.Data) != "<S>x</S>" || m.Type != psrp.CreatePipeline {
		t.Fatalf("ParseMessage = %+v, %v", m, err)
	}
	if _, err := psrp.ParseMessage(append([]byte{9, 0, 0, 0}, b[4:]...)); err == nil {
		t.Error("destination 9 accepted")
	}
}

func TestEscapeVectors(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		got, err := psrp.AppendEscaped(nil, in)
		if err != nil || string(got) != want {
			t.Errorf("AppendEscaped(%q) = %q, %v; want %q", in, got, err, want)
		}
		if back := psrp.Unescape(xmlUnescape(string(got))); back != in {
			t.Errorf("Unescape(%q) = %q, want %q", got, back, in)
		}
	}
	// Windows' own form of CR LF (test_psrp_error_failed.yml PositionMessage).
	f("char:55\r\n+ ...", "char:55_x000D__x000A_+ ...")
	f("tab\there", "tab_x0009_here")
	f("nul\x00", "nul_x0000_")
	f("_x000A_ literal", "_x005F_x000A_ literal")
	f("_X005F_", "_x005F_X005F_")
	f("snake_case and _y", "snake_case and _y")
	f("<a & b>", "&lt;a &amp; b&gt;")
	f("\u0085 next line, \u007f del", "_x0085_ next line, _x007F_ del")
	f("emoji 😀", "emoji _xD83D__xDE00_")
	f("\ufffe\uffff", "_xFFFE__xFFFF_")
	f("lone \xed\xa0\x80 high", "lone _xD800_ high")
	f("lone \xed\xbf\xbf low", "lone _xDFFF_ low")
	f(`quotes ' " ‘ ’ “ ” $(Get-Date) `+"`n", `quotes ' " ‘ ’ “ ” $(Get-Date) `+"`n")
	if _, err := psrp.AppendEscaped(nil, "bad \xff"); !errors.Is(err, psrp.ErrString) {
		t.Errorf("invalid UTF-8: err = %v", err)
	}
	// Lowercase hex from other writers decodes too.
	if got := psrp.Unescape("a_x000a_b"); got != "a\nb" {
		t.Errorf("Unescape lowercase = %q", got)
	}
}

func xmlUnescape(s string) string {
	return strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&").Replace(s)
}

func TestEncodeValues(t *testing.T) {
	var e psrp.Encoder
	when := time.Date(2024, 5, 6, 7, 8, 9, 123456700, time.UTC)
	e.Value("", psrp.Hashtable{{Key: "Add", Value: []string{"A1", "B2"}}, {Key: "Remove", Value: []string{}}})
	e.Value("", []any{"s", true, psrp.Switch{}, 5, int64(1) << 40, when, nil})
	b, err := e.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	want := `<Obj RefId="0"><TN RefId="0"><T>System.Collections.Hashtable</T><T>System.Object</T></TN><DCT>` +
		`<En><S N="Key">Add</S><Obj N="Value" RefId="1"><TN RefId="1"><T>System.String[]</T><T>System.Array</T><T>System.Object</T></TN><LST><S>A1</S><S>B2</S></LST></Obj></En>` +
		`<En><S N="Key">Remove</S><Obj N="Value" RefId="2"><TNRef RefId="1" /><LST></LST></Obj></En></DCT></Obj>` +
		`<Obj RefId="3"><TN RefId="2"><T>System.Object[]</T><T>System.Array</T><T>System.Object</T></TN><LST><S>s</S><B>true</B><B>true</B><I32>5</I32><I64>1099511627776</I64><DT>2024-05-06T07:08:09.1234567Z</DT><Nil /></LST></Obj>`
	if string(b) != want {
		t.Errorf("encoded:\n%s\nwant\n%s", b, want)
	}
	e.Reset()
	e.Value("", 1.5)
	if _, err := e.Bytes(); err == nil {
		t.Error("float accepted")
	}
	e.Reset()
	e.Value("bad name", "x")
	if _, err := e.Bytes(); err == nil {
		t.Error("name with a space accepted")
	}
	if _, err := psrp.BuildCreatePipeline([]psrp.Command{{Name: "Get-Date; rm"}}); err == nil {
		t.Error("script-like command name accepted")
	}
}

// A Get-MobileDevice object as Exchange's remote runspace serializes it:
// Deserialized type names, an enum, a DateTime, a multi-valued property,
// a <Ref> to an object seen earlier, and escapes.
const deviceCLIXML = `<Obj RefId="0"><TN RefId="0"><T>Deserialized.Microsoft.Exchange.Data.Directory.SystemConfiguration.MobileDevice</T><T>Deserialized.Microsoft.Exchange.Data.Directory.ADObject</T><T>Deserialized.System.Object</T></TN>` +
	`<ToString>iPhone§ABC123</ToString><Props>` +
	`<S N="DeviceId">ABC123</S><S N="DeviceType">iPhone</S><S N="DeviceModel">iPhone_x000D__x000A_15 &lt;Pro&gt;</S>` +
	`<S N="DeviceUserAgent">Apple-iPhone/2101 "quoted" $(x) ` + "`" + `</S>` +
	`<DT N="FirstSyncTime">2024-01-02T03:04:05.1234567+01:00</DT>` +
	`<Obj N="DeviceAccessState" RefId="1"><TN RefId="1"><T>Microsoft.Exchange.Data.Directory.SystemConfiguration.DeviceAccessState</T><T>System.Enum</T></TN><ToString>Quarantined</ToString><I32>3</I32></Obj>` +
	`<Obj N="Id" RefId="2"><TN RefId="2"><T>Deserialized.Microsoft.Exchange.Data.Directory.ADObjectId</T></TN><ToString>contoso.com/Users/Ann/ExchangeActiveSyncDevices/iPhone§ABC123</ToString><Props><S N="Name">x</S></Props></Obj>` +
	`<Ref N="Identity" RefId="2" />` +
	`<Obj N="Tags" RefId="3"><TN RefId="3"><T>Deserialized.Microsoft.Exchange.Data.MultiValuedProperty` + "`" + `1[[System.String]]</T></TN><LST><S>a</S><S>b_x0009_c</S><I32>7</I32></LST></Obj>` +
	`<Nil N="ClientType" /><B N="IsManaged">false</B><I64 N="Count">12</I64>` +
	`</Props><MS><S N="UserDisplayName">Ann</S></MS></Obj>`

func TestProjection(t *testing.T) {
	p := psrp.NewProjection([]string{"Identity", "DeviceId", "DeviceModel", "DeviceUserAgent", "FirstSyncTime", "DeviceAccessState", "Tags", "ClientType", "IsManaged", "Count", "UserDisplayName", "Missing"})
	out, err := p.AppendJSON(nil, []byte(deviceCLIXML))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	want := map[string]any{
		"Identity": "contoso.com/Users/Ann/ExchangeActiveSyncDevices/iPhone§ABC123", "DeviceId": "ABC123",
		"DeviceModel": "iPhone\r\n15 <Pro>", "DeviceUserAgent": "Apple-iPhone/2101 \"quoted\" $(x) `",
		"FirstSyncTime": "2024-01-02T02:04:05.1234567Z", "DeviceAccessState": "Quarantined",
		"Tags": []any{"a", "b\tc", "7"}, "ClientType": nil, "IsManaged": false, "Count": float64(12),
		"UserDisplayName": "Ann", "Missing": nil,
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) {
		t.Errorf("projection:\n got %s\nwant %s", gj, wj)
	}
	// The same Projection serves the next object.
	out2, err := p.AppendJSON(nil, []byte(deviceCLIXML))
	if err != nil || string(out2) != string(out) {
		t.Errorf("second use = %s, %v", out2, err)
	}
	// A literal CR LF in the XML is read as LF, as every XML parser does;
	// a real CR travels escaped.
	crlf, err := psrp.NewProjection([]string{"A"}).AppendJSON(nil, []byte("<Obj RefId=\"0\"><MS><S N=\"A\">a\r\nb\rc_x000D_</S></MS></Obj>"))
	if err != nil || string(crlf) != `{"A":"a\u000ab\u000ac\u000d"}` {
		t.Errorf("CR handling: %s, %v", crlf, err)
	}
	for _, bad := range []string{`<S>x</S>`, `<Obj RefId="0"><Props><Ref N="Identity" RefId="9" /></Props></Obj>`, `<Obj RefId="0"><Props><S N="DeviceId">x</Props></Obj>`} {
		if _, err := psrp.NewProjection([]string{"Identity", "DeviceId"}).AppendJSON(nil, []byte(bad)); err == nil {
			t.Errorf("AppendJSON(%s) accepted", bad)
		}
	}
}

func jsonValid(b []byte) bool { return json.Valid(b) }

package exsim

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// CLIXML, the serialization of PowerShell objects in PSRP messages
// (MS-PSRP 2.2.5), as far as the simulated endpoint reads and writes it:
// a small tree decoder for the client's messages and a streaming writer for
// the server's.

// xnode is one decoded CLIXML element.
type xnode struct {
	name  string // local name: Obj, S, I32, MS, LST, …
	n     string // the N attribute (property or parameter name)
	refID string
	text  string
	kids  []*xnode
}

// maxCLIXMLDepth bounds nesting, so hostile input cannot exhaust the stack.
const maxCLIXMLDepth = 64

// parseCLIXML decodes the one root element of a message's data (after an
// optional UTF-8 BOM).
func parseCLIXML(data []byte) (*xnode, error) {
	data = bytes.TrimPrefix(data, utf8BOM)
	dec := xml.NewDecoder(bytes.NewReader(data))
	var stack []*xnode
	var root *xnode
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("clixml: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if len(stack) == maxCLIXMLDepth {
				return nil, fmt.Errorf("clixml: nested deeper than %d", maxCLIXMLDepth)
			}
			n := &xnode{name: t.Name.Local}
			for _, a := range t.Attr {
				switch a.Name.Local {
				case "N":
					n.n = a.Value
				case "RefId":
					n.refID = a.Value
				}
			}
			if len(stack) > 0 {
				p := stack[len(stack)-1]
				p.kids = append(p.kids, n)
			} else if root != nil {
				return nil, errors.New("clixml: more than one root element")
			} else {
				root = n
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text += string(t)
			}
		}
	}
	if root == nil {
		return nil, errors.New("clixml: no element")
	}
	return root, nil
}

// child returns the first child element named name (with N=prop when prop
// is not empty).
func (n *xnode) child(name, prop string) *xnode {
	if n == nil {
		return nil
	}
	for _, k := range n.kids {
		if (name == "" || k.name == name) && (prop == "" || k.n == prop) {
			return k
		}
	}
	return nil
}

// prop finds a property of an Obj by name, in its MS or Props.
func (n *xnode) prop(name string) *xnode {
	for _, bag := range []string{"MS", "Props"} {
		if p := n.child(bag, ""); p != nil {
			if k := p.child("", name); k != nil {
				return k
			}
		}
	}
	return nil
}

// decodeCLIXMLString reverses the _xHHHH_ escaping of MS-PSRP 2.2.5.1, String,
// as .NET's XmlConvert.DecodeName does (pattern _[Xx]([0-9a-fA-F]{4}|
// [0-9a-fA-F]{8})_): a 4-digit escape is one UTF-16 code unit, an 8-digit
// one a code point; surrogate pairs join, and a lone surrogate becomes
// U+FFFD.
func decodeCLIXMLString(s string) string {
	if !strings.Contains(s, "_x") {
		return s
	}
	var units []uint16
	var b strings.Builder
	flush := func() {
		if len(units) > 0 {
			b.WriteString(string(utf16.Decode(units)))
			units = units[:0]
		}
	}
	for i := 0; i < len(s); {
		if n := escapeLen(s, i); n == 7 {
			v, _ := strconv.ParseUint(s[i+2:i+6], 16, 16)
			units = append(units, uint16(v))
			i += 7
			continue
		} else if n == 11 {
			v, _ := strconv.ParseUint(s[i+2:i+10], 16, 32)
			r := rune(v)
			if !utf8.ValidRune(r) {
				r = utf8.RuneError
			}
			units = append(units, utf16.Encode([]rune{r})...)
			i += 11
			continue
		}
		flush()
		r, size := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r)
		i += size
	}
	flush()
	return b.String()
}

// clixmlValue converts a serialized value into the form parameter binding
// takes (see wireArg): string, bool, json.Number, nil, []any for lists and
// map[string]any for hashtables. refs resolves <Ref RefId> to objects seen
// earlier in the same message.
func clixmlValue(n *xnode, refs map[string]*xnode, depth int) (any, error) {
	if depth > maxCLIXMLDepth {
		return nil, errors.New("clixml: value nested too deeply")
	}
	switch n.name {
	case "Nil":
		return nil, nil
	case "S", "C", "URI", "Version", "G", "XD", "SBK":
		// A deserialized ScriptBlock is only its text (MS-PSRP 2.2.5):
		// it never becomes code on the server.
		if n.name == "C" {
			v, err := strconv.ParseUint(strings.TrimSpace(n.text), 10, 16)
			if err != nil {
				return nil, fmt.Errorf("clixml: <C> %q is not a UTF-16 code unit", n.text)
			}
			return string(utf16.Decode([]uint16{uint16(v)})), nil
		}
		return decodeCLIXMLString(n.text), nil
	case "B":
		switch strings.TrimSpace(n.text) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return nil, fmt.Errorf("clixml: <B> %q is not a boolean", n.text)
	case "I32", "I64", "I16", "U8", "SB", "U16", "U32", "U64", "Db", "Sg", "D":
		t := strings.TrimSpace(n.text)
		if _, err := strconv.ParseFloat(t, 64); err != nil {
			return nil, fmt.Errorf("clixml: <%s> %q is not a number", n.name, n.text)
		}
		return json.Number(t), nil
	case "DT", "TS":
		return strings.TrimSpace(n.text), nil
	case "Ref":
		target := refs[n.refID]
		if target == nil {
			return nil, fmt.Errorf("clixml: <Ref RefId=%q> names no earlier object", n.refID)
		}
		return clixmlValue(target, refs, depth+1)
	case "Obj":
		if n.refID != "" {
			refs[n.refID] = n
		}
		return clixmlObject(n, refs, depth)
	}
	return nil, fmt.Errorf("clixml: <%s> is not a value the simulated Exchange accepts", n.name)
}

func clixmlObject(n *xnode, refs map[string]*xnode, depth int) (any, error) {
	if l := n.child("LST", ""); l != nil || n.child("IE", "") != nil {
		if l == nil {
			l = n.child("IE", "")
		}
		out := make([]any, 0, len(l.kids))
		for _, k := range l.kids {
			v, err := clixmlValue(k, refs, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	if d := n.child("DCT", ""); d != nil {
		out := make(map[string]any, len(d.kids))
		for _, en := range d.kids {
			k, v := en.child("", "Key"), en.child("", "Value")
			if en.name != "En" || k == nil || v == nil {
				return nil, errors.New("clixml: a <DCT> entry needs a Key and a Value")
			}
			key, err := clixmlValue(k, refs, depth+1)
			if err != nil {
				return nil, err
			}
			val, err := clixmlValue(v, refs, depth+1)
			if err != nil {
				return nil, err
			}
			out[psString(key)] = val
		}
		return out, nil
	}
	if isPresent := n.prop("IsPresent"); isPresent != nil && typeNamed(n, "System.Management.Automation.SwitchParameter") {
		return clixmlValue(isPresent, refs, depth+1)
	}
	// An enum, or an object known by its string form.
	if ts := n.child("ToString", ""); ts != nil {
		return decodeCLIXMLString(ts.text), nil
	}
	for _, k := range n.kids {
		switch k.name {
		case "TN", "TNRef", "MS", "Props":
			continue
		}
		return clixmlValue(k, refs, depth+1)
	}
	return nil, errors.New("clixml: <Obj> without a value")
}

// typeNamed reports whether an Obj's first type name is t. TNRef is
// resolved only within the object itself, which is enough for the
// parameters clients send.
func typeNamed(n *xnode, t string) bool {
	tn := n.child("TN", "")
	return tn != nil && len(tn.kids) > 0 && tn.kids[0].text == t
}

// clixmlWriter writes CLIXML as PowerShell's serializer does: RefIds count
// from 0 per message, a type name list repeated in the same message is a
// TNRef (pypsrp recordings, e.g. test_psrp_error_failed.yml).
type clixmlWriter struct {
	b      []byte
	nextID int
	nextTN int
	tns    map[string]int
}

func (w *clixmlWriter) reset() {
	w.b, w.nextID, w.nextTN = w.b[:0], 0, 0
	clear(w.tns)
}

func (w *clixmlWriter) raw(s string) { w.b = append(w.b, s...) }

// name writes ` N="…"` when n is not empty.
func (w *clixmlWriter) name(n string) {
	if n == "" {
		return
	}
	w.raw(` N="`)
	w.b = appendCLIXMLText(w.b, n, true)
	w.raw(`"`)
}

// openObj writes <Obj N RefId><TN…> with the type names (TNRef when the
// same list was written before in this message).
func (w *clixmlWriter) openObj(n string, types []string) {
	w.raw(`<Obj`)
	w.name(n)
	w.raw(` RefId="`)
	w.b = strconv.AppendInt(w.b, int64(w.nextID), 10)
	w.raw(`">`)
	w.nextID++
	if len(types) == 0 {
		return
	}
	key := strings.Join(types, "\x00")
	if id, ok := w.tns[key]; ok {
		w.raw(`<TNRef RefId="`)
		w.b = strconv.AppendInt(w.b, int64(id), 10)
		w.raw(`" />`)
		return
	}
	if w.tns == nil {
		w.tns = map[string]int{}
	}
	w.tns[key] = w.nextTN
	w.raw(`<TN RefId="`)
	w.b = strconv.AppendInt(w.b, int64(w.nextTN), 10)
	w.raw(`">`)
	w.nextTN++
	for _, t := range types {
		w.raw(`<T>`)
		w.b = appendCLIXMLText(w.b, t, false)
		w.raw(`</T>`)
	}
	w.raw(`</TN>`)
}

func (w *clixmlWriter) str(n, v string) {
	w.raw(`<S`)
	w.name(n)
	w.raw(`>`)
	w.b = appendCLIXMLText(w.b, v, false)
	w.raw(`</S>`)
}

func (w *clixmlWriter) nilv(n string) {
	w.raw(`<Nil`)
	w.name(n)
	w.raw(` />`)
}

func (w *clixmlWriter) boolean(n string, v bool) {
	w.raw(`<B`)
	w.name(n)
	w.raw(`>`)
	w.b = strconv.AppendBool(w.b, v)
	w.raw(`</B>`)
}

func (w *clixmlWriter) i32(n string, v int64) {
	w.raw(`<I32`)
	w.name(n)
	w.raw(`>`)
	w.b = strconv.AppendInt(w.b, v, 10)
	w.raw(`</I32>`)
}

func (w *clixmlWriter) i64(n string, v int64) {
	w.raw(`<I64`)
	w.name(n)
	w.raw(`>`)
	w.b = strconv.AppendInt(w.b, v, 10)
	w.raw(`</I64>`)
}

func (w *clixmlWriter) guid(n, v string) {
	w.raw(`<G`)
	w.name(n)
	w.raw(`>`)
	w.b = appendCLIXMLText(w.b, v, false)
	w.raw(`</G>`)
}

// dateTime writes a UTC DateTime as .NET's round-trip form (MS-PSRP
// 2.2.5.1.4), e.g. 2026-12-06T21:08:52.1234567Z.
func (w *clixmlWriter) dateTime(n string, t time.Time) {
	w.raw(`<DT`)
	w.name(n)
	w.raw(`>`)
	w.b = t.UTC().AppendFormat(w.b, wireTime)
	w.raw(`</DT>`)
}

func (w *clixmlWriter) version(n, v string) {
	w.raw(`<Version`)
	w.name(n)
	w.raw(`>`)
	w.b = appendCLIXMLText(w.b, v, false)
	w.raw(`</Version>`)
}

// enum writes an enum value: its type names, ToString and the number
// (MS-PSRP 2.2.5; the PSThreadOptions object of every INIT_RUNSPACEPOOL).
func (w *clixmlWriter) enum(n, typ, name string, value int64) {
	w.openObj(n, []string{typ, "System.Enum", "System.ValueType", "System.Object"})
	w.raw(`<ToString>`)
	w.b = appendCLIXMLText(w.b, name, false)
	w.raw(`</ToString>`)
	w.i32("", value)
	w.raw(`</Obj>`)
}

// stringList writes a list object of the given type names.
func (w *clixmlWriter) stringList(n string, types []string, vs []string) {
	w.openObj(n, types)
	if len(vs) == 0 {
		w.raw(`<LST />`)
	} else {
		w.raw(`<LST>`)
		for _, v := range vs {
			w.str("", v)
		}
		w.raw(`</LST>`)
	}
	w.raw(`</Obj>`)
}

// appendCLIXMLText appends s as XML text escaped as PowerShell's serializer
// escapes strings (MS-PSRP 2.2.5.1, String): the XML specials as entities;
// control characters, U+FFFE, U+FFFF and each half of a character outside
// the BMP as _xHHHH_; and the "_" of a literal "_xHHHH_" as _x005F_ so it
// survives the round trip (pypsrp test_psrp_multiple_commands.yml:
// "actual_x005F_x000A_string_x000A_newline: _xD801__xDC37_"). Invalid UTF-8
// becomes U+FFFD, as .NET's decoder makes it. Quotes are escaped only in
// attribute values (the recording's <S>hi"</S>).
func appendCLIXMLText(b []byte, s string, attr bool) []byte {
	esc := func(b []byte, u uint16) []byte {
		b = append(b, '_', 'x')
		b = append(b, hexUpper[u>>12], hexUpper[u>>8&0xf], hexUpper[u>>4&0xf], hexUpper[u&0xf])
		return append(b, '_')
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '&':
				b = append(b, "&amp;"...)
			case c == '<':
				b = append(b, "&lt;"...)
			case c == '>':
				b = append(b, "&gt;"...)
			case c == '"' && attr:
				b = append(b, "&quot;"...)
			case c < 0x20:
				b = esc(b, uint16(c))
			case c == '_' && formsEscape(s, i):
				b = esc(b, '_')
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, "\uFFFD"...)
		case r == 0xFFFE || r == 0xFFFF:
			b = esc(b, uint16(r))
		case r > 0xFFFF:
			hi, lo := utf16.EncodeRune(r)
			b = esc(esc(b, uint16(hi)), uint16(lo))
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return b
}

const hexUpper = "0123456789ABCDEF"

// formsEscape reports whether the "_" at s[i] would start an escape once
// encoded: s[i:] is _xHHHH or _xHHHHHHHH (x of either case) followed by
// "_" or by a character that is itself escaped (which starts with "_").
func formsEscape(s string, i int) bool {
	if i+6 > len(s) || (s[i+1] != 'x' && s[i+1] != 'X') {
		return false
	}
	isHex := func(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }
	for j := i + 2; j < len(s) && j < i+10; j++ {
		if !isHex(s[j]) {
			return false
		}
		if n := j - i - 1; (n == 4 || n == 8) && escapedAt(s, j+1) {
			return true
		}
	}
	return false
}

// escapedAt reports whether appendCLIXMLText writes s[j:]'s first
// character as, or starting with, "_".
func escapedAt(s string, j int) bool {
	if j >= len(s) {
		return false
	}
	c := s[j]
	if c < utf8.RuneSelf {
		return c < 0x20 || c == '_'
	}
	r, size := utf8.DecodeRuneInString(s[j:])
	return !(r == utf8.RuneError && size == 1) && (r > 0xFFFF || r == 0xFFFE || r == 0xFFFF)
}

// escapeLen is the length of the escape at s[i:] (7 or 11), or 0.
func escapeLen(s string, i int) int {
	if i+7 > len(s) || s[i] != '_' || (s[i+1] != 'x' && s[i+1] != 'X') {
		return 0
	}
	hex := func(from, to int) bool {
		for _, c := range []byte(s[from:to]) {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
		return true
	}
	if s[i+6] == '_' && hex(i+2, i+6) {
		return 7
	}
	if i+11 <= len(s) && s[i+10] == '_' && hex(i+2, i+10) {
		return 11
	}
	return 0
}

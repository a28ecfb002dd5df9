package psrp

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Projection renders output objects (PIPELINE_OUTPUT data: Deserialized.*
// property bags) as flat JSON objects holding only the selected
// properties, streaming: it scans the XML once (scanner), writes each
// selected value as it is read and skips the rest; no tree is built.
//
// Values map as runspace's WinRS bootstrap maps them, so the exchange
// package decodes both kinds alike: strings, Booleans and numbers as
// themselves, DateTime as RFC 3339 in UTC, an enum (or any object with a
// ToString) as its ToString text, a list (<LST>, <IE>, …, Exchange's
// MultiValuedProperty) as an array of each item's string form, <Nil/> and
// missing properties as null. A <Ref> renders the object it refers to.
//
// A Projection is not safe for concurrent use; a session keeps one.
type Projection struct {
	names []string
	index map[string]int
	seg   [][2]int // per selected name: [start,end) in buf, or start -1
	buf   []byte
	refs  []refSpan
	// expansions counts <Ref>s rendered in the current message: each one
	// re-reads the referenced object, so a hostile message could nest
	// them into exponential work without this bound.
	expansions int
	tmp, tmp2  []byte
}

// refSpan is where an <Obj RefId=…> lies in the message.
type refSpan struct {
	id         []byte
	start, end int
}

// maxExpansions bounds the <Ref>s one message may render. Exchange output
// objects repeat a handful of identities.
const maxExpansions = 256

// NewProjection selects props (Exchange property names, in output order).
func NewProjection(props []string) *Projection {
	p := &Projection{names: props, index: make(map[string]int, len(props)), seg: make([][2]int, len(props))}
	for i, n := range props {
		p.index[n] = i
	}
	return p
}

// AppendJSON appends the JSON object for one output object's CLIXML.
func (p *Projection) AppendJSON(dst, data []byte) ([]byte, error) {
	for i := range p.seg {
		p.seg[i] = [2]int{-1, -1}
	}
	p.buf = p.buf[:0]
	p.refs = p.refs[:0]
	p.expansions = 0
	s := scanner{b: data}
	t, err := s.next()
	if err != nil {
		return dst, err
	}
	if t.kind != tagStart || string(t.name) != "Obj" {
		return dst, fmt.Errorf("%w: output is not an object", ErrCLIXML)
	}
	if err := p.topObject(&s, t); err != nil {
		return dst, err
	}
	p.noteObj(t, s.i)
	for ; s.i < len(s.b); s.i++ {
		if !isSpace(s.b[s.i]) {
			return dst, fmt.Errorf("%w: data after the object", ErrCLIXML)
		}
	}
	dst = append(dst, '{')
	for i, n := range p.names {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, n)
		dst = append(dst, ':')
		if sg := p.seg[i]; sg[0] >= 0 {
			dst = append(dst, p.buf[sg[0]:sg[1]]...)
		} else {
			dst = append(dst, "null"...)
		}
	}
	return append(dst, '}'), nil
}

// noteObj records a complete <Obj> that carries a RefId.
func (p *Projection) noteObj(t tag, end int) {
	if id, ok := attrValue(t.attrs, "RefId"); ok {
		p.refs = append(p.refs, refSpan{id: id, start: t.start, end: end})
	}
}

func (p *Projection) topObject(s *scanner, t tag) error {
	if t.self {
		return nil
	}
	for {
		c, err := s.next()
		if err != nil {
			return err
		}
		if c.kind == tagEnd {
			if string(c.name) != "Obj" {
				return fmt.Errorf("%w: </%s> closes <Obj>", ErrCLIXML, c.name)
			}
			return nil
		}
		switch string(c.name) {
		case "Props", "MS":
			err = p.properties(s, c, 1)
		case "ToString":
			_, err = s.leaf(c)
		default:
			err = s.skip(c, 1, p.noteObj)
		}
		if err != nil {
			return err
		}
	}
}

func (p *Projection) properties(s *scanner, t tag, depth int) error {
	if t.self {
		return nil
	}
	for {
		c, err := s.next()
		if err != nil {
			return err
		}
		if c.kind == tagEnd {
			if !bytes.Equal(c.name, t.name) {
				return fmt.Errorf("%w: </%s> closes <%s>", ErrCLIXML, c.name, t.name)
			}
			return nil
		}
		name, _ := attrValue(c.attrs, "N")
		if bytes.IndexByte(name, '&') >= 0 || bytes.IndexByte(name, '_') >= 0 {
			if p.tmp, err = appendEntities(p.tmp[:0], name); err != nil {
				return err
			}
			p.tmp2 = appendUnescaped(p.tmp2[:0], p.tmp)
			name = p.tmp2
		}
		i, want := p.index[string(name)]
		if !want || p.seg[i][0] >= 0 {
			if err := s.skip(c, depth+1, p.noteObj); err != nil {
				return err
			}
		} else {
			at := len(p.buf)
			if p.buf, err = p.render(p.buf, s, c, false, depth+1); err != nil {
				return fmt.Errorf("property %s: %w", p.names[i], err)
			}
			p.seg[i] = [2]int{at, len(p.buf)}
		}
		if string(c.name) == "Obj" {
			p.noteObj(c, s.i)
		}
	}
}

// render writes the JSON of the value whose start tag t was just read.
// asString forces a JSON string (list items, as PowerShell's [string] of
// each item).
func (p *Projection) render(dst []byte, s *scanner, t tag, asString bool, depth int) ([]byte, error) {
	if depth > maxDepth {
		return dst, fmt.Errorf("%w: nested deeper than %d", ErrCLIXML, maxDepth)
	}
	switch string(t.name) {
	case "Obj":
		return p.renderObject(dst, s, t, asString, depth)
	case "Ref":
		if txt, err := s.leaf(t); err != nil || len(bytes.TrimSpace(txt)) > 0 {
			return dst, fmt.Errorf("%w: <Ref> with content", ErrCLIXML)
		}
		id, _ := attrValue(t.attrs, "RefId")
		var span *refSpan
		for i := range p.refs {
			if bytes.Equal(p.refs[i].id, id) {
				span = &p.refs[i]
				break
			}
		}
		if span == nil {
			return dst, fmt.Errorf("%w: <Ref RefId=%q> to no complete earlier object", ErrCLIXML, id)
		}
		if p.expansions++; p.expansions > maxExpansions {
			return dst, fmt.Errorf("%w: more than %d <Ref>s in one object", ErrCLIXML, maxExpansions)
		}
		sub := scanner{b: s.b[:span.end], i: span.start}
		st, err := sub.tag()
		if err != nil {
			return dst, err
		}
		return p.renderObject(dst, &sub, st, asString, depth)
	case "Nil":
		if _, err := s.leaf(t); err != nil {
			return dst, err
		}
		if asString {
			return append(dst, `""`...), nil
		}
		return append(dst, "null"...), nil
	}
	k, ok := primitiveKinds[string(t.name)]
	if !ok {
		return dst, fmt.Errorf("%w: unknown element <%s>", ErrCLIXML, t.name)
	}
	txt, err := s.leaf(t)
	if err != nil {
		return dst, err
	}
	return p.appendPrimitive(dst, t.name, k, txt, asString)
}

func isInteger(b []byte) bool {
	if len(b) > 0 && (b[0] == '-' || b[0] == '+') {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 20 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// appendText writes raw CLIXML text (entities, then _xHHHH_ escapes
// resolved) as a JSON string.
func (p *Projection) appendText(dst, raw []byte) ([]byte, error) {
	if bytes.IndexByte(raw, '\r') >= 0 {
		// XML 1.0 §2.11: a parser reads CR LF and a lone CR as LF (Windows
		// escapes a real CR as _x000D_, which survives).
		raw = bytes.ReplaceAll(bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n")), []byte("\r"), []byte("\n"))
	}
	if bytes.IndexByte(raw, '&') < 0 && bytes.IndexByte(raw, '_') < 0 {
		return appendJSONString(dst, raw), nil
	}
	var err error
	if p.tmp, err = appendEntities(p.tmp[:0], raw); err != nil {
		return dst, err
	}
	p.tmp2 = appendUnescaped(p.tmp2[:0], p.tmp)
	return appendJSONString(dst, p.tmp2), nil
}

func (p *Projection) appendPrimitive(dst, name []byte, k Kind, raw []byte, asString bool) ([]byte, error) {
	switch k {
	case KindString:
		return p.appendText(dst, raw)
	case KindBool:
		switch {
		case string(raw) == "true" && asString: // PowerShell's [string] of a Boolean
			return append(dst, `"True"`...), nil
		case string(raw) == "false" && asString:
			return append(dst, `"False"`...), nil
		case string(raw) == "true", string(raw) == "false":
			return append(dst, raw...), nil
		}
		return dst, fmt.Errorf("%w: <B>%.20q</B>", ErrCLIXML, raw)
	case KindInt:
		raw = bytes.TrimSpace(raw)
		if !isInteger(raw) {
			return dst, fmt.Errorf("%w: <%s>%.20q</%s>", ErrCLIXML, name, raw, name)
		}
		if raw[0] == '+' {
			raw = raw[1:]
		}
		if asString {
			return appendJSONString(dst, raw), nil
		}
		return append(dst, raw...), nil
	case KindFloat:
		text := string(bytes.TrimSpace(raw))
		f, err := strconv.ParseFloat(text, 64)
		if err != nil && text != "NaN" && text != "Infinity" && text != "-Infinity" {
			return dst, fmt.Errorf("%w: <%s>%.20q</%s>", ErrCLIXML, name, text, name)
		}
		if asString || math.IsNaN(f) || math.IsInf(f, 0) || err != nil {
			return appendJSONString(dst, text), nil
		}
		return strconv.AppendFloat(dst, f, 'g', -1, 64), nil
	case KindDateTime:
		tm, err := parseDT(string(bytes.TrimSpace(raw)))
		if err != nil {
			return dst, err
		}
		dst = append(dst, '"')
		dst = tm.UTC().AppendFormat(dst, time.RFC3339Nano)
		return append(dst, '"'), nil
	}
	return p.appendText(dst, raw)
}

// renderObject renders an <Obj>: a list as an array of strings; otherwise
// its ToString, or its primitive, or null.
func (p *Projection) renderObject(dst []byte, s *scanner, t tag, asString bool, depth int) ([]byte, error) {
	var toString, primRaw, primName []byte
	var primKind Kind
	haveToString, havePrim, wrote := false, false, false
	if !t.self {
		for {
			c, err := s.next()
			if err != nil {
				return dst, err
			}
			if c.kind == tagEnd {
				if string(c.name) != "Obj" {
					return dst, fmt.Errorf("%w: </%s> closes <Obj>", ErrCLIXML, c.name)
				}
				break
			}
			name := string(c.name)
			switch {
			case name == "ToString":
				if toString, err = s.leaf(c); err != nil {
					return dst, err
				}
				haveToString = true
			case !wrote && !asString && (name == "LST" || name == "IE" || name == "STK" || name == "QUE"):
				dst = append(dst, '[')
				for n := 0; !c.self; n++ {
					it, err := s.next()
					if err != nil {
						return dst, err
					}
					if it.kind == tagEnd {
						if !bytes.Equal(it.name, c.name) {
							return dst, fmt.Errorf("%w: </%s> closes <%s>", ErrCLIXML, it.name, c.name)
						}
						break
					}
					if n > 0 {
						dst = append(dst, ',')
					}
					if dst, err = p.render(dst, s, it, true, depth+1); err != nil {
						return dst, err
					}
					if string(it.name) == "Obj" {
						p.noteObj(it, s.i)
					}
				}
				dst = append(dst, ']')
				wrote = true
			default:
				k, isPrim := primitiveKinds[name]
				if !isPrim || name == "Ref" {
					if err := s.skip(c, depth+1, p.noteObj); err != nil {
						return dst, err
					}
					if name == "Obj" {
						p.noteObj(c, s.i)
					}
					continue
				}
				if primRaw, err = s.leaf(c); err != nil {
					return dst, err
				}
				primName, primKind, havePrim = c.name, k, true
			}
		}
	}
	switch {
	case wrote:
		return dst, nil
	case haveToString:
		return p.appendText(dst, toString)
	case havePrim:
		return p.appendPrimitive(dst, primName, primKind, primRaw, asString)
	case asString:
		return append(dst, `""`...), nil
	}
	return append(dst, "null"...), nil
}

// appendJSONString writes s as a JSON string. Invalid UTF-8 (a lone
// surrogate kept as WTF-8) becomes U+FFFD, as JSON requires.
func appendJSONString[T ~string | ~[]byte](dst []byte, s T) []byte {
	const hexd = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				dst = append(dst, '\\', 'u', '0', '0', hexd[c>>4], hexd[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(string(s[i:min(len(s), i+utf8.UTFMax)]))
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			dst = append(dst, '\\', 'u', '2', '0', '2', hexd[r&0xf])
		} else {
			dst = append(dst, s[i:i+n]...)
		}
		i += n
	}
	return append(dst, '"')
}

package psrp

import (
	"encoding/xml"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Projection renders output objects (PIPELINE_OUTPUT data: Deserialized.*
// property bags) as flat JSON objects holding only the selected
// properties, streaming: it walks the XML tokens once, writes each
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
	seg   [][2]int // per selected name: [start,end) in scratch, or start -1
	buf   []byte
	refs  map[string][2]int64 // RefId -> [start,end) of the <Obj> in the message
	// expansions counts <Ref>s rendered in the current message: each one
	// re-reads the referenced object, so a hostile message could nest
	// them into exponential work without this bound.
	expansions int
}

// maxExpansions bounds the <Ref>s one message may render. Exchange output
// objects repeat a handful of identities.
const maxExpansions = 256

// NewProjection selects props (Exchange property names, in output order).
func NewProjection(props []string) *Projection {
	p := &Projection{names: props, index: make(map[string]int, len(props)), seg: make([][2]int, len(props)), refs: map[string][2]int64{}}
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
	p.expansions = 0
	clear(p.refs)
	t := newTokenizer(data)
	tok, err := t.next(nil)
	if err != nil {
		return dst, err
	}
	se, ok := tok.(xml.StartElement)
	if !ok || se.Name.Local != "Obj" {
		return dst, fmt.Errorf("%w: output is not an object", ErrCLIXML)
	}
	p.noteRef(se, 0)
	if err := p.topObject(t, 0); err != nil {
		return dst, err
	}
	dst = append(dst, '{')
	for i, n := range p.names {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, n)
		dst = append(dst, ':')
		if s := p.seg[i]; s[0] >= 0 {
			dst = append(dst, p.buf[s[0]:s[1]]...)
		} else {
			dst = append(dst, "null"...)
		}
	}
	return append(dst, '}'), nil
}

func (p *Projection) noteRef(se xml.StartElement, start int64) {
	if id, ok := attr(se, "RefId"); ok {
		p.refs[id] = [2]int64{start, -1}
	}
}

func (p *Projection) endRef(se xml.StartElement, end int64) {
	if id, ok := attr(se, "RefId"); ok {
		r := p.refs[id]
		r[1] = end
		p.refs[id] = r
	}
}

// topObject reads the top <Obj>'s children, projecting the properties.
func (p *Projection) topObject(t *tokenizer, depth int) error {
	for {
		tok, err := t.next(nil)
		if err != nil {
			return err
		}
		if _, ok := tok.(xml.EndElement); ok {
			return nil
		}
		se := tok.(xml.StartElement)
		switch se.Name.Local {
		case "Props", "MS":
			if err := p.properties(t, depth+1); err != nil {
				return err
			}
		default:
			if err := p.skip(t, depth+1); err != nil {
				return err
			}
		}
	}
}

func (p *Projection) properties(t *tokenizer, depth int) error {
	for {
		start := t.d.InputOffset()
		tok, err := t.next(nil)
		if err != nil {
			return err
		}
		if _, ok := tok.(xml.EndElement); ok {
			return nil
		}
		se := tok.(xml.StartElement)
		name, _ := attr(se, "N")
		i, want := p.index[Unescape(name)]
		if se.Name.Local == "Obj" {
			p.noteRef(se, start)
		}
		if !want || p.seg[i][0] >= 0 {
			if err := p.skip(t, depth+1); err != nil {
				return err
			}
			if se.Name.Local == "Obj" {
				p.endRef(se, t.d.InputOffset())
			}
			continue
		}
		s := len(p.buf)
		if p.buf, err = p.render(p.buf, t, se, false, depth+1); err != nil {
			return fmt.Errorf("property %s: %w", name, err)
		}
		if se.Name.Local == "Obj" {
			p.endRef(se, t.d.InputOffset())
		}
		p.seg[i] = [2]int{s, len(p.buf)}
	}
}

// skip consumes the rest of the element just started, noting the extent
// of every <Obj> with a RefId inside it.
func (p *Projection) skip(t *tokenizer, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%w: nested deeper than %d", ErrCLIXML, maxDepth)
	}
	for {
		start := t.d.InputOffset()
		tok, err := t.d.Token()
		if err != nil {
			return fmt.Errorf("%w: %w", ErrCLIXML, err)
		}
		switch tk := tok.(type) {
		case xml.EndElement:
			return nil
		case xml.StartElement:
			if tk.Name.Local == "Obj" {
				p.noteRef(tk, start)
			}
			if err := p.skip(t, depth+1); err != nil {
				return err
			}
			if tk.Name.Local == "Obj" {
				p.endRef(tk, t.d.InputOffset())
			}
		}
	}
}

// render writes the JSON of the value whose start element se was just
// read. asString forces a JSON string (list items, as PowerShell's
// [string] of each item).
func (p *Projection) render(dst []byte, t *tokenizer, se xml.StartElement, asString bool, depth int) ([]byte, error) {
	if depth > maxDepth {
		return dst, fmt.Errorf("%w: nested deeper than %d", ErrCLIXML, maxDepth)
	}
	tag := se.Name.Local
	switch tag {
	case "Obj":
		return p.renderObject(dst, t, asString, depth)
	case "Ref":
		if _, err := t.leafText(tag); err != nil {
			return dst, err
		}
		id, _ := attr(se, "RefId")
		r, ok := p.refs[id]
		if !ok || r[1] < 0 {
			return dst, fmt.Errorf("%w: <Ref RefId=%q> to no complete earlier object", ErrCLIXML, id)
		}
		if p.expansions++; p.expansions > maxExpansions {
			return dst, fmt.Errorf("%w: more than %d <Ref>s in one object", ErrCLIXML, maxExpansions)
		}
		sub := newTokenizer(t.src[r[0]:r[1]])
		tok, err := sub.next(nil)
		if err != nil {
			return dst, err
		}
		st, ok := tok.(xml.StartElement)
		if !ok || st.Name.Local != "Obj" {
			return dst, fmt.Errorf("%w: <Ref RefId=%q> is not an object", ErrCLIXML, id)
		}
		return p.renderObject(dst, sub, asString, depth)
	}
	k, ok := primitiveKinds[tag]
	if tag == "Nil" {
		k, ok = KindNil, true
	}
	if !ok {
		return dst, fmt.Errorf("%w: unknown element <%s>", ErrCLIXML, tag)
	}
	text, err := t.leafText(tag)
	if err != nil {
		return dst, err
	}
	return appendPrimitive(dst, tag, k, text, asString)
}

func appendPrimitive(dst []byte, tag string, k Kind, text string, asString bool) ([]byte, error) {
	switch k {
	case KindNil:
		if asString {
			return append(dst, `""`...), nil
		}
		return append(dst, "null"...), nil
	case KindString:
		return appendJSONString(dst, Unescape(text)), nil
	case KindBool:
		if text != "true" && text != "false" {
			return dst, fmt.Errorf("%w: <B>%s</B>", ErrCLIXML, truncate(text))
		}
		if asString { // PowerShell's [string] of a Boolean
			if text == "true" {
				return append(dst, `"True"`...), nil
			}
			return append(dst, `"False"`...), nil
		}
		return append(dst, text...), nil
	case KindInt:
		if _, err := strconv.ParseInt(text, 10, 64); err != nil {
			if _, err := strconv.ParseUint(text, 10, 64); err != nil {
				return dst, fmt.Errorf("%w: <%s>%s</%s>", ErrCLIXML, tag, truncate(text), tag)
			}
		}
		if asString {
			return appendJSONString(dst, text), nil
		}
		return append(dst, text...), nil
	case KindFloat:
		f, err := strconv.ParseFloat(text, 64)
		if err != nil && text != "NaN" && text != "Infinity" && text != "-Infinity" {
			return dst, fmt.Errorf("%w: <%s>%s</%s>", ErrCLIXML, tag, truncate(text), tag)
		}
		if asString || math.IsNaN(f) || math.IsInf(f, 0) || err != nil {
			return appendJSONString(dst, text), nil
		}
		return strconv.AppendFloat(dst, f, 'g', -1, 64), nil
	case KindDateTime:
		tm, err := parseDT(text)
		if err != nil {
			return dst, err
		}
		return appendJSONString(dst, tm.UTC().Format(time.RFC3339Nano)), nil
	}
	return appendJSONString(dst, text), nil
}

// renderObject renders an <Obj>: a list as an array of strings; otherwise
// its ToString, or its primitive, or null.
func (p *Projection) renderObject(dst []byte, t *tokenizer, asString bool, depth int) ([]byte, error) {
	var toString string
	haveToString, wrote := false, false
	var prim []byte
	for {
		start := t.d.InputOffset()
		tok, err := t.next(nil)
		if err != nil {
			return dst, err
		}
		if _, ok := tok.(xml.EndElement); ok {
			break
		}
		se := tok.(xml.StartElement)
		switch tag := se.Name.Local; {
		case tag == "ToString":
			if toString, err = t.leafText(tag); err != nil {
				return dst, err
			}
			haveToString = true
		case !wrote && !asString && (tag == "LST" || tag == "IE" || tag == "STK" || tag == "QUE"):
			dst = append(dst, '[')
			for n := 0; ; n++ {
				istart := t.d.InputOffset()
				tok, err := t.next(nil)
				if err != nil {
					return dst, err
				}
				if _, ok := tok.(xml.EndElement); ok {
					break
				}
				if n > 0 {
					dst = append(dst, ',')
				}
				ise := tok.(xml.StartElement)
				if ise.Name.Local == "Obj" {
					p.noteRef(ise, istart)
				}
				if dst, err = p.render(dst, t, ise, true, depth+1); err != nil {
					return dst, err
				}
				if ise.Name.Local == "Obj" {
					p.endRef(ise, t.d.InputOffset())
				}
			}
			dst = append(dst, ']')
			wrote = true
		case tag == "Props" || tag == "MS" || tag == "TN" || tag == "TNRef" || tag == "DCT" || tag == "LST" || tag == "IE" || tag == "STK" || tag == "QUE":
			if err := p.skip(t, depth+1); err != nil {
				return dst, err
			}
		default:
			_ = start
			if prim, err = p.render(prim[:0], t, se, asString, depth+1); err != nil {
				return dst, err
			}
		}
	}
	switch {
	case wrote:
		return dst, nil
	case haveToString:
		return appendJSONString(dst, Unescape(toString)), nil
	case prim != nil:
		return append(dst, prim...), nil
	case asString:
		return append(dst, `""`...), nil
	}
	return append(dst, "null"...), nil
}

// appendJSONString writes s as a JSON string. Invalid UTF-8 (a lone
// surrogate kept as WTF-8) becomes U+FFFD, as JSON requires.
func appendJSONString(dst []byte, s string) []byte {
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
		r, n := utf8.DecodeRuneInString(s[i:])
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

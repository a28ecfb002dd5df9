package psrp

import (
	"bytes"
	"fmt"
	"unicode/utf8"
)

// scanner is a minimal XML tokenizer for the CLIXML of output objects,
// which Projection reads by the hundred thousand: elements, attributes in
// quotes, character data with the five predefined entities and character
// references. It refuses what PSRP data never contains (comments, CDATA,
// DOCTYPE) and checks that every end tag closes the element it should.
// encoding/xml did the same work at about a tenth of the speed (it
// allocates per token); DecodeValue, for the rare control messages, still
// uses it.
type scanner struct {
	b []byte
	i int
}

type tagKind uint8

const (
	tagStart tagKind = iota + 1
	tagEnd
)

// tag is one start or end tag. name is the local name; attrs the raw
// attribute text of a start tag; self marks <x/>.
type tag struct {
	kind  tagKind
	name  []byte
	attrs []byte
	self  bool
	start int // offset of '<'
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// next returns the next tag; text before it must be whitespace.
func (s *scanner) next() (tag, error) {
	for s.i < len(s.b) && s.b[s.i] != '<' {
		if !isSpace(s.b[s.i]) {
			return tag{}, fmt.Errorf("%w: unexpected text at byte %d", ErrCLIXML, s.i)
		}
		s.i++
	}
	return s.tag()
}

// tag reads the tag at s.i, which must be '<'.
func (s *scanner) tag() (tag, error) {
	if s.i >= len(s.b) {
		return tag{}, fmt.Errorf("%w: unexpected end of data", ErrCLIXML)
	}
	t := tag{start: s.i}
	s.i++
	if s.i < len(s.b) && s.b[s.i] == '?' { // an XML declaration
		end := bytes.Index(s.b[s.i:], []byte("?>"))
		if end < 0 {
			return tag{}, fmt.Errorf("%w: unterminated processing instruction", ErrCLIXML)
		}
		s.i += end + 2
		return s.next()
	}
	t.kind = tagStart
	if s.i < len(s.b) && s.b[s.i] == '/' {
		t.kind = tagEnd
		s.i++
	}
	n := s.i
	for s.i < len(s.b) && !isSpace(s.b[s.i]) && s.b[s.i] != '>' && s.b[s.i] != '/' {
		c := s.b[s.i]
		if c == '<' || c == '!' || c == '"' || c == '\'' || c == '=' || c == '&' {
			return tag{}, fmt.Errorf("%w: bad tag at byte %d", ErrCLIXML, t.start)
		}
		s.i++
	}
	t.name = s.b[n:s.i]
	if len(t.name) == 0 {
		return tag{}, fmt.Errorf("%w: bad tag at byte %d", ErrCLIXML, t.start)
	}
	if c := bytes.IndexByte(t.name, ':'); c >= 0 {
		t.name = t.name[c+1:]
	}
	a := s.i
	var quote byte
	for ; s.i < len(s.b); s.i++ {
		c := s.b[s.i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '<' {
				return tag{}, fmt.Errorf("%w: '<' in an attribute at byte %d", ErrCLIXML, s.i)
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '>':
			t.attrs = s.b[a:s.i]
			s.i++
			if len(t.attrs) > 0 && t.attrs[len(t.attrs)-1] == '/' {
				t.self = true
				t.attrs = t.attrs[:len(t.attrs)-1]
			}
			if t.kind == tagEnd && (t.self || len(bytes.TrimSpace(t.attrs)) > 0) {
				return tag{}, fmt.Errorf("%w: bad end tag at byte %d", ErrCLIXML, t.start)
			}
			return t, nil
		case c == '<':
			return tag{}, fmt.Errorf("%w: unterminated tag at byte %d", ErrCLIXML, t.start)
		}
	}
	return tag{}, fmt.Errorf("%w: unexpected end of data in a tag", ErrCLIXML)
}

// text returns the raw character data up to the next '<'.
func (s *scanner) text() []byte {
	n := s.i
	for s.i < len(s.b) && s.b[s.i] != '<' {
		s.i++
	}
	return s.b[n:s.i]
}

// leaf reads the content of a start tag that holds only text, through its
// end tag, and returns the raw text.
func (s *scanner) leaf(t tag) ([]byte, error) {
	if t.self {
		return nil, nil
	}
	txt := s.text()
	e, err := s.tag()
	if err != nil {
		return nil, err
	}
	if e.kind != tagEnd || !bytes.Equal(e.name, t.name) {
		return nil, fmt.Errorf("%w: <%s> holds an element", ErrCLIXML, t.name)
	}
	return txt, nil
}

// skip consumes the content of start tag t through its end tag, calling
// obj for every <Obj> start inside it with its tag and end offset.
func (s *scanner) skip(t tag, depth int, obj func(tag, int)) error {
	if t.self {
		return nil
	}
	if depth > maxDepth {
		return fmt.Errorf("%w: nested deeper than %d", ErrCLIXML, maxDepth)
	}
	for {
		s.text()
		c, err := s.tag()
		if err != nil {
			return err
		}
		if c.kind == tagEnd {
			if !bytes.Equal(c.name, t.name) {
				return fmt.Errorf("%w: </%s> closes <%s>", ErrCLIXML, c.name, t.name)
			}
			return nil
		}
		if err := s.skip(c, depth+1, obj); err != nil {
			return err
		}
		if obj != nil && string(c.name) == "Obj" {
			obj(c, s.i)
		}
	}
}

// attrValue returns the raw value of attribute name in attrs.
func attrValue(attrs []byte, name string) ([]byte, bool) {
	for i := 0; i < len(attrs); {
		for i < len(attrs) && isSpace(attrs[i]) {
			i++
		}
		n := i
		for i < len(attrs) && attrs[i] != '=' && !isSpace(attrs[i]) {
			i++
		}
		key := attrs[n:i]
		for i < len(attrs) && isSpace(attrs[i]) {
			i++
		}
		if i >= len(attrs) || attrs[i] != '=' {
			return nil, false
		}
		i++
		for i < len(attrs) && isSpace(attrs[i]) {
			i++
		}
		if i >= len(attrs) || (attrs[i] != '"' && attrs[i] != '\'') {
			return nil, false
		}
		q := attrs[i]
		i++
		v := i
		for i < len(attrs) && attrs[i] != q {
			i++
		}
		if i >= len(attrs) {
			return nil, false
		}
		if c := bytes.IndexByte(key, ':'); c < 0 && string(key) == name {
			return attrs[v:i], true
		}
		i++
	}
	return nil, false
}

// appendEntities appends raw XML text with its entity and character
// references resolved.
func appendEntities(dst, raw []byte) ([]byte, error) {
	for {
		a := bytes.IndexByte(raw, '&')
		if a < 0 {
			return append(dst, raw...), nil
		}
		dst = append(dst, raw[:a]...)
		raw = raw[a:]
		semi := bytes.IndexByte(raw, ';')
		if semi < 0 || semi > 12 {
			return dst, fmt.Errorf("%w: bad entity reference", ErrCLIXML)
		}
		ent := raw[1:semi]
		raw = raw[semi+1:]
		switch string(ent) {
		case "lt":
			dst = append(dst, '<')
		case "gt":
			dst = append(dst, '>')
		case "amp":
			dst = append(dst, '&')
		case "quot":
			dst = append(dst, '"')
		case "apos":
			dst = append(dst, '\'')
		default:
			if len(ent) < 2 || ent[0] != '#' {
				return dst, fmt.Errorf("%w: unknown entity &%s;", ErrCLIXML, ent)
			}
			var r rune
			digits, base := ent[1:], rune(10)
			if digits[0] == 'x' || digits[0] == 'X' {
				digits, base = digits[1:], 16
			}
			if len(digits) == 0 {
				return dst, fmt.Errorf("%w: bad character reference", ErrCLIXML)
			}
			for _, c := range digits {
				var d rune
				switch {
				case c >= '0' && c <= '9':
					d = rune(c - '0')
				case base == 16 && c >= 'a' && c <= 'f':
					d = rune(c-'a') + 10
				case base == 16 && c >= 'A' && c <= 'F':
					d = rune(c-'A') + 10
				default:
					return dst, fmt.Errorf("%w: bad character reference", ErrCLIXML)
				}
				r = r*base + d
				if r > utf8.MaxRune {
					return dst, fmt.Errorf("%w: character reference out of range", ErrCLIXML)
				}
			}
			dst = utf8.AppendRune(dst, r)
		}
	}
}

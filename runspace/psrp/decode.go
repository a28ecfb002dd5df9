package psrp

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// ErrCLIXML is wrapped by every CLIXML decoding error.
var ErrCLIXML = errors.New("psrp clixml")

// maxDepth bounds element nesting; Exchange objects nest a few levels.
const maxDepth = 64

// Kind is the kind of a decoded Value.
type Kind uint8

// Value kinds. Primitive kinds keep the element's text in Value.Text.
const (
	KindNil Kind = iota
	KindString
	KindBool
	KindInt      // I16 I32 I64 SB By U16 U32 U64
	KindFloat    // Sg Db D
	KindDateTime // DT
	KindOther    // C TS G URI Version BA XD SBK SS and others, as text
	KindObject
)

// Value is one decoded CLIXML value (MS-PSRP 2.2.5). It is a generic tree,
// meant for the small control messages (states, error records, private
// data); output objects go through Projection, which builds none.
type Value struct {
	Kind Kind
	Tag  string // element name: S, I32, Obj, …
	Name string // the N attribute (a property or dictionary slot name)
	Text string // primitive text, with _xHHHH_ escapes decoded for S
	Obj  *Object
}

// Object is the content of an <Obj>.
type Object struct {
	TypeNames []string
	ToString  string
	Props     []Value // adapted properties (<Props>)
	MS        []Value // extended and note properties (<MS>)
	List      []Value // <LST>, <IE>, <STK> or <QUE> items
	Dict      []DictEntry
	Primitive *Value // a primitive directly in the Obj (an enum's <I32>)
}

// DictEntry is one <En> of a <DCT>.
type DictEntry struct{ Key, Value Value }

// Prop returns the property named name, looking in MS then Props.
func (o *Object) Prop(name string) (Value, bool) {
	if o == nil {
		return Value{}, false
	}
	for _, l := range [2][]Value{o.MS, o.Props} {
		for _, v := range l {
			if v.Name == name {
				return v, true
			}
		}
	}
	return Value{}, false
}

// DictValue returns the value of the entry whose key's text is key.
func (o *Object) DictValue(key string) (Value, bool) {
	if o == nil {
		return Value{}, false
	}
	for _, en := range o.Dict {
		if en.Key.Kind != KindObject && en.Key.Text == key {
			return en.Value, true
		}
	}
	return Value{}, false
}

// String renders v as PowerShell's [string] would for the values that
// matter here: primitives as their text, objects as their ToString.
func (v Value) String() string {
	switch v.Kind {
	case KindNil:
		return ""
	case KindObject:
		if v.Obj.ToString != "" || v.Obj.Primitive == nil {
			return v.Obj.ToString
		}
		return v.Obj.Primitive.Text
	}
	return v.Text
}

// Int returns an integer value (also an enum's underlying value).
func (v Value) Int() (int64, error) {
	if v.Kind == KindObject && v.Obj.Primitive != nil {
		return v.Obj.Primitive.Int()
	}
	if v.Kind != KindInt {
		return 0, fmt.Errorf("%w: %s: <%s> is not an integer", ErrCLIXML, v.Name, v.Tag)
	}
	n, err := strconv.ParseInt(v.Text, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrCLIXML, v.Name, err)
	}
	return n, nil
}

// Bool returns a Boolean value.
func (v Value) Bool() (bool, error) {
	if v.Kind != KindBool {
		return false, fmt.Errorf("%w: %s: <%s> is not a Boolean", ErrCLIXML, v.Name, v.Tag)
	}
	return v.Text == "true", nil
}

// Time returns a DateTime value.
func (v Value) Time() (time.Time, error) {
	if v.Kind != KindDateTime {
		return time.Time{}, fmt.Errorf("%w: %s: <%s> is not a DateTime", ErrCLIXML, v.Name, v.Tag)
	}
	return parseDT(v.Text)
}

func parseDT(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		// .NET writes DateTimeKind.Unspecified without an offset.
		if t2, err2 := time.Parse("2006-01-02T15:04:05.9999999", s); err2 == nil {
			return t2, nil
		}
		return time.Time{}, fmt.Errorf("%w: DateTime %q: %w", ErrCLIXML, s, err)
	}
	return t, nil
}

var primitiveKinds = map[string]Kind{
	"S": KindString, "B": KindBool,
	"I16": KindInt, "I32": KindInt, "I64": KindInt, "SB": KindInt, "By": KindInt, "U16": KindInt, "U32": KindInt, "U64": KindInt,
	"Sg": KindFloat, "Db": KindFloat, "D": KindFloat,
	"DT": KindDateTime,
	"C":  KindOther, "TS": KindOther, "G": KindOther, "URI": KindOther, "Version": KindOther, "BA": KindOther,
	"XD": KindOther, "SBK": KindOther, "SS": KindOther, "Ref": KindOther,
}

// tokenizer wraps encoding/xml for CLIXML: strict, no namespaces needed
// (PSRP message data carries none but the Objs root's default one).
type tokenizer struct {
	d   *xml.Decoder
	src []byte
}

func newTokenizer(data []byte) *tokenizer {
	d := xml.NewDecoder(bytes.NewReader(data))
	d.Strict = true
	return &tokenizer{d: d, src: data}
}

func attr(se xml.StartElement, name string) (string, bool) {
	for _, a := range se.Attr {
		if a.Name.Local == name && a.Name.Space == "" {
			return a.Value, true
		}
	}
	return "", false
}

// next returns the next start or end element, collecting character data
// into text (which must be only whitespace where the caller passes nil).
func (t *tokenizer) next(text *[]byte) (xml.Token, error) {
	for {
		tok, err := t.d.Token()
		if err != nil {
			if err == io.EOF {
				return nil, fmt.Errorf("%w: unexpected end of data", ErrCLIXML)
			}
			return nil, fmt.Errorf("%w: %w", ErrCLIXML, err)
		}
		switch tk := tok.(type) {
		case xml.StartElement, xml.EndElement:
			return tk, nil
		case xml.CharData:
			if text != nil {
				*text = append(*text, tk...)
			} else if len(bytes.TrimSpace(tk)) > 0 {
				return nil, fmt.Errorf("%w: unexpected text %q", ErrCLIXML, truncate(string(tk)))
			}
		}
	}
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// leafText reads a primitive element's text up to its end.
func (t *tokenizer) leafText(tag string) (string, error) {
	var b []byte
	tok, err := t.next(&b)
	if err != nil {
		return "", err
	}
	if _, ok := tok.(xml.EndElement); !ok {
		return "", fmt.Errorf("%w: element inside <%s>", ErrCLIXML, tag)
	}
	return string(b), nil
}

// DecodeValue decodes the single CLIXML value in data (the data of one
// message), resolving <Ref> and <TNRef> within it.
func DecodeValue(data []byte) (Value, error) {
	t := newTokenizer(data)
	dc := treeDecoder{t: t, refs: map[string]*Object{}, tns: map[string][]string{}}
	tok, err := t.next(nil)
	if err != nil {
		return Value{}, err
	}
	se, ok := tok.(xml.StartElement)
	if !ok {
		return Value{}, fmt.Errorf("%w: data starts with an end element", ErrCLIXML)
	}
	v, err := dc.value(se, 0)
	if err != nil {
		return Value{}, err
	}
	for {
		tok, err := t.d.Token()
		if err == io.EOF {
			return v, nil
		}
		if err != nil {
			return Value{}, fmt.Errorf("%w: %w", ErrCLIXML, err)
		}
		if cd, ok := tok.(xml.CharData); ok && len(bytes.TrimSpace(cd)) == 0 {
			continue
		}
		if _, ok := tok.(xml.ProcInst); ok {
			continue
		}
		return Value{}, fmt.Errorf("%w: data after the value", ErrCLIXML)
	}
}

type treeDecoder struct {
	t    *tokenizer
	refs map[string]*Object
	tns  map[string][]string
}

func (dc *treeDecoder) value(se xml.StartElement, depth int) (Value, error) {
	if depth > maxDepth {
		return Value{}, fmt.Errorf("%w: nested deeper than %d", ErrCLIXML, maxDepth)
	}
	tag := se.Name.Local
	name, _ := attr(se, "N")
	v := Value{Tag: tag, Name: Unescape(name)}
	switch tag {
	case "Nil":
		v.Kind = KindNil
		_, err := dc.t.leafText(tag)
		return v, err
	case "Ref":
		id, _ := attr(se, "RefId")
		o, ok := dc.refs[id]
		if !ok {
			return Value{}, fmt.Errorf("%w: <Ref RefId=%q> to no earlier object", ErrCLIXML, id)
		}
		v.Kind, v.Tag, v.Obj = KindObject, "Obj", o
		_, err := dc.t.leafText(tag)
		return v, err
	case "Obj":
		v.Kind = KindObject
		o := &Object{}
		v.Obj = o
		if id, ok := attr(se, "RefId"); ok {
			dc.refs[id] = o
		}
		return v, dc.object(o, depth)
	}
	k, ok := primitiveKinds[tag]
	if !ok {
		return Value{}, fmt.Errorf("%w: unknown element <%s>", ErrCLIXML, tag)
	}
	text, err := dc.t.leafText(tag)
	if err != nil {
		return Value{}, err
	}
	v.Kind = k
	if k == KindString {
		text = Unescape(text)
	}
	v.Text = text
	return v, nil
}

func (dc *treeDecoder) object(o *Object, depth int) error {
	for {
		tok, err := dc.t.next(nil)
		if err != nil {
			return err
		}
		if _, ok := tok.(xml.EndElement); ok {
			return nil
		}
		se := tok.(xml.StartElement)
		switch se.Name.Local {
		case "TN":
			id, _ := attr(se, "RefId")
			names, err := dc.typeNames()
			if err != nil {
				return err
			}
			dc.tns[id] = names
			o.TypeNames = names
		case "TNRef":
			id, _ := attr(se, "RefId")
			names, ok := dc.tns[id]
			if !ok {
				return fmt.Errorf("%w: <TNRef RefId=%q> to no earlier TN", ErrCLIXML, id)
			}
			o.TypeNames = names
			if _, err := dc.t.leafText("TNRef"); err != nil {
				return err
			}
		case "ToString":
			s, err := dc.t.leafText("ToString")
			if err != nil {
				return err
			}
			o.ToString = Unescape(s)
		case "Props":
			if o.Props, err = dc.list(o.Props, depth); err != nil {
				return err
			}
		case "MS":
			if o.MS, err = dc.list(o.MS, depth); err != nil {
				return err
			}
		case "LST", "IE", "STK", "QUE":
			if o.List, err = dc.list(o.List, depth); err != nil {
				return err
			}
		case "DCT":
			if err := dc.dict(o, depth); err != nil {
				return err
			}
		default:
			v, err := dc.value(se, depth+1)
			if err != nil {
				return err
			}
			o.Primitive = &v
		}
	}
}

func (dc *treeDecoder) typeNames() ([]string, error) {
	var names []string
	for {
		tok, err := dc.t.next(nil)
		if err != nil {
			return nil, err
		}
		if _, ok := tok.(xml.EndElement); ok {
			return names, nil
		}
		se := tok.(xml.StartElement)
		if se.Name.Local != "T" {
			return nil, fmt.Errorf("%w: <%s> in <TN>", ErrCLIXML, se.Name.Local)
		}
		s, err := dc.t.leafText("T")
		if err != nil {
			return nil, err
		}
		names = append(names, Unescape(s))
	}
}

func (dc *treeDecoder) list(dst []Value, depth int) ([]Value, error) {
	for {
		tok, err := dc.t.next(nil)
		if err != nil {
			return nil, err
		}
		if _, ok := tok.(xml.EndElement); ok {
			return dst, nil
		}
		v, err := dc.value(tok.(xml.StartElement), depth+1)
		if err != nil {
			return nil, err
		}
		dst = append(dst, v)
	}
}

func (dc *treeDecoder) dict(o *Object, depth int) error {
	for {
		tok, err := dc.t.next(nil)
		if err != nil {
			return err
		}
		if _, ok := tok.(xml.EndElement); ok {
			return nil
		}
		if se := tok.(xml.StartElement); se.Name.Local != "En" {
			return fmt.Errorf("%w: <%s> in <DCT>", ErrCLIXML, se.Name.Local)
		}
		vals, err := dc.list(nil, depth+1)
		if err != nil {
			return err
		}
		var en DictEntry
		var haveKey, haveValue bool
		for _, v := range vals {
			switch v.Name {
			case "Key":
				en.Key, haveKey = v, true
			case "Value":
				en.Value, haveValue = v, true
			}
		}
		if !haveKey || !haveValue || len(vals) != 2 {
			return fmt.Errorf("%w: <En> needs one Key and one Value", ErrCLIXML)
		}
		o.Dict = append(o.Dict, en)
	}
}

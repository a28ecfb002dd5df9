package psrp

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Hashtable is a PowerShell hashtable with its keys in order, serialized as
// System.Collections.Hashtable (MS-PSRP 2.2.5.2.6.4). Exchange reads
// multi-valued property edits as @{Add=…;Remove=…}.
type Hashtable []Entry

// Entry is one key of a Hashtable.
type Entry struct {
	Key   string
	Value any
}

// Switch is the value of a switch parameter that is present (-Force); it
// travels as the Boolean true, which PowerShell binds to a SwitchParameter.
type Switch struct{}

// Encoder writes CLIXML (MS-PSRP 2.2.5) for one message: RefIds and TN
// RefIds count from 0 within it. Values it accepts: nil, string, []string,
// bool, Switch, int, int32, int64, time.Time, Hashtable and []any of
// these. The zero value is ready; Reset starts the next message with the
// same buffer. Not safe for concurrent use.
type Encoder struct {
	buf  []byte
	refs int
	tns  map[string]int
	err  error
}

// Reset empties the encoder for a new message, keeping its buffer.
func (e *Encoder) Reset() {
	e.buf = e.buf[:0]
	e.refs = 0
	clear(e.tns)
	e.err = nil
}

// Bytes returns the CLIXML written so far, or the first error.
func (e *Encoder) Bytes() ([]byte, error) { return e.buf, e.err }

func (e *Encoder) fail(err error) {
	if e.err == nil {
		e.err = err
	}
}

func validName(n string) bool {
	if n == "" || len(n) > 128 {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// open writes "<tag" and the N attribute.
func (e *Encoder) open(tag, name string) {
	e.buf = append(e.buf, '<')
	e.buf = append(e.buf, tag...)
	if name != "" {
		if !validName(name) {
			e.fail(fmt.Errorf("%w: property name %q: want letters, digits and _", ErrString, name))
		}
		e.buf = append(e.buf, ` N="`...)
		e.buf = append(e.buf, name...)
		e.buf = append(e.buf, '"')
	}
}

func (e *Encoder) closeTag(tag string) {
	e.buf = append(e.buf, "</"...)
	e.buf = append(e.buf, tag...)
	e.buf = append(e.buf, '>')
}

// prim writes <tag N="name">text</tag>; text must need no escaping.
func (e *Encoder) prim(tag, name, text string) {
	e.open(tag, name)
	e.buf = append(e.buf, '>')
	e.buf = append(e.buf, text...)
	e.closeTag(tag)
}

// Nil writes <Nil N="name" />.
func (e *Encoder) Nil(name string) {
	e.open("Nil", name)
	e.buf = append(e.buf, " />"...)
}

// String writes <S>, escaped as PowerShell does.
func (e *Encoder) String(name, s string) {
	e.open("S", name)
	e.buf = append(e.buf, '>')
	var err error
	e.buf, err = AppendEscaped(e.buf, s)
	if err != nil {
		e.fail(fmt.Errorf("value of %s: %w", name, err))
	}
	e.closeTag("S")
}

// Bool writes <B>.
func (e *Encoder) Bool(name string, b bool) { e.prim("B", name, strconv.FormatBool(b)) }

// Int32 writes <I32>.
func (e *Encoder) Int32(name string, v int32) { e.prim("I32", name, strconv.FormatInt(int64(v), 10)) }

// Int64 writes <I64>.
func (e *Encoder) Int64(name string, v int64) { e.prim("I64", name, strconv.FormatInt(v, 10)) }

// Version writes <Version>.
func (e *Encoder) Version(name, v string) { e.prim("Version", name, v) }

// DateTimeLayout is the form of <DT>: xs:dateTime with seven fractional
// digits, as .NET writes DateTime (MS-PSRP 2.2.5.1.4).
const DateTimeLayout = "2006-01-02T15:04:05.0000000Z07:00"

// DateTime writes <DT>.
func (e *Encoder) DateTime(name string, t time.Time) { e.prim("DT", name, t.Format(DateTimeLayout)) }

// ObjStart opens <Obj N="name" RefId="…"> with the type names (written as
// a TN the first time a list is used in the message, as a TNRef after).
func (e *Encoder) ObjStart(name string, typeNames ...string) {
	e.open("Obj", name)
	e.buf = append(e.buf, ` RefId="`...)
	e.buf = strconv.AppendInt(e.buf, int64(e.refs), 10)
	e.buf = append(e.buf, `">`...)
	e.refs++
	if len(typeNames) == 0 {
		return
	}
	key := typeNames[0]
	for _, t := range typeNames[1:] {
		key += "\x00" + t
	}
	if id, ok := e.tns[key]; ok {
		e.buf = append(e.buf, `<TNRef RefId="`...)
		e.buf = strconv.AppendInt(e.buf, int64(id), 10)
		e.buf = append(e.buf, `" />`...)
		return
	}
	if e.tns == nil {
		e.tns = make(map[string]int)
	}
	id := len(e.tns)
	e.tns[key] = id
	e.buf = append(e.buf, `<TN RefId="`...)
	e.buf = strconv.AppendInt(e.buf, int64(id), 10)
	e.buf = append(e.buf, `">`...)
	for _, t := range typeNames {
		e.buf = append(e.buf, "<T>"...)
		var err error
		if e.buf, err = AppendEscaped(e.buf, t); err != nil {
			e.fail(err)
		}
		e.buf = append(e.buf, "</T>"...)
	}
	e.buf = append(e.buf, "</TN>"...)
}

// ObjEnd closes an <Obj>.
func (e *Encoder) ObjEnd() { e.closeTag("Obj") }

// Raw writes an element start or end such as "<MS>" or "</LST>" as is.
func (e *Encoder) Raw(s string) { e.buf = append(e.buf, s...) }

// Enum writes an enum value: an Obj with its type names, ToString and the
// underlying <I32> (MS-PSRP 2.2.5.2.7).
func (e *Encoder) Enum(name, typeName, str string, v int32) {
	e.ObjStart(name, typeName, "System.Enum", "System.ValueType", "System.Object")
	e.Raw("<ToString>")
	e.Raw(str)
	e.Raw("</ToString>")
	e.Int32("", v)
	e.ObjEnd()
}

// Value writes v as the typed CLIXML PowerShell deserializes to the same
// value (MS-PSRP 2.2.5.1 primitives, 2.2.5.2.6 containers).
func (e *Encoder) Value(name string, v any) {
	switch v := v.(type) {
	case nil:
		e.Nil(name)
	case string:
		e.String(name, v)
	case bool:
		e.Bool(name, v)
	case Switch:
		e.Bool(name, true)
	case int32:
		e.Int32(name, v)
	case int:
		if v >= math.MinInt32 && v <= math.MaxInt32 {
			e.Int32(name, int32(v))
		} else {
			e.Int64(name, int64(v))
		}
	case int64:
		e.Int64(name, v)
	case time.Time:
		e.DateTime(name, v)
	case []string:
		e.ObjStart(name, "System.String[]", "System.Array", "System.Object")
		e.Raw("<LST>")
		for _, s := range v {
			e.String("", s)
		}
		e.Raw("</LST>")
		e.ObjEnd()
	case []any:
		e.ObjStart(name, "System.Object[]", "System.Array", "System.Object")
		e.Raw("<LST>")
		for _, x := range v {
			e.Value("", x)
		}
		e.Raw("</LST>")
		e.ObjEnd()
	case Hashtable:
		e.ObjStart(name, "System.Collections.Hashtable", "System.Object")
		e.Raw("<DCT>")
		for _, en := range v {
			e.Raw("<En>")
			e.String("Key", en.Key)
			e.Value("Value", en.Value)
			e.Raw("</En>")
		}
		e.Raw("</DCT>")
		e.ObjEnd()
	default:
		e.fail(fmt.Errorf("%w: value of %s: unsupported type %T", ErrString, name, v))
	}
}

package config

import (
	"reflect"
	"regexp"
	"strings"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// The key tree of Config, read from its toml tags: for suggestions on
// unknown keys and for the test that the example file covers every key.

var durationType = reflect.TypeFor[Duration]()

// tableType returns the struct type of a table field (a struct, or a slice
// of structs for an array of tables), or nil for a leaf value.
func tableType(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == durationType {
		return nil
	}
	return t
}

func tomlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	return name
}

// tableAt returns the struct type of the table at path, or nil.
func tableAt(path []string) reflect.Type {
	t := reflect.TypeFor[Config]()
	for _, p := range path {
		var next reflect.Type
		for f := range t.Fields() {
			if tomlName(f) == p {
				next = tableType(f.Type)
				break
			}
		}
		if next == nil {
			return nil
		}
		t = next
	}
	return t
}

// Keys returns every leaf key of the file as a dotted path
// ("exchange.servers", "policy.platform_exceptions.action", …).
func Keys() []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for f := range t.Fields() {
			name := prefix + tomlName(f)
			if tt := tableType(f.Type); tt != nil {
				walk(tt, name+".")
				continue
			}
			out = append(out, name)
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return out
}

func dotted(k toml.Key) string { return strings.Join(k, ".") }

// suggest proposes the key meant by an unknown one: a near spelling in the
// same table, or the same name in another table.
func suggest(key toml.Key) string {
	if len(key) == 0 {
		return ""
	}
	last := strings.ToLower(key[len(key)-1])
	parent := key[:len(key)-1]
	if t := tableAt(parent); t != nil {
		best, bestDist := "", 3
		for f := range t.Fields() {
			name := tomlName(f)
			if d := editDistance(last, name); d < bestDist {
				best, bestDist = name, d
			}
		}
		if best != "" {
			return dotted(append(append(toml.Key{}, parent...), best))
		}
	}
	for _, k := range Keys() {
		if k == last || strings.HasSuffix(k, "."+last) {
			return k
		}
	}
	return ""
}

// editDistance is the Levenshtein distance of a and b (ASCII keys).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var mismatchRe = regexp.MustCompile(`^cannot decode TOML (\S+) into struct field \S+ of type (\S+)$`)

var typeNames = map[string]string{
	"int":                        "an integer",
	"float64":                    "a number",
	"bool":                       "true or false",
	"string":                     "a string",
	"*string":                    "a string",
	"[]string":                   "an array of strings",
	"config.Duration":            `a duration such as "30s"`,
	"[]config.PlatformException": "an array of tables ([[policy.platform_exceptions]])",
	"config.Exchange":            "a table",
	"config.Log":                 "a table",
	"config.MDM":                 "a table",
	"config.Policy":              "a table",
	"config.Guard":               "a table",
	"config.Sync":                "a table",
	"config.Server":              "a table",
	"config.Notify":              "a table",
	"config.PlatformException":   "a table",
}

// friendlyMessage rewrites go-toml's type mismatch text, which names Go
// types, into the file's terms.
func friendlyMessage(de *toml.DecodeError) string {
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	if m := mismatchRe.FindStringSubmatch(msg); m != nil {
		want, ok := typeNames[m[2]]
		if !ok {
			want = m[2]
		}
		return "want " + want + ", got a TOML " + m[1]
	}
	return msg
}

// fieldAt returns the type of the value at path, or nil.
func fieldAt(path []string) reflect.Type {
	if len(path) == 0 {
		return nil
	}
	t := tableAt(path[:len(path)-1])
	if t == nil {
		return nil
	}
	for f := range t.Fields() {
		if tomlName(f) == path[len(path)-1] {
			return f.Type
		}
	}
	return nil
}

// locateNonStringDuration finds the first duration key whose value is not a
// string and returns its position.
func locateNonStringDuration(doc []byte) *Error {
	var p unstable.Parser
	p.Reset(doc)
	var table []string
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = table[:0]
			for it := e.Key(); it.Next(); {
				table = append(table, string(it.Node().Data))
			}
		case unstable.KeyValue:
			path := append([]string(nil), table...)
			for it := e.Key(); it.Next(); {
				path = append(path, string(it.Node().Data))
			}
			v := e.Value()
			if v.Kind != unstable.String && fieldAt(path) == durationType {
				pos := p.Shape(v.Raw).Start
				return &Error{Line: pos.Line, Column: pos.Column, Key: strings.Join(path, ".")}
			}
		}
	}
	return nil
}

// maxUnknownKeys caps the unknown keys reported in detail. go-toml locates
// each one by scanning the document from its start, so thousands of them
// (a file that is not ours) would take quadratic time; the pre-scan in
// countUnknown reports such a file at once instead.
const maxUnknownKeys = 20

// countUnknown counts the tables and keys of doc that Config does not have
// and returns the position of the first. Syntax errors end the scan early
// (the decoder reports them).
func countUnknown(doc []byte) (int, *Error) {
	var p unstable.Parser
	p.Reset(doc)
	var (
		table      []string
		tableKnown = true
		n          int
		first      *Error
	)
	note := func(path []string, raw unstable.Range) {
		n++
		if first == nil {
			pos := p.Shape(raw).Start
			first = &Error{Line: pos.Line, Column: pos.Column, Key: strings.Join(path, ".")}
		}
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = table[:0]
			var raw unstable.Range
			for it := e.Key(); it.Next(); {
				table = append(table, string(it.Node().Data))
				raw = it.Node().Raw
			}
			tableKnown = tableAt(table) != nil
			if !tableKnown {
				note(table, raw)
			}
		case unstable.KeyValue:
			if !tableKnown {
				continue
			}
			path := append([]string(nil), table...)
			var raw unstable.Range
			for it := e.Key(); it.Next(); {
				path = append(path, string(it.Node().Data))
				if raw == (unstable.Range{}) {
					raw = it.Node().Raw
				}
			}
			if fieldAt(path) == nil && tableAt(path[:len(path)-1]) != nil {
				note(path, raw)
			}
		}
	}
	return n, first
}

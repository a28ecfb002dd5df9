package exsim

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// OPATH, the -Filter language of Exchange cmdlets, in the subset the
// connector needs:
//
//	filter  := or
//	or      := and { "-or" and }
//	and     := unary { "-and" unary }
//	unary   := "-not" unary | "(" or ")" | Property op value
//	op      := -eq -ne -gt -ge -lt -le -like -notlike   (any case)
//	value   := 'text' | "text" | $true | $false | $null | bareword
//
// A quote inside a quoted value is written twice ('O''Brien'). -and binds
// tighter than -or; clients should parenthesise anyway. Strings compare
// case-insensitively; -like takes * wildcards anywhere. A multi-valued
// property -eq a value when any element equals it, -ne when none does, and
// -eq $null when it is empty. Dates are accepted as RFC 3339 or in en-US
// form (MM/dd/yyyy HH:mm:ss, M/d/yyyy h:mm:ss tt, or a date alone); a date
// without a zone is UTC. Exchange would read it in the server's time zone
// and culture; the simulator's servers run in UTC, so the two agree.

// Filter is a parsed OPATH filter. It is immutable and safe for concurrent use.
type Filter struct {
	src  string
	root fnode
}

// FilterError is an OPATH syntax or binding error. Error() is Exchange's
// text: the reason, then the filter and the 1-based position of the fault.
type FilterError struct {
	Filter string
	Pos    int // 1-based byte position of the offending token
	Reason string
}

func (e *FilterError) Error() string {
	return fmt.Sprintf("%s\r\n\"%s\" at position %d.", e.Reason, e.Filter, e.Pos)
}

const reasonSyntax = "Invalid filter syntax. For a description of the filter parameter syntax see the command help."

func reasonUnknownProperty(name string) string {
	return fmt.Sprintf("\"%s\" is not a recognized filterable property. For a complete list of filterable properties see the command help.", name)
}

type fnode interface{ format(b *strings.Builder) }

type andNode struct{ l, r fnode }
type orNode struct{ l, r fnode }
type notNode struct{ x fnode }
type cmpNode struct {
	prop    string
	propPos int
	op      string // eq ne gt ge lt le like notlike
	val     literal
	valPos  int
}

type litKind int

const (
	litString litKind = iota // quoted or bare text
	litTrue
	litFalse
	litNull
)

type literal struct {
	kind litKind
	s    string
}

func (n andNode) format(b *strings.Builder) {
	b.WriteByte('(')
	n.l.format(b)
	b.WriteString(" -and ")
	n.r.format(b)
	b.WriteByte(')')
}

func (n orNode) format(b *strings.Builder) {
	b.WriteByte('(')
	n.l.format(b)
	b.WriteString(" -or ")
	n.r.format(b)
	b.WriteByte(')')
}

func (n notNode) format(b *strings.Builder) {
	b.WriteString("(-not ")
	n.x.format(b)
	b.WriteByte(')')
}

func (n cmpNode) format(b *strings.Builder) {
	b.WriteString(n.prop)
	b.WriteString(" -")
	b.WriteString(n.op)
	b.WriteByte(' ')
	switch n.val.kind {
	case litTrue:
		b.WriteString("$true")
	case litFalse:
		b.WriteString("$false")
	case litNull:
		b.WriteString("$null")
	default:
		b.WriteByte('\'')
		b.WriteString(strings.ReplaceAll(n.val.s, "'", "''"))
		b.WriteByte('\'')
	}
}

// String returns the filter in canonical form: fully parenthesised, values
// single-quoted. Parsing it again yields the same filter.
func (f *Filter) String() string {
	var b strings.Builder
	f.root.format(&b)
	return b.String()
}

type tokKind int

const (
	tEOF tokKind = iota
	tLParen
	tRParen
	tOp     // -eq … ; s holds the lower-cased name
	tAnd    // -and
	tOr     // -or
	tNot    // -not
	tQuoted // 'x' or "x"; s holds the unescaped text
	tVar    // $true $false $null; s lower-cased without $
	tWord   // bare word
)

type token struct {
	kind tokKind
	s    string
	pos  int // 1-based
}

type lexer struct {
	src string
	i   int
}

func (lx *lexer) next() (token, *FilterError) {
	for lx.i < len(lx.src) && isSpace(lx.src[lx.i]) {
		lx.i++
	}
	pos := lx.i + 1
	if lx.i >= len(lx.src) {
		return token{kind: tEOF, pos: pos}, nil
	}
	switch c := lx.src[lx.i]; c {
	case '(':
		lx.i++
		return token{kind: tLParen, pos: pos}, nil
	case ')':
		lx.i++
		return token{kind: tRParen, pos: pos}, nil
	case '\'', '"':
		var b strings.Builder
		lx.i++
		for {
			if lx.i >= len(lx.src) {
				return token{}, lx.fail(pos)
			}
			ch := lx.src[lx.i]
			lx.i++
			if ch == c {
				if lx.i < len(lx.src) && lx.src[lx.i] == c {
					b.WriteByte(c)
					lx.i++
					continue
				}
				return token{kind: tQuoted, s: b.String(), pos: pos}, nil
			}
			b.WriteByte(ch)
		}
	case '-':
		j := lx.i + 1
		for j < len(lx.src) && isLetter(lx.src[j]) {
			j++
		}
		name := strings.ToLower(lx.src[lx.i+1 : j])
		lx.i = j
		switch name {
		case "and":
			return token{kind: tAnd, pos: pos}, nil
		case "or":
			return token{kind: tOr, pos: pos}, nil
		case "not":
			return token{kind: tNot, pos: pos}, nil
		case "eq", "ne", "gt", "ge", "lt", "le", "like", "notlike":
			return token{kind: tOp, s: name, pos: pos}, nil
		}
		return token{}, lx.fail(pos)
	case '$':
		j := lx.i + 1
		for j < len(lx.src) && isLetter(lx.src[j]) {
			j++
		}
		name := strings.ToLower(lx.src[lx.i+1 : j])
		lx.i = j
		switch name {
		case "true", "false", "null":
			return token{kind: tVar, s: name, pos: pos}, nil
		}
		return token{}, lx.fail(pos)
	}
	j := lx.i
	for j < len(lx.src) && !isSpace(lx.src[j]) && !strings.ContainsRune("()'\"", rune(lx.src[j])) {
		j++
	}
	w := lx.src[lx.i:j]
	lx.i = j
	return token{kind: tWord, s: w, pos: pos}, nil
}

func (lx *lexer) fail(pos int) *FilterError {
	return &FilterError{Filter: lx.src, Pos: pos, Reason: reasonSyntax}
}

func isSpace(c byte) bool  { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func isIdent(s string) bool {
	if s == "" || !isLetter(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isLetter(c) && !(c >= '0' && c <= '9') && c != '_' {
			return false
		}
	}
	return true
}

type parser struct {
	lx   lexer
	tok  token
	errf *FilterError
	// depth bounds nesting, so a hostile filter cannot exhaust the stack.
	depth int
}

const maxFilterDepth = 100

// ParseFilter parses an OPATH filter. The error, if any, is a *FilterError.
func ParseFilter(src string) (*Filter, error) {
	f, ferr := parseFilter(src)
	if ferr != nil {
		return nil, ferr
	}
	return f, nil
}

func parseFilter(src string) (*Filter, *FilterError) {
	p := &parser{lx: lexer{src: src}}
	p.advance()
	if p.errf != nil {
		return nil, p.errf
	}
	root := p.parseOr()
	if p.errf != nil {
		return nil, p.errf
	}
	if p.tok.kind != tEOF {
		return nil, p.lx.fail(p.tok.pos)
	}
	return &Filter{src: src, root: root}, nil
}

func (p *parser) advance() {
	if p.errf != nil {
		return
	}
	t, err := p.lx.next()
	if err != nil {
		p.errf = err
		return
	}
	p.tok = t
}

func (p *parser) failAt(pos int) fnode {
	if p.errf == nil {
		p.errf = p.lx.fail(pos)
	}
	return nil
}

func (p *parser) parseOr() fnode {
	l := p.parseAnd()
	for p.errf == nil && p.tok.kind == tOr {
		p.advance()
		r := p.parseAnd()
		l = orNode{l, r}
	}
	return l
}

func (p *parser) parseAnd() fnode {
	l := p.parseUnary()
	for p.errf == nil && p.tok.kind == tAnd {
		p.advance()
		r := p.parseUnary()
		l = andNode{l, r}
	}
	return l
}

func (p *parser) parseUnary() fnode {
	if p.errf != nil {
		return nil
	}
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxFilterDepth {
		return p.failAt(p.tok.pos)
	}
	switch p.tok.kind {
	case tNot:
		p.advance()
		x := p.parseUnary()
		return notNode{x}
	case tLParen:
		p.advance()
		x := p.parseOr()
		if p.errf != nil {
			return nil
		}
		if p.tok.kind != tRParen {
			return p.failAt(p.tok.pos)
		}
		p.advance()
		return x
	case tWord:
		if !isIdent(p.tok.s) {
			return p.failAt(p.tok.pos)
		}
		n := cmpNode{prop: p.tok.s, propPos: p.tok.pos}
		p.advance()
		if p.errf != nil {
			return nil
		}
		if p.tok.kind != tOp {
			return p.failAt(p.tok.pos)
		}
		n.op = p.tok.s
		p.advance()
		if p.errf != nil {
			return nil
		}
		n.valPos = p.tok.pos
		switch p.tok.kind {
		case tQuoted, tWord:
			n.val = literal{kind: litString, s: p.tok.s}
		case tVar:
			n.val = literal{kind: map[string]litKind{"true": litTrue, "false": litFalse, "null": litNull}[p.tok.s]}
			if n.val.kind == litNull && n.op != "eq" && n.op != "ne" {
				return p.failAt(p.tok.pos) // only -eq and -ne compare with $null
			}
		default:
			return p.failAt(p.tok.pos)
		}
		p.advance()
		return n
	}
	return p.failAt(p.tok.pos)
}

// compileFilter binds f to the properties of schema s: it checks every
// property is filterable and converts every value to the property's type,
// and returns the predicate.
func compileFilter[T any](f *Filter, s *schema[T]) (func(*T) bool, *FilterError) {
	c := compiler[T]{f: f, s: s}
	pred := c.node(f.root)
	if c.err != nil {
		return nil, c.err
	}
	return pred, nil
}

type compiler[T any] struct {
	f   *Filter
	s   *schema[T]
	err *FilterError
}

func (c *compiler[T]) fail(pos int, reason string) func(*T) bool {
	if c.err == nil {
		c.err = &FilterError{Filter: c.f.src, Pos: pos, Reason: reason}
	}
	return nil
}

func (c *compiler[T]) node(n fnode) func(*T) bool {
	switch n := n.(type) {
	case andNode:
		l, r := c.node(n.l), c.node(n.r)
		return func(x *T) bool { return l(x) && r(x) }
	case orNode:
		l, r := c.node(n.l), c.node(n.r)
		return func(x *T) bool { return l(x) || r(x) }
	case notNode:
		inner := c.node(n.x)
		return func(x *T) bool { return !inner(x) }
	case cmpNode:
		return c.cmp(n)
	}
	panic("exsim: unknown filter node")
}

func (c *compiler[T]) cmp(n cmpNode) func(*T) bool {
	p := c.s.lookup(n.prop)
	if p == nil || !p.filterable {
		return c.fail(n.propPos, reasonUnknownProperty(n.prop))
	}
	convErr := func(v string) func(*T) bool {
		return c.fail(n.valPos, fmt.Sprintf("The value \"%s\" could not be converted to type %s.", v, p.kind.typeName()))
	}
	opErr := func() func(*T) bool {
		// exsim wording: Exchange refuses wildcards on non-string
		// properties and ordering on multi-valued ones.
		return c.fail(n.valPos, fmt.Sprintf("The operator \"-%s\" isn't supported for property \"%s\".", n.op, p.name))
	}
	like := n.op == "like" || n.op == "notlike"
	isNull := n.val.kind == litNull // the parser allows it with -eq and -ne only
	text := n.val.s
	switch n.val.kind {
	case litTrue:
		text = "True"
	case litFalse:
		text = "False"
	}
	var pred func(*T) bool
	switch p.kind {
	case kString:
		get := p.str
		switch {
		case isNull:
			pred = func(x *T) bool { return get(x) == "" }
		case like:
			m := newWildcard(text)
			pred = func(x *T) bool { return m.match(get(x)) }
		case n.op == "eq" || n.op == "ne":
			pred = func(x *T) bool { return strings.EqualFold(get(x), text) == (n.op == "eq") }
		default:
			want := strings.ToLower(text)
			pred = func(x *T) bool { return ordered(n.op, strings.Compare(strings.ToLower(get(x)), want)) }
		}
	case kEnum:
		get, values := p.str, p.enum
		switch {
		case isNull:
			pred = func(x *T) bool { return get(x) == "" }
		case like:
			m := newWildcard(text)
			pred = func(x *T) bool { return m.match(get(x)) }
		default:
			want := -1
			for i, v := range values {
				if strings.EqualFold(v, text) {
					want = i
				}
			}
			if want < 0 {
				return c.fail(n.valPos, fmt.Sprintf("The value \"%s\" could not be converted to type %s. Valid values are: %s.",
					text, p.name, strings.Join(values, ", ")))
			}
			pred = func(x *T) bool {
				got := get(x)
				for i, v := range values {
					if v == got {
						return ordered(n.op, cmpInt(i, want))
					}
				}
				return n.op == "ne"
			}
		}
	case kBool:
		if like {
			return opErr()
		}
		get := p.bl
		if isNull {
			pred = func(*T) bool { return false }
			break
		}
		var want bool
		switch strings.ToLower(text) {
		case "true", "1":
			want = true
		case "false", "0":
		default:
			return convErr(text)
		}
		pred = func(x *T) bool { return ordered(n.op, cmpBool(get(x), want)) }
	case kTime:
		if like {
			return opErr()
		}
		get := p.tm
		if isNull {
			pred = func(x *T) bool { return get(x).IsZero() }
			break
		}
		want, ok := parseFilterTime(text)
		if !ok {
			return convErr(text)
		}
		pred = func(x *T) bool {
			t := get(x)
			if t.IsZero() {
				return n.op == "ne"
			}
			return ordered(n.op, t.Compare(want))
		}
	case kInt:
		if like {
			return opErr()
		}
		get := p.num
		want, err := strconv.ParseInt(text, 10, 64)
		if err != nil || isNull {
			return convErr(text)
		}
		pred = func(x *T) bool { return ordered(n.op, cmpInt64(get(x), want)) }
	case kList:
		get := p.list
		switch {
		case isNull:
			pred = func(x *T) bool { return len(get(x)) == 0 }
		case like:
			m := newWildcard(text)
			pred = func(x *T) bool {
				for _, v := range get(x) {
					if m.match(v) {
						return true
					}
				}
				return false
			}
		case n.op == "eq" || n.op == "ne":
			pred = func(x *T) bool { return containsFold(get(x), text) }
		default:
			return opErr()
		}
	}
	// Negated operators: -ne and -notlike are the complement of -eq and
	// -like for every kind (a multi-valued -ne means "contains none").
	switch n.op {
	case "notlike":
		inner := pred
		return func(x *T) bool { return !inner(x) }
	case "ne":
		if isNull || p.kind == kList {
			inner := pred
			return func(x *T) bool { return !inner(x) }
		}
	}
	return pred
}

// ordered applies a comparison operator to the sign of a comparison.
func ordered(op string, sign int) bool {
	switch op {
	case "eq":
		return sign == 0
	case "ne":
		return sign != 0
	case "gt":
		return sign > 0
	case "ge":
		return sign >= 0
	case "lt":
		return sign < 0
	case "le":
		return sign <= 0
	}
	return false
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case b:
		return -1
	}
	return 1
}

// filterTimeLayouts are the date forms a filter may use; see the package
// comment of this file for the time zone.
var filterTimeLayouts = []string{
	time.RFC3339Nano,
	"01/02/2006 15:04:05",
	"1/2/2006 15:04:05",
	"1/2/2006 3:04:05 PM",
	"1/2/2006 15:04",
	"1/2/2006",
	"2006-01-02T15:04:05",
	"2006-01-02 15:04:05",
	"2006-01-02",
}

func parseFilterTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	for _, l := range filterTimeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// wildcard is a case-insensitive pattern where * matches any run.
type wildcard struct {
	parts []string // lower-cased literal runs between stars
}

func newWildcard(pattern string) wildcard {
	p := strings.ToLower(pattern)
	return wildcard{parts: strings.Split(p, "*")}
}

func (w wildcard) match(s string) bool {
	s = strings.ToLower(s)
	if len(w.parts) == 1 {
		return s == w.parts[0]
	}
	first, last := w.parts[0], w.parts[len(w.parts)-1]
	if !strings.HasPrefix(s, first) {
		return false
	}
	s = s[len(first):]
	for _, mid := range w.parts[1 : len(w.parts)-1] {
		i := strings.Index(s, mid)
		if i < 0 {
			return false
		}
		s = s[i+len(mid):]
	}
	return strings.HasSuffix(s, last)
}

// Package secret holds credentials (passwords, client secrets, private keys,
// API tokens) in types that cannot print, marshal or log themselves.
//
// A String or Value shows as Redacted through every path that turns a value
// into text: fmt with any verb and flag (also inside structs, slices, maps
// and wrapped errors), encoding/json, encoding.TextMarshaler, gob, log/slog
// and the runtime's panic message. The value is read only through Reveal,
// which a reviewer can grep for: each call is a point where the secret
// leaves the program (an HTTP Authorization header, SMTP AUTH, an OAuth
// token request, a Kerberos login).
//
// The zero value is an empty secret. Values are immutable and safe for
// concurrent use.
package secret

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
)

// Redacted is what a secret shows instead of its value.
const Redacted = "[REDACTED]"

// ErrNoUnmarshal is returned when something tries to decode a secret from
// structured data: secrets come from environment variables or files, never
// from a document that may be logged or committed.
var ErrNoUnmarshal = errors.New("secret: refusing to decode a secret from structured data")

// String is a secret text, such as a password or a bearer token.
//
// The value sits behind a pointer so that even the paths that bypass the
// methods (fmt's %p on a non-pointer, which prints the operand with
// reflection) show an address, not the text. Two Strings compare equal
// with == only when they are copies of one New; reflect.DeepEqual compares
// the values.
type String struct {
	p *string
}

// New returns s as a secret; New("") is the empty secret.
func New(s string) String {
	if s == "" {
		return String{}
	}
	return String{p: &s}
}

// Reveal returns the value. Call it only where the secret is handed to the
// protocol that needs it, never to build a message or a log line.
func (s String) Reveal() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

// IsZero reports whether the secret is empty.
func (s String) IsZero() bool { return s.p == nil }

// Len returns the length of the value in bytes (for length checks that must
// not reveal it).
func (s String) Len() int { return len(s.Reveal()) }

// String returns Redacted (or "" for an empty secret, so that "is it set?"
// stays visible in a dump).
func (s String) String() string { return placeholder(s.p == nil) }

// GoString returns Redacted, for %#v.
func (s String) GoString() string { return "secret.String(" + strconv.Quote(s.String()) + ")" }

// Format writes the placeholder for every verb and flag, so %x, %q and
// %+v cannot reach the bytes.
func (s String) Format(f fmt.State, verb rune) { format(f, verb, s.p == nil, "secret.String") }

// MarshalJSON encodes the placeholder.
func (s String) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(s.String())), nil }

// MarshalText encodes the placeholder.
func (s String) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalJSON refuses: see ErrNoUnmarshal.
func (s *String) UnmarshalJSON([]byte) error { return ErrNoUnmarshal }

// UnmarshalText refuses: see ErrNoUnmarshal.
func (s *String) UnmarshalText([]byte) error { return ErrNoUnmarshal }

// GobEncode encodes the placeholder.
func (s String) GobEncode() ([]byte, error) { return []byte(s.String()), nil }

// GobDecode refuses: see ErrNoUnmarshal.
func (s *String) GobDecode([]byte) error { return ErrNoUnmarshal }

// LogValue logs the placeholder.
func (s String) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Value is a secret of any type, such as a private key (*rsa.PrivateKey),
// whose own formatting would print its content.
// Like String, it keeps the value behind a pointer.
type Value[T any] struct {
	p *T
}

// NewValue returns v as a secret.
func NewValue[T any](v T) Value[T] { return Value[T]{p: &v} }

// Reveal returns the value, or T's zero value when none was given; see
// String.Reveal.
func (s Value[T]) Reveal() T {
	if s.p == nil {
		var zero T
		return zero
	}
	return *s.p
}

// IsZero reports whether no value was given.
func (s Value[T]) IsZero() bool { return s.p == nil }

// String returns Redacted ("" when no value was given).
func (s Value[T]) String() string { return placeholder(s.p == nil) }

// GoString returns Redacted, for %#v.
func (s Value[T]) GoString() string { return "secret.Value(" + strconv.Quote(s.String()) + ")" }

// Format writes the placeholder for every verb and flag.
func (s Value[T]) Format(f fmt.State, verb rune) { format(f, verb, s.p == nil, "secret.Value") }

// MarshalJSON encodes the placeholder.
func (s Value[T]) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(s.String())), nil }

// MarshalText encodes the placeholder.
func (s Value[T]) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalJSON refuses: see ErrNoUnmarshal.
func (s *Value[T]) UnmarshalJSON([]byte) error { return ErrNoUnmarshal }

// UnmarshalText refuses: see ErrNoUnmarshal.
func (s *Value[T]) UnmarshalText([]byte) error { return ErrNoUnmarshal }

// GobEncode encodes the placeholder.
func (s Value[T]) GobEncode() ([]byte, error) { return []byte(s.String()), nil }

// GobDecode refuses: see ErrNoUnmarshal.
func (s *Value[T]) GobDecode([]byte) error { return ErrNoUnmarshal }

// LogValue logs the placeholder.
func (s Value[T]) LogValue() slog.Value { return slog.StringValue(s.String()) }

func placeholder(empty bool) string {
	if empty {
		return ""
	}
	return Redacted
}

// format answers every fmt verb with the placeholder: quoted for %q, Go
// syntax for %#v, plain otherwise. Width and precision are ignored, so not
// even the placeholder's length depends on the flags.
func format(f fmt.State, verb rune, empty bool, typ string) {
	p := placeholder(empty)
	switch {
	case verb == 'v' && f.Flag('#'):
		fmt.Fprintf(f, "%s(%q)", typ, p)
	case verb == 'q':
		fmt.Fprint(f, strconv.Quote(p))
	default:
		fmt.Fprint(f, p)
	}
}

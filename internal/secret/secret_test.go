package secret

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// value is distinctive, so that any path that leaks it (or its hex, or
// its quoted form) is found by a plain search.
const value = "hunter2-Zq9!xV"

// leaks reports whether out shows value in any common encoding.
func leaks(out string) bool {
	for _, enc := range []string{value, fmt.Sprintf("%x", value), fmt.Sprintf("% x", value), fmt.Sprintf("%X", value), fmt.Sprintf("%q", value)[1:8]} {
		if strings.Contains(out, enc) {
			return true
		}
	}
	return strings.Contains(out, value[:7])
}

type options struct {
	User     string
	Password String
	Key      Value[*rsa.PrivateKey]
	Nested   struct{ Token String }
	List     []String
	Map      map[string]String
	Ptr      *String
}

type embeds struct {
	String
	Name string
}

func sample(t *testing.T) options {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	s := New(value)
	o := options{User: "svc", Password: s, Key: NewValue(k), List: []String{s}, Map: map[string]String{"a": s}, Ptr: &s}
	o.Nested.Token = s
	return o
}

func TestFormatVerbs(t *testing.T) {
	s := New(value)
	o := sample(t)
	e := embeds{String: s, Name: "n"}
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "% x", "%d", "%T %v", "%10.3s", "%-20v", "%08x", "%U", "%c", "%t", "%p", "%e", "%b", "%o"} {
		for name, arg := range map[string]any{"String": s, "*String": &s, "options": o, "*options": &o, "embeds": e, "slice": []any{s, o}} {
			if got := fmt.Sprintf(f, arg); leaks(got) {
				t.Errorf("Sprintf(%q, %s) = %q: shows the secret", f, name, got)
			}
		}
	}
	if got := fmt.Sprint(s); got != Redacted {
		t.Errorf("Sprint(secret) = %q, want %q", got, Redacted)
	}
	if got := fmt.Sprintf("%q", s); got != `"`+Redacted+`"` {
		t.Errorf("Sprintf(%%q) = %q", got)
	}
	if got := fmt.Sprintf("%#v", s); got != `secret.String("[REDACTED]")` {
		t.Errorf("Sprintf(%%#v) = %q", got)
	}
	// The key's own formatting prints its primes; the wrapper must not.
	if got, d := fmt.Sprintf("%+v", o), o.Key.Reveal().D.String(); strings.Contains(got, d[:20]) || strings.Contains(got, fmt.Sprintf("%x", o.Key.Reveal().D.Bytes())[:20]) {
		t.Errorf("Sprintf(%%+v, options) shows the private key: %s", got)
	}
	if got := fmt.Sprint(String{}); got != "" {
		t.Errorf("Sprint(empty) = %q, want \"\"", got)
	}
	if s.String() != Redacted || s.GoString() != `secret.String("[REDACTED]")` || o.Key.String() != Redacted {
		t.Errorf("String/GoString = %q, %q, %q", s.String(), s.GoString(), o.Key.String())
	}
}

func TestReveal(t *testing.T) {
	s := New(value)
	if s.Reveal() != value || s.Len() != len(value) || s.IsZero() || !(String{}).IsZero() {
		t.Errorf("Reveal() = %q, Len() = %d, IsZero() = %v", s.Reveal(), s.Len(), s.IsZero())
	}
	var v Value[[]byte]
	if !v.IsZero() || NewValue([]byte("k")).IsZero() || string(NewValue([]byte("k")).Reveal()) != "k" {
		t.Error("Value: IsZero/Reveal wrong")
	}
}

func TestErrors(t *testing.T) {
	s := New(value)
	base := fmt.Errorf("login as svc with %v: %w", s, errors.New("denied"))
	wrapped := fmt.Errorf("connect ex1: %w", base)
	joined := errors.Join(wrapped, fmt.Errorf("options %+v", sample(t)))
	for _, err := range []error{base, wrapped, joined} {
		if leaks(err.Error()) || leaks(fmt.Sprintf("%+v", err)) || leaks(fmt.Sprintf("%#v", err)) {
			t.Errorf("error %q shows the secret", err)
		}
	}
}

func TestJSONAndText(t *testing.T) {
	o := sample(t)
	for name, v := range map[string]any{"options": o, "*options": &o, "String": New(value), "embeds": embeds{String: New(value)}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("Marshal(%s): %v", name, err)
		}
		if leaks(string(b)) || !strings.Contains(string(b), Redacted) {
			t.Errorf("Marshal(%s) = %s", name, b)
		}
		var buf bytes.Buffer
		if err := gob.NewEncoder(&buf).Encode(v); err == nil && leaks(buf.String()) {
			t.Errorf("gob(%s) shows the secret", name)
		}
	}
	if b, _ := New(value).MarshalText(); string(b) != Redacted {
		t.Errorf("MarshalText() = %q", b)
	}
	// A map key uses MarshalText.
	b, _ := json.Marshal(map[String]int{New(value): 1})
	if leaks(string(b)) {
		t.Errorf("Marshal(map key) = %s", b)
	}
	var s String
	if err := json.Unmarshal([]byte(`"x"`), &s); !errors.Is(err, ErrNoUnmarshal) {
		t.Errorf("Unmarshal = %v, want ErrNoUnmarshal", err)
	}
	if err := s.UnmarshalText([]byte("x")); !errors.Is(err, ErrNoUnmarshal) {
		t.Errorf("UnmarshalText = %v, want ErrNoUnmarshal", err)
	}
}

func TestSlog(t *testing.T) {
	o := sample(t)
	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		l := slog.New(h)
		l.Info("login", "password", New(value), "opts", o, "ptr", &o, "key", o.Key)
		l.Info("grouped", slog.Group("g", slog.Any("s", New(value))), slog.String("str", New(value).String()))
		l.With("token", New(value)).Error("failed", "err", fmt.Errorf("auth %v: %w", New(value), errors.New("x")))
		l.Info("fmt", "v", fmt.Sprintf("%#v", o))
	}
	if leaks(buf.String()) {
		t.Errorf("slog output shows the secret:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "password="+Redacted) || !strings.Contains(buf.String(), `"password":"`+Redacted+`"`) {
		t.Errorf("slog output lacks the placeholder:\n%s", buf.String())
	}
}

// TestPanic checks both a recovered panic value and the message the
// runtime prints for an unrecovered one (in a child process).
func TestPanic(t *testing.T) {
	if os.Getenv("SECRET_TEST_PANIC") == "1" {
		switch os.Getenv("SECRET_TEST_PANIC_KIND") {
		case "string":
			panic(New(value))
		case "error":
			panic(fmt.Errorf("with %v", New(value)))
		default:
			panic(sample(t))
		}
	}
	func() {
		defer func() {
			r := recover()
			if got := fmt.Sprintf("%v %+v %#v", r, r, r); leaks(got) {
				t.Errorf("recovered panic value %s shows the secret", got)
			}
		}()
		panic(sample(t))
	}()
	for _, kind := range []string{"string", "error", "struct"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPanic$")
		cmd.Env = append(os.Environ(), "SECRET_TEST_PANIC=1", "SECRET_TEST_PANIC_KIND="+kind)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "panic") {
			t.Fatalf("child %s: err %v, output %s", kind, err, out)
		}
		if leaks(string(out)) {
			t.Errorf("runtime panic message (%s) shows the secret:\n%s", kind, out)
		}
	}
}

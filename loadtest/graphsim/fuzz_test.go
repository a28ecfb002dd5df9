package graphsim

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/loadtest/population"
)

// FuzzAppendString checks the JSON string encoder: its output is always
// valid JSON and decodes to the input, with invalid UTF-8 replaced.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "iPhone15C2", `"quoted" \ back`, "tab\tnew\nline\x00", "Müller O'Brien", "\xff\xfe bad", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("appendString(%q) = %s: %v", s, b, err)
		}
		// Each invalid byte becomes U+FFFD, as encoding/json does it.
		if want := strings.Map(func(r rune) rune { return r }, s); got != want {
			t.Fatalf("appendString(%q) decodes to %q", s, got)
		}
	})
}

// FuzzVerifyAssertion checks the client assertion verifier never panics
// and accepts no token but the one signed by the registered key.
func FuzzVerifyAssertion(f *testing.F) {
	cs := twoCerts(f)
	const aud = "http://127.0.0.1/t/oauth2/v2.0/token"
	now := time.Unix(1740830400, 0)
	thumb := sha1.Sum(cs[0].cert.Raw)
	good := signJWT(f, map[string]any{"alg": "RS256", "typ": "JWT", "x5t": base64.RawURLEncoding.EncodeToString(thumb[:])},
		map[string]any{"aud": aud, "iss": "app", "sub": "app", "jti": "1", "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}, cs[0].key)
	s := New(population.Generate(population.Options{Devices: 1}), Options{Certificate: cs[0].cert, ClientID: "app"})
	if _, ok := s.verifyAssertion(good, "app", aud, now); !ok {
		f.Fatal("the well-signed assertion is refused")
	}
	f.Add(good)
	f.Add(good[:len(good)-2] + "AA")
	f.Fuzz(func(t *testing.T, jwt string) {
		if _, ok := s.verifyAssertion(jwt, "app", aud, now); ok && jwt != good {
			t.Fatalf("verifyAssertion accepted %q", jwt)
		}
	})
}

package main

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/easconnector/easconnector/internal/hostaddr"
)

// TestClientTokenOverHTTP: the CLI sends the API token over plain http
// only to loopback, judged by what the host resolves to and checked again
// at connect time.
func TestClientTokenOverHTTP(t *testing.T) {
	orig := clientResolver
	t.Cleanup(func() { clientResolver = orig })
	clientResolver = hostaddr.Static{"api.contoso.com": {"192.0.2.10"}, "localhost": {"127.0.0.1", "::1"}, "half-localhost": {"127.0.0.1", "192.0.2.10"}}
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	none, noTok := filepath.Join(dir, "none.toml"), ""
	client := func(raw string, tokenFile *string) (*apiClient, error) {
		return serverFlags{name: "server", config: &none, server: &raw, tokenFile: tokenFile}.client(false)
	}
	f := func(raw string, refused bool) {
		t.Helper()
		c, err := client(raw, &tok)
		if refused {
			if !errors.Is(err, errTokenOverHTTP) || !strings.Contains(err.Error(), "use an https:// URL") {
				t.Errorf("client(%s) = %v, want a refusal that says to use https", raw, err)
			}
			if err != nil && strings.Contains(err.Error(), testToken) {
				t.Errorf("refusal shows the token: %v", err)
			}
			return
		}
		if err != nil || c.token.Reveal() != testToken {
			t.Errorf("client(%s) = %v, want a client with the token", raw, err)
		}
	}
	f("http://192.0.2.10:8443", true)
	f("http://api.contoso.com:8443", true)
	f("http://half-localhost:8443", true)
	f("http://0.0.0.0:8443", true)
	f("http://127.0.0.1:8443", false)
	f("http://[::1]:8443", false)
	f("http://localhost:8443", false)
	f("https://api.contoso.com:8443", false)
	f("https://192.0.2.10", false)
	// Without a token there is nothing to protect.
	if _, err := client("http://api.contoso.com:8443", &noTok); err != nil {
		t.Errorf("client(http, no token) = %v", err)
	}

	// The dialer refuses a non-loopback address even when the name looked
	// loopback when checked.
	c, err := client("http://localhost:8443", &tok)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.hc.Transport.(*http.Transport).DialContext(t.Context(), "tcp", "192.0.2.10:8443")
	if !errors.Is(err, errTokenOverHTTP) {
		t.Errorf("dial of a non-loopback address over http = %v, want errTokenOverHTTP", err)
	}

	// Through the commands.
	for _, args := range [][]string{
		{"status", "--server", "http://192.0.2.10:8443", "--token-file", tok},
		{"devices", "--server", "http://api.contoso.com:8443", "--token-file", tok},
		{"sync", "--quick", "--remote", "http://api.contoso.com:8443", "--token-file", tok},
	} {
		code, _, errOut := runIn(t, t.Context(), args...)
		if code != exitFailed || !strings.Contains(errOut, "use an https:// URL") {
			t.Errorf("%v = %d\n%s", args, code, errOut)
		}
	}
}

package runspace_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/kdc"
	"github.com/easconnector/easconnector/runspace"
)

// malformedChallenges are CHALLENGE_MESSAGEs (MS-NLMP 2.2.1.2) a hostile
// server may send. The 0xFFFFFFFF offsets wrap the unchecked
// offset+length sum of go-ntlmssp before v0.1.1 (GHSA-pjcq-xvwq-hhpj),
// which then sliced out of range and panicked.
func malformedChallenges() map[string][]byte {
	valid := func() []byte {
		b := make([]byte, 56)
		copy(b, "NTLMSSP\x00")
		binary.LittleEndian.PutUint32(b[8:], 2)
		binary.LittleEndian.PutUint32(b[16:], 56) // TargetName: empty, at the end
		binary.LittleEndian.PutUint32(b[20:], 0x00000001|0x00000200|0x00080000|0x00800000)
		copy(b[24:32], "chal1234")
		binary.LittleEndian.PutUint16(b[40:], 4) // TargetInfo: MsvAvEOL only
		binary.LittleEndian.PutUint16(b[42:], 4)
		binary.LittleEndian.PutUint32(b[44:], 52)
		return b
	}
	with := func(edit func(b []byte) []byte) []byte { return edit(valid()) }
	return map[string][]byte{
		"truncated header":     valid()[:20],
		"truncated fields":     valid()[:40],
		"signature only":       []byte("NTLMSSP\x00"),
		"wrong message type":   with(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], 3); return b }),
		"target name wraps":    with(func(b []byte) []byte { varField(b[12:], 2, 0xFFFFFFFF); return b }),
		"target info wraps":    with(func(b []byte) []byte { varField(b[40:], 4, 0xFFFFFFFE); return b }),
		"target name past end": with(func(b []byte) []byte { varField(b[12:], 16, 50); return b }),
		"target info past end": with(func(b []byte) []byte { varField(b[40:], 200, 52); return b }),
		"huge target info":     with(func(b []byte) []byte { varField(b[40:], 0xFFFF, 52); return b }),
		"odd unicode name":     with(func(b []byte) []byte { varField(b[12:], 3, 52); return b }),
		"av pair longer than target info": with(func(b []byte) []byte {
			// MsvAvNbDomainName claiming 0xFFFF bytes inside a 4-byte info.
			binary.LittleEndian.PutUint16(b[52:], 2)
			binary.LittleEndian.PutUint16(b[54:], 0xFFFF)
			return b
		}),
		"av pairs without EOL": with(func(b []byte) []byte {
			binary.LittleEndian.PutUint16(b[52:], 2)
			binary.LittleEndian.PutUint16(b[54:], 0)
			return b
		}),
	}
}

// varField writes an MS-NLMP length/maxlength/offset triple.
func varField(b []byte, n uint16, off uint32) {
	binary.LittleEndian.PutUint16(b, n)
	binary.LittleEndian.PutUint16(b[2:], n)
	binary.LittleEndian.PutUint32(b[4:], off)
}

// TestNTLMMalformedChallenge: a server answering the NEGOTIATE with a
// malformed CHALLENGE makes the session fail with an error, never a panic,
// and the pool keeps working once the server behaves.
func TestNTLMMalformedChallenge(t *testing.T) {
	sim, err := exsim.New(exsim.Options{Quiet: true})
	if err != nil {
		t.Fatal(err)
	}
	gate, ts := startNTLMGate(t, sim)
	host, port, _ := net.SplitHostPort(ts.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	opts := runspace.Options{
		Servers: []string{host}, Port: p, Auth: runspace.AuthNTLM, PlainHTTP: true, Mode: runspace.ModeRemoting,
		User: `CONTOSO\` + exsim.DefaultUser, Password: secret.New(exsim.DefaultPassword),
		Parallel: true, Size: 2, OperationTimeout: time.Second, ConnectTimeout: 5 * time.Second,
		FailoverBackoff: time.Millisecond,
	}
	pool := startPool(t, opts)
	ctx := testCtx(t, 60*time.Second)

	for name, msg := range malformedChallenges() {
		tok := base64.StdEncoding.EncodeToString(msg)
		gate.bad.Store(&tok)
		s, err := runspace.Open(ctx, opts, host)
		if err == nil {
			s.Close(ctx)
			t.Errorf("%s: Open() succeeded", name)
			continue
		}
		if !errors.Is(err, runspace.ErrAuth) {
			t.Errorf("%s: Open() error = %v, want ErrAuth", name, err)
		}
	}
	if n := gate.authenticates.Load(); n != 0 {
		t.Errorf("the client answered %d malformed challenges with an AUTHENTICATE", n)
	}

	// New connections of the pool meet a bad challenge too.
	tok := base64.StdEncoding.EncodeToString(malformedChallenges()["target info wraps"])
	gate.bad.Store(&tok)
	ts.CloseClientConnections()
	_, _ = pool.Do(ctx, getSettings, nil)

	gate.bad.Store(nil)
	ts.CloseClientConnections()
	// The broken sessions marked the server down for a few milliseconds.
	eventually(t, "pool.Do() to succeed after the server recovered", func() bool {
		_, err := pool.Do(ctx, getSettings, nil)
		return err == nil
	})
}

// basicOnly offers only Basic and records every Authorization header.
type basicOnly struct {
	mu   sync.Mutex
	seen []string
}

func (b *basicOnly) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	b.seen = append(b.seen, r.Header.Values("Authorization")...)
	b.mu.Unlock()
	w.Header().Set("WWW-Authenticate", `Basic realm="WSMAN"`)
	w.WriteHeader(http.StatusUnauthorized)
}

// TestNoBasicUnlessConfigured: with NTLM, a server that answers 401 with
// only "WWW-Authenticate: Basic" (a spoofed server, a CAS name resolving
// elsewhere) never receives the password; with Basic it does, which shows
// the recorder works.
func TestNoBasicUnlessConfigured(t *testing.T) {
	const password = "S3cret-pa55word"
	for _, auth := range []string{runspace.AuthNTLM, "", runspace.AuthBasic} { // "": the zero value is NTLM
		seen := basicOnlyOpen(t, func(host string, port int) runspace.Options {
			return runspace.Options{Servers: []string{host}, Port: port, PlainHTTP: true, Auth: auth,
				User: `CONTOSO\svc`, Password: secret.New(password), ConnectTimeout: 5 * time.Second}
		})
		if leaked, want := sawPassword(seen, password), auth == runspace.AuthBasic; leaked != want {
			t.Errorf("auth %q: server saw the password = %v, want %v (headers %q)", auth, leaked, want, seen)
		}
	}
}

// TestKerberosNeverSendsBasic: with Kerberos the client logs in at the KDC
// and sends SPNEGO only; a server that asks for Basic gets nothing.
func TestKerberosNeverSendsBasic(t *testing.T) {
	k := kdc.StartT(t, kdc.Options{Services: []string{"HTTP/localhost"}})
	seen := basicOnlyOpen(t, func(_ string, port int) runspace.Options {
		return kerberosOptions(t, k, "localhost", port, nil)
	})
	if sawPassword(seen, k.Password) {
		t.Errorf("server saw the password: headers %q", seen)
	}
}

// basicOnlyOpen opens a session against a basicOnly server with the
// options opts builds, expects ErrAuth, and returns every Authorization
// header the server received.
func basicOnlyOpen(t *testing.T, opts func(host string, port int) runspace.Options) []string {
	t.Helper()
	rec := &basicOnly{}
	ts := httptest.NewServer(rec)
	defer ts.Close()
	host, port, _ := net.SplitHostPort(ts.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	ctx := testCtx(t, 10*time.Second)
	o := opts(host, p)
	if _, err := runspace.Open(ctx, o, o.Servers[0]); !errors.Is(err, runspace.ErrAuth) {
		t.Errorf("auth %q: Open() error = %v, want ErrAuth", o.Auth, err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.seen) == 0 && o.Auth != "" && o.Auth != runspace.AuthNTLM {
		// NTLM's first request is anonymous by design; the others
		// authenticate at once.
		t.Errorf("auth %q: no Authorization header reached the server", o.Auth)
	}
	return slices.Clone(rec.seen)
}

// sawPassword reports a Basic header, or the password in any header, raw,
// base64-decoded or as UTF-16LE.
func sawPassword(headers []string, password string) bool {
	for _, h := range headers {
		scheme, tok, _ := strings.Cut(h, " ")
		raw, _ := base64.StdEncoding.DecodeString(tok)
		if strings.EqualFold(scheme, "Basic") || strings.Contains(h, password) ||
			bytes.Contains(raw, []byte(password)) || bytes.Contains(raw, utf16le(password)) {
			return true
		}
	}
	return false
}

func utf16le(s string) []byte {
	var b []byte
	for _, r := range s {
		b = binary.LittleEndian.AppendUint16(b, uint16(r))
	}
	return b
}

// TestPlainHTTPRefused: plain HTTP reaches only loopback addresses unless
// AllowUnencrypted is set, whatever server the session is opened on (a
// discovered CAS, a name whose address changed).
func TestPlainHTTPRefused(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	o := runspace.Options{Servers: []string{"127.0.0.1"}, PlainHTTP: true, Auth: runspace.AuthBasic,
		User: "svc", Password: secret.New("pw"), ConnectTimeout: 5 * time.Second}
	// 192.0.2.1 (TEST-NET-1) would not answer: an immediate refusal shows
	// that no connection was tried.
	start := time.Now()
	_, err := runspace.Open(ctx, o, "192.0.2.1")
	if !errors.Is(err, runspace.ErrUnencrypted) {
		t.Errorf("Open(192.0.2.1 over HTTP) error = %v, want ErrUnencrypted", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusal took %s: a connection was attempted", d)
	}
	o.Servers = []string{"127.0.0.1", "192.0.2.1"}
	if _, err := runspace.NewPool(o); !errors.Is(err, runspace.ErrUnencrypted) || !strings.Contains(err.Error(), "Servers[1]") {
		t.Errorf("NewPool(192.0.2.1 over HTTP) error = %v, want ErrUnencrypted naming Servers[1]", err)
	}
}

// TestPlainHTTPLogged: every start over plain HTTP says what it exposes.
func TestPlainHTTPLogged(t *testing.T) {
	f := func(o runspace.Options, want ...string) {
		t.Helper()
		var buf bytes.Buffer
		o.Logger = slog.New(slog.NewTextHandler(&buf, nil))
		o.User, o.Password = "svc", secret.New("pw")
		if _, err := runspace.NewPool(o); err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(buf.String(), w) {
				t.Errorf("log %q does not say %q", buf.String(), w)
			}
		}
		if len(want) == 0 && buf.Len() != 0 {
			t.Errorf("log over HTTPS = %q, want nothing", buf.String())
		}
	}
	f(runspace.Options{Servers: []string{"cas1.contoso.com"}, PlainHTTP: true, AllowUnencrypted: true, Auth: runspace.AuthBasic},
		"level=WARN", "password travels in clear text", "every cmdlet with its parameters and output")
	f(runspace.Options{Servers: []string{"cas1.contoso.com"}, PlainHTTP: true, AllowUnencrypted: true},
		"level=WARN", "NTLM handshake can be captured", "every cmdlet with its parameters and output")
	f(runspace.Options{Servers: []string{"127.0.0.1"}, PlainHTTP: true, Auth: runspace.AuthBasic},
		"level=INFO", "loopback only", "password travels in clear text")
	f(runspace.Options{Servers: []string{"cas1.contoso.com"}})
}

package server

import (
	"encoding/base64"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/internal/hostaddr"
	"github.com/easconnector/easconnector/internal/secret"
)

func withReadToken(o *Options) { o.ReadToken = secret.New(testReadToken) }

func basic(tok string) map[string]string {
	return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("anyone:"+tok))}
}

// TestAPIRequiresToken: every endpoint under /api/v1 needs a token, GETs
// included; the read-only token reads, only the admin token changes.
func TestAPIRequiresToken(t *testing.T) {
	s, fb := newTestServer(t, withReadToken)
	gets := []string{"/api/v1/status", "/api/v1/syncs", "/api/v1/devices", "/api/v1/devices?user=user0001@contoso.com", "/api/v1/plans/" + fakePlanID}
	posts := []string{"/api/v1/syncs", "/api/v1/plans/" + fakePlanID + "/approve"}
	f := func(method, path string, hdr map[string]string, want int) {
		t.Helper()
		body := ""
		if method == "POST" {
			body = `{"kind":"quick"}`
			if strings.HasSuffix(path, "/approve") {
				body = ""
			}
		}
		w := do(t, s, method, path, body, hdr)
		if w.Code != want {
			t.Errorf("%s %s with %v = %d %s, want %d", method, path, hdr, w.Code, w.Body, want)
		}
		if want == 401 && (strings.Contains(w.Body.String(), "@contoso.com") || strings.Contains(w.Body.String(), "Appl")) {
			t.Errorf("%s %s: refusal carries data: %s", method, path, w.Body)
		}
	}
	for _, p := range append(gets, "/api/v1/status?verbose=1") {
		f("GET", p, nil, 401)
		f("HEAD", p, nil, 401)
		f("GET", p, bearer("not-a-token-at-all-0000"), 401)
		f("GET", p, map[string]string{"Authorization": "Bearer " + testToken[:20]}, 401)
	}
	for _, p := range gets {
		f("GET", p, bearer(testToken), 200)
		f("GET", p, bearer(testReadToken), 200)
		f("GET", p, basic(testReadToken), 200) // the status page's links, in a browser that signed in there
	}
	for _, p := range posts {
		f("POST", p, nil, 401)
		f("POST", p, bearer(testReadToken), 403)
		f("POST", p, basic(testToken), 401) // never Basic for a change: a browser would replay it for a cross-site form
	}
	if k := fb.triggered(); len(k) != 0 {
		t.Fatalf("backend triggered %v without the admin token", k)
	}
	if n := s.authFailures.Get(); n != uint64(4*(len(gets)+1)+3*len(posts)) {
		t.Errorf("auth failures counted %d, want one per refused request (%d)", n, 4*(len(gets)+1)+3*len(posts))
	}
	f("POST", posts[0], bearer(testToken), 202)

	// With no token configured, all of /api/v1 is closed.
	s, _ = newTestServer(t, func(o *Options) { o.Token = secret.String{} })
	for _, p := range gets {
		if w := do(t, s, "GET", p, "", nil); w.Code != 403 || !strings.Contains(jsonError(t, w), "no token is configured") {
			t.Errorf("GET %s without any configured token = %d %s, want 403", p, w.Code, w.Body)
		}
	}
	// Open endpoints stay open.
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if w := do(t, s, "GET", p, "", nil); w.Code != 200 {
			t.Errorf("GET %s = %d, want 200 without a token", p, w.Code)
		}
	}
}

// TestTokensCompared: both digests are compared for every request, so
// timing does not show which token matched.
func TestTokensCompared(t *testing.T) {
	orig := constantTimeCompare
	t.Cleanup(func() { constantTimeCompare = orig })
	n := 0
	constantTimeCompare = func(x, y []byte) int { n++; return orig(x, y) }
	s, _ := newTestServer(t, withReadToken)
	for _, tok := range []string{testToken, testReadToken, "wrong-token-wrong-token"} {
		n = 0
		do(t, s, "GET", "/api/v1/status", "", bearer(tok))
		if n != 2 {
			t.Errorf("token %.5s…: %d comparisons, want 2", tok, n)
		}
	}
}

func TestTokenOptions(t *testing.T) {
	fb := newFakeBackend(time.Now())
	for _, o := range []Options{
		{Backend: fb, Token: secret.New(testToken), ReadToken: secret.New(testToken)},
		{Backend: fb, ReadToken: secret.New("short")},
		{Backend: fb, ReadToken: secret.New("with a space in it, long enough")},
		{Backend: fb, AllowedHosts: []string{"https://ex.contoso.com"}},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) = nil error", o)
		} else if strings.Contains(err.Error(), testToken) {
			t.Errorf("New error shows the token: %v", err)
		}
	}
}

// TestHostHeader: a name that is not the server's (what DNS rebinding
// sends) is refused before authentication; IP literals and the
// configured names pass; probes and /metrics answer under any name.
func TestHostHeader(t *testing.T) {
	s, _ := newTestServer(t, func(o *Options) { o.AllowedHosts = []string{"EASC.contoso.com"} })
	f := func(srv *Server, host, path string, want int) {
		t.Helper()
		hdr := bearer(testToken)
		hdr["Host"] = host
		w := do(t, srv, "GET", path, "", hdr)
		if w.Code != want {
			t.Errorf("GET %s with Host %q = %d %s, want %d", path, host, w.Code, w.Body, want)
		}
		if want == 421 && !strings.Contains(jsonError(t, w), "allowed_hosts") {
			t.Errorf("421 does not say what to do: %s", w.Body)
		}
	}
	for _, p := range []string{"/", "/api/v1/status", "/api/v1/devices", "/signin"} {
		f(s, "attacker.example:8443", p, 421)
		f(s, "127.0.0.1.nip.io:8443", p, 421)
		f(s, "localhost.attacker.example", p, 421)
		f(s, "", p, 421)
	}
	for _, h := range []string{"127.0.0.1:8443", "localhost:8443", "LOCALHOST.", "[::1]:8443", "easc.contoso.com", "easc.contoso.com.:8443", "10.1.2.3:8443"} {
		f(s, h, "/api/v1/status", 200)
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		f(s, "attacker.example", p, 200)
	}
	// Listening on all interfaces: localhost is not one of its names.
	s2, _ := newTestServer(t, func(o *Options) { o.Listen = "0.0.0.0:8443" })
	f(s2, "localhost:8443", "/api/v1/status", 421)
	f(s2, "192.0.2.1:8443", "/api/v1/status", 200)
}

// TestListenLoopback: a name counts as loopback only when every address
// it resolves to is loopback; then the server binds to that address.
func TestListenLoopback(t *testing.T) {
	f := func(listen string, r hostaddr.Static, wantLoopback bool, wantBind string) {
		t.Helper()
		s, err := New(Options{Backend: newFakeBackend(time.Now()), Listen: listen, Resolver: r})
		if err != nil {
			t.Fatalf("New(%s) = %v", listen, err)
		}
		if s.listen.loopback != wantLoopback || s.listen.bind != wantBind {
			t.Errorf("Listen %s: loopback %v, bind %s; want %v, %s", listen, s.listen.loopback, s.listen.bind, wantLoopback, wantBind)
		}
		_, err = New(Options{Backend: newFakeBackend(time.Now()), Listen: listen, Resolver: r, LoopbackPublicCounts: true})
		if (err == nil) != wantLoopback {
			t.Errorf("Listen %s with LoopbackPublicCounts: %v, want an error: %v", listen, err, !wantLoopback)
		}
	}
	f("localhost:8443", hostaddr.Static{"localhost": {"127.0.0.1", "::1"}}, true, "127.0.0.1:8443")
	f("localhost:8443", hostaddr.Static{"localhost": {"203.0.113.9"}}, false, "localhost:8443")
	f("localhost:8443", hostaddr.Static{"localhost": {"127.0.0.1", "203.0.113.9"}}, false, "localhost:8443")
	f("127.0.0.2:8443", nil, true, "127.0.0.2:8443")
	f("[::1]:8443", nil, true, "[::1]:8443")
	f("0.0.0.0:8443", nil, false, "0.0.0.0:8443")
	f(":8443", nil, false, ":8443")
	f("10.0.0.5:8443", nil, false, "10.0.0.5:8443")
	if _, err := New(Options{Backend: newFakeBackend(time.Now()), Listen: "nowhere:8443", Resolver: hostaddr.Static{}}); err == nil {
		t.Error("New with a Listen name that does not resolve = nil error")
	}

	// A localhost that resolves elsewhere is not a loopback name for
	// the Host check either.
	s, _ := newTestServer(t, func(o *Options) {
		o.Listen, o.Resolver = "localhost:8443", hostaddr.Static{"localhost": {"203.0.113.9"}}
	})
	if !s.allowedHost("localhost:8443") || s.allowedHost("attacker.example") {
		t.Error("Listen's own name must pass the Host check, and only it")
	}
	s, _ = newTestServer(t, func(o *Options) { o.Listen = "10.0.0.5:8443" })
	if s.allowedHost("localhost") {
		t.Error("localhost passes the Host check of a server that does not listen on loopback")
	}
}

func TestDefaultListen(t *testing.T) {
	s, _ := newTestServer(t, nil)
	if s.opts.Listen != "127.0.0.1:8443" || !s.listen.loopback {
		t.Errorf("zero Listen = %s (loopback %v), want config's default 127.0.0.1:8443", s.opts.Listen, s.listen.loopback)
	}
}

// personal lists the fake fleet's addresses, DeviceIds and plan id.
func personal(fb *fakeBackend) []string {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	var out []string
	for _, c := range fb.changes {
		out = append(out, c.Mailbox, c.DeviceID)
	}
	for _, d := range fb.devices[:50] {
		out = append(out, d.Mailbox, d.User, d.DeviceID)
	}
	return append(out, fakePlanID, "@contoso.com", "10.0.0.12")
}

// TestStatusPagePrivacy: the status page shows personal data only with a
// token; the aggregate view is public only when configured, on loopback.
func TestStatusPagePrivacy(t *testing.T) {
	s, fb := newTestServer(t, withReadToken)
	for _, hdr := range []map[string]string{nil, bearer("wrong-token-wrong-token"), basic("wrong-token-wrong-token")} {
		w := do(t, s, "GET", "/", "", hdr)
		if w.Code != 401 || !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("GET / with %v = %d, WWW-Authenticate %q; want 401 with a Basic challenge", hdr, w.Code, w.Header().Get("WWW-Authenticate"))
		}
		for _, p := range personal(fb) {
			if strings.Contains(w.Body.String(), p) {
				t.Errorf("refused page shows %q", p)
			}
		}
	}
	for _, hdr := range []map[string]string{bearer(testReadToken), basic(testReadToken), basic(testToken)} {
		w := do(t, s, "GET", "/", "", hdr)
		if w.Code != 200 || !strings.Contains(w.Body.String(), "user0001@contoso.com") || !strings.Contains(w.Body.String(), fakePlanID) {
			t.Errorf("GET / with %v = %d, want the full page", hdr, w.Code)
		}
	}
	if w := do(t, s, "GET", "/signin", "", nil); w.Code != 401 || !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("GET /signin = %d, want a Basic challenge", w.Code)
	}
	if w := do(t, s, "GET", "/signin", "", basic(testReadToken)); w.Code != 303 || w.Header().Get("Location") != "/" {
		t.Errorf("GET /signin signed in = %d → %q, want 303 to /", w.Code, w.Header().Get("Location"))
	}

	// The public aggregate view.
	s, fb = newTestServer(t, func(o *Options) { o.LoopbackPublicCounts = true })
	w := do(t, s, "GET", "/", "", nil)
	body := w.Body.String()
	if w.Code != 200 {
		t.Fatalf("public GET / = %d", w.Code)
	}
	for _, p := range append(personal(fb), "guard: 812", "sessions run on ex01", "connection refused", `id="token"`, "data-post", "Authorization", `action="/device"`) {
		if strings.Contains(body, p) {
			t.Errorf("public page shows %q", p)
		}
	}
	for _, want := range []string{`id="connector-status">degraded<`, `id="plan-new-blocks">812<`, "ex01.contoso.local", `href="/signin"`, `data-decision="Allow"`} {
		if !strings.Contains(body, want) {
			t.Errorf("public page lacks %q", want)
		}
	}
	// Free text must not have been blanked in the Backend's own data.
	fb.mu.Lock()
	if fb.status.Servers[1].LastError == "" || fb.status.LastQuick.Error == "" || fb.status.HeldPlan.ID == "" {
		t.Error("the public view changed the Backend's values")
	}
	fb.mu.Unlock()
	// A token still gets everything.
	if body := do(t, s, "GET", "/", "", bearer(testToken)).Body.String(); !regexp.MustCompile(`user0001@contoso\.com`).MatchString(body) {
		t.Error("page with a token lacks the changes")
	}
	// Not on a non-loopback listener.
	if _, err := New(Options{Backend: fb, Listen: "0.0.0.0:8443", Token: secret.New(testToken), LoopbackPublicCounts: true}); err == nil {
		t.Error("LoopbackPublicCounts accepted on 0.0.0.0")
	}
}

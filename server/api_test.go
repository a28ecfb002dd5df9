package server

import (
	"slices"

	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/easconnector/easconnector/internal/humanize"
	"github.com/easconnector/easconnector/pipeline"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/internal/secret"
)

const (
	testToken     = "s3cret-admin-token-0123456789"
	testReadToken = "s3cret-read-token-9876543210"
)

func newTestServer(t *testing.T, tune func(*Options)) (*Server, *fakeBackend) {
	t.Helper()
	fb := newFakeBackend(time.Now())
	o := Options{Backend: fb, Token: secret.New(testToken), Version: "1.2.3-test", Location: time.UTC}
	if tune != nil {
		tune(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	return s, fb
}

// do runs one request against the handler.
func do(t *testing.T, s *Server, method, target, body string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, r)
	req.Host = "127.0.0.1:8443"
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	return w
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// jsonError returns the error of a JSON error answer, failing otherwise.
func jsonError(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q, want JSON", ct)
	}
	var e errorBody
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
		t.Fatalf("body %q is not a JSON error: %v", w.Body.String(), err)
	}
	return e.Error
}

func TestAuth(t *testing.T) {
	endpoints := []struct{ path, body string }{
		{"/api/v1/syncs", `{"kind":"quick"}`},
		{"/api/v1/plans/" + fakePlanID + "/approve", ""},
	}
	f := func(name string, token string, hdr map[string]string, wantCode int, wantErr, wantAuthenticate string) {
		for _, ep := range endpoints {
			t.Run(name+ep.path, func(t *testing.T) {
				s, fb := newTestServer(t, func(o *Options) { o.Token = secret.New(token) })
				w := do(t, s, "POST", ep.path, ep.body, hdr)
				if w.Code != wantCode {
					t.Fatalf("POST %s = %d %s, want %d", ep.path, w.Code, w.Body, wantCode)
				}
				if wantCode >= 400 {
					if e := jsonError(t, w); !strings.Contains(e, wantErr) {
						t.Errorf("error = %q, want mention of %q", e, wantErr)
					}
					if len(fb.triggered()) != 0 || len(fb.approved) != 0 {
						t.Error("backend called despite failed authorization")
					}
				}
				if got := w.Header().Get("WWW-Authenticate"); got != wantAuthenticate {
					t.Errorf("WWW-Authenticate = %q, want %q", got, wantAuthenticate)
				}
			})
		}
	}
	f("disabled", "", bearer(testToken), 403, "disabled", "")
	f("missing", testToken, nil, 401, "missing bearer token", `Bearer realm="easconnector"`)
	f("basic", testToken, map[string]string{"Authorization": "Basic YWRtaW46YWRtaW4="}, 401, "missing bearer token", `Bearer realm="easconnector"`)
	f("empty", testToken, map[string]string{"Authorization": "Bearer "}, 401, "missing bearer token", `Bearer realm="easconnector"`)
	f("wrong", testToken, bearer("s3cret-admin-token-0123456780"), 401, "invalid token", `Bearer realm="easconnector", error="invalid_token"`)
	f("prefix", testToken, bearer(testToken[:20]), 401, "invalid token", `Bearer realm="easconnector", error="invalid_token"`)
	f("right", testToken, bearer(testToken), 202, "", "")
	f("lower-case scheme", testToken, map[string]string{"Authorization": "bearer " + testToken}, 202, "", "")
}

// TestConstantTimeCompareDecides: the token check goes through
// constantTimeCompare, over fixed-length digests, and its verdict is final.
func TestConstantTimeCompareDecides(t *testing.T) {
	orig := constantTimeCompare
	t.Cleanup(func() { constantTimeCompare = orig })
	var lens [][2]int
	constantTimeCompare = func(x, y []byte) int {
		lens = append(lens, [2]int{len(x), len(y)})
		return orig(x, y)
	}
	s, _ := newTestServer(t, nil)
	for _, tok := range []string{testToken, "short-but-wrong", strings.Repeat("x", 300)} {
		do(t, s, "POST", "/api/v1/syncs", `{"kind":"quick"}`, bearer(tok))
	}
	if len(lens) != 3 {
		t.Fatalf("constantTimeCompare called %d times for 3 requests, want 3", len(lens))
	}
	for _, l := range lens {
		if l != [2]int{32, 32} {
			t.Errorf("compared %d with %d bytes, want two SHA-256 digests", l[0], l[1])
		}
	}
	constantTimeCompare = func(x, y []byte) int { return 1 }
	if w := do(t, s, "POST", "/api/v1/syncs", `{"kind":"quick"}`, bearer("wrong-token")); w.Code != 202 {
		t.Errorf("with a compare that accepts all: %d, want 202 (the compare must decide)", w.Code)
	}
}

func TestValidation(t *testing.T) {
	s, fb := newTestServer(t, nil)
	f := func(method, target, body string, hdr map[string]string, wantCode int, want ...string) {
		t.Helper()
		if hdr == nil {
			hdr = bearer(testToken)
		}
		w := do(t, s, method, target, body, hdr)
		if w.Code != wantCode {
			t.Errorf("%s %s = %d %s, want %d", method, target, w.Code, w.Body, wantCode)
			return
		}
		e := jsonError(t, w)
		for _, s := range want {
			if !strings.Contains(e, s) {
				t.Errorf("%s %s: error %q does not mention %q", method, target, e, s)
			}
		}
	}
	f("GET", "/api/v1/devices?limit=0", "", nil, 400, "limit", "between 1 and 1000")
	f("GET", "/api/v1/devices?limit=1001", "", nil, 400, "limit", "1001")
	f("GET", "/api/v1/devices?limit=ten", "", nil, 400, "limit", `"ten"`)
	f("GET", "/api/v1/devices?limit=", "", nil, 400, "limit", "empty")
	f("GET", "/api/v1/devices?offset=-1", "", nil, 400, "offset")
	f("GET", "/api/v1/devices?decision=Maybe", "", nil, 400, "decision", `"Maybe"`, "Allow, Block, Default")
	f("GET", "/api/v1/devices?reason=Bogus", "", nil, 400, "reason", "NotCompliant")
	f("GET", "/api/v1/devices?user=a%0Ab@example.com", "", nil, 400, "user")
	f("GET", "/api/v1/devices?user="+strings.Repeat("a", 321), "", nil, 400, "user")
	f("GET", "/api/v1/devices?decison=Block", "", nil, 400, `"decison"`, "decision, reason, user, offset, limit")
	f("GET", "/api/v1/devices?decision=Allow&decision=Block", "", nil, 400, "decision given 2 times")
	f("GET", "/api/v1/devices?%zz", "", nil, 400, "query string")
	f("GET", "/api/v1/status?verbose=1", "", nil, 400, `"verbose"`)
	f("GET", "/api/v1/syncs?limit=5000", "", nil, 400, "limit")
	f("POST", "/api/v1/syncs", `{"kind":"delta"}`, nil, 400, "kind", `"delta"`)
	f("POST", "/api/v1/syncs", `{"kind":"quick","force":true}`, nil, 400, `unknown field "force"`)
	f("POST", "/api/v1/syncs", ``, nil, 400, "body", "empty")
	f("POST", "/api/v1/syncs", `{"kind":`, nil, 400, "body")
	f("POST", "/api/v1/syncs", `{"kind":"quick"}{"kind":"full"}`, nil, 400, "more than one")
	f("POST", "/api/v1/syncs", `kind=quick`, map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "application/x-www-form-urlencoded"}, 400, "body", `want a JSON object such as {"kind":"quick"}`)
	f("POST", "/api/v1/syncs", `{"kind":"quick"}`, map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "multipart/form-data; boundary=x"}, 415, "Content-Type", `{"kind":"quick"}`, "application/json")
	f("GET", "/api/v1/plans/has%20space", "", nil, 400, "plan id")
	f("GET", "/api/v1/plans/"+strings.Repeat("p", 129), "", nil, 400, "plan id")
	f("GET", "/api/v1/plans/unknown-plan", "", nil, 404, "unknown-plan", "not found")
	f("GET", "/nope", "", nil, 404, "/nope")
	if len(fb.queries) != 0 || len(fb.triggered()) != 0 {
		t.Errorf("backend called for invalid requests: %d queries, %d triggers", len(fb.queries), len(fb.triggered()))
	}
}

func TestMethodNotAllowed(t *testing.T) {
	s, _ := newTestServer(t, nil)
	f := func(method, path, wantAllow string) {
		t.Helper()
		w := do(t, s, method, path, "", bearer(testToken))
		if w.Code != 405 || w.Header().Get("Allow") != wantAllow {
			t.Errorf("%s %s = %d, Allow %q; want 405, %q", method, path, w.Code, w.Header().Get("Allow"), wantAllow)
			return
		}
		if e := jsonError(t, w); !strings.Contains(e, method) || !strings.Contains(e, wantAllow) {
			t.Errorf("error %q does not name the method and the allowed ones", e)
		}
	}
	f("DELETE", "/api/v1/status", "GET, HEAD")
	f("POST", "/api/v1/devices", "GET, HEAD")
	f("PUT", "/api/v1/syncs", "GET, HEAD, POST")
	f("GET", "/api/v1/plans/"+fakePlanID+"/approve", "POST")
	f("POST", "/api/v1/plans/"+fakePlanID, "GET, HEAD")
	f("POST", "/metrics", "GET, HEAD")
	f("POST", "/", "GET, HEAD")
	if w := do(t, s, "HEAD", "/api/v1/status", "", bearer(testToken)); w.Code != 200 {
		t.Errorf("HEAD /api/v1/status = %d, want 200", w.Code)
	}
}

func TestBodyLimit(t *testing.T) {
	s, fb := newTestServer(t, nil)
	big := `{"kind":"quick","pad":"` + strings.Repeat("a", MaxBodyBytes) + `"}`
	for _, path := range []string{"/api/v1/syncs", "/api/v1/plans/" + fakePlanID + "/approve"} {
		w := do(t, s, "POST", path, big, bearer(testToken))
		if w.Code != http.StatusRequestEntityTooLarge {
			t.Errorf("POST %s with %d bytes = %d %s, want 413", path, len(big), w.Code, w.Body)
			continue
		}
		if e := jsonError(t, w); !strings.Contains(e, "65536") {
			t.Errorf("error %q does not state the limit", e)
		}
	}
	if len(fb.triggered()) != 0 || len(fb.approved) != 0 {
		t.Error("backend called for an oversized request")
	}
}

func TestTriggerSync(t *testing.T) {
	s, fb := newTestServer(t, nil)
	var first, second TriggerResponse
	for i, r := range []*TriggerResponse{&first, &second} {
		body := []string{`{"kind":"quick"}`, `{"kind":"FULL"}`}[i]
		w := do(t, s, "POST", "/api/v1/syncs", body, map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "application/json"})
		if w.Code != 202 {
			t.Fatalf("POST /api/v1/syncs %s = %d %s, want 202", body, w.Code, w.Body)
		}
		if err := json.Unmarshal(w.Body.Bytes(), r); err != nil {
			t.Fatal(err)
		}
	}
	if first.ID == "" || first.Coalesced || second.ID != first.ID || !second.Coalesced {
		t.Errorf("responses = %+v, %+v; want a new id, then the same id coalesced", first, second)
	}
	if got := strings.Join(fb.triggered(), ","); got != "quick,full" {
		t.Errorf("backend triggered %q, want quick,full", got)
	}
	// What `curl -d '{"kind":"quick"}'` sends (form-urlencoded), and a
	// client that says text/plain, are read as JSON too.
	for _, ct := range []string{"application/x-www-form-urlencoded", "text/plain; charset=utf-8"} {
		w := do(t, s, "POST", "/api/v1/syncs", `{"kind":"quick"}`, map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": ct})
		if w.Code != 202 {
			t.Errorf("POST /api/v1/syncs as %s = %d %s, want 202", ct, w.Code, w.Body)
		}
	}
}

func TestDevicesPagination(t *testing.T) {
	s, fb := newTestServer(t, nil)
	want := fb.match(DeviceQuery{Decision: "Block"})
	var got []DeviceRow
	next := "/api/v1/devices?decision=block&limit=150"
	pages := 0
	for next != "" {
		w := do(t, s, "GET", next, "", bearer(testToken))
		if w.Code != 200 {
			t.Fatalf("GET %s = %d %s", next, w.Code, w.Body)
		}
		var p DevicePage
		if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
			t.Fatal(err)
		}
		if p.Total != len(want) || p.Limit != 150 || p.Offset != len(got) {
			t.Fatalf("page %d: total %d, limit %d, offset %d; want %d, 150, %d", pages, p.Total, p.Limit, p.Offset, len(want), len(got))
		}
		got = append(got, p.Devices...)
		next = p.Next
		pages++
	}
	if pages != (len(want)+149)/150 || len(got) != len(want) {
		t.Fatalf("%d pages, %d devices; want %d pages, %d devices", pages, len(got), (len(want)+149)/150, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("device %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if q := fb.queries[0]; q.Decision != "Block" {
		t.Errorf("backend got decision %q, want the canonical \"Block\"", q.Decision)
	}
	w := do(t, s, "GET", "/api/v1/devices?user=USER0001@contoso.com&reason=notcompliant", "", bearer(testToken))
	var p DevicePage
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || w.Code != 200 {
		t.Fatalf("GET by user = %d %s", w.Code, w.Body)
	}
	if p.Total != 1 || p.Devices[0].Mailbox != "user0001@contoso.com" || p.Devices[0].Reason != "NotCompliant" || p.Next != "" {
		t.Errorf("by user and reason: %+v", p)
	}
	w = do(t, s, "GET", "/api/v1/devices?offset=5000", "", bearer(testToken))
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Devices == nil || len(p.Devices) != 0 || p.Next != "" || p.Limit != DefaultDeviceLimit {
		t.Errorf("past the end: %s, want an empty list, default limit, no next", w.Body)
	}
}

func TestStatusAndPlans(t *testing.T) {
	s, fb := newTestServer(t, nil)
	w := do(t, s, "GET", "/api/v1/status", "", bearer(testToken))
	var st Status
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil || w.Code != 200 {
		t.Fatalf("GET /api/v1/status = %d %s", w.Code, w.Body)
	}
	if st.Version != "1.2.3-test" || st.Status != StatusDegraded || len(st.Servers) != 2 || st.LastFull.Counts["Block"] != 500 ||
		st.HeldPlan.NewBlocks != 812 || st.NextFull.IsZero() {
		t.Errorf("status = %+v", st)
	}

	w = do(t, s, "GET", "/api/v1/plans/"+fakePlanID, "", bearer(testToken))
	var p HeldPlan
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || w.Code != 200 || p.ID != fakePlanID || len(p.Changes) != 812 || p.NewBlocks != 812 {
		t.Fatalf("GET plan = %d, id %q, %d changes", w.Code, p.ID, len(p.Changes))
	}
	w = do(t, s, "POST", "/api/v1/plans/"+fakePlanID+"/approve", "", bearer(testToken))
	var a ApproveResponse
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil || w.Code != 202 || a.SyncID == "" {
		t.Fatalf("approve = %d %s", w.Code, w.Body)
	}
	w = do(t, s, "POST", "/api/v1/plans/"+fakePlanID+"/approve", "", bearer(testToken))
	if w.Code != 409 || !strings.Contains(jsonError(t, w), "approved already") {
		t.Errorf("second approve = %d %s, want 409", w.Code, w.Body)
	}
	w = do(t, s, "POST", "/api/v1/plans/nope/approve", "", bearer(testToken))
	if w.Code != 404 {
		t.Errorf("approve unknown = %d, want 404", w.Code)
	}
	if !fb.approved[fakePlanID] {
		t.Error("backend did not see the approval")
	}

	w = do(t, s, "GET", "/api/v1/syncs?limit=2", "", bearer(testToken))
	var syncs struct{ Syncs []SyncResult }
	if err := json.Unmarshal(w.Body.Bytes(), &syncs); err != nil || len(syncs.Syncs) != 2 || syncs.Syncs[0].Result != ResultHeld {
		t.Errorf("GET /api/v1/syncs?limit=2 = %d %s", w.Code, w.Body)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	s, fb := newTestServer(t, nil)
	if w := do(t, s, "GET", "/healthz", "", nil); w.Code != 200 {
		t.Errorf("GET /healthz = %d", w.Code)
	}
	if w := do(t, s, "GET", "/readyz", "", nil); w.Code != 200 {
		t.Errorf("GET /readyz = %d", w.Code)
	}
	fb.mu.Lock()
	fb.readyErr = errors.New("state file unreadable: permission denied")
	fb.mu.Unlock()
	w := do(t, s, "GET", "/readyz", "", nil)
	if w.Code != 503 || !strings.Contains(jsonError(t, w), "permission denied") {
		t.Errorf("GET /readyz = %d %s, want 503 with the reason", w.Code, w.Body)
	}
	if w := do(t, s, "GET", "/healthz", "", nil); w.Code != 200 {
		t.Errorf("GET /healthz while not ready = %d, want 200 (alive)", w.Code)
	}
}

func TestStatusPage(t *testing.T) {
	s, _ := newTestServer(t, nil)
	w := do(t, s, "GET", "/", "", bearer(testToken))
	if w.Code != 200 || w.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET / = %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	csp := w.Header().Get("Content-Security-Policy")
	m := regexp.MustCompile(`script-src 'nonce-([A-Za-z0-9_-]+)'`).FindStringSubmatch(csp)
	if m == nil || !strings.Contains(csp, "default-src 'none'") {
		t.Fatalf("Content-Security-Policy = %q", csp)
	}
	body := w.Body.String()
	if !strings.Contains(body, `<script nonce="`+m[1]+`">`) || !strings.Contains(body, `<style nonce="`+m[1]+`">`) {
		t.Error("inline script and style do not carry the CSP nonce")
	}
	if regexp.MustCompile(`(?i)(src|href)="https?:`).MatchString(body) || strings.Contains(body, " style=\"") {
		t.Error("page loads external assets or uses style attributes (blocked by the CSP)")
	}
	for _, want := range []string{">degraded<", "ex02.contoso.local unreachable", `data-decision="Block"`, `data-count="500"`, "1,500 (60.0%)",
		`id="plan-new-blocks">812<`, "ex01.contoso.local", "<strong>allowed, was blocked</strong>", `id="sync-quick"`, "1.2.3-test",
		`<strong class="server-name">EX01</strong><span class="detail mono">ex01.contoso.local</span>`, "Default (Quarantine)", `data-state="Quarantined"`, `data-after="Neither"`, "neither list (Quarantine)",
		`href="/glossary"`, `action="/device"`, `id="trend-duration"`, `id="trend-lag"`, "p95 1 min 58 s over 40 devices", "(took 4 min 12 s)"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if h := w.Header(); h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" || h.Get("Cache-Control") != "no-store" {
		t.Errorf("security headers = %v", h)
	}

	// Without an admin token the buttons are gone and the page says why.
	s2, _ := newTestServer(t, func(o *Options) { o.Token, o.ReadToken = secret.String{}, secret.New(testReadToken) })
	body = do(t, s2, "GET", "/", "", bearer(testReadToken)).Body.String()
	if strings.Contains(body, `id="sync-quick"`) || strings.Contains(body, "Authorization") || !strings.Contains(body, "no admin token is configured") {
		t.Error("page without a token still offers actions")
	}
}

// TestStatusPageEscapes: strings from Exchange and devices are escaped.
func TestStatusPageEscapes(t *testing.T) {
	s, fb := newTestServer(t, nil)
	fb.mu.Lock()
	fb.changes[0].DeviceID = `<img src=x onerror=alert(1)>`
	fb.status.Servers[1].LastError = `</td><script>alert(1)</script>`
	fb.mu.Unlock()
	body := do(t, s, "GET", "/", "", bearer(testToken)).Body.String()
	if strings.Contains(body, "<img src=x") || strings.Contains(body, "<script>alert") {
		t.Error("hostile strings reach the page unescaped")
	}
}

func TestOptionsValidation(t *testing.T) {
	fb := newFakeBackend(time.Now())
	f := func(o Options, want string) {
		t.Helper()
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(%+v) error = %v, want mention of %q", o, err, want)
		}
	}
	f(Options{}, "Backend")
	f(Options{Backend: fb, Token: secret.New("short")}, "Token")
	f(Options{Backend: fb, Token: secret.New("has space in the token")}, "Token")
	f(Options{Backend: fb, TLSCert: "cert.pem"}, "TLSKey")
	f(Options{Backend: fb, TLSCert: "/nonexistent/cert.pem", TLSKey: "/nonexistent/key.pem"}, "/nonexistent/cert.pem")
	f(Options{Backend: fb, Listen: "8780"}, "Listen")
	s, err := New(Options{Backend: fb})
	if err != nil {
		t.Fatal(err)
	}
	hs := s.httpServer()
	if s.opts.Listen != DefaultListen || hs.ReadHeaderTimeout == 0 || hs.ReadTimeout == 0 || hs.WriteTimeout == 0 || hs.IdleTimeout == 0 || hs.MaxHeaderBytes == 0 {
		t.Errorf("defaults: listen %q, timeouts %v %v %v %v", s.opts.Listen, hs.ReadHeaderTimeout, hs.ReadTimeout, hs.WriteTimeout, hs.IdleTimeout)
	}
}

// serve starts s on a loopback listener and returns its base URL; the
// server stops at cleanup, and the test checks that Serve returned nil.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve() = %v, want nil after shutdown", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	scheme := "http"
	if s.opts.TLSCert != "" {
		scheme = "https"
	}
	return scheme + "://" + ln.Addr().String()
}

func TestServeAndShutdown(t *testing.T) {
	s, _ := newTestServer(t, nil)
	base := serve(t, s)
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /healthz = %d", resp.StatusCode)
	}
}

func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "easconnector"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	s, _ := newTestServer(t, func(o *Options) { o.TLSCert, o.TLSKey = certFile, keyFile })
	base := serve(t, s)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest("GET", base+"/api/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Errorf("GET over TLS = %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{
		45 * time.Second: "45 s", 4*time.Minute + 12*time.Second: "4 min 12 s", 2 * time.Minute: "2 min", 12*time.Minute + 5*time.Second: "12 min",
		3*time.Hour + 20*time.Minute: "3 h 20 min", 52 * time.Hour: "2 d 4 h",
	} {
		if got := humanize.Long(d); got != want {
			t.Errorf("humanize.Long(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -4200: "-4,200"} {
		if got := humanize.Num(n); got != want {
			t.Errorf("humanize.Num(%d) = %q, want %q", n, got, want)
		}
	}
}

func ExampleServer_Handler() {
	s, err := New(Options{Backend: newFakeBackend(time.Now()), ReadToken: secret.New(testReadToken)})
	if err != nil {
		panic(err)
	}
	for _, method := range []string{"GET", "POST"} {
		req := httptest.NewRequest(method, "http://127.0.0.1:8443/api/v1/syncs?limit=1", strings.NewReader(`{"kind":"full"}`))
		req.Header.Set("Authorization", "Bearer "+testReadToken)
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, req)
		fmt.Println(method, w.Code)
	}
	// Output:
	// GET 200
	// POST 403
}

// TestDefaultReasonsMatchPipeline: the devices filter's default reasons are
// the engine's (the daemon passes pipeline.Reasons; a library user relying
// on the default must not be refused a reason the engine reports).
func TestDefaultReasonsMatchPipeline(t *testing.T) {
	want := make([]string, len(pipeline.Reasons))
	for i, r := range pipeline.Reasons {
		want[i] = string(r)
	}
	if !slices.Equal(DefaultReasons, want) {
		t.Errorf("DefaultReasons = %v, want pipeline.Reasons %v", DefaultReasons, want)
	}
}

package server

import (
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/internal/secret"
)

// FuzzAPI sends arbitrary queries and bodies to the API: every answer is
// JSON, no input causes a 5xx, and the Backend only ever sees validated
// values.
func FuzzAPI(f *testing.F) {
	f.Add(uint8(0), "decision=block&limit=10&offset=20", "")
	f.Add(uint8(0), "user=a%0Ab&limit=1001", "")
	f.Add(uint8(1), "", `{"kind":"full"}`)
	f.Add(uint8(1), "", `{"kind":"quick","x":1}`)
	f.Add(uint8(2), "", "")
	f.Add(uint8(0), "reason=NotCompliant&reason=Stale", "")
	fb := newFakeBackend(time.Now())
	s, err := New(Options{Backend: fb, Token: secret.New(testToken)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, which uint8, rawQuery, body string) {
		var method, path string
		switch which % 3 {
		case 0:
			method, path = "GET", "/api/v1/devices"
		case 1:
			method, path = "POST", "/api/v1/syncs"
		default:
			method, path = "GET", "/api/v1/syncs"
		}
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.URL.RawQuery = rawQuery
		req.Header.Set("Authorization", "Bearer "+testToken)
		w := httptest.NewRecorder()
		fb.mu.Lock()
		fb.queries, fb.kinds, fb.pending = nil, nil, ""
		fb.mu.Unlock()
		s.Handler().ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s?%s %q = %d %s", method, path, rawQuery, body, w.Code, w.Body)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("answer is not JSON: %q", w.Body)
		}
		fb.mu.Lock()
		defer fb.mu.Unlock()
		for _, q := range fb.queries {
			if q.Limit < 1 || q.Limit > MaxLimit || q.Offset < 0 || len(q.User) > maxUserLength ||
				(q.Decision != "" && !contains(DefaultDecisions, q.Decision)) || (q.Reason != "" && !contains(DefaultReasons, q.Reason)) {
				t.Fatalf("backend got an unvalidated query %+v from %q", q, rawQuery)
			}
		}
		for _, k := range fb.kinds {
			if k != "quick" && k != "full" {
				t.Fatalf("backend got kind %q from %q", k, body)
			}
		}
	})
}

// FuzzAuth sends arbitrary Authorization and Host headers: no input
// causes a 5xx or a panic, the admin role needs the admin token and the
// read-only role the read-only token, and a refused request never reaches
// the Backend.
func FuzzAuth(f *testing.F) {
	f.Add("Bearer "+testToken, "127.0.0.1:8443", false)
	f.Add("Basic "+base64.StdEncoding.EncodeToString([]byte("x:"+testReadToken)), "localhost", true)
	f.Add("Basic !!!", "[::1", false)
	f.Add("bearer  "+testReadToken+" ", "LOCALHOST.:1", true)
	f.Add("Bearer "+testToken[:10], "attacker.example", false)
	f.Add("Basic "+base64.StdEncoding.EncodeToString([]byte(testToken)), "[fe80::1%25eth0]:8443", false)
	fb := newFakeBackend(time.Now())
	s, err := New(Options{Backend: fb, Token: secret.New(testToken), ReadToken: secret.New(testReadToken)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, auth, host string, post bool) {
		req := httptest.NewRequest("GET", "/api/v1/status", nil)
		if post {
			req = httptest.NewRequest("POST", "/api/v1/syncs", strings.NewReader(`{"kind":"quick"}`))
		}
		req.Header.Set("Authorization", auth)
		req.Host = host
		rl, _ := s.authenticate(req, !post)
		bearerTok, basicPw := "", ""
		if sch, rest, ok := strings.Cut(auth, " "); ok && strings.EqualFold(sch, "Bearer") {
			bearerTok = strings.TrimSpace(rest)
		}
		if _, pw, ok := req.BasicAuth(); ok {
			basicPw = pw
		}
		switch rl {
		case roleAdmin:
			if bearerTok != testToken && basicPw != testToken {
				t.Fatalf("admin role from %q", auth)
			}
		case roleRead:
			if bearerTok != testReadToken && basicPw != testReadToken {
				t.Fatalf("read role from %q", auth)
			}
		}
		fb.mu.Lock()
		fb.kinds = nil
		fb.mu.Unlock()
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, req)
		if w.Code >= 500 || !json.Valid(w.Body.Bytes()) {
			t.Fatalf("Authorization %q, Host %q = %d %q", auth, host, w.Code, w.Body)
		}
		fb.mu.Lock()
		defer fb.mu.Unlock()
		if len(fb.kinds) > 0 && (w.Code != 202 || bearerTok != testToken || !s.allowedHost(host)) {
			t.Fatalf("sync triggered by Authorization %q, Host %q (%d)", auth, host, w.Code)
		}
	})
}

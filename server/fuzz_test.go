package server

import (
	"encoding/json"
	"github.com/easconnector/easconnector/internal/secret"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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

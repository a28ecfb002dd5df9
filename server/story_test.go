package server

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/easconnector/easconnector/internal/secret"
)

func TestDeviceStoryAPI(t *testing.T) {
	s, _ := newTestServer(t, func(o *Options) { o.ReadToken = secret.New(testReadToken) })
	w := do(t, s, "GET", "/api/v1/device?q=appl00000002", "", bearer(testReadToken))
	if w.Code != 200 {
		t.Fatalf("GET /api/v1/device = %d %s", w.Code, w.Body.String())
	}
	var got struct {
		Query   string        `json:"query"`
		Devices []DeviceStory `json:"devices"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Devices) != 1 || got.Devices[0].DeviceID != "Appl00000002" || len(got.Devices[0].Writes) != 1 ||
		got.Devices[0].LastWrittenTo != PlaceAllowed || len(got.Devices[0].Notices) != 1 {
		t.Errorf("story = %+v", got)
	}
	for _, tc := range []struct {
		target string
		hdr    map[string]string
		code   int
	}{
		{"/api/v1/device?q=user0001@contoso.com", nil, 401},
		{"/api/v1/device", bearer(testReadToken), 400},
		{"/api/v1/device?q=", bearer(testReadToken), 400},
		{"/api/v1/device?q=%01x", bearer(testReadToken), 400},
		{"/api/v1/device?q=a&user=b", bearer(testReadToken), 400},
		{"/api/v1/device?q=nobody@contoso.com", bearer(testReadToken), 200},
	} {
		if w := do(t, s, "GET", tc.target, "", tc.hdr); w.Code != tc.code {
			t.Errorf("GET %s = %d, want %d: %s", tc.target, w.Code, tc.code, w.Body.String())
		}
	}
}

func TestDevicePage(t *testing.T) {
	s, _ := newTestServer(t, func(o *Options) { o.ReadToken = secret.New(testReadToken) })
	if w := do(t, s, "GET", "/device?q=user0001@contoso.com", "", nil); w.Code != 401 {
		t.Errorf("GET /device without a token = %d, want 401", w.Code)
	}
	w := do(t, s, "GET", "/device?q=user0001@contoso.com", "", basic(testReadToken))
	body := w.Body.String()
	if w.Code != 200 {
		t.Fatalf("GET /device = %d", w.Code)
	}
	// user0001 has Appl00000002 (Block, noncompliant) and Appl00000003
	// (Default, not enrolled).
	for _, want := range []string{`data-device="Appl00000002"`, `data-device="Appl00000003"`, "<strong>Default (Quarantine)</strong>",
		`href="/glossary#NotCompliant"`, "blocked notice", "allowed, was blocked", "in ActiveSyncAllowedDeviceIDs (the connector's last write)",
		"not enrolled (no MDM record with this EAS id)", `value="user0001@contoso.com"`} {
		if !strings.Contains(body, want) {
			t.Errorf("device page lacks %q", want)
		}
	}
	if body := do(t, s, "GET", "/device?q=nobody", "", basic(testReadToken)).Body.String(); !strings.Contains(body, `id="no-match"`) {
		t.Error("device page without a match does not say so")
	}
	if w := do(t, s, "GET", "/device?q=%01", "", basic(testReadToken)); w.Code != 400 || !strings.Contains(w.Body.String(), `id="search-error"`) {
		t.Errorf("GET /device?q=%%01 = %d, want 400 with the error on the page", w.Code)
	}
	if w := do(t, s, "GET", "/device", "", basic(testReadToken)); w.Code != 200 || strings.Contains(w.Body.String(), `id="no-match"`) {
		t.Errorf("GET /device = %d, want the empty search form", w.Code)
	}
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestServes runs graphsim, takes a token with the client secret, reads a
// page of managedDevices, switches an outage on and off through the control
// API, churns the fleet, and stops it.
func TestServes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-control", "127.0.0.1:0", "-devices", "50", "-client-secret", "s3cret"}, &out, io.Discard)
	}()
	reGraph := regexp.MustCompile(`Graph (http://\S+)/v1.0/deviceManagement/managedDevices`)
	reCtl := regexp.MustCompile(`control API (http://\S+)/v1/status`)
	var base, ctl string
	for deadline := time.Now().Add(20 * time.Second); ctl == ""; {
		if m := reCtl.FindStringSubmatch(out.String()); m != nil {
			ctl, base = m[1], reGraph.FindStringSubmatch(out.String())[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s", err, out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no control address printed:\n%s", out.String())
		}
	}
	tokenURL := regexp.MustCompile(`token endpoint (\S+) `).FindStringSubmatch(out.String())[1]
	tok := func(secret string) (int, string) {
		resp, err := http.PostForm(tokenURL, url.Values{"grant_type": {"client_credentials"}, "client_id": {"0b5e9d4a-7c21-4f3e-8a6b-1d2c3e4f5a6b"},
			"client_secret": {secret}, "scope": {"https://graph.microsoft.com/.default"}})
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var v struct {
			AccessToken string `json:"access_token"`
		}
		json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v.AccessToken
	}
	if code, _ := tok("wrong"); code != http.StatusUnauthorized && code != http.StatusBadRequest {
		t.Errorf("token with a wrong secret: status %d, want 400 or 401", code)
	}
	code, token := tok("s3cret")
	if code != http.StatusOK || token == "" {
		t.Fatalf("token: status %d", code)
	}
	page := func() (int, int) {
		req, _ := http.NewRequest("GET", base+"/v1.0/deviceManagement/managedDevices?$select=id,easDeviceId,complianceState", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, 0 // an outage resets the connection
		}
		defer resp.Body.Close()
		var v struct {
			Value []json.RawMessage `json:"value"`
		}
		json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, len(v.Value)
	}
	if code, n := page(); code != http.StatusOK || n < 30 {
		t.Fatalf("managedDevices: status %d, %d records; want 200 and most of 50 devices", code, n)
	}
	ctlDo := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, ctl+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := ctlDo("PUT", "/v1/faults", `{"outage":true}`); code != http.StatusOK {
		t.Fatalf("PUT /v1/faults: %d %s", code, body)
	}
	if code, _ := page(); code != 0 {
		t.Errorf("managedDevices during an outage: status %d, want a reset connection", code)
	}
	ctlDo("PUT", "/v1/faults", `{}`)
	if code, _ := page(); code != http.StatusOK {
		t.Errorf("managedDevices after the outage: status %d", code)
	}
	if code, body := ctlDo("POST", "/v1/churn", `{"fraction":0.1,"step":"1m"}`); code != http.StatusOK || !strings.Contains(body, `"Kind":"compliance-flip"`) {
		t.Errorf("POST /v1/churn: %d %s", code, body)
	}
	if code, body := ctlDo("POST", "/v1/changes", `{"remove":["no-such-record"]}`); code != http.StatusBadRequest || !strings.Contains(body, "no-such-record") {
		t.Errorf("removing an unknown record: %d %s, want 400 naming it", code, body)
	}
	if code, body := ctlDo("PUT", "/v1/faults", `{"errorRate":2}`); code != http.StatusBadRequest || !strings.Contains(body, "errorRate") {
		t.Errorf("a bad fault: %d %s, want 400 naming errorRate", code, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not stop")
	}
}

func TestFlags(t *testing.T) {
	if _, err := parseFlags([]string{"--help"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help = %v, want flag.ErrHelp (exit 0)", err)
	}
	t.Setenv("GRAPHSIM_CLIENT_SECRET", "")
	for _, args := range [][]string{
		{},
		{"-client-secret", "x", "-listen", "0.0.0.0:1"},
		{"-client-secret", "x", "-control", "10.0.0.1:1"},
		{"-client-secret", "x", "-devices", "-1"},
		{"-client-secret", "x", "-page-size", "5000"},
		{"-client-secret", "x", "-now", "yesterday"},
		{"-client-secret", "x", "extra"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) succeeded", args)
		}
	}
}

package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
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

func TestRunServesAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-port", "0", "-control", "127.0.0.1:0", "-devices", "20", "-profile", "zero", "-listeners", "2", "-quiet"}, &out, &errOut)
	}()
	re := regexp.MustCompile(`control API (http://\S+)/v1/status`)
	var base string
	deadline := time.Now().Add(20 * time.Second)
	for base == "" {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			base = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s%s", err, out.String(), errOut.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no control address printed:\n%s", out.String())
		}
	}
	for _, want := range []string{"CAS01 WS-Management http://127.0.0.1:", "CAS02 WS-Management http://127.0.0.2:", "credentials svc-easconnector / "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	resp, err := http.Get(base + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var st struct {
		Devices   int `json:"devices"`
		Listeners []struct {
			Up bool `json:"up"`
		} `json:"listeners"`
	}
	if err := json.Unmarshal(body, &st); err != nil || st.Devices != 20 || len(st.Listeners) != 2 || !st.Listeners[1].Up {
		t.Fatalf("status %s: %v", body, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not stop after cancel")
	}
}

func TestFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-control", "0.0.0.0:8990"},
		{"-control", "nohostport"},
		{"-devices", "-5"},
		{"-ca-out", "/tmp/x.pem"},
		{"-max-concurrency", "0"},
		{"-password", ""},
		{"extra"},
		{"-profile", "warp", "-port", "0", "-control", "127.0.0.1:0"},
		{"-listeners", "300", "-port", "0", "-control", "127.0.0.1:0"},
		{"-spn", "HTTP/cas01.contoso.com"},
		{"-keytab", "/nonexistent/exsim.keytab", "-port", "0", "-control", "127.0.0.1:0"},
		{"-roles", "Get-MobileDevice,Remove-Mailbox", "-port", "0", "-control", "127.0.0.1:0"},
	} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		if err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}

// TestHelp: -h prints the flags on stdout and exits 0; a bad flag exits 2.
func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		var out, errOut strings.Builder
		if code := exitCode(run(context.Background(), []string{arg}, &out, &errOut), &errOut); code != 0 ||
			!strings.Contains(out.String(), "Usage: exsim") || !strings.Contains(out.String(), "-listeners") {
			t.Errorf("exsim %s = %d\nstdout: %s\nstderr: %s", arg, code, out.String(), errOut.String())
		}
	}
	var errOut strings.Builder
	if code := exitCode(run(context.Background(), []string{"--bogus"}, io.Discard, &errOut), &errOut); code != 2 {
		t.Errorf("exsim --bogus = %d, want 2\n%s", code, errOut.String())
	}
}

package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildConnector builds cmd/easconnector into a temporary directory, as
// make build does into bin/.
func buildConnector(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), connectorName())
	out, err := exec.Command("go", "build", "-o", bin, "../easconnector").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ../easconnector: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestDemo runs the demo for a while: the real connector binary syncs the
// simulated organization, sends mails, and stops cleanly with the demo.
func TestDemo(t *testing.T) {
	bin := buildConnector(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var out, errOut lockedBuffer
	code := run(ctx, []string{"--duration", "15s", "--devices", "200", "--churn-every", "3s",
		"--listen", freeAddr(t), "--dir", dir, "--connector", bin}, &out, &errOut, nil)
	if code != exitOK {
		t.Fatalf("demo = %d\n%s\n%s", code, out.String(), errOut.String())
	}
	for _, re := range []string{`Status page\s+http://127\.0\.0\.1:\d+/`, `Admin token\s+[0-9a-f]{32}`, `Metrics\s+http://\S+/metrics`,
		`Exchange sim\s+http://127\.0\.0\.1:\d+/v1/status`, `Configuration\s+` + regexp.QuoteMeta(filepath.Join(dir, "easconnector.toml")),
		`(?m)^\d\d:\d\d:\d\d  last full sync ok in \d+s \| allowed \d+, blocked \d+, default \d+ \| writes [1-9]\d* \| mails [1-9]`,
		`easdemo: stopped`} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("demo output lacks %s:\n%s", re, out.String())
		}
	}
	// The demo runs the product's default path, and says so.
	cfg, _ := os.ReadFile(filepath.Join(dir, "easconnector.toml"))
	if !regexp.MustCompile(`(?m)^mode = "psrp"\s`).Match(cfg) {
		t.Errorf("demo configuration does not say mode = \"psrp\":\n%s", cfg)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "easconnector.log"))
	for _, want := range []string{"demo: fleet activity", `msg=stopped`} {
		if !strings.Contains(string(log), want) {
			t.Errorf("demo log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(string(log), "no longer describe the same fleet") {
		t.Error("the simulators diverged")
	}
	if mails, _ := filepath.Glob(filepath.Join(dir, "mail", "*.eml")); len(mails) == 0 {
		t.Error("no mail kept")
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "state.json")); err != nil {
		t.Errorf("the connector saved no state: %v", err)
	}
}

func TestFlags(t *testing.T) {
	f := func(args []string, want int, wantErr string) {
		t.Helper()
		var out, errOut lockedBuffer
		if got := run(t.Context(), args, &out, &errOut, nil); got != want || !strings.Contains(errOut.String(), wantErr) {
			t.Errorf("easdemo %v = %d, %q; want %d, %q", args, got, errOut.String(), want, wantErr)
		}
	}
	f([]string{"--devices", "1"}, exitUsage, "--devices must be between 10 and 200000")
	f([]string{"--churn", "0"}, exitUsage, "--churn must be in (0, 0.5]")
	f([]string{"--profile", "nope"}, exitUsage, "--profile")
	f([]string{"--connector", filepath.Join(t.TempDir(), "missing")}, exitUsage, "--connector")
	f([]string{"extra"}, exitUsage, `unexpected argument "extra"`)
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/config"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/runspace"
)

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestDispatch(t *testing.T) {
	f := func(args []string, wantCode int, wantOut, wantErr string) {
		t.Helper()
		code, out, errOut := runCmd(t, args...)
		if code != wantCode || !strings.Contains(out, wantOut) || !strings.Contains(errOut, wantErr) {
			t.Errorf("run(%q) = %d\nstdout: %s\nstderr: %s\nwant %d, stdout ∋ %q, stderr ∋ %q", args, code, out, errOut, wantCode, wantOut, wantErr)
		}
	}
	f(nil, exitUsage, "", "Usage: easconnector <command>")
	f([]string{"help"}, exitOK, "check ", "")
	f([]string{"frobnicate"}, exitUsage, "", `unknown command "frobnicate"`)
	f([]string{"version"}, exitOK, "easconnector ", "")
	f([]string{"version", "extra"}, exitUsage, "", `unexpected argument "extra"`)
	f([]string{"check", "-h"}, exitOK, "--device-limit", "")
	f([]string{"--version"}, exitOK, "easconnector ", "")
	f([]string{"help", "sync"}, exitOK, "3  a guard stopped the sync", "")
	f([]string{"help", "frobnicate"}, exitUsage, "", `unknown command "frobnicate"`)
	// Asked-for help is the output (stdout, exit 0), for every command.
	for _, c := range commands {
		for _, args := range [][]string{{c.name, "--help"}, {c.name, "-h"}, {"help", c.name}} {
			code, out, errOut := runCmd(t, args...)
			if code != exitOK || !strings.Contains(out, "Usage: easconnector "+c.name) || errOut != "" {
				t.Errorf("run(%q) = %d\nstdout: %s\nstderr: %s\nwant 0 and the usage on stdout", args, code, out, errOut)
			}
		}
	}
	f([]string{"check", "--bogus"}, exitUsage, "", "flag provided but not defined: -bogus")
	f([]string{"check", "--config", filepath.Join(t.TempDir(), "none.toml")}, exitUsage, "", "no such file")
	f([]string{"check", "--device-limit", "-1"}, exitUsage, "", "must not be negative")
}

// writeConfig writes a configuration for sim and a password file with mode.
func writeConfig(t *testing.T, sim *exsim.Sim, password string, mode os.FileMode, extra string) string {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "exchange.pw")
	if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(pw, mode); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`[exchange]
servers = [%q]
port = %d
https = false
second_hop_credential = false
auth = "basic"
user = %q
password_file = "exchange.pw"
connect_timeout = "10s"
request_timeout = "30s"
%s
[mdm]
source = "file"
file = "mdm.json"

[sync]
state_dir = "state"
`, sim.Hosts()[0], sim.Port(), exsim.DefaultUser, extra)
	if err := os.WriteFile(filepath.Join(dir, "mdm.json"), []byte("[]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "easconnector.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func startSim(t *testing.T, opts exsim.Options) *exsim.Sim {
	t.Helper()
	opts.Population = population.Generate(population.Options{Devices: 40, Seed: 5})
	opts.Profile, opts.Quiet = "zero", true
	sim, err := exsim.Start(opts)
	if err != nil {
		t.Fatalf("exsim.Start: %v", err)
	}
	t.Cleanup(sim.Close)
	return sim
}

var rowRe = func(server, source, result string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(server) + `\s+` + source + `\s+.*\s` + result + `$`)
}

// noLeaks fails t if goroutines started during the test outlive it (after
// every other cleanup, the simulator's included, has run).
func noLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			t.Errorf("%d goroutines before, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
	})
}

func TestCheck(t *testing.T) {
	noLeaks(t)
	sim := startSim(t, exsim.Options{Listeners: 2})
	cfg := writeConfig(t, sim, exsim.DefaultPassword, 0o600, "")

	code, out, errOut := runCmd(t, "check", "--config", cfg)
	if code != exitOK {
		t.Fatalf("check = %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []*regexp.Regexp{
		rowRe("127.0.0.1", "config", "OK"),
		rowRe("127.0.0.2", "discovered", "OK"),
		regexp.MustCompile(`(?m)^127\.0\.0\.1\s+config\s+yes\s+ok\s+.*\s40\s+\d+(\.\d+)?[µnm]?s\s+OK$`),
		regexp.MustCompile(`2 of 2 servers OK`),
	} {
		if !want.MatchString(out) {
			t.Errorf("check output lacks %s:\n%s", want, out)
		}
	}
	code, out, _ = runCmd(t, "check", "--config", cfg, "--device-limit", "10")
	if code != exitOK || !strings.Contains(out, " 10+ ") {
		t.Errorf("check --device-limit 10 = %d, output\n%s\nwant a count of 10+", code, out)
	}

	// A discovered server that is down fails the check.
	if err := sim.Kill(1); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCmd(t, "check", "--config", cfg)
	if code != exitFailed || !rowRe("127.0.0.2", "discovered", "FAILED").MatchString(out) ||
		!strings.Contains(out, "127.0.0.2: connect: unreachable") || !strings.Contains(out, "1 of 2 servers OK") {
		t.Errorf("check with a dead CAS = %d, output\n%s", code, out)
	}
}

func TestCheckFailures(t *testing.T) {
	sim := startSim(t, exsim.Options{Listeners: 1})

	code, out, _ := runCmd(t, "check", "--config", writeConfig(t, sim, "wrong-password", 0o600, ""))
	if code != exitFailed || !strings.Contains(out, "127.0.0.1: connect: authentication failed") ||
		!regexp.MustCompile(`127\.0\.0\.1\s+config\s+yes\s+failed`).MatchString(out) {
		t.Errorf("check with a wrong password = %d, output\n%s", code, out)
	}

	code, _, errOut := runCmd(t, "check", "--config", writeConfig(t, sim, exsim.DefaultPassword, 0o644, ""))
	if code != exitUsage || !strings.Contains(errOut, "exchange.password_file") || !strings.Contains(errOut, "chmod 600") {
		t.Errorf("check with a world-readable password file = %d, stderr\n%s", code, errOut)
	}

	code, _, errOut = runCmd(t, "check", "--config", writeConfig(t, sim, exsim.DefaultPassword, 0o600, "runspaces = 40\n"))
	if code != exitUsage || !strings.Contains(errOut, "exchange.runspaces: must be between 1 and 17, got 40") {
		t.Errorf("check with a bad config = %d, stderr\n%s", code, errOut)
	}

	// The account's only session is taken: Exchange refuses another.
	quotaSim := startSim(t, exsim.Options{Listeners: 1, PowerShellMaxConcurrency: 1})
	quotaCfg := writeConfig(t, quotaSim, exsim.DefaultPassword, 0o600, "")
	c, err := config.Load(quotaCfg)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := c.RunspaceOptions()
	if err != nil {
		t.Fatal(err)
	}
	held, err := runspace.Open(t.Context(), opts, quotaSim.Hosts()[0])
	if err != nil {
		t.Fatalf("open the session that uses the quota: %v", err)
	}
	code, out, _ = runCmd(t, "check", "--config", quotaCfg)
	if code != exitFailed || !strings.Contains(out, "127.0.0.1: connect: quota exceeded") {
		t.Errorf("check over quota = %d, output\n%s", code, out)
	}
	if err := held.Close(t.Context()); err != nil {
		t.Errorf("close held session: %v", err)
	}

	tlsSim := startSim(t, exsim.Options{Listeners: 1, TLS: true})
	cfg := writeConfig(t, tlsSim, exsim.DefaultPassword, 0o600, "")
	doc, _ := os.ReadFile(cfg)
	if err := os.WriteFile(cfg, bytes.Replace(doc, []byte("https = false"), []byte("https = true"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCmd(t, "check", "--config", cfg)
	if code != exitFailed || !strings.Contains(out, "127.0.0.1: connect: TLS failure") {
		t.Errorf("check against an untrusted certificate = %d, output\n%s", code, out)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(cfg), "ca.pem"), tlsSim.CAPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	doc, _ = os.ReadFile(cfg)
	if err := os.WriteFile(cfg, bytes.Replace(doc, []byte("https = true"), []byte("https = true\nca_file = \"ca.pem\""), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCmd(t, "check", "--config", cfg)
	if code != exitOK {
		t.Errorf("check with the CA file = %d, output\n%s", code, out)
	}
}

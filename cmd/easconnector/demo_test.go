package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo runs for 20s")
	}
	noLeaks(t)
	dir := t.TempDir()
	code, out, errOut := runIn(t, t.Context(), "demo", "--duration", "20s", "--devices", "300", "--churn-every", "3s",
		"--listen", freeAddr(t), "--dir", dir)
	if code != exitOK {
		t.Fatalf("demo = %d\n%s\n%s", code, out, errOut)
	}
	for _, re := range []string{`Status page\s+http://127\.0\.0\.1:\d+/`, `Admin token\s+[0-9a-f]{32}`, `Metrics\s+http://\S+/metrics`,
		`Exchange sim\s+http://127\.0\.0\.1:\d+/v1/status`, `Configuration\s+` + regexp.QuoteMeta(filepath.Join(dir, "easconnector.toml")),
		`(?m)^\d\d:\d\d:\d\d  last full sync ok in \d+s \| allowed \d+, blocked \d+, default \d+ \| writes \d+ \| mails [1-9]`,
		`easconnector demo: stopped`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("demo output lacks %s:\n%s", re, out)
		}
	}
	log, _ := os.ReadFile(filepath.Join(dir, "easconnector.log"))
	for _, want := range []string{"demo: fleet activity", `msg=stopped`} {
		if !strings.Contains(string(log), want) {
			t.Errorf("demo log lacks %q", want)
		}
	}
	if strings.Contains(string(log), "no longer describe the same fleet") {
		t.Error("the simulators diverged")
	}
	if mails, _ := filepath.Glob(filepath.Join(dir, "mail", "*.eml")); len(mails) == 0 {
		t.Error("no mail kept")
	}
}

package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoSimulatorsLinked: the production binary links no simulator (exsim
// has a WS-Man server with a default password) and no SMTP server; those
// belong to cmd/easdemo and the tests.
func TestNoSimulatorsLinked(t *testing.T) {
	for _, goos := range []string{"linux", "windows"} {
		cmd := exec.Command("go", "list", "-deps", ".")
		cmd.Env = append(cmd.Environ(), "GOOS="+goos)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("GOOS=%s go list -deps: %v", goos, err)
		}
		for _, pkg := range strings.Fields(string(out)) {
			if strings.HasPrefix(pkg, "github.com/easconnector/easconnector/loadtest") || strings.HasPrefix(pkg, "github.com/emersion/go-smtp") {
				t.Errorf("GOOS=%s: easconnector links %s", goos, pkg)
			}
		}
	}
}

package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/server"
)

// TestSyncRemoteWait: sync --remote --wait follows the sync it asked the
// service for and exits as a local sync would: 4 while mailbox writes
// fail, 0 once they succeed; the result goes to stdout, the request and
// progress to stderr.
func TestSyncRemoteWait(t *testing.T) {
	noLeaks(t)
	defer func(d time.Duration) { waitPoll = d }(waitPoll)
	waitPoll = 50 * time.Millisecond
	addr := freeAddr(t)
	fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 20}, listen: addr})
	if err := fl.sim.SetFaults(exsim.Faults{ErrorRate: 1, Cmdlets: []string{"Set-CASMailbox"}}); err != nil {
		t.Fatal(err)
	}
	d := startRun(t, fl, addr)
	d.waitStatus(t, "the start-up sync", func(st *server.Status) bool { return st.LastFull != nil && st.Running == nil })
	tok := filepath.Join(fl.dir, "api.token")

	code, out, errOut := runIn(t, t.Context(), "sync", "--full", "--remote", d.base, "--token-file", tok, "--wait", "--json")
	var res remoteOutput
	decodeJSON(t, out, &res)
	if code != exitPartial || res.ExitCode != exitPartial || res.Sync.Failures == 0 || !strings.Contains(errOut, "requested") {
		t.Errorf("sync --full --remote --wait --json with failing writes = %d, %+v; want %d\n%s", code, res, exitPartial, errOut)
	}
	if err := fl.sim.SetFaults(exsim.Faults{}); err != nil {
		t.Fatal(err)
	}
	// A pipe gets the plain summary, with a local sync's names.
	code, out, errOut = runIn(t, t.Context(), "sync", "--full", "--remote", d.base, "--token-file", tok, "--wait")
	if code != exitOK || !regexp.MustCompile(`(?m)^result: ok$`).MatchString(out) || !regexp.MustCompile(`(?m)^writes: [1-9]\d*$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^failures: 0$`).MatchString(out) || !strings.Contains(errOut, "requested") || strings.Contains(out, "requested") {
		t.Errorf("sync --full --remote --wait = %d, want 0, the plain result on stdout and the request on stderr\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	// A terminal gets the table.
	humanStdout(t)
	code, out, errOut = runIn(t, t.Context(), "sync", "--full", "--remote", d.base, "--token-file", tok, "--wait")
	if code != exitOK || !regexp.MustCompile(`Result:\s+ok`).MatchString(out) || !regexp.MustCompile(`Writes:\s+0 mailboxes written, 0 failed`).MatchString(out) ||
		!strings.Contains(errOut, "requested") || strings.Contains(out, "requested") {
		t.Errorf("sync --full --remote --wait = %d, want 0, the result on stdout and the request on stderr\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	code, _, errOut = runIn(t, t.Context(), "sync", "--quick", "--wait", "--config", fl.config)
	if code != exitUsage || !strings.Contains(errOut, "--wait follows a sync of a running service") {
		t.Errorf("sync --wait without --remote = %d\n%s", code, errOut)
	}
}

func TestRemoteExitCode(t *testing.T) {
	f := func(r server.SyncResult, want int) {
		t.Helper()
		if got := remoteExitCode(r); got != want {
			t.Errorf("remoteExitCode(%+v) = %d, want %d", r, got, want)
		}
	}
	f(server.SyncResult{Result: server.ResultOK}, exitOK)
	f(server.SyncResult{Result: server.ResultHeld}, exitHeld)
	f(server.SyncResult{Result: server.ResultCancelled}, exitFailed)
	f(server.SyncResult{Result: server.ResultFailed, Error: "exchange: no server reachable"}, exitFailed)
	f(server.SyncResult{Result: server.ResultFailed, Failures: 3, Error: "exchange: all sessions lost"}, exitFailed)
	f(server.SyncResult{Result: server.ResultFailed, Failures: 3, Error: "3 mailbox writes failed; they are retried next sync"}, exitPartial)
}

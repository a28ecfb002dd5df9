package main

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/mailsink"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/server"
)

// daemonUnderTest is `easconnector run` in process.
type daemonUnderTest struct {
	base   string
	read   string // the read-only token's file
	cancel context.CancelFunc
	done   chan int
	stderr *lockedBuffer
}

func startRun(t *testing.T, fl *fleet, addr string) *daemonUnderTest {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	d := &daemonUnderTest{base: "http://" + addr, read: filepath.Join(fl.dir, "api-read.token"), cancel: cancel, done: make(chan int, 1), stderr: &lockedBuffer{}}
	go func() { d.done <- run(ctx, []string{"run", "--config", fl.config}, &lockedBuffer{}, d.stderr) }()
	t.Cleanup(func() { d.stop(t) })
	return d
}

// stop stops the daemon and checks that it exits 0.
func (d *daemonUnderTest) stop(t *testing.T) {
	t.Helper()
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case code := <-d.done:
		if code != exitOK {
			t.Errorf("run = %d after cancel, want 0\n%s", code, d.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("run did not stop within 30s\n%s", d.stderr)
	}
}

// waitStatus polls the status until cond holds.
func (d *daemonUnderTest) waitStatus(t *testing.T, what string, cond func(*server.Status) bool) server.Status {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, out, _ := runIn(t, t.Context(), "status", "--json", "--server", d.base, "--token-file", d.read)
		var st server.Status
		if out != "" {
			decodeJSON(t, out, &st)
			if cond(&st) {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed %s (last: exit %d, %+v)\n%s", what, code, st, d.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestRunStatusDevices(t *testing.T) {
	noLeaks(t)
	addr := freeAddr(t)
	fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 50}, listen: addr})
	d := startRun(t, fl, addr)
	st := d.waitStatus(t, "the first full sync", func(st *server.Status) bool { return st.LastFull != nil })
	if st.Status != server.StatusConnected || st.LastFull.Result != server.ResultOK || st.LastFull.Trigger != "startup" ||
		len(st.Servers) != 1 || st.Servers[0].State != "up" || st.NextQuick.IsZero() || st.NextFull.IsZero() {
		t.Errorf("status after the first sync = %+v", st)
	}

	code, out, errOut := runIn(t, t.Context(), "status", "--server", d.base, "--token-file", d.read)
	for _, re := range []string{`(?m)^Status\s+connected$`, `(?m)^Exchange\s+127\.0\.0\.1 up, \d+ sessions$`,
		`(?m)^Last full\s+ok .*; Allow \d+.*writes \(startup\)$`, `(?m)^Last quick\s+none yet$`, `(?m)^Next quick\s+(\d{4}-\d\d-\d\d )?\d\d:\d\d(:\d\d)? \(in `} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("status output lacks %s:\n%s%s", re, out, errOut)
		}
	}
	if code != exitOK {
		t.Errorf("status = %d, want 0", code)
	}

	blocked := st.LastFull.Counts["Block"]
	code, out, _ = runIn(t, t.Context(), "devices", "--server", d.base, "--token-file", d.read, "--decision", "block", "--limit", "0")
	if rows := regexp.MustCompile(`(?m)^\S+@\S+\s+\S+\s+.*\sBlock\s+NotCompliant\s`).FindAllString(out, -1); code != exitOK || len(rows) != blocked || blocked == 0 {
		t.Errorf("devices --decision block = %d, %d rows, want %d\n%s", code, len(rows), blocked, out)
	}
	code, out, _ = runIn(t, t.Context(), "devices", "--server", d.base, "--token-file", d.read, "--json", "--limit", "0")
	var page server.DevicePage
	decodeJSON(t, out, &page)
	if code != exitOK || page.Total != 50 || len(page.Devices) != 50 {
		t.Errorf("devices --json = %d, total %d, %d rows; want 50", code, page.Total, len(page.Devices))
	}
	code, out, _ = runIn(t, t.Context(), "devices", "--server", d.base, "--token-file", d.read, "--limit", "7")
	if code != exitOK || !strings.Contains(out, "7 of 50 devices; --limit 0 lists all.") {
		t.Errorf("devices --limit 7 = %d\n%s", code, out)
	}

	// Reads need a token too; the configuration's read-only token does;
	// it cannot start a sync.
	code, _, errOut = runIn(t, t.Context(), "devices", "--server", d.base, "--config", filepath.Join(t.TempDir(), "none.toml"))
	if code != exitFailed || !strings.Contains(errOut, "missing bearer token") {
		t.Errorf("devices without a token = %d\n%s", code, errOut)
	}
	if code, out, errOut = runIn(t, t.Context(), "status", "--config", fl.config); code != exitOK || !strings.Contains(out, "connected") {
		t.Errorf("status --config = %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = runIn(t, t.Context(), "sync", "--quick", "--remote", d.base, "--token-file", d.read)
	if code != exitFailed || !strings.Contains(errOut, "read-only token cannot change anything") {
		t.Errorf("sync --remote with the read-only token = %d\n%s", code, errOut)
	}

	// A manual sync through the API; without a token it is refused.
	code, out, errOut = runIn(t, t.Context(), "sync", "--quick", "--remote", d.base, "--token-file", filepath.Join(fl.dir, "api.token"))
	if code != exitOK || !regexp.MustCompile(`Sync \S+ \(quick\) requested\.|joins the pending sync`).MatchString(out) {
		t.Errorf("sync --remote = %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = runIn(t, t.Context(), "sync", "--full", "--remote", d.base, "--config", filepath.Join(t.TempDir(), "none.toml"))
	if code != exitFailed || !strings.Contains(errOut, "missing bearer token") {
		t.Errorf("sync --remote without a token = %d\n%s", code, errOut)
	}
	d.waitStatus(t, "the manual quick sync", func(st *server.Status) bool { return st.LastQuick != nil && st.Running == nil })

	// The service owns the state directory: a local sync is refused.
	code, _, errOut = runIn(t, t.Context(), "sync", "--full", "--config", fl.config)
	if code != exitFailed || !strings.Contains(errOut, "state directory in use: pid ") || !strings.Contains(errOut, "--remote") {
		t.Errorf("local sync beside the service = %d\n%s", code, errOut)
	}

	// Exchange goes away: the next sync fails and the status says so.
	if err := fl.sim.Kill(0); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut = runIn(t, t.Context(), "sync", "--quick", "--remote", d.base, "--token-file", filepath.Join(fl.dir, "api.token")); code != exitOK {
		t.Fatalf("sync --remote = %d\n%s%s", code, out, errOut)
	}
	// The sync's failure and the pool's marking the endpoint down are two
	// events: wait for both.
	st = d.waitStatus(t, "disconnected with the server down", func(st *server.Status) bool {
		return st.Status == server.StatusDisconnected && len(st.Servers) > 0 && st.Servers[0].State == "down"
	})
	if !strings.Contains(st.Reason, "no Exchange server reachable") || st.Servers[0].State != "down" {
		t.Errorf("status with Exchange down = %+v", st)
	}
	if code, _, _ = runIn(t, t.Context(), "status", "--server", d.base, "--token-file", d.read); code != exitFailed {
		t.Errorf("status while disconnected = %d, want %d", code, exitFailed)
	}

	d.stop(t)
	code, _, errOut = runIn(t, t.Context(), "status", "--server", d.base, "--token-file", d.read)
	if code != exitFailed || !strings.Contains(errOut, "no easconnector service answers at "+d.base) {
		t.Errorf("status without a service = %d\n%s", code, errOut)
	}
}

// TestRunStartup: a refused login stops the service at once (retrying
// could lock the account out); an unreachable Exchange is waited for, and
// a signal meanwhile stops the service cleanly.
func TestRunStartup(t *testing.T) {
	noLeaks(t)
	fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 10}})
	if err := os.WriteFile(filepath.Join(fl.dir, "exchange.pw"), []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runIn(t, t.Context(), "run", "--config", fl.config)
	if code != exitFailed || !strings.Contains(errOut, "start-up failed") || strings.Contains(errOut, "retrying") ||
		!strings.Contains(errOut, "easconnector run: cannot start: exchange: ") ||
		!strings.Contains(errOut, "\n  cause: Exchange: authentication failed") ||
		!strings.Contains(errOut, "\n  fix:   correct exchange.user and its password") ||
		!strings.Contains(errOut, "'easconnector check --config "+fl.config+"'") {
		t.Errorf("run with a wrong password = %d, want the cause and the fix\n%s", code, errOut)
	}

	fl = startFleet(t, fleetOptions{pop: population.Options{Devices: 10}})
	if err := fl.sim.Kill(0); err != nil {
		t.Fatal(err)
	}
	d := startRun(t, fl, "")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.stderr.String(), "no server reachable; retrying") {
		if time.Now().After(deadline) {
			t.Fatalf("run does not retry an unreachable Exchange:\n%s", d.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.stop(t)
	if _, err := os.Stat(filepath.Join(fl.state, "state.json")); err == nil {
		t.Error("a service that never connected wrote a state file")
	}
}

// TestRunHeldPlan: the service holds a plan that would block every device,
// tells the administrators once, shows it in its status, and applies it on
// approval through the API.
func TestRunHeldPlan(t *testing.T) {
	noLeaks(t)
	mail, err := mailsink.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mail.Close)
	addr := freeAddr(t)
	fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 30, EnrolledRate: 1, CompliantRate: -1, ExemptRate: -1, UntargetedRate: -1},
		maxNewBlocks: 5, listen: addr, smtpPort: mail.Port()})
	d := startRun(t, fl, addr)
	// The plan file is kept before the sync that held it has ended.
	st := d.waitStatus(t, "the held plan", func(st *server.Status) bool { return st.HeldPlan != nil && st.LastFull != nil })
	if st.Status != server.StatusDegraded || !strings.Contains(st.Reason, "a guard holds plan "+st.HeldPlan.ID) ||
		st.LastFull == nil || st.LastFull.Result != server.ResultHeld || st.HeldPlan.Limit != 5 || st.HeldPlan.NewBlocks < 6 {
		t.Errorf("status with a held plan = %+v, plan %+v", st, st.HeldPlan)
	}
	id := st.HeldPlan.ID
	digest := waitMail(t, mail, "plan held for approval")
	if !strings.Contains(digest, "easconnector sync --approve "+id) {
		t.Errorf("digest does not say how to approve %s:\n%s", id, digest)
	}

	// sync --remote --wait exits 3 for a sync the guard holds, and names
	// the plan (a second one, held beside the first); --approve --wait
	// follows that plan's approval to its end.
	defer func(d time.Duration) { waitPoll = d }(waitPoll)
	waitPoll = 50 * time.Millisecond
	humanStdout(t)
	tok := filepath.Join(fl.dir, "api.token")
	code, out, errOut := runIn(t, t.Context(), "sync", "--full", "--remote", d.base, "--token-file", tok, "--wait")
	m := regexp.MustCompile(`Plan ([0-9a-f]{32}) is held`).FindStringSubmatch(out)
	if code != exitHeld || m == nil || m[1] == id || !strings.Contains(out, "easconnector sync --approve "+m[1]) {
		t.Fatalf("sync --full --remote --wait held by the guard = %d, want %d and a new plan\n%s%s", code, exitHeld, out, errOut)
	}
	code, out, errOut = runIn(t, t.Context(), "sync", "--approve", m[1], "--remote", d.base, "--token-file", tok, "--wait")
	if code != exitOK || !strings.Contains(errOut, "Plan "+m[1]+" approved; sync ") || !regexp.MustCompile(`Result:\s+ok`).MatchString(out) ||
		!regexp.MustCompile(`Writes:\s+[1-9]\d* mailboxes written, 0 failed`).MatchString(out) {
		t.Fatalf("sync --approve --remote --wait = %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = runIn(t, t.Context(), "sync", "--approve", id, "--remote", d.base, "--token-file", tok)
	if code != exitOK || !strings.Contains(out, "Plan "+id+" approved; sync ") {
		t.Fatalf("sync --approve --remote = %d\n%s%s", code, out, errOut)
	}
	st = d.waitStatus(t, "the approval applied", func(st *server.Status) bool {
		return st.HeldPlan == nil && st.LastFull != nil && st.LastFull.Trigger == triggerApproval
	})
	// The first plan's changes were applied with the second: its approval
	// writes nothing, and leaves nothing held.
	if st.Status != server.StatusConnected || st.LastFull.Result != server.ResultOK {
		t.Errorf("status after approval = %+v, last full %+v", st, st.LastFull)
	}
	// The devices list shows what the approval decided and wrote, though
	// the sync that held the plan published no list, and so does a
	// restarted service before its first sync.
	checkDevices := func(when string, d *daemonUnderTest) {
		t.Helper()
		access := fl.accessCounts(t)
		code, out, _ := runIn(t, t.Context(), "devices", "--server", d.base, "--token-file", d.read, "--json", "--limit", "0")
		var page server.DevicePage
		decodeJSON(t, out, &page)
		got, after := map[string]int{}, map[string]int{}
		for _, r := range page.Devices {
			got[r.Decision]++
			after[r.ExchangeAfter]++
		}
		// The lists the approval wrote are what Exchange now applies.
		if after["Blocked"] != access[exchange.AccessBlocked] || after["Allowed"] != access[exchange.AccessAllowed] {
			t.Errorf("devices %s: exchangeAfter %v, Exchange now gives %v", when, after, access)
		}
		want := map[string]int{"Allow": access[exchange.AccessAllowed], "Block": access[exchange.AccessBlocked], "Default": access[exchange.AccessQuarantined]}
		maps.DeleteFunc(want, func(_ string, n int) bool { return n == 0 })
		if code != exitOK || page.Total != 30 || !maps.Equal(got, want) {
			t.Errorf("devices %s = %d, total %d, decisions %v; want all 30 as Exchange now treats them, %v", when, code, page.Total, got, want)
		}
	}
	checkDevices("after the approval", d)
	code, _, errOut = runIn(t, t.Context(), "sync", "--approve", id, "--remote", d.base, "--token-file", filepath.Join(fl.dir, "api.token"))
	if code != exitFailed || !strings.Contains(errOut, "HTTP 404") {
		t.Errorf("approving an applied plan again = %d\n%s", code, errOut)
	}
	d.stop(t)
	fl.assertConverged(t)
	d = startRun(t, fl, addr)
	st = d.waitStatus(t, "an answer", func(*server.Status) bool { return true })
	if st.LastFull == nil || st.LastFull.Result != server.ResultOK || st.HeldPlan != nil || st.Status != server.StatusConnected {
		t.Errorf("status of a restarted service = %s (%s), last full %+v", st.Status, st.Reason, st.LastFull)
	}
	checkDevices("after a restart", d)
	d.stop(t)
	// The service's writes left one whole hash chain.
	if code, out, errOut := runIn(t, t.Context(), "audit", "verify", "--config", fl.config); code != exitOK || !strings.Contains(out, "audit log chain OK") {
		t.Errorf("audit verify after the service ran = %d\n%s%s", code, out, errOut)
	}
}

// waitMail waits for a message whose text contains want and returns it.
func waitMail(t *testing.T, m *mailsink.Sink, want string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		files, _ := filepath.Glob(filepath.Join(m.Dir(), "*.eml"))
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), want) {
				return string(b)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no mail containing %q", want)
	return ""
}

// TestRunKeptPlanNotDegraded: a plan `easconnector plan` kept for review
// is not a guard's hold: the service beside it stays connected, shows no
// held plan, and `plan --discard` removes it.
func TestRunKeptPlanNotDegraded(t *testing.T) {
	noLeaks(t)
	addr := freeAddr(t)
	fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 30}, listen: addr})
	code, out, errOut := runIn(t, t.Context(), "plan", "--config", fl.config)
	m := regexp.MustCompile(`(?m)^kept_plan: ([0-9a-f]{32})$`).FindStringSubmatch(out)
	if code != exitOK || m == nil {
		t.Fatalf("plan = %d\n%s\n%s", code, out, errOut)
	}
	d := startRun(t, fl, addr)
	st := d.waitStatus(t, "a full sync", func(st *server.Status) bool { return st.LastFull != nil && st.LastFull.Result == server.ResultOK })
	if st.Status != server.StatusConnected || st.HeldPlan != nil {
		t.Errorf("status beside a plan kept by `plan` = %s (%s), held %+v; want connected and no hold", st.Status, st.Reason, st.HeldPlan)
	}
	d.stop(t)
	if code, out, errOut = runIn(t, t.Context(), "plan", "--discard", m[1], "--config", fl.config); code != exitOK || !strings.Contains(out, "discarded") {
		t.Errorf("plan --discard = %d\n%s\n%s", code, out, errOut)
	}
	if code, _, errOut = runIn(t, t.Context(), "plan", "--show", m[1], "--config", fl.config); code != exitFailed || !strings.Contains(errOut, "no held plan") {
		t.Errorf("plan --show of a discarded plan = %d\n%s", code, errOut)
	}
}

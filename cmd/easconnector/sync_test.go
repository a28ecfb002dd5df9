package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/mailsink"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/pipeline"
)

func TestSyncUsage(t *testing.T) {
	f := func(args []string, wantCode int, wantErr string) {
		t.Helper()
		code, _, errOut := runCmd(t, args...)
		if code != wantCode || !strings.Contains(errOut, wantErr) {
			t.Errorf("run(%q) = %d, stderr\n%s\nwant %d and %q", args, code, errOut, wantCode, wantErr)
		}
	}
	f([]string{"sync"}, exitUsage, "say --full or --quick")
	f([]string{"sync", "--full", "--quick"}, exitUsage, "exclude each other")
	f([]string{"sync", "--approve", "x", "--full"}, exitUsage, "takes no --full")
	f([]string{"sync", "--full", "--dry-run", "--remote", "http://127.0.0.1:1"}, exitUsage, "--dry-run runs locally")
	f([]string{"sync", "--full", "--config", t.TempDir() + "/none.toml"}, exitFailed, "no such file")
	f([]string{"run", "--config", t.TempDir() + "/none.toml"}, exitFailed, "no such file")
	f([]string{"run", "extra"}, exitUsage, `unexpected argument "extra"`)
	f([]string{"service"}, exitOK, "")
	f([]string{"service", "install"}, exitUsage, "Windows services only")
	f([]string{"plan", "--full", "--quick"}, exitUsage, "exclude each other")
	f([]string{"plan", "--show", "x", "--full"}, exitUsage, "takes no --full")
	f([]string{"devices", "--limit", "-1"}, exitUsage, "must not be negative")
	f([]string{"status", "--server", "ftp://x"}, exitFailed, "not an http or https URL")
}

var heldRe = regexp.MustCompile(`Plan ([0-9a-f]{32}) is held`)

// TestSyncExitCodes runs sync and plan against the simulators: a clean
// sync (0), a sync whose writes fail (4), one the blast-radius guard stops
// (3) and its approval (0), with text and JSON output.
func TestSyncExitCodes(t *testing.T) {
	noLeaks(t)
	ctx := t.Context()

	t.Run("ok", func(t *testing.T) {
		fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 60}})
		// stdout is no terminal here: a plain summary for scripts, and the
		// progress on stderr.
		code, out, errOut := runIn(t, ctx, "sync", "--full", "--config", fl.config)
		if code != exitOK {
			t.Fatalf("sync --full = %d\n%s\n%s", code, out, errOut)
		}
		for _, want := range []string{`(?m)^sync: \S+$`, `(?m)^kind: full$`, `(?m)^result: ok$`, `(?m)^writes: [1-9]\d*$`, `(?m)^failures: 0$`,
			`(?m)^guard: passed$`, `(?m)^decision Allow: \d+$`, `(?m)^reason Compliant: \d+$`} {
			if !regexp.MustCompile(want).MatchString(out) {
				t.Errorf("sync's plain summary lacks %s:\n%s", want, out)
			}
		}
		if strings.Contains(out, "devices decided") || !strings.Contains(errOut, "devices decided: ") {
			t.Errorf("progress is not on stderr only\nstdout:\n%s\nstderr:\n%s", out, errOut)
		}
		// Converged: a second sync writes nothing, and Exchange gives every
		// device the access decided.
		code, out, errOut = runIn(t, ctx, "sync", "--full", "--json", "--config", fl.config)
		if code != exitOK {
			t.Fatalf("second sync --full --json = %d\n%s\n%s", code, out, errOut)
		}
		var res syncOutput
		decodeJSON(t, out, &res)
		if res.Result != pipeline.ResultOK || res.ExitCode != exitOK || res.Report == nil || res.Report.Writes != 0 || res.Report.Devices != 60 {
			t.Fatalf("second sync = %+v, want ok with no writes on 60 devices", res)
		}
		fl.assertConverged(t)
	})

	t.Run("notices", func(t *testing.T) {
		// A one-shot sync sends its mails before it exits.
		mail, err := mailsink.Start(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(mail.Close)
		fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 40}, smtpPort: mail.Port()})
		code, out, errOut := runIn(t, ctx, "sync", "--full", "--json", "--config", fl.config)
		var res syncOutput
		decodeJSON(t, out, &res)
		if code != exitOK || res.Report.Notices == 0 || mail.Count() != res.Report.Notices {
			t.Fatalf("sync with notifications = %d, %d notices queued, %d mails sent\n%s", code, res.Report.Notices, mail.Count(), errOut)
		}
		// Each device is told once.
		if code, _, _ = runIn(t, ctx, "sync", "--full", "--config", fl.config); code != exitOK || mail.Count() != res.Report.Notices {
			t.Errorf("second sync = %d, %d mails in all; want no new mail", code, mail.Count())
		}
	})

	t.Run("partial", func(t *testing.T) {
		humanStdout(t)
		fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 12}})
		if err := fl.sim.SetFaults(exsim.Faults{ErrorRate: 1, Cmdlets: []string{"Set-CASMailbox"}}); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := runIn(t, ctx, "sync", "--full", "--config", fl.config)
		if code != exitPartial || !strings.Contains(out, "Failed mailboxes (retried next sync):") {
			t.Fatalf("sync with failing writes = %d, want %d\n%s\n%s", code, exitPartial, out, errOut)
		}
		if err := fl.sim.SetFaults(exsim.Faults{}); err != nil {
			t.Fatal(err)
		}
		if code, out, errOut = runIn(t, ctx, "sync", "--full", "--config", fl.config); code != exitOK {
			t.Fatalf("sync once the faults are gone = %d\n%s\n%s", code, out, errOut)
		}
	})

	t.Run("held", func(t *testing.T) {
		humanStdout(t)
		// Every device enrolled and noncompliant: the first sync would block
		// them all.
		fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 30, EnrolledRate: 1, CompliantRate: -1, ExemptRate: -1, UntargetedRate: -1}, maxNewBlocks: 5})
		code, out, errOut := runIn(t, ctx, "sync", "--full", "--config", fl.config)
		m := heldRe.FindStringSubmatch(out)
		if code != exitHeld || m == nil || !strings.Contains(out, "easconnector sync --approve "+m[1]) {
			t.Fatalf("sync with a 100%% noncompliant MDM = %d, want %d and a held plan\n%s\n%s", code, exitHeld, out, errOut)
		}
		if n := fl.sim.Counters().Cmdlets["Set-CASMailbox"]; n != 0 {
			t.Fatalf("the guard let %d writes through", n)
		}
		id := m[1]
		code, out, _ = runIn(t, ctx, "plan", "--show", id, "--config", fl.config)
		if code != exitOK || !strings.Contains(out, "Held plan "+id) || !regexp.MustCompile(`(?m)^\S+@\S+\s+\S+\s+blocked\s+add\s+Block\s+NotCompliant\s+\S.*$`).MatchString(out) {
			t.Errorf("plan --show %s = %d\n%s", id, code, out)
		}
		code, out, errOut = runIn(t, ctx, "sync", "--approve", id, "--json", "--config", fl.config)
		var res syncOutput
		decodeJSON(t, out, &res)
		if code != exitOK || res.Report.Guard.Result != pipeline.GuardApproved || res.Report.Writes == 0 {
			t.Fatalf("sync --approve %s = %d, %+v\n%s", id, code, res, errOut)
		}
		if got := fl.accessCounts(t); got[exchange.AccessBlocked] != res.Report.Counts.BlockAdds {
			t.Errorf("after approval, Exchange access %v; want the %d blocks of the plan", got, res.Report.Counts.BlockAdds)
		}
		fl.assertConverged(t)
		code, _, errOut = runIn(t, ctx, "sync", "--approve", id, "--config", fl.config)
		if code != exitFailed || !strings.Contains(errOut, "held plan") {
			t.Errorf("second sync --approve %s = %d, want %d: the plan is gone\n%s", id, code, exitFailed, errOut)
		}
	})

	t.Run("plan", func(t *testing.T) {
		humanStdout(t)
		fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 40}})
		code, out, errOut := runIn(t, ctx, "plan", "--config", fl.config)
		m := regexp.MustCompile(`Plan ([0-9a-f]{32}) kept`).FindStringSubmatch(out)
		if code != exitOK || m == nil || !regexp.MustCompile(`(?m)^MAILBOX\s+DEVICE\s+LIST\s+OP\s+DECISION\s+REASON$`).MatchString(out) ||
			!regexp.MustCompile(`(?m)^\S+@\S+\s+\S+\s+blocked\s+add\s+Block\s+NotCompliant$`).MatchString(out) {
			t.Fatalf("plan = %d\n%s\n%s", code, out, errOut)
		}
		if n := fl.sim.Counters().WriteCmdlets; n != 0 {
			t.Fatalf("plan wrote %d times to Exchange", n)
		}
		code, out, _ = runIn(t, ctx, "plan", "--show", m[1], "--json", "--config", fl.config)
		var hp pipeline.HeldPlan
		decodeJSON(t, out, &hp)
		if code != exitOK || hp.ID != m[1] || hp.Source != pipeline.HeldByPlan || len(hp.Plans) == 0 {
			t.Errorf("plan --show --json = %d, %+v", code, hp)
		}
		if code, out, errOut = runIn(t, ctx, "sync", "--approve", m[1], "--config", fl.config); code != exitOK {
			t.Fatalf("sync --approve of a kept plan = %d\n%s\n%s", code, out, errOut)
		}
		code, out, _ = runIn(t, ctx, "plan", "--json", "--config", fl.config)
		var po planOutput
		decodeJSON(t, out, &po)
		if code != exitOK || po.Report.Counts.Writes != 0 {
			t.Errorf("plan after applying the kept plan = %d, %d writes; want none", code, po.Report.Counts.Writes)
		}
	})

	t.Run("exchange down", func(t *testing.T) {
		fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 10}})
		if err := fl.sim.Kill(0); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := runIn(t, ctx, "sync", "--quick", "--config", fl.config)
		if code != exitFailed || !strings.Contains(errOut, "Exchange: ") {
			t.Errorf("sync with Exchange down = %d, want %d\n%s", code, exitFailed, errOut)
		}
	})

	t.Run("mdm down", func(t *testing.T) {
		fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 10}})
		// A rotated client secret: the token endpoint refuses the one we
		// have (not retried: it cannot get better by itself).
		if err := os.WriteFile(filepath.Join(fl.dir, "graph.secret"), []byte("rotated-away\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := runIn(t, ctx, "sync", "--full", "--config", fl.config)
		if code != exitFailed || !strings.Contains(errOut, "the MDM could not be read or trusted, so nothing was changed") {
			t.Errorf("sync with the MDM down = %d, want %d\n%s", code, exitFailed, errOut)
		}
		if n := fl.sim.Counters().WriteCmdlets; n != 0 {
			t.Errorf("%d writes with the MDM down", n)
		}
	})
}

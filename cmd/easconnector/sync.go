package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/easconnector/easconnector/config"
	"github.com/easconnector/easconnector/internal/humanize"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/server"
)

const syncHelp = `Runs one sync now and prints what it did. A full sync reads every device
partnership and mailbox; a quick sync only what can have changed (in a
process that has not synced before, it runs as a full one). --approve ID
applies a plan that a guard held (or that 'easconnector plan' saved).

Locally it needs the state directory to itself: while the service runs,
ask it instead with --remote (its admin URL; the token comes from
--token-file or the configuration). With --wait, sync --remote follows the
sync it asked for until it ends, prints its result and exits with the codes
below, as a local sync does; without it, it prints the sync's id and exits
0 once the service has accepted the request.

Progress goes to stderr; stdout carries only the result. When stdout is not
a terminal the result is a plain summary, one "name: value" per line.

Exit codes:
  0  the sync ran and every write succeeded
  1  error: configuration, state directory, Exchange unreachable or login
     refused, MDM unreadable (nothing was written), or interrupted
  2  usage
  3  a guard stopped the sync before any write: the plan is held; review it
     with 'easconnector plan --show ID', apply it with 'sync --approve ID'
  4  the sync ran, but some mailbox writes failed (retried next sync)`

// syncFlags are the flags of sync.
type syncFlags struct {
	full, quick, dryRun, json, verbose bool
	wait                               bool
	waitTimeout                        time.Duration
	approve                            string
	remote                             string
	srv                                serverFlags
}

func runSync(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("sync", "--full|--quick [--dry-run] [--approve ID] [--json] [--config file] [--remote URL [--token-file file] [--wait]]", stderr)
	var f syncFlags
	fs.BoolVar(&f.full, "full", false, "read every partnership and mailbox, and re-assert the organization settings")
	fs.BoolVar(&f.quick, "quick", false, "read only what can have changed")
	fs.BoolVar(&f.dryRun, "dry-run", false, "decide and plan, write nothing (see also 'easconnector plan')")
	fs.StringVar(&f.approve, "approve", "", "apply the held plan with this id")
	fs.BoolVar(&f.json, "json", false, "print the result as JSON")
	fs.BoolVar(&f.verbose, "v", false, "log at the configured level (default: warnings only)")
	fs.BoolVar(&f.wait, "wait", false, "with --remote: follow the requested sync until it ends and exit with its result's code")
	fs.DurationVar(&f.waitTimeout, "wait-timeout", 6*time.Hour, "with --wait: give up (exit 1) when the sync has not ended after this long")
	f.srv = addServerFlags(fs, "remote", "configuration file", "ask the running service at this admin URL (http(s)://host:port) instead of syncing here")
	withHelp(fs, syncHelp)
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	f.remote = *f.srv.server
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "easconnector sync: "+format+"\n", a...)
		fs.Usage()
		return exitUsage
	}
	switch {
	case f.full && f.quick:
		return usage("--full and --quick exclude each other")
	case f.approve != "" && (f.full || f.quick || f.dryRun):
		return usage("--approve applies a held plan as it is: it takes no --full, --quick or --dry-run")
	case f.approve == "" && !f.full && !f.quick:
		return usage("say --full or --quick")
	case f.remote != "" && f.dryRun:
		return usage("--dry-run runs locally; for a service's view use 'easconnector plan'")
	case f.wait && f.remote == "":
		return usage("--wait follows a sync of a running service: give --remote URL (a local sync always runs to its end)")
	case f.waitTimeout <= 0:
		return usage("--wait-timeout must be positive, got %s", f.waitTimeout)
	}
	if f.remote != "" {
		return syncRemote(ctx, f, stdout, stderr)
	}
	return syncLocal(ctx, f, stdout, stderr)
}

// syncRemote asks a running service for a sync (or an approval) and
// prints its id; with --wait it then follows that sync to its end.
func syncRemote(ctx context.Context, f syncFlags, stdout, stderr io.Writer) int {
	c, err := f.srv.client(true)
	if err != nil {
		fmt.Fprintf(stderr, "easconnector sync: %v\n", err)
		return exitFailed
	}
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	// Without --wait the request's answer is the output; with it, the
	// answer is progress (stderr) and the sync's result is the output.
	msgOut := stdout
	if f.wait {
		msgOut = stderr
	}
	var id string
	if f.approve != "" {
		var resp server.ApproveResponse
		if err := c.call(cctx, "POST", "/api/v1/plans/"+url.PathEscape(f.approve)+"/approve", nil, nil, &resp); err != nil {
			fmt.Fprintf(stderr, "easconnector sync: %v\n", err)
			return exitFailed
		}
		if f.json && !f.wait {
			return printJSON(stdout, stderr, resp)
		}
		fmt.Fprintf(msgOut, "Plan %s approved; sync %s applies it.\n", f.approve, resp.SyncID)
		id = resp.SyncID
	} else {
		kind := "quick"
		if f.full {
			kind = "full"
		}
		var resp server.TriggerResponse
		if err := c.call(cctx, "POST", "/api/v1/syncs", nil, server.TriggerRequest{Kind: kind}, &resp); err != nil {
			fmt.Fprintf(stderr, "easconnector sync: %v\n", err)
			return exitFailed
		}
		if f.json && !f.wait {
			return printJSON(stdout, stderr, resp)
		}
		if resp.Coalesced {
			fmt.Fprintf(msgOut, "A sync is running; the %s sync joins the pending sync %s.\n", kind, resp.ID)
		} else {
			fmt.Fprintf(msgOut, "Sync %s (%s) requested.\n", resp.ID, kind)
		}
		id = resp.ID
	}
	if !f.wait {
		return exitOK
	}
	return waitRemote(ctx, c, id, f, stdout, stderr)
}

// Polling of sync --wait; a test shortens the interval.
var (
	waitPoll = 2 * time.Second
	// waitErrors is how many API calls in a row may fail (a service
	// restarting, a network blip) before --wait gives up.
	waitErrors = 5
)

// waitRemote polls the service's recent syncs (GET /api/v1/syncs, which
// lists the running sync first, then the finished ones, newest first)
// until sync id has ended, and maps its result onto sync's exit codes. A
// sync that has not started yet (queued behind a running one) is not
// listed: that is waiting, not an error.
func waitRemote(ctx context.Context, c *apiClient, id string, f syncFlags, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(ctx, f.waitTimeout)
	defer cancel()
	start := time.Now()
	state, failures := "", 0
	q := url.Values{"limit": {strconv.Itoa(server.MaxLimit)}}
	for {
		var resp struct {
			Syncs []server.SyncResult `json:"syncs"`
		}
		cctx, ccancel := context.WithTimeout(ctx, apiTimeout)
		err := c.call(cctx, "GET", "/api/v1/syncs", q, nil, &resp)
		ccancel()
		switch {
		case err != nil && ctx.Err() != nil:
		case err != nil:
			failures++
			if failures >= waitErrors {
				fmt.Fprintf(stderr, "easconnector sync: following sync %s: %v (%d attempts in a row failed; the sync may still run: see 'easconnector status')\n", id, err, failures)
				return exitFailed
			}
		default:
			failures = 0
			now := "queued behind the running sync"
			for _, r := range resp.Syncs {
				if r.ID != id {
					continue
				}
				if r.Result != server.ResultRunning {
					return printRemoteResult(ctx, c, r, f, stdout, stderr)
				}
				now = "running"
			}
			if now != state {
				fmt.Fprintf(stderr, "Sync %s: %s (%s)\n", id, now, time.Since(start).Round(time.Second))
				state = now
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
				fmt.Fprintf(stderr, "easconnector sync: sync %s has not ended after --wait-timeout %s; it may still run: see 'easconnector status'\n", id, f.waitTimeout)
			} else {
				fmt.Fprintf(stderr, "easconnector sync: stopped following sync %s (%v); the service goes on with it\n", id, context.Cause(ctx))
			}
			return exitFailed
		case <-time.After(waitPoll):
		}
	}
}

// remoteExitCode maps a finished sync of the service onto the exit codes
// of a local sync. The API folds a partial sync (some mailbox writes
// failed, nothing else) into "failed" with the failures counted and no
// infrastructure error; that is exit 4, as locally.
func remoteExitCode(r server.SyncResult) int {
	switch r.Result {
	case server.ResultOK:
		return exitOK
	case server.ResultHeld:
		return exitHeld
	case server.ResultFailed:
		if r.Failures > 0 && strings.HasSuffix(r.Error, "mailbox writes failed; they are retried next sync") {
			return exitPartial
		}
	}
	return exitFailed
}

// remoteOutput is what sync --remote --wait --json prints.
type remoteOutput struct {
	Result   string            `json:"result"`
	ExitCode int               `json:"exit_code"`
	HeldPlan string            `json:"held_plan_id,omitempty"`
	Sync     server.SyncResult `json:"sync"`
}

// printRemoteResult prints the finished sync r and returns its exit code;
// for a held sync it names the plan to review.
func printRemoteResult(ctx context.Context, c *apiClient, r server.SyncResult, f syncFlags, stdout, stderr io.Writer) int {
	code := remoteExitCode(r)
	held := ""
	if r.Result == server.ResultHeld {
		var st server.Status
		cctx, cancel := context.WithTimeout(ctx, apiTimeout)
		if c.call(cctx, "GET", "/api/v1/status", nil, nil, &st) == nil && st.HeldPlan != nil && st.HeldPlan.SyncID == r.ID {
			held = st.HeldPlan.ID
		}
		cancel()
	}
	if f.json {
		if c := printJSON(stdout, stderr, remoteOutput{Result: r.Result, ExitCode: code, HeldPlan: held, Sync: r}); c != exitOK {
			return c
		}
		return code
	}
	if !humanOutput(stdout) {
		// The same names as a local sync's plain summary.
		line := func(k string, v any) { fmt.Fprintf(stdout, "%s: %v\n", k, v) }
		line("sync", r.ID)
		line("kind", r.Kind)
		if r.Trigger != "" {
			line("trigger", r.Trigger)
		}
		line("result", r.Result)
		if !r.End.IsZero() {
			line("duration_seconds", fmt.Sprintf("%.3f", r.End.Sub(r.Start).Seconds()))
		}
		line("writes", r.Writes)
		line("failures", r.Failures)
		for _, c := range sortedCounts(r.Counts) {
			line("decision "+c.key, c.n)
		}
		if held != "" {
			line("held_plan", held)
		}
		if r.Error != "" {
			line("error", r.Error)
		}
		return code
	}
	took := "-"
	if !r.End.IsZero() {
		took = r.End.Sub(r.Start).Round(10 * time.Millisecond).String()
	}
	kv := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(kv, "%s:\t%s\n", k, fmt.Sprintf(format, a...)) }
	row("Sync", "%s (%s%s)", r.ID, r.Kind, orEmpty(", ", r.Trigger))
	row("Result", "%s", r.Result)
	row("Took", "%s", took)
	row("Writes", "%s mailboxes written, %s failed", humanize.Num(r.Writes), humanize.Num(r.Failures))
	for _, c := range sortedCounts(r.Counts) {
		row("Devices "+c.key, "%s", humanize.Num(c.n))
	}
	if r.Error != "" {
		row("Error", "%s", r.Error)
	}
	kv.Flush()
	switch {
	case held != "":
		fmt.Fprintf(stdout, "\nThe guard stopped the sync before any write. Plan %s is held:\n", held)
		fmt.Fprintf(stdout, "  review it:  easconnector plan --show %s\n", held)
		fmt.Fprintf(stdout, "  apply it:   easconnector sync --approve %s --remote %s\n", held, c.base.Redacted())
	case code == exitPartial:
		fmt.Fprintln(stdout, "\nSome mailbox writes failed; the service retries them next sync (the failed mailboxes are in its log).")
	}
	return code
}

func orEmpty(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

// cliLogger is the logger of the one-shot commands: warnings and errors
// only, unless -v asks for the configured level.
func cliLogger(cfg *config.Config, w io.Writer, verbose bool) *slog.Logger {
	if verbose {
		return cfg.NewLogger(w)
	}
	c := *cfg
	if c.Log.Level == "debug" || c.Log.Level == "info" {
		c.Log.Level = "warn"
	}
	return c.NewLogger(w)
}

func syncLocal(ctx context.Context, f syncFlags, stdout, stderr io.Writer) int {
	cfg, err := config.Load(*f.srv.config)
	if err != nil {
		printStartFailure(stderr, "sync", *f.srv.config, err)
		return exitFailed
	}
	log := cliLogger(cfg, stderr, f.verbose)
	prog := newProgress(stderr, isTerminal(stderr))
	t := cfg.Sync.ShutdownTimeout.Duration
	mode := modeOnce
	if f.dryRun {
		mode = modeDryRun
	}
	a, err := startApp(ctx, cfg, log, appOptions{mode: mode, progress: prog.event, writeGrace: writeGrace(t), lockCommand: "sync"})
	if err != nil {
		printStartFailure(stderr, "sync", *f.srv.config, err)
		return exitFailed
	}

	req := pipeline.SyncRequest{Kind: pipeline.SyncQuick, DryRun: f.dryRun, ApproveID: f.approve, Trigger: triggerCLI}
	if f.full {
		req.Kind = pipeline.SyncFull
	}
	rep, syncErr := a.engine.Sync(ctx, req)
	prog.finish()
	stopStart := time.Now()
	if syncErr == nil && ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, t)
		a.drainNotices(dctx)
		cancel()
	}
	sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), stopStart.Add(t))
	defer cancel()
	stopErr := a.stop(sctx)

	code := syncExitCode(rep, syncErr)
	if stopErr != nil {
		fmt.Fprintf(stderr, "easconnector sync: stop: %v\n", stopErr)
		code = max(code, exitFailed)
	}
	if f.json {
		if c := printJSON(stdout, stderr, syncOutput{Result: pipeline.ResultOf(rep, syncErr), ExitCode: code, Error: errText(syncErr), Report: rep}); c != exitOK {
			return c
		}
		return code
	}
	switch {
	case rep != nil && humanOutput(stdout):
		printReport(stdout, rep, syncErr)
	case rep != nil:
		printPlain(stdout, rep, syncErr, "")
	}
	if syncErr != nil && code == exitFailed {
		fmt.Fprintf(stderr, "easconnector sync: %s\n", explainSync(ctx, syncErr))
	}
	return code
}

// syncOutput is what sync --json prints.
type syncOutput struct {
	Result   string           `json:"result"` // ok, partial, held, degraded, failed, cancelled
	ExitCode int              `json:"exit_code"`
	Error    string           `json:"error,omitempty"`
	Report   *pipeline.Report `json:"report,omitempty"`
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func printJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(stderr, "easconnector: write JSON: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// syncExitCode maps a sync's outcome onto the documented exit codes.
func syncExitCode(rep *pipeline.Report, err error) int {
	var ge *pipeline.GuardError
	switch {
	case err == nil && rep != nil && rep.Failures > 0:
		return exitPartial
	case err == nil:
		return exitOK
	case errors.As(err, &ge) && ge.Kind == pipeline.GuardBlastRadius && !errors.Is(err, pipeline.ErrMDM):
		return exitHeld
	}
	return exitFailed
}

// explainSync says why a sync failed.
func explainSync(ctx context.Context, err error) string {
	switch {
	case ctx.Err() != nil:
		return fmt.Sprintf("interrupted (%v); the writes made are recorded in the state and the audit log", context.Cause(ctx))
	case errors.Is(err, pipeline.ErrMDM):
		return "the MDM could not be read or trusted, so nothing was changed: " + err.Error()
	case errors.Is(err, pipeline.ErrHeldPlanNotFound):
		return err.Error() + " (list what is held on the status page, or run 'easconnector plan')"
	case errors.Is(err, pipeline.ErrGuard):
		return err.Error()
	}
	return explain(err)
}

// humanOutput reports whether a person reads stdout (a terminal): sync and
// plan then print tables and hints, else a plain summary (printPlain). A
// test replaces it.
var humanOutput = isTerminal

// printPlain prints a sync's (or a dry run's) summary for a script: one
// "name: value" per line, names fixed, counts as bare integers, nothing
// aligned or wrapped. keptPlan is the plan `plan` kept, if any.
func printPlain(w io.Writer, rep *pipeline.Report, err error, keptPlan string) {
	line := func(k string, v any) { fmt.Fprintf(w, "%s: %v\n", k, v) }
	line("sync", rep.ID)
	line("kind", rep.Kind)
	line("dry_run", rep.DryRun)
	line("result", pipeline.ResultOf(rep, err))
	line("duration_seconds", fmt.Sprintf("%.3f", rep.Duration().Seconds()))
	if rep.Escalated != "" {
		line("escalated", rep.Escalated)
	}
	line("devices", rep.Devices)
	line("mailboxes", rep.Mailboxes)
	line("mdm_records", rep.MDMRecords)
	if rep.DryRun {
		line("would_write_mailboxes", rep.Counts.Writes)
		line("would_change_entries", rep.Counts.AllowAdds+rep.Counts.AllowRemoves+rep.Counts.BlockAdds+rep.Counts.BlockRemoves)
		line("would_revoke", rep.Counts.Revocations)
	} else {
		line("writes", rep.Writes)
		line("changes", rep.Changes)
		line("failures", rep.Failures)
	}
	line("conflicts", rep.Conflicts)
	line("skipped", rep.SkippedTotal())
	line("guard", rep.Guard.Result)
	for _, c := range sortedCounts(rep.CountsByDecision) {
		line("decision "+c.key, c.n)
	}
	for _, c := range sortedCounts(rep.CountsByReason) {
		line("reason "+c.key, c.n)
	}
	for _, fl := range rep.Failed {
		line("failed_mailbox", orDash(fl.Mailbox)+": "+fl.Error)
	}
	if rep.Held != nil {
		line("held_plan", rep.Held.ID)
	}
	if keptPlan != "" {
		line("kept_plan", keptPlan)
	}
	if err != nil {
		line("error", err)
	}
}

// printReport prints a sync's summary.
func printReport(w io.Writer, rep *pipeline.Report, err error) {
	result := pipeline.ResultOf(rep, err)
	what := string(rep.Kind) + " sync"
	if rep.DryRun {
		what = "Dry run of a " + what
	} else {
		what = strings.ToUpper(what[:1]) + what[1:]
	}
	fmt.Fprintf(w, "\n%s %s: %s in %s\n", what, rep.ID, result, rep.Duration().Round(10*time.Millisecond))
	if rep.Escalated != "" {
		fmt.Fprintf(w, "(ran as a full sync: %s)\n", rep.Escalated)
	}
	fmt.Fprintln(w)

	printCountTables(w, sortedCounts(rep.CountsByDecision), sortedCounts(rep.CountsByReason))
	fmt.Fprintln(w)

	kv := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(kv, "%s\t%s\n", k, fmt.Sprintf(format, a...)) }
	row("Devices", "%s partnerships on %s mailboxes; MDM: %s records", humanize.Num(rep.Devices), humanize.Num(rep.Mailboxes), humanize.Num(rep.MDMRecords))
	if rep.DryRun {
		row("Would write", "%s mailboxes, %s list entries (%s devices would lose access)", humanize.Num(rep.Counts.Writes),
			humanize.Num(rep.Counts.AllowAdds+rep.Counts.AllowRemoves+rep.Counts.BlockAdds+rep.Counts.BlockRemoves), humanize.Num(rep.Counts.Revocations))
	} else {
		row("Writes", "%s mailboxes written, %s list entries changed, %s failed", humanize.Num(rep.Writes), humanize.Num(rep.Changes), humanize.Num(rep.Failures))
	}
	if rep.Conflicts > 0 {
		row("Conflicts", "%s administrator entries contradict the policy and were left alone (AdminOverride)", humanize.Num(rep.Conflicts))
	}
	if n := rep.SkippedTotal(); n > 0 {
		row("Skipped", "%s partnerships not acted on (%s)", humanize.Num(n), countList(rep.Skipped))
	}
	for _, o := range rep.Org {
		state := "applied"
		switch {
		case o.Error != "":
			state = "failed: " + o.Error
		case !o.Applied:
			state = "not applied"
		}
		target := o.Setting
		if o.Target != "" {
			target += " " + o.Target
		}
		row("Org", "%s: %s → %s (%s)", target, orDash(o.From), orDash(o.To), state)
	}
	for _, c := range rep.OrgConflicts {
		row("Org conflict", "%s", c)
	}
	for _, s := range rep.ShadowedExceptions {
		row("Shadowed", "%s", s)
	}
	for _, u := range rep.UntargetedReached {
		row("Untargeted", "%s", u)
	}
	if len(rep.Collisions) > 0 {
		row("Collisions", "%s device ids are enrolled by more than one user in the MDM (cloned or spoofed ids?)", humanize.Num(len(rep.Collisions)))
	}
	if len(rep.Refused) > 0 {
		row("Refused", "%s changes of the approved plan no longer apply (Exchange or the state changed since)", humanize.Num(len(rep.Refused)))
	}
	guard := rep.Guard.Result
	if rep.Guard.Message != "" {
		guard += ": " + rep.Guard.Message
	}
	row("Guard", "%s", guard)
	if rep.Notices > 0 {
		row("Notices", "%s mails to users queued", humanize.Num(rep.Notices))
	}
	kv.Flush()

	for i, fl := range rep.Failed {
		if i == 0 {
			fmt.Fprintln(w, "\nFailed mailboxes (retried next sync):")
		}
		if i == 10 {
			fmt.Fprintf(w, "  … and %d more\n", rep.Failures-10)
			break
		}
		fmt.Fprintf(w, "  %s: %s (%d attempts)\n", orDash(fl.Mailbox), fl.Error, fl.Attempts)
	}
	if rep.Held != nil {
		fmt.Fprintf(w, "\nThe guard stopped the sync before any write. Plan %s is held:\n", rep.Held.ID)
		fmt.Fprintf(w, "  review it:  easconnector plan --show %s\n", rep.Held.ID)
		fmt.Fprintf(w, "  apply it:   easconnector sync --approve %s\n", rep.Held.ID)
		fmt.Fprintln(w, "  or raise [guard] max_new_blocks / max_new_blocks_ratio if this is expected.")
	} else if rep.DryRun && rep.Guard.Result == pipeline.GuardHeld {
		fmt.Fprintln(w, "\nA real sync would stop at the guard; 'easconnector plan' keeps the plan for approval.")
	}
}

// printCountTables prints devices by decision beside devices by reason:
// names left-aligned, counts right-aligned.
func printCountTables(w io.Writer, decisions, reasons []count) {
	dw, rw, nw := len("DECISION"), len("REASON"), len("DEVICES")
	for _, c := range decisions {
		dw, nw = max(dw, len(c.key)), max(nw, len(humanize.Num(c.n)))
	}
	for _, c := range reasons {
		rw, nw = max(rw, len(c.key)), max(nw, len(humanize.Num(c.n)))
	}
	fmt.Fprintf(w, "%-*s  %*s     %-*s  %*s\n", dw, "DECISION", nw, "DEVICES", rw, "REASON", nw, "DEVICES")
	for i := range max(len(decisions), len(reasons)) {
		left := strings.Repeat(" ", dw+2+nw)
		if i < len(decisions) {
			left = fmt.Sprintf("%-*s  %*s", dw, decisions[i].key, nw, humanize.Num(decisions[i].n))
		}
		right := ""
		if i < len(reasons) {
			right = fmt.Sprintf("%-*s  %*s", rw, reasons[i].key, nw, humanize.Num(reasons[i].n))
		}
		fmt.Fprintf(w, "%s     %s\n", left, right)
	}
}

type count struct {
	key string
	n   int
}

// sortedCounts orders counts by size, then name.
func sortedCounts[K ~string](m map[K]int) []count {
	out := make([]count, 0, len(m))
	for k, n := range m {
		out = append(out, count{string(k), n})
	}
	slices.SortFunc(out, func(a, b count) int {
		if a.n != b.n {
			return b.n - a.n
		}
		return strings.Compare(a.key, b.key)
	})
	return out
}

func countList(m map[string]int) string {
	var parts []string
	for _, c := range sortedCounts(m) {
		parts = append(parts, c.key+" "+humanize.Num(c.n))
	}
	return strings.Join(parts, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

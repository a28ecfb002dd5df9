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
	"strings"
	"text/tabwriter"
	"time"

	"github.com/easconnector/easconnector/config"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/server"
)

const syncHelp = `Runs one sync now and prints what it did. A full sync reads every device
partnership and mailbox; a quick sync only what can have changed (in a
process that has not synced before, it runs as a full one). --approve ID
applies a plan that a guard held (or that 'easconnector plan' saved).

Locally it needs the state directory to itself: while the service runs,
ask it instead with --remote (its admin URL; the token comes from
--token-file or the configuration).

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
	approve                            string
	remote                             string
	srv                                serverFlags
}

func runSync(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("sync", "--full|--quick [--dry-run] [--approve ID] [--json] [--config file] [--remote URL [--token-file file]]", stderr)
	var f syncFlags
	fs.BoolVar(&f.full, "full", false, "read every partnership and mailbox, and re-assert the organization settings")
	fs.BoolVar(&f.quick, "quick", false, "read only what can have changed")
	fs.BoolVar(&f.dryRun, "dry-run", false, "decide and plan, write nothing (see also 'easconnector plan')")
	fs.StringVar(&f.approve, "approve", "", "apply the held plan with this id")
	fs.BoolVar(&f.json, "json", false, "print the result as JSON")
	fs.BoolVar(&f.verbose, "v", false, "log at the configured level (default: warnings only)")
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
	}
	if f.remote != "" {
		return syncRemote(ctx, f, stdout, stderr)
	}
	return syncLocal(ctx, f, stdout, stderr)
}

// syncRemote asks a running service for a sync (or an approval) and
// prints its id; it does not wait for the sync.
func syncRemote(ctx context.Context, f syncFlags, stdout, stderr io.Writer) int {
	c, err := f.srv.client(true)
	if err != nil {
		fmt.Fprintf(stderr, "easconnector sync: %v\n", err)
		return exitFailed
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	if f.approve != "" {
		var resp server.ApproveResponse
		if err := c.call(ctx, "POST", "/api/v1/plans/"+url.PathEscape(f.approve)+"/approve", nil, nil, &resp); err != nil {
			fmt.Fprintf(stderr, "easconnector sync: %v\n", err)
			return exitFailed
		}
		if f.json {
			return printJSON(stdout, stderr, resp)
		}
		fmt.Fprintf(stdout, "Plan %s approved; sync %s applies it.\n", f.approve, resp.SyncID)
		return exitOK
	}
	kind := "quick"
	if f.full {
		kind = "full"
	}
	var resp server.TriggerResponse
	if err := c.call(ctx, "POST", "/api/v1/syncs", nil, server.TriggerRequest{Kind: kind}, &resp); err != nil {
		fmt.Fprintf(stderr, "easconnector sync: %v\n", err)
		return exitFailed
	}
	if f.json {
		return printJSON(stdout, stderr, resp)
	}
	if resp.Coalesced {
		fmt.Fprintf(stdout, "A sync is running; the %s sync joins the pending sync %s.\n", kind, resp.ID)
	} else {
		fmt.Fprintf(stdout, "Sync %s (%s) requested.\n", resp.ID, kind)
	}
	return exitOK
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
		fmt.Fprintf(stderr, "easconnector sync: %v\n", err)
		return exitFailed
	}
	log := cliLogger(cfg, stderr, f.verbose)
	progOut := stdout
	if f.json {
		progOut = stderr
	}
	prog := newProgress(progOut, !f.json && isTerminal(stdout))
	t := cfg.Sync.ShutdownTimeout.Duration
	mode := modeOnce
	if f.dryRun {
		mode = modeDryRun
	}
	a, err := startApp(ctx, cfg, log, appOptions{mode: mode, progress: prog.event, writeGrace: writeGrace(t), lockCommand: "sync"})
	if err != nil {
		fmt.Fprintf(stderr, "easconnector sync: %s\n", explainStart(err))
		return exitFailed
	}

	req := pipeline.SyncRequest{Kind: pipeline.SyncQuick, DryRun: f.dryRun, ApproveID: f.approve}
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
	if rep != nil {
		printReport(stdout, rep, syncErr)
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

// explainStart says what stopped the start-up, in an administrator's terms.
func explainStart(err error) string {
	var ce *connectError
	if errors.As(err, &ce) {
		return "Exchange: " + explain(ce.err)
	}
	return err.Error()
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
	row("Devices", "%s partnerships on %s mailboxes; MDM: %s records", num(rep.Devices), num(rep.Mailboxes), num(rep.MDMRecords))
	if rep.DryRun {
		row("Would write", "%s mailboxes, %s list entries (%s devices would lose access)", num(rep.Counts.Writes),
			num(rep.Counts.AllowAdds+rep.Counts.AllowRemoves+rep.Counts.BlockAdds+rep.Counts.BlockRemoves), num(rep.Counts.Revocations))
	} else {
		row("Writes", "%s mailboxes written, %s list entries changed, %s failed", num(rep.Writes), num(rep.Changes), num(rep.Failures))
	}
	if rep.Conflicts > 0 {
		row("Conflicts", "%s administrator entries contradict the policy and were left alone (AdminOverride)", num(rep.Conflicts))
	}
	if n := rep.SkippedTotal(); n > 0 {
		row("Skipped", "%s partnerships not acted on (%s)", num(n), countList(rep.Skipped))
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
		row("Collisions", "%s device ids are enrolled by more than one user in the MDM (cloned or spoofed ids?)", num(len(rep.Collisions)))
	}
	if len(rep.Refused) > 0 {
		row("Refused", "%s changes of the approved plan no longer apply (Exchange or the state changed since)", num(len(rep.Refused)))
	}
	guard := rep.Guard.Result
	if rep.Guard.Message != "" {
		guard += ": " + rep.Guard.Message
	}
	row("Guard", "%s", guard)
	if rep.Notices > 0 {
		row("Notices", "%s mails to users queued", num(rep.Notices))
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
		dw, nw = max(dw, len(c.key)), max(nw, len(num(c.n)))
	}
	for _, c := range reasons {
		rw, nw = max(rw, len(c.key)), max(nw, len(num(c.n)))
	}
	fmt.Fprintf(w, "%-*s  %*s     %-*s  %*s\n", dw, "DECISION", nw, "DEVICES", rw, "REASON", nw, "DEVICES")
	for i := range max(len(decisions), len(reasons)) {
		left := strings.Repeat(" ", dw+2+nw)
		if i < len(decisions) {
			left = fmt.Sprintf("%-*s  %*s", dw, decisions[i].key, nw, num(decisions[i].n))
		}
		right := ""
		if i < len(reasons) {
			right = fmt.Sprintf("%-*s  %*s", rw, reasons[i].key, nw, num(reasons[i].n))
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
		parts = append(parts, c.key+" "+num(c.n))
	}
	return strings.Join(parts, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/easconnector/easconnector/config"
	"github.com/easconnector/easconnector/internal/humanize"
	"github.com/easconnector/easconnector/pipeline"
)

const planHelp = `Reads Exchange and the MDM, decides and plans exactly as a sync would,
writes nothing, prints every list change (mailbox, device, list, operation,
decision, reason) and keeps the change set as a held plan: apply it as it
with 'easconnector sync --approve ID' (or the status page's Approve button)
within guard.plan_max_age (24 hours by default); the approval applies only
the changes that still hold then. It works beside a running service.

Progress goes to stderr. When stdout is not a terminal, plan prints a
plain summary instead of the change table, one "name: value" per line
(kept_plan: ID among them); --show ID or --json give every change.

--show ID prints a held plan: one this command kept, or one a guard held.
--discard ID deletes a held plan, so that it can no longer be approved.
A plan this command keeps never marks the service degraded; only a guard's
hold does.

Exit codes: 0 planned (or nothing to change), 1 error, 2 usage, 3 a sync
would stop at the guard with this plan (it is kept for approval all the
same).`

func runPlan(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("plan", "[--full|--quick] [--json] [--config file] | --show ID [--json] | --discard ID", stderr)
	cfgPath := fs.String("config", defaultConfig, "configuration file")
	full := fs.Bool("full", false, "plan a full sync (the default)")
	quick := fs.Bool("quick", false, "plan a quick sync (in a new process it plans a full one)")
	show := fs.String("show", "", "print the held plan with this id")
	discard := fs.String("discard", "", "delete the held plan with this id")
	asJSON := fs.Bool("json", false, "print JSON")
	verbose := fs.Bool("v", false, "log at the configured level (default: warnings only)")
	withHelp(fs, planHelp)
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if *full && *quick {
		fmt.Fprintln(stderr, "easconnector plan: --full and --quick exclude each other")
		return exitUsage
	}
	if (*show != "" || *discard != "") && (*full || *quick) {
		fmt.Fprintln(stderr, "easconnector plan: --show and --discard act on a held plan; each takes no --full or --quick")
		return exitUsage
	}
	if *show != "" && *discard != "" {
		fmt.Fprintln(stderr, "easconnector plan: --show and --discard exclude each other")
		return exitUsage
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "easconnector plan: %v\n", err)
		return exitFailed
	}
	if *show != "" {
		return showPlan(cfg, *show, *asJSON, stdout, stderr)
	}
	if *discard != "" {
		return discardPlan(cfg, *discard, stdout, stderr)
	}

	log := cliLogger(cfg, stderr, *verbose)
	prog := newProgress(stderr, isTerminal(stderr))
	a, err := startApp(ctx, cfg, log, appOptions{mode: modeDryRun, progress: prog.event})
	if err != nil {
		printStartFailure(stderr, "plan", *cfgPath, err)
		return exitFailed
	}
	kind := pipeline.SyncFull
	if *quick {
		kind = pipeline.SyncQuick
	}
	rep, syncErr := a.engine.Sync(ctx, pipeline.SyncRequest{Kind: kind, DryRun: true})
	prog.finish()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Sync.ShutdownTimeout.Duration)
	defer cancel()
	if err := a.stop(sctx); err != nil {
		log.Warn("stop", "err", err)
	}
	code := syncExitCode(rep, syncErr)
	if code != exitOK && code != exitHeld {
		fmt.Fprintf(stderr, "easconnector plan: %s\n", explainSync(ctx, syncErr))
		return exitFailed
	}

	// Keep the change set for approval.
	var hp *pipeline.HeldPlan
	if rep.Counts.Writes > 0 {
		var guard error
		if code == exitHeld {
			guard = syncErr
		}
		if hp, err = pipeline.NewHeldPlan(rep.ID, rep.Kind, pipeline.HeldByPlan, rep.Plans, rep.Devices, guard, time.Now()); err == nil {
			err = pipeline.SaveHeldPlan(cfg.Sync.StateDir, hp)
		}
		if err != nil {
			fmt.Fprintf(stderr, "easconnector plan: keep the plan: %v\n", err)
			return exitFailed
		}
	}

	if *asJSON {
		out := planOutput{Report: rep, ExitCode: code}
		if hp != nil {
			out.HeldPlanID = hp.ID
		}
		if c := printJSON(stdout, stderr, out); c != exitOK {
			return c
		}
		return code
	}
	if !humanOutput(stdout) {
		id := ""
		if hp != nil {
			id = hp.ID
		}
		printPlain(stdout, rep, syncErr, id)
		return code
	}
	printChanges(stdout, rep.Plans)
	printReport(stdout, rep, syncErr)
	if hp == nil {
		fmt.Fprintln(stdout, "\nNothing to change: Exchange is in line with the policy.")
		return code
	}
	fmt.Fprintf(stdout, "\nPlan %s kept: %s mailboxes, %s list changes.\n", hp.ID, humanize.Num(hp.Counts.Writes),
		humanize.Num(hp.Counts.AllowAdds+hp.Counts.AllowRemoves+hp.Counts.BlockAdds+hp.Counts.BlockRemoves))
	fmt.Fprintf(stdout, "  review it:  easconnector plan --show %s\n", hp.ID)
	fmt.Fprintf(stdout, "  apply it:   easconnector sync --approve %s   (within %s)\n", hp.ID, hours(cfg.Guard.PlanMaxAge.Duration))
	fmt.Fprintf(stdout, "  drop it:    easconnector plan --discard %s\n", hp.ID)
	if len(rep.Org) > 0 {
		fmt.Fprintln(stdout, "Organization settings (Org above) are not part of the plan: the next full sync asserts them.")
	}
	return code
}

// hours formats a whole number of hours: "24 hours".
func hours(d time.Duration) string {
	if d%time.Hour != 0 {
		return humanize.Short(d)
	}
	return fmt.Sprintf("%d hours", d/time.Hour)
}

// planOutput is what plan --json prints.
type planOutput struct {
	HeldPlanID string           `json:"held_plan_id,omitempty"`
	ExitCode   int              `json:"exit_code"`
	Report     *pipeline.Report `json:"report"`
}

// printChanges prints one row per list change.
func printChanges(w io.Writer, plans []pipeline.PlannedMailbox) {
	if len(plans) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MAILBOX\tDEVICE\tLIST\tOP\tDECISION\tREASON")
	for i := range plans {
		p := &plans[i]
		mb := p.Mailbox
		if mb == "" {
			mb = p.Identity
		}
		for _, c := range p.Changes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", mb, c.DeviceID, c.List, c.Op, c.Decision, c.Reason)
		}
		for _, c := range p.Conflicts {
			fmt.Fprintf(tw, "%s\t%s\t-\tnone\t%s\t%s (kept: %s)\n", mb, c.DeviceID, c.Decision, pipeline.ReasonAdminOverride, c.Reason)
		}
	}
	tw.Flush()
}

// showPlan prints a held plan.
func showPlan(cfg *config.Config, id string, asJSON bool, stdout, stderr io.Writer) int {
	hp, err := pipeline.LoadHeldPlan(cfg.Sync.StateDir, id)
	if err != nil {
		if errors.Is(err, pipeline.ErrHeldPlanNotFound) {
			fmt.Fprintf(stderr, "easconnector plan: no held plan %s in %s (plans expire after %s)\n", id, cfg.Sync.StateDir, hours(cfg.Guard.PlanMaxAge.Duration))
		} else {
			fmt.Fprintf(stderr, "easconnector plan: %v\n", err)
		}
		return exitFailed
	}
	if asJSON {
		return printJSON(stdout, stderr, hp)
	}
	age := time.Since(hp.CreatedAt).Round(time.Second)
	fmt.Fprintf(stdout, "Held plan %s, made %s ago by %s sync %s\n", hp.ID, age, hp.Kind, hp.SyncID)
	fmt.Fprintf(stdout, "Reason: %s\n", hp.Reason)
	fmt.Fprintf(stdout, "%s mailboxes to write; %s devices would lose access (of %s decided)\n\n",
		humanize.Num(hp.Counts.Writes), humanize.Num(hp.Counts.Revocations), humanize.Num(hp.Devices))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MAILBOX\tDEVICE\tLIST\tOP\tDECISION\tREASON\tNAME")
	for i := range hp.Plans {
		p := &hp.Plans[i]
		mb, name := p.Mailbox, p.Name
		if mb == "" { // a plan saved before addresses were kept
			mb = p.Identity
		}
		if name == "" {
			name = "-"
		}
		for _, c := range p.Changes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", mb, c.DeviceID, c.List, c.Op, c.Decision, c.Reason, name)
		}
	}
	tw.Flush()
	if err := hp.CheckApprovable(time.Now(), cfg.Guard.PlanMaxAge.Duration); err != nil {
		fmt.Fprintf(stdout, "\nThis plan can no longer be approved: %v\n", err)
	} else {
		fmt.Fprintf(stdout, "\nApply it: easconnector sync --approve %s\n", hp.ID)
	}
	return exitOK
}

// discardPlan deletes a held plan.
func discardPlan(cfg *config.Config, id string, stdout, stderr io.Writer) int {
	if err := pipeline.RemoveHeldPlan(cfg.Sync.StateDir, id); err != nil {
		if errors.Is(err, pipeline.ErrHeldPlanNotFound) {
			fmt.Fprintf(stderr, "easconnector plan: no held plan %s in %s\n", id, cfg.Sync.StateDir)
		} else {
			fmt.Fprintf(stderr, "easconnector plan: %v\n", err)
		}
		return exitFailed
	}
	fmt.Fprintf(stdout, "Held plan %s discarded.\n", id)
	return exitOK
}

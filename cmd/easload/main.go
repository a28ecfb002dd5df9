// Command easload is the connector's load-test tool: it runs the real
// easconnector binary as a process against exsim and graphsim processes on
// loopback, drives them through the scenarios of loadtest/scenario (steady
// churn, an enrolment burst, a CAS failure, a throttling storm, an MDM
// outage, kill -9 mid-apply, a 200,000-device organization), prints a
// report per scenario and exits 1 when a scenario's service objective
// broke. Every run is bounded in time and stops by itself.
//
//	easload                       # every scenario, short versions (make loadtest)
//	easload -full -scenario steady
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/easconnector/easconnector/loadtest/bed"
	"github.com/easconnector/easconnector/loadtest/scenario"
)

// Exit codes.
const (
	exitOK     = 0
	exitBroken = 1 // an objective broke
	exitFailed = 2 // usage, or the run could not be carried out
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage: easload [-scenario a,b] [-full] [-bin dir] [-dir dir] [-json file]

Runs load-test scenarios against the real connector binary and the
simulators as separate processes, all on loopback, and reports for each:
sync durations, change-to-enforcement lag, cmdlets/s, errors, and the
connector's peak RSS and CPU. Exits 1 when a scenario's objective broke.

Scenarios (short version: what make loadtest runs; -full: the capacity run):
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("easload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	names := fs.String("scenario", "all", "comma-separated scenarios to run, or all")
	full := fs.Bool("full", false, "run the full versions (tens of minutes each) instead of the short ones")
	devices := fs.Int("devices", 0, "override every scenario's fleet size")
	binDir := fs.String("bin", "", "directory with easconnector, exsim and graphsim (default: beside this program; else they are built)")
	dir := fs.String("dir", "", "directory for the runs' configurations, state and logs (default: a new temporary directory)")
	jsonOut := fs.String("json", "", "also write the reports as JSON to this file")
	seed := fs.Uint64("seed", 1, "fleet seed")
	list := fs.Bool("list", false, "list the scenarios with their objectives and durations, and exit")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		printList(stderr, scenario.Short)
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	switch err := fs.Parse(args); {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case err != nil:
		return exitFailed
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "easload: unexpected argument %q\n", fs.Arg(0))
		return exitFailed
	}
	size := scenario.Short
	if *full {
		size = scenario.Full
	}
	if *list {
		printList(stdout, size)
		return exitOK
	}
	var scs []scenario.Scenario
	if *names == "all" {
		scs = scenario.All(size)
	} else {
		for _, n := range strings.Split(*names, ",") {
			sc, err := scenario.Get(strings.TrimSpace(n), size)
			if err != nil {
				fmt.Fprintf(stderr, "easload: -scenario: %v\n", err)
				return exitFailed
			}
			scs = append(scs, sc)
		}
	}
	if *devices != 0 {
		if *devices < 10 || *devices > 1_000_000 {
			fmt.Fprintf(stderr, "easload: -devices: must be between 10 and 1000000, got %d\n", *devices)
			return exitFailed
		}
		for i := range scs {
			scs[i].Devices = *devices
		}
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "easload-")
		if err != nil {
			fmt.Fprintf(stderr, "easload: %v\n", err)
			return exitFailed
		}
		*dir = d
	}
	bins, err := binaries(ctx, *binDir, *dir, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "easload: %v\n", err)
		return exitFailed
	}

	var reports []*scenario.Report
	code := exitOK
	for _, sc := range scs {
		rd, err := scenario.RunDir(*dir, sc.Name)
		if err != nil {
			fmt.Fprintf(stderr, "easload: %v\n", err)
			return exitFailed
		}
		fmt.Fprintf(stderr, "easload: %s: %s (logs in %s)\n", sc.Name, sc.About, rd)
		rep, err := scenario.Execute(ctx, sc, scenario.Options{Bins: bins, Dir: rd, Log: stderr, Seed: *seed})
		if err != nil {
			fmt.Fprintf(stderr, "easload: %s: %v (logs in %s)\n", sc.Name, err, rd)
			code = exitFailed
			if ctx.Err() != nil {
				break
			}
			continue
		}
		rep.Print(stdout)
		reports = append(reports, rep)
		if !rep.OK() && code == exitOK {
			code = exitBroken
		}
	}
	printSummary(stdout, reports)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(reports, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintf(stderr, "easload: -json: %v\n", err)
			return exitFailed
		}
	}
	return code
}

// binaries finds the three commands in dir (or beside easload), or builds
// them into work when no dir was given and none are beside it.
func binaries(ctx context.Context, dir, work string, stderr io.Writer) (map[string]string, error) {
	if dir != "" {
		return bed.Find(dir)
	}
	if self, err := os.Executable(); err == nil {
		if b, err := bed.Find(filepath.Dir(self)); err == nil {
			return b, nil
		}
	}
	root, err := bed.ModuleRoot(ctx)
	if err != nil {
		return nil, fmt.Errorf("no easconnector, exsim and graphsim beside easload (make build), and cannot build them: %w", err)
	}
	fmt.Fprintf(stderr, "easload: building %v from %s\n", bed.Commands, root)
	return bed.Build(ctx, root, filepath.Join(work, "bin"))
}

func printList(w io.Writer, size scenario.Size) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, sc := range scenario.All(size) {
		var objs []string
		for _, o := range sc.Objectives {
			objs = append(objs, o.Text)
		}
		fmt.Fprintf(tw, "  %s\t%d devices, about %s\t%s\n", sc.Name, sc.Devices, approx(sc), strings.Join(objs, "; "))
	}
	tw.Flush()
}

// approx is a scenario's expected duration: injection and settling plus
// start-up and the first and closing syncs (measured on a 2-core host at
// the zero profile: about 1 ms per device for both, measured).
func approx(sc scenario.Scenario) time.Duration {
	return (sc.Inject + sc.Settle + 10*time.Second + time.Duration(sc.Devices)*time.Millisecond).Round(10 * time.Second)
}

func printSummary(w io.Writer, reps []*scenario.Report) {
	if len(reps) == 0 {
		return
	}
	fmt.Fprintln(w, "\n== summary")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  scenario\tdevices\tresult\tfirst sync\tsync p95\tlag p50\tlag p95\tlag max\tcmdlets/s\tpeak RSS\tCPU")
	for _, r := range reps {
		res := "PASS"
		if !r.OK() {
			res = "FAIL"
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%d MiB\t%s\n", r.Scenario, r.Devices, res,
			r.FirstSync.Round(100*time.Millisecond), r.Syncs.P95.Round(10*time.Millisecond), r.Lag.P50.Round(time.Second),
			r.Lag.P95.Round(time.Second), r.Lag.Max.Round(time.Second), r.CmdletsPerSec, r.PeakRSS>>20, r.CPU.Round(100*time.Millisecond))
	}
	tw.Flush()
}

// Command easdemo runs the real connector against simulated systems: it
// starts Exchange (exsim), Intune (graphsim), fleet activity and an SMTP
// sink in this process, writes a configuration and its secret files into a
// directory, and runs `easconnector run` from that configuration as a child
// process. The simulators live here, not in the connector, so that the
// production binary links none of them (no WS-Man server with a default
// password, no SMTP server).
//
// Ctrl-C (or --duration) stops the connector the way a service manager
// does (SIGTERM; on Windows CTRL_BREAK), waits for it to save its state,
// then stops the simulators; a second Ctrl-C makes the connector exit at
// once.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/easconnector/easconnector/loadtest/exsim"
)

// Exit codes, as the connector's.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

const help = `Runs the connector against simulated systems:
  - Exchange (exsim): 2 Client Access servers behind WS-Management, the
    "lab" latency profile, organization default access level Quarantine;
  - Intune (graphsim): Microsoft Graph and its token endpoint, serving the
    same fleet's compliance;
  - an SMTP server on loopback that keeps every mail the connector sends;
  - fleet activity every --churn-every: new phones, compliance flips and
    unenrolments (--churn of the devices), applied to both simulators;
  - the connector itself: the easconnector binary (--connector) started as
    'easconnector run' with a generated configuration: a full sync at start,
    then a quick sync every minute.

It prints where to look (status page and token, metrics, the simulator's
control API, the configuration, logs and mails), then one status line.
Ctrl-C stops everything and exits 0.`

// options are the flags.
type options struct {
	devices    int
	seed       uint64
	listen     string
	dir        string
	duration   time.Duration
	churn      float64
	churnEvery time.Duration
	profile    string
	connector  string
}

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	again := make(chan struct{}, 1)
	go func() {
		s := <-sigs
		cancel(fmt.Errorf("received %s", s))
		<-sigs
		again <- struct{}{}
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, again))
}

// run parses args and runs the demo; a value on again (a second Ctrl-C)
// makes the connector exit without waiting.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, again <-chan struct{}) int {
	fs := flag.NewFlagSet("easdemo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.devices, "devices", 5000, "EAS devices in the simulated organization")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the generated organization")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8780", "address of the connector's status page and API")
	fs.StringVar(&o.dir, "dir", "", "directory for the configuration, state, logs and mails (default: a new temporary directory)")
	fs.DurationVar(&o.duration, "duration", 0, "stop by itself after this long (0: run until Ctrl-C)")
	fs.Float64Var(&o.churn, "churn", 0.005, "share of the devices that change at each activity step")
	fs.DurationVar(&o.churnEvery, "churn-every", 20*time.Second, "time between activity steps")
	fs.StringVar(&o.profile, "profile", exsim.ProfileLab, fmt.Sprintf("Exchange latency profile %v", exsim.ProfileNames()))
	fs.StringVar(&o.connector, "connector", "", "the easconnector binary to run (default: easconnector beside this program, else on PATH)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: easdemo [--devices n] [--duration d] [--listen addr] [--dir dir] [--connector path]\n\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\n%s\n", help)
	}
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case err != nil:
		return exitUsage
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "easdemo: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if msg := o.check(); msg != "" {
		fmt.Fprintf(stderr, "easdemo: %s\n", msg)
		return exitUsage
	}
	bin, err := findConnector(o.connector)
	if err != nil {
		fmt.Fprintf(stderr, "easdemo: %v\n", err)
		return exitUsage
	}
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	if err := demo(ctx, o, bin, stdout, again); err != nil {
		fmt.Fprintf(stderr, "easdemo: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// check returns what is wrong with the flags, or "".
func (o *options) check() string {
	switch {
	case o.devices < 10 || o.devices > 200_000:
		return fmt.Sprintf("--devices must be between 10 and 200000, got %d", o.devices)
	case o.churn <= 0 || o.churn > 0.5:
		return fmt.Sprintf("--churn must be in (0, 0.5], got %v", o.churn)
	case o.churnEvery < time.Second:
		return fmt.Sprintf("--churn-every must be at least 1s, got %s", o.churnEvery)
	case o.duration < 0:
		return fmt.Sprintf("--duration must not be negative, got %s", o.duration)
	}
	if _, err := exsim.LookupProfile(o.profile); err != nil {
		return fmt.Sprintf("--profile: %v", err)
	}
	return ""
}

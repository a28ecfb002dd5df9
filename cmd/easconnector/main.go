// Command easconnector keeps Exchange ActiveSync device access in line with
// the MDM's compliance verdict. This file dispatches subcommands; each lives
// in its own file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes. Scripts may rely on them; `sync` documents them in its help
// and the README.
const (
	exitOK      = 0
	exitFailed  = 1 // the command ran and found a problem (infrastructure: configuration, Exchange, MDM)
	exitUsage   = 2 // bad arguments (check: also a bad configuration)
	exitHeld    = 3 // a guard stopped the sync before any write; the plan is held for approval
	exitPartial = 4 // the sync ran, but some mailbox writes failed (they are retried next sync)
)

// defaultConfig is the --config default, relative to the working directory.
const defaultConfig = "easconnector.toml"

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// commands lists the subcommands in the order usage shows them.
var commands = []command{
	{"run", "run the connector as a service: scheduled syncs, admin API and status page", runRun},
	{"sync", "run one sync now (or ask a running service to)", runSync},
	{"plan", "show what a sync would change, and keep it for approval", runPlan},
	{"status", "show a running service's status", runStatus},
	{"devices", "list devices with the connector's decision, from a running service", runDevices},
	{"check", "test the connection to every Exchange server and report what works", runCheck},
	{"audit", "verify the audit log's hash chain (audit verify)", runAudit},
	{"service", "install, remove, start or stop the Windows service", runService},
	{"version", "print the version", runVersion},
}

func main() {
	if code, ok := runAsWindowsService(os.Args[1:]); ok {
		os.Exit(code)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := cancelOnSignal(cancel, os.Stderr)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// signalError is the cancellation cause of the command's context when a
// signal asks the process to stop.
type signalError struct{ sig os.Signal }

func (e *signalError) Error() string { return "received " + e.sig.String() }

// cancelOnSignal cancels the command's context on SIGINT or SIGTERM, so
// that it stops cleanly; a second signal exits at once (state files are
// written atomically, so that cannot corrupt them). stop ends the handling.
func cancelOnSignal(cancel context.CancelCauseFunc, stderr io.Writer) (stop func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			cancel(&signalError{s})
		case <-done:
			return
		}
		select {
		case s := <-sigs:
			fmt.Fprintf(stderr, "easconnector: %s again: exiting without waiting\n", s)
			os.Exit(exitFailed)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
	}
}

// run dispatches args[0] to its command and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	case "help":
		if len(args) == 1 {
			usage(stdout)
			return exitOK
		}
		if c := lookup(args[1]); c != nil && len(args) == 2 {
			// Help asked for is the output: stdout, exit 0.
			return c.run(ctx, []string{"-h"}, stdout, stdout)
		}
		fmt.Fprintf(stderr, "easconnector help: unknown command %q\n\n", strings.Join(args[1:], " "))
		usage(stderr)
		return exitUsage
	case "-version", "--version", "-V":
		return runVersion(ctx, nil, stdout, stderr)
	}
	if c := lookup(args[0]); c != nil {
		if wantsHelp(args[1:]) {
			return c.run(ctx, args[1:], stdout, stdout)
		}
		return c.run(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "easconnector: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

// lookup returns the command called name, or nil.
func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// wantsHelp reports whether args ask for a command's help (-h, -help or
// --help before any "--"): the help then goes to stdout, so that
// `easconnector sync --help | less` works.
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: easconnector <command> [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'easconnector help <command>' (or 'easconnector <command> --help') for the flags of a command;\n'easconnector --version' prints the version.\n")
}

// newFlags returns a FlagSet for a subcommand that reports errors to stderr
// and leaves exiting to run.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: easconnector %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// withHelp adds a description, printed after the flags by -h.
func withHelp(fs *flag.FlagSet, help string) {
	usage := fs.Usage
	fs.Usage = func() {
		usage()
		fmt.Fprintf(fs.Output(), "\n%s\n", help)
	}
}

// parseFlags parses args and maps the outcome to an exit code: -1 means go
// on.
func parseFlags(fs *flag.FlagSet, args []string) int {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case err != nil:
		return exitUsage
	case fs.NArg() > 0:
		fmt.Fprintf(fs.Output(), "easconnector %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return exitUsage
	}
	return -1
}

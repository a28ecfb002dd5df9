package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/easconnector/easconnector/config"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/runspace"
)

const runHelp = `Runs the connector until it is stopped: a quick sync every
[sync] quick_interval, a full sync daily at [sync] full_at (and at start when
the last one is more than a day old), the admin API, metrics and status page
on [server] listen.

SIGTERM or SIGINT (or stopping the Windows service) stops it cleanly: no new
sync starts, the writes in flight finish within [sync] shutdown_timeout, the
state is saved, the Exchange sessions are closed, and it exits 0. A second
signal exits at once.

Exit codes: 0 stopped cleanly, 1 failed (configuration, state directory,
Exchange login refused, or an unclean stop), 2 usage.`

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", "[--config file]", stderr)
	cfgPath := fs.String("config", defaultConfig, "configuration file")
	withHelp(fs, runHelp)
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		printStartFailure(stderr, "run", *cfgPath, err)
		return exitFailed
	}
	log := cfg.NewLogger(stderr)
	applyMemoryLimit(cfg, log)
	d, err := startDaemon(ctx, cfg, log, daemonOptions{})
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before start-up completed", "cause", context.Cause(ctx))
			return exitOK
		}
		cause, fix := diagnoseStart(err, *cfgPath)
		log.Error("start-up failed", "err", err, "cause", cause, "fix", fix)
		printStartFailure(stderr, "run", *cfgPath, err)
		return exitFailed
	}
	if err := d.serve(ctx); err != nil {
		return exitFailed
	}
	return exitOK
}

// printStartFailure says why a command could not start, the cause and the
// fix as check states them, and points at check for the whole picture.
func printStartFailure(w io.Writer, cmd, cfgPath string, err error) {
	cause, fix := diagnoseStart(err, cfgPath)
	fmt.Fprintf(w, "easconnector %s: cannot start: %v\n  cause: %s\n  fix:   %s\n", cmd, err, cause, fix)
	fmt.Fprintf(w, "  'easconnector check --config %s' tests Exchange, the MDM, the mail relay and the state directory in one go.\n", cfgPath)
}

// diagnoseStart turns a start-up error into its cause and the fix, in an
// administrator's terms.
func diagnoseStart(err error, cfgPath string) (cause, fix string) {
	var ce *connectError
	var fe *config.FieldError
	var de *config.Error
	var pe *fs.PathError
	switch {
	case errors.As(err, &ce):
		return "Exchange: " + explain(ce.err), exchangeFix(ce.err)
	case errors.Is(err, errLocked):
		return "another easconnector process (the service, or a sync or plan started by hand) uses [sync] state_dir",
			"stop it (systemctl stop easconnector, or Stop-Service easconnector), or ask the running service with --remote; " +
				"two services need two state directories"
	case strings.HasPrefix(err.Error(), "server.listen: ") && addrInUse(err):
		return "another process already listens on the admin address",
			"stop it, or give [server] listen another port (ss -ltnp shows who listens)"
	case strings.HasPrefix(err.Error(), "server.listen: ") && errors.Is(err, fs.ErrPermission):
		return "this account may not listen on the admin port",
			"use a port above 1023 in [server] listen, or grant CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE)"
	case errors.As(err, &de):
		return fmt.Sprintf("the configuration file is wrong at line %d, column %d", de.Line, de.Column), "correct " + cfgPath + " there (a typo in a key is an error too)"
	case errors.As(err, &fe):
		return "the configuration is wrong at " + fe.Field, "correct " + fe.Field + " in " + cfgPath + " (docs/operations.md describes every setting)"
	case errors.Is(err, fs.ErrNotExist) && errors.As(err, &pe):
		return pe.Path + " does not exist", "create it, or correct the setting that names it in " + cfgPath
	case errors.Is(err, fs.ErrPermission) && errors.As(err, &pe):
		return "this account may not use " + pe.Path,
			"run the service as the account that owns it (the state directory and the secret files must be owner-only)"
	case errors.Is(err, pipeline.ErrMDM), strings.HasPrefix(err.Error(), "mdm"):
		return "the MDM source cannot be set up", "correct the [mdm] settings; 'easconnector check' reads the MDM and names the missing permission"
	}
	return err.Error(), "run 'easconnector check --config " + cfgPath + "'; it tests each dependency and names the failing one"
}

// exchangeFix is the fix for a failure to open the first Exchange session.
func exchangeFix(err error) string {
	switch runspace.Classify(err) {
	case runspace.ClassAuth:
		return "correct exchange.user and its password (password_file or password_env) or the Kerberos settings; " +
			"the service does not retry a refused login, so that it cannot lock the account out"
	case runspace.ClassTLS:
		return "set exchange.ca_file to the CA that issued the servers' certificates, and name the servers as the certificates do"
	case runspace.ClassThrottle:
		return "close the account's other PowerShell sessions, or raise its throttling policy (PowerShellMaxConcurrency)"
	case runspace.ClassInit:
		return "give the account the Exchange management roles the connector needs (docs/operations.md), and check the /PowerShell/ virtual directory"
	case runspace.ClassTimeout, runspace.ClassTransport:
		return "check exchange.servers, exchange.port and exchange.https, and that this host reaches them (firewall, DNS)"
	}
	return "see the cause; 'easconnector check' tests every server"
}

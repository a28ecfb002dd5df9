package main

import (
	"context"
	"fmt"
	"io"

	"github.com/easconnector/easconnector/config"
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
		fmt.Fprintf(stderr, "easconnector run: %v\n", err)
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
		log.Error("start-up failed", "err", err)
		return exitFailed
	}
	if err := d.serve(ctx); err != nil {
		return exitFailed
	}
	return exitOK
}

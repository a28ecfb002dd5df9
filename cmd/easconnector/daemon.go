package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/easconnector/easconnector/config"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/pipeline/schedule"
	"github.com/easconnector/easconnector/server"
)

// daemon is the long-lived connector: the components of app, plus the
// scheduler that runs syncs and the admin server. start builds it in
// dependency order; serve runs it until its context ends and then stops it
// in reverse order within [sync] shutdown_timeout.
type daemon struct {
	app      *app
	log      *slog.Logger
	sched    *schedule.Scheduler
	srv      *server.Server // nil when server.listen = ""
	ln       net.Listener
	backend  *backend
	shutdown time.Duration
}

// daemonOptions tune startDaemon.
type daemonOptions struct {
	// listener, if set, replaces listening on server.listen (tests).
	listener net.Listener
	// lockCommand names the command in the state directory's lock file.
	lockCommand string
}

// The shutdown budget T ([sync] shutdown_timeout) is shared out so that the
// whole stop fits in it: a write in flight gets T/2 to finish, the
// cancelled sync T×3/4 to return (the engine then saves the state), the
// admin server at most serverStopMax to finish its requests, and closing
// the Exchange sessions what is left (at least closeFloor).
const serverStopMax = 5 * time.Second

func writeGrace(t time.Duration) time.Duration   { return t / 2 }
func syncStopWait(t time.Duration) time.Duration { return t * 3 / 4 }

// startDaemon starts the components in dependency order: config (given) →
// logger (given) → state directory → runspace pool → Exchange client →
// MDM source → caches → notifier → engine → scheduler → admin server.
// What only depends on the file (secrets, schedule, server options, the MDM
// source, which makes no request when built) is checked before connecting
// to Exchange, so that a mistake in the file fails at once rather than after
// waiting for Exchange.
func startDaemon(ctx context.Context, cfg *config.Config, log *slog.Logger, o daemonOptions) (d *daemon, err error) {
	t := cfg.Sync.ShutdownTimeout.Duration
	if o.lockCommand == "" {
		o.lockCommand = "run"
	}
	// The file's mistakes first, before waiting for Exchange.
	sopts, err := cfg.ScheduleOptions()
	if err != nil {
		return nil, err
	}
	vopts := server.Options{Listen: server.DefaultListen}
	if cfg.Server.Listen != "" {
		if vopts, err = cfg.ServerOptions(); err != nil {
			return nil, err
		}
	}
	// The devices filter accepts exactly the engine's reasons.
	vopts.Reasons = make([]string, len(pipeline.Reasons))
	for i, r := range pipeline.Reasons {
		vopts.Reasons[i] = string(r)
	}
	a, err := startApp(ctx, cfg, log, appOptions{mode: modeDaemon, writeGrace: writeGrace(t), lockCommand: o.lockCommand})
	if err != nil {
		return nil, err
	}
	d = &daemon{app: a, log: log, shutdown: t}
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t)
			defer cancel()
			_ = a.stop(sctx)
			if d.ln != nil {
				d.ln.Close()
			}
		}
	}()

	marks := a.state.Marks()
	sopts.LastFull = marks.LastFull
	sopts.LastSync = marks.LastFull
	if marks.LastQuick.After(sopts.LastSync) {
		sopts.LastSync = marks.LastQuick
	}
	sopts.ShutdownTimeout = syncStopWait(t)
	sopts.Logger = log
	d.backend = newBackend(a, cfg)
	if d.sched, err = schedule.New(sopts, d.backend.runSync); err != nil {
		return d, fmt.Errorf("sync: %w", err)
	}
	d.backend.sched = d.sched

	if cfg.Server.Listen == "" && o.listener == nil {
		log.Info("admin server disabled (server.listen is empty)")
		return d, nil
	}
	vopts.Backend = d.backend
	vopts.Metrics = append(a.metricSets(), d.sched.Metrics())
	vopts.ProcessMetrics = true
	vopts.Logger = log
	vopts.Version = versionString()
	vopts.ShutdownTimeout = min(serverStopMax, t/2)
	if d.srv, err = server.New(vopts); err != nil {
		return d, err
	}
	if d.ln = o.listener; d.ln == nil {
		if d.ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", d.srv.Addr()); err != nil {
			return d, fmt.Errorf("server.listen: %w", err)
		}
	}
	return d, nil
}

// addr is the admin server's address ("" when it is disabled).
func (d *daemon) addr() string {
	if d.ln == nil {
		return ""
	}
	return d.ln.Addr().String()
}

// errComponentStopped is the cause of the daemon's context when a
// component stopped by itself.
var errComponentStopped = errors.New("component stopped")

// serve runs the scheduler and the admin server until ctx ends or one of
// them fails, then stops everything in reverse order of start: the admin
// server and the scheduler (which cancels the running sync with
// schedule.ErrStopping and waits for it), then the engine, notifier,
// caches and Exchange sessions. It returns nil after a clean stop.
func (d *daemon) serve(ctx context.Context) error {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type result struct {
		who string
		err error
	}
	done := make(chan result, 2)
	running := 1
	go func() { done <- result{"scheduler", d.sched.Run(rctx)} }()
	if d.srv != nil {
		running++
		go func() { done <- result{"admin server", d.srv.Serve(rctx, d.ln)} }()
		d.log.Info("easconnector running", "version", versionString(), "admin", d.addr())
	} else {
		d.log.Info("easconnector running", "version", versionString())
	}

	var errs []error
	var stopStart time.Time
	for running > 0 {
		var r result
		select {
		case <-rctx.Done():
			r = <-done
		case r = <-done:
		}
		running--
		if stopStart.IsZero() && rctx.Err() != nil {
			stopStart = time.Now()
			d.log.Info("stopping", "cause", context.Cause(rctx), "shutdown_timeout", d.shutdown)
		}
		switch {
		case rctx.Err() != nil:
			// Asked to stop: an error is a failure to stop cleanly.
			if r.err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", r.who, r.err))
			}
		default:
			// A component stopped before being asked to: stop the rest.
			err := r.err
			if err == nil {
				err = errors.New("stopped unexpectedly")
			}
			d.log.Error(r.who+" failed; stopping", "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", r.who, err))
			stopStart = time.Now()
			cancel(fmt.Errorf("%w: %s", errComponentStopped, r.who))
		}
	}
	if stopStart.IsZero() {
		stopStart = time.Now()
	}
	sctx, scancel := context.WithDeadline(context.WithoutCancel(ctx), stopStart.Add(d.shutdown))
	defer scancel()
	if err := d.app.stop(sctx); err != nil {
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	if err != nil {
		d.log.Error("stopped with errors", "err", err, "took", time.Since(stopStart).Round(time.Millisecond))
	} else {
		d.log.Info("stopped", "took", time.Since(stopStart).Round(time.Millisecond))
	}
	return err
}

// engine is shorthand for the daemon's engine.
func (d *daemon) engine() *pipeline.Engine { return d.app.engine }

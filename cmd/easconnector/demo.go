package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/easconnector/easconnector/config"
	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/graphsim"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/pipeline"
)

const demoHelp = `Runs the whole connector in one process against simulated systems:
  - Exchange (exsim): 2 Client Access servers behind WS-Management, the
    "lab" latency profile, organization default access level Quarantine;
  - Intune (graphsim): Microsoft Graph and its token endpoint, serving the
    same fleet's compliance;
  - an SMTP server on loopback that keeps every mail the connector sends;
  - fleet activity every --churn-every: new phones, compliance flips and
    unenrolments (--churn of the devices), applied to both simulators;
  - the connector itself, as 'easconnector run' with a generated
    configuration: a full sync at start, then a quick sync every minute.

It prints where to look (status page and token, metrics, the simulator's
control API, the configuration, logs and mails), then one status line.
Ctrl-C stops everything and exits 0.`

// demoOptions are the demo's flags.
type demoOptions struct {
	devices    int
	seed       uint64
	listen     string
	dir        string
	duration   time.Duration
	churn      float64
	churnEvery time.Duration
	profile    string
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("demo", "[--devices n] [--duration d] [--listen addr] [--dir dir]", stderr)
	var o demoOptions
	fs.IntVar(&o.devices, "devices", 5000, "EAS devices in the simulated organization")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the generated organization")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8780", "address of the connector's status page and API")
	fs.StringVar(&o.dir, "dir", "", "directory for the configuration, state, logs and mails (default: a new temporary directory)")
	fs.DurationVar(&o.duration, "duration", 0, "stop by itself after this long (0: run until Ctrl-C)")
	fs.Float64Var(&o.churn, "churn", 0.005, "share of the devices that change at each activity step")
	fs.DurationVar(&o.churnEvery, "churn-every", 20*time.Second, "time between activity steps")
	fs.StringVar(&o.profile, "profile", exsim.ProfileLab, fmt.Sprintf("Exchange latency profile %v", exsim.ProfileNames()))
	withHelp(fs, demoHelp)
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	switch {
	case o.devices < 10 || o.devices > 200_000:
		fmt.Fprintf(stderr, "easconnector demo: --devices must be between 10 and 200000, got %d\n", o.devices)
		return exitUsage
	case o.churn <= 0 || o.churn > 0.5:
		fmt.Fprintf(stderr, "easconnector demo: --churn must be in (0, 0.5], got %v\n", o.churn)
		return exitUsage
	case o.churnEvery < time.Second:
		fmt.Fprintf(stderr, "easconnector demo: --churn-every must be at least 1s, got %s\n", o.churnEvery)
		return exitUsage
	case o.duration < 0:
		fmt.Fprintf(stderr, "easconnector demo: --duration must not be negative, got %s\n", o.duration)
		return exitUsage
	}
	if _, err := exsim.LookupProfile(o.profile); err != nil {
		fmt.Fprintf(stderr, "easconnector demo: --profile: %v\n", err)
		return exitUsage
	}
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	if err := demo(ctx, o, stdout); err != nil {
		fmt.Fprintf(stderr, "easconnector demo: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// demoEnv is everything the demo started, stopped in reverse order.
type demoEnv struct {
	o        demoOptions
	dir      string
	sim      *exsim.Sim
	control  *http.Server
	ctlAddr  string
	graph    *graphsim.Server
	graphURL string
	mail     *mailSink
	stops    []func()

	mu   sync.Mutex
	last pipeline.ProgressEvent // the running sync's progress
}

// progress keeps the running sync's latest progress for the status line.
func (e *demoEnv) progress(ev pipeline.ProgressEvent) {
	e.mu.Lock()
	e.last = ev
	e.mu.Unlock()
}

func (e *demoEnv) stop() {
	for i := len(e.stops) - 1; i >= 0; i-- {
		e.stops[i]()
	}
}

func demo(ctx context.Context, o demoOptions, stdout io.Writer) (err error) {
	env := &demoEnv{o: o}
	defer env.stop()
	if env.dir = o.dir; env.dir == "" {
		if env.dir, err = os.MkdirTemp("", "easconnector-demo-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(env.dir, 0o700); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "easconnector demo: starting simulators (%s devices) in %s\n", num(o.devices), env.dir)
	if err := env.startSimulators(); err != nil {
		return err
	}
	cfgPath, token, err := env.writeConfig()
	if err != nil {
		return err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return fmt.Errorf("generated configuration: %w", err)
	}
	logPath := filepath.Join(env.dir, "easconnector.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	env.stops = append(env.stops, func() { logFile.Close() })
	log := cfg.NewLogger(logFile)

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("status page: %w (is another demo running? pick another address with --listen)", err)
	}
	d, err := startDaemon(ctx, cfg, log, daemonOptions{listener: ln, lockCommand: "demo", progress: env.progress})
	if err != nil {
		ln.Close()
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("start the connector: %w (see %s)", err, logPath)
	}
	dctx, stopDaemon := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, 1)
	go func() { served <- d.serve(dctx) }()

	base := "http://" + d.addr()
	tokenFile := filepath.Join(env.dir, "api.token")
	self := selfName()
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w)
	for _, l := range [][2]string{
		{"Status page", base + "/   (sign in with any user name and the admin token as password)"},
		{"Admin token", token + "   (for the page, the API and the page's Sync and Approve buttons; also in " + tokenFile + ")"},
		{"Metrics", base + "/metrics"},
		{"API", "curl -H 'Authorization: Bearer " + token + "' '" + base + "/api/v1/devices?decision=Block'"},
		{"Exchange sim", "http://" + env.ctlAddr + "/v1/status   (control API: counters, devices, faults)"},
		{"Configuration", cfgPath},
		{"Logs", logPath},
		{"Mails to users", env.mail.dir + "   (one .eml file per message)"},
	} {
		fmt.Fprintf(w, "  %s\t%s\n", l[0], l[1])
	}
	w.Flush()
	fmt.Fprintf(stdout, `
  Try:  %[1]s status --server %[2]s --token-file %[3]s
        %[1]s devices --server %[2]s --token-file %[3]s --decision Block --limit 10
        %[1]s sync --full --remote %[2]s --token-file %[3]s

A full sync runs now; then a quick sync every minute, while the simulated
fleet changes every %[4]s. Ctrl-C stops everything.

`, self, base, tokenFile, o.churnEvery)

	var wg sync.WaitGroup
	wg.Go(func() { env.churnLoop(dctx, log) })
	live := newLiveLine(stdout, isTerminal(stdout))
	live.run(ctx, served, func() string { return env.summary(d) })

	stopDaemon()
	serveErr := <-served
	wg.Wait()
	live.done(env.summary(d))
	if serveErr != nil {
		return fmt.Errorf("the connector stopped with errors: %w (see %s)", serveErr, logPath)
	}
	fmt.Fprintf(stdout, "easconnector demo: stopped; everything it wrote is in %s\n", env.dir)
	return nil
}

// selfName is how to invoke this program again: the path it was started
// with (bin/easconnector under make demo), or plain easconnector.
func selfName() string {
	name := filepath.Base(os.Args[0])
	if name == "easconnector" || name == "easconnector.exe" {
		return os.Args[0]
	}
	return "easconnector"
}

// startSimulators starts exsim, its control API, graphsim and the mail sink.
func (e *demoEnv) startSimulators() error {
	now := time.Now().UTC().Truncate(time.Minute)
	popts := population.Options{Seed: e.o.seed, Devices: e.o.devices, Now: now}
	// Each simulator owns its population; both are generated from the same
	// options, so they describe the same fleet, and churnLoop changes them
	// in step.
	var err error
	e.sim, err = exsim.Start(exsim.Options{Population: population.Generate(popts), Listeners: 2, Profile: e.o.profile, Quiet: true, Seed: e.o.seed})
	if err != nil {
		return fmt.Errorf("exchange simulator: %w", err)
	}
	e.stops = append(e.stops, e.sim.Close)
	st := e.sim.Org().Settings()
	st.DefaultAccessLevel = exchange.LevelQuarantine
	if err := e.sim.Org().SetOrg(st); err != nil {
		return fmt.Errorf("exchange simulator: %w", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("exchange simulator control API: %w", err)
	}
	e.ctlAddr = ln.Addr().String()
	e.control = &http.Server{Handler: e.sim.ControlHandler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = e.control.Serve(ln)
	}()
	e.stops = append(e.stops, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if e.control.Shutdown(sctx) != nil {
			e.control.Close()
		}
		<-served
	})

	secret, err := randomHex(24)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(e.dir, "graph.secret"), []byte(secret+"\n"), 0o600); err != nil {
		return err
	}
	e.graph = graphsim.New(population.Generate(popts), graphsim.Options{ClientSecret: secret})
	if e.graphURL, err = e.graph.Start(); err != nil {
		return fmt.Errorf("graph simulator: %w", err)
	}
	e.stops = append(e.stops, e.graph.Close)

	if e.mail, err = startMailSink(filepath.Join(e.dir, "mail")); err != nil {
		return fmt.Errorf("mail server: %w", err)
	}
	e.stops = append(e.stops, e.mail.close)
	return nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// writeConfig writes the connector's configuration and secret files for
// the simulators and returns its path and the admin token.
func (e *demoEnv) writeConfig() (path, token string, err error) {
	if token, err = randomHex(16); err != nil {
		return "", "", err
	}
	for name, v := range map[string]string{"exchange.password": exsim.DefaultPassword, "api.token": token} {
		if err := os.WriteFile(filepath.Join(e.dir, name), []byte(v+"\n"), 0o600); err != nil {
			return "", "", err
		}
	}
	pop := e.sim.Population()
	doc := fmt.Sprintf(`# Written by 'easconnector demo' for its simulators; see easconnector.example.toml
# for every key. Relative paths are relative to this file.

[exchange]
servers = [%q]          # CAS01; CAS02 (%s) is found by discovery
port = %d
https = false                  # the simulator speaks plain HTTP on loopback
second_hop_credential = false  # no password over plain HTTP
auth = "basic"
user = %q
password_file = "exchange.password"
cas_failover = true
enable_parallel_command_support = true
runspaces = 4

[log]
level = "info"

[mdm]
source = "graph"
tenant_id = %q
client_id = %q
client_secret_file = "graph.secret"
authority_url = %q
graph_url = %q
included_groups = [%q]   # %s
excluded_groups = [%q]   # %s

[policy]
enabled = true
default_access_level = "quarantine"   # what the organization does with unknown phones
unmanaged = "default"                 # phones the MDM does not know: left to that default
untargeted = "auto"                   # users outside the groups: allowed, since the default shuts them out
# Third-party mail apps stay in quarantine until an administrator decides.
[[policy.platform_exceptions]]
characteristic = "DeviceType"
value = "Nine"
action = "quarantine"

[guard]
# The first sync of a fresh organization blocks every noncompliant phone at
# once (about 10%% of the fleet), which the default limit of 500 would hold
# for approval.
max_new_blocks = %d

[sync]
quick_interval = "1m"
quick_jitter = "5s"
state_dir = "state"
shutdown_timeout = "15s"

[server]
listen = %q
token_file = "api.token"

[notify]
enabled = true
smtp_host = "127.0.0.1"
smtp_port = %d
security = "none"
from = "mobile-access@%s"
admin_recipients = ["eas-admins@%s"]
`, e.sim.Hosts()[0], e.sim.Hosts()[1], e.sim.Port(), exsim.DefaultUser,
		graphsim.DefaultTenantID, graphsim.DefaultClientID, e.graphURL, e.graphURL,
		pop.Included.ID, pop.Included.Name, pop.Excluded.ID, pop.Excluded.Name,
		max(500, e.o.devices/4), e.o.listen, e.mail.port, pop.Options.Domain, pop.Options.Domain)
	path = filepath.Join(e.dir, "easconnector.toml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		return "", "", err
	}
	return path, token, nil
}

// churnLoop changes the fleet every churnEvery until ctx ends: exsim
// churns its population and adds the new partnerships; the same churn on
// graphsim's identical population changes the MDM side the same way.
func (e *demoEnv) churnLoop(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(e.o.churnEvery)
	defer t.Stop()
	diverged := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changes, err := e.sim.ApplyChurn(e.o.churn, e.o.churnEvery)
		if err != nil {
			log.Error("demo: fleet activity on the Exchange side", "err", err)
			continue
		}
		var mirrored []population.Change
		e.graph.Update(func(p *population.Population) { mirrored = p.Churn(e.o.churn, e.o.churnEvery) })
		if !slices.Equal(changes, mirrored) && !diverged {
			diverged = true
			log.Warn("demo: the simulators no longer describe the same fleet (was the population changed through the control API?)")
		}
		kinds := map[population.ChangeKind]int{}
		for _, c := range changes {
			kinds[c.Kind]++
		}
		log.Info("demo: fleet activity", "new_phones", kinds[population.NewPhone],
			"compliance_flips", kinds[population.ComplianceFlip], "unenrolments", kinds[population.Unenroll])
	}
}

// summary is the one-line status of the demo.
func (e *demoEnv) summary(d *daemon) string {
	var b strings.Builder
	eng := d.engine()
	cur, running := eng.Current()
	if running {
		fmt.Fprintf(&b, "%s sync running %s", cur.Kind, shortDur(time.Since(cur.Start)))
		e.mu.Lock()
		ev := e.last
		e.mu.Unlock()
		if ev.SyncID == cur.ID {
			fmt.Fprintf(&b, ": %s %s", stageText(ev.Stage), num(ev.Done))
			if ev.Total > 0 {
				fmt.Fprintf(&b, " of %s", num(ev.Total))
			}
		} else {
			b.WriteString(": reading Exchange and Intune")
		}
	} else if res := eng.LastResults(); len(res) > 0 {
		r := &res[0]
		fmt.Fprintf(&b, "last %s sync %s in %s", r.Kind, resultWord(r), shortDur(r.Duration()))
	} else {
		b.WriteString("first sync starting")
	}
	if res := eng.LastResults(); len(res) > 0 {
		var full *pipeline.SyncResult
		for i := range res {
			if res[i].Kind == pipeline.SyncFull {
				full = &res[i]
				break
			}
		}
		if full != nil {
			c := full.CountsByDecision
			fmt.Fprintf(&b, " | allowed %s, blocked %s, default %s", num(c[pipeline.Allow]), num(c[pipeline.Block]), num(c[pipeline.Default]))
		}
		writes := 0
		for i := range res {
			writes += res[i].Writes
		}
		fmt.Fprintf(&b, " | writes %s", num(writes))
	}
	fmt.Fprintf(&b, " | mails %s", num(e.mail.count()))
	if quick, _ := d.sched.Next(); !running && !quick.IsZero() {
		if until := time.Until(quick); until > 0 {
			fmt.Fprintf(&b, " | next quick in %s", shortDur(until))
		} else {
			b.WriteString(" | next quick due")
		}
	}
	return b.String()
}

// resultWord is a sync result in one word.
func resultWord(r *pipeline.SyncResult) string {
	switch {
	case r.Guard.Result == pipeline.GuardHeld:
		return "held"
	case r.Error != "":
		return "failed"
	case r.Failures > 0:
		return "partial"
	}
	return "ok"
}

// liveLine shows a status line: redrawn every second on a terminal,
// printed every 10 seconds otherwise.
type liveLine struct {
	w   io.Writer
	tty bool
}

func newLiveLine(w io.Writer, tty bool) *liveLine { return &liveLine{w: w, tty: tty} }

// run refreshes the line until ctx ends or stopped delivers (the daemon
// stopped by itself; the value is put back for the caller).
func (l *liveLine) run(ctx context.Context, stopped chan error, line func() string) {
	every := 10 * time.Second
	if l.tty {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if l.tty {
			fmt.Fprintf(l.w, "\r\033[K%s", line())
		}
		select {
		case <-ctx.Done():
			return
		case err := <-stopped:
			stopped <- err
			return
		case <-t.C:
			if !l.tty {
				fmt.Fprintf(l.w, "%s  %s\n", time.Now().Format("15:04:05"), line())
			}
		}
	}
}

// done ends the line and prints the final state.
func (l *liveLine) done(last string) {
	if l.tty {
		fmt.Fprintf(l.w, "\r\033[K")
	}
	fmt.Fprintf(l.w, "%s  %s\n", time.Now().Format("15:04:05"), last)
}

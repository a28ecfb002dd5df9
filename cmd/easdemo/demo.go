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
	"sync"
	"text/tabwriter"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/internal/humanize"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/graphsim"
	"github.com/easconnector/easconnector/loadtest/mailsink"
	"github.com/easconnector/easconnector/loadtest/population"
)

// shutdownTimeout is the connector's [sync] shutdown_timeout in the
// generated configuration; the demo waits that long and a little more for
// it to stop before killing it.
const shutdownTimeout = 15 * time.Second

// env is everything the demo started, stopped in reverse order.
type env struct {
	o        options
	dir      string
	sim      *exsim.Sim
	user     string // the Exchange account and its generated password
	password string
	control  *http.Server
	ctlAddr  string
	graph    *graphsim.Server
	graphURL string
	mail     *mailsink.Sink
	stops    []func()
}

func (e *env) stop() {
	for i := len(e.stops) - 1; i >= 0; i-- {
		e.stops[i]()
	}
}

func demo(ctx context.Context, o options, bin string, stdout io.Writer, again <-chan struct{}) (err error) {
	e := &env{o: o}
	defer e.stop()
	if e.dir = o.dir; e.dir == "" {
		if e.dir, err = os.MkdirTemp("", "easconnector-demo-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(e.dir, 0o700); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "easdemo: starting simulators (%s devices) in %s\n", humanize.Num(o.devices), e.dir)
	if err := e.startSimulators(); err != nil {
		return err
	}
	cfgPath, token, err := e.writeConfig()
	if err != nil {
		return err
	}
	logPath := filepath.Join(e.dir, "easconnector.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	e.stops = append(e.stops, func() { logFile.Close() })
	log := slog.New(slog.NewTextHandler(logFile, nil))

	c, err := startConnector(bin, cfgPath, logFile)
	if err != nil {
		return err
	}
	base := "http://" + o.listen
	api := &apiClient{base: base, token: token, hc: &http.Client{Timeout: 10 * time.Second}}
	if err := c.waitReady(ctx, api); err != nil {
		c.stop(again)
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("start the connector: %w (see %s)", err, logPath)
	}

	tokenFile := filepath.Join(e.dir, "api.token")
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w)
	for _, l := range [][2]string{
		{"Status page", base + "/   (sign in with any user name and the admin token as password)"},
		{"Admin token", token + "   (for the page, the API and the page's Sync and Approve buttons; also in " + tokenFile + ")"},
		{"Metrics", base + "/metrics"},
		{"API", "curl -H 'Authorization: Bearer " + token + "' '" + base + "/api/v1/devices?decision=Block'"},
		{"Exchange sim", "http://" + e.ctlAddr + "/v1/status   (control API: counters, devices, faults)"},
		{"Configuration", cfgPath},
		{"Logs", logPath},
		{"Mails to users", e.mail.Dir() + "   (one .eml file per message)"},
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

`, bin, base, tokenFile, o.churnEvery)

	cctx, stopChurn := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { e.churnLoop(cctx, log) })
	line := func() string { return api.summary(ctx, e.mail.Count()) }
	live := newLiveLine(stdout, isTerminal(stdout))
	live.run(ctx, c.exited, line)
	// The last line is read while the connector still answers.
	last := api.summary(context.WithoutCancel(ctx), e.mail.Count())
	stopChurn()
	wg.Wait()
	exitErr := c.stop(again)
	live.done(last)
	if exitErr != nil {
		return fmt.Errorf("the connector stopped with errors: %w (see %s)", exitErr, logPath)
	}
	fmt.Fprintf(stdout, "easdemo: stopped; everything it wrote is in %s\n", e.dir)
	return nil
}

// startSimulators starts exsim, its control API, graphsim and the mail sink.
func (e *env) startSimulators() error {
	now := time.Now().UTC().Truncate(time.Minute)
	popts := population.Options{Seed: e.o.seed, Devices: e.o.devices, Now: now}
	var err error
	// A password of its own rather than exsim's default, so that the demo
	// shows the secret-file setup an installation uses.
	e.user = exsim.DefaultUser
	if e.password, err = randomHex(16); err != nil {
		return err
	}
	// Each simulator owns its population; both are generated from the same
	// options, so they describe the same fleet, and churnLoop changes them
	// in step.
	e.sim, err = exsim.Start(exsim.Options{Population: population.Generate(popts), Listeners: 2, Profile: e.o.profile, Quiet: true, Seed: e.o.seed,
		Users: map[string]string{e.user: e.password}})
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

	if e.mail, err = mailsink.Start(filepath.Join(e.dir, "mail")); err != nil {
		return fmt.Errorf("mail server: %w", err)
	}
	e.stops = append(e.stops, e.mail.Close)
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
func (e *env) writeConfig() (path, token string, err error) {
	if token, err = randomHex(16); err != nil {
		return "", "", err
	}
	for name, v := range map[string]string{"exchange.password": e.password, "api.token": token} {
		if err := os.WriteFile(filepath.Join(e.dir, name), []byte(v+"\n"), 0o600); err != nil {
			return "", "", err
		}
	}
	pop := e.sim.Population()
	doc := fmt.Sprintf(`# Written by easdemo for its simulators; see easconnector.example.toml
# for every key. Relative paths are relative to this file.

[exchange]
servers = [%q]          # CAS01; CAS02 (%s) is found by discovery
port = %d
mode = "psrp"                  # MS-PSRP to /PowerShell/, as in production (the default)
https = false                  # the simulator speaks plain HTTP on loopback
second_hop_credential = false  # remoting mode only; no password over plain HTTP
auth = "basic"                 # production: kerberos, the /PowerShell/ directory's default
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
shutdown_timeout = %q

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
`, e.sim.Hosts()[0], e.sim.Hosts()[1], e.sim.Port(), e.user,
		graphsim.DefaultTenantID, graphsim.DefaultClientID, e.graphURL, e.graphURL,
		pop.Included.ID, pop.Included.Name, pop.Excluded.ID, pop.Excluded.Name,
		max(500, e.o.devices/4), shutdownTimeout.String(), e.o.listen, e.mail.Port(), pop.Options.Domain, pop.Options.Domain)
	path = filepath.Join(e.dir, "easconnector.toml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		return "", "", err
	}
	return path, token, nil
}

// churnLoop changes the fleet every churnEvery until ctx ends: exsim
// churns its population and adds the new partnerships; the same churn on
// graphsim's identical population changes the MDM side the same way.
func (e *env) churnLoop(ctx context.Context, log *slog.Logger) {
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

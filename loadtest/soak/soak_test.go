package soak

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/graphsim"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/mdm"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/runspace"
)

const soakSecret = "soak-secret"

// envInt and envDuration read the run's size from the environment:
// EASCONNECTOR_SOAK_DEVICES (default 50,000), EASCONNECTOR_SOAK_DURATION
// (default 10m: how long the churn rounds go on).
func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 100 {
		t.Fatalf("%s: want a number ≥ 100, got %q", name, v)
	}
	return n
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s: want a positive duration, got %q", name, v)
	}
	return d
}

func TestLoadSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak run: make loadtest")
	}
	devices := envInt(t, "EASCONNECTOR_SOAK_DEVICES", 50_000)
	soakFor := envDuration(t, "EASCONNECTOR_SOAK_DURATION", 10*time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), soakFor+30*time.Minute)
	defer cancel()

	now := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	// No admin-made entries: the e2e tests cover them, and without them every
	// Allow and Block must show in Exchange as decided.
	popts := population.Options{Seed: 7, Devices: devices, Now: now, AdminEntryRate: -1}
	pop := population.Generate(popts)
	sim, err := exsim.Start(exsim.Options{Population: pop, Listeners: 2, Profile: exsim.ProfileZero, Quiet: true, CallLogSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	if err := sim.Org().SetOrg(exchange.OrgSettings{DefaultAccessLevel: exchange.LevelQuarantine}); err != nil {
		t.Fatal(err)
	}
	graph := graphsim.New(population.Generate(popts), graphsim.Options{ClientSecret: soakSecret})
	url, err := graph.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer graph.Close()
	src, err := mdm.NewGraph(mdm.GraphOptions{TenantID: graphsim.DefaultTenantID, ClientID: graphsim.DefaultClientID,
		ClientSecret: secret.New(soakSecret), AuthorityURL: url, GraphURL: url})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := runspace.NewPool(runspace.Options{Servers: sim.Hosts()[:1], Port: sim.Port(), PlainHTTP: true, Auth: runspace.AuthBasic,
		User: exsim.DefaultUser, Password: secret.New(exsim.DefaultPassword), CASFailover: true, Parallel: true, Size: 8,
		FailoverBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := pool.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		pool.Close(cctx)
	}()
	policy := pipeline.DefaultPolicy()
	policy.Enabled = true
	policy.IncludedGroups = []string{pop.Included.ID}
	policy.ExcludedGroups = []string{pop.Excluded.ID}
	guard := pipeline.DefaultGuardConfig()
	guard.MaxNewBlocks = devices // the first sync blocks every noncompliant device
	clock := now
	eng, err := pipeline.New(pipeline.Options{Exchange: exchange.New(pool), MDM: src, Policy: policy, Guard: guard,
		StateDir: t.TempDir(), State: pipeline.NewState(), Workers: 8, Clock: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()

	sync := func(kind pipeline.SyncKind) *pipeline.Report {
		t.Helper()
		start := time.Now()
		rep, err := eng.Sync(ctx, pipeline.SyncRequest{Kind: kind})
		if err != nil {
			t.Fatalf("%s sync: %v", kind, err)
		}
		t.Logf("%s sync: %d writes, %d failures in %s", kind, rep.Writes, rep.Failures, time.Since(start).Round(time.Millisecond))
		return rep
	}
	converged := func(when string) {
		t.Helper()
		rows, total := eng.Devices(pipeline.DeviceQuery{}, 0, devices*2)
		if total == 0 {
			t.Fatalf("%s: no device rows", when)
		}
		bad := 0
		for _, r := range rows {
			want := map[pipeline.Decision]exchange.AccessState{pipeline.Allow: exchange.AccessAllowed, pipeline.Block: exchange.AccessBlocked}[r.Decision]
			if want == "" || r.Reason == pipeline.ReasonAdminOverride {
				continue
			}
			if got, _ := sim.Org().Access(r.Mailbox, r.DeviceID); got != want {
				if bad++; bad <= 5 {
					t.Errorf("%s: %s %s decided %s (%s), Exchange says %s", when, r.Mailbox, r.DeviceID, r.Decision, r.Reason, got)
				}
			}
		}
		if bad > 0 {
			t.Fatalf("%s: %d of %d devices not as decided", when, bad, total)
		}
	}

	sync(pipeline.SyncFull)
	converged("after the first full sync")

	deadline := time.Now().Add(soakFor)
	for round := 1; time.Now().Before(deadline); round++ {
		const step = 10 * time.Minute
		simChanges, err := sim.ApplyChurn(0.01, step)
		if err != nil {
			t.Fatal(err)
		}
		var graphChanges []population.Change
		graph.Update(func(p *population.Population) { graphChanges = p.Churn(0.01, step) })
		if len(simChanges) != len(graphChanges) {
			t.Fatalf("round %d: the simulators churned differently (%d and %d changes)", round, len(simChanges), len(graphChanges))
		}
		clock = clock.Add(step)
		switch round % 4 {
		case 1: // the preferred Client Access server dies for this round
			if err := sim.Kill(0); err != nil {
				t.Fatal(err)
			}
		case 2:
			if err := sim.Restart(0); err != nil {
				t.Fatal(err)
			}
			graph.Throttle(2, "1") // Graph answers 429 twice with Retry-After: 1
		}
		sync(pipeline.SyncQuick)
		converged("after quick sync round " + strconv.Itoa(round))
	}
	if !sim.Up(0) {
		if err := sim.Restart(0); err != nil {
			t.Fatal(err)
		}
	}
	clock = clock.Add(24 * time.Hour)
	if rep := sync(pipeline.SyncFull); rep.Writes != 0 {
		t.Errorf("final full sync wrote %d mailboxes; the quick syncs should have left nothing to do", rep.Writes)
	}
	converged("after the final full sync")
	c := sim.Counters()
	t.Logf("exsim: %d cmdlets, %d writes, max %d concurrent cmdlets, max %d sessions", sumCmdlets(c), c.WriteCmdlets, c.MaxConcurrentCmdlets, c.MaxSessions)
	if c.MaxConcurrentCmdlets > 8 {
		t.Errorf("max concurrent cmdlets = %d, above the pool size 8", c.MaxConcurrentCmdlets)
	}
}

func sumCmdlets(c exsim.Counters) uint64 {
	var n uint64
	for _, v := range c.Cmdlets {
		n += v
	}
	return n
}

// Package scenario holds the load-test scenarios of cmd/easload: each runs
// the real easconnector binary as a process against exsim and graphsim
// processes (loadtest/bed), injects changes to the fleet on a schedule
// whatever the connector does (open loop, through the simulators' control
// APIs), and measures what an operator cares about: sync durations, the
// change-to-enforcement lag (from the moment a change was in both
// simulators until the Set-CASMailbox that enforced it completed in
// Exchange, from exsim's call log), cmdlets per second, errors, and the
// connector process's peak RSS and CPU. Each scenario states its service
// objectives; a run fails when one breaks.
package scenario

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/graphsim"
	"github.com/easconnector/easconnector/server"
)

// Scenario is one load test.
type Scenario struct {
	Name  string
	About string // what it does, for the listing and the docs

	Devices       int
	Listeners     int           // exsim Client Access listeners; 0 → 1
	Profile       string        // exsim latency profile; "" → zero
	Runspaces     int           // [exchange] runspaces; 0 → 8
	QuickInterval time.Duration // [sync] quick_interval; 0 → 1m
	// TriggerEvery, when set, has the driver request a quick sync this
	// often (POST /api/v1/syncs) besides the connector's own schedule: the
	// short end-to-end test uses it, since quick_interval cannot go below
	// a minute.
	TriggerEvery time.Duration

	Inject       time.Duration // how long changes are injected after the first sync
	ChurnPerHour float64       // share of the fleet changed per hour (population.Churn)
	Step         time.Duration // between injections
	Settle       time.Duration // after the last change, before the closing full sync

	// BeforeStart runs once the simulators are up, before the connector
	// starts (a fault already in force at the first sync).
	BeforeStart func(ctx context.Context, r *Run) error
	// DuringFirstSync runs right after the connector starts, while its
	// start-up full sync runs (a kill, a CAS failure).
	DuringFirstSync func(ctx context.Context, r *Run) error
	Steps           []Step // at offsets from the start of injection, in order
	// Finish sees every sync (newest first) and every write Exchange
	// applied when the report is built, to record scenario-specific
	// measurements with SetExtra.
	Finish     func(r *Run, syncs []server.SyncResult, writes []Write)
	Objectives []Objective
}

// Step is an event at an offset from the start of injection.
type Step struct {
	At   time.Duration
	Name string
	Do   func(ctx context.Context, r *Run) error
}

func (sc Scenario) profile() string {
	if sc.Profile == "" {
		return exsim.ProfileZero
	}
	return sc.Profile
}

// Budget bounds a run: the injection and settling, plus room for start-up,
// the first sync of a large fleet and the closing sync.
func (sc Scenario) Budget() time.Duration {
	return sc.Inject + sc.Settle + 10*time.Minute + time.Duration(sc.Devices)*10*time.Millisecond
}

func (sc Scenario) validate() error {
	switch {
	case sc.Name == "":
		return errors.New("scenario: no name")
	case sc.Devices < 10:
		return fmt.Errorf("scenario %s: devices: at least 10, got %d", sc.Name, sc.Devices)
	case sc.ChurnPerHour > 0 && sc.Step <= 0:
		return fmt.Errorf("scenario %s: step: must be positive with churn", sc.Name)
	case len(sc.Objectives) == 0:
		return fmt.Errorf("scenario %s: states no objective", sc.Name)
	}
	for i := 1; i < len(sc.Steps); i++ {
		if sc.Steps[i].At < sc.Steps[i-1].At {
			return fmt.Errorf("scenario %s: step %q comes before %q", sc.Name, sc.Steps[i].Name, sc.Steps[i-1].Name)
		}
	}
	return nil
}

// Size picks a scenario's version: Full is the capacity-planning run
// (tens of minutes), Short the one `make loadtest` runs (a few minutes),
// Tiny the end-to-end test of `go test -short` (seconds, with requested
// quick syncs).
type Size int

// Sizes.
const (
	Full Size = iota
	Short
	Tiny
)

// pick returns the value for s.
func pick[T any](s Size, full, short, tiny T) T {
	switch s {
	case Short:
		return short
	case Tiny:
		return tiny
	}
	return full
}

// base is the common shape: a steady churn and the objectives every
// scenario keeps.
func base(s Size, name, about string, devices [3]int) Scenario {
	sc := Scenario{
		Name: name, About: about, Devices: pick(s, devices[0], devices[1], devices[2]),
		QuickInterval: time.Minute,
		Inject:        pick(s, 30*time.Minute, 2*time.Minute, 6*time.Second),
		Step:          pick(s, 30*time.Second, 10*time.Second, 2*time.Second),
		Settle:        pick(s, 90*time.Second, 80*time.Second, 4*time.Second),
		// 1 % an hour is the design's steady state; the shorter versions
		// change more per hour so that they still make enough changes
		// to measure a lag distribution.
		ChurnPerHour: pick(s, 0.01, 0.60, 20.0),
	}
	if s == Tiny {
		sc.TriggerEvery = 2 * time.Second
	}
	return sc
}

// Names lists the scenarios in the order easload runs them.
func Names() []string {
	return []string{"steady", "burst", "cas-failure", "throttle", "mdm-outage", "kill9", "org200k"}
}

// Get returns the scenario name at size s.
func Get(name string, s Size) (Scenario, error) {
	switch name {
	case "steady":
		return steady(s), nil
	case "burst":
		return burst(s), nil
	case "cas-failure":
		return casFailure(s), nil
	case "throttle":
		return throttle(s), nil
	case "mdm-outage":
		return mdmOutage(s), nil
	case "kill9":
		return kill9(s), nil
	case "org200k":
		return org200k(s), nil
	}
	return Scenario{}, fmt.Errorf("scenario %q: unknown; want one of %v", name, Names())
}

func steady(s Size) Scenario {
	sc := base(s, "steady", "a settled fleet with churn (a third each new phones, compliance flips, unenrolments) and quick syncs every minute", [3]int{50_000, 5_000, 300})
	sc.Objectives = []Objective{LagP95AtMost(2 * time.Minute), FailedSyncsAtMost(0), Converged()}
	return sc
}

func burst(s Size) Scenario {
	sc := base(s, "burst", "20 % of the fleet enrols new phones at once (a device refresh), besides the churn", [3]int{50_000, 5_000, 300})
	sc.Steps = []Step{{At: pick(s, time.Minute, 15*time.Second, 2*time.Second), Name: "20 % new phones",
		Do: func(ctx context.Context, r *Run) error { return r.Burst(ctx, 0.20) }}}
	sc.Objectives = []Objective{LagP95AtMost(pick(s, 3*time.Minute, 3*time.Minute, 30*time.Second)), FailedSyncsAtMost(0), Converged()}
	return sc
}

// casFailure kills the preferred Client Access server while the first full
// sync writes, and brings it back later.
func casFailure(s Size) Scenario {
	sc := base(s, "cas-failure", "two Client Access servers; CAS01 dies while the first full sync writes and comes back after a while; the pool fails over to CAS02", [3]int{50_000, 5_000, 300})
	sc.Listeners = 2
	down := pick(s, 2*time.Minute, 30*time.Second, 3*time.Second)
	sc.DuringFirstSync = func(ctx context.Context, r *Run) error {
		if err := r.WaitWrites(ctx, uint64(max(5, sc.Devices/20))); err != nil {
			return err
		}
		r.Logf("killing CAS01 mid-sync for %s", down)
		if err := r.Exsim().Listener(ctx, 0, "kill"); err != nil {
			return err
		}
		killed := time.Now()
		go func() {
			select {
			case <-ctx.Done():
			case <-time.After(down):
				if err := r.Exsim().Listener(context.WithoutCancel(ctx), 0, "restart"); err != nil {
					r.Logf("restarting CAS01: %v", err)
				}
				r.SetExtra("cas01-down-s", time.Since(killed).Seconds())
			}
		}()
		return nil
	}
	// The sync the failure cut may end partial; the next ones must not.
	sc.Objectives = []Objective{LagP95AtMost(2 * time.Minute), FailedSyncsAtMost(1), Converged()}
	return sc
}

// throttle makes Exchange refuse cmdlets over a budget and Graph answer a
// share of its requests with 429, from before the first sync (which makes
// thousands of calls) until the end of the injection.
func throttle(s Size) Scenario {
	sc := base(s, "throttle", "a throttling storm from the first sync on: Exchange's PowerShellMaxCmdlets budget refuses calls over 100 per second (\"user load quota\" errors) and Graph answers 30 % of requests with 429 and Retry-After; the storm ends with the injection", [3]int{50_000, 5_000, 300})
	sc.BeforeStart = func(ctx context.Context, r *Run) error {
		r.Logf("storm on")
		if err := r.Exsim().SetQuotas(ctx, 0, 100, time.Second); err != nil {
			return err
		}
		return r.Graph().SetFaults(ctx, graphsim.ControlFaults{ErrorRate: 0.3, ErrorStat: 429, RetryAfter: "1"})
	}
	sc.Steps = []Step{{At: sc.Inject, Name: "storm off", Do: func(ctx context.Context, r *Run) error {
		if err := r.Exsim().SetQuotas(ctx, 0, 0, time.Minute); err != nil {
			return err
		}
		return r.Graph().SetFaults(ctx, graphsim.ControlFaults{})
	}}}
	sc.Objectives = []Objective{
		{Text: "the storm happened: Exchange throttled ≥ 1 % of the calls and Graph answered 429s", Check: func(r *Report) (string, bool) {
			return fmt.Sprintf("%d of %d calls throttled, %d Graph errors", r.Throttled, r.Cmdlets, r.GraphErrors),
				r.Throttled*100 >= r.Cmdlets && r.Throttled > 0 && r.GraphErrors > 0
		}},
		LagP95AtMost(pick(s, 3*time.Minute, 3*time.Minute, 30*time.Second)), Converged(),
	}
	return sc
}

// mdmOutage resets every connection to Graph for a while: the connector
// must write nothing while it cannot read the MDM completely (fail static),
// and catch up afterwards.
func mdmOutage(s Size) Scenario {
	sc := base(s, "mdm-outage", "Graph and its token endpoint are down for a while during churn: nothing is written from an MDM read the outage cut (fail static), and every change is enforced after it ends", [3]int{50_000, 5_000, 300})
	out := pick(s, 10*time.Minute, 70*time.Second, 4*time.Second)
	at := pick(s, 5*time.Minute, 20*time.Second, 2*time.Second)
	var from, to time.Time
	sc.Steps = []Step{{At: at, Name: "Graph outage on", Do: func(ctx context.Context, r *Run) error {
		from = time.Now()
		return r.Graph().SetFaults(ctx, graphsim.ControlFaults{Outage: true})
	}}, {At: at + out, Name: "Graph outage off", Do: func(ctx context.Context, r *Run) error {
		to = time.Now()
		r.SetExtra("outage-s", to.Sub(from).Seconds())
		return r.Graph().SetFaults(ctx, graphsim.ControlFaults{})
	}}}
	// A sync that had its snapshot before the outage may finish its writes
	// during it, and one that started during the outage may wait for Graph
	// and write from a complete read after it. What must not happen is a
	// write landing during the outage once every sync that began before it
	// has ended: that write came from a read the outage cut short.
	sc.Finish = func(r *Run, syncs []server.SyncResult, writes []Write) {
		if from.IsZero() || to.IsZero() {
			return
		}
		quiet := from
		during := 0
		for _, s := range syncs {
			if s.Start.Before(from) && s.End.After(quiet) {
				quiet = s.End
			}
			if s.Start.Before(to) && (s.End.IsZero() || s.End.After(from)) {
				during++
			}
		}
		n := 0
		for _, w := range writes {
			if w.At.After(quiet) && w.At.Before(to) {
				n++
			}
		}
		r.SetExtra("writes-during-outage", float64(n))
		r.SetExtra("syncs-during-outage", float64(during))
	}
	sc.Objectives = []Objective{
		ExtraAtMost("writes-during-outage", 0, "nothing written during the outage from a read it cut"),
		ExtraAtLeast("syncs-during-outage", 1, "the outage covered at least one sync"),
		LagMaxAtMost(out + 2*time.Minute + pick(s, time.Duration(0), 0, 10*time.Second)),
		Converged(),
	}
	return sc
}

// kill9 kills the connector with SIGKILL in the middle of its first full
// sync's writes and starts it again.
func kill9(s Size) Scenario {
	sc := base(s, "kill9", "easconnector is killed with SIGKILL while its first full sync writes, and restarted; the churn goes on", [3]int{50_000, 5_000, 300})
	sc.DuringFirstSync = func(ctx context.Context, r *Run) error {
		n := uint64(max(5, sc.Devices/10))
		if err := r.WaitWrites(ctx, n); err != nil {
			return err
		}
		r.Logf("kill -9 after %d writes", n)
		if err := r.KillConnector(); err != nil {
			return err
		}
		c, err := r.Exsim().Counters(ctx)
		if err != nil {
			return err
		}
		r.SetExtra("writes-before-kill", float64(c.Cmdlets["Set-CASMailbox"]))
		return r.StartConnector(ctx)
	}
	sc.Objectives = []Objective{
		ExtraAtLeast("writes-before-kill", 1, "killed in the middle of the writes"),
		LagP95AtMost(2 * time.Minute), FailedSyncsAtMost(1), Converged(),
	}
	return sc
}

// org200k is the largest organization the design names.
func org200k(s Size) Scenario {
	sc := base(s, "org200k", "a 200,000-device organization: the first full sync (every mailbox written), then churn with quick syncs", [3]int{200_000, 200_000, 2_000})
	sc.Inject = pick(s, 20*time.Minute, 90*time.Second, 8*time.Second)
	sc.Step = pick(s, 30*time.Second, 15*time.Second, 2*time.Second)
	sc.ChurnPerHour = pick(s, 0.01, 0.01, 0.5)
	sc.Objectives = []Objective{
		FirstSyncAtMost(30 * time.Minute),
		// Under the 2 GB profile the connector must leave room for the OS.
		PeakRSSAtMost(1536),
		LagP95AtMost(pick(s, 3*time.Minute, 3*time.Minute, 30*time.Second)),
		Converged(),
	}
	return sc
}

// All returns every scenario at size s, in Names order.
func All(s Size) []Scenario {
	var out []Scenario
	for _, n := range Names() {
		sc, _ := Get(n, s)
		out = append(out, sc)
	}
	return out
}

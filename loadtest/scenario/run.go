package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/bed"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/graphsim"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/server"
)

// Options are what a run needs from its caller.
type Options struct {
	Bins map[string]string // easconnector, exsim, graphsim (bed.Build or bed.Find)
	Dir  string            // a directory of the run's own: configuration, state, logs
	Log  io.Writer         // progress lines (nil: none)
	Seed uint64            // fleet seed; 0 → 1
}

// Run is one scenario run in progress: the processes, the driver's copy of
// the fleet, and what it injected. Steps and hooks act through it.
type Run struct {
	sc   Scenario
	o    Options
	ex   *bed.Exsim
	gs   *bed.Graphsim
	cfg  bed.Written
	pop  *population.Population // the driver's mirror of the fleet
	eas  map[string]string      // MDM record id → EAS DeviceId, for the records' changes
	rng  *rand.Rand
	log  func(format string, args ...any)
	mu   sync.Mutex
	conn *bed.Connector
	// Changes are the injected changes, in order.
	changes []Change
	extra   map[string]float64
	usage   usageMeter
}

// Exsim and Graph are the simulators; Connector is the current connector
// process (a kill and restart replaces it).
func (r *Run) Exsim() *bed.Exsim    { return r.ex }
func (r *Run) Graph() *bed.Graphsim { return r.gs }
func (r *Run) Connector() *bed.Connector {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conn
}

// SetExtra records a scenario-specific measurement.
func (r *Run) SetExtra(k string, v float64) {
	r.mu.Lock()
	r.extra[k] = v
	r.mu.Unlock()
}

// Logf writes a progress line.
func (r *Run) Logf(format string, args ...any) { r.log(format, args...) }

// usageMeter follows the connector process over its incarnations.
type usageMeter struct {
	mu      sync.Mutex
	pid     int
	peak    int64
	cpuDone time.Duration // of incarnations that ended
	cpuLast time.Duration // of the current one, last read
}

func (u *usageMeter) sample() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pid == 0 {
		return
	}
	us, err := bed.ReadUsage(u.pid)
	if err != nil {
		return // exited between the check and the read
	}
	u.peak = max(u.peak, us.PeakRSS)
	u.cpuLast = us.CPU
}

// follow switches to a new incarnation (pid 0: none).
func (u *usageMeter) follow(pid int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.cpuDone += u.cpuLast
	u.cpuLast, u.pid = 0, pid
}

func (u *usageMeter) totals() (int64, time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.peak, u.cpuDone + u.cpuLast
}

// Execute runs sc and returns its report with the objectives evaluated. An
// error means the run itself could not be carried out (a process did not
// start, a control call failed), not that an objective broke.
func Execute(ctx context.Context, sc Scenario, o Options) (*Report, error) {
	if err := sc.validate(); err != nil {
		return nil, err
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	ctx, cancel := context.WithTimeout(ctx, sc.Budget())
	defer cancel()
	r := &Run{sc: sc, o: o, extra: map[string]float64{}, rng: rand.New(rand.NewPCG(o.Seed, 99)), eas: map[string]string{}}
	r.log = func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, "%s %s: %s\n", time.Now().Format("15:04:05"), sc.Name, fmt.Sprintf(format, args...))
		}
	}
	fleet := bed.FleetOptions{Devices: sc.Devices, Seed: o.Seed, Now: time.Now().UTC().Truncate(time.Minute)}
	r.pop = fleet.Population()
	for _, rec := range r.pop.MDM {
		r.eas[rec.ID] = rec.EASDeviceID
	}
	r.log("starting exsim and graphsim (%d devices, %d listener(s), profile %s)", sc.Devices, max(1, sc.Listeners), sc.profile())
	var err error
	if r.ex, err = bed.StartExsim(ctx, o.Bins["exsim"], bed.ExsimOptions{Fleet: fleet, Listeners: sc.Listeners, Profile: sc.profile(), Dir: o.Dir}); err != nil {
		return nil, err
	}
	defer r.ex.Stop(10 * time.Second)
	if r.gs, err = bed.StartGraphsim(ctx, o.Bins["graphsim"], bed.GraphsimOptions{Fleet: fleet, Dir: o.Dir}); err != nil {
		return nil, err
	}
	defer r.gs.Stop(10 * time.Second)
	if err := r.ex.SetDefaultAccessLevel(ctx, exchange.LevelQuarantine); err != nil {
		return nil, err
	}
	if r.cfg, err = (bed.Config{Dir: o.Dir, Exsim: r.ex, Graph: r.gs, Included: r.pop.Included.ID, Excluded: r.pop.Excluded.ID,
		Runspaces: sc.Runspaces, QuickInterval: sc.QuickInterval}).Write(); err != nil {
		return nil, err
	}

	if sc.BeforeStart != nil {
		if err := sc.BeforeStart(ctx, r); err != nil {
			return nil, fmt.Errorf("before the start: %w", err)
		}
	}
	start := time.Now()
	if err := r.StartConnector(ctx); err != nil {
		return nil, err
	}
	defer func() {
		if c := r.Connector(); c != nil {
			_ = c.Kill()
		}
	}()
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			r.usage.sample()
			select {
			case <-sampleCtx.Done():
				return
			case <-t.C:
			}
		}
	}()

	if sc.DuringFirstSync != nil {
		if err := sc.DuringFirstSync(ctx, r); err != nil {
			return nil, fmt.Errorf("during the first sync: %w", err)
		}
	}
	first, err := r.waitFirstSync(ctx)
	if err != nil {
		return nil, err
	}
	r.log("first full sync: %s, %d writes, result %s", dur(first.End.Sub(first.Start)), first.Writes, first.Result)

	if err := r.inject(ctx); err != nil {
		return nil, err
	}
	final, err := r.closingSync(ctx)
	if err != nil {
		return nil, err
	}
	wall := time.Since(start)
	r.log("closing full sync: %s, %d writes", dur(final.End.Sub(final.Start)), final.Writes)

	rep, err := r.collect(ctx, first, final)
	if err != nil {
		return nil, err
	}
	rep.Wall = wall
	r.usage.sample()
	c := r.Connector()
	rep.CleanExit = c.Stop(r.cfgShutdown()+10*time.Second) == nil
	r.mu.Lock()
	r.conn = nil
	r.mu.Unlock()
	r.usage.follow(0)
	rep.PeakRSS, rep.CPU = r.usage.totals()
	r.mu.Lock()
	rep.Extra = r.extra
	r.mu.Unlock()
	rep.Evaluate(sc.Objectives)
	return rep, nil
}

func (r *Run) cfgShutdown() time.Duration { return 15 * time.Second }

// StartConnector starts (or restarts) `easconnector run` on the run's
// configuration.
func (r *Run) StartConnector(ctx context.Context) error {
	c, err := bed.StartConnector(ctx, r.o.Bins["easconnector"], r.cfg, filepath.Join(r.o.Dir, "easconnector.log"))
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.conn = c
	r.mu.Unlock()
	r.usage.follow(c.Pid())
	return nil
}

// KillConnector kills the connector with SIGKILL.
func (r *Run) KillConnector() error {
	c := r.Connector()
	r.usage.sample()
	err := c.Kill()
	r.usage.follow(0)
	return err
}

// WaitWrites waits until Exchange has applied at least n Set-CASMailbox
// calls since it started.
func (r *Run) WaitWrites(ctx context.Context, n uint64) error {
	for {
		c, err := r.ex.Counters(ctx)
		if err != nil {
			return err
		}
		if c.Cmdlets["Set-CASMailbox"] >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d writes (at %d): %w", n, c.Cmdlets["Set-CASMailbox"], ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitFirstSync waits until the current connector has ended its start-up
// full sync.
func (r *Run) waitFirstSync(ctx context.Context) (server.SyncResult, error) {
	for {
		c := r.Connector()
		syncs, err := c.Syncs(ctx, 50)
		if err == nil {
			for i := len(syncs) - 1; i >= 0; i-- {
				if s := syncs[i]; s.Kind == "full" && !s.End.IsZero() {
					return s, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return server.SyncResult{}, fmt.Errorf("waiting for the first full sync: %w", ctx.Err())
		case <-c.Exited():
			if r.Connector() == c {
				return server.SyncResult{}, fmt.Errorf("the connector exited during its first sync: %v", c.Err())
			}
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// inject runs the open-loop phase: changes every Step for Inject whatever
// the connector does, the scenario's steps at their times, quick syncs
// requested every TriggerEvery when set; then Settle without changes.
func (r *Run) inject(ctx context.Context) error {
	sc := r.sc
	t0 := time.Now()
	steps := append([]Step(nil), sc.Steps...)
	nextChurn := t0
	var nextTrigger time.Time
	if sc.TriggerEvery > 0 {
		nextTrigger = t0.Add(sc.TriggerEvery)
	}
	end := t0.Add(sc.Inject)
	settled := end.Add(sc.Settle)
	r.log("injecting changes for %s (%.1f %% of the fleet per hour, every %s), then settling for %s", dur(sc.Inject), sc.ChurnPerHour*100, sc.Step, dur(sc.Settle))
	for {
		now := time.Now()
		if !now.Before(settled) && len(steps) == 0 {
			return nil
		}
		for len(steps) > 0 && !now.Before(t0.Add(steps[0].At)) {
			st := steps[0]
			steps = steps[1:]
			r.log("step at %s: %s", dur(st.At), st.Name)
			if err := st.Do(ctx, r); err != nil {
				return fmt.Errorf("step %q: %w", st.Name, err)
			}
		}
		if sc.ChurnPerHour > 0 && now.Before(end) && !now.Before(nextChurn) {
			if err := r.Churn(ctx, sc.ChurnPerHour*sc.Step.Hours(), sc.Step); err != nil {
				return err
			}
			nextChurn = nextChurn.Add(sc.Step)
		}
		if !nextTrigger.IsZero() && !now.Before(nextTrigger) {
			if _, err := r.Connector().Trigger(ctx, "quick"); err != nil {
				r.log("requesting a quick sync: %v", err)
			}
			nextTrigger = nextTrigger.Add(sc.TriggerEvery)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Churn changes about fraction of the fleet (population.Churn: a third
// each new phones, compliance flips, unenrolments) on the driver's copy
// and pushes the result to both simulators.
func (r *Run) Churn(ctx context.Context, fraction float64, step time.Duration) error {
	r.pop.Options.Now = time.Now().UTC().Add(-step) // Churn adds step: the changes happen now
	before := map[string]string{}
	changes := r.pop.Churn(fraction, step)
	for _, c := range changes {
		if c.Kind == population.Unenroll {
			before[c.Record] = r.eas[c.Record]
		}
	}
	at := make(map[string]int, len(r.pop.MDM))
	for i, rec := range r.pop.MDM {
		at[rec.ID] = i
	}
	var gc graphsim.ControlChanges
	var devs []exsim.DeviceSpec
	var out []Change
	for _, c := range changes {
		switch c.Kind {
		case population.NewPhone:
			d := r.pop.Devices[c.Device]
			devs = append(devs, r.spec(d))
			out = append(out, Change{Kind: string(c.Kind), DeviceID: d.DeviceID})
			if c.Record != "" {
				rec := r.pop.MDM[at[c.Record]]
				gc.Upsert = append(gc.Upsert, rec)
				r.eas[rec.ID] = rec.EASDeviceID
			}
		case population.ComplianceFlip:
			rec := r.pop.MDM[at[c.Record]]
			gc.Upsert = append(gc.Upsert, rec)
			out = append(out, Change{Kind: string(c.Kind), DeviceID: rec.EASDeviceID})
		case population.Unenroll:
			gc.Remove = append(gc.Remove, c.Record)
			out = append(out, Change{Kind: string(c.Kind), DeviceID: before[c.Record]})
			delete(r.eas, c.Record)
		}
	}
	return r.push(ctx, devs, gc, out)
}

// Burst adds fraction × devices new phones at once (enrolled as the fleet's
// rates say) to random mailboxes.
func (r *Run) Burst(ctx context.Context, fraction float64) error {
	n := int(float64(len(r.pop.Devices))*fraction + 0.5)
	now := time.Now().UTC()
	r.pop.Options.Now = now
	var gc graphsim.ControlChanges
	var devs []exsim.DeviceSpec
	var out []Change
	for range n {
		recs := len(r.pop.MDM)
		di := r.pop.AddDevice(r.rng.IntN(len(r.pop.Mailboxes)), true)
		d := &r.pop.Devices[di]
		d.FirstSync = now
		devs = append(devs, r.spec(*d))
		out = append(out, Change{Kind: "burst", DeviceID: d.DeviceID})
		if len(r.pop.MDM) > recs {
			rec := &r.pop.MDM[len(r.pop.MDM)-1]
			rec.EnrolledAt, rec.LastSyncAt = now, now
			gc.Upsert = append(gc.Upsert, *rec)
			r.eas[rec.ID] = rec.EASDeviceID
		}
	}
	return r.push(ctx, devs, gc, out)
}

func (r *Run) spec(d population.Device) exsim.DeviceSpec {
	return exsim.DeviceSpec{Mailbox: r.pop.Mailboxes[d.Mailbox].PrimarySmtp, DeviceId: d.DeviceID, DeviceType: d.Type,
		DeviceModel: d.Model, DeviceOS: d.OS, DeviceUserAgent: d.UserAgent, FirstSyncTime: d.FirstSync}
}

// push sends new partnerships to exsim (four at a time) and the record
// changes to graphsim, then stamps the changes with the time both had
// them.
func (r *Run) push(ctx context.Context, devs []exsim.DeviceSpec, gc graphsim.ControlChanges, out []Change) error {
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < len(devs); i += 4 {
				if err := r.ex.AddDevice(ctx, devs[i]); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if len(gc.Upsert)+len(gc.Remove) > 0 {
		if err := r.gs.ApplyRecords(ctx, gc); err != nil {
			return err
		}
	}
	now := time.Now()
	for i := range out {
		out[i].At = now
	}
	r.mu.Lock()
	r.changes = append(r.changes, out...)
	r.mu.Unlock()
	return nil
}

// closingSync requests a full sync once no other runs and returns it: its
// writes are what the run left unenforced.
func (r *Run) closingSync(ctx context.Context) (server.SyncResult, error) {
	c := r.Connector()
	for {
		id, err := c.Trigger(ctx, "full")
		if err != nil {
			return server.SyncResult{}, fmt.Errorf("closing full sync: %w", err)
		}
		s, err := c.WaitSync(ctx, id)
		if err != nil {
			return s, fmt.Errorf("closing full sync: %w", err)
		}
		if s.Kind == "full" && s.Trigger != "scheduled" {
			return s, nil
		}
		// Coalesced into a quick sync that was running: once more.
	}
}

// collect builds the report from the connector's syncs and exsim's and
// graphsim's counters and call log.
func (r *Run) collect(ctx context.Context, first, final server.SyncResult) (*Report, error) {
	rep := &Report{Scenario: r.sc.Name, Devices: r.sc.Devices, FirstSync: first.End.Sub(first.Start), FinalWrites: final.Writes}
	syncs, err := r.Connector().Syncs(ctx, server.MaxLimit)
	if err != nil {
		return nil, err
	}
	var durs []time.Duration
	var inSyncs time.Duration
	for _, s := range syncs {
		if s.End.IsZero() {
			continue
		}
		inSyncs += s.End.Sub(s.Start)
		if s.ID == final.ID || s.ID == first.ID {
			continue
		}
		durs = append(durs, s.End.Sub(s.Start))
		if s.Result != server.ResultOK {
			rep.FailedSyncs++
		}
		rep.SyncFailures += s.Failures
	}
	if first.Result != server.ResultOK {
		rep.FailedSyncs++
	}
	rep.Syncs = Distribution(durs)
	cs, err := r.ex.Counters(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range cs.Cmdlets {
		rep.Cmdlets += n
	}
	rep.Writes = cs.Cmdlets["Set-CASMailbox"]
	rep.ExchangeErrs, rep.Throttled = cs.Errors, cs.Throttled
	if inSyncs > 0 {
		rep.CmdletsPerSec = float64(rep.Cmdlets) / inSyncs.Seconds()
	}
	gst, err := r.gs.Status(ctx)
	if err != nil {
		return nil, err
	}
	for k, n := range gst.Requests {
		if _, status, _ := strings.Cut(k, " "); status == "0" || status >= "400" {
			rep.GraphErrors += n
		}
	}
	var calls []exsim.Call
	for since := uint64(0); ; {
		page, err := r.ex.Calls(ctx, since, 20_000)
		if err != nil {
			return nil, err
		}
		if len(page) == 0 {
			break
		}
		calls = append(calls, page...)
		since = page[len(page)-1].Seq
	}
	r.mu.Lock()
	changes := r.changes
	r.mu.Unlock()
	writes := WritesFromCalls(calls)
	if r.sc.Finish != nil {
		r.sc.Finish(r, syncs, writes)
	}
	lr := Lags(changes, writes)
	rep.Changes, rep.Lag, rep.Unwritten = len(changes), Distribution(lr.Lags), lr.Unwritten
	return rep, nil
}

// RunDir makes a fresh directory for one scenario run under base.
func RunDir(base, name string) (string, error) {
	if err := os.MkdirAll(base, 0o700); err != nil {
		return "", err
	}
	return os.MkdirTemp(base, name+"-")
}

package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/easconnector/easconnector/cache"
	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/graphsim"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/mdm"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/pipeline/notify"
	"github.com/easconnector/easconnector/runspace"
)

// The end-to-end tests run the engine against the real components: exsim
// (Exchange behind WS-Management) through runspace.Pool and
// exchange.Client, and graphsim (Graph and its token endpoint) through
// mdm.Graph, both loaded with the same seeded population. The pool speaks
// the product's default, PSRP to exsim's /PowerShell/ endpoint; a subset
// (forModes) also runs over WinRS (remoting mode) so both session kinds
// stay covered end to end.

const graphSecret = "e2e-secret"

// popNow is the population's reference time; the engine's clock starts
// there, so that grace and staleness do not depend on the wall clock.
var popNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// e2eDevices is the fleet size of the end-to-end tests: 5,000 devices,
// fewer under the race detector, which slows the simulators tenfold.
func e2eDevices() int {
	if raceEnabled {
		return 600
	}
	return 5000
}

// testClock is a settable clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixtureOptions struct {
	devices   int
	seed      uint64
	listeners int
	size      int
	profile   string
	noCache   bool
	pop       func(*population.Options)
	policy    func(*pipeline.Policy)
	engine    func(*pipeline.Options)
	orgLevel  exchange.AccessLevel // the org default before the first sync (default Quarantine)
	mode      string               // runspace mode ("": the zero value's, psrp, as the product's default)
}

// forModes runs test in psrp mode (the default) and in remoting mode (the
// WinRS kind).
func forModes(t *testing.T, test func(t *testing.T, mode string)) {
	for _, mode := range []string{runspace.ModePSRP, runspace.ModeRemoting} {
		t.Run(mode, func(t *testing.T) { test(t, mode) })
	}
}

// fixture is one organization on both simulators, a pool, an MDM source
// and an engine over them.
type fixture struct {
	t      testing.TB
	opts   fixtureOptions
	pop    *population.Population // exsim's copy
	gpop   *population.Population // graphsim's copy (owned by graph; read it only under Update)
	sim    *exsim.Sim
	graph  *graphsim.Server
	pool   *runspace.Pool
	ex     *exchange.Client
	src    *mdm.Graph
	dir    string
	clock  *testClock
	caches pipeline.Caches
	policy pipeline.Policy
	eng    *pipeline.Engine
	// admin holds the entries the population's administrators made, by
	// mailbox DN (lower-cased), before any sync.
	adminAllowed, adminBlocked map[string][]string
	notices                    *fakeNotifier
}

func testPolicy(pop *population.Population) pipeline.Policy {
	p := pipeline.DefaultPolicy()
	p.Enabled = true
	p.IncludedGroups = []string{pop.Included.ID}
	p.ExcludedGroups = []string{pop.Excluded.ID}
	p.OrgDefault = exchange.LevelQuarantine
	p.PlatformExceptions = []pipeline.PlatformException{
		{Characteristic: exchange.CharDeviceType, Value: "WindowsMail", Action: pipeline.ActionAllow},
		{Characteristic: exchange.CharDeviceModel, Value: "Nine Work", Action: pipeline.ActionQuarantine},
	}
	return p
}

func newFixture(t testing.TB, o fixtureOptions) *fixture {
	t.Helper()
	if o.devices == 0 {
		o.devices = e2eDevices()
	}
	if o.seed == 0 {
		o.seed = 11
	}
	if o.size == 0 {
		o.size = 4
	}
	if o.orgLevel == "" {
		o.orgLevel = exchange.LevelQuarantine
	}
	popts := population.Options{Seed: o.seed, Devices: o.devices, Now: popNow}
	if o.pop != nil {
		o.pop(&popts)
	}
	f := &fixture{t: t, opts: o, pop: population.Generate(popts), gpop: population.Generate(popts),
		dir: t.TempDir(), clock: &testClock{t: popNow}}
	f.adminAllowed, f.adminBlocked = map[string][]string{}, map[string][]string{}
	for _, mb := range f.pop.Mailboxes {
		k := strings.ToLower(mb.DistinguishedName)
		f.adminAllowed[k] = slices.Clone(mb.Allowed)
		f.adminBlocked[k] = slices.Clone(mb.Blocked)
	}

	sim, err := exsim.Start(exsim.Options{Population: f.pop, Listeners: max(o.listeners, 1), Profile: o.profile, Quiet: true})
	if err != nil {
		t.Fatalf("exsim.Start: %v", err)
	}
	f.sim = sim
	t.Cleanup(sim.Close)
	if err := sim.Org().SetOrg(exchange.OrgSettings{DefaultAccessLevel: o.orgLevel}); err != nil {
		t.Fatalf("SetOrg: %v", err)
	}
	// The phones have connected under that default before the connector
	// starts: Get-MobileDevice shows the states stored then.
	sim.Org().ContactAll()

	f.graph = graphsim.New(f.gpop, graphsim.Options{ClientSecret: graphSecret})
	url, err := f.graph.Start()
	if err != nil {
		t.Fatalf("graphsim.Start: %v", err)
	}
	t.Cleanup(f.graph.Close)
	f.src, err = mdm.NewGraph(mdm.GraphOptions{
		TenantID: graphsim.DefaultTenantID, ClientID: graphsim.DefaultClientID, ClientSecret: secret.New(graphSecret),
		AuthorityURL: url, GraphURL: url, PageSize: 250, MaxRetries: 2, MaxRetryWait: 2 * time.Second,
		BaseBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, RequestTimeout: 20 * time.Second,
	})
	if err != nil {
		t.Fatalf("mdm.NewGraph: %v", err)
	}

	f.pool, err = runspace.NewPool(runspace.Options{
		Mode:    o.mode,
		Servers: sim.Hosts(), Port: sim.Port(), Auth: runspace.AuthBasic, PlainHTTP: true,
		User: exsim.DefaultUser, Password: secret.New(exsim.DefaultPassword),
		Parallel: true, Size: o.size, ConnectTimeout: 20 * time.Second, RequestTimeout: 2 * time.Minute,
		FailoverBackoff: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("runspace.NewPool: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.pool.Start(ctx); err != nil {
		t.Fatalf("pool.Start: %v", err)
	}
	// Every cmdlet of the test went over the session kind it names (exsim's
	// call log says which: "psrp" or "" for the WinRS bootstrap).
	t.Cleanup(func() {
		want := ""
		if o.mode == "" || o.mode == runspace.ModePSRP {
			want = "psrp"
		}
		for _, c := range sim.CallLog(0, 0) {
			if c.Protocol != want {
				t.Errorf("call %d (%s) came over protocol %q, want %q (mode %q)", c.Seq, c.Cmd, c.Protocol, want, o.mode)
				break
			}
		}
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := f.pool.Close(ctx); err != nil {
			t.Errorf("pool.Close: %v", err)
		}
	})
	f.ex = exchange.New(f.pool)

	co := cache.Options{Disabled: o.noCache, ExpectedItems: 4 * int64(o.devices)}
	mc, err := cache.NewMailboxCache(co, 0)
	if err != nil {
		t.Fatal(err)
	}
	fc, err := cache.NewFingerprintCache(co)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mc.Close)
	t.Cleanup(fc.Close)
	f.caches = pipeline.Caches{Mailboxes: mc, Fingerprints: fc}

	f.policy = testPolicy(f.pop)
	if o.policy != nil {
		o.policy(&f.policy)
	}
	f.eng = f.newEngine(nil)
	return f
}

// newEngine builds an engine over the fixture's state directory (closing
// the previous one, as a restart would).
func (f *fixture) newEngine(st *pipeline.State) *pipeline.Engine {
	f.t.Helper()
	if f.eng != nil {
		if err := f.eng.Close(); err != nil {
			f.t.Fatalf("Engine.Close: %v", err)
		}
	}
	f.notices = &fakeNotifier{}
	guard := pipeline.DefaultGuardConfig()
	guard.MaxNewBlocks = f.opts.devices / 10 // the default 500 at 5,000 devices; scaled for smaller fleets
	opts := pipeline.Options{
		Exchange: f.ex, MDM: f.src, Policy: f.policy, Guard: guard,
		StateDir: f.dir, State: st, Workers: f.opts.size, Caches: f.caches, Clock: f.clock.Now,
		RetryBackoff: 20 * time.Millisecond, Notifier: f.notices,
		Org: pipeline.OrgConfig{DefaultAccessLevel: true, DeviceAccessRules: true},
	}
	if f.opts.engine != nil {
		f.opts.engine(&opts)
	}
	eng, err := pipeline.New(opts)
	if err != nil {
		f.t.Fatalf("pipeline.New: %v", err)
	}
	f.notices.st = eng.State()
	f.eng = eng
	f.t.Cleanup(func() { _ = eng.Close() })
	return eng
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// sync runs a sync that must succeed.
func (f *fixture) sync(kind pipeline.SyncKind) *pipeline.Report {
	f.t.Helper()
	rep, err := f.eng.Sync(testCtx(f.t, 3*time.Minute), pipeline.SyncRequest{Kind: kind})
	if err != nil {
		f.t.Fatalf("Sync(%s) error = %v", kind, err)
	}
	if rep.Failures > 0 {
		f.t.Fatalf("Sync(%s): %d mailbox writes failed: %+v", kind, rep.Failures, rep.Failed)
	}
	return rep
}

// churn applies the same churn to both simulators and advances the clock.
func (f *fixture) churn(fraction float64) []population.Change {
	f.t.Helper()
	const step = 10 * time.Minute
	changes, err := f.sim.ApplyChurn(fraction, step)
	if err != nil {
		f.t.Fatalf("exsim churn: %v", err)
	}
	var gchanges []population.Change
	f.graph.Update(func(p *population.Population) { gchanges = p.Churn(fraction, step) })
	if fmt.Sprint(changes) != fmt.Sprint(gchanges) {
		f.t.Fatalf("the simulators churned differently:\nexsim   %v\ngraphsim %v", changes, gchanges)
	}
	f.clock.Advance(step)
	return changes
}

// writes returns the write cmdlets exsim served since seq.
func (f *fixture) calls(since uint64, cmd string) []exsim.Call {
	var out []exsim.Call
	for _, c := range f.sim.CallLog(since, 0) {
		if cmd == "" || strings.EqualFold(c.Cmd, cmd) {
			out = append(out, c)
		}
	}
	return out
}

// lastSeq is the sequence number of the newest logged call.
func (f *fixture) lastSeq() uint64 {
	log := f.sim.CallLog(0, 0)
	if len(log) == 0 {
		return 0
	}
	return log[len(log)-1].Seq
}

// snapshot reads the MDM as the engine does.
func (f *fixture) snapshot() *mdm.Snapshot {
	f.t.Helper()
	snap, err := f.src.Snapshot(testCtx(f.t, time.Minute), slices.Concat(f.policy.IncludedGroups, f.policy.ExcludedGroups))
	if err != nil {
		f.t.Fatalf("Snapshot: %v", err)
	}
	return snap
}

// expectation is what the decision table says about one partnership.
type expectation struct {
	mailbox exchange.CASMailbox
	device  exchange.MobileDevice
	dec     pipeline.Decision
	why     pipeline.Reason
}

// expectations decides every partnership in exsim independently of the
// engine: the MDM as mdm.Graph reads it, Join and Decide.
func (f *fixture) expectations() []expectation {
	f.t.Helper()
	snap := f.snapshot()
	scope, err := pipeline.NewScope(&f.policy, snap)
	if err != nil {
		f.t.Fatal(err)
	}
	ix := pipeline.Join(snap.Records)
	org := f.sim.Org()
	mbs, _ := org.Mailboxes(0, 0)
	var out []expectation
	for _, mb := range mbs {
		devs, _, err := org.Devices(mb.DistinguishedName, 0, 0)
		if err != nil {
			f.t.Fatal(err)
		}
		u := pipeline.User{PrimarySmtp: mb.PrimarySmtpAddress}
		u.ID = scope.UserID(u) // as the engine resolves the mailbox's user
		for _, d := range devs {
			rec, same := ix.Lookup(d.DeviceId, u)
			dec, why := pipeline.Decide(&f.policy, pipeline.Input{Device: d, User: u, Scope: scope.Of(u), Record: rec, SameUser: same}, f.clock.Now())
			if !exchange.ValidDeviceID(d.DeviceId) {
				dec, why = pipeline.NoChange, pipeline.ReasonInvalidDeviceID
			}
			out = append(out, expectation{mailbox: mb, device: d, dec: dec, why: why})
		}
	}
	return out
}

func containsFold(list []string, id string) bool {
	return slices.ContainsFunc(list, func(s string) bool { return strings.EqualFold(s, id) })
}

func stateOf(l exchange.AccessLevel) exchange.AccessState {
	switch l {
	case exchange.LevelBlock:
		return exchange.AccessBlocked
	case exchange.LevelQuarantine:
		return exchange.AccessQuarantined
	}
	return exchange.AccessAllowed
}

// checkAccess checks every partnership's effective access in exsim
// against the decision table: Allow → Allowed, Block → Blocked (unless an
// administrator's entry says otherwise: the administrator wins), Default
// → the administrator's entry, else a matching device access rule, else
// the org default; and that a Default device is in no list of ours.
func (f *fixture) checkAccess() {
	f.t.Helper()
	org := f.sim.Org()
	rules := org.Rules()
	level := org.Settings().DefaultAccessLevel
	if level != f.policy.OrgDefault {
		f.t.Errorf("org DefaultAccessLevel = %s, want %s", level, f.policy.OrgDefault)
	}
	bad := 0
	for _, x := range f.expectations() {
		k := strings.ToLower(x.mailbox.DistinguishedName)
		adminA, adminB := containsFold(f.adminAllowed[k], x.device.DeviceId), containsFold(f.adminBlocked[k], x.device.DeviceId)
		var want exchange.AccessState
		switch x.dec {
		case pipeline.NoChange:
			continue
		case pipeline.Allow:
			want = exchange.AccessAllowed
			if adminB {
				want = exchange.AccessBlocked
			}
		case pipeline.Block:
			want = exchange.AccessBlocked
			if adminA {
				want = exchange.AccessAllowed
			}
		case pipeline.Default:
			switch {
			case adminB:
				want = exchange.AccessBlocked
			case adminA:
				want = exchange.AccessAllowed
			default:
				// Exchange's order: the first characteristic with a
				// matching rule decides (exsim.RuleOrder).
				want = stateOf(level)
			byOrder:
				for _, ch := range exsim.RuleOrder {
					for _, r := range rules {
						if r.Characteristic == ch && matches(x.device, r) {
							want = stateOf(r.AccessLevel)
							break byOrder
						}
					}
				}
				if containsFold(x.mailbox.ActiveSyncAllowedDeviceIDs, x.device.DeviceId) || containsFold(x.mailbox.ActiveSyncBlockedDeviceIDs, x.device.DeviceId) {
					bad++
					if bad <= 10 {
						f.t.Errorf("%s on %s: decision Default (%s), but a list still holds it", x.device.DeviceId, x.mailbox.PrimarySmtpAddress, x.why)
					}
				}
			}
		}
		got, reason := org.Access(x.mailbox.DistinguishedName, x.device.DeviceId)
		if got != want {
			bad++
			if bad <= 10 {
				f.t.Errorf("%s on %s: decision %s (%s): access %s (%s), want %s", x.device.DeviceId, x.mailbox.PrimarySmtpAddress, x.dec, x.why, got, reason, want)
			}
		}
	}
	if bad > 10 {
		f.t.Errorf("… %d devices in all with the wrong access", bad)
	}
}

func matches(d exchange.MobileDevice, r exchange.DeviceAccessRule) bool {
	var v string
	switch r.Characteristic {
	case exchange.CharDeviceType:
		v = d.DeviceType
	case exchange.CharDeviceModel:
		v = d.DeviceModel
	case exchange.CharDeviceOS:
		v = d.DeviceOS
	case exchange.CharUserAgent:
		v = d.DeviceUserAgent
	}
	return v != "" && strings.EqualFold(v, r.QueryString)
}

// lists returns every mailbox's lists in exsim, by DN.
func (f *fixture) lists() map[string][2][]string {
	mbs, _ := f.sim.Org().Mailboxes(0, 0)
	out := make(map[string][2][]string, len(mbs))
	for _, mb := range mbs {
		a, b := slices.Clone(mb.ActiveSyncAllowedDeviceIDs), slices.Clone(mb.ActiveSyncBlockedDeviceIDs)
		slices.Sort(a)
		slices.Sort(b)
		out[strings.ToLower(mb.DistinguishedName)] = [2][]string{a, b}
	}
	return out
}

// fakeNotifier records notices; like the real notifier, it marks a notice
// sent in the state (its SentStore) once "delivered", here at once.
type fakeNotifier struct {
	mu       sync.Mutex
	st       *pipeline.State
	notices  []notify.Notice
	resolved []string
}

var _ pipeline.Notifier = (*fakeNotifier)(nil)

func (n *fakeNotifier) Enqueue(nt notify.Notice) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	key := notify.Key(nt.To, nt.DeviceID, nt.State)
	if n.st.Sent(key) {
		return false, nil
	}
	n.notices = append(n.notices, nt)
	return true, n.st.MarkSent(key, nt.Time)
}

func (n *fakeNotifier) Resolved(mailbox, deviceID string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.resolved = append(n.resolved, mailbox+"/"+deviceID)
	for _, s := range []notify.State{notify.StateBlocked, notify.StateQuarantined} {
		if err := n.st.Forget(notify.Key(mailbox, deviceID, s)); err != nil {
			return err
		}
	}
	return nil
}

func (n *fakeNotifier) take() []notify.Notice {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.notices
	n.notices = nil
	return out
}

// goroutineStacks returns the stacks of every goroutine by id.
func goroutineStacks() map[string]string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		id, _, _ := strings.Cut(strings.TrimPrefix(g, "goroutine "), " ")
		out[id] = g
	}
	return out
}

// goroutineIDs returns the ids of the goroutines running now.
func goroutineIDs() map[string]bool {
	out := map[string]bool{}
	for id := range goroutineStacks() {
		out[id] = true
	}
	return out
}

// checkNoPipelineGoroutines waits up to 5 s for every goroutine started
// since before by the engine (its stages, its ants pools, errgroups) to
// have exited. ants' default pool, started at init, was there before.
func checkNoPipelineGoroutines(t testing.TB, before map[string]bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for id, g := range goroutineStacks() {
			if before[id] || strings.Contains(g, "_test.go") || strings.Contains(g, "testing.tRunner") {
				continue
			}
			if strings.Contains(g, "easconnector/pipeline.") || strings.Contains(g, "panjf2000/ants") || strings.Contains(g, "x/sync/errgroup") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pipeline goroutines left after Sync returned:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// isGuard reports whether err is a guard error of kind.
func isGuard(err error, kind pipeline.GuardKind) bool {
	var ge *pipeline.GuardError
	return errors.As(err, &ge) && ge.Kind == kind
}

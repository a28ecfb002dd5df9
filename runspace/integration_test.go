package runspace_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/runspace"
)

// Integration tests: sessions and pools against the Exchange simulator.

// forModes runs a test over both session kinds.
func forModes(t *testing.T, test func(t *testing.T, mode string)) {
	for _, mode := range []string{runspace.ModeRemoting, runspace.ModePSRP} {
		t.Run(mode, func(t *testing.T) { test(t, mode) })
	}
}

func startSim(t testing.TB, o exsim.Options) *exsim.Sim {
	t.Helper()
	if o.Population == nil {
		o.Population = population.Generate(population.Options{Seed: 7, Devices: 120})
	}
	sim, err := exsim.Start(o)
	if err != nil {
		t.Fatalf("exsim.Start() error = %v", err)
	}
	t.Cleanup(sim.Close)
	return sim
}

// testLogger writes the pool's log to the test log (shown on failure).
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func simOptions(t testing.TB, sim *exsim.Sim, mutate func(*runspace.Options)) runspace.Options {
	o := runspace.Options{
		// The WinRS kind, which these tests exercise; psrpOptions picks
		// psrp, the zero value's mode.
		Mode:             runspace.ModeRemoting,
		Servers:          []string{sim.Hosts()[0]},
		Port:             sim.Port(),
		PlainHTTP:        !sim.TLS(),
		Auth:             runspace.AuthBasic,
		CACert:           sim.CAPEM(),
		User:             exsim.DefaultUser,
		Password:         secret.New(exsim.DefaultPassword),
		Parallel:         true,
		Size:             4,
		ConnectTimeout:   10 * time.Second,
		RequestTimeout:   10 * time.Second,
		OperationTimeout: time.Second,
		FailoverBackoff:  100 * time.Millisecond,
	}
	if tl, ok := t.(*testing.T); ok && testing.Verbose() {
		o.Logger = testLogger(tl)
	}
	if mutate != nil {
		mutate(&o)
	}
	return o
}

func startPool(t *testing.T, o runspace.Options) *runspace.Pool {
	t.Helper()
	p, err := runspace.NewPool(o)
	if err != nil {
		t.Fatalf("NewPool() error = %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatalf("Start() error = %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close() error = %v", err)
		}
	})
	return p
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metricValue reads one series from the pool's metric set.
func metricValue(t *testing.T, p *runspace.Pool, series string) float64 {
	t.Helper()
	var b bytes.Buffer
	p.Metrics().WritePrometheus(&b)
	for line := range strings.SplitSeq(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}

var (
	getSettings = runspace.Call{Cmd: "Get-ActiveSyncOrganizationSettings", Select: []string{"Identity", "DefaultAccessLevel"}, Idempotent: true}
	getDevices  = runspace.Call{Cmd: "Get-MobileDevice", Args: map[string]any{"ResultSize": "Unlimited"},
		Select: []string{"DeviceId", "DeviceType"}, Idempotent: true}
)

func getMailbox(identity string) runspace.Call {
	return runspace.Call{Cmd: "Get-CASMailbox", Args: map[string]any{"Identity": identity},
		Select: []string{"Identity", "ActiveSyncAllowedDeviceIDs"}, Idempotent: true}
}

func TestSessionAgainstExsim(t *testing.T) {
	sim := startSim(t, exsim.Options{})
	ctx := testCtx(t, 30*time.Second)
	s, err := runspace.Open(ctx, simOptions(t, sim, nil), sim.Hosts()[0])
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	info := s.Info()
	if info.Host != "CAS01" || info.Exchange != exsim.ExchangeVersion || info.PS != exsim.PowerShellVersion ||
		info.ShellID == "" || info.OpenedAt.IsZero() || info.Server != sim.Hosts()[0] {
		t.Errorf("Info() = %+v", info)
	}

	// Streaming read: every device once, as valid JSON.
	seen := map[string]bool{}
	res, err := s.Do(ctx, getDevices, func(obj json.RawMessage) error {
		var d struct{ DeviceId string }
		if err := json.Unmarshal(obj, &d); err != nil {
			return err
		}
		seen[d.DeviceId] = true
		return nil
	})
	if err != nil || res.Count != sim.Org().DeviceCount() || len(seen) != res.Count {
		t.Fatalf("Get-MobileDevice = %+v, %d distinct, %v; want %d devices", res, len(seen), err, sim.Org().DeviceCount())
	}

	// A cmdlet error is the call's, not the session's.
	_, err = s.Do(ctx, getMailbox("nobody@nowhere.example"), nil)
	var re *runspace.RemoteError
	if !errors.As(err, &re) || runspace.Classify(err) != runspace.ClassRemote || s.Err() != nil {
		t.Fatalf("Get-CASMailbox of an unknown mailbox: %v (session %v), want a RemoteError", err, s.Err())
	}

	// Refused before anything is sent.
	before := s.Info().Requests
	for _, c := range []runspace.Call{
		{Cmd: "Remove-Mailbox", Args: map[string]any{"Identity": "x"}},
		{Cmd: "Get-CASMailbox", Args: map[string]any{"Identity; Remove-Mailbox": "x"}},
		{Cmd: "Get-CASMailbox", Args: map[string]any{"Identity": struct{}{}}},
		{Cmd: "Get-CASMailbox", Args: map[string]any{"Identity": "bad\xffutf8"}},
		{Cmd: "Get-CASMailbox", Select: []string{"Name; whoami"}},
		// PowerShell's common parameters would overwrite the bootstrap's
		// variables; nil for a list would bind as $null and empty it.
		{Cmd: "Get-CASMailbox", Args: map[string]any{"Identity": "x", "OutVariable": "allowed"}},
		{Cmd: "Get-MobileDevice", Args: map[string]any{"PipelineVariable": "params"}},
		{Cmd: "Set-CASMailbox", Args: map[string]any{"Identity": "x", "ActiveSyncAllowedDeviceIDs": []string(nil)}},
		{Cmd: "Set-ActiveSyncOrganizationSettings", Args: map[string]any{"AdminMailRecipients": nil}},
	} {
		if _, err := s.Do(ctx, c, nil); !errors.Is(err, runspace.ErrInvalidCall) {
			t.Errorf("Do(%+v) error = %v, want ErrInvalidCall", c, err)
		}
	}
	if got := s.Info().Requests; got != before {
		t.Errorf("refused calls were sent: %d requests, want %d", got, before)
	}

	// A callback that stops the stream: its error comes back and the
	// session stays usable.
	stop := errors.New("enough")
	n := 0
	_, err = s.Do(ctx, getDevices, func(json.RawMessage) error {
		if n++; n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 || s.Err() != nil {
		t.Fatalf("stopped stream: err %v after %d objects (session %v), want %v after 3", err, n, s.Err(), stop)
	}
	if res, err := s.Do(ctx, getSettings, nil); err != nil || res.Count != 1 {
		t.Fatalf("call after a stopped stream = %+v, %v", res, err)
	}

	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close() error = %v", err)
	}
	if shells := sim.WSMan(0).Shells(); len(shells) != 0 {
		t.Errorf("shells left on the server: %+v", shells)
	}
	eventually(t, "the simulator to see the session end", func() bool { return sim.Counters().Sessions == 0 })
	if _, err := s.Do(ctx, getSettings, nil); !errors.Is(err, runspace.ErrSessionBroken) {
		t.Errorf("Do() after Close() error = %v, want ErrSessionBroken", err)
	}
}

func TestSessionOpenErrors(t *testing.T) {
	sim := startSim(t, exsim.Options{PowerShellMaxConcurrency: 1})
	ctx := testCtx(t, 30*time.Second)
	first, err := runspace.Open(ctx, simOptions(t, sim, nil), sim.Hosts()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close(ctx)

	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	deadPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()

	tests := []struct {
		name   string
		mutate func(*runspace.Options)
		check  func(error) bool
		class  string
	}{
		{"PowerShellMaxConcurrency exceeded", nil,
			func(err error) bool {
				return errors.Is(err, runspace.ErrInitFailed) && errors.Is(err, runspace.ErrThrottled) &&
					strings.Contains(err.Error(), "maximum of 1 concurrent shells")
			}, runspace.ClassThrottle},
		{"wrong password", func(o *runspace.Options) { o.Password = secret.New("nope") },
			func(err error) bool { return errors.Is(err, runspace.ErrAuth) }, runspace.ClassAuth},
		{"nothing listening", func(o *runspace.Options) { o.Port = deadPort },
			func(err error) bool { var te *runspace.TransportError; return errors.As(err, &te) }, runspace.ClassTransport},
		{"connect timeout", func(o *runspace.Options) { o.ConnectTimeout = time.Millisecond },
			func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }, runspace.ClassTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := runspace.Open(ctx, simOptions(t, sim, tt.mutate), sim.Hosts()[0])
			if err == nil {
				s.Close(ctx)
				t.Fatal("Open() succeeded")
			}
			if !tt.check(err) || runspace.Classify(err) != tt.class {
				t.Fatalf("Open() error = %v (class %q), want class %q", err, runspace.Classify(err), tt.class)
			}
			if tt.class != runspace.ClassTimeout { // a Create cut short leaves a shell we never learn of
				eventually(t, "the failed open to delete its shell", func() bool { return len(sim.WSMan(0).Shells()) == 1 })
			}
		})
	}
}

func TestSessionSnapinMode(t *testing.T) {
	sim := startSim(t, exsim.Options{PowerShellMaxConcurrency: 1})
	ctx := testCtx(t, 30*time.Second)
	var sessions []*runspace.Session
	// Snap-in sessions are not remoting sessions: the quota does not apply.
	for range 2 {
		s, err := runspace.Open(ctx, simOptions(t, sim, func(o *runspace.Options) { o.Mode = runspace.ModeSnapin }), sim.Hosts()[0])
		if err != nil {
			t.Fatalf("Open(snapin) error = %v", err)
		}
		sessions = append(sessions, s)
		if _, err := s.Do(ctx, getSettings, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range sessions {
		if err := s.Close(ctx); err != nil {
			t.Error(err)
		}
	}
}

func TestPoolConcurrencyNeverExceedsSize(t *testing.T) {
	sim := startSim(t, exsim.Options{Profile: exsim.ProfileLab})
	p := startPool(t, simOptions(t, sim, func(o *runspace.Options) { o.Size = 3 }))
	mbs, _ := sim.Org().Mailboxes(0, 24)
	ctx := testCtx(t, 60*time.Second)
	var wg sync.WaitGroup
	for _, mb := range mbs {
		wg.Go(func() {
			res, err := p.Do(ctx, getMailbox(mb.DistinguishedName), nil)
			if err != nil || res.Count != 1 {
				t.Errorf("Get-CASMailbox %s = %+v, %v", mb.Name, res, err)
			}
		})
	}
	wg.Wait()
	c := sim.Counters()
	if c.MaxConcurrentCmdlets > 3 || c.MaxSessions > 3 {
		t.Errorf("simulator saw %d cmdlets and %d sessions at once, want at most 3", c.MaxConcurrentCmdlets, c.MaxSessions)
	}
	if c.MaxConcurrentCmdlets < 2 {
		t.Errorf("simulator saw at most %d cmdlet at once: the pool did not run calls in parallel", c.MaxConcurrentCmdlets)
	}
	if opens := metricValue(t, p, "easconnector_runspace_session_opens_total"); opens > 3 {
		t.Errorf("session opens = %v, want at most 3", opens)
	}
	busy := metricValue(t, p, `easconnector_runspace_sessions{state="busy"}`)
	idle := metricValue(t, p, `easconnector_runspace_sessions{state="idle"}`)
	if busy != 0 || idle < 1 || idle > 3 {
		t.Errorf("sessions busy=%v idle=%v after the calls", busy, idle)
	}
	if h := metricValue(t, p, `easconnector_runspace_request_duration_seconds_count{cmdlet="Get-CASMailbox"}`); h != float64(len(mbs)) {
		t.Errorf("request duration count = %v, want %d", h, len(mbs))
	}
	var b bytes.Buffer
	p.Metrics().WritePrometheus(&b)
	for _, name := range []string{
		`easconnector_runspace_sessions{state="busy"}`, `easconnector_runspace_sessions{state="idle"}`,
		"easconnector_runspace_limit 3", "easconnector_runspace_session_opens_total",
		`easconnector_runspace_request_duration_seconds_bucket{cmdlet="Get-CASMailbox",le="0.005"}`,
		"easconnector_runspace_throttle_events_total 0", "easconnector_runspace_failovers_total 0",
		fmt.Sprintf(`easconnector_runspace_endpoint_up{server=%q} 1`, sim.Hosts()[0]),
	} {
		if !strings.Contains(b.String(), name) {
			t.Errorf("metrics lack %s:\n%s", name, b.String())
		}
	}
}

// TestPoolAdaptsToSessionQuota: PowerShellMaxConcurrency refuses sessions
// (WinRS: the bootstrap's New-PSSession; psrp: the quota fault on Create)
// and the pool's limit shrinks to what the quota allows, then grows back.
func TestPoolAdaptsToSessionQuota(t *testing.T) { forModes(t, testPoolAdaptsToSessionQuota) }

func testPoolAdaptsToSessionQuota(t *testing.T, mode string) {
	sim := startSim(t, exsim.Options{Profile: exsim.ProfileLab, PowerShellMaxConcurrency: 2})
	p := startPool(t, simOptions(t, sim, func(o *runspace.Options) { o.Size, o.Mode = 6, mode }))
	ctx := testCtx(t, 60*time.Second)
	run := func(n int) (failed int) {
		var wg sync.WaitGroup
		var bad atomic.Int32
		for range n {
			wg.Go(func() {
				if _, err := p.Do(ctx, getSettings, nil); err != nil {
					if runspace.Classify(err) != runspace.ClassThrottle {
						t.Errorf("Do() error = %v, want none or throttling", err)
					}
					bad.Add(1)
				}
			})
		}
		wg.Wait()
		return int(bad.Load())
	}
	minLimit := atomic.Int32{}
	minLimit.Store(6)
	stop := make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() {
		for {
			if l := int32(p.Limit()); l < minLimit.Load() {
				minLimit.Store(l)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	burst := time.Now()
	failed := run(24)
	t.Logf("burst took %v", time.Since(burst))
	close(stop)
	watch.Wait()
	if failed > 6 {
		t.Errorf("%d of 24 calls failed under the session quota", failed)
	}
	if c := sim.Counters(); c.MaxSessions > 2 || c.SessionsRefused == 0 {
		t.Errorf("simulator: %d sessions at most, %d refused; want ≤ 2 and some refused", c.MaxSessions, c.SessionsRefused)
	}
	if l := minLimit.Load(); l > 2 {
		t.Errorf("Limit() went no lower than %d under a quota of 2 sessions", l)
	}
	if ev := metricValue(t, p, "easconnector_runspace_throttle_events_total"); ev == 0 {
		t.Error("no throttle event counted")
	}

	// The quota is raised: the limit climbs back to Size.
	if err := sim.SetQuotas(exsim.Quotas{PowerShellMaxConcurrency: 18}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); p.Limit() < 6; {
		if time.Now().After(deadline) {
			t.Fatalf("Limit() = %d after 20s of successes, want 6", p.Limit())
		}
		if n := run(6); n != 0 {
			t.Fatalf("%d calls failed after the quota was raised", n)
		}
	}
	t.Logf("recovery done at %v", time.Since(burst))
	if got := metricValue(t, p, "easconnector_runspace_limit"); got != 6 {
		t.Errorf("limit gauge = %v, want 6", got)
	}
}

func TestPoolWaitsOutCmdletRateQuota(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the quota period")
	}
	sim := startSim(t, exsim.Options{PowerShellMaxCmdlets: 5, PowerShellMaxCmdletsTimePeriod: time.Second})
	p := startPool(t, simOptions(t, sim, func(o *runspace.Options) { o.Size = 1 }))
	ctx := testCtx(t, 30*time.Second)
	start := time.Now()
	for i := range 8 {
		if _, err := p.Do(ctx, getSettings, nil); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if c := sim.Counters(); c.Throttled == 0 {
		t.Error("the simulator throttled nothing")
	}
	if time.Since(start) < 500*time.Millisecond {
		t.Errorf("8 calls at 5/s took %v: the pool did not wait", time.Since(start))
	}
	if ev := metricValue(t, p, "easconnector_runspace_throttle_events_total"); ev == 0 {
		t.Error("no throttle event counted")
	}
}

// TestPoolFailover kills the preferred CAS in the middle of a stream of
// writes: every write completes on the other server, none is lost, and
// only calls in flight at the kill may run twice (they are idempotent).
// The preferred server is taken back once it returns.
func TestPoolFailover(t *testing.T) { forModes(t, testPoolFailover) }

func testPoolFailover(t *testing.T, mode string) {
	sim := startSim(t, exsim.Options{Listeners: 2, Profile: exsim.ProfileLab})
	const size = 3
	p := startPool(t, simOptions(t, sim, func(o *runspace.Options) {
		o.Mode = mode
		o.Size = size
		o.CASFailover = true
		o.MaxRequestsPerSession = 10 // sessions recycle, so new ones reach the preferred server
	}))
	host0, host1 := sim.Hosts()[0], sim.Hosts()[1]
	eps := p.Endpoints()
	if len(eps) != 2 || eps[0].Server != host0 || eps[1].Server != host1 || !eps[1].Discovered {
		t.Fatalf("Endpoints() = %+v, want %s then the discovered %s", eps, host0, host1)
	}
	mbs, _ := sim.Org().Mailboxes(0, 48)
	ctx := testCtx(t, 60*time.Second)
	deviceFor := func(i int) string { return fmt.Sprintf("EASCFAILOVER%03d", i) }
	jobs := make(chan int)
	var (
		wg      sync.WaitGroup
		done    atomic.Int32
		servers sync.Map // mailbox index → server that answered
	)
	for range size {
		wg.Go(func() {
			for i := range jobs {
				call := runspace.Call{Cmd: "Set-CASMailbox", Idempotent: true, Args: map[string]any{
					"Identity":                   mbs[i].DistinguishedName,
					"ActiveSyncAllowedDeviceIDs": runspace.ListEdit{Add: []string{deviceFor(i)}},
				}}
				res, err := p.Do(ctx, call, nil)
				if err != nil {
					t.Errorf("Set-CASMailbox %s: %v", mbs[i].Name, err)
				}
				servers.Store(i, res.Server)
				done.Add(1)
			}
		})
	}
	killed := false
	for i := range mbs {
		if i == len(mbs)/3 {
			eventually(t, "the first writes", func() bool { return done.Load() >= int32(i-size) })
			if err := sim.Kill(0); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if !killed {
		t.Fatal("listener 0 was never killed")
	}

	// Nothing lost: every mailbox holds its device.
	for i, mb := range mbs {
		got, err := sim.Org().Mailbox(mb.DistinguishedName)
		if err != nil || !slices.Contains(got.ActiveSyncAllowedDeviceIDs, deviceFor(i)) {
			t.Errorf("mailbox %s allowed list = %q, %v; want %s", mb.Name, got.ActiveSyncAllowedDeviceIDs, err, deviceFor(i))
		}
	}
	// Applied twice only when the first attempt was cut by the kill.
	applied := map[string][]exsim.Call{}
	for _, c := range sim.CallLog(0, 0) {
		if c.Cmd == "Set-CASMailbox" && c.Result == "ok" {
			id, _ := c.Args["Identity"].(string)
			applied[id] = append(applied[id], c)
		}
	}
	twice := 0
	for _, mb := range mbs {
		calls := applied[mb.DistinguishedName]
		switch {
		case len(calls) == 0:
			t.Errorf("no successful Set-CASMailbox for %s", mb.Name)
		case len(calls) > 1:
			twice++
			if calls[0].Listener != 0 {
				t.Errorf("%s applied %d times, first on listener %d: a retry that was not caused by the kill", mb.Name, len(calls), calls[0].Listener)
			}
		}
	}
	if twice > size {
		t.Errorf("%d writes applied twice, want at most the %d in flight at the kill", twice, size)
	}
	if last, _ := servers.Load(len(mbs) - 1); last != host1 {
		t.Errorf("last write ran on %v, want %s", last, host1)
	}
	if eps := p.Endpoints(); eps[0].State == runspace.StateUp || eps[0].LastError == "" {
		t.Errorf("Endpoints()[0] = %+v, want down with its error", eps[0])
	}
	if f := metricValue(t, p, "easconnector_runspace_failovers_total"); f != 1 {
		t.Errorf("failovers_total = %v, want 1", f)
	}
	if up := metricValue(t, p, fmt.Sprintf(`easconnector_runspace_endpoint_up{server=%q}`, host0)); up != 0 {
		t.Errorf("endpoint_up{%s} = %v, want 0", host0, up)
	}

	// The preferred server returns: the prober takes it back and new
	// sessions go there.
	if err := sim.Restart(0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the prober to mark the preferred server up", func() bool { return p.Endpoints()[0].State == runspace.StateUp })
	back := false
	for i := 0; i < 60 && !back; i++ {
		res, err := p.Do(ctx, getSettings, nil)
		if err != nil {
			t.Fatal(err)
		}
		back = res.Server == host0
	}
	if !back {
		t.Errorf("no call ran on %s after it came back", host0)
	}
}

// TestPoolReprobesEveryDownServer: a failover server that went down while
// the preferred one was down too must come back once it recovers, although
// the preferred one is up again and serves every call: its state and
// endpoint_up gauge (and so any alert on it) must not stay down for good.
func TestPoolReprobesEveryDownServer(t *testing.T) { forModes(t, testPoolReprobesEveryDownServer) }

func testPoolReprobesEveryDownServer(t *testing.T, mode string) {
	sim := startSim(t, exsim.Options{Listeners: 2, Profile: exsim.ProfileZero})
	p := startPool(t, simOptions(t, sim, func(o *runspace.Options) {
		o.Size = 1
		o.CASFailover = true
		o.Mode = mode
	}))
	host0, host1 := sim.Hosts()[0], sim.Hosts()[1]
	ctx := testCtx(t, 60*time.Second)
	up := func(host string) float64 {
		return metricValue(t, p, fmt.Sprintf(`easconnector_runspace_endpoint_up{server=%q}`, host))
	}

	// The preferred server fails: calls move to the second one.
	if err := sim.Kill(0); err != nil {
		t.Fatal(err)
	}
	if res, err := p.Do(ctx, getSettings, nil); err != nil || res.Server != host1 {
		t.Fatalf("Do() after killing %s = %q, %v; want an answer from %s", host0, res.Server, err, host1)
	}
	// Then the second fails too: both are down.
	if err := sim.Kill(1); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Do(ctx, getSettings, nil); !errors.Is(err, runspace.ErrAllServersDown) {
		t.Fatalf("Do() with both servers killed: err = %v, want ErrAllServersDown", err)
	}
	if up(host1) != 0 {
		t.Fatalf("endpoint_up{%s} = %v with the server killed, want 0", host1, up(host1))
	}
	// The preferred one returns first and serves.
	if err := sim.Restart(0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the prober to mark the preferred server up", func() bool { return p.Endpoints()[0].State == runspace.StateUp })
	if res, err := p.Do(ctx, getSettings, nil); err != nil || res.Server != host0 {
		t.Fatalf("Do() after %s returned = %q, %v; want an answer from it", host0, res.Server, err)
	}
	// Now the second returns: the prober must find it, though nothing
	// would open a session there while the preferred one is up. Its
	// backoff grew while it was down (up to 64 × 100ms, with jitter).
	if err := sim.Restart(1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for p.Endpoints()[1].State != runspace.StateUp {
		if time.Now().After(deadline) {
			t.Fatalf("Endpoints()[1] = %+v 30s after %s came back, want up", p.Endpoints()[1], host1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ep := p.Endpoints()[1]; ep.LastError != "" || !ep.DownUntil.IsZero() {
		t.Errorf("Endpoints()[1] = %+v, want up without an error", ep)
	}
	if up(host1) != 1 {
		t.Errorf("endpoint_up{%s} = %v after it came back, want 1", host1, up(host1))
	}
	if up(host0) != 1 {
		t.Errorf("endpoint_up{%s} = %v, want 1", host0, up(host0))
	}
}

func TestPoolReplacesDroppedSession(t *testing.T) { forModes(t, testPoolReplacesDroppedSession) }

func testPoolReplacesDroppedSession(t *testing.T, mode string) {
	sim := startSim(t, exsim.Options{})
	p := startPool(t, simOptions(t, sim, func(o *runspace.Options) { o.Parallel, o.Mode = false, mode }))
	ctx := testCtx(t, 30*time.Second)
	s, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := s.Info().ShellID
	p.Release(s, nil)
	if !sim.DropShell(id) {
		t.Fatalf("shell %s not found", id)
	}
	// Not idempotent: it may only run on a session that received it.
	write := runspace.Call{Cmd: "Set-ActiveSyncOrganizationSettings", Args: map[string]any{"AdminMailRecipients": []string{"admin@contoso.com"}}}
	if _, err := p.Do(ctx, write, nil); err != nil {
		t.Fatalf("Do() after the shell was dropped: %v", err)
	}
	if _, err := p.Do(ctx, getSettings, nil); err != nil {
		t.Fatal(err)
	}
	if c := sim.Counters(); c.SessionsStarted != 2 || c.Cmdlets["Set-ActiveSyncOrganizationSettings"] != 1 {
		t.Errorf("simulator: %d sessions started, %d writes; want 2 and 1", c.SessionsStarted, c.Cmdlets["Set-ActiveSyncOrganizationSettings"])
	}
	if f := metricValue(t, p, `easconnector_runspace_session_failures_total{class="fault"}`) +
		metricValue(t, p, `easconnector_runspace_session_failures_total{class="transport"}`); f != 1 {
		t.Errorf("session failures = %v, want 1", f)
	}
}

func TestPoolAcquireHonoursContext(t *testing.T) {
	sim := startSim(t, exsim.Options{})
	p := startPool(t, simOptions(t, sim, func(o *runspace.Options) { o.Parallel = false }))
	ctx := testCtx(t, 30*time.Second)
	s1, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if s, err := p.Acquire(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire() on a full pool = %v, %v; want the context's deadline", s, err)
	}
	p.Release(s1, nil)
	s2, err := p.Acquire(ctx)
	if err != nil || s2 != s1 {
		t.Fatalf("Acquire() after Release = %p, %v; want the released session %p", s2, err, s1)
	}
	p.Release(s2, nil)
	if opens := metricValue(t, p, "easconnector_runspace_session_opens_total"); opens != 1 {
		t.Errorf("session opens = %v, want 1", opens)
	}
}

// TestPoolNoRetryAfterPartialOutput: a read cut after objects reached the
// caller is not run again (the caller would see them twice).
func TestPoolNoRetryAfterPartialOutput(t *testing.T) {
	sim := startSim(t, exsim.Options{})
	p := startPool(t, simOptions(t, sim, nil))
	ctx := testCtx(t, 30*time.Second)
	if err := sim.SetFaults(exsim.Faults{Truncate: true, TruncateAfter: 2, Cmdlets: []string{"Get-MobileDevice"}}); err != nil {
		t.Fatal(err)
	}
	n := 0
	res, err := p.Do(ctx, getDevices, func(json.RawMessage) error { n++; return nil })
	if err == nil || !errors.Is(err, runspace.ErrSessionBroken) || n != 2 || res.Attempts != 1 {
		t.Fatalf("truncated read = %+v after %d objects, %v; want a broken session after 2 objects, 1 attempt", res, n, err)
	}
	if c := sim.Counters(); c.Cmdlets["Get-MobileDevice"] != 1 {
		t.Errorf("Get-MobileDevice ran %d times, want 1", c.Cmdlets["Get-MobileDevice"])
	}
	if err := sim.SetFaults(exsim.Faults{}); err != nil {
		t.Fatal(err)
	}
	if res, err := p.Do(ctx, getDevices, nil); err != nil || res.Count != sim.Org().DeviceCount() {
		t.Fatalf("read after the fault = %+v, %v", res, err)
	}
}

func TestPoolRequestDeadline(t *testing.T) {
	sim := startSim(t, exsim.Options{})
	p := startPool(t, simOptions(t, sim, func(o *runspace.Options) { o.Size = 2; o.RequestTimeout = 300 * time.Millisecond }))
	ctx := testCtx(t, 30*time.Second)
	if err := sim.SetFaults(exsim.Faults{Hang: true, Cmdlets: []string{"Get-CASMailbox"}}); err != nil {
		t.Fatal(err)
	}
	mbs, _ := sim.Org().Mailboxes(0, 1)
	call := getMailbox(mbs[0].DistinguishedName)
	call.Idempotent = false
	start := time.Now()
	_, err := p.Do(ctx, call, nil)
	if runspace.Classify(err) != runspace.ClassTimeout || !errors.Is(err, runspace.ErrSessionBroken) {
		t.Fatalf("hung call error = %v (class %q), want a broken session by timeout", err, runspace.Classify(err))
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("hung call returned after %v", d)
	}
	if err := sim.SetFaults(exsim.Faults{}); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if _, err := p.Do(ctx, call, nil); err != nil {
			t.Fatalf("Do() after the deadline overrun: %v", err)
		}
	}
	eventually(t, "the overrun session's shell to be deleted", func() bool {
		return len(sim.WSMan(0).Shells()) <= 2 && sim.Counters().Sessions <= 2
	})
	if eps := p.Endpoints(); eps[0].State != runspace.StateUp {
		t.Errorf("a hung cmdlet marked the server %s", eps[0].State)
	}
	if e := metricValue(t, p, `easconnector_runspace_errors_total{cmdlet="Get-CASMailbox",class="timeout"}`); e != 1 {
		t.Errorf("errors_total{timeout} = %v, want 1", e)
	}
}

func TestPoolCloseLeavesNoGoroutines(t *testing.T) { forModes(t, testPoolCloseLeavesNoGoroutines) }

func testPoolCloseLeavesNoGoroutines(t *testing.T, mode string) {
	sim := startSim(t, exsim.Options{})
	before := settledGoroutines(0)
	p, err := runspace.NewPool(simOptions(t, sim, func(o *runspace.Options) { o.Mode = mode }))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 30*time.Second)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := p.Do(ctx, getSettings, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close() error = %v", err)
	}
	if _, err := p.Do(ctx, getSettings, nil); !errors.Is(err, runspace.ErrPoolClosed) {
		t.Errorf("Do() after Close() error = %v, want ErrPoolClosed", err)
	}
	if after := settledGoroutines(before); after > before {
		t.Errorf("goroutines: %d before the pool, %d after Close\n%s", before, after, goroutineDump())
	}
	if shells := sim.WSMan(0).Shells(); len(shells) != 0 {
		t.Errorf("shells left on the server: %d", len(shells))
	}
}

func TestPoolCloseAbortsCallsInFlight(t *testing.T) {
	sim := startSim(t, exsim.Options{})
	before := settledGoroutines(0)
	p, err := runspace.NewPool(simOptions(t, sim, nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 30*time.Second)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sim.SetFaults(exsim.Faults{Hang: true}); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := p.Do(ctx, getSettings, nil)
		errc <- err
	}()
	eventually(t, "the call to hang", func() bool { return sim.Counters().Hung == 1 })
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := p.Close(cctx); err == nil || !strings.Contains(err.Error(), "1 calls still in flight") {
		t.Errorf("Close() error = %v, want the call in flight reported", err)
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Error("the hung call succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the hung call did not return after Close")
	}
	if after := settledGoroutines(before); after > before {
		t.Errorf("goroutines: %d before the pool, %d after Close\n%s", before, after, goroutineDump())
	}
}

func TestPoolStartErrors(t *testing.T) {
	sim := startSim(t, exsim.Options{})
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	deadPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	ctx := testCtx(t, 30*time.Second)

	p, err := runspace.NewPool(simOptions(t, sim, func(o *runspace.Options) { o.Password = secret.New("wrong") }))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); !errors.Is(err, runspace.ErrAuth) {
		t.Errorf("Start() with a wrong password error = %v, want ErrAuth", err)
	}
	if eps := p.Endpoints(); eps[0].State != runspace.StateUp {
		t.Errorf("a credential failure marked the server %s", eps[0].State)
	}
	if _, err := p.Do(ctx, getSettings, nil); !errors.Is(err, runspace.ErrNotStarted) {
		t.Errorf("Do() before Start() error = %v, want ErrNotStarted", err)
	}
	_ = p.Close(ctx)

	p, err = runspace.NewPool(simOptions(t, sim, func(o *runspace.Options) {
		o.Servers = []string{"127.0.0.1", "127.0.0.2"}
		o.Port = deadPort
	}))
	if err != nil {
		t.Fatal(err)
	}
	err = p.Start(ctx)
	if !errors.Is(err, runspace.ErrAllServersDown) || runspace.Classify(err) != runspace.ClassTransport ||
		!strings.Contains(err.Error(), "127.0.0.2") {
		t.Errorf("Start() with nothing listening error = %v, want ErrAllServersDown naming both servers", err)
	}
	_ = p.Close(ctx)
}

func TestPoolHTTPS(t *testing.T) {
	sim := startSim(t, exsim.Options{TLS: true})
	ctx := testCtx(t, 30*time.Second)
	p := startPool(t, simOptions(t, sim, nil))
	if _, err := p.Do(ctx, getSettings, nil); err != nil {
		t.Fatalf("Do() over HTTPS: %v", err)
	}
	_, err := runspace.Open(ctx, simOptions(t, sim, func(o *runspace.Options) { o.CACert = nil }), sim.Hosts()[0])
	if runspace.Classify(err) != runspace.ClassTLS {
		t.Errorf("Open() without the CA error = %v (class %q), want tls", err, runspace.Classify(err))
	}
}

// settledGoroutines waits up to 5 s for the goroutine count to drop to
// want (0: just let it settle) and returns it.
func settledGoroutines(want int) int {
	n := runtime.NumGoroutine()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		m := runtime.NumGoroutine()
		if (want > 0 && m <= want) || (want == 0 && m == n) {
			return m
		}
		n = m
	}
	return n
}

func goroutineDump() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

func BenchmarkSessionRoundTrip(b *testing.B) {
	sim := startSim(b, exsim.Options{Quiet: true, Population: population.Generate(population.Options{Seed: 1, Devices: 10})})
	ctx := context.Background()
	s, err := runspace.Open(ctx, simOptions(b, sim, nil), sim.Hosts()[0])
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(ctx)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Do(ctx, getSettings, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSecondHopCredential: in remoting mode over HTTPS the session passes
// the account to New-PSSession; exsim's /PowerShell endpoint checks it.
// Over plain HTTP the option is refused, since the password would travel
// in clear text.
func TestSecondHopCredential(t *testing.T) {
	sim := startSim(t, exsim.Options{TLS: true})
	ctx := testCtx(t, 30*time.Second)
	s, err := runspace.Open(ctx, simOptions(t, sim, func(o *runspace.Options) { o.SecondHopCredential = true }), sim.Hosts()[0])
	if err != nil {
		t.Fatalf("Open() with a second-hop credential: %v", err)
	}
	s.Close(ctx)
	if got := sim.Counters().SecondHopCredentials; got != 1 {
		t.Errorf("SecondHopCredentials = %d, want 1", got)
	}

	o := simOptions(t, sim, func(o *runspace.Options) { o.SecondHopCredential = true; o.PlainHTTP = true; o.CACert = nil })
	if _, err := runspace.NewPool(o); err == nil || !strings.Contains(err.Error(), "needs HTTPS") {
		t.Errorf("NewPool(SecondHopCredential over HTTP) error = %v, want it refused", err)
	}
}

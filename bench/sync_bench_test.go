package bench

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
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
	"github.com/easconnector/easconnector/runspace"
)

const graphSecret = "bench-secret"

var popNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// largeFleet is the smallest fleet that runs only when asked for by name
// (-bench '…/devices=20000/…') or with EASCONNECTOR_BENCH_LARGE=1: a
// first sync of 100,000 devices at the lab profile takes most of an hour.
const largeFleet = 20_000

// asked reports whether -bench names devices=N (an anchored match: "devices=1000" does
// not name devices=100000) or EASCONNECTOR_BENCH_LARGE=1 asks for every size.
func asked(devices int) bool {
	if os.Getenv("EASCONNECTOR_BENCH_LARGE") == "1" {
		return true
	}
	f := flag.Lookup("test.bench")
	if f == nil {
		return false
	}
	v, name := f.Value.String(), fmt.Sprintf("devices=%d", devices)
	for i := strings.Index(v, name); i >= 0; i = next(v, name, i) {
		if end := i + len(name); end == len(v) || v[end] < '0' || v[end] > '9' {
			return true
		}
	}
	return false
}

// next finds name in v after position i, or -1.
func next(v, name string, i int) int {
	j := strings.Index(v[i+1:], name)
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// skipUnlessAsked skips a large case that -bench did not name.
func skipUnlessAsked(b *testing.B, devices int) {
	if devices < largeFleet || os.Getenv("EASCONNECTOR_BENCH_LARGE") == "1" {
		return
	}
	if asked(devices) {
		return
	}
	b.Skipf("devices=%d runs only when -bench names it or EASCONNECTOR_BENCH_LARGE=1", devices)
}

// bed is one organization on both simulators with a pool and an engine.
type bed struct {
	b       *testing.B
	devices int
	size    int
	profile exsim.Profile
	pop     *population.Population // exsim's
	sim     *exsim.Sim
	graph   *graphsim.Server
	pool    *runspace.Pool
	ex      *exchange.Client
	src     *mdm.Graph
	caches  pipeline.Caches
	policy  pipeline.Policy
	eng     *pipeline.Engine
	clock   atomic.Int64
}

// popOptions makes a fleet whose lists start empty: every enrolled,
// compliant device needs an allow entry and every noncompliant one a
// block entry, so a first sync writes most mailboxes.
func popOptions(devices int) population.Options {
	return population.Options{Seed: 42, Devices: devices, Now: popNow, AdminEntryRate: -1}
}

func newBed(b *testing.B, devices, size int, profile string) *bed {
	b.Helper()
	prof, err := exsim.LookupProfile(profile)
	if err != nil {
		b.Fatal(err)
	}
	t := &bed{b: b, devices: devices, size: size, profile: prof, pop: population.Generate(popOptions(devices))}
	t.clock.Store(popNow.UnixNano())
	t.sim, err = exsim.Start(exsim.Options{Population: t.pop, Profile: profile, Quiet: true, CallLogSize: 1})
	if err != nil {
		b.Fatalf("exsim.Start: %v", err)
	}
	b.Cleanup(t.sim.Close)
	t.graph = graphsim.New(population.Generate(popOptions(devices)), graphsim.Options{ClientSecret: graphSecret})
	url, err := t.graph.Start()
	if err != nil {
		b.Fatalf("graphsim.Start: %v", err)
	}
	b.Cleanup(t.graph.Close)
	t.src, err = mdm.NewGraph(mdm.GraphOptions{TenantID: graphsim.DefaultTenantID, ClientID: graphsim.DefaultClientID,
		ClientSecret: secret.New(graphSecret), AuthorityURL: url, GraphURL: url})
	if err != nil {
		b.Fatal(err)
	}
	t.pool, err = runspace.NewPool(runspace.Options{
		Servers: t.sim.Hosts(), Port: t.sim.Port(), User: exsim.DefaultUser, Password: secret.New(exsim.DefaultPassword),
		PlainHTTP: true, Auth: runspace.AuthBasic,
		Parallel: true, Size: size, ConnectTimeout: time.Minute, RequestTimeout: 30 * time.Minute,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := t.pool.Start(ctx); err != nil {
		b.Fatalf("pool.Start: %v", err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = t.pool.Close(ctx)
	})
	t.ex = exchange.New(t.pool)
	co := cache.Options{ExpectedItems: 2 * int64(devices)}
	mc, err := cache.NewMailboxCache(co, 0)
	if err != nil {
		b.Fatal(err)
	}
	fc, err := cache.NewFingerprintCache(co)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(mc.Close)
	b.Cleanup(fc.Close)
	t.caches = pipeline.Caches{Mailboxes: mc, Fingerprints: fc}
	t.policy = pipeline.DefaultPolicy()
	t.policy.Enabled = true
	t.policy.IncludedGroups = []string{t.pop.Included.ID}
	t.policy.ExcludedGroups = []string{t.pop.Excluded.ID}
	t.reset()
	return t
}

// reset puts Exchange back to the population (empty lists, org default
// Quarantine) and starts an engine with a fresh state: the next full sync
// is a first sync.
func (t *bed) reset() {
	t.b.Helper()
	if err := t.sim.LoadPopulation(t.pop); err != nil {
		t.b.Fatal(err)
	}
	if err := t.sim.Org().SetOrg(exchange.OrgSettings{DefaultAccessLevel: exchange.LevelQuarantine}); err != nil {
		t.b.Fatal(err)
	}
	if t.eng != nil {
		_ = t.eng.Close()
	}
	guard := pipeline.DefaultGuardConfig()
	guard.MaxNewBlocks = t.devices // a first sync blocks every noncompliant device
	eng, err := pipeline.New(pipeline.Options{
		Exchange: t.ex, MDM: t.src, Policy: t.policy, Guard: guard, StateDir: t.b.TempDir(), State: pipeline.NewState(),
		Workers: t.size, Caches: t.caches, Clock: func() time.Time { return time.Unix(0, t.clock.Load()).UTC() },
		Progress: heapProfileAtPlan(),
	})
	if err != nil {
		t.b.Fatal(err)
	}
	t.eng = eng
}

// syncStats is what one timed sync cost.
type syncStats struct {
	elapsed        time.Duration
	cmdlets        uint64
	writes         uint64
	setCAS         uint64
	alloc, mallocs uint64
	peakHeap       uint64 // bytes of heap objects, process
	peakLive       uint64 // bytes of live heap at a GC, process
	baseHeap       uint64 // bytes of live heap before the sync, after a GC
	bound          time.Duration
	rep            *pipeline.Report
}

// heapSampler records, while it runs, the peak of the heap's objects
// (live and not yet swept: what the process holds) and the peak of the
// live heap as each garbage collection measured it.
type heapSampler struct {
	stop       chan struct{}
	done       chan struct{}
	peak, live atomic.Uint64
}

// sampleHeap returns /memory/classes/heap/objects:bytes and
// /gc/heap/live:bytes.
func sampleHeap() (objects, live uint64) {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

func startHeapSampler() *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	h.sample()
	go func() {
		defer close(h.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-tick.C:
				h.sample()
			}
		}
	}()
	return h
}

func (h *heapSampler) sample() {
	o, l := sampleHeap()
	if o > h.peak.Load() {
		h.peak.Store(o)
	}
	if l > h.live.Load() {
		h.live.Store(l)
	}
}

func (h *heapSampler) finish() (peak, live uint64) {
	close(h.stop)
	<-h.done
	h.sample()
	return h.peak.Load(), h.live.Load()
}

// timedSync runs one sync with the benchmark timer on, and only the sync:
// everything around it runs with the timer stopped. The timer is on again
// when it returns, as b.Loop requires.
func (t *bed) timedSync(kind pipeline.SyncKind) syncStats {
	t.b.Helper()
	t.b.StopTimer()
	defer t.b.StartTimer()
	runtime.GC()
	var st syncStats
	_, st.baseHeap = sampleHeap()
	t.sim.ResetCounters()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	h := startHeapSampler()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	start := time.Now()
	t.b.StartTimer()
	rep, err := t.eng.Sync(ctx, pipeline.SyncRequest{Kind: kind})
	t.b.StopTimer()
	st.elapsed = time.Since(start)
	st.peakHeap, st.peakLive = h.finish()
	runtime.ReadMemStats(&m1)
	if err != nil {
		t.b.Fatalf("Sync(%s): %v", kind, err)
	}
	if rep.Failures > 0 {
		t.b.Fatalf("Sync(%s): %d mailbox writes failed: %v", kind, rep.Failures, rep.Failed)
	}
	c := t.sim.Counters()
	for _, n := range c.Cmdlets {
		st.cmdlets += n
	}
	st.writes, st.setCAS = c.WriteCmdlets, c.Cmdlets["Set-CASMailbox"]
	st.alloc, st.mallocs = m1.TotalAlloc-m0.TotalAlloc, m1.Mallocs-m0.Mallocs
	st.rep = rep
	if t.profile.Name != exsim.ProfileZero {
		st.bound = t.bound(st)
	}
	return st
}

// totals accumulates syncStats over a benchmark's iterations.
type totals struct {
	n                               int
	elapsed                         time.Duration
	cmdlets, writes, alloc, mallocs uint64
	peakHeap, peakLive, syncLive    uint64
	bound                           time.Duration
	mailboxesRead, devices          int
}

func (s *totals) add(st syncStats) {
	s.n++
	s.elapsed += st.elapsed
	s.cmdlets += st.cmdlets
	s.writes += st.writes
	s.alloc += st.alloc
	s.mallocs += st.mallocs
	s.peakHeap = max(s.peakHeap, st.peakHeap)
	s.peakLive = max(s.peakLive, st.peakLive)
	if st.peakLive > st.baseHeap {
		s.syncLive = max(s.syncLive, st.peakLive-st.baseHeap)
	}
	s.bound += st.bound
	s.mailboxesRead += st.rep.ReadMailboxes
	s.devices += st.rep.Devices
}

func (s *totals) report(b *testing.B, fleet int, lab bool) {
	if s.n == 0 {
		return
	}
	n := float64(s.n)
	devices := float64(fleet) * n
	b.ReportMetric(devices/s.elapsed.Seconds(), "devices/s")
	b.ReportMetric(float64(s.mallocs)/devices, "allocs/device")
	b.ReportMetric(float64(s.alloc)/devices, "B/device")
	b.ReportMetric(float64(s.peakHeap)/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(s.peakLive)/(1<<20), "peak-live-MB")
	b.ReportMetric(float64(s.syncLive)/(1<<20), "sync-live-MB")
	b.ReportMetric(float64(s.cmdlets)/n, "cmdlets/sync")
	b.ReportMetric(float64(s.writes)/n, "writes/sync")
	if s.writes > 0 {
		// What one mailbox write costs end to end, intent commits included.
		b.ReportMetric(float64(s.elapsed.Nanoseconds())/float64(s.writes), "ns/write")
	}
	b.ReportMetric(float64(s.mailboxesRead)/n, "mailboxes-read/sync")
	if lab && s.bound > 0 {
		b.ReportMetric(s.elapsed.Seconds()/s.bound.Seconds(), "x-bound")
		b.ReportMetric(s.bound.Seconds()/n, "bound-s")
	}
}

// meanLatency is a cmdlet's mean latency for objects objects under the
// profile: the fixed part, per object, and the mean of the jitter (an
// exponential capped at 8 × its mean).
func meanLatency(l exsim.Latency, objects int) time.Duration {
	j := time.Duration(float64(l.Jitter) * (1 - math.Exp(-8)))
	return l.Fixed + time.Duration(objects)*l.PerObject + j
}

// bound is DESIGN.md §9's lower bound of a sync: the reads it made, run
// R at a time (never shorter than the longest), plus ceil(W/R) rounds of
// Set-CASMailbox.
func (t *bed) bound(st syncStats) time.Duration {
	c := st.rep
	reads := []time.Duration{
		meanLatency(t.profile.Latency("Get-MobileDevice"), t.sim.Org().DeviceCount()),
		meanLatency(t.profile.Latency("Get-CASMailbox"), c.ReadMailboxes),
		meanLatency(t.profile.Latency("Get-ActiveSyncOrganizationSettings"), 1),
		meanLatency(t.profile.Latency("Get-ActiveSyncDeviceAccessRule"), 0),
	}
	if c.Kind == pipeline.SyncQuick {
		// The new partnerships and the devices in quarantine or discovery
		// (two filtered reads), then one -Mailbox read per affected
		// mailbox; list reads are left out (the bound stays a lower bound).
		attention := 0
		devs, _, _ := t.sim.Org().Devices("", 0, 0)
		for _, d := range devs {
			if d.DeviceAccessState == exchange.AccessQuarantined || d.DeviceAccessState == exchange.AccessDeviceDiscovery {
				attention++
			}
		}
		dev := t.profile.Latency("Get-MobileDevice")
		reads = []time.Duration{meanLatency(dev, 0), meanLatency(dev, attention)}
		for range c.ReadMailboxes {
			reads = append(reads, meanLatency(dev, 0))
		}
		reads = append(reads, time.Duration(c.Devices)*dev.PerObject)
	}
	var sum, longest time.Duration
	for _, d := range reads {
		sum += d
		longest = max(longest, d)
	}
	readTime := max(longest, sum/time.Duration(t.size))
	w := int(st.setCAS)
	rounds := (w + t.size - 1) / t.size
	return readTime + time.Duration(rounds)*meanLatency(t.profile.Latency("Set-CASMailbox"), 0)
}

// BenchmarkFullSync measures full syncs end to end. sync=first starts
// every iteration from empty lists and an empty state, so that most
// mailboxes are written (the worst case, a first deployment);
// sync=unchanged repeats a full sync over a settled organization, which
// must write nothing.
func BenchmarkFullSync(b *testing.B) {
	for _, devices := range []int{1000, 5000, 20_000, 100_000} {
		for _, size := range []int{1, 8} {
			for _, profile := range []string{exsim.ProfileZero, exsim.ProfileLab} {
				for _, kind := range []string{"first", "unchanged"} {
					name := fmt.Sprintf("devices=%d/runspaces=%d/profile=%s/sync=%s", devices, size, profile, kind)
					b.Run(name, func(b *testing.B) {
						skipUnlessAsked(b, devices)
						benchFull(b, devices, size, profile, kind == "first")
					})
				}
			}
		}
	}
}

func benchFull(b *testing.B, devices, size int, profile string, first bool) {
	t := newBed(b, devices, size, profile)
	if !first {
		t.timedSync(pipeline.SyncFull) // settle (not counted: b.Loop resets the timer)
	}
	b.ReportAllocs()
	var tot totals
	for b.Loop() {
		if first {
			b.StopTimer()
			t.reset()
			b.StartTimer()
		}
		st := t.timedSync(pipeline.SyncFull)
		if !first && st.writes != 0 {
			b.Fatalf("unchanged full sync issued %d write cmdlets", st.writes)
		}
		if first && int(st.setCAS) < st.rep.Mailboxes/2 {
			b.Fatalf("first sync wrote %d of %d mailboxes; the population should need most of them written", st.setCAS, st.rep.Mailboxes)
		}
		tot.add(st)
	}
	tot.report(b, devices, profile != exsim.ProfileZero)
}

// BenchmarkQuickSync measures quick syncs after 1% churn (a third each
// new phones, compliance flips and unenrolments) on both simulators.
func BenchmarkQuickSync(b *testing.B) {
	for _, devices := range []int{5000, 20_000, 100_000} {
		for _, size := range []int{1, 8} {
			for _, profile := range []string{exsim.ProfileZero, exsim.ProfileLab} {
				name := fmt.Sprintf("devices=%d/runspaces=%d/profile=%s", devices, size, profile)
				b.Run(name, func(b *testing.B) {
					skipUnlessAsked(b, devices)
					benchQuick(b, devices, size, profile)
				})
			}
		}
	}
}

func benchQuick(b *testing.B, devices, size int, profile string) {
	t := newBed(b, devices, size, profile)
	t.timedSync(pipeline.SyncFull)
	b.ReportAllocs()
	var tot totals
	var mu sync.Mutex
	for b.Loop() {
		b.StopTimer()
		const step = 10 * time.Minute
		changes, err := t.sim.ApplyChurn(0.01, step)
		if err != nil {
			b.Fatal(err)
		}
		var gchanges []population.Change
		t.graph.Update(func(p *population.Population) {
			mu.Lock()
			defer mu.Unlock()
			gchanges = p.Churn(0.01, step)
		})
		if len(changes) != len(gchanges) {
			b.Fatalf("simulators churned differently: %d and %d changes", len(changes), len(gchanges))
		}
		t.clock.Add(int64(step))
		b.StartTimer()
		st := t.timedSync(pipeline.SyncQuick)
		if st.rep.Kind != pipeline.SyncQuick {
			b.Fatalf("quick sync ran as %s: %s", st.rep.Kind, st.rep.Escalated)
		}
		tot.add(st)
	}
	tot.report(b, devices, profile != exsim.ProfileZero)
}

// heapProfileAtPlan returns, when EASCONNECTOR_BENCH_HEAPPROFILE names a
// file, a Progress hook that writes a heap profile there each time a sync
// has planned every mailbox (the last sync's profile stays): the moment a
// full sync holds the most (the MDM snapshot, every mailbox and decision,
// the plans, and the previous sync's decisions). Inspect it with
// go tool pprof -sample_index=inuse_space.
func heapProfileAtPlan() func(pipeline.ProgressEvent) {
	path := os.Getenv("EASCONNECTOR_BENCH_HEAPPROFILE")
	if path == "" {
		return nil
	}
	return func(ev pipeline.ProgressEvent) {
		if ev.Stage != pipeline.StagePlan || ev.Done != ev.Total || ev.Total == 0 {
			return
		}
		runtime.GC()
		f, err := os.Create(path)
		if err != nil {
			return
		}
		defer f.Close()
		_ = pprof.WriteHeapProfile(f)
	}
}

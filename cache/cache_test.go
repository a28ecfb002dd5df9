package cache

import (
	"bytes"
	"fmt"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/easconnector/easconnector/mdm"
)

var now = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// counter reads one counter from the set's exposition.
func counter(t *testing.T, set *metrics.Set, what, cache string) int {
	t.Helper()
	var b bytes.Buffer
	set.WritePrometheus(&b)
	re := regexp.MustCompile(fmt.Sprintf(`(?m)^easconnector_cache_%s_total\{cache="%s"\} (\d+)$`, what, cache))
	m := re.FindStringSubmatch(b.String())
	if m == nil {
		t.Fatalf("no %s counter for %s in\n%s", what, cache, b.String())
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestMailboxCache(t *testing.T) {
	set := metrics.NewSet()
	c, err := NewMailboxCache(Options{Metrics: set, ExpectedItems: 1000, MaxCostBytes: 1 << 20}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	snap := MailboxSnapshot{Allowed: []string{"ApplA"}, Blocked: []string{"ApplB", "ApplC"}, FetchedAt: now}
	if !c.Set("Contoso.com/Users/Alice", snap) {
		t.Fatal("Set() refused a small entry into an empty cache")
	}
	snap.Allowed[0] = "mutated" // the cache holds a copy
	c.Wait()
	got, ok := c.Get("contoso.com/users/ALICE", now.Add(time.Minute))
	if !ok || got.Allowed[0] != "ApplA" || len(got.Blocked) != 2 || !got.FetchedAt.Equal(now) {
		t.Fatalf("Get() = %+v, %v", got, ok)
	}
	got.Blocked[0] = "mutated" // and hands out copies
	if again, _ := c.Get("contoso.com/users/alice", now); again.Blocked[0] != "ApplB" {
		t.Errorf("Get() shares its slices: %+v", again)
	}
	if _, ok := c.Get("bob", now); ok {
		t.Error("Get(unknown) hit")
	}
	if _, ok := c.Get("contoso.com/users/alice", now.Add(2*time.Hour)); ok {
		t.Error("Get() returned an entry older than maxAge")
	}
	if _, ok := c.Get("contoso.com/users/alice", now); ok {
		t.Error("an entry too old once is gone")
	}
	if h, m := counter(t, set, "hits", "mailbox"), counter(t, set, "misses", "mailbox"); h != 2 || m != 3 {
		t.Errorf("hits %d misses %d, want 2 and 3", h, m)
	}
	c.Set("x", snap)
	c.Wait()
	c.Del("X")
	c.Wait()
	if _, ok := c.Get("x", now); ok {
		t.Error("Del() kept the entry")
	}
}

func TestFingerprintCache(t *testing.T) {
	set := metrics.NewSet()
	c, err := NewFingerprintCache(Options{Metrics: set, ExpectedItems: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Changed("dev-1", 42) {
		t.Error("Changed() on a miss = false")
	}
	c.Wait()
	if c.Changed("DEV-1", 42) {
		t.Error("Changed() with the same fingerprint = true")
	}
	if !c.Changed("dev-1", 43) {
		t.Error("Changed() with a new fingerprint = false")
	}
	c.Wait()
	if fp, ok := c.Get("dev-1"); !ok || fp != 43 {
		t.Errorf("Get() = %d, %v; want 43", fp, ok)
	}
}

// TestEvictionWithinCost: a cache far smaller than what is offered keeps
// its cost bound and counts what it evicted or refused.
func TestEvictionWithinCost(t *testing.T) {
	set := metrics.NewSet()
	const maxCost = 16 << 10
	c, err := NewMailboxCache(Options{Metrics: set, ExpectedItems: 100, MaxCostBytes: maxCost}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	snap := MailboxSnapshot{Allowed: []string{"ApplAAAAAAAAAAAAAAAAAAAA", "ApplBBBBBBBBBBBBBBBBBBBB"}, FetchedAt: now}
	for i := range 2000 {
		c.Set(fmt.Sprintf("mailbox-%d", i), snap)
	}
	c.Wait()
	held := 0
	for i := range 2000 {
		if _, ok := c.Get(fmt.Sprintf("mailbox-%d", i), now); ok {
			held++
		}
	}
	per := snap.cost("mailbox-1000")
	if int64(held)*per > maxCost || held == 0 {
		t.Errorf("holds %d entries of ~%d bytes, bound %d", held, per, maxCost)
	}
	if counter(t, set, "evictions", "mailbox")+counter(t, set, "rejections", "mailbox") < 2000-held {
		t.Errorf("evictions %d + rejections %d do not account for %d entries not held",
			counter(t, set, "evictions", "mailbox"), counter(t, set, "rejections", "mailbox"), 2000-held)
	}
}

// TestDisabledAndNil: a disabled cache and a nil cache drop everything, so
// every lookup is a miss and every fingerprint counts as changed.
func TestDisabledAndNil(t *testing.T) {
	set := metrics.NewSet()
	mc, err := NewMailboxCache(Options{Metrics: set, Disabled: true}, 0)
	if err != nil {
		t.Fatal(err)
	}
	fc, err := NewFingerprintCache(Options{Metrics: set, Disabled: true})
	if err != nil {
		t.Fatal(err)
	}
	var nilM *MailboxCache
	var nilF *FingerprintCache
	for _, m := range []*MailboxCache{mc, nilM} {
		if m.Set("a", MailboxSnapshot{FetchedAt: now}) {
			t.Error("disabled Set() accepted")
		}
		m.Wait()
		if _, ok := m.Get("a", now); ok {
			t.Error("disabled Get() hit")
		}
		m.Del("a")
		m.Close()
	}
	for _, f := range []*FingerprintCache{fc, nilF} {
		for range 3 {
			if !f.Changed("r", 1) {
				t.Error("disabled Changed() = false")
			}
			f.Wait()
		}
		f.Del("r")
		f.Close()
	}
	if counter(t, set, "misses", "mailbox") != 1 || counter(t, set, "rejections", "mailbox") != 1 ||
		counter(t, set, "misses", "fingerprint") != 3 || counter(t, set, "rejections", "fingerprint") != 3 {
		t.Error("disabled caches do not count their misses and rejections")
	}
}

func TestOptionsValidate(t *testing.T) {
	if _, err := NewMailboxCache(Options{MaxCostBytes: -1}, 0); err == nil || !strings.Contains(err.Error(), "max_cost_bytes") {
		t.Errorf("negative MaxCostBytes: %v", err)
	}
	if _, err := NewFingerprintCache(Options{ExpectedItems: -1}); err == nil || !strings.Contains(err.Error(), "expected_items") {
		t.Errorf("negative ExpectedItems: %v", err)
	}
}

// TestCloseConcurrent: Close while other goroutines use the cache neither
// panics nor races, use after Close misses, and no goroutine is left.
func TestCloseConcurrent(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 5 {
		c, err := NewMailboxCache(Options{ExpectedItems: 100}, 0)
		if err != nil {
			t.Fatal(err)
		}
		f, err := NewFingerprintCache(Options{ExpectedItems: 100})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := range 300 {
					k := fmt.Sprint(w, "-", i%50)
					c.Set(k, MailboxSnapshot{FetchedAt: now})
					c.Get(k, now)
					f.Changed(k, uint64(i))
				}
			})
		}
		c.Close()
		f.Close()
		wg.Wait()
		c.Close()
		if _, ok := c.Get("0-1", now); ok {
			t.Error("Get() after Close hit")
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Close, %d before", n, before)
	}
}

func TestFingerprint(t *testing.T) {
	base := mdm.Record{
		ID: "1", EASDeviceID: "ApplABC", UserPrincipalName: "alice@contoso.com", Email: "alice@contoso.com",
		Compliance: mdm.ComplianceCompliant, EnrolledAt: now.Add(-time.Hour), LastSyncAt: now, Model: "iPhone15C2", OSVersion: "17.5",
	}
	fp := Fingerprint(base)
	if fp != Fingerprint(base) {
		t.Fatal("Fingerprint is not deterministic")
	}
	same := []func(*mdm.Record){
		func(r *mdm.Record) { r.LastSyncAt = now.Add(time.Hour) },
		func(r *mdm.Record) { r.Model, r.OSVersion, r.Platform = "x", "y", "z" },
		func(r *mdm.Record) { r.EASDeviceID = "APPLabc" },
		func(r *mdm.Record) { r.UserPrincipalName = "Alice@Contoso.com" },
	}
	for i, mut := range same {
		r := base
		mut(&r)
		if Fingerprint(r) != fp {
			t.Errorf("irrelevant change %d changed the fingerprint", i)
		}
	}
	diff := []func(*mdm.Record){
		func(r *mdm.Record) { r.Compliance = mdm.ComplianceNoncompliant },
		func(r *mdm.Record) { r.EASDeviceID = "ApplABD" },
		func(r *mdm.Record) { r.UserPrincipalName = "mallory@contoso.com" },
		func(r *mdm.Record) { r.Email = "" },
		func(r *mdm.Record) { r.EnrolledAt = time.Time{} },
		// Length prefixes: moving bytes between fields changes the hash.
		func(r *mdm.Record) { r.UserPrincipalName, r.Email = "alice@contoso.comalice", "@contoso.com" },
	}
	for i, mut := range diff {
		r := base
		mut(&r)
		if Fingerprint(r) == fp {
			t.Errorf("relevant change %d kept the fingerprint", i)
		}
	}
	seen := map[uint64]bool{}
	for _, stale := range []bool{false, true} {
		for _, grace := range []bool{false, true} {
			seen[WithTimeState(fp, stale, grace)] = true
		}
	}
	if len(seen) != 4 || seen[fp] {
		t.Errorf("WithTimeState gives %d distinct values, want 4 all different from the fingerprint", len(seen))
	}
}

func BenchmarkFingerprintCacheChanged(b *testing.B) {
	c, err := NewFingerprintCache(Options{ExpectedItems: 10_000})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("record-%d", i)
		c.Set(keys[i], uint64(i))
	}
	c.Wait()
	rec := mdm.Record{EASDeviceID: "ApplABC", UserPrincipalName: "alice@contoso.com", Compliance: mdm.ComplianceCompliant}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.Changed(keys[i%len(keys)], Fingerprint(rec))
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

package scenario

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/loadtest/exsim"
)

var t0 = time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func TestWritesFromCalls(t *testing.T) {
	calls := []exsim.Call{
		// WinRS frame shape.
		{Cmd: "Set-CASMailbox", Result: "ok", Time: at(10), Duration: 2 * time.Second,
			Args: map[string]any{"Identity": "x", "ActiveSyncAllowedDeviceIDs": map[string]any{"add": []any{"DEVA"}, "remove": []any{"DEVB"}}}},
		// PSRP hashtable shape, blocked list.
		{Cmd: "set-casmailbox", Result: "ok", Time: at(11), Args: map[string]any{"ActiveSyncBlockedDeviceIDs": map[string]any{"Add": "DEVC"}}},
		// Not applied: throttled, failed.
		{Cmd: "Set-CASMailbox", Result: "throttled", Time: at(12), Args: map[string]any{"ActiveSyncBlockedDeviceIDs": map[string]any{"add": []any{"DEVD"}}}},
		{Cmd: "Set-CASMailbox", Result: "error", Time: at(12), Args: map[string]any{"ActiveSyncBlockedDeviceIDs": map[string]any{"add": []any{"DEVE"}}}},
		// Reads and writes of other things.
		{Cmd: "Get-CASMailbox", Result: "ok", Time: at(13), Args: map[string]any{"Identity": "DEVF"}},
		{Cmd: "Set-CASMailbox", Result: "ok", Time: at(14), Args: map[string]any{"Identity": "DEVG"}},
	}
	got := WritesFromCalls(calls)
	if len(got) != 2 {
		t.Fatalf("WritesFromCalls = %+v, want the two applied list writes", got)
	}
	slices.Sort(got[0].Devices)
	if !got[0].At.Equal(at(12)) || !slices.Equal(got[0].Devices, []string{"DEVA", "DEVB"}) {
		t.Errorf("first write = %+v, want DEVA and DEVB landing at arrival + duration", got[0])
	}
	if !got[1].At.Equal(at(11)) || !slices.Equal(got[1].Devices, []string{"DEVC"}) {
		t.Errorf("second write = %+v, want DEVC", got[1])
	}
}

func TestLags(t *testing.T) {
	writes := []Write{
		{At: at(30), Devices: []string{"DEVA"}},
		{At: at(5), Devices: []string{"deva"}}, // before the change: another change's write
		{At: at(70), Devices: []string{"DEVB", "DEVC"}},
		{At: at(50), Devices: []string{"DEVB"}},
	}
	changes := []Change{
		{At: at(10), DeviceID: "DevA"},  // first write at or after it: 30 → 20 s
		{At: at(40), DeviceID: "DEVB"},  // 50 → 10 s, not 70
		{At: at(70), DeviceID: "DEVC"},  // a write at the same instant counts: 0 s
		{At: at(40), DeviceID: "DEVA"},  // no write after it
		{At: at(1), DeviceID: "NOSUCH"}, // never written
	}
	r := Lags(changes, writes)
	want := []time.Duration{20 * time.Second, 10 * time.Second, 0}
	if !slices.Equal(r.Lags, want) || r.Unwritten != 2 {
		t.Errorf("Lags = %v, %d unwritten; want %v, 2", r.Lags, r.Unwritten, want)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(101-i)*time.Second) // unsorted on purpose
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Second}, {95, 95 * time.Second}, {100, 100 * time.Second}, {1, time.Second}, {0.5, time.Second}} {
		if got := Percentile(ds, c.p); got != c.want {
			t.Errorf("Percentile(1..100 s, %v) = %s, want %s", c.p, got, c.want)
		}
	}
	if ds[0] != 100*time.Second {
		t.Error("Percentile sorted its input in place")
	}
	if got := Percentile(nil, 95); got != 0 {
		t.Errorf("Percentile(nil) = %s", got)
	}
	three := []time.Duration{3, 1, 2}
	if d := Distribution(three); d != (Dist{N: 3, P50: 2, P95: 3, Max: 3}) {
		t.Errorf("Distribution(1,2,3) = %+v", d)
	}
}

func TestObjectives(t *testing.T) {
	rep := &Report{Scenario: "x", Lag: Dist{N: 10, P50: time.Minute, P95: 90 * time.Second, Max: 3 * time.Minute},
		FinalWrites: 0, CleanExit: true, FailedSyncs: 1, PeakRSS: 600 << 20, FirstSync: 10 * time.Minute,
		Extra: map[string]float64{"writes-during": 0}}
	for _, c := range []struct {
		o    Objective
		want bool
	}{
		{LagP95AtMost(2 * time.Minute), true},
		{LagP95AtMost(time.Minute), false},
		{LagMaxAtMost(3 * time.Minute), true},
		{LagMaxAtMost(2 * time.Minute), false},
		{Converged(), true},
		{FailedSyncsAtMost(1), true},
		{FailedSyncsAtMost(0), false},
		{PeakRSSAtMost(600), true},
		{PeakRSSAtMost(599), false},
		{FirstSyncAtMost(10 * time.Minute), true},
		{FirstSyncAtMost(9 * time.Minute), false},
		{ExtraAtMost("writes-during", 0, ""), true},
		{ExtraAtMost("missing", 0, ""), false}, // a measurement never made fails
		{ExtraAtLeast("writes-during", 1, ""), false},
	} {
		if got, ok := c.o.Check(rep); ok != c.want {
			t.Errorf("%q on the report = %v (%s), want %v", c.o.Text, ok, got, c.want)
		}
	}
	// No lag sample proves nothing.
	if _, ok := LagP95AtMost(time.Hour).Check(&Report{}); ok {
		t.Error("lag objective held with no change enforced")
	}
	if _, ok := Converged().Check(&Report{FinalWrites: 3, CleanExit: true}); ok {
		t.Error("converged held with 3 writes left for the closing sync")
	}
	if _, ok := Converged().Check(&Report{CleanExit: false}); ok {
		t.Error("converged held after an unclean exit")
	}
	rep.Evaluate([]Objective{LagP95AtMost(2 * time.Minute), FailedSyncsAtMost(0)})
	if rep.OK() || len(rep.Objectives) != 2 || !rep.Objectives[0].OK || rep.Objectives[1].OK {
		t.Errorf("Evaluate = %+v, OK %v; want the second objective broken", rep.Objectives, rep.OK())
	}
	if (&Report{}).OK() {
		t.Error("a report without objectives is OK")
	}
}

func TestPrint(t *testing.T) {
	rep := &Report{Scenario: "steady", Devices: 5000, Wall: 200 * time.Second, FirstSync: 4 * time.Second,
		Syncs: Dist{N: 3, P50: time.Second, P95: 2 * time.Second, Max: 2 * time.Second}, Changes: 50, Unwritten: 20,
		Lag: Dist{N: 30, P50: 31 * time.Second, P95: 62 * time.Second, Max: 65 * time.Second}, Cmdlets: 9000, Writes: 4000,
		CmdletsPerSec: 812.4, PeakRSS: 80 << 20, CPU: 3 * time.Second, CleanExit: true, Extra: map[string]float64{"b": 2, "a": 1}}
	rep.Evaluate([]Objective{LagP95AtMost(time.Minute)})
	var b strings.Builder
	rep.Print(&b)
	out := b.String()
	for _, want := range []string{"== steady: FAIL (5000 devices, 3m20s)", "31s / 1m2s / 1m5s (n=30)", "cmdlets/s (in syncs)          812",
		"80 MiB, 3s", "[FAIL] lag p95 ≤ 1m0s: 1m2s over 30 changes"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "  a ") > strings.Index(out, "  b ") {
		t.Errorf("extra measurements not sorted:\n%s", out)
	}
}

func TestCatalog(t *testing.T) {
	for _, size := range []Size{Full, Short, Tiny} {
		names := map[string]bool{}
		for _, sc := range All(size) {
			if err := sc.validate(); err != nil {
				t.Errorf("size %d: %v", size, err)
			}
			if sc.About == "" || names[sc.Name] {
				t.Errorf("size %d: %s: no description or a duplicate name", size, sc.Name)
			}
			names[sc.Name] = true
			if size == Short && sc.Budget() > time.Hour {
				t.Errorf("short %s: budget %s, want under an hour", sc.Name, sc.Budget())
			}
		}
		if len(names) != len(Names()) {
			t.Errorf("size %d: %d scenarios, want %d", size, len(names), len(Names()))
		}
	}
	if sc, _ := Get("org200k", Short); sc.Devices != 200_000 {
		t.Errorf("the short org200k has %d devices; it is the 200,000-device organization", sc.Devices)
	}
	if _, err := Get("nope", Short); err == nil {
		t.Error("Get(nope) succeeded")
	}
	bad := steady(Tiny)
	bad.Objectives = nil
	if bad.validate() == nil {
		t.Error("a scenario without objectives validated")
	}
}

package pipeline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

func exposition(set *metrics.Set) string {
	var b bytes.Buffer
	set.WritePrometheus(&b)
	return b.String()
}

func TestStageMetrics(t *testing.T) {
	set := metrics.NewSet()
	m := NewStageMetrics(set)
	boom := errors.New("boom")
	if err := m.Run(StageDecide, func() (map[string]int, error) {
		return map[string]int{"Allow": 3, "Block": 1, "zero": 0}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(StageApply, func() (map[string]int, error) {
		return map[string]int{"ok": 7, "failed": 2}, boom
	}); !errors.Is(err, boom) {
		t.Fatalf("Run() = %v, want fn's error", err)
	}
	_ = m.Run("bogus", func() (map[string]int, error) { return map[string]int{`a"b`: 1}, nil })
	out := exposition(set)
	for _, want := range []string{
		`easconnector_sync_stage_items_total{stage="decide",result="Allow"} 3`,
		`easconnector_sync_stage_items_total{stage="decide",result="Block"} 1`,
		`easconnector_sync_stage_items_total{stage="apply",result="ok"} 7`,
		`easconnector_sync_stage_items_total{stage="apply",result="failed"} 2`,
		`easconnector_sync_stage_items_total{stage="other",result="other"} 1`,
		`easconnector_sync_stage_errors_total{stage="apply"} 1`,
		`easconnector_sync_stage_errors_total{stage="decide"} 0`,
		`easconnector_sync_stage_duration_seconds_count{stage="decide"} 1`,
		`easconnector_sync_stage_duration_seconds_count{stage="apply"} 1`,
		`easconnector_sync_stage_duration_seconds_count{stage="guard"} 0`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if strings.Contains(out, `result="zero"`) {
		t.Error("zero counts create series")
	}
	// Labels stay bounded: every series names a known stage.
	re := regexp.MustCompile(`stage="([^"]*)"`)
	for _, mm := range re.FindAllStringSubmatch(out, -1) {
		if known := strings.Contains(" discover join decide plan guard apply notify report other ", " "+mm[1]+" "); !known {
			t.Errorf("unbounded stage label %q", mm[1])
		}
	}
	var nilM *StageMetrics
	if err := nilM.Run(StagePlan, func() (map[string]int, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("nil StageMetrics Run() = %v", err)
	}
}

func TestStageMetricsConcurrent(t *testing.T) {
	set := metrics.NewSet()
	m := NewStageMetrics(set)
	var wg sync.WaitGroup
	for _, s := range Stages {
		wg.Go(func() {
			for range 100 {
				_ = m.Run(s, func() (map[string]int, error) { return map[string]int{"ok": 1}, nil })
			}
		})
	}
	wg.Wait()
	out := exposition(set)
	for _, s := range Stages {
		if want := fmt.Sprintf(`easconnector_sync_stage_items_total{stage=%q,result="ok"} 100`, s); !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
}

func TestSyncResult(t *testing.T) {
	id := NewSyncID(now)
	if !regexp.MustCompile(`^20250301T120000Z-[0-9a-f]{8}$`).MatchString(id) || id == NewSyncID(now) {
		t.Errorf("NewSyncID() = %q", id)
	}
	var tally Tally
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 250 {
				tally.Add(Block, ReasonNotCompliant)
				tally.Add(Allow, ReasonCompliant)
				tally.Add("weird", "weird")
			}
		})
	}
	wg.Wait()
	r := SyncResult{ID: id, Kind: SyncQuick, Start: now, End: now.Add(90 * time.Second)}
	tally.Fill(&r)
	if r.CountsByDecision[Block] != 1000 || r.CountsByDecision[Allow] != 1000 || len(r.CountsByDecision) != 2 || r.CountsByReason[ReasonNotCompliant] != 1000 {
		t.Errorf("Fill() = %v, %v", r.CountsByDecision, r.CountsByReason)
	}
	if r.Duration() != 90*time.Second {
		t.Errorf("Duration() = %v", r.Duration())
	}
	r.Guard = GuardOutcomeOf(nil, "")
	if !r.OK() {
		t.Error("OK() = false for a clean sync")
	}
	held := GuardOutcomeOf(fmt.Errorf("sync: %w", &GuardError{Kind: GuardBlastRadius, Got: 9, Limit: 1}), "abc")
	if held.Result != GuardHeld || held.Kind != GuardBlastRadius || held.HeldPlanID != "abc" {
		t.Errorf("GuardOutcomeOf(guard error) = %+v", held)
	}
	r.Guard = held
	if r.OK() {
		t.Error("OK() = true for a held sync")
	}
	if o := GuardOutcomeOf(errors.New("mdm: token: 401"), ""); o.Result != GuardNotReached {
		t.Errorf("GuardOutcomeOf(other error) = %+v", o)
	}
	data, err := json.Marshal(&r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"id":"` + id + `"`, `"kind":"quick"`, `"counts_by_decision":{"Allow":1000,"Block":1000}`,
		`"guard":{"result":"held","kind":"blast_radius","held_plan_id":"abc"`, `"end":"2025-03-01T12:01:30Z"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("JSON %s lacks %s", data, want)
		}
	}
}

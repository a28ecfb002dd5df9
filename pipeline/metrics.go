package pipeline

import (
	"fmt"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Stage names one stage of a sync; stages are bounded metric labels.
type Stage string

// The stages of a sync, in order.
const (
	StageDiscover Stage = "discover"
	StageJoin     Stage = "join"
	StageDecide   Stage = "decide"
	StagePlan     Stage = "plan"
	StageGuard    Stage = "guard"
	StageApply    Stage = "apply"
	StageNotify   Stage = "notify"
	StageReport   Stage = "report"
)

// Stages lists every stage in order.
var Stages = []Stage{StageDiscover, StageJoin, StageDecide, StagePlan, StageGuard, StageApply, StageNotify, StageReport}

// stageBuckets span a planning stage of milliseconds to an apply phase of
// an hour.
var stageBuckets = []float64{0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// resultRe bounds item result labels; anything else is counted as "other".
var resultRe = regexp.MustCompile(`^[A-Za-z0-9_]{1,32}$`)

// StageMetrics records every stage's duration, items and errors through one
// wrapper (node_exporter's execute), so stage bodies stay free of metrics
// code:
//
//	easconnector_sync_stage_duration_seconds{stage}      histogram
//	easconnector_sync_stage_items_total{stage,result}    counter
//	easconnector_sync_stage_errors_total{stage}          counter
//
// It is safe for concurrent use (stages run concurrently). A nil
// *StageMetrics runs stages and records nothing.
type StageMetrics struct {
	set       *metrics.Set
	durations map[Stage]*metrics.PrometheusHistogram
	errors    map[Stage]*metrics.Counter
	mu        sync.Mutex
	items     map[[2]string]*metrics.Counter
}

// NewStageMetrics registers the stage metrics on set (the pipeline's own
// set; never the global one). Two StageMetrics on one set share series.
func NewStageMetrics(set *metrics.Set) *StageMetrics {
	m := &StageMetrics{
		set:       set,
		durations: make(map[Stage]*metrics.PrometheusHistogram, len(Stages)+1),
		errors:    make(map[Stage]*metrics.Counter, len(Stages)+1),
		items:     map[[2]string]*metrics.Counter{},
	}
	for _, s := range append(slices.Clone(Stages), "other") {
		m.durations[s] = set.GetOrCreatePrometheusHistogramExt(fmt.Sprintf(`easconnector_sync_stage_duration_seconds{stage=%q}`, s), stageBuckets)
		m.errors[s] = set.GetOrCreateCounter(fmt.Sprintf(`easconnector_sync_stage_errors_total{stage=%q}`, s))
	}
	return m
}

// Run runs one stage's fn and records how long it took, the items it
// reports by result (e.g. {"ok": 4980, "failed": 20}; counted even when fn
// fails) and whether it failed. It returns fn's error unchanged. An unknown
// stage is recorded as "other".
func (m *StageMetrics) Run(stage Stage, fn func() (items map[string]int, err error)) error {
	if m == nil {
		_, err := fn()
		return err
	}
	if _, ok := m.durations[stage]; !ok {
		stage = "other"
	}
	start := time.Now()
	items, err := fn()
	m.durations[stage].Update(time.Since(start).Seconds())
	for result, n := range items {
		if n > 0 {
			m.item(stage, result).Add(n)
		}
	}
	if err != nil {
		m.errors[stage].Inc()
	}
	return err
}

func (m *StageMetrics) item(stage Stage, result string) *metrics.Counter {
	if !resultRe.MatchString(result) {
		result = "other"
	}
	k := [2]string{string(stage), result}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.items[k]
	if c == nil {
		c = m.set.GetOrCreateCounter(fmt.Sprintf(`easconnector_sync_stage_items_total{stage=%q,result=%q}`, stage, result))
		m.items[k] = c
	}
	return c
}

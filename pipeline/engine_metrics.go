package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/VictoriaMetrics/metrics"
)

// Sync results, the label values of easconnector_sync_total.
const (
	ResultOK        = "ok"        // ran to the end, every write succeeded
	ResultPartial   = "partial"   // ran to the end, some mailbox writes failed
	ResultHeld      = "held"      // the blast-radius guard held the plan
	ResultDegraded  = "degraded"  // the MDM was unreadable or failed a guard
	ResultFailed    = "failed"    // an infrastructure failure stopped it
	ResultCancelled = "cancelled" // its context ended
)

// ResultOf reduces a finished sync to one of the Result* values.
func ResultOf(rep *Report, err error) string {
	var ge *GuardError
	switch {
	case err == nil && rep.Failures > 0:
		return ResultPartial
	case err == nil:
		return ResultOK
	case errors.Is(err, ErrMDM):
		return ResultDegraded
	case errors.As(err, &ge):
		return ResultHeld
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ResultCancelled
	default:
		return ResultFailed
	}
}

// syncBuckets span a quick sync of a second to a full sync of hours.
var syncBuckets = []float64{1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400}

// engineMetrics are the engine's series:
//
//	easconnector_sync_duration_seconds{kind}                 histogram
//	easconnector_sync_total{kind,result}                     counter
//	easconnector_sync_last_success_timestamp_seconds{kind}   gauge
//	easconnector_sync_devices{decision}                           gauge, last full sync
//	easconnector_sync_devices_by_reason{reason}                   gauge, last full sync
//	easconnector_sync_list_entries_written_total{list,op}         counter
//	easconnector_sync_guard_trips_total{guard}                    counter
//	easconnector_sync_mailbox_write_failures_total                counter
//	easconnector_sync_intent_commits_total                        counter (group commits of pending writes)
//	easconnector_sync_recovered_writes_total                      counter (pending writes reconciled at a start)
type engineMetrics struct {
	set         *metrics.Set
	duration    map[SyncKind]*metrics.PrometheusHistogram
	lastSuccess map[SyncKind]*metrics.Gauge
	devices     map[Decision]*metrics.Gauge
	byReason    map[Reason]*metrics.Gauge
	entries     map[[2]string]*metrics.Counter
	failures    *metrics.Counter
	// intentCommits counts group commits (two fsyncs each) before batches
	// of writes; recovered counts pending writes reconciled at a start.
	intentCommits *metrics.Counter
	recovered     *metrics.Counter

	mu     sync.Mutex
	totals map[[2]string]*metrics.Counter
	trips  map[GuardKind]*metrics.Counter
}

func newEngineMetrics(set *metrics.Set) *engineMetrics {
	m := &engineMetrics{
		set:           set,
		duration:      map[SyncKind]*metrics.PrometheusHistogram{},
		lastSuccess:   map[SyncKind]*metrics.Gauge{},
		devices:       map[Decision]*metrics.Gauge{},
		byReason:      map[Reason]*metrics.Gauge{},
		entries:       map[[2]string]*metrics.Counter{},
		failures:      set.GetOrCreateCounter("easconnector_sync_mailbox_write_failures_total"),
		intentCommits: set.GetOrCreateCounter("easconnector_sync_intent_commits_total"),
		recovered:     set.GetOrCreateCounter("easconnector_sync_recovered_writes_total"),
		totals:        map[[2]string]*metrics.Counter{},
		trips:         map[GuardKind]*metrics.Counter{},
	}
	for _, k := range []SyncKind{SyncFull, SyncQuick} {
		m.duration[k] = set.GetOrCreatePrometheusHistogramExt(fmt.Sprintf(`easconnector_sync_duration_seconds{kind=%q}`, k), syncBuckets)
		m.lastSuccess[k] = set.GetOrCreateGauge(fmt.Sprintf(`easconnector_sync_last_success_timestamp_seconds{kind=%q}`, k), nil)
	}
	for _, d := range Decisions {
		m.devices[d] = set.GetOrCreateGauge(fmt.Sprintf(`easconnector_sync_devices{decision=%q}`, d), nil)
	}
	for _, r := range Reasons {
		m.byReason[r] = set.GetOrCreateGauge(fmt.Sprintf(`easconnector_sync_devices_by_reason{reason=%q}`, r), nil)
	}
	for _, l := range []List{ListAllowed, ListBlocked} {
		for _, op := range []Op{OpAdd, OpRemove} {
			m.entries[[2]string{string(l), string(op)}] = set.GetOrCreateCounter(fmt.Sprintf(`easconnector_sync_list_entries_written_total{list=%q,op=%q}`, l, op))
		}
	}
	return m
}

// written counts the entries of a successful write.
func (m *engineMetrics) written(p *MailboxPlan) {
	m.entries[[2]string{string(ListAllowed), string(OpAdd)}].Add(len(p.Allowed.Add))
	m.entries[[2]string{string(ListAllowed), string(OpRemove)}].Add(len(p.Allowed.Remove))
	m.entries[[2]string{string(ListBlocked), string(OpAdd)}].Add(len(p.Blocked.Add))
	m.entries[[2]string{string(ListBlocked), string(OpRemove)}].Add(len(p.Blocked.Remove))
}

func (m *engineMetrics) trip(kind GuardKind) {
	m.mu.Lock()
	c := m.trips[kind]
	if c == nil {
		c = m.set.GetOrCreateCounter(fmt.Sprintf(`easconnector_sync_guard_trips_total{guard=%q}`, kind))
		m.trips[kind] = c
	}
	m.mu.Unlock()
	c.Inc()
}

// record counts a finished (not dry-run) sync.
func (m *engineMetrics) record(rep *Report, err error) {
	kind := rep.Kind
	if kind != SyncFull {
		kind = SyncQuick
	}
	result := ResultOf(rep, err)
	k := [2]string{string(kind), result}
	m.mu.Lock()
	c := m.totals[k]
	if c == nil {
		c = m.set.GetOrCreateCounter(fmt.Sprintf(`easconnector_sync_total{kind=%q,result=%q}`, kind, result))
		m.totals[k] = c
	}
	m.mu.Unlock()
	c.Inc()
	m.duration[kind].Update(rep.Duration().Seconds())
	var ge *GuardError
	if errors.As(err, &ge) {
		m.trip(ge.Kind)
	}
	if err != nil {
		return
	}
	m.lastSuccess[kind].Set(float64(rep.End.UnixNano()) / 1e9)
	if kind == SyncFull {
		for d, g := range m.devices {
			g.Set(float64(rep.CountsByDecision[d]))
		}
		for r, g := range m.byReason {
			g.Set(float64(rep.CountsByReason[r]))
		}
	}
}

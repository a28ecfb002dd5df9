package runspace

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"
)

// poolMetrics are the pool's handles, created once on its Set. Gauges read
// atomics (never the pool's mutex: the Set holds its own lock while it
// calls them). Labelled series are created on first use and cached; their
// label values are bounded (allowlisted cmdlets, Classify's classes,
// configured and discovered servers).
type poolMetrics struct {
	set *metrics.Set

	busy, idle, limit atomic.Int64

	opens     *metrics.Counter
	throttles *metrics.Counter
	failovers *metrics.Counter

	mu        sync.Mutex
	failures  map[string]*metrics.Counter             // class
	errors    map[[2]string]*metrics.Counter          // cmdlet, class
	durations map[string]*metrics.PrometheusHistogram // cmdlet
	up        map[string]*atomic.Int64                // server
}

func newPoolMetrics(set *metrics.Set) *poolMetrics {
	m := &poolMetrics{
		set:       set,
		failures:  make(map[string]*metrics.Counter),
		errors:    make(map[[2]string]*metrics.Counter),
		durations: make(map[string]*metrics.PrometheusHistogram),
		up:        make(map[string]*atomic.Int64),
	}
	set.NewGauge(`easconnector_runspace_sessions{state="busy"}`, func() float64 { return float64(m.busy.Load()) })
	set.NewGauge(`easconnector_runspace_sessions{state="idle"}`, func() float64 { return float64(m.idle.Load()) })
	set.NewGauge(`easconnector_runspace_limit`, func() float64 { return float64(m.limit.Load()) })
	m.opens = set.NewCounter(`easconnector_runspace_session_opens_total`)
	m.throttles = set.NewCounter(`easconnector_runspace_throttle_events_total`)
	m.failovers = set.NewCounter(`easconnector_runspace_failovers_total`)
	return m
}

// cmdletLabel keeps label values bounded: only allowlisted names.
func cmdletLabel(cmd string) string {
	if Allowed(cmd) {
		return cmd
	}
	return "other"
}

func (m *poolMetrics) sessionFailure(class string) {
	m.mu.Lock()
	c, ok := m.failures[class]
	if !ok {
		c = m.set.NewCounter(fmt.Sprintf(`easconnector_runspace_session_failures_total{class=%q}`, class))
		m.failures[class] = c
	}
	m.mu.Unlock()
	c.Inc()
}

func (m *poolMetrics) requestError(cmd, class string) {
	k := [2]string{cmdletLabel(cmd), class}
	m.mu.Lock()
	c, ok := m.errors[k]
	if !ok {
		c = m.set.NewCounter(fmt.Sprintf(`easconnector_runspace_errors_total{cmdlet=%q,class=%q}`, k[0], k[1]))
		m.errors[k] = c
	}
	m.mu.Unlock()
	c.Inc()
}

// requestBuckets span a fast Set-CASMailbox (tens of milliseconds) to a
// Get-MobileDevice -ResultSize Unlimited that streams for many minutes.
var requestBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}

func (m *poolMetrics) duration(cmd string) *metrics.PrometheusHistogram {
	cmd = cmdletLabel(cmd)
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.durations[cmd]
	if !ok {
		h = m.set.NewPrometheusHistogramExt(fmt.Sprintf(`easconnector_runspace_request_duration_seconds{cmdlet=%q}`, cmd), requestBuckets)
		m.durations[cmd] = h
	}
	return h
}

// endpointUp returns the 0/1 value behind the server's up gauge.
func (m *poolMetrics) endpointUp(server string) *atomic.Int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.up[server]
	if !ok {
		v = new(atomic.Int64)
		m.set.NewGauge(fmt.Sprintf(`easconnector_runspace_endpoint_up{server=%q}`, server),
			func() float64 { return float64(v.Load()) })
		m.up[server] = v
	}
	return v
}

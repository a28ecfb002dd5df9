package exsim

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Counters is a snapshot of what the simulator has served since it started
// or was last reset.
type Counters struct {
	Cmdlets              map[string]uint64 `json:"cmdlets"`              // calls that reached the cmdlet, by cmdlet
	WriteCmdlets         uint64            `json:"writeCmdlets"`         // calls of Set-/New-/Remove- cmdlets
	Errors               uint64            `json:"errors"`               // calls answered with an err frame
	Objects              uint64            `json:"objects"`              // obj frames written
	CurrentCmdlets       int               `json:"currentCmdlets"`       // cmdlets running now
	MaxConcurrentCmdlets int               `json:"maxConcurrentCmdlets"` // most cmdlets running at once
	Sessions             int               `json:"sessions"`             // Exchange sessions open now (ready frame sent)
	MaxSessions          int               `json:"maxSessions"`          // most sessions open at once
	SessionsStarted      uint64            `json:"sessionsStarted"`      // ready frames sent
	SessionsRefused      uint64            `json:"sessionsRefused"`      // refused by PowerShellMaxConcurrency
	InitErrors           uint64            `json:"initErrors"`           // initerr frames sent (including refusals)
	Throttled            uint64            `json:"throttled"`            // calls refused by the PowerShellMaxCmdlets budget
	InjectedErrors       uint64            `json:"injectedErrors"`       // errors made by Faults.ErrorRate
	Truncated            uint64            `json:"truncated"`            // responses cut by Faults.Truncate
	Hung                 uint64            `json:"hung"`                 // calls left unanswered by Faults.Hang
	HostMismatches       uint64            `json:"hostMismatches"`       // remoting sessions whose connectionUri named another host
	SecondHopCredentials uint64            `json:"secondHopCredentials"` // remoting sessions opened with an explicit credential
}

// Call is one cmdlet call as the simulator received it.
type Call struct {
	Seq uint64 `json:"seq"`
	// Protocol is "psrp" for calls over the PowerShell endpoint, "" for
	// the WinRS bootstrap; Pipeline is then the PSRP pipeline id (the
	// Command's CommandId).
	Protocol string         `json:"protocol,omitempty"`
	Pipeline string         `json:"pipeline,omitempty"`
	Time     time.Time      `json:"time"` // when the call arrived
	Listener int            `json:"listener"`
	User     string         `json:"user"`
	Session  uint64         `json:"session"`
	ID       uint64         `json:"id"` // request id
	Cmd      string         `json:"cmd"`
	Args     map[string]any `json:"args,omitempty"` // as decoded from the request, never interpreted
	Select   []string       `json:"select,omitempty"`
	Result   string         `json:"result"` // ok, error, throttled, hang, truncated, aborted
	Error    string         `json:"error,omitempty"`
	Objects  int            `json:"objects"`
	Duration time.Duration  `json:"durationNs"`
}

// DefaultCallLogSize bounds the call log.
const DefaultCallLogSize = 1_000_000

// counters is the mutable state behind Counters and the call log.
type counters struct {
	mu       sync.Mutex
	c        Counters
	remoting map[string]int // open remoting sessions by lower-cased user
	log      []Call         // ring of the last logCap calls
	logHead  int            // index of the oldest entry once the ring is full
	logCap   int
	seq      uint64
	// budgets: approval times per lower-cased user within the period
	approvals map[string][]time.Time

	// metrics mirror the counters for Prometheus; unlike Counters they are
	// never reset. Labels are cmdlet names from the fixed cmdlet table.
	metrics *metrics.Set
	objects *metrics.Counter
}

func newCounters(logCap int) *counters {
	if logCap <= 0 {
		logCap = DefaultCallLogSize
	}
	c := &counters{c: Counters{Cmdlets: map[string]uint64{}}, remoting: map[string]int{},
		logCap: logCap, approvals: map[string][]time.Time{}, metrics: metrics.NewSet()}
	c.objects = c.metrics.NewCounter("easconnector_exsim_objects_total")
	gauge := func(name string, f func(*Counters) float64) {
		c.metrics.NewGauge(name, func() float64 {
			c.mu.Lock()
			defer c.mu.Unlock()
			return f(&c.c)
		})
	}
	gauge("easconnector_exsim_sessions", func(s *Counters) float64 { return float64(s.Sessions) })
	gauge("easconnector_exsim_cmdlets_running", func(s *Counters) float64 { return float64(s.CurrentCmdlets) })
	return c
}

// observe records a finished call in the metrics.
func (c *counters) observe(cmd, result string, d time.Duration) {
	c.metrics.GetOrCreateCounter(fmt.Sprintf(`easconnector_exsim_cmdlet_calls_total{cmdlet=%q,result=%q}`, cmd, result)).Inc()
	c.metrics.GetOrCreatePrometheusHistogram(fmt.Sprintf(`easconnector_exsim_cmdlet_duration_seconds{cmdlet=%q}`, cmd)).Update(d.Seconds())
}

func (c *counters) snapshot() Counters {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.c
	s.Cmdlets = maps.Clone(c.c.Cmdlets)
	return s
}

// reset zeroes the counters and the call log; gauges keep their current
// value and maxima restart from it.
func (c *counters) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, sess := c.c.CurrentCmdlets, c.c.Sessions
	c.c = Counters{Cmdlets: map[string]uint64{}, CurrentCmdlets: cur, MaxConcurrentCmdlets: cur, Sessions: sess, MaxSessions: sess}
	c.log, c.logHead = nil, 0
}

func (c *counters) add(f func(*Counters)) {
	c.mu.Lock()
	f(&c.c)
	c.mu.Unlock()
}

// cmdletStart counts a call reaching a cmdlet.
func (c *counters) cmdletStart(cmd string, write bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.c.Cmdlets[cmd]++
	if write {
		c.c.WriteCmdlets++
	}
	c.c.CurrentCmdlets++
	c.c.MaxConcurrentCmdlets = max(c.c.MaxConcurrentCmdlets, c.c.CurrentCmdlets)
}

// cmdletEnd counts the end of a call that wrote objects obj frames.
func (c *counters) cmdletEnd(objects int) {
	c.add(func(s *Counters) {
		s.CurrentCmdlets--
		s.Objects += uint64(objects)
	})
	c.objects.Add(objects)
}

// acquireRemoting takes one of user's PowerShellMaxConcurrency slots
// (limit < 0: unlimited) and reports whether it got one.
func (c *counters) acquireRemoting(user string, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := strings.ToLower(user)
	if limit >= 0 && c.remoting[k] >= limit {
		c.c.SessionsRefused++
		return false
	}
	c.remoting[k]++
	return true
}

func (c *counters) releaseRemoting(user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := strings.ToLower(user)
	if c.remoting[k]--; c.remoting[k] <= 0 {
		delete(c.remoting, k)
	}
}

func (c *counters) sessionOpen() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.c.SessionsStarted++
	c.c.Sessions++
	c.c.MaxSessions = max(c.c.MaxSessions, c.c.Sessions)
}

func (c *counters) sessionClose() {
	c.add(func(s *Counters) { s.Sessions-- })
}

// takeBudget applies PowerShellMaxCmdlets per period to user: it records
// an approval and returns 0, or returns how long until the oldest approval
// in the window expires. Exchange's budget is a sliding window per user.
func (c *counters) takeBudget(user string, now time.Time, limit int, period time.Duration) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := strings.ToLower(user)
	ts := c.approvals[k]
	cut := 0
	for cut < len(ts) && now.Sub(ts[cut]) >= period {
		cut++
	}
	ts = ts[cut:]
	if len(ts) >= limit {
		c.approvals[k] = ts
		c.c.Throttled++
		return max(ts[0].Add(period).Sub(now), time.Millisecond)
	}
	c.approvals[k] = append(ts, now)
	return 0
}

func (c *counters) logCall(call Call) {
	if lookupCmdlet(call.Cmd) != nil {
		c.observe(call.Cmd, call.Result, call.Duration)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	call.Seq = c.seq
	if len(c.log) < c.logCap {
		c.log = append(c.log, call)
		return
	}
	c.log[c.logHead] = call
	c.logHead = (c.logHead + 1) % c.logCap
}

// calls returns the logged calls with Seq > since, oldest first, at most
// limit of them (limit ≤ 0: all).
func (c *counters) calls(since uint64, limit int) []Call {
	c.mu.Lock()
	defer c.mu.Unlock()
	ordered := append(slices.Clone(c.log[c.logHead:]), c.log[:c.logHead]...)
	i, _ := slices.BinarySearchFunc(ordered, since+1, func(x Call, seq uint64) int {
		switch {
		case x.Seq < seq:
			return -1
		case x.Seq > seq:
			return 1
		}
		return 0
	})
	ordered = ordered[i:]
	if limit > 0 && len(ordered) > limit {
		ordered = ordered[:limit]
	}
	return ordered
}

// Faults are failures injected into cmdlet calls. The zero value injects
// nothing. Listener-level faults (kill, drop shells, HTTP slowdown) are
// methods of Sim.
type Faults struct {
	// ErrorRate is the probability in [0,1] that a call fails with a
	// transient Active Directory error before it changes anything.
	ErrorRate float64 `json:"errorRate,omitempty"`
	// Slowdown is added to every call's latency.
	Slowdown time.Duration `json:"slowdown,omitempty"`
	// Truncate cuts responses: after TruncateAfter objects the worker writes
	// half a frame and exits, as a crashing powershell.exe would.
	Truncate      bool `json:"truncate,omitempty"`
	TruncateAfter int  `json:"truncateAfter,omitempty"`
	// Hang leaves calls unanswered until their session ends.
	Hang bool `json:"hang,omitempty"`
	// Cmdlets limits the faults above to these cmdlets; empty means all.
	Cmdlets []string `json:"cmdlets,omitempty"`
}

func (f Faults) appliesTo(cmd string) bool {
	return len(f.Cmdlets) == 0 || slices.ContainsFunc(f.Cmdlets, func(c string) bool { return strings.EqualFold(c, cmd) })
}

// Quotas are Exchange's throttling limits for the service account.
type Quotas struct {
	// PowerShellMaxConcurrency bounds a user's open remoting sessions
	// (0 → DefaultPowerShellMaxConcurrency, negative → unlimited). Exchange
	// documents the limit per user; the simulator enforces it across all its
	// servers, the stricter reading.
	PowerShellMaxConcurrency int `json:"powerShellMaxConcurrency"`
	// PowerShellMaxCmdlets bounds a user's cmdlets per
	// PowerShellMaxCmdletsTimePeriod (0 → unlimited, Exchange's default).
	PowerShellMaxCmdlets           int           `json:"powerShellMaxCmdlets,omitempty"`
	PowerShellMaxCmdletsTimePeriod time.Duration `json:"powerShellMaxCmdletsTimePeriod,omitempty"`
	// MicroDelay, when positive, delays every cmdlet by that long and makes
	// it write Exchange's "Micro delay applied" warning, as the budget
	// engine does for a user near their limits (reference/exchange.md §3.4
	// [E16]).
	MicroDelay time.Duration `json:"microDelay,omitempty"`
}

// Quota defaults (reference/exchange.md §3.4).
const (
	DefaultPowerShellMaxConcurrency = 18
	DefaultCmdletsTimePeriod        = 60 * time.Second
)

func (q Quotas) withDefaults() Quotas {
	if q.PowerShellMaxConcurrency == 0 {
		q.PowerShellMaxConcurrency = DefaultPowerShellMaxConcurrency
	}
	if q.PowerShellMaxCmdlets > 0 && q.PowerShellMaxCmdletsTimePeriod <= 0 {
		q.PowerShellMaxCmdletsTimePeriod = DefaultCmdletsTimePeriod
	}
	return q
}

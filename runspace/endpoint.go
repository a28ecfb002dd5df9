package runspace

import (
	"sync/atomic"
	"time"
)

// Endpoint states.
const (
	StateUp      = "up"
	StateDown    = "down"
	StateProbing = "probing"
)

// EndpointStatus describes one server of the pool.
type EndpointStatus struct {
	Server     string
	State      string    // "up", "down" or "probing"
	DownUntil  time.Time // when a down server is tried again
	Sessions   int       // sessions open on it
	LastError  string    // the failure that marked it down, if any
	Discovered bool      // found by CAS discovery rather than configured
}

// endpoint is one server; the pool's mutex guards it.
type endpoint struct {
	server     string
	discovered bool
	state      string
	downUntil  time.Time
	failures   int // consecutive, for the exponential backoff
	lastErr    string
	sessions   int
	up         *atomic.Int64 // metric
}

func (e *endpoint) status() EndpointStatus {
	st := EndpointStatus{
		Server:     e.server,
		State:      e.state,
		Sessions:   e.sessions,
		LastError:  e.lastErr,
		Discovered: e.discovered,
	}
	if e.state != StateUp {
		st.DownUntil = e.downUntil
	}
	return st
}

func (e *endpoint) markUp() {
	e.state = StateUp
	e.failures = 0
	e.lastErr = ""
	e.downUntil = time.Time{}
	e.up.Store(1)
}

// markDown keeps the endpoint out of rotation for base·2^(failures-1),
// capped at maxFailoverBackoffFactor·base, with jitter.
func (e *endpoint) markDown(now time.Time, base time.Duration, err error) {
	e.state = StateDown
	e.failures++
	d := base << min(e.failures-1, 6)
	d = min(d, base*maxFailoverBackoffFactor)
	e.downUntil = now.Add(jitter(d))
	if err != nil {
		e.lastErr = sanitizeLine(err.Error())
	}
	e.up.Store(0)
}

// due reports whether a down endpoint may be tried again.
func (e *endpoint) due(now time.Time) bool {
	return e.state == StateDown && !now.Before(e.downUntil)
}

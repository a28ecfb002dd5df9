package graphsim

import (
	"math/rand/v2"
	"time"
)

// faults is the injected misbehaviour. Counted faults (n > 0) are consumed
// one per affected request; switches stay until turned off or Reset.
type faults struct {
	throttleN  int
	retryAfter string // Retry-After header value; "" sends none

	failN      int
	failStatus int

	errRate   float64
	errStatus int

	truncateN int
	emptyN    int
	loop      bool

	outage    bool
	tokenDown bool
	latency   time.Duration

	noMemberIDs bool
}

// DropMemberIDs makes user members come with a null id while on. Graph
// does not do this (an id is what even an app without User.Read.All
// gets); it stands for a broken proxy or an API change, against which
// the connector must stop before acting on memberships it cannot join.
func (s *Server) DropMemberIDs(on bool) {
	s.mu.Lock()
	s.f.noMemberIDs = on
	s.mu.Unlock()
}

// Throttle answers the next n Graph API requests (not the token endpoint)
// with 429 TooManyRequests. retryAfter is sent verbatim as the Retry-After
// header — delta-seconds ("5") or an HTTP-date — and "" sends none, as some
// Intune endpoints do.
func (s *Server) Throttle(n int, retryAfter string) {
	s.mu.Lock()
	s.f.throttleN, s.f.retryAfter = n, retryAfter
	s.mu.Unlock()
}

// FailNext answers the next n Graph API requests with status (500, 502, 503
// or 504 are the realistic ones) and a Graph error body.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	s.f.failN, s.f.failStatus = n, status
	s.mu.Unlock()
}

// SetErrorRate answers each Graph API request with status at probability
// rate (0 turns it off).
func (s *Server) SetErrorRate(rate float64, status int) {
	s.mu.Lock()
	s.f.errRate, s.f.errStatus = rate, status
	s.mu.Unlock()
}

// TruncateNext cuts the body of the next n pages in half. The HTTP framing
// stays intact (the chunked body ends cleanly), so only a client that checks
// the JSON itself notices.
func (s *Server) TruncateNext(n int) {
	s.mu.Lock()
	s.f.truncateN = n
	s.mu.Unlock()
}

// EmptyPages answers the next n page requests with an empty "value" and an
// @odata.nextLink that continues where the page should have started, which
// Graph's paging guide allows: an empty page is not the end.
func (s *Server) EmptyPages(n int) {
	s.mu.Lock()
	s.f.emptyN = n
	s.mu.Unlock()
}

// NextLinkLoop, while on, makes every page requested through a nextLink
// answer with that same nextLink, so a client that follows links blindly
// pages forever.
func (s *Server) NextLinkLoop(on bool) {
	s.mu.Lock()
	s.f.loop = on
	s.mu.Unlock()
}

// SetOutage, while on, resets every connection (token endpoint included)
// before answering.
func (s *Server) SetOutage(on bool) {
	s.mu.Lock()
	s.f.outage = on
	s.mu.Unlock()
}

// SetTokenDown, while on, answers the token endpoint with 503
// temporarily_unavailable.
func (s *Server) SetTokenDown(on bool) {
	s.mu.Lock()
	s.f.tokenDown = on
	s.mu.Unlock()
}

// SetLatency delays every request by d before it is answered.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.f.latency = d
	s.mu.Unlock()
}

// Reset clears every injected fault.
func (s *Server) Reset() {
	s.mu.Lock()
	s.f = faults{}
	s.mu.Unlock()
}

func (s *Server) faultsNow() faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f
}

// apiFault consumes the fault, if any, that decides this Graph API request:
// a status to answer with and the Retry-After header to send.
func (s *Server) apiFault() (status int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.f.throttleN > 0:
		s.f.throttleN--
		return 429, s.f.retryAfter
	case s.f.failN > 0:
		s.f.failN--
		return s.f.failStatus, ""
	case s.f.errRate > 0 && rand.Float64() < s.f.errRate:
		return s.f.errStatus, ""
	}
	return 0, ""
}

// pageFault consumes the page-shaping faults for one page.
func (s *Server) pageFault() (empty, truncate, loop bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f.emptyN > 0 {
		s.f.emptyN--
		empty = true
	}
	if s.f.truncateN > 0 {
		s.f.truncateN--
		truncate = true
	}
	return empty, truncate, s.f.loop
}

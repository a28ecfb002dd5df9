package wsman

import (
	"maps"
	"sync"
	"time"
)

// Stats are the server's counters since NewServer.
type Stats struct {
	Requests map[string]uint64 // SOAP requests by action: Create, Command, Send, Receive, Signal, Delete, Other
	Faults   map[uint32]uint64 // fault responses by WSManFault code

	Unauthorized uint64 // 401: missing or wrong Basic credentials
	TooLarge     uint64 // 413: request above MaxEnvelopeKB
	BadHTTP      uint64 // 404, 405, 415, 503: not a WS-Management request or server closed

	ShellsCreated       uint64
	ShellsDeleted       uint64 // by the client (Delete)
	ShellsReaped        uint64 // by IdleTimeout
	ShellsDropped       uint64 // by DropShell / DropAllShells
	CurrentShells       int
	MaxConcurrentShells int

	CommandsStarted uint64
	CommandsRunning int // Run has not returned yet

	StdinBytes  uint64 // received through Send
	StdoutBytes uint64 // delivered through Receive
	StderrBytes uint64

	InjectedFaults     uint64 // answered by SetFaultRate
	TruncatedResponses uint64 // cut by SetTruncate
}

// ShellInfo describes one live shell.
type ShellInfo struct {
	ID              string
	User            string
	ClientIP        string
	Created         time.Time
	LastActivity    time.Time
	PendingRequests int // requests in flight, e.g. Receive long-polls
	Options         map[string]string
	Commands        []CommandInfo
}

// CommandInfo describes one command of a shell.
type CommandInfo struct {
	ID       string
	Name     string
	Started  time.Time
	Running  bool
	ExitCode int // valid when !Running
}

// counters is the mutable side of Stats.
type counters struct {
	mu sync.Mutex
	s  Stats
}

func newCounters() *counters {
	return &counters{s: Stats{Requests: map[string]uint64{}, Faults: map[uint32]uint64{}}}
}

func (c *counters) add(f func(*Stats)) {
	c.mu.Lock()
	f(&c.s)
	c.mu.Unlock()
}

func (c *counters) snapshot() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.s
	out.Requests = maps.Clone(c.s.Requests)
	out.Faults = maps.Clone(c.s.Faults)
	return out
}

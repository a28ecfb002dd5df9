package exsim

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
	"github.com/easconnector/easconnector/loadtest/population"
)

// Default credentials of the simulated service account.
const (
	DefaultUser     = "svc-easconnector"
	DefaultPassword = "exsim-Passw0rd"
)

// MaxListeners is how many CAS listeners fit on 127.0.0.1 … 127.0.0.254.
const MaxListeners = 254

// Options configure a Sim. Zero values take the defaults noted.
type Options struct {
	// Population is loaded into the organization; nil leaves it empty (in
	// DefaultDomain). The Sim keeps it for ApplyChurn; callers must not
	// mutate it concurrently with the Sim.
	Population *population.Population
	// Listeners is the number of Client Access servers (0 → 1). Listener i
	// binds 127.0.0.(i+1) on the same port, named CAS01, CAS02, … (Linux
	// routes all of 127.0.0.0/8 to loopback; other systems need aliases).
	Listeners int
	// Port is the listeners' port; 0 picks a free one.
	Port int
	// Profile names the latency profile: zero (default), lab, production.
	Profile string
	// Users are the Basic credentials the listeners accept
	// (nil → DefaultUser: DefaultPassword).
	Users map[string]string
	// TLS serves HTTPS with a certificate generated for every listener IP;
	// CAPEM returns it for the client to trust.
	TLS bool
	// PowerShellMaxConcurrency, PowerShellMaxCmdlets and
	// PowerShellMaxCmdletsTimePeriod are the initial Quotas.
	PowerShellMaxConcurrency       int
	PowerShellMaxCmdlets           int
	PowerShellMaxCmdletsTimePeriod time.Duration
	// MaxShellsPerUser, MaxEnvelopeKB, IdleTimeout and MaxTimeout are the
	// WinRM service quotas of each listener (0 → Windows' defaults).
	MaxShellsPerUser int
	MaxEnvelopeKB    int
	IdleTimeout      time.Duration
	MaxTimeout       time.Duration
	// MaxCommandsPerShell, when positive, makes each listener's PowerShell
	// shells refuse pipelines after that many, as Windows counts the
	// plugin's MaxConcurrentCommandsPerShell (wsman.Options).
	MaxCommandsPerShell int
	// Seed drives jitter and injected errors (0 → 1).
	Seed uint64
	// Quiet suppresses the banner and CLIXML noise a real powershell.exe
	// prints around the protocol frames.
	Quiet bool
	// CallLogSize bounds the call log (0 → DefaultCallLogSize).
	CallLogSize int
	// Logger receives the WS-Man servers' debug events; nil discards them.
	Logger *slog.Logger
	// Kerberos, when set, makes every listener also accept Negotiate and
	// Kerberos authentication (on /wsman and /PowerShell/) verified with
	// its keytab, as Exchange's virtual directory does by default; Users
	// then map principals to accounts (wsman.Kerberos).
	Kerberos *wsman.Kerberos
	// Roles grants users (matched case-insensitively) only the listed
	// cmdlets in Exchange sessions (PSRP, and the bootstrap's remoting
	// mode), as Exchange's RBAC does: a cmdlet the roles do not grant does
	// not exist in the user's session. A user without an entry may run
	// every simulated cmdlet. See SetRoles.
	Roles map[string][]string
}

// Sim is a simulated Exchange organization served by one or more Client
// Access listeners speaking WS-Management. Its methods are safe for
// concurrent use. Close stops every listener and waits for every session.
type Sim struct {
	opts       Options
	org        *Org
	profile    Profile
	counters   *counters
	sessionSeq atomic.Uint64

	mu    sync.Mutex // guards q, f, rng, roles
	q     Quotas
	f     Faults
	rng   *rand.Rand
	roles map[string]map[string]bool // lower-cased user → granted cmdlets

	popMu sync.Mutex
	pop   *population.Population

	port      int
	caPEM     []byte
	cert      tls.Certificate
	listeners []*listener
	closeOnce sync.Once
}

// listener is one CAS: a TCP listener, its HTTP server and WS-Man server.
type listener struct {
	index  int
	host   string
	worker *worker

	mu     sync.Mutex
	up     bool
	killed bool // by Kill, until Restart
	ws     *wsman.Server
	hs     *http.Server
	done   chan struct{} // closed when hs.Serve returned
}

// New builds a Sim without network listeners: its organization, counters
// and per-listener Runners (see Runner) are ready, which is what tests that
// drive the worker over pipes need.
func New(opts Options) (*Sim, error) {
	if opts.Listeners == 0 {
		opts.Listeners = 1
	}
	if opts.Listeners < 1 || opts.Listeners > MaxListeners {
		return nil, fmt.Errorf("exsim: listeners: must be between 1 and %d, got %d", MaxListeners, opts.Listeners)
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("exsim: port: must be between 0 and 65535, got %d", opts.Port)
	}
	prof, err := LookupProfile(opts.Profile)
	if err != nil {
		return nil, fmt.Errorf("exsim: profile: %w", err)
	}
	if opts.Users == nil {
		opts.Users = map[string]string{DefaultUser: DefaultPassword}
	}
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	q := Quotas{PowerShellMaxConcurrency: opts.PowerShellMaxConcurrency, PowerShellMaxCmdlets: opts.PowerShellMaxCmdlets,
		PowerShellMaxCmdletsTimePeriod: opts.PowerShellMaxCmdletsTimePeriod}
	if err := q.validate(); err != nil {
		return nil, fmt.Errorf("exsim: %w", err)
	}
	s := &Sim{
		opts: opts, profile: prof, counters: newCounters(opts.CallLogSize), q: q.withDefaults(),
		rng: rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x5851f42d4c957f2d)),
	}
	for user, cmdlets := range opts.Roles {
		if err := s.SetRoles(user, cmdlets); err != nil {
			return nil, fmt.Errorf("exsim: roles: %w", err)
		}
	}
	s.org = NewOrg("")
	if opts.Population != nil {
		if err := s.org.Load(opts.Population); err != nil {
			return nil, fmt.Errorf("exsim: %w", err)
		}
		s.pop = opts.Population
	}
	servers := make([]exchange.ExchangeServer, opts.Listeners)
	for i := range opts.Listeners {
		host := "127.0.0." + strconv.Itoa(i+1)
		servers[i] = exchange.ExchangeServer{
			Name: fmt.Sprintf("CAS%02d", i+1), Fqdn: host, ServerRole: []string{"Mailbox", "ClientAccess"},
			AdminDisplayVersion: ExchangeVersion, Site: siteName(s.org.domain),
		}
		s.listeners = append(s.listeners, &listener{index: i, host: host, worker: &worker{sim: s, index: i, server: servers[i]}})
	}
	s.org.setServers(servers)
	return s, nil
}

func (q Quotas) validate() error {
	if q.PowerShellMaxCmdlets < 0 {
		return fmt.Errorf("powerShellMaxCmdlets: must not be negative, got %d", q.PowerShellMaxCmdlets)
	}
	if q.PowerShellMaxCmdletsTimePeriod < 0 {
		return fmt.Errorf("powerShellMaxCmdletsTimePeriod: must not be negative, got %s", q.PowerShellMaxCmdletsTimePeriod)
	}
	return nil
}

// Start builds a Sim and starts its listeners.
func Start(opts Options) (*Sim, error) {
	s, err := New(opts)
	if err != nil {
		return nil, err
	}
	if err := s.listen(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// bindAttempts bounds the search for a port free on every listener IP.
const bindAttempts = 8

func (s *Sim) listen() error {
	hosts := s.Hosts()
	if s.opts.TLS {
		cert, pemBytes, err := wsman.GenerateCert(hosts)
		if err != nil {
			return fmt.Errorf("exsim: %w", err)
		}
		s.cert, s.caPEM = cert, pemBytes
	}
	var lastErr error
	for range bindAttempts {
		lns, port, err := bindAll(hosts, s.opts.Port)
		if err == nil {
			s.port = port
			for i, l := range s.listeners {
				l.serve(s, lns[i])
			}
			return nil
		}
		lastErr = err
		if s.opts.Port != 0 {
			break
		}
	}
	return fmt.Errorf("exsim: listen: %w", lastErr)
}

// bindAll binds every host on one port: port, or the free port the kernel
// gives the first host.
func bindAll(hosts []string, port int) ([]net.Listener, int, error) {
	lns := make([]net.Listener, 0, len(hosts))
	for _, h := range hosts {
		ln, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
		if err != nil {
			for _, l := range lns {
				_ = l.Close()
			}
			return nil, 0, err
		}
		if port == 0 {
			port = ln.Addr().(*net.TCPAddr).Port
		}
		lns = append(lns, ln)
	}
	return lns, port, nil
}

func (l *listener) serve(s *Sim, ln net.Listener) {
	if s.opts.TLS {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{s.cert}, MinVersion: tls.VersionTLS12})
	}
	ws := wsman.NewServer(wsman.Options{
		Machine: l.worker.server.Name, Users: s.opts.Users, MaxShellsPerUser: s.opts.MaxShellsPerUser, MaxCommandsPerShell: s.opts.MaxCommandsPerShell,
		MaxEnvelopeKB: s.opts.MaxEnvelopeKB, IdleTimeout: s.opts.IdleTimeout, MaxTimeout: s.opts.MaxTimeout, Logger: s.opts.Logger,
		PowerShell: l.worker, PowerShellConfigurations: []string{ConfigurationName}, Kerberos: s.opts.Kerberos,
	}, l.worker)
	errLog := log.New(io.Discard, "", 0)
	if s.opts.Logger != nil {
		errLog = slog.NewLogLogger(s.opts.Logger.Handler(), slog.LevelDebug)
	}
	hs := &http.Server{Handler: ws, ReadHeaderTimeout: 30 * time.Second, ErrorLog: errLog}
	done := make(chan struct{})
	l.mu.Lock()
	l.up, l.killed, l.ws, l.hs, l.done = true, false, ws, hs, done
	l.mu.Unlock()
	go func() {
		defer close(done)
		_ = hs.Serve(ln)
	}()
}

// stop closes the listener, its connections and every shell on it.
func (l *listener) stop() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.up {
		return false
	}
	l.up = false
	// WS-Man first: it answers pending long-polls and ends every Runner,
	// which http.Server.Close would otherwise leave to their own timeouts.
	l.ws.Close()
	_ = l.hs.Close()
	<-l.done
	return true
}

// Hosts returns the listeners' IP addresses, listener 0 first.
func (s *Sim) Hosts() []string {
	out := make([]string, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = l.host
	}
	return out
}

// Port returns the listeners' common port (0 before Start).
func (s *Sim) Port() int { return s.port }

// TLS reports whether the listeners serve HTTPS.
func (s *Sim) TLS() bool { return s.opts.TLS }

// CAPEM returns the PEM certificate clients must trust with TLS, else nil.
func (s *Sim) CAPEM() []byte { return slices.Clone(s.caPEM) }

// Users returns the accepted credentials.
func (s *Sim) Users() map[string]string {
	out := make(map[string]string, len(s.opts.Users))
	for k, v := range s.opts.Users {
		out[k] = v
	}
	return out
}

// Endpoint returns listener i's WS-Man URL; i must be in [0, Listeners()).
func (s *Sim) Endpoint(i int) string {
	scheme := "http"
	if s.opts.TLS {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s/wsman", scheme, net.JoinHostPort(s.listeners[i].host, strconv.Itoa(s.port)))
}

// PowerShellURL returns listener i's PSRP endpoint, Exchange's virtual
// directory: http(s)://<host>:<port>/PowerShell/, to be used with the
// ResourceURI http://schemas.microsoft.com/powershell/Microsoft.Exchange;
// i must be in [0, Listeners()).
func (s *Sim) PowerShellURL(i int) string {
	scheme := "http"
	if s.opts.TLS {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s/PowerShell/", scheme, net.JoinHostPort(s.listeners[i].host, strconv.Itoa(s.port)))
}

// ResourceURI is the WS-Management resource of the Exchange PowerShell
// endpoint (MS-PSRP 3.1.5.3: the ResourceURI of a RunspacePool).
const ResourceURI = "http://schemas.microsoft.com/powershell/" + ConfigurationName

// SetRoles limits the cmdlets user may run in Exchange sessions to cmdlets (a
// role assignment's effect); nil restores every cmdlet. Sessions already
// open see the change at their next pipeline.
func (s *Sim) SetRoles(user string, cmdlets []string) error {
	if strings.TrimSpace(user) == "" {
		return errors.New("set roles: empty user name")
	}
	var set map[string]bool
	if cmdlets != nil {
		set = make(map[string]bool, len(cmdlets))
		for _, c := range cmdlets {
			cmd := lookupCmdlet(c)
			if cmd == nil {
				return fmt.Errorf("set roles %s: %q is not a simulated cmdlet", user, c)
			}
			set[cmd.name] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.roles == nil {
		s.roles = map[string]map[string]bool{}
	}
	if set == nil {
		delete(s.roles, strings.ToLower(user))
	} else {
		s.roles[strings.ToLower(user)] = set
	}
	return nil
}

// granted reports whether user's roles include cmd (its canonical name).
func (s *Sim) granted(user, cmd string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	set, ok := s.roles[strings.ToLower(user)]
	return !ok || set[cmd]
}

// ConnectionURI returns the remoting connectionUri that addresses listener
// i's own host, http://<host>/PowerShell/; i must be in [0, Listeners()).
func (s *Sim) ConnectionURI(i int) string { return "http://" + s.listeners[i].host + "/PowerShell/" }

// Org returns the simulated organization.
func (s *Sim) Org() *Org { return s.org }

// Runner returns listener i's worker, for driving sessions without HTTP
// (over io.Pipes, say); i must be in [0, Listeners()).
func (s *Sim) Runner(i int) wsman.Runner { return s.listeners[i].worker }

// Listeners returns the number of listeners.
func (s *Sim) Listeners() int { return len(s.listeners) }

// ErrListener is wrapped by errors of Kill, Restart and the listener faults.
var ErrListener = errors.New("listener")

func (s *Sim) listener(i int) (*listener, error) {
	if i < 0 || i >= len(s.listeners) {
		return nil, fmt.Errorf("%w %d: out of range [0,%d)", ErrListener, i, len(s.listeners))
	}
	return s.listeners[i], nil
}

// Kill takes listener i down as a crashed server would: the TCP listener
// and every connection close, and its shells and sessions end.
func (s *Sim) Kill(i int) error {
	l, err := s.listener(i)
	if err != nil {
		return err
	}
	if s.port == 0 {
		return fmt.Errorf("%w %d: not started", ErrListener, i)
	}
	if !l.stop() {
		return fmt.Errorf("%w %d: already down", ErrListener, i)
	}
	l.mu.Lock()
	l.killed = true
	l.mu.Unlock()
	return nil
}

// killed reports whether listener i was killed and not restarted.
func (s *Sim) killed(i int) bool {
	l := s.listeners[i]
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.killed
}

// Restart brings a killed listener back on the same address, with no
// shells.
func (s *Sim) Restart(i int) error {
	l, err := s.listener(i)
	if err != nil {
		return err
	}
	l.mu.Lock()
	up := l.up
	l.mu.Unlock()
	if up {
		return fmt.Errorf("%w %d: already up", ErrListener, i)
	}
	if s.port == 0 {
		return fmt.Errorf("%w %d: not started", ErrListener, i)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(l.host, strconv.Itoa(s.port)))
	if err != nil {
		return fmt.Errorf("%w %d: restart: %w", ErrListener, i, err)
	}
	l.serve(s, ln)
	return nil
}

// Up reports whether listener i is serving.
func (s *Sim) Up(i int) bool {
	l, err := s.listener(i)
	if err != nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.up
}

// WSMan returns listener i's WS-Man server while it is up (for its Stats,
// Shells and HTTP-level faults), else nil.
func (s *Sim) WSMan(i int) *wsman.Server {
	l, err := s.listener(i)
	if err != nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.up {
		return nil
	}
	return l.ws
}

// DropShells drops every shell of listener i (as a WinRM service restart
// does) and returns how many there were.
func (s *Sim) DropShells(i int) (int, error) {
	ws := s.WSMan(i)
	if ws == nil {
		return 0, fmt.Errorf("%w %d: down or out of range", ErrListener, i)
	}
	return ws.DropAllShells(), nil
}

// DropShell drops one shell by id on whichever listener holds it.
func (s *Sim) DropShell(id string) bool {
	for i := range s.listeners {
		if ws := s.WSMan(i); ws != nil && ws.DropShell(id) {
			return true
		}
	}
	return false
}

// HTTPFaults are the WS-Man level faults of one listener.
type HTTPFaults struct {
	Slowdown  time.Duration `json:"slowdown,omitempty"`  // added to every HTTP response
	FaultRate float64       `json:"faultRate,omitempty"` // probability of an injected WS-Man fault
	Truncate  bool          `json:"truncate,omitempty"`  // cut response bodies
}

// SetHTTPFaults sets listener i's WS-Man level faults (until it restarts).
func (s *Sim) SetHTTPFaults(i int, f HTTPFaults) error {
	if f.FaultRate < 0 || f.FaultRate > 1 {
		return fmt.Errorf("%w %d: faultRate: must be in [0,1], got %v", ErrListener, i, f.FaultRate)
	}
	ws := s.WSMan(i)
	if ws == nil {
		return fmt.Errorf("%w %d: down or out of range", ErrListener, i)
	}
	ws.SetSlowdown(f.Slowdown)
	ws.SetFaultRate(f.FaultRate, s.opts.Seed+uint64(i))
	ws.SetTruncate(f.Truncate)
	return nil
}

// SetFaults replaces the cmdlet-level faults.
func (s *Sim) SetFaults(f Faults) error {
	switch {
	case f.ErrorRate < 0 || f.ErrorRate > 1:
		return fmt.Errorf("faults: errorRate: must be in [0,1], got %v", f.ErrorRate)
	case f.Slowdown < 0:
		return fmt.Errorf("faults: slowdown: must not be negative, got %s", f.Slowdown)
	case f.TruncateAfter < 0:
		return fmt.Errorf("faults: truncateAfter: must not be negative, got %d", f.TruncateAfter)
	}
	for _, c := range f.Cmdlets {
		if lookupCmdlet(c) == nil {
			return fmt.Errorf("faults: cmdlets: %q is not a simulated cmdlet", c)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f.Cmdlets = slices.Clone(f.Cmdlets)
	s.f = f
	return nil
}

// Faults returns the cmdlet-level faults in force.
func (s *Sim) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.f
	f.Cmdlets = slices.Clone(f.Cmdlets)
	return f
}

func (s *Sim) faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f
}

// SetQuotas replaces the throttling quotas; sessions already open keep
// their slot.
func (s *Sim) SetQuotas(q Quotas) error {
	if err := q.validate(); err != nil {
		return fmt.Errorf("quotas: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.q = q.withDefaults()
	return nil
}

// Quotas returns the quotas in force.
func (s *Sim) Quotas() Quotas { return s.quotas() }

func (s *Sim) quotas() Quotas {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.q
}

// rand returns a uniform number in [0,1) from the seeded generator.
func (s *Sim) rand() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.Float64()
}

func (s *Sim) newGUID() string {
	s.mu.Lock()
	hi, lo := s.rng.Uint64(), s.rng.Uint64()
	s.mu.Unlock()
	hi = hi&^0xf000 | 0x4000
	lo = lo&^(0xc<<60) | 0x8<<60
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", hi>>32, hi>>16&0xffff, hi&0xffff, lo>>48, lo&0xffffffffffff)
}

func (s *Sim) now() time.Time { return time.Now().UTC() }

// Counters returns a snapshot of the counters.
func (s *Sim) Counters() Counters { return s.counters.snapshot() }

// CallLog returns the logged calls with Seq > since, oldest first, at most
// limit (≤ 0: all of them).
func (s *Sim) CallLog(since uint64, limit int) []Call { return s.counters.calls(since, limit) }

// ResetCounters zeroes the counters and empties the call log.
func (s *Sim) ResetCounters() { s.counters.reset() }

// Population returns the population the organization was loaded from (nil
// if none). Callers must not mutate it while the Sim may (ApplyChurn).
func (s *Sim) Population() *population.Population {
	s.popMu.Lock()
	defer s.popMu.Unlock()
	return s.pop
}

// LoadPopulation replaces the organization's content with p.
func (s *Sim) LoadPopulation(p *population.Population) error {
	s.popMu.Lock()
	defer s.popMu.Unlock()
	if err := s.org.Load(p); err != nil {
		return err
	}
	s.pop = p
	return nil
}

// ApplyChanges applies changes made by Churn on the Sim's population.
func (s *Sim) ApplyChanges(changes []population.Change) (int, error) {
	s.popMu.Lock()
	defer s.popMu.Unlock()
	if s.pop == nil {
		return 0, errors.New("apply changes: no population loaded")
	}
	return s.org.ApplyChanges(s.pop, changes)
}

// ApplyChurn runs Churn on the Sim's population and applies the result,
// returning the changes (for the MDM simulator to mirror). A churn step
// stands for at least one heartbeat of the fleet, so afterwards every phone
// has made a request and stores its current access state (Org.ContactAll).
func (s *Sim) ApplyChurn(fraction float64, step time.Duration) ([]population.Change, error) {
	if fraction <= 0 || fraction > 1 {
		return nil, fmt.Errorf("churn: fraction: must be in (0,1], got %v", fraction)
	}
	s.popMu.Lock()
	defer s.popMu.Unlock()
	if s.pop == nil {
		return nil, errors.New("churn: no population loaded")
	}
	changes := s.pop.Churn(fraction, step)
	if _, err := s.org.ApplyChanges(s.pop, changes); err != nil {
		return changes, err
	}
	s.org.ContactAll()
	return changes, nil
}

// Close stops every listener and waits for their sessions to end.
func (s *Sim) Close() {
	s.closeOnce.Do(func() {
		for _, l := range s.listeners {
			l.stop()
		}
	})
}

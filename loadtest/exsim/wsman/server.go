package wsman

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options, the Windows WinRM service defaults where one exists.
const (
	DefaultMaxShellsPerUser     = 30   // winrs/MaxShellsPerUser
	DefaultMaxProcessesPerShell = 25   // winrs/MaxProcessesPerShell
	DefaultMaxOperationsPerUser = 1500 // service/MaxConcurrentOperationsPerUser
	DefaultMaxEnvelopeKB        = 500  // config/MaxEnvelopeSizekb
	DefaultIdleTimeout          = 7200 * time.Second
	DefaultMaxTimeout           = 60 * time.Second // config/MaxTimeoutms
	DefaultCoalesce             = 2 * time.Millisecond
	DefaultMaxCommandLine       = 8191  // cmd.exe's line limit
	maxCreateProcessLine        = 32767 // CreateProcess' limit, when cmd.exe is skipped

	// statusAccessViolation is the exit code reported for a Runner that
	// panicked, as Windows reports a crashed process.
	statusAccessViolation = -1073741819 // 0xC0000005
)

// Options configure a Server. Zero values take the defaults above.
type Options struct {
	// Machine is the name in faults' Machine attribute; empty means the
	// host the client addressed.
	Machine string
	// Users maps Basic auth user names (matched case-insensitively, as
	// Windows does) to passwords. Nil or empty accepts any Basic credentials;
	// a request without Basic credentials is refused either way.
	Users map[string]string
	// MaxShellsPerUser bounds the shells one user has open (fault 2150859173).
	MaxShellsPerUser int
	// MaxProcessesPerShell bounds the running commands of one shell.
	MaxProcessesPerShell int
	// MaxCommandsPerShell, when positive, is the PowerShell plugin's
	// MaxConcurrentCommandsPerShell as Windows Server 2012 R2 applies it:
	// counted over the shell's life, so the pool refuses its next pipeline
	// with the MaxCommandsPerShell fault once that many have been started
	// (pypsrp issue #148: sequential invocations fail after 1000). Zero
	// means no such limit.
	MaxCommandsPerShell int
	// MaxOperationsPerUser bounds the commands one user has across shells
	// that were not yet terminated (Signal) or deleted with their shell
	// (fault 2150859174). A client that never signals its finished commands
	// hits it, as on Windows.
	MaxOperationsPerUser int
	// MaxEnvelopeKB bounds request size (HTTP 413 above it) and response size.
	MaxEnvelopeKB int
	// IdleTimeout reaps a shell without client activity; a pending Receive
	// counts as activity. Negative disables reaping.
	IdleTimeout time.Duration
	// MaxTimeout clamps the client's OperationTimeout (the Receive long-poll).
	MaxTimeout time.Duration
	// Coalesce is how long a Receive that found output waits for more before
	// answering, batching small writes. Negative answers at once.
	Coalesce time.Duration
	// MaxCommandLine bounds the command line (command and arguments joined
	// by spaces, in UTF-16 units) when WINRS_SKIP_CMD_SHELL is not TRUE;
	// with it, CreateProcess' 32767 applies.
	MaxCommandLine int
	// MaxReceiveBytes, when positive, caps the raw output bytes per Receive
	// below what MaxEnvelopeSize allows, so output is split at arbitrary
	// points (mid-line, mid-UTF-8 sequence) as Windows may split it.
	MaxReceiveBytes int
	// Logger receives debug events; nil discards them.
	Logger *slog.Logger
	// Kerberos, when set, also accepts Negotiate/Kerberos authentication
	// verified with a service keytab (kerberos.go).
	Kerberos *Kerberos
	// PowerShell, when set, serves the PowerShell endpoints named in
	// PowerShellConfigurations (ResourceURI
	// http://schemas.microsoft.com/powershell/<name>), on /wsman and on
	// /PowerShell/ (Exchange's virtual directory, which serves only them).
	PowerShell               PowerShellHost
	PowerShellConfigurations []string
}

// Validate reports the first option set to an impossible value, naming it.
// NewServer replaces zero and negative limits by the defaults; Validate is
// for options read from user input (flags, files), where a negative number
// is a mistake to report rather than to default.
func (o Options) Validate() error {
	for _, c := range []struct {
		name  string
		value int
	}{
		{"MaxShellsPerUser", o.MaxShellsPerUser},
		{"MaxProcessesPerShell", o.MaxProcessesPerShell},
		{"MaxOperationsPerUser", o.MaxOperationsPerUser},
		{"MaxEnvelopeKB", o.MaxEnvelopeKB},
		{"MaxCommandLine", o.MaxCommandLine},
		{"MaxReceiveBytes", o.MaxReceiveBytes},
	} {
		if c.value < 0 {
			return fmt.Errorf("wsman options: %s must not be negative, got %d", c.name, c.value)
		}
	}
	if o.MaxEnvelopeKB > 0 && o.MaxEnvelopeKB*1024 < minEnvelopeSize {
		return fmt.Errorf("wsman options: MaxEnvelopeKB must be at least %d (WS-Management's minimum envelope), got %d", minEnvelopeSize/1024, o.MaxEnvelopeKB)
	}
	if o.MaxCommandLine > maxCreateProcessLine {
		return fmt.Errorf("wsman options: MaxCommandLine must be at most %d (CreateProcess' limit), got %d", maxCreateProcessLine, o.MaxCommandLine)
	}
	if o.MaxTimeout < 0 {
		return fmt.Errorf("wsman options: MaxTimeout must not be negative, got %v", o.MaxTimeout)
	}
	for name := range o.Users {
		if strings.TrimSpace(name) == "" {
			return errors.New("wsman options: Users has an empty user name")
		}
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.MaxShellsPerUser <= 0 {
		o.MaxShellsPerUser = DefaultMaxShellsPerUser
	}
	if o.MaxProcessesPerShell <= 0 {
		o.MaxProcessesPerShell = DefaultMaxProcessesPerShell
	}
	if o.MaxOperationsPerUser <= 0 {
		o.MaxOperationsPerUser = DefaultMaxOperationsPerUser
	}
	if o.MaxEnvelopeKB <= 0 {
		o.MaxEnvelopeKB = DefaultMaxEnvelopeKB
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxTimeout <= 0 {
		o.MaxTimeout = DefaultMaxTimeout
	}
	if o.Coalesce == 0 {
		o.Coalesce = DefaultCoalesce
	}
	if o.MaxCommandLine <= 0 {
		o.MaxCommandLine = DefaultMaxCommandLine
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// errClientGone ends a request whose client disconnected: nothing is written.
var errClientGone = errors.New("wsman: client went away")

// Server is a WS-Management endpoint serving WinRS shells (POST /wsman).
// It is safe for concurrent use. Call Close before shutting down the
// http.Server that carries it: Close answers pending long-polls, which
// http.Server.Shutdown and httptest.Server.Close would otherwise wait for.
type Server struct {
	opts   Options
	runner Runner
	log    *slog.Logger
	users  map[string]credential // by lower-case name
	stats  *counters

	mu       sync.Mutex
	shells   map[string]*shell
	perUser  map[string]*quota
	closed   bool
	done     chan struct{}  // closed by Close
	procs    sync.WaitGroup // Runner goroutines and the reaper
	requests sync.WaitGroup // ServeHTTP calls in flight

	slowdown atomic.Int64 // time.Duration
	truncate atomic.Bool
	faultMu  sync.Mutex
	faultP   float64
	faultRNG *rand.Rand
}

type credential struct{ name, password string }

type quota struct{ shells, operations int }

var _ http.Handler = (*Server)(nil)

// NewServer returns a Server that runs commands with r. It starts the idle
// reaper; Close stops it.
func NewServer(opts Options, r Runner) *Server {
	if r == nil {
		panic("wsman: NewServer with a nil Runner")
	}
	opts = opts.withDefaults()
	s := &Server{
		opts:    opts,
		runner:  r,
		log:     opts.Logger,
		users:   make(map[string]credential, len(opts.Users)),
		stats:   newCounters(),
		shells:  make(map[string]*shell),
		perUser: make(map[string]*quota),
		done:    make(chan struct{}),
	}
	for name, pass := range opts.Users {
		s.users[strings.ToLower(name)] = credential{name: name, password: pass}
	}
	if opts.IdleTimeout > 0 {
		s.procs.Add(1)
		go s.reap()
	}
	return s
}

// ServeHTTP serves POST /wsman, and /PowerShell/ when a PowerShellHost is
// set; other paths get 404 and other methods 405.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	psPath := s.opts.PowerShell != nil && isPowerShellPath(r.URL.Path)
	if r.URL.Path != "/wsman" && !psPath {
		s.stats.add(func(st *Stats) { st.BadHTTP++ })
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		s.stats.add(func(st *Stats) { st.BadHTTP++ })
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !s.enter() {
		s.stats.add(func(st *Stats) { st.BadHTTP++ })
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
		return
	}
	defer s.requests.Done()
	ctx := r.Context()

	user, ok := s.authenticate(r)
	if !ok {
		s.stats.add(func(st *Stats) { st.Unauthorized++ })
		s.delay(ctx)
		s.challenge(w.Header())
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/soap+xml" {
		s.stats.add(func(st *Stats) { st.BadHTTP++ })
		http.Error(w, "unsupported media type", http.StatusUnsupportedMediaType)
		return
	}
	body, status := s.readBody(r)
	if status != 0 {
		if status == http.StatusRequestEntityTooLarge {
			s.stats.add(func(st *Stats) { st.TooLarge++ })
		} else {
			s.stats.add(func(st *Stats) { st.BadHTTP++ })
		}
		s.delay(ctx)
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(status)
		return
	}

	req, fault := parseEnvelope(body)
	if fault == nil && psPath && !req.ps {
		// Exchange's /PowerShell virtual directory hosts only the
		// PowerShell plugin, not WinRS.
		fault = faultResourceNotFound(req.resourceURI)
	}
	name := shortAction(req.action)
	s.stats.add(func(st *Stats) { st.Requests[name]++ })
	var resp []byte
	var err error
	if fault != nil {
		err = fault
	} else {
		resp, err = s.dispatch(ctx, r, req, user)
	}
	switch {
	case errors.Is(err, errClientGone):
		return
	case errors.Is(err, ErrServerClosed):
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
		return
	}
	status = http.StatusOK
	if err != nil {
		var f *Fault
		if !errors.As(err, &f) {
			f = FaultProviderFailure()
			s.log.Error("wsman: unexpected error", "action", name, "err", err)
		}
		s.stats.add(func(st *Stats) { st.Faults[f.Code]++ })
		s.log.Debug("wsman fault", "action", name, "shell", req.shellID, "code", f.Code, "subcode", f.Subcode)
		resp, status = f.MarshalEnvelope(s.machine(r), req.messageID), http.StatusInternalServerError
	}
	if req.action == actionReceive && s.truncate.Load() {
		resp = resp[:len(resp)/2]
		s.stats.add(func(st *Stats) { st.TruncatedResponses++ })
	}
	s.delay(ctx)
	w.Header().Set("Content-Type", "application/soap+xml;charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(resp)))
	w.WriteHeader(status)
	_, _ = w.Write(resp) // a client that went away is not the server's error
}

// enter admits a request unless the server is closed.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.requests.Add(1)
	return true
}

func (s *Server) authenticate(r *http.Request) (string, bool) {
	if user, ok, tried := s.kerberosAuth(r); tried {
		return user, ok
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", false
	}
	if len(s.users) == 0 {
		return user, true
	}
	cred, known := s.users[strings.ToLower(user)]
	if subtle.ConstantTimeCompare([]byte(pass), []byte(cred.password)) != 1 || !known {
		return "", false
	}
	return cred.name, true
}

// readBody reads the request up to MaxEnvelopeKB; a non-zero status refuses it.
func (s *Server) readBody(r *http.Request) ([]byte, int) {
	limit := int64(s.opts.MaxEnvelopeKB) * 1024
	drain := func() {
		// Let the client finish writing so it reads the 413 instead of a reset.
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 16<<20))
	}
	if r.ContentLength > limit {
		drain()
		return nil, http.StatusRequestEntityTooLarge
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, http.StatusBadRequest
	}
	if int64(len(data)) > limit {
		drain()
		return nil, http.StatusRequestEntityTooLarge
	}
	return data, 0
}

func (s *Server) machine(r *http.Request) string {
	if s.opts.Machine != "" {
		return s.opts.Machine
	}
	if host, _, err := net.SplitHostPort(r.Host); err == nil {
		return host
	}
	return r.Host
}

// delay applies SetSlowdown.
func (s *Server) delay(ctx context.Context) {
	d := time.Duration(s.slowdown.Load())
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-s.done:
	}
}

func (s *Server) injectFault() bool {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if s.faultP <= 0 || s.faultRNG == nil {
		return false
	}
	if s.faultRNG.Float64() >= s.faultP {
		return false
	}
	s.stats.add(func(st *Stats) { st.InjectedFaults++ })
	return true
}

// isPowerShellPath matches Exchange's virtual directory, which IIS matches
// case-insensitively, with or without the trailing slash.
func isPowerShellPath(p string) bool {
	return strings.EqualFold(strings.TrimSuffix(p, "/"), "/PowerShell")
}

// kindMismatch reports a request addressing a shell of the other kind (a
// cmd shell with a PowerShell ResourceURI or the reverse), which Windows
// cannot find under that resource.
func (s *Server) kindMismatch(req *request) bool {
	if req.shellID == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.shells[req.shellID]
	return sh != nil && (sh.ps != req.ps || sh.ps && !strings.EqualFold(sh.resourceURI, req.resourceURI))
}

func (s *Server) dispatch(ctx context.Context, r *http.Request, req *request, user string) ([]byte, error) {
	if req.action != actionCreate && s.kindMismatch(req) {
		return nil, FaultInvalidSelectors(req.shellID)
	}
	if req.ps {
		return s.dispatchPS(ctx, r, req, user)
	}
	switch req.action {
	case actionGet:
		return s.getConfig(req), nil
	case actionEnumerate, actionPull:
		return s.enumerate(req, user)
	case actionCreate:
		return s.create(r, req, user)
	case actionCommand:
		return s.command(req, user)
	case actionSend:
		if s.injectFault() {
			return nil, FaultProviderFailure()
		}
		return s.sendInput(ctx, req, user)
	case actionReceive:
		if s.injectFault() {
			return nil, FaultProviderFailure()
		}
		return s.receive(ctx, req, user)
	case actionSignal:
		return s.signal(req, user)
	case actionDelete:
		return s.deleteShell(req, user)
	}
	return nil, faultActionNotSupported(req.action)
}

// Close terminates every command (their contexts end with ErrServerClosed),
// answers pending requests with 503, refuses new ones, and returns when
// every ServeHTTP call, Runner goroutine and the reaper have finished.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
		for _, sh := range s.shells {
			s.removeShellLocked(sh, ErrServerClosed, nil)
		}
	}
	s.mu.Unlock()
	s.requests.Wait()
	s.procs.Wait()
}

// DropShell makes a shell vanish server-side, as a WinRM service restart
// does: its commands are cancelled (ErrShellDropped) and every request for
// it, pending or later, gets InvalidSelectors. It reports whether the shell
// existed.
func (s *Server) DropShell(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.shells[strings.ToUpper(id)]
	if sh == nil {
		return false
	}
	s.removeShellLocked(sh, ErrShellDropped, FaultInvalidSelectors(sh.id))
	s.stats.add(func(st *Stats) { st.ShellsDropped++ })
	return true
}

// DropAllShells drops every shell and returns how many there were.
func (s *Server) DropAllShells() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.shells)
	for _, sh := range s.shells {
		s.removeShellLocked(sh, ErrShellDropped, FaultInvalidSelectors(sh.id))
	}
	s.stats.add(func(st *Stats) { st.ShellsDropped += uint64(n) })
	return n
}

// Shells lists the live shells, oldest first.
func (s *Server) Shells() []ShellInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ShellInfo, 0, len(s.shells))
	for _, sh := range s.shells {
		info := ShellInfo{
			ID:              sh.id,
			User:            sh.user,
			ClientIP:        sh.clientIP,
			Created:         sh.created,
			LastActivity:    sh.lastActivity,
			PendingRequests: sh.pending,
			Options:         maps.Clone(sh.options),
		}
		for _, c := range sh.commands {
			c.mu.Lock()
			info.Commands = append(info.Commands, CommandInfo{
				ID:       c.info.CommandID,
				Name:     c.info.Name,
				Started:  c.started,
				Running:  !c.done,
				ExitCode: c.exitCode,
			})
			c.mu.Unlock()
		}
		slices.SortFunc(info.Commands, func(a, b CommandInfo) int { return a.Started.Compare(b.Started) })
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b ShellInfo) int { return a.Created.Compare(b.Created) })
	return out
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// SetSlowdown delays every response by d (0 turns it off). The delay ends
// early when the client goes away or the server closes.
func (s *Server) SetSlowdown(d time.Duration) { s.slowdown.Store(int64(max(d, 0))) }

// SetFaultRate answers fraction p (0..1) of Send and Receive requests with
// an internal-error fault (w:InternalError, 2150858755 "An error was
// encountered inside the plugin.") before acting on them, so a Receive so
// answered loses no output and a Send so answered delivers no input. The
// draws are reproducible for a given seed.
func (s *Server) SetFaultRate(p float64, seed uint64) {
	if math.IsNaN(p) || p < 0 {
		p = 0
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.faultP = min(p, 1)
	s.faultRNG = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// SetTruncate cuts every Receive response in half (still with the SOAP
// content type) while on; the output in it is lost, as with a broken proxy.
func (s *Server) SetTruncate(on bool) { s.truncate.Store(on) }

func (s *Server) reap() {
	defer s.procs.Done()
	interval := min(max(s.opts.IdleTimeout/4, 5*time.Millisecond), 30*time.Second)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			s.reapIdle(now)
		}
	}
}

func (s *Server) reapIdle(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sh := range s.shells {
		if sh.pending > 0 || now.Sub(sh.lastActivity) < s.opts.IdleTimeout {
			continue
		}
		s.log.Debug("wsman shell reaped", "shell", sh.id, "user", sh.user)
		s.removeShellLocked(sh, ErrIdleTimeout, FaultInvalidSelectors(sh.id))
		s.stats.add(func(st *Stats) { st.ShellsReaped++ })
	}
}

// removeShellLocked forgets a shell and terminates its commands with cause;
// pending requests for them answer f (nil: they see the server closing).
// s.mu must be held.
func (s *Server) removeShellLocked(sh *shell, cause error, f *Fault) {
	delete(s.shells, sh.id)
	if q := s.perUser[sh.userKey]; q != nil {
		q.shells--
		q.operations -= len(sh.commands)
		if q.shells <= 0 && q.operations <= 0 {
			delete(s.perUser, sh.userKey)
		}
	}
	cmds := sh.commands
	sh.commands = map[string]*command{}
	for _, c := range cmds {
		c.terminate(cause, f)
	}
	if sh.poolCmd != nil {
		sh.poolCmd.terminate(cause, f)
	}
	n := len(s.shells)
	s.stats.add(func(st *Stats) { st.CurrentShells = n })
}

package graphsim

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/easconnector/easconnector/loadtest/population"
)

// Defaults for Options.
const (
	DefaultTenantID   = "8f3d1c2e-5b7a-4e69-9c1d-0a2b3c4d5e6f"
	DefaultClientID   = "0b5e9d4a-7c21-4f3e-8a6b-1d2c3e4f5a6b"
	DefaultPageSize   = 1000 // Graph's default and maximum page of managedDevices
	DefaultTokenTTL   = time.Hour
	DefaultSessionTTL = 15 * time.Minute

	maxDevicePage = 1000
	maxMemberPage = 999 // directory objects: default 100, maximum 999
	defMemberPage = 100
)

// Options configure a Server. The zero value of each field takes the default
// noted beside it.
type Options struct {
	TenantID     string // "" → DefaultTenantID; the only tenant the token endpoint knows
	ClientID     string // "" → DefaultClientID; the only registered application
	ClientSecret string // the accepted client secret; "" rejects every secret
	// Certificate verifies client_assertion JWTs (RS256, x5t = its SHA-1
	// thumbprint); nil rejects every assertion.
	Certificate *x509.Certificate
	PageSize    int           // managedDevices page when $top is absent; 0 → 1000, at most 1000
	TokenTTL    time.Duration // access token lifetime (expires_in); 0 → 1 h
	SessionTTL  time.Duration // how long a nextLink stays valid; 0 → 15 min
}

func (o Options) withDefaults() Options {
	if o.TenantID == "" {
		o.TenantID = DefaultTenantID
	}
	if o.ClientID == "" {
		o.ClientID = DefaultClientID
	}
	if o.PageSize <= 0 {
		o.PageSize = DefaultPageSize
	}
	o.PageSize = min(o.PageSize, maxDevicePage)
	if o.TokenTTL <= 0 {
		o.TokenTTL = DefaultTokenTTL
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	return o
}

// Endpoint names used as RequestKey.Endpoint.
const (
	EndpointToken   = "token"
	EndpointDevices = "managedDevices"
	EndpointMembers = "transitiveMembers"
	EndpointOther   = "other"
)

// RequestKey counts requests by endpoint and answered HTTP status; Status 0
// means the connection was reset (outage).
type RequestKey struct {
	Endpoint string
	Status   int
}

// Server is a simulated Graph and token endpoint. Its methods are safe for
// concurrent use.
type Server struct {
	opts Options
	mux  *http.ServeMux

	mu        sync.Mutex
	pop       *population.Population
	ver       *version // what new listings read; replaced by Update
	cursors   map[string]cursor
	nextSweep time.Time
	tokens    map[string]time.Time // access token → expiry
	issued    int
	requests  map[RequestKey]int
	f         faults
	grants    Grants

	srv       *http.Server
	done      chan struct{}
	closed    chan struct{} // closed by Close: handlers still running end at once
	closeOnce sync.Once
	inflight  atomic.Int32 // requests being answered, for tests
}

// version is an immutable view of the population that listings read.
type version struct {
	devices []population.MDMRecord
	shared  bool // a listing holds devices: Update must not mutate them in place
	groups  map[string][]member
	pop     *population.Population // for building groups lazily; read under Server.mu
}

// member is one transitive member of a group: a user, or a nested group
// (typ "#microsoft.graph.group"), which the directory lists too.
type member struct {
	typ, id, upn, mail, displayName string
}

// Grants are the application permissions the simulated tenant granted to
// the app. The zero value grants everything the connector uses.
type Grants struct {
	// NoDevices: DeviceManagementManagedDevices.Read.All is missing, so
	// managedDevices answers 403 as Intune does.
	NoDevices bool
	// NoMembers: GroupMember.Read.All is missing, so transitiveMembers
	// answers 403 Authorization_RequestDenied.
	NoMembers bool
	// NoUsers: User.Read.All is missing (the app holds only
	// GroupMember.Read.All), so user members come back with only
	// @odata.type and id, every other property null. Microsoft Graph
	// permissions overview, "Limited information returned for
	// inaccessible member objects"
	// (microsoftgraph/microsoft-graph-docs-contrib,
	// concepts/permissions-overview.md).
	NoUsers bool
}

// SetGrants sets the app's permissions for the requests that follow.
func (s *Server) SetGrants(g Grants) {
	s.mu.Lock()
	s.grants = g
	s.mu.Unlock()
}

func (s *Server) grantsNow() Grants {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grants
}

// New returns a Server serving pop. From now on the Server owns pop: change
// it only through Update.
func New(pop *population.Population, opts Options) *Server {
	s := &Server{
		opts:     opts.withDefaults(),
		pop:      pop,
		cursors:  make(map[string]cursor),
		tokens:   make(map[string]time.Time),
		requests: make(map[RequestKey]int),
		closed:   make(chan struct{}),
	}
	s.ver = &version{devices: pop.MDM, pop: pop}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", s.handleToken)
	s.mux.HandleFunc("GET /v1.0/deviceManagement/managedDevices", s.graph(EndpointDevices, s.handleDevices))
	s.mux.HandleFunc("GET /v1.0/groups/{id}/transitiveMembers", s.graph(EndpointMembers, s.handleMembers))
	s.mux.HandleFunc("GET /v1.0/groups/{id}/transitiveMembers/microsoft.graph.user", s.graph(EndpointMembers, s.handleUserMembers))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeGraphError(w, r, http.StatusNotFound, "Request_BadRequest",
			fmt.Sprintf("Invalid request: resource %q is not served by graphsim.", r.URL.Path))
	})
	return s
}

// Update runs fn on the population under the server's lock, then publishes
// the result to new listings. Listings already being paged keep reading the
// version they started with.
func (s *Server) Update(fn func(*population.Population)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ver.shared {
		// A listing reads the current slice: give the population its own
		// copy so fn's in-place edits (Churn flips and removes records in
		// place) cannot reach it.
		s.pop.MDM = slices.Clone(s.pop.MDM)
	}
	fn(s.pop)
	s.ver = &version{devices: s.pop.MDM, pop: s.pop}
}

// ServeHTTP serves the token endpoint and the Graph API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	rec := &recorder{ResponseWriter: w}
	defer func() { s.count(endpointOf(r.URL.Path), rec.status) }()
	f := s.faultsNow()
	select {
	case <-s.closed:
		f.outage = true
	default:
	}
	if f.outage {
		rec.reset()
		return
	}
	if f.latency > 0 {
		t := time.NewTimer(f.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			rec.reset()
			return
		case <-s.closed:
			t.Stop()
			rec.reset()
			return
		}
	}
	s.mux.ServeHTTP(rec, r)
}

func endpointOf(path string) string {
	switch {
	case strings.HasSuffix(path, "/oauth2/v2.0/token"):
		return EndpointToken
	case path == "/v1.0/deviceManagement/managedDevices":
		return EndpointDevices
	case strings.HasPrefix(path, "/v1.0/groups/") &&
		(strings.HasSuffix(path, "/transitiveMembers") || strings.HasSuffix(path, "/transitiveMembers/microsoft.graph.user")):
		return EndpointMembers
	}
	return EndpointOther
}

func (s *Server) count(endpoint string, status int) {
	s.mu.Lock()
	s.requests[RequestKey{endpoint, status}]++
	s.mu.Unlock()
}

// Requests returns how many requests were answered, by endpoint and status.
func (s *Server) Requests() map[RequestKey]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.requests)
}

// RequestCount returns the number of requests to endpoint answered with
// status; status < 0 counts every status.
func (s *Server) RequestCount(endpoint string, status int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, v := range s.requests {
		if k.Endpoint == endpoint && (status < 0 || k.Status == status) {
			n += v
		}
	}
	return n
}

// TokensIssued returns how many access tokens the token endpoint issued.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued
}

// RevokeTokens invalidates every access token issued so far, as a
// credential rotation or a revoked consent would.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	clear(s.tokens)
	s.mu.Unlock()
}

// Start serves on a new listener on 127.0.0.1 and returns its base URL
// (http://127.0.0.1:port), which is both the authority and the Graph URL.
func (s *Server) Start() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return "", errors.New("graphsim: already started")
	}
	select {
	case <-s.closed:
		return "", errors.New("graphsim: closed")
	default:
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("graphsim: listen: %w", err)
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln) // returns http.ErrServerClosed after Close
	}()
	return "http://" + ln.Addr().String(), nil
}

// Close stops serving: it closes the listener started by Start and its
// connections, waits for the serving goroutine, and makes any request still
// being answered (a latency fault, a connection accepted at the last moment)
// end at once with a reset. The Server answers nothing afterwards, also when
// it is mounted as a handler elsewhere. Close is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	<-done
}

// recorder notes the status a handler answered with.
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// reset drops the connection with a TCP RST, as a failed load balancer or a
// firewall would; the client sees "connection reset by peer".
func (r *recorder) reset() {
	r.status = 0
	hj, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b)
}

func newGUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

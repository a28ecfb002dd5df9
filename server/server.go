package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/easconnector/easconnector/internal/hostaddr"
	"github.com/easconnector/easconnector/internal/secret"
)

// Defaults for Options.
const (
	DefaultListen          = "127.0.0.1:8443" // config.DefaultListen too
	DefaultShutdownTimeout = 10 * time.Second
	DefaultBackendTimeout  = 30 * time.Second

	// MaxBodyBytes bounds request bodies.
	MaxBodyBytes = 64 << 10
	// MinTokenLength bounds Options.Token from below.
	MinTokenLength = 16
)

// DefaultDecisions and DefaultReasons are the values GET /api/v1/devices
// accepts for decision and reason: the policy table's (DESIGN §4) plus
// AdminOverride. Options.Decisions and Options.Reasons replace them.
var (
	DefaultDecisions = []string{"Allow", "Block", "Default"}
	DefaultReasons   = []string{"Disabled", "Exempt", "NotTargeted", "ScopeUnknown", "InvalidDeviceId", "Compliant", "PlatformRule",
		"NotCompliant", "PendingEvaluation", "Stale", "UserMismatch", "NotEnrolled", "AdminOverride", "PartnershipGone"}
)

// Options configure a Server.
type Options struct {
	// Listen is the TCP address (DefaultListen: loopback only). It counts
	// as loopback when its host is a literal loopback address or a name
	// every address of which (as Resolver answers) is loopback; the server
	// then binds to that address.
	Listen string
	// Resolver resolves a host name in Listen (net.DefaultResolver).
	Resolver hostaddr.Resolver
	// Token is the admin bearer token: every /api/v1 endpoint, including
	// the mutating ones (POST). ReadToken is the read-only token: the GETs
	// under /api/v1 and the status page. Each has at least MinTokenLength
	// characters and they differ. Without Token the mutating endpoints
	// answer 403; without either, all of /api/v1 does.
	Token, ReadToken secret.String
	// AllowedHosts are host names, besides Listen's host (and localhost
	// when Listen is loopback), that the Host header may carry; any other
	// name is refused with 421, which defeats DNS rebinding.
	AllowedHosts []string
	// LoopbackPublicCounts shows the status page's aggregate view (status,
	// syncs, counts by decision, servers; no mailbox, user, DeviceId,
	// change or error text) to requests without a token, when Listen is
	// loopback. New refuses it for any other Listen. Off: the status page
	// needs a token (Bearer, or Basic with the token as password).
	LoopbackPublicCounts bool
	// TLSCert and TLSKey are PEM files; both or neither.
	TLSCert, TLSKey string
	// Backend serves the data; required.
	Backend Backend
	// Metrics are written at /metrics, in order, after the server's own.
	// New turns on HELP and TYPE lines (metrics.ExposeMetadata), a global
	// setting of the metrics package.
	Metrics []*metrics.Set
	// ProcessMetrics adds go_* and process_* metrics to /metrics.
	ProcessMetrics bool
	// Decisions and Reasons are the values the devices endpoint accepts
	// (DefaultDecisions, DefaultReasons).
	Decisions, Reasons []string
	// Logger receives request errors (discarded when nil).
	Logger *slog.Logger
	// Version is shown on the status page and in the status JSON.
	Version string
	// Location is the time zone of times on the status page (time.Local).
	Location *time.Location
	// ShutdownTimeout bounds the graceful shutdown (DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// BackendTimeout bounds each Backend call (DefaultBackendTimeout).
	BackendTimeout time.Duration
}

// Server is the admin HTTP server. Build it with New; it is safe for
// concurrent use.
type Server struct {
	opts      Options
	tokenHash *[sha256.Size]byte // nil: mutating endpoints disabled
	readHash  *[sha256.Size]byte // nil: no read-only token
	listen    listenInfo
	log       *slog.Logger
	handler   http.Handler
	page      *pageRenderer
	decisions map[string]string // lower case → canonical
	reasons   map[string]string

	set          *metrics.Set
	requests     map[string]map[string]*metrics.Counter // handler → code class
	authFailures *metrics.Counter
	undescribed  sync.Map // metric families logged as missing from metricdoc
}

// constantTimeCompare compares token digests; a variable so that a test can
// check that it is what decides.
var constantTimeCompare = subtle.ConstantTimeCompare

// New checks opts and builds the server.
func New(opts Options) (*Server, error) {
	if opts.Listen == "" {
		opts.Listen = DefaultListen
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Location == nil {
		opts.Location = time.Local
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if opts.BackendTimeout == 0 {
		opts.BackendTimeout = DefaultBackendTimeout
	}
	if opts.Decisions == nil {
		opts.Decisions = DefaultDecisions
	}
	if opts.Reasons == nil {
		opts.Reasons = DefaultReasons
	}
	switch {
	case opts.Backend == nil:
		return nil, errors.New("server: Backend is nil")
	case (opts.TLSCert == "") != (opts.TLSKey == ""):
		return nil, errors.New("server: TLSCert and TLSKey go together")
	case !opts.Token.IsZero() && opts.Token.Reveal() == opts.ReadToken.Reveal():
		return nil, errors.New("server: ReadToken must differ from Token")
	}
	for name, t := range map[string]secret.String{"Token": opts.Token, "ReadToken": opts.ReadToken} {
		switch {
		case !t.IsZero() && t.Len() < MinTokenLength:
			return nil, fmt.Errorf("server: %s must be at least %d characters, got %d", name, MinTokenLength, t.Len())
		case strings.ContainsFunc(t.Reveal(), func(r rune) bool { return r <= ' ' || r == 0x7f }):
			return nil, fmt.Errorf("server: %s must not contain spaces or control characters", name)
		}
	}
	for i, h := range opts.AllowedHosts {
		if !hostaddr.Valid(h) {
			return nil, fmt.Errorf("server: AllowedHosts[%d]: %q is not a host name or IP address", i, h)
		}
	}
	li, err := resolveListen(opts)
	if err != nil {
		return nil, err
	}
	if opts.LoopbackPublicCounts && !li.loopback {
		return nil, fmt.Errorf("server: LoopbackPublicCounts: Listen %q is not loopback only", opts.Listen)
	}
	if opts.TLSCert != "" {
		// Loaded again by Serve; checked here so that a bad path or a key
		// that does not match fails at start-up with the field named.
		if _, err := tls.LoadX509KeyPair(opts.TLSCert, opts.TLSKey); err != nil {
			return nil, fmt.Errorf("server: TLSCert %s / TLSKey %s: %w", opts.TLSCert, opts.TLSKey, err)
		}
	}
	s := &Server{
		opts:      opts,
		log:       opts.Logger,
		decisions: canonical(opts.Decisions),
		reasons:   canonical(opts.Reasons),
		set:       metrics.NewSet(),
		tokenHash: tokenDigest(opts.Token),
		readHash:  tokenDigest(opts.ReadToken),
		listen:    li,
	}
	page, err := newPageRenderer()
	if err != nil {
		return nil, err
	}
	s.page = page
	metrics.ExposeMetadata(true)
	s.initMetrics()
	s.handler = s.routes()
	return s, nil
}

func canonical(values []string) map[string]string {
	m := make(map[string]string, len(values))
	for _, v := range values {
		m[strings.ToLower(v)] = v
	}
	return m
}

// handlerNames label the request counter.
var handlerNames = []string{"page", "signin", "metrics", "healthz", "readyz", "status", "syncs", "devices", "plan", "approve", "other"}

func (s *Server) initMetrics() {
	s.requests = map[string]map[string]*metrics.Counter{}
	for _, h := range handlerNames {
		s.requests[h] = map[string]*metrics.Counter{}
		for _, c := range []string{"2xx", "3xx", "4xx", "5xx"} {
			s.requests[h][c] = s.set.NewCounter(fmt.Sprintf(`easconnector_server_requests_total{handler=%q,code=%q}`, h, c))
		}
	}
	s.authFailures = s.set.NewCounter("easconnector_server_auth_failures_total")
}

// Addr returns the address ListenAndServe listens on: Options.Listen, with
// a loopback name replaced by the address it was checked to resolve to.
// A caller that listens itself and passes the listener to Serve uses it.
func (s *Server) Addr() string { return s.listen.bind }

// Metrics returns the server's own metrics set (already written at
// /metrics; do not pass it in Options.Metrics).
func (s *Server) Metrics() *metrics.Set { return s.set }

// Handler returns the HTTP handler, for tests and for embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// httpServer returns an http.Server with timeouts that keep a slow or
// hostile client from holding connections.
func (s *Server) httpServer() *http.Server {
	return &http.Server{
		Addr:              s.opts.Listen,
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      s.opts.BackendTimeout + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    MaxBodyBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// ListenAndServe listens on Options.Listen and serves until ctx ends, then
// shuts down gracefully within ShutdownTimeout. It returns nil after a
// clean shutdown.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.listen.bind)
	if err != nil {
		return fmt.Errorf("admin server: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln (closing it) until ctx ends; see ListenAndServe.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := s.httpServer()
	errc := make(chan error, 1)
	go func() {
		if s.opts.TLSCert != "" {
			errc <- hs.ServeTLS(ln, s.opts.TLSCert, s.opts.TLSKey)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	s.log.Info("admin server listening", "addr", ln.Addr().String(), "tls", s.opts.TLSCert != "",
		"loopback", s.listen.loopback, "mutating_endpoints", s.tokenHash != nil, "read_token", s.readHash != nil,
		"public_counts", s.opts.LoopbackPublicCounts)
	if s.tokenHash == nil && s.readHash == nil {
		s.log.Warn("admin API and status page closed: no token is configured (set server.token_file or server.read_token_file); /metrics, /healthz and /readyz stay open")
	}
	select {
	case err := <-errc:
		return fmt.Errorf("admin server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.ShutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	if err != nil {
		hs.Close()
		err = fmt.Errorf("admin server shutdown: %w", err)
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = fmt.Errorf("admin server: %w", serr)
	}
	return err
}

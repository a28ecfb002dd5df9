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
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/easconnector/easconnector/internal/secret"
)

// Defaults for Options.
const (
	DefaultListen          = "127.0.0.1:8780"
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
	DefaultReasons   = []string{"Disabled", "Exempt", "NotTargeted", "InvalidDeviceId", "Compliant", "PlatformRule",
		"NotCompliant", "PendingEvaluation", "Stale", "UserMismatch", "NotEnrolled", "AdminOverride"}
)

// Options configure a Server.
type Options struct {
	// Listen is the TCP address (DefaultListen: loopback only).
	Listen string
	// Token is the bearer token that mutating endpoints require (at least
	// MinTokenLength characters). Empty disables them: they answer 403.
	Token secret.String
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
	log       *slog.Logger
	handler   http.Handler
	page      *pageRenderer
	decisions map[string]string // lower case → canonical
	reasons   map[string]string

	set          *metrics.Set
	requests     map[string]map[string]*metrics.Counter // handler → code class
	authFailures *metrics.Counter
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
	case !opts.Token.IsZero() && opts.Token.Len() < MinTokenLength:
		return nil, fmt.Errorf("server: Token must be at least %d characters, got %d", MinTokenLength, opts.Token.Len())
	case strings.ContainsFunc(opts.Token.Reveal(), func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return nil, errors.New("server: Token must not contain spaces or control characters")
	case (opts.TLSCert == "") != (opts.TLSKey == ""):
		return nil, errors.New("server: TLSCert and TLSKey go together")
	}
	if _, _, err := net.SplitHostPort(opts.Listen); err != nil {
		return nil, fmt.Errorf("server: Listen %q: %w", opts.Listen, err)
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
	}
	if !opts.Token.IsZero() {
		h := sha256.Sum256([]byte(opts.Token.Reveal()))
		s.tokenHash = &h
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
var handlerNames = []string{"page", "metrics", "healthz", "readyz", "status", "syncs", "devices", "plan", "approve", "other"}

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
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.opts.Listen)
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
	s.log.Info("admin server listening", "addr", ln.Addr().String(), "tls", s.opts.TLSCert != "", "mutating_endpoints", s.tokenHash != nil)
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

package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/metrics"

	"github.com/easconnector/easconnector/internal/metricdoc"
)

// Bounds of list parameters.
const (
	DefaultDeviceLimit = 100
	MaxLimit           = 1000
	DefaultSyncLimit   = 20
	maxOffset          = 100_000_000
	maxUserLength      = 320 // longest e-mail address
)

var planIDRe = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// Probes and scrapers reach /healthz, /readyz and /metrics under any
	// name (they are open and carry no personal data); everything else is
	// Host-checked.
	open := map[string]bool{"metrics": true, "healthz": true, "readyz": true}
	handle := func(pattern, name string, h http.HandlerFunc) {
		counters := s.requests[name]
		if !open[name] {
			h = s.hostChecked(h)
		}
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
			h(rec, r)
			counters[strconv.Itoa(rec.code/100)+"xx"].Inc()
		})
	}
	handle("/{$}", "page", s.methods(map[string]http.HandlerFunc{"GET": s.handlePage}))
	handle("/metrics", "metrics", s.methods(map[string]http.HandlerFunc{"GET": s.handleMetrics}))
	handle("/healthz", "healthz", s.methods(map[string]http.HandlerFunc{"GET": s.handleHealthz}))
	handle("/readyz", "readyz", s.methods(map[string]http.HandlerFunc{"GET": s.handleReadyz}))
	handle("/signin", "signin", s.methods(map[string]http.HandlerFunc{"GET": s.handleSignin}))
	handle("/api/v1/status", "status", s.methods(map[string]http.HandlerFunc{"GET": s.reading(s.handleStatus)}))
	handle("/api/v1/syncs", "syncs", s.methods(map[string]http.HandlerFunc{"GET": s.reading(s.handleSyncs), "POST": s.mutating(s.handleTriggerSync)}))
	handle("/api/v1/devices", "devices", s.methods(map[string]http.HandlerFunc{"GET": s.reading(s.handleDevices)}))
	handle("/api/v1/plans/{id}", "plan", s.methods(map[string]http.HandlerFunc{"GET": s.reading(s.handlePlan)}))
	handle("/api/v1/plans/{id}/approve", "approve", s.methods(map[string]http.HandlerFunc{"POST": s.mutating(s.handleApprove)}))
	handle("/", "other", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: %s (see /api/v1/status, /api/v1/syncs, /api/v1/devices, /api/v1/plans/{id}, /metrics, /healthz, /readyz)", r.URL.Path)
	})
	return securityHeaders(mux)
}

// securityHeaders sets the headers every answer carries.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		hd.Set("X-Frame-Options", "DENY")
		h.ServeHTTP(w, r)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code    int
	written bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.written {
		r.code, r.written = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.written = true
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// methods dispatches on the method (HEAD is served as GET) and answers 405
// with Allow and a JSON error otherwise.
func (s *Server) methods(byMethod map[string]http.HandlerFunc) http.HandlerFunc {
	var allowed []string
	for _, m := range []string{"GET", "POST"} {
		if byMethod[m] != nil {
			allowed = append(allowed, m)
			if m == "GET" {
				allowed = append(allowed, "HEAD")
			}
		}
	}
	allow := strings.Join(allowed, ", ")
	return func(w http.ResponseWriter, r *http.Request) {
		m := r.Method
		if m == http.MethodHead {
			m = http.MethodGet
		}
		h := byMethod[m]
		if h == nil {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, "method %s not allowed on %s; allowed: %s", r.Method, r.URL.Path, allow)
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		writeError(w, http.StatusInternalServerError, "encode response: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	b, _ := json.Marshal(errorBody{Error: fmt.Sprintf(format, args...)})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// writeBackendError maps a Backend error onto a status.
func (s *Server) writeBackendError(w http.ResponseWriter, r *http.Request, op string, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, ErrBusy), errors.Is(err, context.DeadlineExceeded):
		code = http.StatusServiceUnavailable
	}
	if code >= 500 {
		s.log.Error("admin request", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, code, "%s: %v", op, err)
}

func (s *Server) backendCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.opts.BackendTimeout)
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.backendCtx(r)
	defer cancel()
	if err := s.opts.Backend.Ready(ctx); err != nil {
		writeError(w, http.StatusServiceUnavailable, "not ready: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) status(ctx context.Context) Status {
	st := s.opts.Backend.Status(ctx)
	st.Version = s.opts.Version
	if st.Servers == nil {
		st.Servers = []ServerState{}
	}
	return st
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	if !noParams(w, r) {
		return
	}
	ctx, cancel := s.backendCtx(r)
	defer cancel()
	writeJSON(w, http.StatusOK, s.status(ctx))
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	s.writeMetrics(w)
}

// writeMetrics writes the server's set, the configured sets and, when
// enabled, process metrics, in the Prometheus text format with HELP and
// TYPE lines. The metrics package writes HELP lines without text, so they
// are filled in from internal/metricdoc's catalog, which docs/metrics.md
// is generated from too; a family missing from it is logged once.
func (s *Server) writeMetrics(w io.Writer) {
	var buf bytes.Buffer
	s.set.WritePrometheus(&buf)
	for _, set := range s.opts.Metrics {
		set.WritePrometheus(&buf)
	}
	if s.opts.ProcessMetrics {
		metrics.WriteProcessMetrics(&buf)
	}
	missing, _ := metricdoc.Fill(w, buf.Bytes())
	for _, name := range missing {
		if _, logged := s.undescribed.LoadOrStore(name, true); !logged {
			s.log.Warn("metric family without a description in internal/metricdoc", "family", name)
		}
	}
}

// query checks the query string: only known parameters, each at most once.
func query(r *http.Request, known ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("query string: %v", err)
	}
	for k, v := range q {
		if !contains(known, k) {
			if len(known) == 0 {
				return nil, fmt.Errorf("unknown parameter %q: this endpoint takes none", k)
			}
			return nil, fmt.Errorf("unknown parameter %q; known: %s", k, strings.Join(known, ", "))
		}
		if len(v) > 1 {
			return nil, fmt.Errorf("parameter %s given %d times", k, len(v))
		}
	}
	return q, nil
}

func noParams(w http.ResponseWriter, r *http.Request) bool {
	if _, err := query(r); err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return false
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// intParam parses an optional integer parameter within [lo, hi].
func intParam(q url.Values, name string, def, lo, hi int) (int, error) {
	v := q.Get(name)
	if v == "" {
		if _, given := q[name]; given {
			return 0, fmt.Errorf("parameter %s: empty; want an integer between %d and %d", name, lo, hi)
		}
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("parameter %s: %q is not an integer between %d and %d", name, v, lo, hi)
	}
	return n, nil
}

func (s *Server) handleSyncs(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "limit")
	if err == nil {
		var limit int
		if limit, err = intParam(q, "limit", DefaultSyncLimit, 1, MaxLimit); err == nil {
			ctx, cancel := s.backendCtx(r)
			defer cancel()
			syncs := s.opts.Backend.Syncs(ctx, limit)
			if syncs == nil {
				syncs = []SyncResult{}
			}
			writeJSON(w, http.StatusOK, map[string]any{"syncs": syncs})
			return
		}
	}
	writeError(w, http.StatusBadRequest, "%v", err)
}

// TriggerRequest is the body of POST /api/v1/syncs.
type TriggerRequest struct {
	Kind string `json:"kind"`
}

// TriggerResponse answers POST /api/v1/syncs.
type TriggerResponse struct {
	ID        string `json:"id"`
	Coalesced bool   `json:"coalesced"`
}

// ApproveResponse answers POST /api/v1/plans/{id}/approve.
type ApproveResponse struct {
	SyncID string `json:"syncId"`
}

func (s *Server) handleTriggerSync(w http.ResponseWriter, r *http.Request) {
	if !noParams(w, r) {
		return
	}
	// curl -d sends application/x-www-form-urlencoded and some clients
	// text/plain: the body is read as JSON whatever those say (only a JSON
	// object is accepted). This opens no cross-site path: mutating takes a
	// Bearer token only, which a browser never adds by itself.
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/x-www-form-urlencoded" || mt == "text/plain" {
		r.Header.Del("Content-Type")
	}
	var req TriggerRequest
	if !decodeBody(w, r, &req) {
		return
	}
	kind := strings.ToLower(req.Kind)
	if kind != "quick" && kind != "full" {
		writeError(w, http.StatusBadRequest, `kind: %q is not "quick" or "full"`, req.Kind)
		return
	}
	ctx, cancel := s.backendCtx(r)
	defer cancel()
	id, coalesced, err := s.opts.Backend.TriggerSync(ctx, kind)
	if err != nil {
		s.writeBackendError(w, r, "trigger "+kind+" sync", err)
		return
	}
	s.log.Info("sync requested over HTTP", "kind", kind, "id", id, "coalesced", coalesced, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusAccepted, TriggerResponse{ID: id, Coalesced: coalesced})
}

// decodeBody reads one JSON object with known fields only.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, `Content-Type %q: send a JSON object such as {"kind":"quick"} as application/json`, ct)
		return false
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err == nil {
		return true
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, "request body larger than %d bytes", mbe.Limit)
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, `body: empty; want {"kind":"quick"} or {"kind":"full"}`)
	default:
		writeError(w, http.StatusBadRequest, `body: %v; want a JSON object such as {"kind":"quick"}`, err)
	}
	return false
}

func (s *Server) handleDevices(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "decision", "reason", "user", "offset", "limit")
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	dq, err := s.deviceQuery(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	ctx, cancel := s.backendCtx(r)
	defer cancel()
	page, err := s.opts.Backend.Devices(ctx, dq)
	if err != nil {
		s.writeBackendError(w, r, "list devices", err)
		return
	}
	if page.Devices == nil {
		page.Devices = []DeviceRow{}
	}
	page.Offset, page.Limit = dq.Offset, dq.Limit
	if next := dq.Offset + len(page.Devices); len(page.Devices) > 0 && next < page.Total {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("offset", strconv.Itoa(next))
		nq.Set("limit", strconv.Itoa(dq.Limit))
		page.Next = "/api/v1/devices?" + nq.Encode()
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Server) deviceQuery(q url.Values) (DeviceQuery, error) {
	var dq DeviceQuery
	var err error
	if v := q.Get("decision"); v != "" {
		if dq.Decision = s.decisions[strings.ToLower(v)]; dq.Decision == "" {
			return dq, fmt.Errorf("parameter decision: %q is not one of %s", v, strings.Join(s.opts.Decisions, ", "))
		}
	}
	if v := q.Get("reason"); v != "" {
		if dq.Reason = s.reasons[strings.ToLower(v)]; dq.Reason == "" {
			return dq, fmt.Errorf("parameter reason: %q is not one of %s", v, strings.Join(s.opts.Reasons, ", "))
		}
	}
	if v := q.Get("user"); v != "" {
		if len(v) > maxUserLength || strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return dq, fmt.Errorf("parameter user: want a mailbox address or UPN of at most %d characters without control characters", maxUserLength)
		}
		dq.User = v
	}
	if dq.Offset, err = intParam(q, "offset", 0, 0, maxOffset); err != nil {
		return dq, err
	}
	if dq.Limit, err = intParam(q, "limit", DefaultDeviceLimit, 1, MaxLimit); err != nil {
		return dq, err
	}
	return dq, nil
}

func planID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !planIDRe.MatchString(id) {
		writeError(w, http.StatusBadRequest, "plan id %q: want 1 to 128 letters, digits or ._:-", id)
		return "", false
	}
	return id, true
}

func (s *Server) handlePlan(w http.ResponseWriter, r *http.Request) {
	id, ok := planID(w, r)
	if !ok || !noParams(w, r) {
		return
	}
	ctx, cancel := s.backendCtx(r)
	defer cancel()
	p, err := s.opts.Backend.Plan(ctx, id)
	if err == nil && p == nil {
		err = fmt.Errorf("plan %s: %w", id, ErrNotFound)
	}
	if err != nil {
		s.writeBackendError(w, r, "get plan "+id, err)
		return
	}
	if p.Changes == nil {
		p.Changes = []PlanChange{}
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) handleApprove(w http.ResponseWriter, r *http.Request) {
	id, ok := planID(w, r)
	if !ok || !noParams(w, r) {
		return
	}
	// The body is not used, but it is read to its bounded end, so that an
	// oversized one is refused.
	if n, err := io.Copy(io.Discard, r.Body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "request body larger than %d bytes", mbe.Limit)
			return
		}
		writeError(w, http.StatusBadRequest, "body: %v (read %d bytes)", err, n)
		return
	}
	ctx, cancel := s.backendCtx(r)
	defer cancel()
	syncID, err := s.opts.Backend.ApprovePlan(ctx, id)
	if err != nil {
		s.writeBackendError(w, r, "approve plan "+id, err)
		return
	}
	s.log.Info("plan approved over HTTP", "plan", id, "sync", syncID, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusAccepted, ApproveResponse{SyncID: syncID})
}

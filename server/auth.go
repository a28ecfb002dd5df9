package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/easconnector/easconnector/internal/hostaddr"
	"github.com/easconnector/easconnector/internal/secret"
)

// role is what a request's credential may do.
type role int

const (
	roleNone  role = iota
	roleRead       // the read-only token: GETs
	roleAdmin      // the admin token: everything
)

// authResult says why a request has no role.
type authResult int

const (
	authOK authResult = iota
	authMissing
	authInvalid
)

// tokenDigest hashes a token for comparison; nil for an empty one.
func tokenDigest(t secret.String) *[sha256.Size]byte {
	if t.IsZero() {
		return nil
	}
	h := sha256.Sum256([]byte(t.Reveal()))
	return &h
}

// credential returns the token a request carries: a Bearer token, or with
// basic also the password of Basic credentials (the status page, where a
// browser cannot send a Bearer header on navigation; the user name is
// ignored).
func credential(r *http.Request, basic bool) (string, bool) {
	scheme, rest, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok {
		return "", false
	}
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		tok := strings.TrimSpace(rest)
		return tok, tok != ""
	case basic && strings.EqualFold(scheme, "Basic"):
		_, pw, ok := r.BasicAuth()
		return pw, ok && pw != ""
	}
	return "", false
}

// authenticate returns the request's role. Each configured token's digest
// is compared in constant time, every one of them whatever the outcome, so
// that neither content, length nor which token matched shows in timing.
func (s *Server) authenticate(r *http.Request, basic bool) (role, authResult) {
	tok, ok := credential(r, basic)
	if !ok {
		return roleNone, authMissing
	}
	sum := sha256.Sum256([]byte(tok))
	admin, read := 0, 0
	if s.tokenHash != nil {
		admin = constantTimeCompare(sum[:], s.tokenHash[:])
	}
	if s.readHash != nil {
		read = constantTimeCompare(sum[:], s.readHash[:])
	}
	switch {
	case admin == 1:
		return roleAdmin, authOK
	case read == 1:
		return roleRead, authOK
	}
	return roleNone, authInvalid
}

// refuse answers a request without a usable Bearer token.
func (s *Server) refuse(w http.ResponseWriter, res authResult) {
	s.authFailures.Inc()
	if res == authMissing {
		w.Header().Set("WWW-Authenticate", `Bearer realm="easconnector"`)
		writeError(w, http.StatusUnauthorized, "missing bearer token: send Authorization: Bearer <token> (the admin or the read-only token)")
		return
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="easconnector", error="invalid_token"`)
	writeError(w, http.StatusUnauthorized, "invalid token")
}

// reading requires either token, as Bearer or (so that the status page's
// links to the JSON work in a browser that signed in there) as the Basic
// password. Reads change nothing, and a cross-site page cannot read the
// answer, so Basic credentials a browser replays on its own do no harm
// here; mutating takes Bearer only.
func (s *Server) reading(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.tokenHash == nil && s.readHash == nil {
			writeError(w, http.StatusForbidden, "the API is disabled: no token is configured (set the server's token or read-only token in the configuration)")
			return
		}
		if _, res := s.authenticate(r, true); res != authOK {
			s.refuse(w, res)
			return
		}
		h(w, r)
	}
}

// mutating requires the admin token, compared in constant time over
// SHA-256 digests (so neither content nor length leaks through timing),
// and bounds the body.
func (s *Server) mutating(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.tokenHash == nil {
			writeError(w, http.StatusForbidden, "mutating endpoints are disabled: no admin token is configured (set the server token in the configuration to enable them)")
			return
		}
		rl, res := s.authenticate(r, false)
		if res != authOK {
			s.refuse(w, res)
			return
		}
		if rl != roleAdmin {
			s.authFailures.Inc()
			writeError(w, http.StatusForbidden, "the read-only token cannot change anything: use the admin token")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		h(w, r)
	}
}

// listenInfo is what New learns from Options.Listen.
type listenInfo struct {
	bind     string          // address to listen on: a resolved loopback name is pinned to its address
	loopback bool            // every address the server listens on is loopback
	hosts    map[string]bool // names the Host header may carry (IP literals always may)
}

// resolveListen decides whether Listen is loopback only: a literal
// loopback address, or a name every address of which is loopback (then the
// server binds to the first of them, so that the name cannot point
// elsewhere between the check and the bind). A name with a non-loopback
// address is served as given and treated as reachable from the network.
func resolveListen(o Options) (listenInfo, error) {
	host, port, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return listenInfo{}, fmt.Errorf("server: Listen %q: %w", o.Listen, err)
	}
	li := listenInfo{bind: o.Listen, hosts: map[string]bool{}}
	for _, h := range o.AllowedHosts {
		li.hosts[hostaddr.Canonical(h)] = true
	}
	switch ip := net.ParseIP(host); {
	case ip != nil:
		li.loopback = ip.IsLoopback()
		if ip.IsUnspecified() {
			// All interfaces: the machine's own name is what clients use.
			if hn, err := os.Hostname(); err == nil && hn != "" {
				li.hosts[hostaddr.Canonical(hn)] = true
				short, _, _ := strings.Cut(hn, ".")
				li.hosts[hostaddr.Canonical(short)] = true
			}
		}
	case host == "":
		if hn, err := os.Hostname(); err == nil && hn != "" {
			li.hosts[hostaddr.Canonical(hn)] = true
		}
	default:
		li.hosts[hostaddr.Canonical(host)] = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ips, err := hostaddr.Loopback(ctx, o.Resolver, host)
		switch {
		case err == nil:
			li.loopback = true
			li.bind = net.JoinHostPort(ips[0].String(), port)
		case !errors.Is(err, hostaddr.ErrNotLoopback):
			return listenInfo{}, fmt.Errorf("server: Listen %q: %w", o.Listen, err)
		}
	}
	if li.loopback {
		li.hosts["localhost"] = true
	}
	return li, nil
}

// hostChecked refuses a request whose Host header names none of the
// server's names. A page that DNS rebinding points at the server comes
// with its own name in Host, so this keeps a browser from reading the
// loopback API for another site. IP literals pass: a browser sends one
// only for a page loaded from that address.
func (s *Server) hostChecked(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.allowedHost(r.Host) {
			writeError(w, http.StatusMisdirectedRequest, "host %q is not a name of this server: use its address or a name in server.allowed_hosts (this check stops DNS rebinding)", r.Host)
			return
		}
		h(w, r)
	}
}

func (s *Server) allowedHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		return false
	}
	if net.ParseIP(host) != nil {
		return true
	}
	return s.listen.hosts[hostaddr.Canonical(host)]
}

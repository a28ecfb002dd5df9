package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/easconnector/easconnector/config"
	"github.com/easconnector/easconnector/internal/hostaddr"
	"github.com/easconnector/easconnector/internal/secret"
)

// apiTimeout bounds one call to the admin API.
const apiTimeout = 30 * time.Second

// maxAPIResponse bounds a response body read from the admin API.
const maxAPIResponse = 32 << 20

// errNoService says nothing answers at the admin API's address.
var errNoService = errors.New("no easconnector service answers")

// apiClient calls a running service's admin API.
type apiClient struct {
	base  *url.URL
	token secret.String
	hc    *http.Client
}

// serverFlags are the flags of the commands that talk to a running
// service.
type serverFlags struct {
	name      string // of the URL flag: --server, or --remote for sync
	config    *string
	server    *string
	tokenFile *string
}

func addServerFlags(fs *flag.FlagSet, serverFlag, configUsage, serverUsage string) serverFlags {
	return serverFlags{
		name:      serverFlag,
		config:    fs.String("config", defaultConfig, configUsage),
		server:    fs.String(serverFlag, "", serverUsage),
		tokenFile: fs.String("token-file", "", "file holding the admin API token (default: the configuration's [server] token)"),
	}
}

// Usage texts of the server flags of status and devices.
const (
	configUsageRemote = "configuration file, for the service's address, certificate and token"
	serverUsage       = "the service's admin URL (default: from [server] listen of the configuration)"
)

// clientResolver resolves the URL's host for the plain-HTTP check; a test
// replaces it.
var clientResolver hostaddr.Resolver = net.DefaultResolver

// errTokenOverHTTP is wrapped by the error for a token that would cross the
// network in clear text.
var errTokenOverHTTP = errors.New("refusing to send the API token over plain http to a host that is not loopback: use an https:// URL")

// client builds the API client: the URL from the flag or the
// configuration, the token from --token-file or the configuration (the
// admin token when admin is set, else the read-only token if there is
// one), and the configuration's server certificate as a trusted root (it
// may be self-signed).
//
// Every /api/v1 endpoint needs a token, so the token goes with every
// request; over http:// only to a loopback host (a literal loopback
// address, or a name every address of which is loopback), and the dialer
// refuses any other address at connect time too, so a name that changes
// between the check and the connection gains nothing. The client follows
// no redirects.
func (f serverFlags) client(admin bool) (*apiClient, error) {
	var cfg *config.Config
	cfgErr := error(nil)
	if c, err := config.Load(*f.config); err == nil {
		cfg = c
	} else {
		cfgErr = err
	}
	raw := *f.server
	if raw == "" {
		if cfg == nil {
			return nil, fmt.Errorf("no service URL: give it with --%s, or a readable configuration (%v)", f.name, cfgErr)
		}
		if cfg.Server.Listen == "" {
			return nil, fmt.Errorf("the admin server is disabled in %s (server.listen is empty); give the URL with --%s", *f.config, f.name)
		}
		raw = listenURL(cfg.Server.Listen, cfg.Server.TLSCert != "")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http or https URL", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	c := &apiClient{base: u, hc: &http.Client{Timeout: apiTimeout, CheckRedirect: noRedirects}}
	switch {
	case *f.tokenFile != "":
		if c.token, err = config.ReadSecret("token", "", *f.tokenFile); err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
	case cfg != nil:
		if !admin {
			if c.token, err = cfg.Server.ReadToken(); err != nil {
				return nil, err
			}
		}
		if c.token.IsZero() {
			if c.token, err = cfg.Server.Token(); err != nil {
				return nil, err
			}
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	c.hc.Transport = tr
	if u.Scheme == "http" && !c.token.IsZero() {
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		defer cancel()
		if _, err := hostaddr.Loopback(ctx, clientResolver, u.Hostname()); err != nil {
			return nil, fmt.Errorf("%s: %w (%v)", u.Redacted(), errTokenOverHTTP, err)
		}
		d := &net.Dialer{Timeout: apiTimeout, Control: func(network, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil || !hostaddr.IsLoopbackIP(host) {
				return fmt.Errorf("connect %s: %w", address, errTokenOverHTTP)
			}
			return nil
		}}
		tr.DialContext = d.DialContext
	}
	if u.Scheme == "https" && cfg != nil && cfg.Server.TLSCert != "" {
		pem, err := os.ReadFile(cfg.Server.TLSCert)
		if err != nil {
			return nil, fmt.Errorf("server.tls_cert: %w", err)
		}
		roots, err := x509.SystemCertPool()
		if err != nil {
			roots = x509.NewCertPool()
		}
		roots.AppendCertsFromPEM(pem)
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return c, nil
}

// noRedirects stops the client at a redirect: the API answers none, and
// following one could carry the token to another scheme or host.
func noRedirects(req *http.Request, via []*http.Request) error {
	return fmt.Errorf("redirect to %s: the admin API does not redirect; check the URL", req.URL.Redacted())
}

// listenURL turns a listen address into the URL a local client uses: an
// unspecified host (":8443", "0.0.0.0:8443") is reached on loopback.
func listenURL(listen string, tls bool) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// apiError is an error answer of the admin API.
type apiError struct {
	method, path string
	status       int
	msg          string
}

func (e *apiError) Error() string {
	s := fmt.Sprintf("%s %s: %s (HTTP %d)", e.method, e.path, e.msg, e.status)
	switch e.status {
	case http.StatusUnauthorized:
		s += "; give the service's API token with --token-file, or --config with its [server] token or read-only token"
	case http.StatusForbidden:
		s += "; changes need the admin token ([server] token_file or token_env), and the service answers only when a token is configured"
	}
	return s
}

// call sends one request (body, if non-nil, as JSON) and decodes the JSON
// answer into out. An error answer becomes an error carrying its message.
func (c *apiClient) call(ctx context.Context, method, path string, query url.Values, body, out any) error {
	u := *c.base
	u.Path += path
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if !c.token.IsZero() {
		req.Header.Set("Authorization", "Bearer "+c.token.Reveal())
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("%w at %s (is `easconnector run` running? see `systemctl status easconnector` or the Windows service)", errNoService, c.base.Redacted())
		}
		return fmt.Errorf("%s %s: %w", method, u.Redacted(), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIResponse))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u.Redacted(), err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if len(msg) > 500 {
			msg = msg[:500] + "…"
		}
		return &apiError{method: method, path: path, status: resp.StatusCode, msg: msg}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode the answer: %w", method, path, err)
	}
	return nil
}

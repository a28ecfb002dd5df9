package runspace

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/Azure/go-ntlmssp"
	"github.com/masterzen/winrm"
	"github.com/masterzen/winrm/soap"

	"github.com/easconnector/easconnector/internal/secret"
)

// The stock masterzen/winrm transports ignore the HTTP status, so faults
// come back as successes (an empty ShellId, a Receive loop that spins
// forever) and an empty Receive body panics in a background goroutine
// (reference/winrm.md §0). transport replaces them: every response is
// checked, faults become *FaultError, and only the Receive timeout fault
// keeps the "OperationTimeout" text that makes the library poll again.

const (
	soapContentType = "application/soap+xml;charset=UTF-8"
	// maxResponseBytes bounds one response body. Servers cap Receive
	// responses at our MaxEnvelopeSize (153,600 bytes); anything far
	// beyond that is not WinRM.
	maxResponseBytes = 8 << 20
	// maxSnippet bounds the body text quoted in errors.
	maxSnippet = 512
	// envelopeSize is sent as MaxEnvelopeSize (it caps each response) and
	// sets the stdin chunk: envelopeSize-1000 raw bytes per Send, ~203 KB
	// after base64. That fits the 500 KB MaxEnvelopeSizekb of Windows
	// Server 2012 and later (every Exchange 2013+ host); request lines are
	// a few KB anyway.
	envelopeSize = 153600
)

var (
	consoleModeTrue  = `<w:Option Name="WINRS_CONSOLEMODE_STDIN">TRUE</w:Option>`
	consoleModeFalse = `<w:Option Name="WINRS_CONSOLEMODE_STDIN">FALSE</w:Option>`
	shellIDRe        = regexp.MustCompile(`<(?:[A-Za-z0-9_]+:)?Selector\s+Name="ShellId"\s*>\s*([^<\s]+)\s*<`)
)

// transportFactory holds what the sessions of one pool share: TLS
// settings, the HTTP connection pool (Basic and Kerberos) and the Kerberos
// client.
type transportFactory struct {
	opts   *Options
	tls    *tls.Config
	dialer *net.Dialer
	shared *http.Transport // nil with NTLM: one per session
	krb    *kerberos

	envMu   sync.Mutex
	envSize map[string]int // psrp: MaxEnvelopeSize per server (envelopeFor)

	orphans *orphanBook // the pool's (orphans.go); nil for a standalone session
}

// newTransportFactory prepares the transports. With Kerberos it reads the
// krb5.conf and logs in (network I/O to the KDC).
func newTransportFactory(opts *Options) (*transportFactory, error) {
	f := &transportFactory{
		opts:   opts,
		dialer: &net.Dialer{Timeout: min(opts.ConnectTimeout, 30*time.Second), KeepAlive: 30 * time.Second},
	}
	if !opts.PlainHTTP {
		f.tls = &tls.Config{
			MinVersion:         tls.VersionTLS12,
			ServerName:         opts.TLSServerName,
			InsecureSkipVerify: opts.InsecureSkipVerify, //nolint:gosec // explicit option, off by default
		}
		if len(opts.CACert) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(opts.CACert) {
				return nil, errors.New("runspace: CACert: no PEM certificate found")
			}
			f.tls.RootCAs = pool
		}
	}
	if opts.Auth != AuthNTLM {
		f.shared = f.httpTransport(2*opts.Size + 8)
	}
	if opts.Auth == AuthKerberos {
		k, err := newKerberos(opts) // kerberos.go
		if err != nil {
			return nil, err
		}
		f.krb = k
	}
	return f, nil
}

// LoopbackHost reports whether host is a loopback address: an IP literal,
// or a name whose every resolved address is loopback. A name that does not
// resolve is not loopback (err says why).
func LoopbackHost(ctx context.Context, host string) (bool, error) {
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback(), nil
	}
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if !a.IP.IsLoopback() {
			return false, nil
		}
	}
	return len(addrs) > 0, nil
}

// dialLoopback connects only to loopback addresses. It guards plain HTTP
// without AllowUnencrypted: the name is resolved at every connection and
// the connection goes to the address that was checked, so a DNS answer
// that changes later cannot send clear text elsewhere.
func (f *transportFactory) dialLoopback(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var ips []net.IP
	if ip := net.ParseIP(host); ip != nil {
		ips = []net.IP{ip}
	} else {
		addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			ips = append(ips, a.IP)
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("%w: %s has no address", ErrUnencrypted, host)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return nil, fmt.Errorf("%w: %s resolves to %s, which is not a loopback address (use HTTPS, or set AllowUnencrypted)",
				ErrUnencrypted, host, ip)
		}
	}
	return f.dialer.DialContext(ctx, network, net.JoinHostPort(ips[0].String(), port))
}

// plainHTTPExposure says what plain HTTP gives away with auth, for the log
// line NewPool writes at every start.
func plainHTTPExposure(auth string) string {
	what := "every cmdlet with its parameters and output (mailboxes, addresses, device ids) travels in clear text and can be read or altered on the path"
	switch auth {
	case AuthBasic:
		return "the account's password travels in clear text (base64) in every request, and " + what
	case AuthNTLM:
		return "the NTLM handshake can be captured for offline password cracking or relayed, and " + what
	default:
		return what
	}
}

// httpTransport returns an http.Transport keeping idle connections per
// host (Go's default of 2 makes N sessions reconnect constantly).
func (f *transportFactory) httpTransport(idlePerHost int) *http.Transport {
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           f.dialer.DialContext,
		TLSClientConfig:       f.tls,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: f.opts.responseHeaderTimeout(),
		MaxIdleConns:          4 * idlePerHost,
		MaxIdleConnsPerHost:   idlePerHost,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	if f.tls != nil {
		t.TLSClientConfig = f.tls.Clone()
	}
	if f.opts.PlainHTTP && !f.opts.AllowUnencrypted {
		// A proxy would carry the clear text off the host.
		t.Proxy = nil
		t.DialContext = f.dialLoopback
	}
	return t
}

// close drops the shared idle connections (their goroutines end).
func (f *transportFactory) close() {
	f.orphans.detach(f)
	if f.shared != nil {
		f.shared.CloseIdleConnections()
	}
	if f.krb != nil {
		f.krb.destroy()
	}
}

// newTransport returns the Transporter of one session on server. Its
// context, cancelled by abort, ends every request in flight: the library's
// calls take no context, so this is how deadlines reach them.
func (f *transportFactory) newTransport(server string) *transport {
	scheme := "https"
	if f.opts.PlainHTTP {
		scheme = "http"
	}
	t := &transport{
		f:      f,
		server: server,
		url:    scheme + "://" + net.JoinHostPort(server, strconv.Itoa(f.opts.Port)) + f.opts.urlPath(),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	switch {
	case f.opts.Auth == AuthNTLM:
		// NTLM authenticates connections. Two lanes of one connection
		// each keep every handshake on its own connection: the Receive
		// long-poll on one, everything else on the other.
		ctl, recv := f.httpTransport(1), f.httpTransport(1)
		ctl.MaxConnsPerHost, recv.MaxConnsPerHost = 1, 1
		t.own = []*http.Transport{ctl, recv}
		t.ctl = &http.Client{Transport: f.ntlm(ctl), CheckRedirect: noRedirect}
		t.recv = &http.Client{Transport: f.ntlm(recv), CheckRedirect: noRedirect}
	default:
		t.ctl = &http.Client{Transport: f.shared, CheckRedirect: noRedirect}
		t.recv = t.ctl
	}
	if f.opts.Auth == AuthKerberos {
		t.spn = f.opts.SPN
		if t.spn == "" {
			t.spn = "HTTP/" + server
		}
	}
	return t
}

// noRedirect refuses redirects: WinRM never redirects, and following one
// would resend the Authorization header (and with Basic the password) to
// wherever the answer points.
func noRedirect(req *http.Request, _ []*http.Request) error {
	return fmt.Errorf("redirect to %s refused", req.URL.Redacted())
}

// ntlmRoundTripper runs the NTLM handshake of go-ntlmssp's Negotiator. It
// hands the credentials to the Negotiator on a clone of each request, so
// no request that leaves this package carries them, and the Negotiator
// (v0.1.1 or later, AllowBasicAuth off) never answers a Basic challenge:
// a server that offers only Basic gets no credentials. A panic while
// parsing a hostile CHALLENGE message (GHSA-pjcq-xvwq-hhpj, fixed in
// v0.1.1) would become an error here rather than end the process.
type ntlmRoundTripper struct {
	user     string
	password secret.String
	neg      ntlmssp.Negotiator
}

func (f *transportFactory) ntlm(rt http.RoundTripper) ntlmRoundTripper {
	return ntlmRoundTripper{user: f.opts.User, password: f.opts.Password,
		neg: ntlmssp.Negotiator{RoundTripper: rt, AllowBasicAuth: false}}
}

func (n ntlmRoundTripper) RoundTrip(req *http.Request) (resp *http.Response, err error) {
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, fmt.Errorf("ntlm handshake: %w: %v", ErrAuth, r)
		}
	}()
	req = req.Clone(req.Context())
	req.SetBasicAuth(n.user, n.password.Reveal()) // read and removed by the Negotiator
	return n.neg.RoundTrip(req)
}

// transport implements winrm.Transporter for one session.
type transport struct {
	f      *transportFactory
	server string
	url    string
	spn    string
	ctl    *http.Client
	recv   *http.Client
	own    []*http.Transport

	ctx    context.Context
	cancel context.CancelFunc

	mu          sync.Mutex
	shellID     string
	lastSendErr error
}

var _ winrm.Transporter = (*transport)(nil)

// Transport is called by winrm.NewClientWithParameters. The URL is ours.
func (t *transport) Transport(*winrm.Endpoint) error { return nil }

// abort ends every request in flight and refuses new ones.
func (t *transport) abort() {
	t.cancel()
	for _, h := range t.own {
		h.CloseIdleConnections()
	}
}

// lastSendError returns the last failed stdin Send, which the library
// hides behind io.ErrShortWrite.
func (t *transport) lastSendError() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastSendErr
}

func (t *transport) shell() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.shellID
}

// Post sends one WS-Man message and returns the response envelope, or an
// error: *FaultError, *StatusError, *TransportError, or ErrProtocol.
func (t *transport) Post(_ *winrm.Client, m *soap.SoapMessage) (string, error) {
	body := m.String()
	action := soapAction(body)
	resp, err := t.post(action, body)
	if err != nil && action == "Send" {
		t.mu.Lock()
		t.lastSendErr = err
		t.mu.Unlock()
	}
	return resp, err
}

// send is post without the orphan book (orphans.go).
func (t *transport) send(action, body string) (string, error) {
	if action == "Command" {
		// The client hard-codes console-mode stdin; a pipe is what a
		// line-oriented protocol wants (as Ansible does when streaming).
		body = strings.Replace(body, consoleModeTrue, consoleModeFalse, 1)
	}
	req, err := http.NewRequestWithContext(t.ctx, http.MethodPost, t.url, strings.NewReader(body))
	if err != nil {
		return "", &TransportError{Action: action, URL: t.url, Err: err}
	}
	req.Header.Set("Content-Type", soapContentType)
	switch t.f.opts.Auth {
	case AuthKerberos:
		if err := t.f.krb.setHeader(req, t.spn); err != nil {
			return "", fmt.Errorf("wsman %s: %w", action, err)
		}
	case AuthBasic:
		req.SetBasicAuth(t.f.opts.User, t.f.opts.Password.Reveal())
	case AuthNTLM:
		// ntlmRoundTripper adds the credentials for the handshake.
	default:
		return "", fmt.Errorf("wsman %s: %w: auth %q", action, ErrInvalidCall, t.f.opts.Auth)
	}
	hc := t.ctl
	if action == "Receive" {
		hc = t.recv
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", t.transportError(action, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return "", t.transportError(action, err)
	}
	if len(data) > maxResponseBytes {
		return "", &TransportError{Action: action, URL: t.url, Err: fmt.Errorf("response body exceeds %d bytes", maxResponseBytes)}
	}
	out, err := t.check(action, resp, data)
	if err != nil && t.f.krb != nil && resp.StatusCode == http.StatusUnauthorized {
		err = t.f.krb.refused(t.spn, err)
	}
	return out, err
}

// check turns a response into the envelope text or a typed error.
func (t *transport) check(action string, resp *http.Response, data []byte) (string, error) {
	ct := resp.Header.Get("Content-Type")
	if !strings.Contains(strings.ToLower(ct), "application/soap+xml") {
		return "", &StatusError{StatusCode: resp.StatusCode, ContentType: ct, Action: action, Body: snippet(data)}
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		if resp.StatusCode != http.StatusOK {
			return "", &StatusError{StatusCode: resp.StatusCode, ContentType: ct, Action: action}
		}
		// An empty Receive body panics in the library's goroutine.
		return "", &TransportError{Action: action, URL: t.url, Err: errors.New("empty response body")}
	}
	if resp.StatusCode != http.StatusOK || bytes.Contains(data, []byte("Fault>")) {
		if fe := parseFault(data); fe != nil {
			fe.HTTPStatus = resp.StatusCode
			fe.Action = action
			return "", fe
		}
		if resp.StatusCode != http.StatusOK {
			return "", &StatusError{StatusCode: resp.StatusCode, ContentType: ct, Action: action, Body: snippet(data)}
		}
	}
	if trimmed[0] != '<' || !bytes.Contains(trimmed, []byte("Envelope")) {
		// "not xml" makes the library poll forever.
		return "", fmt.Errorf("wsman %s: %w: response is not a SOAP envelope: %s", action, ErrProtocol, snippet(data))
	}
	if action == "Create" {
		m := shellIDRe.FindSubmatch(data)
		if m == nil {
			// The library would return a shell with an empty id.
			return "", fmt.Errorf("wsman Create: %w: response carries no ShellId selector", ErrProtocol)
		}
		t.mu.Lock()
		t.shellID = string(m[1])
		t.mu.Unlock()
	}
	return string(data), nil
}

// errAborted replaces the "context canceled" of requests ended by abort:
// the session was stopped on purpose, which says nothing about the server
// and is not the caller's cancellation.
var errAborted = errors.New("transport aborted")

func (t *transport) transportError(action string, err error) error {
	if t.ctx.Err() != nil {
		return &TransportError{Action: action, URL: t.url, Err: errAborted}
	}
	return transportError(action, t.url, err)
}

// transportError wraps an http.Client error without exposing *url.Error
// (see TransportError).
func transportError(action, u string, err error) error {
	te := &TransportError{Action: action, URL: u, Err: err}
	var ue *url.Error
	if errors.As(err, &ue) {
		te.Timeout = ue.Timeout()
		te.Err = ue.Err
	}
	return te
}

// soapAction returns the last path segment of the message's wsa:Action
// ("Create", "Command", "Send", "Receive", "Signal", "Delete").
func soapAction(body string) string {
	head := body[:min(len(body), 4096)]
	i := strings.Index(head, ":Action")
	if i < 0 {
		return "unknown"
	}
	j := strings.IndexByte(head[i:], '>')
	if j < 0 {
		return "unknown"
	}
	rest := head[i+j+1:]
	k := strings.IndexByte(rest, '<')
	if k < 0 {
		return "unknown"
	}
	uri := strings.TrimSpace(rest[:k])
	return uri[strings.LastIndexByte(uri, '/')+1:]
}

// snippet returns printable text from the start of b for error messages.
func snippet(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return ' '
		}
		return r
	}, string(b[:min(len(b), maxSnippet)]))
	s = strings.Join(strings.Fields(s), " ")
	if len(b) > maxSnippet {
		s += "…"
	}
	return s
}

// faultXML is the part of a SOAP 1.2 fault envelope we read. encoding/xml
// matches these names in any namespace.
type faultXML struct {
	Body struct {
		Fault *struct {
			Code struct {
				Value   string `xml:"Value"`
				Subcode struct {
					Value string `xml:"Value"`
				} `xml:"Subcode"`
			} `xml:"Code"`
			Reason struct {
				Text []string `xml:"Text"`
			} `xml:"Reason"`
			Detail struct {
				WSManFault *struct {
					Code    string  `xml:"Code,attr"`
					Machine string  `xml:"Machine,attr"`
					Message xmlText `xml:"Message"`
				} `xml:"WSManFault"`
			} `xml:"Detail"`
		} `xml:"Fault"`
	} `xml:"Body"`
}

// xmlText collects all character data of an element and its descendants
// (f:Message may nest f:ProviderFault).
type xmlText string

func (x *xmlText) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	var b strings.Builder
	for depth := 1; depth > 0; {
		tok, err := d.Token()
		if err != nil {
			return err
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			depth++
		case xml.EndElement:
			depth--
		case xml.CharData:
			b.Write(tok)
		}
	}
	*x = xmlText(strings.Join(strings.Fields(b.String()), " "))
	return nil
}

// parseFault returns the fault in a response body, or nil.
func parseFault(data []byte) *FaultError {
	var env faultXML
	if err := xml.Unmarshal(data, &env); err != nil || env.Body.Fault == nil {
		return nil
	}
	f := env.Body.Fault
	fe := &FaultError{Subcode: strings.TrimSpace(f.Code.Subcode.Value)}
	for _, t := range f.Reason.Text {
		if t = strings.Join(strings.Fields(t), " "); t != "" {
			fe.Reason = t
			break
		}
	}
	if wf := f.Detail.WSManFault; wf != nil {
		fe.Machine = strings.TrimSpace(wf.Machine)
		fe.Code = parseFaultCode(wf.Code)
		if msg := string(wf.Message); msg != "" && msg != fe.Reason {
			// f:Message is the more specific text (it names the quota).
			if fe.Reason == "" {
				fe.Reason = msg
			} else {
				fe.Reason += " " + msg
			}
		}
	}
	if fe.Subcode == "" {
		fe.Subcode = strings.TrimSpace(f.Code.Value)
	}
	return fe
}

func parseFaultCode(s string) uint64 {
	s = strings.TrimSpace(s)
	if h, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		v, _ := strconv.ParseUint(h, 16, 64)
		return v
	}
	v, _ := strconv.ParseUint(s, 10, 64)
	return v
}

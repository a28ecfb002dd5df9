package notify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/easconnector/easconnector/internal/secret"
)

// Security is how the SMTP connection is protected.
type Security string

// Security modes.
const (
	// SecurityStartTLS connects in plain text and upgrades with STARTTLS
	// before anything else; a server that does not offer it is an error,
	// never a silent downgrade. Port 587 by default.
	SecurityStartTLS Security = "starttls"
	// SecurityTLS speaks TLS from the first byte (implicit TLS, "SMTPS").
	// Port 465 by default.
	SecurityTLS Security = "tls"
	// SecurityNone sends in plain text, for a relay on the same host or
	// network. AUTH is refused in this mode. Port 25 by default.
	SecurityNone Security = "none"
)

// ParseSecurity accepts "starttls", "tls" or "none", case-insensitively.
func ParseSecurity(s string) (Security, error) {
	switch v := Security(strings.ToLower(s)); v {
	case SecurityStartTLS, SecurityTLS, SecurityNone:
		return v, nil
	}
	return "", fmt.Errorf("smtp security %q: want starttls, tls or none", s)
}

// Defaults for SMTPOptions.
const (
	DefaultSMTPTimeout        = 60 * time.Second
	DefaultMaxMessagesPerConn = 20 // Exchange receive connectors' MaxMessagesPerConnection
)

// SMTPOptions configure the connection to the mail server.
type SMTPOptions struct {
	Host string // required
	// Port defaults to 587 (starttls), 465 (tls) or 25 (none).
	Port     int
	Security Security // SecurityStartTLS by default
	// Username and Password enable AUTH (PLAIN, else LOGIN, whichever the
	// server offers), which is only ever sent over TLS.
	Username string
	Password secret.String
	// LocalName is the name sent with EHLO (the host name by default).
	LocalName string
	// TLSConfig is cloned for the connection; nil means the system roots.
	// ServerName defaults to Host and MinVersion to TLS 1.2.
	TLSConfig *tls.Config
	// Timeout bounds one message: connecting (when needed) and the whole
	// SMTP transaction (DefaultSMTPTimeout).
	Timeout time.Duration
	// MaxMessagesPerConn is how many messages one connection carries before
	// it is closed (DefaultMaxMessagesPerConn); a connection is also closed
	// as soon as the queue is empty.
	MaxMessagesPerConn int
}

func (o *SMTPOptions) setDefaults() {
	if o.Security == "" {
		o.Security = SecurityStartTLS
	}
	if o.Port == 0 {
		switch o.Security {
		case SecurityTLS:
			o.Port = 465
		case SecurityNone:
			o.Port = 25
		default:
			o.Port = 587
		}
	}
	if o.LocalName == "" {
		o.LocalName, _ = os.Hostname()
		if o.LocalName == "" || strings.ContainsAny(o.LocalName, " \r\n") {
			o.LocalName = "localhost"
		}
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultSMTPTimeout
	}
	if o.MaxMessagesPerConn == 0 {
		o.MaxMessagesPerConn = DefaultMaxMessagesPerConn
	}
}

func (o *SMTPOptions) validate() error {
	if o.Host == "" {
		return errors.New("SMTP.Host: required")
	}
	if strings.ContainsAny(o.Host, " \r\n/") {
		return fmt.Errorf("SMTP.Host %q: not a host name", o.Host)
	}
	if o.Port < 1 || o.Port > 65535 {
		return fmt.Errorf("SMTP.Port: must be between 1 and 65535, got %d", o.Port)
	}
	if _, err := ParseSecurity(string(o.Security)); err != nil {
		return fmt.Errorf("SMTP.Security: %w", err)
	}
	if o.Username != "" && o.Security == SecurityNone {
		return errors.New("SMTP.Username: AUTH is only sent over TLS; set Security to starttls or tls")
	}
	if strings.ContainsAny(o.Username+o.Password.Reveal()+o.LocalName, "\r\n") {
		return errors.New("SMTP: Username, Password and LocalName must not contain line breaks")
	}
	if o.Timeout < 0 || o.MaxMessagesPerConn < 0 {
		return errors.New("SMTP: Timeout and MaxMessagesPerConn must not be negative")
	}
	return nil
}

func (o *SMTPOptions) tlsConfig() *tls.Config {
	var c *tls.Config
	if o.TLSConfig != nil {
		c = o.TLSConfig.Clone()
	} else {
		c = &tls.Config{}
	}
	if c.ServerName == "" {
		c.ServerName = o.Host
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

// smtpConn is one SMTP connection that may carry several messages.
type smtpConn struct {
	conn net.Conn
	c    *smtp.Client
	sent int // messages sent on this connection
}

// dial connects, greets, secures and authenticates, all before deadline.
func dial(ctx context.Context, o *SMTPOptions, deadline time.Time) (*smtpConn, error) {
	addr := net.JoinHostPort(o.Host, strconv.Itoa(o.Port))
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	nd := &net.Dialer{}
	var conn net.Conn
	var err error
	if o.Security == SecurityTLS {
		conn, err = (&tls.Dialer{NetDialer: nd, Config: o.tlsConfig()}).DialContext(ctx, "tcp", addr)
	} else {
		conn, err = nd.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	if err := conn.SetDeadline(deadline); err != nil {
		conn.Close()
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c, err := smtp.NewClient(conn, o.Host)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("greeting from %s: %w", addr, err)
	}
	s := &smtpConn{conn: conn, c: c}
	if err := s.setup(o); err != nil {
		s.close()
		return nil, fmt.Errorf("smtp %s: %w", addr, err)
	}
	return s, nil
}

func (s *smtpConn) setup(o *SMTPOptions) error {
	if err := s.c.Hello(o.LocalName); err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	if o.Security == SecurityStartTLS {
		if ok, _ := s.c.Extension("STARTTLS"); !ok {
			return permanentError{errors.New("server does not offer STARTTLS (refusing to send in plain text; set Security to none to allow it)")}
		}
		if err := s.c.StartTLS(o.tlsConfig()); err != nil {
			return fmt.Errorf("STARTTLS: %w", err)
		}
	}
	if o.Username == "" {
		return nil
	}
	if _, ok := s.c.TLSConnectionState(); !ok {
		return permanentError{errors.New("refusing AUTH without TLS")}
	}
	ok, mechs := s.c.Extension("AUTH")
	if !ok {
		return permanentError{errors.New("server offers no AUTH, but a Username is configured")}
	}
	var a smtp.Auth
	switch fields := strings.Fields(strings.ToUpper(mechs)); {
	case contains(fields, "PLAIN"):
		a = &plainAuth{user: o.Username, pass: o.Password}
	case contains(fields, "LOGIN"):
		a = &loginAuth{user: o.Username, pass: o.Password}
	default:
		return permanentError{fmt.Errorf("server offers AUTH %s; only PLAIN and LOGIN are supported", mechs)}
	}
	if err := s.c.Auth(a); err != nil {
		return fmt.Errorf("AUTH as %s: %w", o.Username, err)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// send runs one mail transaction before deadline; ctx interrupts it.
func (s *smtpConn) send(ctx context.Context, deadline time.Time, m *message, body []byte) error {
	if err := s.conn.SetDeadline(deadline); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { s.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := s.c.Mail(m.envFrom); err != nil {
		return &stageError{stage: "MAIL FROM", err: err}
	}
	for _, to := range m.envTo {
		if err := s.c.Rcpt(to); err != nil {
			return &stageError{stage: "RCPT TO " + to, err: err}
		}
	}
	w, err := s.c.Data()
	if err != nil {
		return &stageError{stage: "DATA", err: err}
	}
	if _, err := w.Write(body); err != nil {
		return &stageError{stage: "DATA", err: err}
	}
	if err := w.Close(); err != nil {
		return &stageError{stage: "end of DATA", err: err}
	}
	s.sent++
	return nil
}

// quit ends the session politely, within a short deadline.
func (s *smtpConn) quit() {
	_ = s.conn.SetDeadline(time.Now().Add(5 * time.Second))
	_ = s.c.Quit()
	s.close()
}

func (s *smtpConn) close() { _ = s.c.Close() }

// stageError says which SMTP step failed.
type stageError struct {
	stage string
	err   error
}

func (e *stageError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

// permanentError marks a failure that a retry cannot fix (the server lacks
// what the configuration requires).
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// permanent reports whether retrying err cannot help: a 5xx reply, a
// certificate the configuration does not trust, or a permanentError.
func permanent(err error) bool {
	if errors.As(err, new(permanentError)) {
		return true
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code >= 500 && te.Code <= 599
	}
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn)
}

// plainAuth is AUTH PLAIN (RFC 4616) that refuses to run without TLS.
type plainAuth struct {
	user string
	pass secret.String
}

func (a *plainAuth) Start(si *smtp.ServerInfo) (string, []byte, error) {
	if !si.TLS {
		return "", nil, errors.New("refusing AUTH PLAIN without TLS")
	}
	return "PLAIN", []byte("\x00" + a.user + "\x00" + a.pass.Reveal()), nil
}

func (a *plainAuth) Next(_ []byte, more bool) ([]byte, error) {
	if more {
		return nil, errors.New("AUTH PLAIN: unexpected server challenge")
	}
	return nil, nil
}

// loginAuth is the obsolete but common AUTH LOGIN: the server prompts
// "Username:" and "Password:", the client answers each.
type loginAuth struct {
	user string
	pass secret.String
	step int
}

func (a *loginAuth) Start(si *smtp.ServerInfo) (string, []byte, error) {
	if !si.TLS {
		return "", nil, errors.New("refusing AUTH LOGIN without TLS")
	}
	a.step = 0
	return "LOGIN", nil, nil
}

func (a *loginAuth) Next(challenge []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	a.step++
	p := strings.ToLower(string(challenge))
	switch {
	case strings.HasPrefix(p, "user"), a.step == 1 && !strings.HasPrefix(p, "pass"):
		return []byte(a.user), nil
	case strings.HasPrefix(p, "pass"), a.step == 2:
		return []byte(a.pass.Reveal()), nil
	}
	return nil, fmt.Errorf("AUTH LOGIN: unexpected challenge %q", challenge)
}

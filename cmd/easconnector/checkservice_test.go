package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/easconnector/easconnector/config"
	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/loadtest/mailsink"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/pipeline/notify"
)

// TestCheckService runs check against a fleet (exsim, graphsim, a state
// directory) with the mail relay in several states: every line of the
// service table, and the cause and the fix under each failure.
func TestCheckService(t *testing.T) {
	f := func(fl *fleet, wantCode int, want ...string) {
		t.Helper()
		code, out, errOut := runCmd(t, "check", "--config", fl.config)
		if code != wantCode {
			t.Errorf("check = %d, want %d\n%s\n%s", code, wantCode, out, errOut)
		}
		for _, w := range want {
			if !regexp.MustCompile(w).MatchString(out) {
				t.Errorf("check output lacks %s:\n%s", w, out)
			}
		}
	}
	mail, err := mailsink.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mail.Close)

	// All well: a plain relay on loopback, a state directory to create.
	fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 20}, smtpPort: mail.Port()})
	f(fl, exitOK, `exchange\s+servers\s+OK\s+1 of 1 servers OK`, `mdm\s+token\s+OK`, `mdm\s+permissions\s+OK`,
		`mail\s+connect 127\.0\.0\.1:\d+\s+OK\s+greeting and EHLO accepted`, `mail\s+AUTH\s+SKIPPED`,
		`state\s+directory \S+\s+OK\s+does not exist yet`, `state\s+free space\s+OK\s+[\d.]+ [GMK]iB free`,
		`security\s+exchange transport\s+WARN\s+https = false \(basic\), loopback only`, `No failures, 1 warning\.`)
	if mail.Count() != 0 {
		t.Errorf("check sent %d mails", mail.Count())
	}

	// The state directory exists and a service holds its lock.
	if err := config.MkdirPrivate(fl.state); err != nil {
		t.Fatal(err)
	}
	lk, err := lockStateDir(fl.state, "run")
	if err != nil {
		t.Fatal(err)
	}
	f(fl, exitOK, `state\s+directory \S+\s+OK\s+writable`, `state\s+lock\s+OK\s+held by pid \d+ \(easconnector run\): a local sync or plan must ask the service with --remote`)
	if err := lk.unlock(); err != nil {
		t.Fatal(err)
	}
	f(fl, exitOK, `state\s+lock\s+OK\s+free`)

	// The state directory is a file: fails, with the fix.
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rewriteConfig(t, fl.config, `state_dir = "state"`, `state_dir = "`+filepath.ToSlash(blocker)+`"`)
	f(fl, exitFailed, `state\s+directory \S+\s+FAILED`, `FAILED state directory \S+:\n  cause: .*not a directory\n  fix:   make \S+ a directory the service account owns`,
		`1 check failed, 1 warning`)

	// A relay that offers STARTTLS with a certificate nobody trusts.
	tlsFleet := startFleet(t, fleetOptions{pop: population.Options{Devices: 20}, smtpPort: startTLSMail(t), secrets: fleetSecrets{smtp: "mail-pw"}})
	f(tlsFleet, exitFailed, `mail\s+connect 127\.0\.0\.1:\d+\s+OK`, `mail\s+STARTTLS\s+FAILED`,
		`FAILED mail STARTTLS:\n  cause: .*certificate.*\n  fix:   the relay's certificate is issued by an authority this host does not trust`)

	// Nothing listens at the relay's address.
	port := freePort(t)
	downFleet := startFleet(t, fleetOptions{pop: population.Options{Devices: 20}, smtpPort: port})
	f(downFleet, exitFailed, `mail\s+connect 127\.0\.0\.1:\d+\s+FAILED`, `cause: .*connection refused\n  fix:   check \[notify\] smtp_host and smtp_port`)
}

// TestProbeSMTP: STARTTLS and AUTH against a relay whose certificate the
// check trusts: the right password passes, a wrong one fails with the fix.
func TestProbeSMTP(t *testing.T) {
	port, roots := startAuthMail(t, authMail{user: "svc-mail@contoso.com", pass: "right"})
	f := func(o notify.SMTPOptions, want ...string) {
		t.Helper()
		var b strings.Builder
		printServiceChecks(&b, probeSMTP(t.Context(), o, roots))
		for _, w := range want {
			if !regexp.MustCompile(w).MatchString(b.String()) {
				t.Errorf("probeSMTP(%s) lacks %s:\n%s", o.Username, w, b.String())
			}
		}
	}
	o := notify.SMTPOptions{Host: "127.0.0.1", Port: port, Security: notify.SecurityStartTLS, Username: "svc-mail@contoso.com", Password: secret.New("right")}
	f(o, `mail\s+starttls\s+OK\s+TLS 1\.[23], certificate verified for 127\.0\.0\.1`, `mail\s+AUTH as svc-mail@contoso.com\s+OK\s+accepted \(nothing sent\)`, `Everything the service needs works`)
	o.Password = secret.New("wrong")
	f(o, `mail\s+AUTH as svc-mail@contoso.com\s+FAILED`, `fix:   check \[notify\] user and its password`)
	o.Security, o.Username = notify.SecurityTLS, ""
	f(o, `mail\s+connect 127\.0\.0\.1:\d+\s+FAILED`) // STARTTLS port, implicit TLS: the handshake fails

	port, roots = startAuthMail(t, authMail{user: "svc-mail@contoso.com", pass: "right", login: true})
	o = notify.SMTPOptions{Host: "127.0.0.1", Port: port, Security: notify.SecurityStartTLS, Username: "svc-mail@contoso.com", Password: secret.New("right")}
	f(o, `mail\s+AUTH as svc-mail@contoso.com\s+OK`)
	o.Password = secret.New("wrong")
	f(o, `mail\s+AUTH as svc-mail@contoso.com\s+FAILED`, `cause: .*authentication credentials invalid`)
}

// TestSecurityWarnings: each setting that weakens security gets a warning
// with its cause and fix; a hardened configuration gets none.
func TestSecurityWarnings(t *testing.T) {
	var cfg config.Config
	cfg.Exchange = config.Exchange{Servers: []string{"cas01.contoso.com"}, HTTPS: true, InsecureSkipVerify: true, Auth: "kerberos"}
	cfg.Notify = config.Notify{Enabled: true, SMTPHost: "smtp.contoso.com", Security: "none"}
	cfg.Server = config.Server{Listen: "0.0.0.0:8443"}
	cfg.MDM = config.MDM{Source: "graph", GraphURL: "http://graph.contoso.com"}
	var items []string
	for _, l := range securityWarnings(&cfg) {
		if l.result != checkWarn || l.cause == "" || l.fix == "" {
			t.Errorf("warning %+v lacks a cause or a fix", l)
		}
		items = append(items, l.item)
	}
	if got, want := strings.Join(items, ","), "exchange.insecure_skip_verify,notify.security,server.listen,mdm.graph_url"; got != want {
		t.Errorf("warnings = %s, want %s", got, want)
	}
	cfg.Exchange.HTTPS, cfg.Exchange.InsecureSkipVerify, cfg.Exchange.Auth = false, false, "basic"
	if l := securityWarnings(&cfg); len(l) == 0 || l[0].item != "exchange transport" || !strings.Contains(l[0].cause, "password") {
		t.Errorf("plain HTTP with Basic to a remote server: %+v", l)
	}
	cfg = config.Config{}
	cfg.Exchange = config.Exchange{Servers: []string{"cas01.contoso.com"}, HTTPS: true, Auth: "kerberos"}
	cfg.Notify = config.Notify{Enabled: true, SMTPHost: "smtp.contoso.com", Security: "starttls"}
	cfg.Server = config.Server{Listen: "127.0.0.1:8443"}
	if l := securityWarnings(&cfg); len(l) != 0 {
		t.Errorf("hardened configuration: warnings %+v", l)
	}
}

// rewriteConfig replaces old with new in the configuration file.
func rewriteConfig(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s lacks %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// startAuthMail is a relay on loopback offering STARTTLS (with a
// certificate in the returned pool) and AUTH for b's account.
func startAuthMail(t *testing.T, b authMail) (int, *x509.CertPool) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "mail.test"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(b)
	srv.Domain = "mail.test"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.ErrorLog = log.New(io.Discard, "", 0)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().(*net.TCPAddr).Port, roots
}

// authMail is an smtp.Backend whose sessions take AUTH PLAIN for one
// account and refuse every message (a check must send none).
type authMail struct {
	user, pass string
	login      bool // offer AUTH LOGIN only, as some Exchange receive connectors do
}

func (b authMail) NewSession(*smtp.Conn) (smtp.Session, error) { return &authSession{b: b}, nil }

type authSession struct {
	discardMail
	b authMail
}

var _ smtp.AuthSession = (*authSession)(nil)

func (s *authSession) AuthMechanisms() []string {
	if s.b.login {
		return []string{sasl.Login}
	}
	return []string{sasl.Plain}
}

func (s *authSession) Auth(string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if user != s.b.user || pass != s.b.pass {
			return errors.New("535 5.7.8 authentication credentials invalid")
		}
		return nil
	}
	if s.b.login {
		return &loginServer{check: check}, nil
	}
	return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
}

// loginServer is the server side of AUTH LOGIN: "Username:", then
// "Password:".
type loginServer struct {
	check func(user, pass string) error
	step  int
	user  string
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	l.step++
	switch l.step {
	case 1:
		return []byte("Username:"), false, nil
	case 2:
		l.user = string(resp)
		return []byte("Password:"), false, nil
	}
	return nil, true, l.check(l.user, string(resp))
}
func (s *authSession) Mail(string, *smtp.MailOptions) error {
	return errors.New("a check must not send mail")
}

// TestRunExplainsStart: run names the cause and the fix of a failed start,
// as check does: the state directory in use, the admin port taken, a
// setting that is wrong, a file that is not TOML.
func TestRunExplainsStart(t *testing.T) {
	noLeaks(t)
	f := func(cfg string, want ...string) {
		t.Helper()
		code, _, errOut := runIn(t, t.Context(), "run", "--config", cfg)
		if code != exitFailed {
			t.Errorf("run = %d, want %d\n%s", code, exitFailed, errOut)
		}
		for _, w := range want {
			if !regexp.MustCompile(w).MatchString(errOut) {
				t.Errorf("run's error lacks %s:\n%s", w, errOut)
			}
		}
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { taken.Close() })
	fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 5}, listen: taken.Addr().String()})
	f(fl.config, `cannot start: server.listen: .*address already in use`, `cause: another process already listens on the admin address`,
		`fix:   stop it, or give \[server\] listen another port`)

	fl = startFleet(t, fleetOptions{pop: population.Options{Devices: 5}})
	if err := config.MkdirPrivate(fl.state); err != nil {
		t.Fatal(err)
	}
	lk, err := lockStateDir(fl.state, "run")
	if err != nil {
		t.Fatal(err)
	}
	f(fl.config, `cannot start: state directory in use`, `cause: another easconnector process`, `fix:   stop it \(systemctl stop easconnector`)
	if err := lk.unlock(); err != nil {
		t.Fatal(err)
	}

	rewriteConfig(t, fl.config, `quick_interval = "1h"`, `quick_interval = "1s"`)
	f(fl.config, `cause: the configuration is wrong at sync\.quick_interval`, `fix:   correct sync\.quick_interval in `)
	rewriteConfig(t, fl.config, `quick_interval = "1s"`, `quick_interval = "1h"`+"\n"+`quick_intervall = "1h"`)
	f(fl.config, `cause: the configuration file is wrong at line \d+, column \d+`, `check --config`)
}

// TestCheckAdminServer: the listen address free, taken by another process
// (a failure) or by the running service (not one); the certificate
// valid, near its expiry, expired, or not matching its key.
func TestCheckAdminServer(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "api.token")
	if err := os.WriteFile(tokFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { taken.Close() })
	writeCert := func(name string, notAfter time.Time) (string, string) {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "easc01"}, NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		cert, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		if err := os.WriteFile(cert, pemBlock("CERTIFICATE", der), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key)), 0o600); err != nil {
			t.Fatal(err)
		}
		return cert, keyFile
	}
	f := func(srv config.Server, serviceRuns bool, want ...string) {
		t.Helper()
		var cfg config.Config
		cfg.Server = srv
		var b strings.Builder
		printServiceChecks(&b, checkAdminServer(&cfg, serviceRuns))
		for _, w := range want {
			if !regexp.MustCompile(w).MatchString(b.String()) {
				t.Errorf("checkAdminServer(%+v, %v) lacks %s:\n%s", srv, serviceRuns, w, b.String())
			}
		}
	}
	f(config.Server{}, false, `server\s+listen\s+SKIPPED`)
	f(config.Server{Listen: freeAddr(t), TokenFile: tokFile}, false, `server\s+tokens\s+OK\s+admin only`, `server\s+listen \S+\s+OK\s+free`)
	f(config.Server{Listen: taken.Addr().String(), TokenFile: tokFile}, false, `server\s+listen \S+\s+FAILED`,
		`cause: another process listens on `+regexp.QuoteMeta(taken.Addr().String())+`\n  fix:   stop it, or give \[server\] listen another port`)
	f(config.Server{Listen: taken.Addr().String(), TokenFile: tokFile}, true, `server\s+listen \S+\s+OK\s+in use \(by the running service`)
	f(config.Server{Listen: freeAddr(t)}, false, `server\s+tokens\s+WARN\s+none`, `answer 403 to everyone`)

	cert, key := writeCert("good", time.Now().Add(365*24*time.Hour))
	f(config.Server{Listen: freeAddr(t), TokenFile: tokFile, TLSCert: cert, TLSKey: key}, false, `server\s+certificate \S+\s+OK\s+valid until \d{4}-`)
	cert, key = writeCert("soon", time.Now().Add(10*24*time.Hour))
	f(config.Server{Listen: freeAddr(t), TokenFile: tokFile, TLSCert: cert, TLSKey: key}, false, `server\s+certificate \S+\s+WARN\s+expires`, `cause: the certificate expires in (9|10) days`)
	cert, key = writeCert("old", time.Now().Add(-time.Hour))
	f(config.Server{Listen: freeAddr(t), TokenFile: tokFile, TLSCert: cert, TLSKey: key}, false, `server\s+certificate \S+\s+FAILED\s+expired`, `fix:   renew it`)
	_, otherKey := writeCert("other", time.Now().Add(365*24*time.Hour))
	f(config.Server{Listen: freeAddr(t), TokenFile: tokFile, TLSCert: cert, TLSKey: otherKey}, false, `server\s+certificate \S+\s+FAILED`, `fix:   set \[server\] tls_cert and tls_key`)
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

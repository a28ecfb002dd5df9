package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/easconnector/easconnector/config"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/server"
)

// get fetches a URL of the daemon with an optional bearer token.
func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsCarryNoPersonalData scrapes /metrics after syncs against the
// simulators and fails if any mailbox address, UPN, display name, account
// name or DeviceId of the fleet appears in it.
func TestMetricsCarryNoPersonalData(t *testing.T) {
	noLeaks(t)
	addr := freeAddr(t)
	fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 120}, listen: addr})
	d := startRun(t, fl, addr)
	d.waitStatus(t, "the first full sync", func(st *server.Status) bool { return st.LastFull != nil })
	if code, out, errOut := runIn(t, t.Context(), "sync", "--quick", "--remote", d.base, "--token-file", filepath.Join(fl.dir, "api.token")); code != exitOK {
		t.Fatalf("sync --remote = %d\n%s%s", code, out, errOut)
	}
	d.waitStatus(t, "the quick sync", func(st *server.Status) bool { return st.LastQuick != nil && st.Running == nil })

	code, body := get(t, d.base+"/metrics", "")
	if code != 200 || !strings.Contains(body, "easconnector_sync_") || !strings.Contains(body, "easconnector_server_requests_total") {
		t.Fatalf("GET /metrics = %d, %d bytes; want the pipeline's and the server's series without a token", code, len(body))
	}
	checkMetricsHelp(t, body)
	lower := strings.ToLower(body)
	var personal []string
	for _, mb := range fl.pop.Mailboxes {
		personal = append(personal, mb.PrimarySmtp, mb.UPN, mb.DisplayName, mb.Name, mb.SamAccountName, mb.Guid, mb.DistinguishedName)
	}
	for _, dv := range fl.pop.Devices {
		personal = append(personal, dv.DeviceID)
	}
	for _, r := range fl.pop.MDM {
		personal = append(personal, r.ID, r.EASDeviceID, r.UserPrincipalName, r.Email)
	}
	found := 0
	for _, p := range personal {
		if len(p) >= 4 && strings.Contains(lower, strings.ToLower(p)) {
			if found++; found <= 10 {
				t.Errorf("/metrics carries %q", p)
			}
		}
	}
	if found > 0 {
		t.Errorf("%d personal values in /metrics", found)
	}
	if code, _ := get(t, d.base+"/api/v1/devices", ""); code != 401 {
		t.Errorf("GET /api/v1/devices without a token = %d, want 401", code)
	}
}

// secretValues are distinctive, so that a search for them finds any leak.
var secretValues = fleetSecrets{
	exchange:  "ExPw-7f3a9c1e5d-LEAKCHECK",
	graph:     "GraphSecret-2b8d4e6f0a-LEAKCHECK",
	smtp:      "SmtpPw-91c0ab37e2-LEAKCHECK",
	token:     "AdminTok-5e1f7a9b3c0d2e4f-LEAKCHECK",
	readToken: "ReadTok-6a2c8e0f4b1d3a5c-LEAKCHECK",
}

// startTLSMail is an SMTP server on loopback that offers STARTTLS with a
// certificate no system trusts: the connector loads the SMTP password and
// tries to send, and its failures are logged.
func startTLSMail(t *testing.T) int {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "mail.test"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(discardMail{})
	srv.Domain = "mail.test"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.ErrorLog = log.New(io.Discard, "", 0)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().(*net.TCPAddr).Port
}

// discardMail is an smtp.Backend that takes every message and drops it.
type discardMail struct{}

func (discardMail) NewSession(*smtp.Conn) (smtp.Session, error) { return discardMail{}, nil }
func (discardMail) Mail(string, *smtp.MailOptions) error        { return nil }
func (discardMail) Rcpt(string, *smtp.RcptOptions) error        { return nil }
func (discardMail) Data(r io.Reader) error                      { _, err := io.Copy(io.Discard, r); return err }
func (discardMail) Reset()                                      {}
func (discardMail) Logout() error                               { return nil }

// graphCertificate makes the Graph app's certificate and key files.
func graphCertificate(t *testing.T, dir string) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "easconnector graph app"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	os.WriteFile(filepath.Join(dir, "graph.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, "graph.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	return cert, key
}

// TestSecretsNeverLogged runs the daemon's code path against the
// simulators with distinctive credentials (Exchange password over HTTPS
// with the second-hop credential, Graph client secret and, in a second
// run, the Graph certificate's key, SMTP password, both API tokens), makes
// things fail on the way (a wrong token, Exchange going away), and fails if
// any secret appears in any log line, command output, state or audit file.
func TestSecretsNeverLogged(t *testing.T) {
	noLeaks(t)
	addr := freeAddr(t)
	mailPort := startTLSMail(t)
	certDir := t.TempDir()
	cert, key := graphCertificate(t, certDir)
	fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 80}, listen: addr, secrets: secretValues, exchangeTLS: true,
		smtpPort: mailPort, logLevel: "debug", graphCert: cert})
	var captured []string
	capture := func(what string, outs ...string) {
		for _, o := range outs {
			captured = append(captured, what+":\n"+o)
		}
	}

	d := startRun(t, fl, addr)
	st := d.waitStatus(t, "the first full sync", func(st *server.Status) bool { return st.LastFull != nil })
	if st.LastFull.Result != server.ResultOK {
		t.Errorf("first full sync = %+v\n%s", st.LastFull, d.stderr)
	}
	tokFile, readFile := filepath.Join(fl.dir, "api.token"), filepath.Join(fl.dir, "api-read.token")
	for _, args := range [][]string{
		{"status", "--server", d.base, "--token-file", readFile},
		{"status", "--json", "--config", fl.config},
		{"devices", "--server", d.base, "--token-file", readFile, "--json", "--limit", "0"},
		{"devices", "--server", d.base, "--token-file", tokFile, "--decision", "block"},
		{"sync", "--quick", "--remote", d.base, "--token-file", readFile}, // refused
		{"sync", "--quick", "--remote", d.base, "--token-file", tokFile},
		{"sync", "--quick", "--remote", "http://192.0.2.1:8443", "--token-file", tokFile}, // refused before sending
	} {
		_, out, errOut := runIn(t, t.Context(), args...)
		capture(strings.Join(args, " "), out, errOut)
	}
	for _, tok := range []string{"", secretValues.readToken, secretValues.token, "wrong-" + secretValues.token} {
		for _, p := range []string{"/", "/api/v1/status", "/api/v1/syncs", "/api/v1/devices?limit=1000", "/metrics"} {
			_, body := get(t, d.base+p, tok)
			capture("GET "+p, body)
		}
	}
	d.waitStatus(t, "the quick sync", func(st *server.Status) bool { return st.LastQuick != nil && st.Running == nil })
	// Exchange goes away: connection errors are logged.
	if err := fl.sim.Kill(0); err != nil {
		t.Fatal(err)
	}
	runIn(t, t.Context(), "sync", "--quick", "--remote", d.base, "--token-file", tokFile)
	d.waitStatus(t, "disconnected", func(st *server.Status) bool { return st.Status == server.StatusDisconnected })
	d.stop(t)
	capture("run stderr", d.stderr.String())

	// The certificate credential, in a dry run with JSON logs.
	if err := fl.sim.Restart(0); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(fl.config)
	if err != nil {
		t.Fatal(err)
	}
	certCfg := strings.Replace(string(cfg), `client_secret_file = "graph.secret"`,
		`certificate_file = "`+filepath.Join(certDir, "graph.crt")+`"`+"\nkey_file = \""+filepath.Join(certDir, "graph.key")+`"`, 1)
	certCfg = strings.Replace(certCfg, `level = "debug"`, "level = \"debug\"\nformat = \"json\"", 1)
	certPath := filepath.Join(fl.dir, "cert.toml")
	if err := os.WriteFile(certPath, []byte(certCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runIn(t, t.Context(), "plan", "--full", "--config", certPath)
	if code != exitOK && code != exitHeld {
		t.Errorf("plan with the certificate = %d\n%s%s", code, out, errOut)
	}
	capture("plan (certificate)", out, errOut)
	_, out, errOut = runIn(t, t.Context(), "check", "--config", fl.config)
	capture("check", out, errOut)

	// A debug dump of every Options the configuration maps to, as a
	// developer would print or log one.
	for _, path := range []string{fl.config, certPath} {
		c, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		ro, err1 := c.RunspaceOptions()
		gro, err2 := c.GraphOptions()
		no, err3 := c.NotifyOptions()
		so, err4 := c.ServerOptions()
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		lg := slog.New(slog.NewTextHandler(&buf, nil))
		jl := slog.New(slog.NewJSONHandler(&buf, nil))
		for _, o := range []any{ro, gro, no, so, c} {
			js, _ := json.Marshal(o)
			fmt.Fprintf(&buf, "%v\n%+v\n%#v\n%s\n%q\n%x\n", o, o, o, js, o, o)
			lg.Debug("options", "opts", o)
			lg.Error("start", "err", fmt.Errorf("start with %+v: %w", o, errors.New("boom")))
			jl.Info("options", "opts", o)
		}
		capture("options dump "+filepath.Base(path), buf.String())
	}

	// State, audit and everything else the connector wrote.
	filepath.WalkDir(fl.state, func(path string, de os.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			b, _ := os.ReadFile(path)
			capture(path, string(b))
		}
		return nil
	})
	if len(captured) < 20 || !strings.Contains(strings.Join(captured, "\n"), "level=DEBUG") {
		t.Fatalf("captured too little to judge (%d outputs)", len(captured))
	}

	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	keyLines := strings.Split(string(keyPEM), "\n")
	needles := map[string]string{
		"exchange password":     secretValues.exchange,
		"exchange Basic header": base64.StdEncoding.EncodeToString([]byte(exsim.DefaultUser + ":" + secretValues.exchange)),
		"graph client secret":   secretValues.graph,
		"smtp password":         secretValues.smtp,
		"smtp AUTH PLAIN":       base64.StdEncoding.EncodeToString([]byte("\x00svc-mail@contoso.com\x00" + secretValues.smtp)),
		"admin token":           secretValues.token,
		"read-only token":       secretValues.readToken,
		// Lines past the modulus (which the certificate shows): the
		// private exponent and primes.
		"certificate key (PEM line)":   keyLines[9],
		"certificate key (PEM line 2)": keyLines[len(keyLines)-4],
		"certificate key (prime)":      key.Primes[0].String()[:40],
		"certificate key (D)":          key.D.String()[:40],
		"certificate key (D hex)":      hex.EncodeToString(key.D.Bytes())[:40],
	}
	for what, v := range needles {
		for _, c := range captured {
			if strings.Contains(c, v) || strings.Contains(c, strings.TrimSuffix(v, "-LEAKCHECK")) {
				head, _, _ := strings.Cut(c, "\n")
				i := strings.Index(c, v)
				t.Errorf("%s appears in %s: …%s…", what, head, c[max(0, i-200):min(len(c), i+len(v)+50)])
				break
			}
		}
	}
}

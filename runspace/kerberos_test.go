package runspace_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
	"github.com/easconnector/easconnector/loadtest/kdc"
	"github.com/easconnector/easconnector/runspace"
)

// Kerberos against a real MIT KDC (loadtest/kdc) and exsim's WS-Man
// server verifying SPNEGO tokens with the service keytab; the real
// masterzen/winrm client runs through runspace's transport over HTTP on
// loopback.

const (
	spnCAS01 = "HTTP/cas01.easconnector.test"
	spnCAS02 = "HTTP/cas02.easconnector.test"
)

// kerberosServer serves exsim listener 0's sessions on a new loopback
// port through a WS-Man server that accepts only tickets for spn (empty:
// HTTP/<Host header>). Basic is refused: Users holds the principal with a
// password nobody sends.
func kerberosServer(t *testing.T, k *kdc.KDC, spn string) (port int, ws *wsman.Server) {
	return kerberosServerSkew(t, k, spn, 0)
}

// kerberosServerSkew is kerberosServer with the server's MaxClockSkew,
// which is also how long past its end a ticket is still accepted.
func kerberosServerSkew(t *testing.T, k *kdc.KDC, spn string, skew time.Duration) (port int, ws *wsman.Server) {
	t.Helper()
	sim := startSim(t, exsim.Options{Quiet: true})
	kerb, err := wsman.NewKerberos(k.ServiceKeytab, spn)
	if err != nil {
		t.Fatal(err)
	}
	kerb.MaxClockSkew = skew
	ws = wsman.NewServer(wsman.Options{
		Machine:  "CAS01",
		Users:    map[string]string{k.User: "basic-is-not-used-" + k.Password},
		Kerberos: kerb,
		// Exchange's /PowerShell/ endpoint too, for the psrp session kind.
		PowerShell: sim.Runner(0).(wsman.PowerShellHost), PowerShellConfigurations: []string{exsim.ConfigurationName},
	}, sim.Runner(0))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: ws, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		ws.Close()
		_ = hs.Close()
	})
	return ln.Addr().(*net.TCPAddr).Port, ws
}

func kerberosOptions(t *testing.T, k *kdc.KDC, server string, port int, mutate func(*runspace.Options)) runspace.Options {
	o := runspace.Options{
		Mode:             runspace.ModeRemoting, // the WinRS kind; psrp Kerberos is in psrp_integration_test.go
		Servers:          []string{server},
		Port:             port,
		PlainHTTP:        true, // loopback only; Kerberos authenticates, nothing encrypts
		Auth:             runspace.AuthKerberos,
		User:             k.User,
		Password:         secret.New(k.Password),
		Realm:            k.Realm,
		KrbConfig:        k.Krb5Conf,
		Parallel:         true,
		Size:             4,
		ConnectTimeout:   10 * time.Second,
		RequestTimeout:   10 * time.Second,
		OperationTimeout: time.Second,
		FailoverBackoff:  100 * time.Millisecond,
	}
	if testing.Verbose() {
		o.Logger = testLogger(t)
	}
	if mutate != nil {
		mutate(&o)
	}
	return o
}

// mailboxRoundTrips runs a Get-CASMailbox on every session of the pool
// at once (concurrent authenticators) and checks the answers.
func mailboxRoundTrips(t *testing.T, p *runspace.Pool, n int) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := p.Do(ctx, getSettings, nil)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("Do() over Kerberos: %v", err)
		}
	}
}

func TestKerberosLogin(t *testing.T) {
	k := kdc.StartT(t, kdc.Options{
		Services:     []string{"HTTP/localhost", spnCAS01, spnCAS02},
		ClientKeytab: true,
	})

	t.Run("password, default SPN HTTP/<server>", func(t *testing.T) {
		port, ws := kerberosServer(t, k, "")
		p := startPool(t, kerberosOptions(t, k, "localhost", port, nil))
		mailboxRoundTrips(t, p, 16)
		st := ws.Stats()
		if st.Unauthorized != 0 {
			t.Errorf("server refused %d requests", st.Unauthorized)
		}
		if !strings.Contains(k.Log(), "for HTTP/localhost@"+k.Realm) {
			t.Errorf("KDC issued no ticket for HTTP/localhost:\n%s", k.Log())
		}
	})

	t.Run("keytab, explicit SPN", func(t *testing.T) {
		port, ws := kerberosServer(t, k, spnCAS01)
		p := startPool(t, kerberosOptions(t, k, "127.0.0.1", port, func(o *runspace.Options) {
			o.Password = secret.String{}
			o.Keytab = k.ClientKeytab
			o.SPN = spnCAS01
		}))
		mailboxRoundTrips(t, p, 8)
		if st := ws.Stats(); st.Unauthorized != 0 {
			t.Errorf("server refused %d requests", st.Unauthorized)
		}
	})

	// The psrp session kind authenticates the same way to /PowerShell/.
	t.Run("psrp, password and keytab", func(t *testing.T) {
		port, ws := kerberosServer(t, k, "")
		p := startPool(t, kerberosOptions(t, k, "localhost", port, func(o *runspace.Options) { o.Mode = runspace.ModePSRP }))
		mailboxRoundTrips(t, p, 8)
		p2 := startPool(t, kerberosOptions(t, k, "localhost", port, func(o *runspace.Options) {
			o.Mode, o.Password, o.Keytab = runspace.ModePSRP, secret.String{}, k.ClientKeytab
		}))
		mailboxRoundTrips(t, p2, 4)
		if st := ws.Stats(); st.Unauthorized != 0 {
			t.Errorf("server refused %d requests", st.Unauthorized)
		}
	})

	t.Run("user@REALM without Realm", func(t *testing.T) {
		port, _ := kerberosServer(t, k, "")
		p := startPool(t, kerberosOptions(t, k, "localhost", port, func(o *runspace.Options) {
			o.User, o.Realm = k.User+"@"+k.Realm, ""
		}))
		mailboxRoundTrips(t, p, 1)
	})
}

// TestKerberosTicketExpiry: service tickets that live one second expire
// between requests; the client gets new ones instead of sending expired
// tickets, which the server refuses (KRB_AP_ERR_TKT_EXPIRED) once they are
// older than its 300 ms tolerance.
func TestKerberosTicketExpiry(t *testing.T) {
	k := kdc.StartT(t, kdc.Options{Services: []string{"HTTP/localhost"}})
	if err := k.SetMaxLife(testCtx(t, 10*time.Second), "HTTP/localhost", time.Second); err != nil {
		t.Fatal(err)
	}
	port, ws := kerberosServerSkew(t, k, "", 300*time.Millisecond)
	p := startPool(t, kerberosOptions(t, k, "localhost", port, nil))
	mailboxRoundTrips(t, p, 2)
	time.Sleep(1500 * time.Millisecond)
	mailboxRoundTrips(t, p, 2)
	if st := ws.Stats(); st.Unauthorized != 0 {
		t.Errorf("server refused %d requests (expired tickets sent)", st.Unauthorized)
	}
}

// TestKerberosErrors: each failure names what to fix.
func TestKerberosErrors(t *testing.T) {
	k := kdc.StartT(t, kdc.Options{Services: []string{"HTTP/localhost", spnCAS01, spnCAS02}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := k.AddUser(ctx, "pwexpired", "Expired-1", "-pwexpire", "yesterday"); err != nil {
		t.Fatal(err)
	}
	if err := k.AddUser(ctx, "acctexpired", "Expired-2", "-expire", "yesterday"); err != nil {
		t.Fatal(err)
	}
	port, ws := kerberosServer(t, k, spnCAS01)

	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	deadKDC := closed.Addr().String()
	closed.Close()
	unreachable := filepath.Join(t.TempDir(), "krb5.conf")
	if err := os.WriteFile(unreachable, []byte(k.Krb5ConfText(deadKDC)), 0o600); err != nil {
		t.Fatal(err)
	}

	f := func(name string, mutate func(*runspace.Options), code int32, want ...string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			p, err := runspace.NewPool(kerberosOptions(t, k, "127.0.0.1", port, func(o *runspace.Options) {
				o.SPN = spnCAS01
				mutate(o)
			}))
			if err != nil {
				t.Fatalf("NewPool() error = %v", err)
			}
			defer p.Close(context.Background())
			err = p.Start(testCtx(t, 20*time.Second))
			var ke *runspace.KerberosError
			if !errors.As(err, &ke) || !errors.Is(err, runspace.ErrAuth) {
				t.Fatalf("Start() error = %v, want a *KerberosError matching ErrAuth", err)
			}
			if ke.Code != code {
				t.Errorf("Code = %d, want %d (%v)", ke.Code, code, err)
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Start() error = %v\nwant it to contain %q", err, w)
				}
			}
			if c := runspace.Classify(err); c != runspace.ClassAuth {
				t.Errorf("Classify() = %q, want %q", c, runspace.ClassAuth)
			}
		})
	}
	f("wrong password", func(o *runspace.Options) { o.Password = secret.New("not-the-password") }, 24,
		"wrong password", "pre-authentication failed", "KDC_ERR_PREAUTH_FAILED", "exchange.password")
	f("unknown principal", func(o *runspace.Options) { o.User = "nobody" }, 6,
		"nobody@"+k.Realm, "KDC_ERR_C_PRINCIPAL_UNKNOWN", "exchange.user")
	f("expired password", func(o *runspace.Options) { o.User, o.Password = "pwexpired", secret.New("Expired-1") }, 23,
		"password of pwexpired@"+k.Realm+" has expired", "KDC_ERR_KEY_EXPIRED")
	f("expired account", func(o *runspace.Options) { o.User, o.Password = "acctexpired", secret.New("Expired-2") }, 1,
		"account acctexpired@"+k.Realm+" has expired", "KDC_ERR_NAME_EXP")
	f("missing SPN", func(o *runspace.Options) { o.SPN = "HTTP/cas09.easconnector.test" }, 7,
		"no service principal HTTP/cas09.easconnector.test", "setspn -S HTTP/cas09.easconnector.test <account>", "KDC_ERR_S_PRINCIPAL_UNKNOWN")
	f("missing SPN of an IP address", func(o *runspace.Options) { o.SPN = "" }, 7,
		"HTTP/127.0.0.1", "by FQDN, not IP address")
	f("SPN of another server", func(o *runspace.Options) { o.SPN = spnCAS02 }, 0,
		"server refused ticket", spnCAS02, "setspn -Q "+spnCAS02, "401")
	f("KDC unreachable", func(o *runspace.Options) { o.KrbConfig = unreachable }, 0,
		"no KDC of realm "+k.Realm+" answered", deadKDC, "port 88")
	f("realm not in krb5.conf", func(o *runspace.Options) { o.Realm = strings.ToLower(k.Realm) }, 0,
		"names no kdc for realm "+strings.ToLower(k.Realm), "upper case")
	f("missing krb5.conf", func(o *runspace.Options) { o.KrbConfig = filepath.Join(t.TempDir(), "none.conf") }, 0,
		"cannot read krb5.conf", "exchange.krb5_conf")
	f("missing keytab", func(o *runspace.Options) {
		o.Password, o.Keytab = secret.String{}, filepath.Join(t.TempDir(), "none.keytab")
	}, 0,
		"cannot read keytab", "exchange.keytab_file")
	f("keytab of another principal", func(o *runspace.Options) { o.Password, o.Keytab = secret.String{}, k.ServiceKeytab }, 0,
		"has no key for "+k.User+"@"+k.Realm, "klist -k")

	if st := ws.Stats(); st.Unauthorized != 1 {
		t.Errorf("server Unauthorized = %d, want 1 (only the other server's SPN reached it)", st.Unauthorized)
	}
}

// TestKerberosClockSkew runs the KDC ten minutes ahead (libfaketime): the
// KDC refuses the login with KRB_AP_ERR_SKEW and the error gives the
// measured skew.
func TestKerberosClockSkew(t *testing.T) {
	k := kdc.StartT(t, kdc.Options{Services: []string{"HTTP/localhost"}, ClockOffset: 10 * time.Minute})
	p, err := runspace.NewPool(kerberosOptions(t, k, "localhost", 1, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	err = p.Start(testCtx(t, 20*time.Second))
	var ke *runspace.KerberosError
	if !errors.As(err, &ke) || ke.Code != 37 {
		t.Fatalf("Start() error = %v, want a *KerberosError with code 37 (KRB_AP_ERR_SKEW)", err)
	}
	if ke.Skew < 9*time.Minute || ke.Skew > 11*time.Minute {
		t.Errorf("Skew = %s, want about 10m", ke.Skew)
	}
	for _, w := range []string{"clock skew", "10m0s ahead of this host's", "fix time synchronisation", "KRB_AP_ERR_SKEW"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Start() error = %v\nwant it to contain %q", err, w)
		}
	}
}

func TestKerberosOptions(t *testing.T) {
	f := func(mutate func(*runspace.Options), want string) {
		t.Helper()
		o := runspace.Options{Servers: []string{"cas01"}, User: "svc", Password: secret.New("pw")}
		mutate(&o)
		_, err := runspace.NewPool(o)
		if want == "" {
			if err != nil {
				t.Errorf("NewPool() error = %v, want nil", err)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NewPool() error = %v, want %q", err, want)
		}
	}
	f(func(o *runspace.Options) { o.Keytab = "/etc/svc.keytab" }, "Keytab: only used with kerberos auth")
	f(func(o *runspace.Options) {
		o.Auth, o.Password, o.Keytab, o.KrbConfig, o.Realm = runspace.AuthKerberos, secret.String{}, "/etc/svc.keytab", "/etc/krb5.conf", "R"
	}, "")
	f(func(o *runspace.Options) {
		o.Auth, o.Password, o.KrbConfig, o.Realm = runspace.AuthKerberos, secret.String{}, "/etc/krb5.conf", "R"
	},
		"Password: required (or Keytab")
}

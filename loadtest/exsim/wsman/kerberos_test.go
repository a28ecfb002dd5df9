package wsman_test

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	krbclient "github.com/jcmturner/gokrb5/v8/client"
	krbconfig "github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/gssapi"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/masterzen/winrm"

	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
	"github.com/easconnector/easconnector/loadtest/kdc"
)

const (
	spnCAS01 = "HTTP/cas01.easconnector.test"
	spnCAS02 = "HTTP/cas02.easconnector.test"
)

// krbFixture is a real KDC whose user is testUser, a client logged in to
// it, and a fixture accepting Kerberos for spn.
type krbFixture struct {
	*fixture
	kdc *kdc.KDC
	cl  *krbclient.Client
}

func newKrbFixture(t *testing.T, spn string) *krbFixture {
	t.Helper()
	k := kdc.StartT(t, kdc.Options{User: testUser, Services: []string{spnCAS01, spnCAS02, "HTTP/localhost"}})
	kerb, err := wsman.NewKerberos(k.ServiceKeytab, spn)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, fixtureConfig{opts: wsman.Options{Kerberos: kerb}})
	cfg, err := krbconfig.Load(k.Krb5Conf)
	if err != nil {
		t.Fatal(err)
	}
	cl := krbclient.NewWithPassword(k.User, k.Realm, k.Password, cfg, krbclient.DisablePAFXFAST(true))
	if err := cl.Login(); err != nil {
		t.Fatalf("Login() error = %v", err)
	}
	t.Cleanup(cl.Destroy)
	return &krbFixture{fixture: f, kdc: k, cl: cl}
}

// negotiate returns a fresh "Negotiate <SPNEGO>" header value for spn.
func (f *krbFixture) negotiate(t *testing.T, spn string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.url(), nil)
	if err := spnego.SetSPNEGOHeader(f.cl, req, spn); err != nil {
		t.Fatalf("SetSPNEGOHeader(%s) error = %v", spn, err)
	}
	return req.Header.Get("Authorization")
}

// kerberos returns a "Kerberos <GSS-API KRB5 token>" header value for spn.
func (f *krbFixture) kerberos(t *testing.T, spn string) string {
	t.Helper()
	tkt, key, err := f.cl.GetServiceTicket(spn)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := spnego.NewKRB5TokenAPREQ(f.cl, tkt, key, []int{gssapi.ContextFlagInteg, gssapi.ContextFlagConf}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tok.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return "Kerberos " + base64.StdEncoding.EncodeToString(b)
}

// create posts a Create shell request to url with the Authorization value.
func (f *krbFixture) create(t *testing.T, url, authz string) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(msg(winrm.NewOpenShellRequest(url, params("PT5S", 153600)))))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/soap+xml;charset=UTF-8")
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	hc := &http.Client{Timeout: 15 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header
}

func TestKerberosAuth(t *testing.T) {
	f := newKrbFixture(t, spnCAS01)

	// Accepted: SPNEGO and the bare Kerberos scheme, mapped to the user.
	for _, authz := range []string{f.negotiate(t, spnCAS01), f.kerberos(t, spnCAS01)} {
		if status, _ := f.create(t, f.url(), authz); status != http.StatusOK {
			t.Errorf("Create with %s…: status %d, want 200", authz[:12], status)
		}
	}
	shells := f.srv.Shells()
	if len(shells) != 2 || shells[0].User != testUser || shells[1].User != testUser {
		t.Errorf("Shells() = %+v, want two shells of %s", shells, testUser)
	}

	// A NegTokenInit offering only another mechanism (IAKerb here; NTLM
	// clients send NTLMSSP the same way): nothing to verify.
	otherMech, err := (&spnego.SPNEGOToken{Init: true, NegTokenInit: spnego.NegTokenInit{
		MechTypes:      append(spnego.NegTokenInit{}.MechTypes, gssapi.OIDGSSIAKerb.OID()),
		MechTokenBytes: []byte("NTLMSSP\x00\x01\x00\x00\x00"),
	}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	replayed := f.negotiate(t, spnCAS01)
	if status, _ := f.create(t, f.url(), replayed); status != http.StatusOK {
		t.Fatalf("first use of a token: status %d", status)
	}
	before := f.srv.Stats().Unauthorized
	refused := []struct{ name, authz string }{
		{"no credentials", ""},
		{"ticket for another server's SPN", f.negotiate(t, spnCAS02)},
		{"Kerberos token for another SPN", f.kerberos(t, spnCAS02)},
		{"replayed authenticator", replayed},
		{"not base64", "Negotiate !!!"},
		{"not a token", "Negotiate " + base64.StdEncoding.EncodeToString([]byte("hello"))},
		{"another mechanism inside SPNEGO", "Negotiate " + base64.StdEncoding.EncodeToString(otherMech)},
		{"empty Negotiate", "Negotiate "},
	}
	for _, tc := range refused {
		status, h := f.create(t, f.url(), tc.authz)
		if status != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", tc.name, status)
			continue
		}
		if got := h.Values("WWW-Authenticate"); !slices.Contains(got, "Negotiate") || !slices.Contains(got, "Kerberos") ||
			!slices.Contains(got, `Basic realm="WSMAN"`) {
			t.Errorf("%s: WWW-Authenticate = %q, want Basic, Negotiate and Kerberos", tc.name, got)
		}
	}
	if got := f.srv.Stats().Unauthorized - before; got != uint64(len(refused)) {
		t.Errorf("Stats().Unauthorized grew by %d, want %d", got, len(refused))
	}

	// Basic keeps working beside Kerberos.
	if status, _, body := f.post(t, msg(winrm.NewOpenShellRequest(f.url(), params("PT5S", 153600)))); status != http.StatusOK {
		t.Errorf("Basic Create: status %d, %s", status, body)
	}
}

// TestKerberosPrincipalMapping: a valid ticket of a principal that is not
// one of Options.Users is refused; any principal is accepted without Users.
func TestKerberosPrincipalMapping(t *testing.T) {
	k := kdc.StartT(t, kdc.Options{User: "stranger", Services: []string{spnCAS01}})
	kerb, err := wsman.NewKerberos(k.ServiceKeytab, spnCAS01)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := krbconfig.Load(k.Krb5Conf)
	cl := krbclient.NewWithPassword(k.User, k.Realm, k.Password, cfg, krbclient.DisablePAFXFAST(true))
	if err := cl.Login(); err != nil {
		t.Fatal(err)
	}
	defer cl.Destroy()

	for _, tc := range []struct {
		name  string
		users map[string]string
		want  int
	}{
		{"other user", map[string]string{testUser: testPass}, http.StatusUnauthorized},
		{"by principal", map[string]string{"Stranger@" + k.Realm: "x"}, http.StatusOK},
		{"by name", map[string]string{"STRANGER": "x"}, http.StatusOK},
		{"no Users", map[string]string{}, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kf := &krbFixture{fixture: newFixture(t, fixtureConfig{opts: wsman.Options{Users: tc.users, Kerberos: kerb}}), kdc: k, cl: cl}
			if status, _ := kf.create(t, kf.url(), kf.negotiate(t, spnCAS01)); status != tc.want {
				t.Errorf("Users %v: status %d, want %d", tc.users, status, tc.want)
			}
		})
	}
}

// TestKerberosSPNFromHost: without Options.Kerberos.SPN the ticket must be
// for HTTP/<host the client addressed>.
func TestKerberosSPNFromHost(t *testing.T) {
	f := newKrbFixture(t, "")
	byName := "http://localhost:" + strconv.Itoa(f.port) + "/wsman"
	if status, _ := f.create(t, byName, f.negotiate(t, "HTTP/localhost")); status != http.StatusOK {
		t.Errorf("ticket for HTTP/localhost to localhost: status %d, want 200", status)
	}
	if status, _ := f.create(t, byName, f.negotiate(t, spnCAS01)); status != http.StatusUnauthorized {
		t.Errorf("ticket for %s to localhost: status %d, want 401", spnCAS01, status)
	}
}

// TestKerberosExpiredTicket: a ticket past its end time by more than the
// clock-skew tolerance is refused even with a fresh authenticator.
func TestKerberosExpiredTicket(t *testing.T) {
	k := kdc.StartT(t, kdc.Options{User: testUser, Services: []string{spnCAS01}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := k.SetMaxLife(ctx, spnCAS01, time.Second); err != nil {
		t.Fatal(err)
	}
	kerb, err := wsman.NewKerberos(k.ServiceKeytab, spnCAS01)
	if err != nil {
		t.Fatal(err)
	}
	kerb.MaxClockSkew = 300 * time.Millisecond
	cfg, _ := krbconfig.Load(k.Krb5Conf)
	cl := krbclient.NewWithPassword(k.User, k.Realm, k.Password, cfg, krbclient.DisablePAFXFAST(true))
	if err := cl.Login(); err != nil {
		t.Fatal(err)
	}
	defer cl.Destroy()
	f := &krbFixture{fixture: newFixture(t, fixtureConfig{opts: wsman.Options{Kerberos: kerb}}), kdc: k, cl: cl}
	tkt, key, err := cl.GetServiceTicket(spnCAS01)
	if err != nil {
		t.Fatal(err)
	}
	token := func() string {
		tok, err := spnego.NewKRB5TokenAPREQ(cl, tkt, key, []int{gssapi.ContextFlagInteg}, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := tok.Marshal()
		return "Kerberos " + base64.StdEncoding.EncodeToString(b)
	}
	if status, _ := f.create(t, f.url(), token()); status != http.StatusOK {
		t.Fatalf("fresh ticket: status %d, want 200", status)
	}
	// The ticket lives one second (the service's maxlife); the client
	// cannot read its end time, which is in the part only the service
	// decrypts.
	time.Sleep(1500 * time.Millisecond)
	if status, _ := f.create(t, f.url(), token()); status != http.StatusUnauthorized {
		t.Errorf("expired ticket: status %d, want 401", status)
	}
}

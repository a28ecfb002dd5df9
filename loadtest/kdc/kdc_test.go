package kdc_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	krbclient "github.com/jcmturner/gokrb5/v8/client"
	krbconfig "github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/easconnector/easconnector/loadtest/kdc"
)

// TestKDC logs in to a real KDC with the password and with the exported
// keytab, gets a service ticket that the service keytab decrypts, and
// checks that Close leaves nothing behind.
func TestKDC(t *testing.T) {
	k := kdc.StartT(t, kdc.Options{
		Services:     kdc.HTTPServices("CAS01.easconnector.test.", "localhost"),
		ClientKeytab: true,
	})
	if !strings.HasPrefix(k.Addr, "127.0.0.1:") {
		t.Fatalf("Addr = %q, want a 127.0.0.1 address", k.Addr)
	}
	cfg, err := krbconfig.Load(k.Krb5Conf)
	if err != nil {
		t.Fatalf("krb5.conf: %v", err)
	}

	pw := krbclient.NewWithPassword(k.User, k.Realm, k.Password, cfg, krbclient.DisablePAFXFAST(true))
	if err := pw.Login(); err != nil {
		t.Fatalf("password Login() error = %v\nKDC log:\n%s", err, k.Log())
	}
	defer pw.Destroy()
	tkt, _, err := pw.GetServiceTicket("HTTP/cas01.easconnector.test")
	if err != nil {
		t.Fatalf("GetServiceTicket() error = %v", err)
	}
	skt, err := keytab.Load(k.ServiceKeytab)
	if err != nil {
		t.Fatalf("service keytab: %v", err)
	}
	if err := tkt.DecryptEncPart(skt, nil); err != nil {
		t.Fatalf("service keytab cannot decrypt the ticket: %v", err)
	}
	if got := tkt.DecryptedEncPart.CName.PrincipalNameString(); got != k.User {
		t.Fatalf("ticket client = %q, want %q", got, k.User)
	}

	ckt, err := keytab.Load(k.ClientKeytab)
	if err != nil {
		t.Fatalf("client keytab: %v", err)
	}
	kc := krbclient.NewWithKeytab(k.User, k.Realm, ckt, cfg, krbclient.DisablePAFXFAST(true))
	if err := kc.Login(); err != nil {
		t.Fatalf("keytab Login() error = %v", err)
	}
	kc.Destroy()

	bad := krbclient.NewWithPassword(k.User, k.Realm, "wrong", cfg, krbclient.DisablePAFXFAST(true), krbclient.AssumePreAuthentication(true))
	if err := bad.Login(); err == nil || !strings.Contains(err.Error(), "KDC_ERR_PREAUTH_FAILED") {
		t.Fatalf("wrong password Login() error = %v, want KDC_ERR_PREAUTH_FAILED", err)
	}
	if !strings.Contains(k.Log(), "PREAUTH_FAILED") {
		t.Errorf("KDC log lacks the refusal:\n%s", k.Log())
	}

	if err := k.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}
	if _, err := os.Stat(k.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Dir %s still exists after Close: %v", k.Dir, err)
	}
	if err := pw.Login(); err == nil {
		t.Errorf("Login() after Close succeeded; the KDC still answers")
	}
}

// TestAdminErrors: kadmin.local exits 0 on a failed query; Admin must not.
func TestAdminErrors(t *testing.T) {
	k := kdc.StartT(t, kdc.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := k.Admin(ctx, "getprinc nosuch"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Admin(getprinc nosuch) error = %v, want 'does not exist'", err)
	}
	if err := k.AddUser(ctx, k.User, "again"); err == nil {
		t.Errorf("AddUser(existing) error = nil, want an error")
	}
	out, err := k.Admin(ctx, "getprinc "+k.User)
	if err != nil || !strings.Contains(out, "REQUIRES_PRE_AUTH") {
		t.Errorf("getprinc = %q, %v; want REQUIRES_PRE_AUTH", out, err)
	}
}

// TestClockOffset runs the KDC under libfaketime: it refuses a client
// whose clock is ten minutes off with KRB_AP_ERR_SKEW.
func TestClockOffset(t *testing.T) {
	k := kdc.StartT(t, kdc.Options{ClockOffset: 10 * time.Minute})
	cfg, err := krbconfig.Load(k.Krb5Conf)
	if err != nil {
		t.Fatal(err)
	}
	cl := krbclient.NewWithPassword(k.User, k.Realm, k.Password, cfg, krbclient.DisablePAFXFAST(true), krbclient.AssumePreAuthentication(true))
	if err := cl.Login(); err == nil || !strings.Contains(err.Error(), "KRB_AP_ERR_SKEW") {
		t.Fatalf("Login() error = %v, want KRB_AP_ERR_SKEW", err)
	}
}

func TestStartTimeout(t *testing.T) {
	if err := kdc.Available(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if k, err := kdc.Start(ctx, kdc.Options{}); err == nil {
		k.Close()
		t.Fatal("Start(cancelled ctx) error = nil")
	}
}

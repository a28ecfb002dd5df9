package config

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/mdm"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/pipeline/notify"
	"github.com/easconnector/easconnector/pipeline/schedule"
	"github.com/easconnector/easconnector/server"
)

const (
	groupA = "aaaaaaaa-0000-0000-0000-000000000001"
	groupB = "bbbbbbbb-0000-0000-0000-000000000002"
)

func TestPipelinePolicy(t *testing.T) {
	base := func() *Config {
		c := mustParse(t, minimal)
		c.Policy.Enabled = true
		c.MDM.IncludedGroups = []string{groupA}
		c.MDM.ExcludedGroups = []string{groupB}
		return c
	}
	f := func(name string, edit func(*Config), exDefault exchange.AccessLevel, check func(pipeline.Policy), wantErr string) {
		t.Helper()
		c := base()
		edit(c)
		got, err := c.PipelinePolicy(exDefault)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("%s: PipelinePolicy() = %v, want error containing %q", name, err, wantErr)
			}
			return
		}
		if err != nil {
			t.Errorf("%s: PipelinePolicy() = %v", name, err)
			return
		}
		check(got)
	}
	f("defaults", func(*Config) {}, exchange.LevelQuarantine, func(p pipeline.Policy) {
		want := pipeline.Policy{Enabled: true, IncludedGroups: []string{groupA}, ExcludedGroups: []string{groupB},
			Unmanaged: pipeline.ActionDefault, Untargeted: pipeline.UntargetedAuto, Grace: 24 * time.Hour,
			StaleAfter: 30 * 24 * time.Hour, OrgDefault: exchange.LevelQuarantine}
		if !reflect.DeepEqual(p, want) {
			t.Errorf("PipelinePolicy() = %+v\nwant %+v", p, want)
		}
	}, "")
	f("file wins over Exchange", func(c *Config) { c.Policy.DefaultAccessLevel = "block" }, exchange.LevelAllow, func(p pipeline.Policy) {
		if p.OrgDefault != exchange.LevelBlock {
			t.Errorf("OrgDefault = %q, want Block", p.OrgDefault)
		}
	}, "")
	f("exceptions", func(c *Config) {
		c.Policy.Unmanaged = "quarantine"
		c.Policy.PlatformExceptions = []PlatformException{{Characteristic: "DeviceType", Value: "WindowsMail", Action: "block"}}
	}, exchange.LevelQuarantine, func(p pipeline.Policy) {
		want := []pipeline.PlatformException{{Characteristic: exchange.CharDeviceType, Value: "WindowsMail", Action: pipeline.ActionBlock}}
		if p.Unmanaged != pipeline.ActionQuarantine || !reflect.DeepEqual(p.PlatformExceptions, want) {
			t.Errorf("PipelinePolicy() = %+v", p)
		}
	}, "")
	f("no groups", func(c *Config) { c.MDM.IncludedGroups = nil }, exchange.LevelQuarantine, nil, "mdm.included_groups: at least one group")
	f("disabled needs no groups", func(c *Config) { c.Policy.Enabled = false; c.MDM.IncludedGroups = nil }, exchange.LevelAllow,
		func(p pipeline.Policy) {
			if p.Enabled {
				t.Error("Enabled = true")
			}
		}, "")
	f("quarantine under an Allow default", func(c *Config) { c.Policy.Unmanaged = "quarantine" }, exchange.LevelAllow, nil,
		`policy.unmanaged: "quarantine" leaves the device to the organization's DefaultAccessLevel, which is Allow (as Exchange reports it)`)
	f("quarantine exception", func(c *Config) {
		c.Policy.DefaultAccessLevel = "allow"
		c.Policy.PlatformExceptions = []PlatformException{{Characteristic: "DeviceOS", Value: "Android 4", Action: "quarantine"}}
	}, exchange.LevelQuarantine, nil, "policy.platform_exceptions[0].action: \"quarantine\" leaves the device to the organization's DefaultAccessLevel, which is Allow (set in the file)")
	f("unknown Exchange default", func(*Config) {}, "", nil, "policy.default_access_level: not set, and Exchange reports no usable DefaultAccessLevel")
}

func TestOrgAndGuard(t *testing.T) {
	c := mustParse(t, minimal)
	if got := c.OrgConfig(); !reflect.DeepEqual(got, pipeline.OrgConfig{DeviceAccessRules: true}) {
		t.Errorf("OrgConfig(defaults) = %+v", got)
	}
	empty, insert := []string{}, "Enroll at https://portal"
	c.Policy.DefaultAccessLevel = "quarantine"
	c.Policy.AdminMailRecipients = &empty
	c.Policy.UserMailInsert = &insert
	got := c.OrgConfig()
	if !got.DefaultAccessLevel || got.AdminMailRecipients == nil || len(got.AdminMailRecipients) != 0 ||
		got.UserMailInsert == nil || *got.UserMailInsert != insert || got.UserMailInsert == &insert {
		t.Errorf("OrgConfig() = %+v: want the level asserted, recipients cleared and a copy of the insert", got)
	}
	c.Guard = Guard{MinMDMRatio: 0.7, MaxNewBlocks: 20, MaxNewBlocksRatio: 0.02}
	if g := c.GuardConfig(); g != (pipeline.GuardConfig{MinMDMRatio: 0.7, MaxNewBlocks: 20, MaxNewBlocksRatio: 0.02}) {
		t.Errorf("GuardConfig() = %+v", g)
	}
}

func TestPipelineOptions(t *testing.T) {
	c := mustParse(t, minimal)
	c.Sync.StateDir = "/var/lib/x"
	c.Policy.AdoptExisting = true
	c.Policy.DefaultAccessLevel = "quarantine"
	o, err := c.PipelineOptions(exchange.LevelAllow)
	if err != nil {
		t.Fatal(err)
	}
	if o.Workers != 1 || o.StateDir != "/var/lib/x" || !o.AdoptExisting || o.Policy.Enabled || o.Org.DefaultAccessLevel {
		t.Errorf("PipelineOptions(disabled, serial) = %+v: want 1 worker and no org changes", o)
	}
	c.Exchange.EnableParallelCommandSupport, c.Exchange.Runspaces = true, 6
	c.Policy.Enabled, c.MDM.IncludedGroups = true, []string{groupA}
	if o, err = c.PipelineOptions(exchange.LevelAllow); err != nil {
		t.Fatal(err)
	}
	if o.Workers != 6 || !o.Org.DefaultAccessLevel || o.Policy.OrgDefault != exchange.LevelQuarantine {
		t.Errorf("PipelineOptions(enabled, parallel) = %+v", o)
	}
}

func TestNotifyOptions(t *testing.T) {
	c := mustParse(t, minimal)
	if _, err := c.NotifyOptions(); err == nil || err.Error() != "notify.enabled: is false" {
		t.Errorf("NotifyOptions(disabled) = %v", err)
	}
	c.Notify = Notify{Enabled: true, SMTPHost: "smtp.contoso.com", SMTPPort: 465, Security: "tls", User: "svc",
		PasswordEnv: "EASC_TEST_SMTP", From: "mobile@contoso.com", EnrollmentURL: "https://portal", TemplatesDir: "/t"}
	if _, err := c.NotifyOptions(); err == nil || !strings.HasPrefix(err.Error(), "notify.password_env: ") {
		t.Errorf("NotifyOptions(no password) = %v", err)
	}
	t.Setenv("EASC_TEST_SMTP", "s3cret")
	got, err := c.NotifyOptions()
	if err != nil {
		t.Fatal(err)
	}
	want := notify.Options{SMTP: notify.SMTPOptions{Host: "smtp.contoso.com", Port: 465, Security: notify.SecurityTLS, Username: "svc", Password: secret.New("s3cret")},
		From: "mobile@contoso.com", EnrollURL: "https://portal", TemplatesDir: "/t"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("NotifyOptions() = %+v\nwant %+v", got, want)
	}
}

func TestServerOptions(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	c := mustParse(t, minimal)
	c.Server.TokenFile = token
	f := func(content string, wantErr string) {
		t.Helper()
		if err := os.WriteFile(token, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := c.ServerOptions()
		switch {
		case wantErr != "":
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("ServerOptions(%q) = %v, want %q", content, err, wantErr)
			}
		case err != nil:
			t.Errorf("ServerOptions(%q) = %v", content, err)
		case !reflect.DeepEqual(got, server.Options{Listen: "127.0.0.1:8443", Token: secret.New(strings.TrimSpace(content))}):
			t.Errorf("ServerOptions(%q) = %+v", content, got)
		}
	}
	f("0123456789abcdef0123\n", "")
	f("short\n", "server.token_file: the token must be at least 16 characters, got 5")
	f("", "server.token_file: "+token+" is empty")

	// The read-only token, and the keys beside it.
	os.WriteFile(token, []byte("0123456789abcdef0123\n"), 0o600)
	t.Setenv("EASC_TEST_READ", "read-only-token-0123456789")
	c.Server.ReadTokenEnv, c.Server.AllowedHosts, c.Server.LoopbackPublicCounts = "EASC_TEST_READ", []string{"easc.contoso.com"}, true
	got, err := c.ServerOptions()
	want := server.Options{Listen: "127.0.0.1:8443", Token: secret.New("0123456789abcdef0123"), ReadToken: secret.New("read-only-token-0123456789"),
		AllowedHosts: []string{"easc.contoso.com"}, LoopbackPublicCounts: true}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ServerOptions() = %+v, %v\nwant %+v", got, err, want)
	}
	t.Setenv("EASC_TEST_READ", "short-read")
	if _, err := c.ServerOptions(); err == nil || err.Error() != "server.read_token_env: the token must be at least 16 characters, got 10" {
		t.Errorf("ServerOptions(short read token) = %v", err)
	}
	t.Setenv("EASC_TEST_READ", "0123456789abcdef0123")
	if _, err := c.ServerOptions(); err == nil || !strings.Contains(err.Error(), "read-only token must differ") || strings.Contains(err.Error(), "0123456789abcdef") {
		t.Errorf("ServerOptions(read token = admin token) = %v", err)
	}
	c.Server.Listen = ""
	if _, err := c.ServerOptions(); err == nil || !strings.HasPrefix(err.Error(), "server.listen: ") {
		t.Errorf("ServerOptions(disabled) = %v", err)
	}
}

func TestScheduleOptions(t *testing.T) {
	c := mustParse(t, minimal)
	got, err := c.ScheduleOptions()
	want := schedule.Options{QuickInterval: 2 * time.Hour, Jitter: 10 * time.Minute, FullAt: "03:00", ShutdownTimeout: 30 * time.Second}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ScheduleOptions() = %+v, %v\nwant %+v", got, err, want)
	}
	c.Sync.QuickJitter = Dur(0)
	if got, _ := c.ScheduleOptions(); got.Jitter != noJitter {
		t.Errorf("ScheduleOptions(quick_jitter 0s).Jitter = %v, want %v (none; 0 would select the default)", got.Jitter, noJitter)
	}
	got, _ = c.ScheduleOptions()
	if _, err := schedule.New(got, func(context.Context, schedule.Kind, string) error { return nil }); err != nil {
		t.Errorf("schedule.New(ScheduleOptions()) = %v", err)
	}
	c.Sync.QuickJitter = Dur(time.Hour)
	if _, err := c.ScheduleOptions(); err == nil || !strings.HasPrefix(err.Error(), "sync.quick_jitter: must be less than half") {
		t.Errorf("ScheduleOptions(jitter = half) = %v", err)
	}
}

func TestNewLogger(t *testing.T) {
	f := func(level, format, want string, debugShown bool) {
		t.Helper()
		c := mustParse(t, minimal)
		c.Log = Log{Level: level, Format: format}
		var buf bytes.Buffer
		l := c.NewLogger(&buf)
		l.Debug("dbg")
		l.Warn("hello", "k", "v")
		out := buf.String()
		if !strings.Contains(out, want) || strings.Contains(out, "dbg") != debugShown {
			t.Errorf("NewLogger(%s, %s) wrote %q, want %q (debug shown: %v)", level, format, out, want, debugShown)
		}
	}
	f("info", "text", "level=WARN msg=hello k=v", false)
	f("debug", "json", `"msg":"hello","k":"v"`, true)
	f("error", "text", "", false)
}

func pemOf(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeCertKey writes a self-signed certificate and its RSA key.
func writeCertKey(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "easconnector"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "app.crt"), filepath.Join(dir, "app.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

func TestGraphOptions(t *testing.T) {
	t.Setenv("EASC_TEST_SECRET", "app-secret")
	c := mustParse(t, minimal)
	got, err := c.GraphOptions()
	want := mdm.GraphOptions{TenantID: "contoso.onmicrosoft.com", ClientID: "11111111-2222-3333-4444-555555555555",
		ClientSecret: secret.New("app-secret"), AuthorityURL: DefaultGraphAuthority, GraphURL: DefaultGraphURL, PageSize: 1000}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("GraphOptions() = %+v, %v\nwant %+v", got, err, want)
	}
	src, err := c.MDMSource(nil, nil)
	if _, ok := src.(*mdm.Graph); err != nil || !ok {
		t.Errorf("MDMSource(graph) = %T, %v", src, err)
	}

	dir := t.TempDir()
	certPath, keyPath := writeCertKey(t, dir)
	c.MDM.ClientSecretEnv, c.MDM.CertificateFile, c.MDM.KeyFile = "", certPath, keyPath
	if got, err = c.GraphOptions(); err != nil || got.Certificate == nil || got.PrivateKey.Reveal() == nil || !got.ClientSecret.IsZero() {
		t.Errorf("GraphOptions(certificate) = %+v, %v", got, err)
	}
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GraphOptions(); err == nil || !strings.HasPrefix(err.Error(), "mdm.key_file: ") || !errors.Is(err, ErrSecretExposed) {
		t.Errorf("GraphOptions(world-readable key) = %v, want mdm.key_file: …exposed", err)
	}
	other := filepath.Join(dir, "other.key") // a certificate is no key
	if err := os.WriteFile(other, pemOf(t, certPath), 0o600); err != nil {
		t.Fatal(err)
	}
	c.MDM.KeyFile = other
	if _, err := c.GraphOptions(); err == nil || !strings.HasPrefix(err.Error(), "mdm.certificate_file, mdm.key_file: ") {
		t.Errorf("GraphOptions(no key) = %v", err)
	}

	c.MDM.Source, c.MDM.File = "file", filepath.Join(dir, "export.json")
	if src, err := c.MDMSource(nil, nil); err != nil || src == nil {
		t.Errorf("MDMSource(file) = %v, %v", src, err)
	}
	if _, err := c.GraphOptions(); err == nil || err.Error() != `mdm.source: is "file", not "graph"` {
		t.Errorf("GraphOptions(file source) = %v", err)
	}
}

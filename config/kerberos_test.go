package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestKeytabFile: exchange.keytab_file replaces the password for the
// Kerberos login and is held to the password file's rules.
func TestKeytabFile(t *testing.T) {
	kerberos := func(c *Config) {
		c.Exchange.Auth, c.Exchange.Realm, c.Exchange.KeytabFile = "kerberos", "CONTOSO.COM", "/etc/easconnector/svc.keytab"
		c.Exchange.User = "svc-eas"
	}
	f := func(name string, mutate func(*Config), want string) {
		t.Helper()
		c := mustParse(t, minimal)
		mutate(c)
		err := c.Validate()
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: Validate() = %v, want nil", name, err)
		case want != "" && (err == nil || err.Error() != want):
			t.Errorf("%s: Validate() = %v, want %s", name, err, want)
		}
	}
	f("keytab without kerberos", func(c *Config) { c.Exchange.KeytabFile = "svc.keytab" },
		`exchange.keytab_file: only used with auth = "kerberos", got auth = "ntlm"`)
	f("keytab, no password", func(c *Config) {
		kerberos(c)
		c.Exchange.PasswordEnv, c.Exchange.SecondHopCredential = "", false
	}, "")
	f("keytab, second hop needs the password", func(c *Config) {
		kerberos(c)
		c.Exchange.PasswordEnv, c.Exchange.Mode = "", "remoting"
	}, "exchange.password_env: required: set password_env or password_file (secrets are never written in this file)")
	for _, spn := range []string{"ex1.contoso.com", "HTTP/ex1.contoso.com@CONTOSO.COM", "HTTP/ex1:443", "HTTP/", "/ex1", "HTTP/a/b"} {
		f("spn "+spn, func(c *Config) { kerberos(c); c.Exchange.SPN = spn },
			fmt.Sprintf("exchange.spn: must be service/host such as HTTP/ex1.contoso.com (no @REALM, no port), got %q", spn))
	}
	f("spn", func(c *Config) { kerberos(c); c.Exchange.SPN = "HTTP/mail.contoso.com" }, "")
	f("password without keytab", func(c *Config) {
		kerberos(c)
		c.Exchange.KeytabFile, c.Exchange.PasswordEnv = "", ""
	}, "exchange.password_env: required: set password_env or password_file (secrets are never written in this file)")

	dir := t.TempDir()
	kt := filepath.Join(dir, "svc.keytab")
	if err := os.WriteFile(kt, []byte{0x05, 0x02}, 0o600); err != nil {
		t.Fatal(err)
	}
	c := mustParse(t, minimal)
	kerberos(c)
	c.Exchange.KeytabFile, c.Exchange.PasswordEnv, c.Exchange.SecondHopCredential = kt, "", false
	o, err := c.RunspaceOptions()
	if err != nil {
		t.Fatalf("RunspaceOptions() = %v", err)
	}
	if o.Keytab != kt || !o.Password.IsZero() || o.Auth != "kerberos" || o.Realm != "CONTOSO.COM" {
		t.Errorf("RunspaceOptions() Keytab %q Password %q Auth %q Realm %q, want the keytab and no password",
			o.Keytab, o.Password, o.Auth, o.Realm)
	}

	c.Exchange.KeytabFile = filepath.Join(dir, "missing.keytab")
	if _, err := c.RunspaceOptions(); err == nil || !strings.HasPrefix(err.Error(), "exchange.keytab_file: ") {
		t.Errorf("RunspaceOptions(missing keytab) = %v, want an error naming exchange.keytab_file", err)
	}
	if runtime.GOOS != "windows" {
		if err := os.Chmod(kt, 0o644); err != nil {
			t.Fatal(err)
		}
		c.Exchange.KeytabFile = kt
		if _, err := c.RunspaceOptions(); !errors.Is(err, ErrSecretExposed) || !strings.HasPrefix(err.Error(), "exchange.keytab_file: ") {
			t.Errorf("RunspaceOptions(world-readable keytab) = %v, want ErrSecretExposed naming exchange.keytab_file", err)
		}
	}
}

// TestKeytabFileRelative: a relative keytab_file is relative to the file.
func TestKeytabFileRelative(t *testing.T) {
	dir := t.TempDir()
	doc := strings.Replace(strings.Replace(minimal, "auth = \"ntlm\"\n", "", 1), "password_env = \"EASC_TEST_PASSWORD\"\n",
		"auth = \"kerberos\"\nrealm = \"CONTOSO.COM\"\nkeytab_file = \"svc.keytab\"\nsecond_hop_credential = false\n", 1)
	path := filepath.Join(dir, "easconnector.toml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	if want := filepath.Join(dir, "svc.keytab"); c.Exchange.KeytabFile != want {
		t.Errorf("KeytabFile = %q, want %q", c.Exchange.KeytabFile, want)
	}
}

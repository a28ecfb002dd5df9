package config

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/easconnector/easconnector/internal/hostaddr"
	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/runspace"
	"github.com/easconnector/easconnector/server"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// minimal is the smallest valid file.
const minimal = `
[exchange]
servers = ["ex1.contoso.com"]
auth = "ntlm"
user = "CONTOSO\\svc-eas"
password_env = "EASC_TEST_PASSWORD"

[mdm]
tenant_id = "contoso.onmicrosoft.com"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret_env = "EASC_TEST_SECRET"
`

func mustParse(t *testing.T, doc string) *Config {
	t.Helper()
	c, err := Parse(strings.NewReader(doc))
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	return c
}

func TestParseFillsDefaults(t *testing.T) {
	got := mustParse(t, minimal)
	want := Default()
	want.Exchange.Servers = []string{"ex1.contoso.com"}
	want.Exchange.Auth = "ntlm"
	want.Exchange.User = `CONTOSO\svc-eas`
	want.Exchange.PasswordEnv = "EASC_TEST_PASSWORD"
	want.MDM.TenantID = "contoso.onmicrosoft.com"
	want.MDM.ClientID = "11111111-2222-3333-4444-555555555555"
	want.MDM.ClientSecretEnv = "EASC_TEST_SECRET"
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("Parse(minimal) = %+v\nwant %+v", *got, want)
	}
	if got.Exchange.Runspaces != 8 || !got.Exchange.CASFailover || got.Exchange.EnableParallelCommandSupport ||
		got.Guard.MaxNewBlocks != 500 || got.Sync.QuickInterval.Duration != 2*time.Hour || got.Server.Listen != "127.0.0.1:8443" {
		t.Errorf("defaults not as documented: %+v", got)
	}
}

// TestMarshalRoundTrip: a configuration written by go-toml reads back equal,
// so `easconnector` can print the effective configuration.
func TestMarshalRoundTrip(t *testing.T) {
	c := mustParse(t, minimal)
	c.Policy.UserMailInsert = new("Enroll at https://portal.manage.microsoft.com")
	c.Policy.AdminMailRecipients = &[]string{"a@contoso.com"}
	c.Policy.PlatformExceptions = []PlatformException{{"DeviceType", "WindowsMail", "block"}}
	c.Policy.Grace = Dur(36 * time.Hour)
	b, err := toml.Marshal(c)
	if err != nil {
		t.Fatalf("Marshal() = %v", err)
	}
	back, err := Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Parse(Marshal()) = %v\n%s", err, b)
	}
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip:\n%+v\nwant\n%+v\n%s", back, c, b)
	}
	empty := mustParse(t, minimal+"[policy]\nadmin_mail_recipients = []\n")
	if r := empty.Policy.AdminMailRecipients; r == nil || len(*r) != 0 {
		t.Errorf("admin_mail_recipients = [] decoded as %v, want a pointer to an empty list (clear)", r)
	}
	if !bytes.Contains(b, []byte(`grace = '1d12h'`)) {
		t.Errorf("Marshal wrote durations as\n%s\nwant grace = '1d12h'", b)
	}
}

func TestValidate(t *testing.T) {
	f := func(name string, mutate func(*Config), want ...string) {
		t.Helper()
		c := mustParse(t, minimal)
		mutate(c)
		err := c.Validate()
		var got []string
		if err != nil {
			got = strings.Split(err.Error(), "\n")
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: Validate() =\n  %s\nwant\n  %s", name, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
		for _, e := range unjoin(err) {
			if _, ok := errors.AsType[*FieldError](e); !ok {
				t.Errorf("%s: %v is a %T, want *FieldError", name, e, e)
			}
		}
	}
	f("valid", func(*Config) {})
	f("runspaces 0", func(c *Config) { c.Exchange.Runspaces = 0 },
		"exchange.runspaces: must be between 1 and 17, got 0")
	f("runspaces 18", func(c *Config) { c.Exchange.Runspaces = 18 },
		"exchange.runspaces: must be between 1 and 17, got 18")
	f("runspaces under raised quota", func(c *Config) { c.Exchange.PowerShellMaxConcurrency, c.Exchange.Runspaces = 25, 24 })
	f("no servers", func(c *Config) { c.Exchange.Servers = nil }, "exchange.servers: at least one server is required")
	f("server url", func(c *Config) { c.Exchange.Servers = []string{"https://ex1:5986", "ex1", "EX1"} },
		`exchange.servers[0]: "https://ex1:5986" is not a host name or IP address (no scheme, port or path; the port is exchange.port)`,
		`exchange.servers[2]: "EX1" is listed twice`)
	f("auth", func(c *Config) { c.Exchange.Auth = "negotiate" },
		`exchange.auth: must be "basic", "ntlm" or "kerberos", got "negotiate"`)
	f("both passwords", func(c *Config) { c.Exchange.PasswordFile = "pw" },
		"exchange.password_file: set only one of password_env and password_file")
	f("no password", func(c *Config) { c.Exchange.PasswordEnv = "" },
		"exchange.password_env: required: set password_env or password_file (secrets are never written in this file)")
	f("bad env name", func(c *Config) { c.Exchange.PasswordEnv = "$PW" },
		`exchange.password_env: "$PW" is not an environment variable name`)
	f("kerberos without realm", func(c *Config) { c.Exchange.Auth = "kerberos" },
		`exchange.realm: required with auth = "kerberos" unless exchange.user is user@REALM (kerberos is the default in psrp mode, as on Exchange's /PowerShell/ virtual directory; set auth = "basic" or "ntlm" only where the directory has it enabled)`)
	f("kerberos without realm, remoting", func(c *Config) { c.Exchange.Auth, c.Exchange.Mode = "kerberos", "remoting" },
		`exchange.realm: required with auth = "kerberos" unless exchange.user is user@REALM`)
	f("kerberos user@REALM", func(c *Config) { c.Exchange.Auth, c.Exchange.User = "kerberos", "svc@CONTOSO.COM" })
	f("realm without kerberos", func(c *Config) { c.Exchange.Realm = "CONTOSO.COM" },
		`exchange.realm: only used with auth = "kerberos", got auth = "ntlm"`)
	plain := `exchange.servers[0]: "ex1.contoso.com" is not a loopback address (or does not resolve): plain HTTP (https = false) would send every cmdlet in clear text; set https = true, or allow_unencrypted = true to accept that`
	f("tls knobs without https", func(c *Config) {
		c.Exchange.Mode = "remoting"
		c.Exchange.HTTPS, c.Exchange.AllowUnencrypted, c.Exchange.CAFile, c.Exchange.InsecureSkipVerify = false, true, "ca.pem", true
	},
		"exchange.insecure_skip_verify: refused with exchange.second_hop_credential: the password would go to any server that answers; set ca_file instead",
		"exchange.ca_file: set, but exchange.https is false",
		"exchange.insecure_skip_verify: set, but exchange.https is false",
		"exchange.second_hop_credential: needs exchange.https = true: the password is passed over the WinRM channel",
		"exchange.insecure_skip_verify: contradicts exchange.ca_file; set one of them")
	f("second hop over http", func(c *Config) {
		c.Exchange.HTTPS, c.Exchange.AllowUnencrypted, c.Exchange.Mode = false, true, "remoting"
	},
		"exchange.second_hop_credential: needs exchange.https = true: the password is passed over the WinRM channel")
	f("plain http to a remote host", func(c *Config) { c.Exchange.HTTPS, c.Exchange.SecondHopCredential = false, false }, plain)
	f("plain http to a remote literal", func(c *Config) {
		c.Exchange.HTTPS, c.Exchange.SecondHopCredential = false, false
		c.Exchange.Servers = []string{"127.0.0.1", "10.0.0.5", "::1", "localhost"}
	}, `exchange.servers[1]: "10.0.0.5" is not a loopback address (or does not resolve): plain HTTP (https = false) would send every cmdlet in clear text; set https = true, or allow_unencrypted = true to accept that`)
	f("plain http allowed explicitly", func(c *Config) {
		c.Exchange.HTTPS, c.Exchange.SecondHopCredential, c.Exchange.AllowUnencrypted, c.Exchange.Mode = false, false, true, "remoting"
	})
	f("allow_unencrypted with https", func(c *Config) { c.Exchange.AllowUnencrypted, c.Exchange.Mode = true, "remoting" },
		"exchange.allow_unencrypted: set, but exchange.https is true")
	f("skip verify with second hop", func(c *Config) { c.Exchange.InsecureSkipVerify, c.Exchange.Mode = true, "remoting" },
		"exchange.insecure_skip_verify: refused with exchange.second_hop_credential: the password would go to any server that answers; set ca_file instead")
	f("skip verify without second hop", func(c *Config) {
		c.Exchange.InsecureSkipVerify, c.Exchange.SecondHopCredential, c.Exchange.Mode = true, false, "remoting"
	})
	f("psrp plain http to a remote host", func(c *Config) { c.Exchange.HTTPS = false }, plain)
	f("psrp over http to loopback", func(c *Config) { c.Exchange.HTTPS, c.Exchange.Servers = false, []string{"127.0.0.1", "localhost"} })
	f("psrp refuses unencrypted and unverified", func(c *Config) {
		c.Exchange.HTTPS, c.Exchange.AllowUnencrypted, c.Exchange.Servers = false, true, []string{"127.0.0.1"}
	}, `exchange.allow_unencrypted: not with mode = "psrp": the /PowerShell/ endpoint needs https = true (plain HTTP only to loopback)`)
	f("psrp skip verify", func(c *Config) { c.Exchange.InsecureSkipVerify = true },
		`exchange.insecure_skip_verify: not with mode = "psrp": the server certificate must be verified; set ca_file for a private CA`)
	f("psrp endpoint", func(c *Config) {
		c.Exchange.EndpointPath, c.Exchange.ConfigurationName = "PowerShell", "Microsoft Exchange"
	},
		`exchange.endpoint_path: "PowerShell" is not an absolute URL path (like /PowerShell/)`,
		`exchange.configuration_name: "Microsoft Exchange" is not a session configuration name (like Microsoft.Exchange)`)
	f("unknown mode", func(c *Config) { c.Exchange.Mode = "winrs" },
		`exchange.mode: must be "psrp", "remoting" or "snapin", got "winrs"`)
	f("snapin over http", func(c *Config) { c.Exchange.HTTPS, c.Exchange.Mode = false, "snapin" }, plain)
	f("snapin over loopback http", func(c *Config) {
		c.Exchange.HTTPS, c.Exchange.Mode, c.Exchange.Servers = false, "snapin", []string{"127.0.0.1"}
	})
	f("timeouts", func(c *Config) {
		c.Exchange.RequestTimeout = Dur(0)
		c.Exchange.OperationTimeout = Dur(10 * time.Minute)
	},
		"exchange.request_timeout: must be between 1s and 1h, got 0s",
		"exchange.operation_timeout: must be between 1s and 5m, got 10m")
	f("log", func(c *Config) { c.Log.Level, c.Log.Format = "trace", "logfmt" },
		`log.level: must be "debug", "info", "warn" or "error", got "trace"`,
		`log.format: must be "text" or "json", got "logfmt"`)
	f("graph ids", func(c *Config) {
		c.MDM.TenantID, c.MDM.ClientID = "contoso", "app"
		c.MDM.IncludedGroups = []string{"EAS users"}
	},
		`mdm.tenant_id: "contoso" is neither a GUID nor a domain name`,
		`mdm.client_id: "app" is not a GUID (the app registration's application id)`,
		`mdm.included_groups[0]: "EAS users" is not a group object id (GUID)`)
	f("graph cert and secret", func(c *Config) { c.MDM.CertificateFile = "app.crt" },
		"mdm.certificate_file: set either a client secret or a certificate, not both")
	f("graph half cert", func(c *Config) { c.MDM.ClientSecretEnv, c.MDM.CertificateFile = "", "app.crt" },
		"mdm.key_file: certificate_file and key_file go together")
	f("graph no credential", func(c *Config) { c.MDM.ClientSecretEnv = "" },
		`mdm.client_secret_env: required with source = "graph": set client_secret_env, client_secret_file, or certificate_file and key_file`)
	f("graph urls", func(c *Config) {
		c.MDM.GraphURL, c.MDM.AuthorityURL = "http://graph.contoso.com", "http://127.0.0.1:8080"
	},
		`mdm.graph_url: "http://graph.contoso.com" must use https (http only for a loopback host)`)
	f("file source", func(c *Config) { c.MDM.Source, c.MDM.FileFormat = "file", "xml" },
		`mdm.file: required with source = "file"`,
		`mdm.file_format: must be "json" or "csv", got "xml"`)
	f("group both ways", func(c *Config) {
		g := "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
		c.MDM.IncludedGroups, c.MDM.ExcludedGroups = []string{g}, []string{strings.ToUpper(g)}
	}, `mdm.excluded_groups[0]: "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE" is also in included_groups`)
	f("policy enums", func(c *Config) {
		c.Policy.Unmanaged, c.Policy.Untargeted, c.Policy.DefaultAccessLevel = "Block", "block", "deny"
	},
		`policy.unmanaged: must be "default", "allow", "block" or "quarantine", got "Block"`,
		`policy.untargeted: must be "auto", "allow" or "default", got "block"`,
		`policy.default_access_level: must be "allow", "block" or "quarantine", got "deny"`)
	f("policy org settings", func(c *Config) {
		c.Policy.AdminMailRecipients = &[]string{"Admins <a@contoso.com>"}
		c.Policy.UserMailInsert = new(strings.Repeat("📱", 129))
	},
		`policy.admin_mail_recipients[0]: "Admins <a@contoso.com>" is not a bare e-mail address (local@domain)`,
		"policy.user_mail_insert: must be at most 256 characters, got 258")
	f("policy durations", func(c *Config) { c.Policy.Grace, c.Policy.StaleAfter = Dur(31*day), Dur(time.Minute) },
		"policy.grace: must be between 0s and 30d, got 31d",
		"policy.stale_after: must be between 1h and 365d, got 1m")
	f("stale_after off", func(c *Config) { c.Policy.StaleAfter = Dur(0) })
	f("platform exceptions", func(c *Config) {
		c.Policy.PlatformExceptions = []PlatformException{
			{"DeviceType", "WindowsMail", "block"},
			{"Imei", "", "deny"},
			{"DeviceType", "WindowsMail", "allow"},
			{"UserAgent", "a\nb", "allow"},
		}
	},
		`policy.platform_exceptions[1].characteristic: must be "DeviceType", "DeviceModel", "DeviceOS" or "UserAgent", got "Imei"`,
		"policy.platform_exceptions[1].value: required",
		`policy.platform_exceptions[1].action: must be "allow", "block" or "quarantine", got "deny"`,
		"policy.platform_exceptions[2]: same characteristic and value as policy.platform_exceptions[0]",
		`policy.platform_exceptions[3].value: "a\nb" contains control characters`)
	f("guard", func(c *Config) { c.Guard.MinMDMRatio, c.Guard.MaxNewBlocks, c.Guard.MaxNewBlocksRatio = 1.5, -1, -0.1 },
		"guard.min_mdm_ratio: must be between 0 and 1, got 1.5",
		"guard.max_new_blocks: must be between 0 and 10000000, got -1",
		"guard.max_new_blocks_ratio: must be between 0 and 1, got -0.1")
	f("jitter of half the interval", func(c *Config) {
		c.Sync.QuickInterval, c.Sync.QuickJitter = Dur(10*time.Minute), Dur(5*time.Minute)
	}, "sync.quick_jitter: must be at least 0s and less than half of sync.quick_interval (5m), got 5m")
	f("sync", func(c *Config) {
		c.Sync.QuickInterval, c.Sync.QuickJitter = Dur(10*time.Minute), Dur(6*time.Minute)
		c.Sync.FullAt, c.Sync.StateDir = "3:00", " "
	},
		"sync.quick_jitter: must be at least 0s and less than half of sync.quick_interval (5m), got 6m",
		`sync.full_at: must be a local time of day "HH:MM" (00:00 to 23:59), got "3:00"`,
		"sync.state_dir: required")
	f("server on the network", func(c *Config) { c.Server.Listen = ":8443" },
		`server.listen: ":8443" is reachable from the network: set token_env or token_file`,
		`server.listen: ":8443" is reachable from the network: set tls_cert and tls_key`)
	f("server secured", func(c *Config) {
		c.Server.Listen, c.Server.TokenFile, c.Server.TLSCert, c.Server.TLSKey = "0.0.0.0:443", "t", "c.pem", "k.pem"
	})
	f("server read-only token on the network", func(c *Config) {
		c.Server.Listen, c.Server.ReadTokenEnv, c.Server.TLSCert, c.Server.TLSKey = "0.0.0.0:443", "EASC_READ", "c.pem", "k.pem"
	})
	f("server tokens", func(c *Config) {
		c.Server.ReadTokenEnv, c.Server.ReadTokenFile, c.Server.TokenEnv = "A", "f", "not a name"
		c.Server.AllowedHosts = []string{"easc.contoso.com", "https://easc", "easc:8443"}
	},
		`server.token_env: "not a name" is not an environment variable name`,
		`server.read_token_file: set only one of read_token_env and read_token_file`,
		`server.allowed_hosts[1]: "https://easc" is not a host name or IP address (no scheme or port)`,
		`server.allowed_hosts[2]: "easc:8443" is not a host name or IP address (no scheme or port)`)
	f("public counts off loopback", func(c *Config) {
		c.Server.Listen, c.Server.TokenFile, c.Server.TLSCert, c.Server.TLSKey = "0.0.0.0:443", "t", "c.pem", "k.pem"
		c.Server.LoopbackPublicCounts = true
	}, `server.loopback_public_counts: listen "0.0.0.0:443" is not loopback only (a literal loopback address, or a name whose every address is loopback)`)
	f("public counts on loopback", func(c *Config) { c.Server.LoopbackPublicCounts = true })
	f("server off", func(c *Config) { c.Server.Listen = "" })
	f("server bad", func(c *Config) { c.Server.Listen, c.Server.TLSCert = "localhost", "c.pem" },
		"server.tls_key: tls_cert and tls_key go together",
		`server.listen: "localhost" is not host:port`)
	f("notify", func(c *Config) {
		n := &c.Notify
		n.Enabled, n.Security, n.User, n.PasswordEnv, n.From = true, "none", "svc", "SMTP_PW", "Mobile <m@contoso.com>"
		n.EnrollmentURL, n.SMTPHost = "portal", "smtp.contoso.com"
	},
		`notify.security: "none" would send the SMTP password in clear to smtp.contoso.com; use starttls or tls`,
		`notify.from: "Mobile <m@contoso.com>" is not a bare e-mail address (local@domain)`,
		`notify.enrollment_url: "portal" is not an absolute URL without query or credentials`)
	f("notify needs host and from", func(c *Config) { c.Notify.Enabled = true },
		`notify.smtp_host: required with enabled = true: a host name or IP address, got ""`,
		"notify.from: required with enabled = true")
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

// TestErrorsGolden pins the messages an administrator sees for broken files.
// Run with -update to rewrite testdata/errors/*.golden.
func TestErrorsGolden(t *testing.T) {
	t.Setenv("EASC_TEST_PASSWORD", "x")
	inputs, err := filepath.Glob("testdata/errors/*.toml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no inputs in testdata/errors: %v", err)
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			_, err := Load(in)
			if err == nil {
				t.Fatalf("Load(%s) = nil error", in)
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(in, ".toml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if got != string(want) {
				t.Errorf("Load(%s) error =\n%s\nwant\n%s", in, got, want)
			}
		})
	}
}

func TestPositionedErrors(t *testing.T) {
	f := func(doc string, line, col int, key, msg string) {
		t.Helper()
		_, err := Parse(strings.NewReader(doc))
		e, ok := errors.AsType[*Error](err)
		if !ok {
			t.Fatalf("Parse(%q) = %v (%T), want *Error", doc, err, err)
		}
		if e.Line != line || e.Column != col || e.Key != key || e.Msg != msg {
			t.Errorf("Parse(%q) = %+v, want %d:%d %s: %s", doc, *e, line, col, key, msg)
		}
	}
	f("[exchange]\nrunspace = 4\n", 2, 1, "exchange.runspace", "unknown key (did you mean exchange.runspaces?)")
	f("[log]\nrunspaces = 4\n", 2, 1, "log.runspaces", "unknown key (did you mean exchange.runspaces?)")
	f("[exchnage]\n", 1, 2, "exchnage", "unknown section (did you mean exchange?)")
	f("[[policy.platform_exceptions]]\nvalu = 'x'\n", 2, 1, "policy.platform_exceptions.valu",
		"unknown key (did you mean policy.platform_exceptions.value?)")
	f("[exchange]\nruns = 4\n", 2, 1, "exchange.runs", "unknown key")
	f("[exchange]\nport = '5986'\n", 2, 8, "exchange.port", "want an integer, got a TOML string")
	f("[exchange]\nservers = 'ex1'\n", 2, 11, "exchange.servers", "want an array of strings, got a TOML string")
	f("[exchange]\nrequest_timeout = 30\n", 2, 19, "exchange.request_timeout",
		`invalid duration "30": missing unit (write e.g. "30s", "5m", "2h" or "7d")`)
	f("[exchange]\nrunspaces = \n", 2, 13, "", "unexpected character U+000A at start of value")
	f("[exchange]\nservers = []\n"+strings.Repeat("[[x]]\n", 25), 3, 3, "x",
		"unknown key, and 24 more: is this an easconnector configuration file?")
}

func TestLoadResolvesRelativePaths(t *testing.T) {
	dir := t.TempDir()
	abs := filepath.Join(t.TempDir(), "templates")
	doc := strings.Replace(minimal, `password_env = "EASC_TEST_PASSWORD"`, `password_file = "secrets/exchange.pw"`, 1) +
		"[sync]\nstate_dir = \"state\"\n[notify]\ntemplates_dir = '" + abs + "'\n"
	path := filepath.Join(dir, "easconnector.toml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	if want := filepath.Join(dir, "secrets", "exchange.pw"); c.Exchange.PasswordFile != want {
		t.Errorf("password_file = %q, want %q", c.Exchange.PasswordFile, want)
	}
	if want := filepath.Join(dir, "state"); c.Sync.StateDir != want {
		t.Errorf("state_dir = %q, want %q", c.Sync.StateDir, want)
	}
	if c.Notify.TemplatesDir != abs {
		t.Errorf("templates_dir = %q, want it unchanged", c.Notify.TemplatesDir)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}

func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := write("ok", "s3cret\r\n", 0o600)
	if got, err := ReadSecret("exchange.password", "", ok); got.Reveal() != "s3cret" || err != nil {
		t.Errorf("ReadSecret(0600) = %q, %v, want s3cret", got.Reveal(), err)
	}
	if runtime.GOOS != "windows" {
		for _, mode := range []os.FileMode{0o640, 0o604, 0o620, 0o700 | 0o001} {
			p := write("exposed", "s3cret\n", mode)
			_, err := ReadSecret("exchange.password", "", p)
			if !errors.Is(err, ErrSecretExposed) || !strings.Contains(err.Error(), "exchange.password_file: ") ||
				!strings.Contains(err.Error(), "chmod 600") {
				t.Errorf("ReadSecret(%04o) = %v, want ErrSecretExposed naming the field and the fix", mode, err)
			}
		}
	}
	if _, err := ReadSecret("exchange.password", "", write("empty", "\n", 0o600)); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("ReadSecret(empty) = %v", err)
	}
	if _, err := ReadSecret("exchange.password", "", write("two", "a\nb\n", 0o600)); err == nil || !strings.Contains(err.Error(), "more than one line") {
		t.Errorf("ReadSecret(two lines) = %v", err)
	}
	if _, err := ReadSecret("exchange.password", "", dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("ReadSecret(dir) = %v", err)
	}
	if _, err := ReadSecret("exchange.password", "", filepath.Join(dir, "nope")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadSecret(missing) = %v", err)
	}
	t.Setenv("EASC_TEST_SET", "pw")
	t.Setenv("EASC_TEST_EMPTY", "")
	if got, err := ReadSecret("notify.password", "EASC_TEST_SET", ""); got.Reveal() != "pw" || err != nil {
		t.Errorf("ReadSecret(env) = %q, %v", got.Reveal(), err)
	}
	if _, err := ReadSecret("notify.password", "EASC_TEST_EMPTY", ""); err == nil ||
		err.Error() != "notify.password_env: environment variable EASC_TEST_EMPTY is empty" {
		t.Errorf("ReadSecret(empty env) = %v", err)
	}
	if _, err := ReadSecret("notify.password", "EASC_TEST_UNSET_42", ""); err == nil ||
		err.Error() != "notify.password_env: environment variable EASC_TEST_UNSET_42 is not set" {
		t.Errorf("ReadSecret(unset env) = %v", err)
	}
}

func TestRunspaceOptions(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	pem := "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	if err := os.WriteFile(ca, []byte(pem), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("EASC_TEST_PASSWORD", "pa55")
	c := mustParse(t, minimal)
	c.Exchange.Servers = []string{"ex1.contoso.com", "ex2.contoso.com"}
	c.Exchange.CAFile = ca
	c.Exchange.EnableParallelCommandSupport = true
	c.Exchange.Runspaces = 12
	got, err := c.RunspaceOptions()
	if err != nil {
		t.Fatalf("RunspaceOptions() = %v", err)
	}
	want := runspace.Options{
		Servers: []string{"ex1.contoso.com", "ex2.contoso.com"}, CACert: []byte(pem),
		Auth: "ntlm", User: `CONTOSO\svc-eas`, Password: secret.New("pa55"), KrbConfig: "/etc/krb5.conf", Mode: "psrp",
		EndpointPath: "/PowerShell/", ConfigurationName: "Microsoft.Exchange", SecondHopCredential: true,
		CASFailover: true, Parallel: true, Size: 12, PowerShellMaxConcurrency: 18, MaxRequestsPerSession: 1000,
		MaxSessionAge: time.Hour, RequestTimeout: 5 * time.Minute, ConnectTimeout: time.Minute, OperationTimeout: 20 * time.Second,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("RunspaceOptions() = %+v\nwant %+v", got, want)
	}
	got.Servers[0] = "changed"
	if c.Exchange.Servers[0] != "ex1.contoso.com" {
		t.Error("RunspaceOptions shares the Servers slice with the Config")
	}

	c.Exchange.CAFile = filepath.Join(dir, "missing.pem")
	if _, err := c.RunspaceOptions(); err == nil || !strings.HasPrefix(err.Error(), "exchange.ca_file: ") {
		t.Errorf("RunspaceOptions(missing CA) = %v, want an error naming exchange.ca_file", err)
	}
	os.Unsetenv("EASC_TEST_PASSWORD")
	if _, err := c.RunspaceOptions(); err == nil || !strings.HasPrefix(err.Error(), "exchange.password_env: ") {
		t.Errorf("RunspaceOptions(no password) = %v, want an error naming exchange.password_env", err)
	}
}

func TestDuration(t *testing.T) {
	f := func(in string, want time.Duration, wantErr string) {
		t.Helper()
		var d Duration
		err := d.UnmarshalText([]byte(in))
		switch {
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Errorf("Duration(%q) error = %v, want %q", in, err, wantErr)
		case wantErr == "" && (err != nil || d.Duration != want):
			t.Errorf("Duration(%q) = %v, %v, want %v", in, d.Duration, err, want)
		}
	}
	f("30s", 30*time.Second, "")
	f("1h30m", 90*time.Minute, "")
	f("7d", 7*day, "")
	f("1d12h", 36*time.Hour, "")
	f("0", 0, "")
	f("250ms", 250*time.Millisecond, "")
	f("30", 0, "missing unit")
	f("1.5", 0, "missing unit")
	f("", 0, "empty")
	f("3z", 0, `unknown unit "z"`)
	f("1d-1h", 0, "sign after the days")
	f("d", 0, "invalid duration")
	for d, want := range map[time.Duration]string{
		0: "0s", 36 * time.Hour: "1d12h", 90 * time.Second: "1m30s", 1500 * time.Millisecond: "1s500ms",
		30 * day: "30d", time.Microsecond: "1µs", -time.Hour: "-1h0m0s",
	} {
		if got := Dur(d).String(); got != want {
			t.Errorf("Dur(%v).String() = %q, want %q", d, got, want)
		}
	}
}

// FuzzDuration: whatever parses formats back to a string that parses to the
// same value.
func FuzzDuration(f *testing.F) {
	for _, s := range []string{"30s", "1d12h", "0", "-1h", "1.5h", "2562047h", "99999d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var d Duration
		if d.UnmarshalText([]byte(s)) != nil {
			return
		}
		text, _ := d.MarshalText()
		var back Duration
		if err := back.UnmarshalText(text); err != nil || back != d {
			t.Fatalf("%q → %v → %q → %v, %v", s, d.Duration, text, back.Duration, err)
		}
	})
}

// TestExampleCoversEveryKey: the example file parses and validates as it is,
// and every key of Config appears in it, set or commented out.
func TestExampleCoversEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../easconnector.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(bytes.NewReader(doc)); err != nil {
		t.Fatalf("example does not parse:\n%v", err)
	}
	// Uncomment "# key = value" and "# [[table]]" lines, then decode into a
	// generic map (mutually exclusive keys may both appear there).
	commented := regexp.MustCompile(`(?m)^# ?((\[\[?[a-z_.]+\]\]?)|([a-z_0-9]+ *=.*))$`)
	all := commented.ReplaceAll(doc, []byte("$1"))
	var tree map[string]any
	if err := toml.Unmarshal(all, &tree); err != nil {
		t.Fatalf("example with comments removed does not parse: %v\n%s", err, all)
	}
	for _, key := range Keys() {
		if !hasKey(tree, strings.Split(key, ".")) {
			t.Errorf("easconnector.example.toml does not mention %s", key)
		}
	}
	for _, k := range []string{"exchange.servers", "exchange.operation_timeout", "log.format", "policy.user_mail_insert",
		"policy.platform_exceptions.action", "notify.admin_recipients"} {
		if !slices.Contains(Keys(), k) {
			t.Errorf("Keys() lacks %s; the walk is broken", k)
		}
	}
}

func hasKey(node any, path []string) bool {
	if len(path) == 0 {
		return true
	}
	switch n := node.(type) {
	case map[string]any:
		v, ok := n[path[0]]
		return ok && hasKey(v, path[1:])
	case []any:
		for _, e := range n {
			if hasKey(e, path) {
				return true
			}
		}
	case []map[string]any:
		for _, e := range n {
			if hasKey(e, path) {
				return true
			}
		}
	}
	return false
}

// FuzzParse: no input makes Parse panic or hang; an accepted input
// validates, and an error names a position or a field.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	if doc, err := os.ReadFile("../easconnector.example.toml"); err == nil {
		f.Add(doc)
	}
	f.Add([]byte("[exchange]\nrunspaces = 0\n"))
	f.Add([]byte("[[policy.platform_exceptions]]\ncharacteristic = 'DeviceType'\n"))
	f.Add([]byte("[exchange]\nrequest_timeout = 30\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := Parse(bytes.NewReader(doc))
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that Validate refuses: %v", err)
		}
	})
}

// TestListenLoopbackResolved: a listen name counts as loopback only when
// every address it resolves to is loopback, so a localhost pointed at the
// network still needs a token and TLS.
func TestListenLoopbackResolved(t *testing.T) {
	orig := resolver
	t.Cleanup(func() { resolver = orig })
	f := func(r hostaddr.Static, listen string, want ...string) {
		t.Helper()
		resolver = r
		c := mustParse(t, minimal)
		c.Server.Listen = listen
		var got []string
		if err := c.Validate(); err != nil {
			got = strings.Split(err.Error(), "\n")
		}
		if !slices.Equal(got, want) {
			t.Errorf("listen %s with %v: errors %q, want %q", listen, r, got, want)
		}
	}
	f(hostaddr.Static{"localhost": {"127.0.0.1", "::1"}}, "localhost:8443")
	f(hostaddr.Static{"localhost": {"192.0.2.7"}}, "localhost:8443",
		`server.listen: "localhost:8443" is reachable from the network: set token_env or token_file`,
		`server.listen: "localhost:8443" is reachable from the network: set tls_cert and tls_key`)
	f(hostaddr.Static{"localhost": {"127.0.0.1", "192.0.2.7"}}, "localhost:8443",
		`server.listen: "localhost:8443" is reachable from the network: set token_env or token_file`,
		`server.listen: "localhost:8443" is reachable from the network: set tls_cert and tls_key`)
	f(hostaddr.Static{}, "127.0.0.5:8443")
	// The default is the server package's zero value.
	if d := Default(); d.Server.Listen != server.DefaultListen || server.DefaultListen != "127.0.0.1:8443" {
		t.Errorf("default listen %q, server's zero value %q: want both 127.0.0.1:8443", d.Server.Listen, server.DefaultListen)
	}
}

// TestAuthDefaultByMode: without auth, psrp mode uses Kerberos (what
// Exchange's /PowerShell/ virtual directory accepts by default) and the
// WinRS modes NTLM (the WinRM service's Negotiate); an explicit auth wins.
func TestAuthDefaultByMode(t *testing.T) {
	f := func(exchange, want string) {
		t.Helper()
		doc := strings.Replace(minimal, "auth = \"ntlm\"\nuser = \"CONTOSO\\\\svc-eas\"\n", exchange, 1)
		c, err := Parse(strings.NewReader(doc))
		if err != nil {
			t.Fatalf("Parse(%q) = %v", exchange, err)
		}
		if c.Exchange.Auth != want {
			t.Errorf("Parse(%q): auth = %q, want %q", exchange, c.Exchange.Auth, want)
		}
		o, err := c.RunspaceOptions()
		if err != nil || o.Auth != want {
			t.Errorf("RunspaceOptions(%q): auth = %q, %v; want %q", exchange, o.Auth, err, want)
		}
	}
	t.Setenv("EASC_TEST_PASSWORD", "pa55")
	f("user = \"svc-eas@CONTOSO.COM\"\n", "kerberos")
	f("mode = \"psrp\"\nuser = \"svc-eas@CONTOSO.COM\"\n", "kerberos")
	f("mode = \"remoting\"\nuser = \"CONTOSO\\\\svc-eas\"\n", "ntlm")
	f("mode = \"snapin\"\nuser = \"CONTOSO\\\\svc-eas\"\n", "ntlm")
	f("auth = \"basic\"\nuser = \"svc-eas@contoso.com\"\n", "basic")
	f("mode = \"remoting\"\nauth = \"kerberos\"\nuser = \"svc-eas@CONTOSO.COM\"\n", "kerberos")

	// A psrp config that names no realm is told why Kerberos is asked for.
	doc := strings.Replace(minimal, "auth = \"ntlm\"\n", "", 1)
	_, err := Parse(strings.NewReader(doc))
	if err == nil || !strings.Contains(err.Error(), "exchange.realm: required with auth = \"kerberos\"") ||
		!strings.Contains(err.Error(), "default in psrp mode") {
		t.Errorf("psrp without auth or realm: %v, want the realm error naming the psrp default", err)
	}
}

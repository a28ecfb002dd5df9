package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/runspace"
	"github.com/easconnector/easconnector/server"
)

// Config is the whole configuration file.
type Config struct {
	Exchange Exchange `toml:"exchange"`
	Log      Log      `toml:"log"`
	MDM      MDM      `toml:"mdm"`
	Policy   Policy   `toml:"policy"`
	Guard    Guard    `toml:"guard"`
	Sync     Sync     `toml:"sync"`
	Server   Server   `toml:"server"`
	Notify   Notify   `toml:"notify"`
}

// Exchange is the [exchange] section: how to reach Exchange over WinRM.
type Exchange struct {
	Servers []string `toml:"servers"` // Client Access servers (psrp) or WinRM hosts, in preference order
	Port    int      `toml:"port"`    // 0: 443 in psrp mode; WinRS 5985, or 5986 with https
	HTTPS   bool     `toml:"https"`   // TLS (WinRS: WinRM over TLS)
	// AllowUnencrypted permits https = false to hosts that are not
	// loopback: every cmdlet, and with basic the password, in clear text.
	AllowUnencrypted   bool   `toml:"allow_unencrypted"`
	CAFile             string `toml:"ca_file"`              // PEM roots for the server certificate
	InsecureSkipVerify bool   `toml:"insecure_skip_verify"` // lab use only
	// Auth is basic, ntlm or kerberos; unset, kerberos in psrp mode (the
	// /PowerShell/ virtual directory's default) and ntlm in the WinRS modes.
	Auth         string `toml:"auth"`
	User         string `toml:"user"`
	PasswordEnv  string `toml:"password_env"`  // name of an environment variable
	PasswordFile string `toml:"password_file"` // owner-only file
	Realm        string `toml:"realm"`         // kerberos realm (or user@REALM)
	Krb5Conf     string `toml:"krb5_conf"`
	SPN          string `toml:"spn"`         // kerberos; default HTTP/<server>
	KeytabFile   string `toml:"keytab_file"` // kerberos: log in with these keys, not the password (owner-only file)
	// Mode is psrp (the default: MS-PSRP to the CAS's own /PowerShell/
	// endpoint, Exchange RBAC rights only), remoting or snapin (both WinRS:
	// they need WinRM shell rights on the target host).
	Mode string `toml:"mode"`
	// EndpointPath and ConfigurationName locate the PSRP endpoint
	// (psrp mode): https://<server>:<port><endpoint_path>, resource
	// http://schemas.microsoft.com/powershell/<configuration_name>.
	EndpointPath      string `toml:"endpoint_path"`
	ConfigurationName string `toml:"configuration_name"`
	// SecondHopCredential passes user/password to New-PSSession in
	// remoting mode: the WinRM shell cannot forward its own logon.
	SecondHopCredential bool `toml:"second_hop_credential"`
	CASFailover         bool `toml:"cas_failover"`
	// EnableParallelCommandSupport must be true for more than one runspace:
	// easconnector then runs that many cmdlets at once against Exchange.
	EnableParallelCommandSupport bool     `toml:"enable_parallel_command_support"`
	Runspaces                    int      `toml:"runspaces"`
	PowerShellMaxConcurrency     int      `toml:"powershell_max_concurrency"` // the account's throttling policy
	MaxRequestsPerSession        int      `toml:"max_requests_per_session"`
	MaxSessionAge                Duration `toml:"max_session_age"`
	RequestTimeout               Duration `toml:"request_timeout"`
	ConnectTimeout               Duration `toml:"connect_timeout"`
	OperationTimeout             Duration `toml:"operation_timeout"`
}

// Log is the [log] section.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn or error
	Format string `toml:"format"` // text or json
}

// MDM is the [mdm] section: where compliance comes from.
type MDM struct {
	Source string `toml:"source"` // graph or file

	// Microsoft Graph (source = "graph"): an app registration with
	// DeviceManagementManagedDevices.Read.All and GroupMember.Read.All,
	// authenticated by a client secret or a certificate.
	TenantID         string `toml:"tenant_id"`
	ClientID         string `toml:"client_id"`
	ClientSecretEnv  string `toml:"client_secret_env"`
	ClientSecretFile string `toml:"client_secret_file"`
	CertificateFile  string `toml:"certificate_file"`
	KeyFile          string `toml:"key_file"`
	AuthorityURL     string `toml:"authority_url"`
	GraphURL         string `toml:"graph_url"`
	PageSize         int    `toml:"page_size"`

	// An export from any MDM (source = "file").
	File       string `toml:"file"`
	FileFormat string `toml:"file_format"` // json or csv

	// Group object ids. Users in no included group are untargeted, so an
	// enabled policy needs at least one (PipelinePolicy refuses none);
	// excluded wins over included.
	IncludedGroups []string `toml:"included_groups"`
	ExcludedGroups []string `toml:"excluded_groups"`
}

// Policy is the [policy] section: the decision table's knobs.
type Policy struct {
	Enabled             bool     `toml:"enabled"` // false: plan and report only
	OverrideDefaultRule bool     `toml:"override_default_rule"`
	Unmanaged           string   `toml:"unmanaged"`  // default, allow, block or quarantine
	Untargeted          string   `toml:"untargeted"` // auto, allow or default
	Grace               Duration `toml:"grace"`
	StaleAfter          Duration `toml:"stale_after"` // 0: MDM records never go stale
	// Organization settings, re-asserted by every full sync. An absent key
	// (nil) leaves Exchange's value alone; admin_mail_recipients = [] and
	// user_mail_insert = "" clear it.
	DefaultAccessLevel  string              `toml:"default_access_level"` // allow, block or quarantine
	AdminMailRecipients *[]string           `toml:"admin_mail_recipients"`
	UserMailInsert      *string             `toml:"user_mail_insert"`
	AdoptExisting       bool                `toml:"adopt_existing"`
	PlatformExceptions  []PlatformException `toml:"platform_exceptions"`
}

// PlatformException gives every device whose characteristic equals value
// (exactly, as Exchange's device access rules match) the action.
type PlatformException struct {
	Characteristic string `toml:"characteristic"` // DeviceType, DeviceModel, DeviceOS or UserAgent
	Value          string `toml:"value"`
	Action         string `toml:"action"` // allow, block or quarantine
}

// Guard is the [guard] section: limits that stop a sync before any write.
type Guard struct {
	MinMDMRatio       float64 `toml:"min_mdm_ratio"`
	MaxNewBlocks      int     `toml:"max_new_blocks"`
	MaxNewBlocksRatio float64 `toml:"max_new_blocks_ratio"`
	// PlanMaxAge: a held plan older than this can no longer be approved.
	PlanMaxAge Duration `toml:"plan_max_age"`
}

// Sync is the [sync] section: the schedule and where state lives.
type Sync struct {
	QuickInterval   Duration `toml:"quick_interval"`
	QuickJitter     Duration `toml:"quick_jitter"`
	FullAt          string   `toml:"full_at"` // local time of day, "HH:MM"
	StateDir        string   `toml:"state_dir"`
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	// AuditMaxBytes rotates audit.jsonl before it grows past this size;
	// AuditKeep rotated files are kept (0: all).
	AuditMaxBytes int `toml:"audit_max_bytes"`
	AuditKeep     int `toml:"audit_keep"`
	// MemoryLimit is the daemon's soft memory limit (Go's GOMEMLIMIT):
	// a size ("1536MiB"), "off", or "" to take 90 % of the cgroup's
	// memory limit when there is one. GOMEMLIMIT in the environment wins.
	MemoryLimit string `toml:"memory_limit"`
}

// Server is the [server] section: the admin HTTP endpoint.
type Server struct {
	Listen string `toml:"listen"` // host:port; "" disables the server
	// The admin token may do everything; the read-only token only GETs.
	TokenEnv      string `toml:"token_env"`
	TokenFile     string `toml:"token_file"`
	ReadTokenEnv  string `toml:"read_token_env"`
	ReadTokenFile string `toml:"read_token_file"`
	TLSCert       string `toml:"tls_cert"`
	TLSKey        string `toml:"tls_key"`
	// AllowedHosts are names, besides the listen host, that clients may
	// use in the Host header (a DNS alias, a load balancer's name).
	AllowedHosts []string `toml:"allowed_hosts"`
	// LoopbackPublicCounts shows the status page's aggregate view (status,
	// sync results, counts; no addresses, names or DeviceIds) without a
	// token, when the server listens on loopback only. Off by default.
	LoopbackPublicCounts bool `toml:"loopback_public_counts"`
}

// Notify is the [notify] section: mail to users whose device is blocked or
// quarantined, and to administrators.
type Notify struct {
	Enabled         bool     `toml:"enabled"`
	SMTPHost        string   `toml:"smtp_host"`
	SMTPPort        int      `toml:"smtp_port"`
	Security        string   `toml:"security"` // starttls, tls or none
	User            string   `toml:"user"`
	PasswordEnv     string   `toml:"password_env"`
	PasswordFile    string   `toml:"password_file"`
	From            string   `toml:"from"`
	EnrollmentURL   string   `toml:"enrollment_url"`
	TemplatesDir    string   `toml:"templates_dir"` // "" uses the built-in templates
	AdminRecipients []string `toml:"admin_recipients"`
}

// Defaults that are not another package's.
const (
	// DefaultAuth is exchange.auth in the default mode, psrp: Kerberos is
	// what Exchange's /PowerShell/ virtual directory accepts out of the
	// box. When the file sets no auth, decode picks
	// runspace.DefaultAuthFor(mode): kerberos for psrp, ntlm for the WinRS
	// modes (the WinRM service's Negotiate).
	DefaultAuth            = runspace.AuthKerberos
	DefaultKrb5Conf        = "/etc/krb5.conf"
	DefaultGraphAuthority  = "https://login.microsoftonline.com"
	DefaultGraphURL        = "https://graph.microsoft.com"
	DefaultGraphPageSize   = 1000
	DefaultListen          = server.DefaultListen
	DefaultSMTPPort        = 587
	DefaultEnrollmentURL   = "https://portal.manage.microsoft.com"
	DefaultQuickInterval   = 2 * time.Hour
	DefaultQuickJitter     = 10 * time.Minute
	DefaultFullAt          = "03:00"
	DefaultShutdownTimeout = 30 * time.Second
	DefaultGrace           = 24 * time.Hour
	DefaultStaleAfter      = 30 * 24 * time.Hour
	DefaultMinMDMRatio     = 0.5
	DefaultMaxNewBlocks    = 500
	DefaultMaxBlocksRatio  = 0.10
)

// Default returns the configuration used for every key the file omits.
func Default() Config {
	return Config{
		Exchange: Exchange{
			HTTPS:                    true,
			Auth:                     DefaultAuth,
			Krb5Conf:                 DefaultKrb5Conf,
			Mode:                     runspace.ModePSRP,
			EndpointPath:             runspace.DefaultEndpointPath,
			ConfigurationName:        runspace.DefaultConfigurationName,
			SecondHopCredential:      true,
			CASFailover:              true,
			Runspaces:                runspace.DefaultSize,
			PowerShellMaxConcurrency: runspace.DefaultPowerShellMaxConcurrency,
			MaxRequestsPerSession:    runspace.DefaultMaxRequestsPerSession,
			MaxSessionAge:            Dur(runspace.DefaultMaxSessionAge),
			RequestTimeout:           Dur(runspace.DefaultRequestTimeout),
			ConnectTimeout:           Dur(runspace.DefaultConnectTimeout),
			OperationTimeout:         Dur(runspace.DefaultOperationTimeout),
		},
		Log: Log{Level: "info", Format: "text"},
		MDM: MDM{
			Source:       "graph",
			AuthorityURL: DefaultGraphAuthority,
			GraphURL:     DefaultGraphURL,
			PageSize:     DefaultGraphPageSize,
			FileFormat:   "json",
		},
		Policy: Policy{
			Unmanaged:  "default",
			Untargeted: "auto",
			Grace:      Dur(DefaultGrace),
			StaleAfter: Dur(DefaultStaleAfter),
		},
		Guard: Guard{
			MinMDMRatio:       DefaultMinMDMRatio,
			MaxNewBlocks:      DefaultMaxNewBlocks,
			MaxNewBlocksRatio: DefaultMaxBlocksRatio,
			PlanMaxAge:        Dur(pipeline.DefaultHeldPlanMaxAge),
		},
		Sync: Sync{
			QuickInterval:   Dur(DefaultQuickInterval),
			QuickJitter:     Dur(DefaultQuickJitter),
			FullAt:          DefaultFullAt,
			StateDir:        defaultStateDir(),
			ShutdownTimeout: Dur(DefaultShutdownTimeout),
			AuditMaxBytes:   pipeline.DefaultAuditMaxBytes,
			AuditKeep:       pipeline.DefaultAuditKeep,
		},
		Server: Server{Listen: DefaultListen},
		Notify: Notify{
			SMTPPort:      DefaultSMTPPort,
			Security:      "starttls",
			EnrollmentURL: DefaultEnrollmentURL,
		},
	}
}

// maxFileSize bounds the configuration file; anything larger is a mistake.
const maxFileSize = 1 << 20

// Load reads, decodes and validates the file at path. Relative paths in it
// (password files, CA file, state directory, …) are taken relative to the
// file's directory, so a service finds them whatever its working directory.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	c, err := decode(path, f)
	if err != nil {
		return nil, err
	}
	c.resolvePaths(filepath.Dir(path))
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse decodes and validates a configuration. Relative paths stay relative
// to the working directory.
func Parse(r io.Reader) (*Config, error) {
	c, err := decode("", r)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// decode reads the document over Default(), refusing unknown keys. name
// prefixes positions in errors.
func decode(name string, r io.Reader) (*Config, error) {
	doc, err := io.ReadAll(io.LimitReader(r, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", displayName(name), err)
	}
	if len(doc) > maxFileSize {
		return nil, fmt.Errorf("config: %s is larger than %d bytes", displayName(name), maxFileSize)
	}
	if n, first := countUnknown(doc); n > maxUnknownKeys {
		first.File = name
		first.Msg = fmt.Sprintf("unknown key, and %d more: is this an easconnector configuration file?", n-1)
		return nil, first
	}
	c := Default()
	c.Exchange.Auth = "" // its default depends on the mode the file picks
	dec := toml.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, decodeError(name, doc, err)
	}
	if c.Exchange.Auth == "" {
		c.Exchange.Auth = runspace.DefaultAuthFor(c.Exchange.Mode)
	}
	c.normalize()
	return &c, nil
}

// normalize makes empty lists nil, so that a list written as [] and an
// absent one compare equal (where the difference means nothing).
func (c *Config) normalize() {
	for _, l := range []*[]string{&c.Exchange.Servers, &c.MDM.IncludedGroups, &c.MDM.ExcludedGroups, &c.Notify.AdminRecipients, &c.Server.AllowedHosts} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	if len(c.Policy.PlatformExceptions) == 0 {
		c.Policy.PlatformExceptions = nil
	}
}

func displayName(name string) string {
	if name == "" {
		return "configuration"
	}
	return name
}

// resolvePaths makes relative file paths relative to dir.
func (c *Config) resolvePaths(dir string) {
	for _, p := range []*string{
		&c.Exchange.CAFile, &c.Exchange.PasswordFile, &c.Exchange.Krb5Conf, &c.Exchange.KeytabFile,
		&c.MDM.ClientSecretFile, &c.MDM.CertificateFile, &c.MDM.KeyFile, &c.MDM.File,
		&c.Sync.StateDir,
		&c.Server.TokenFile, &c.Server.ReadTokenFile, &c.Server.TLSCert, &c.Server.TLSKey,
		&c.Notify.PasswordFile, &c.Notify.TemplatesDir,
	} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}

// Error is a problem at a position in the file: a syntax error, an unknown
// key or a value of the wrong type.
type Error struct {
	File         string // "" when parsed from a reader
	Line, Column int    // 1-based
	Key          string // dotted key, when known
	Msg          string
}

func (e *Error) Error() string {
	pos := fmt.Sprintf("line %d, column %d", e.Line, e.Column)
	if e.File != "" {
		pos = fmt.Sprintf("%s:%d:%d", e.File, e.Line, e.Column)
	}
	if e.Key != "" {
		return pos + ": " + e.Key + ": " + e.Msg
	}
	return pos + ": " + e.Msg
}

// decodeError turns go-toml's errors into Errors (joined when several).
func decodeError(name string, doc []byte, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		errs := make([]error, 0, len(strict.Errors))
		for i := range strict.Errors {
			errs = append(errs, unknownKeyError(name, &strict.Errors[i]))
		}
		return errors.Join(errs...)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		return &Error{File: name, Line: line, Column: col, Key: dotted(de.Key()), Msg: friendlyMessage(de)}
	}
	// go-toml reports the error of a TextUnmarshaler given a number without
	// a position; the only such type is Duration, so find the number.
	if e := locateNonStringDuration(doc); e != nil {
		e.File, e.Msg = name, err.Error()
		return e
	}
	return fmt.Errorf("config: %s: %w", displayName(name), err)
}

func unknownKeyError(name string, de *toml.DecodeError) error {
	line, col := de.Position()
	key := de.Key()
	msg := "unknown key"
	if strings.HasSuffix(de.Error(), "missing table") {
		msg = "unknown section"
	}
	if s := suggest(key); s != "" {
		msg += " (did you mean " + s + "?)"
	}
	return &Error{File: name, Line: line, Column: col, Key: dotted(key), Msg: msg}
}

package config

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/internal/hostaddr"
	"github.com/easconnector/easconnector/runspace"
)

// FieldError is a value the file holds but easconnector cannot use.
type FieldError struct {
	Field string // dotted path, e.g. "exchange.runspaces"
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// validator collects every problem, so that one run shows them all.
type validator struct{ errs []error }

func (v *validator) errorf(field, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) oneOf(field, got string, allowed ...string) {
	if !slices.Contains(allowed, got) {
		v.errorf(field, "must be %s, got %q", orList(allowed), got)
	}
}

func (v *validator) intRange(field string, got, lo, hi int) {
	if got < lo || got > hi {
		v.errorf(field, "must be between %d and %d, got %d", lo, hi, got)
	}
}

func (v *validator) floatRange(field string, got, lo, hi float64) {
	if !(got >= lo && got <= hi) { // also catches NaN
		v.errorf(field, "must be between %g and %g, got %g", lo, hi, got)
	}
}

func (v *validator) durRange(field string, got Duration, lo, hi time.Duration) {
	if got.Duration < lo || got.Duration > hi {
		v.errorf(field, "must be between %s and %s, got %s", Dur(lo), Dur(hi), got)
	}
}

func orList(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = strconv.Quote(x)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// Validate checks every field and returns all problems joined, each a
// *FieldError naming the field path and what it allows. It does not read
// files or the environment; the Options mappings do.
func (c *Config) Validate() error {
	v := &validator{}
	c.Exchange.validate(v)
	c.Log.validate(v)
	c.MDM.validate(v)
	c.Policy.validate(v)
	c.Guard.validate(v)
	c.Sync.validate(v)
	c.Server.validate(v)
	c.Notify.validate(v)
	if n := len(v.errs); n > maxFieldErrors {
		v.errs = append(v.errs[:maxFieldErrors], fmt.Errorf("… and %d more problems", n-maxFieldErrors))
	}
	return errors.Join(v.errs...)
}

// maxFieldErrors caps the problems Validate lists.
const maxFieldErrors = 50

const day = 24 * time.Hour

var (
	envRe    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	guidRe   = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	clockRe  = regexp.MustCompile(`^([01][0-9]|2[0-3]):([0-5][0-9])$`)
	levelStr = []string{"allow", "block", "quarantine"}
)

// validHost accepts a DNS name or an IP address, nothing else (no scheme,
// port, path or spaces); the rule is shared with runspace.
var validHost = hostaddr.Valid

// resolver resolves names for isLoopback; a test replaces it.
var resolver hostaddr.Resolver = net.DefaultResolver

// isLoopback reports whether host is loopback only: a literal loopback
// address, or a name (such as localhost) every address of which is
// loopback, so that a name pointed elsewhere does not relax a rule.
func isLoopback(host string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return hostaddr.IsLoopback(ctx, resolver, host)
}

// secretSource checks a pair of mutually exclusive secret keys; required
// says one of them must be set.
func (v *validator) secretSource(section, envKey, env, fileKey, file string, required bool) {
	switch {
	case env != "" && file != "":
		v.errorf(section+"."+fileKey, "set only one of %s and %s", envKey, fileKey)
	case env == "" && file == "" && required:
		v.errorf(section+"."+envKey, "required: set %s or %s (secrets are never written in this file)", envKey, fileKey)
	case env != "" && !envRe.MatchString(env):
		v.errorf(section+"."+envKey, "%q is not an environment variable name", env)
	}
}

func (v *validator) address(field, s string) {
	if a, err := mail.ParseAddress(s); err != nil || a.Address != s {
		v.errorf(field, "%q is not a bare e-mail address (local@domain)", s)
	}
}

// httpURL checks an absolute https URL; plain http is allowed for loopback
// hosts only (the simulators).
func (v *validator) httpURL(field, s string) {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		v.errorf(field, "%q is not an absolute URL without query or credentials", s)
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	default:
		v.errorf(field, "%q must use https (http only for a loopback host)", s)
	}
}

// loopbackLookupTimeout bounds the name lookup that checks a plain-HTTP
// server is loopback.
const loopbackLookupTimeout = 5 * time.Second

func (e *Exchange) validate(v *validator) {
	if len(e.Servers) == 0 {
		v.errorf("exchange.servers", "at least one server is required")
	}
	seen := map[string]bool{}
	for i, s := range e.Servers {
		field := fmt.Sprintf("exchange.servers[%d]", i)
		switch {
		case !validHost(s):
			v.errorf(field, "%q is not a host name or IP address (no scheme, port or path; the port is exchange.port)", s)
		case seen[strings.ToLower(s)]:
			v.errorf(field, "%q is listed twice", s)
		}
		seen[strings.ToLower(s)] = true
	}
	v.intRange("exchange.port", e.Port, 0, 65535)
	if !e.HTTPS && !e.AllowUnencrypted {
		// The same test the runspace dialer repeats at every connection.
		for i, s := range e.Servers {
			if !validHost(s) {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), loopbackLookupTimeout)
			ok, _ := runspace.LoopbackHost(ctx, s)
			cancel()
			if !ok {
				v.errorf(fmt.Sprintf("exchange.servers[%d]", i),
					"%q is not a loopback address (or does not resolve): plain HTTP (https = false) would send every cmdlet in clear text; set https = true, or allow_unencrypted = true to accept that", s)
			}
		}
	}
	if e.AllowUnencrypted && e.HTTPS {
		v.errorf("exchange.allow_unencrypted", "set, but exchange.https is true")
	}
	if e.InsecureSkipVerify && e.SecondHopCredential && e.Mode == runspace.ModeRemoting {
		v.errorf("exchange.insecure_skip_verify", "refused with exchange.second_hop_credential: the password would go to any server that answers; set ca_file instead")
	}
	if e.CAFile != "" && !e.HTTPS {
		v.errorf("exchange.ca_file", "set, but exchange.https is false")
	}
	if e.InsecureSkipVerify && !e.HTTPS {
		v.errorf("exchange.insecure_skip_verify", "set, but exchange.https is false")
	}
	if e.SecondHopCredential && e.Mode == runspace.ModeRemoting && !e.HTTPS {
		v.errorf("exchange.second_hop_credential", "needs exchange.https = true: the password is passed over the WinRM channel")
	}
	if e.InsecureSkipVerify && e.CAFile != "" {
		v.errorf("exchange.insecure_skip_verify", "contradicts exchange.ca_file; set one of them")
	}
	v.oneOf("exchange.auth", e.Auth, runspace.AuthBasic, runspace.AuthNTLM, runspace.AuthKerberos)
	if strings.TrimSpace(e.User) == "" {
		v.errorf("exchange.user", "required")
	}
	// A keytab replaces the password for the Kerberos login; the password
	// is then needed only for second_hop_credential.
	keytabLogin := e.Auth == runspace.AuthKerberos && e.KeytabFile != ""
	v.secretSource("exchange", "password_env", e.PasswordEnv, "password_file", e.PasswordFile,
		!keytabLogin || (e.SecondHopCredential && e.Mode == runspace.ModeRemoting))
	if e.Auth == runspace.AuthKerberos {
		if e.Krb5Conf == "" {
			v.errorf("exchange.krb5_conf", "required with auth = \"kerberos\"")
		}
		if _, realm, _ := strings.Cut(e.User, "@"); e.Realm == "" && realm == "" {
			hint := ""
			if e.Mode == runspace.ModePSRP {
				hint = " (kerberos is the default in psrp mode, as on Exchange's /PowerShell/ virtual directory; " +
					"set auth = \"basic\" or \"ntlm\" only where the directory has it enabled)"
			}
			v.errorf("exchange.realm", "required with auth = \"kerberos\" unless exchange.user is user@REALM%s", hint)
		}
		if e.SPN != "" && !validSPN(e.SPN) {
			v.errorf("exchange.spn", "must be service/host such as HTTP/ex1.contoso.com (no @REALM, no port), got %q", e.SPN)
		}
	} else {
		if e.Realm != "" {
			v.errorf("exchange.realm", "only used with auth = \"kerberos\", got auth = %q", e.Auth)
		}
		if e.SPN != "" {
			v.errorf("exchange.spn", "only used with auth = \"kerberos\", got auth = %q", e.Auth)
		}
		if e.KeytabFile != "" {
			v.errorf("exchange.keytab_file", "only used with auth = \"kerberos\", got auth = %q", e.Auth)
		}
	}
	v.oneOf("exchange.mode", e.Mode, runspace.ModePSRP, runspace.ModeRemoting, runspace.ModeSnapin)
	if e.Mode == runspace.ModePSRP {
		// The /PowerShell/ endpoint carries the account's credentials and
		// every cmdlet; Kerberos message encryption over plain HTTP is not
		// offered, so HTTPS with a verified certificate is required, plain
		// HTTP only to this machine (tests, a local proxy).
		// (the loopback rule for https = false is checked above).
		if e.AllowUnencrypted {
			v.errorf("exchange.allow_unencrypted", "not with mode = \"psrp\": the /PowerShell/ endpoint needs https = true (plain HTTP only to loopback)")
		}
		if e.InsecureSkipVerify {
			v.errorf("exchange.insecure_skip_verify", "not with mode = \"psrp\": the server certificate must be verified; set ca_file for a private CA")
		}
		if !endpointPathRe.MatchString(e.EndpointPath) {
			v.errorf("exchange.endpoint_path", "%q is not an absolute URL path (like /PowerShell/)", e.EndpointPath)
		}
		if !configNameRe.MatchString(e.ConfigurationName) {
			v.errorf("exchange.configuration_name", "%q is not a session configuration name (like Microsoft.Exchange)", e.ConfigurationName)
		}
	}
	v.intRange("exchange.powershell_max_concurrency", e.PowerShellMaxConcurrency, 2, 1000)
	if e.PowerShellMaxConcurrency >= 2 {
		v.intRange("exchange.runspaces", e.Runspaces, 1, min(e.PowerShellMaxConcurrency-1, runspace.MaxSize))
	}
	v.intRange("exchange.max_requests_per_session", e.MaxRequestsPerSession, 1, 1_000_000)
	v.durRange("exchange.max_session_age", e.MaxSessionAge, time.Minute, day)
	v.durRange("exchange.request_timeout", e.RequestTimeout, time.Second, time.Hour)
	v.durRange("exchange.connect_timeout", e.ConnectTimeout, time.Second, 10*time.Minute)
	v.durRange("exchange.operation_timeout", e.OperationTimeout, time.Second, 5*time.Minute)
}

func (l *Log) validate(v *validator) {
	v.oneOf("log.level", l.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", l.Format, "text", "json")
}

func (m *MDM) validate(v *validator) {
	v.oneOf("mdm.source", m.Source, "graph", "file")
	switch m.Source {
	case "graph":
		switch {
		case m.TenantID == "":
			v.errorf("mdm.tenant_id", "required with source = \"graph\"")
		case !guidRe.MatchString(m.TenantID) && !(validHost(m.TenantID) && strings.Contains(m.TenantID, ".")):
			v.errorf("mdm.tenant_id", "%q is neither a GUID nor a domain name", m.TenantID)
		}
		switch {
		case m.ClientID == "":
			v.errorf("mdm.client_id", "required with source = \"graph\"")
		case !guidRe.MatchString(m.ClientID):
			v.errorf("mdm.client_id", "%q is not a GUID (the app registration's application id)", m.ClientID)
		}
		secret := m.ClientSecretEnv != "" || m.ClientSecretFile != ""
		cert := m.CertificateFile != "" || m.KeyFile != ""
		switch {
		case secret && cert:
			v.errorf("mdm.certificate_file", "set either a client secret or a certificate, not both")
		case cert && (m.CertificateFile == "" || m.KeyFile == ""):
			v.errorf("mdm.key_file", "certificate_file and key_file go together")
		case !cert:
			v.secretSource("mdm", "client_secret_env", m.ClientSecretEnv, "client_secret_file", m.ClientSecretFile, false)
			if !secret {
				v.errorf("mdm.client_secret_env", "required with source = \"graph\": set client_secret_env, client_secret_file, or certificate_file and key_file")
			}
		}
		v.httpURL("mdm.authority_url", m.AuthorityURL)
		v.httpURL("mdm.graph_url", m.GraphURL)
		v.intRange("mdm.page_size", m.PageSize, 1, 1000)
		for i, g := range m.IncludedGroups {
			if !guidRe.MatchString(g) {
				v.errorf(fmt.Sprintf("mdm.included_groups[%d]", i), "%q is not a group object id (GUID)", g)
			}
		}
		for i, g := range m.ExcludedGroups {
			if !guidRe.MatchString(g) {
				v.errorf(fmt.Sprintf("mdm.excluded_groups[%d]", i), "%q is not a group object id (GUID)", g)
			}
		}
	case "file":
		if m.File == "" {
			v.errorf("mdm.file", "required with source = \"file\"")
		}
		v.oneOf("mdm.file_format", m.FileFormat, "json", "csv")
	}
	for i, g := range m.ExcludedGroups {
		if slices.ContainsFunc(m.IncludedGroups, func(s string) bool { return strings.EqualFold(s, g) }) {
			v.errorf(fmt.Sprintf("mdm.excluded_groups[%d]", i), "%q is also in included_groups", g)
		}
	}
}

func (p *Policy) validate(v *validator) {
	v.oneOf("policy.unmanaged", p.Unmanaged, "default", "allow", "block", "quarantine")
	v.oneOf("policy.untargeted", p.Untargeted, "auto", "allow", "default")
	v.durRange("policy.grace", p.Grace, 0, 30*day)
	if p.StaleAfter.Duration != 0 {
		v.durRange("policy.stale_after", p.StaleAfter, time.Hour, 365*day)
	}
	if p.DefaultAccessLevel != "" {
		v.oneOf("policy.default_access_level", p.DefaultAccessLevel, levelStr...)
	}
	if p.AdminMailRecipients != nil {
		for i, a := range *p.AdminMailRecipients {
			v.address(fmt.Sprintf("policy.admin_mail_recipients[%d]", i), a)
		}
	}
	if p.UserMailInsert != nil {
		if n := len(utf16.Encode([]rune(*p.UserMailInsert))); n > exchange.MaxUserMailInsert {
			v.errorf("policy.user_mail_insert", "must be at most %d characters, got %d", exchange.MaxUserMailInsert, n)
		}
	}
	seen := map[string]int{}
	for i, x := range p.PlatformExceptions {
		field := fmt.Sprintf("policy.platform_exceptions[%d]", i)
		v.oneOf(field+".characteristic", x.Characteristic, string(exchange.CharDeviceType),
			string(exchange.CharDeviceModel), string(exchange.CharDeviceOS), string(exchange.CharUserAgent))
		switch {
		case strings.TrimSpace(x.Value) == "":
			v.errorf(field+".value", "required")
		case strings.ContainsFunc(x.Value, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			v.errorf(field+".value", "%q contains control characters", x.Value)
		}
		v.oneOf(field+".action", x.Action, levelStr...)
		k := x.Characteristic + "\x00" + x.Value
		if j, dup := seen[k]; dup {
			v.errorf(field, "same characteristic and value as policy.platform_exceptions[%d]", j)
		} else {
			seen[k] = i
		}
	}
}

func (g *Guard) validate(v *validator) {
	v.floatRange("guard.min_mdm_ratio", g.MinMDMRatio, 0, 1)
	v.intRange("guard.max_new_blocks", g.MaxNewBlocks, 0, 10_000_000)
	v.floatRange("guard.max_new_blocks_ratio", g.MaxNewBlocksRatio, 0, 1)
	v.durRange("guard.plan_max_age", g.PlanMaxAge, time.Minute, 7*day)
}

func (s *Sync) validate(v *validator) {
	v.durRange("sync.quick_interval", s.QuickInterval, time.Minute, day)
	if s.QuickInterval.Duration >= time.Minute {
		if j := s.QuickJitter.Duration; j < 0 || j >= s.QuickInterval.Duration/2 {
			v.errorf("sync.quick_jitter", "must be at least 0s and less than half of sync.quick_interval (%s), got %s",
				Dur(s.QuickInterval.Duration/2), s.QuickJitter)
		}
	}
	if !clockRe.MatchString(s.FullAt) {
		v.errorf("sync.full_at", "must be a local time of day \"HH:MM\" (00:00 to 23:59), got %q", s.FullAt)
	}
	if strings.TrimSpace(s.StateDir) == "" {
		v.errorf("sync.state_dir", "required")
	}
	v.durRange("sync.shutdown_timeout", s.ShutdownTimeout, time.Second, 10*time.Minute)
	v.intRange("sync.audit_max_bytes", s.AuditMaxBytes, 64<<10, 1<<30)
	v.intRange("sync.audit_keep", s.AuditKeep, 0, 100_000)
	if _, err := ParseMemoryLimit(s.MemoryLimit); err != nil {
		v.errorf("sync.memory_limit", "%v", err)
	}
}

// FullAtClock returns the hour and minute of FullAt (valid after Validate).
func (s *Sync) FullAtClock() (hour, minute int) {
	m := clockRe.FindStringSubmatch(s.FullAt)
	if m == nil {
		return 0, 0
	}
	hour, _ = strconv.Atoi(m[1])
	minute, _ = strconv.Atoi(m[2])
	return hour, minute
}

func (s *Server) validate(v *validator) {
	v.secretSource("server", "token_env", s.TokenEnv, "token_file", s.TokenFile, false)
	v.secretSource("server", "read_token_env", s.ReadTokenEnv, "read_token_file", s.ReadTokenFile, false)
	for i, h := range s.AllowedHosts {
		if !validHost(h) {
			v.errorf(fmt.Sprintf("server.allowed_hosts[%d]", i), "%q is not a host name or IP address (no scheme or port)", h)
		}
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		v.errorf("server.tls_key", "tls_cert and tls_key go together")
	}
	if s.Listen == "" {
		return
	}
	host, port, err := net.SplitHostPort(s.Listen)
	if err != nil {
		v.errorf("server.listen", "%q is not host:port", s.Listen)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		v.errorf("server.listen", "port %q must be between 1 and 65535", port)
	}
	if host != "" && !validHost(host) {
		v.errorf("server.listen", "host %q is not a host name or IP address", host)
	}
	loopback := isLoopback(host)
	if s.LoopbackPublicCounts && !loopback {
		v.errorf("server.loopback_public_counts", "listen %q is not loopback only (a literal loopback address, or a name whose every address is loopback)", s.Listen)
	}
	if !loopback {
		if s.TokenEnv == "" && s.TokenFile == "" && s.ReadTokenEnv == "" && s.ReadTokenFile == "" {
			v.errorf("server.listen", "%q is reachable from the network: set token_env or token_file", s.Listen)
		}
		if s.TLSCert == "" {
			v.errorf("server.listen", "%q is reachable from the network: set tls_cert and tls_key", s.Listen)
		}
	}
}

func (n *Notify) validate(v *validator) {
	v.oneOf("notify.security", n.Security, "starttls", "tls", "none")
	v.secretSource("notify", "password_env", n.PasswordEnv, "password_file", n.PasswordFile, false)
	if !n.Enabled {
		return
	}
	if !validHost(n.SMTPHost) {
		v.errorf("notify.smtp_host", "required with enabled = true: a host name or IP address, got %q", n.SMTPHost)
	}
	v.intRange("notify.smtp_port", n.SMTPPort, 1, 65535)
	password := n.PasswordEnv != "" || n.PasswordFile != ""
	switch {
	case n.User != "" && !password:
		v.errorf("notify.password_env", "required with notify.user: set password_env or password_file")
	case n.User == "" && password:
		v.errorf("notify.user", "required with a password")
	case password && n.Security == "none" && !isLoopback(n.SMTPHost):
		v.errorf("notify.security", "\"none\" would send the SMTP password in clear to %s; use starttls or tls", n.SMTPHost)
	}
	if n.From == "" {
		v.errorf("notify.from", "required with enabled = true")
	} else {
		v.address("notify.from", n.From)
	}
	v.httpURL("notify.enrollment_url", n.EnrollmentURL)
	for i, a := range n.AdminRecipients {
		v.address(fmt.Sprintf("notify.admin_recipients[%d]", i), a)
	}
}

var (
	endpointPathRe = regexp.MustCompile(`^/[A-Za-z0-9._/-]{0,200}$`)
	configNameRe   = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)
)

// validSPN accepts a Kerberos service principal name of the form
// service/host: the client asks its own realm's KDC for it, so a realm
// suffix would become part of the host name.
func validSPN(s string) bool {
	service, host, ok := strings.Cut(s, "/")
	return ok && service != "" && host != "" && !strings.ContainsAny(s, "@: \t") && !strings.Contains(host, "/")
}

package runspace

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/masterzen/winrm"

	"github.com/easconnector/easconnector/internal/hostaddr"
	"github.com/easconnector/easconnector/internal/secret"
)

// Defaults applied by NewPool and Open to zero-valued Options fields.
const (
	DefaultSize                     = 8
	DefaultPowerShellMaxConcurrency = 18 // Exchange's GlobalThrottlingPolicy default
	DefaultMaxRequestsPerSession    = 1000
	DefaultMaxSessionAge            = time.Hour
	DefaultRequestTimeout           = 5 * time.Minute
	DefaultConnectTimeout           = 60 * time.Second
	DefaultOperationTimeout         = 20 * time.Second
	DefaultFailoverBackoff          = 5 * time.Second
	DefaultHTTPPort                 = 5985
	DefaultHTTPSPort                = 5986

	// MaxSize is the hard upper bound of Size whatever the throttling
	// policy says: WinRM's MaxShellsPerUser defaults to 30 per account and
	// every session holds one shell.
	MaxSize = 64

	// maxFailoverBackoff caps the exponential down-time of an endpoint.
	maxFailoverBackoffFactor = 64
)

// Auth mechanisms.
const (
	AuthBasic    = "basic"
	AuthNTLM     = "ntlm"
	AuthKerberos = "kerberos"
)

// DefaultAuth is the Auth of zero-valued Options. NTLM (Negotiate) is on
// in the WinRM service by default and Basic is off ("winrm get
// winrm/config/service/auth": Basic = false, Negotiate = true; see
// Microsoft Learn, "Installation and configuration for Windows Remote
// Management"), and NTLM never sends the password itself. Kerberos is
// stronger still but needs a krb5.conf and a realm, so it cannot be a
// zero-value default; config, which has both, picks DefaultAuthFor(mode).
const DefaultAuth = AuthNTLM

// DefaultAuthFor is the auth mechanism a deployment should use when it
// names none, by mode. Exchange's /PowerShell/ virtual directory accepts
// Kerberos only, out of the box: Windows authentication (Negotiate with
// Kerberos) is its default, Basic is off and must be enabled with
// Set-PowerShellVirtualDirectory -BasicAuthentication $true, NTLM likewise
// with -WindowsAuthentication where the IIS provider list has it (Microsoft
// Learn, "Connect to Exchange servers using remote PowerShell" and
// "Set-PowerShellVirtualDirectory"). The WinRM service of the WinRS modes
// offers Negotiate (NTLM) by default (see DefaultAuth).
func DefaultAuthFor(mode string) string {
	if mode == ModePSRP || mode == "" {
		return AuthKerberos
	}
	return AuthNTLM
}

// Session modes (how the bootstrap loads Exchange, see bootstrap.ps1).
const (
	ModeRemoting = "remoting" // New-PSSession to http://<server>/PowerShell/ + Import-PSSession; RBAC applies
	ModeSnapin   = "snapin"   // Add-PSSnapin on an Exchange server; bypasses RBAC
	// ModePSRP speaks MS-PSRP to the server's own /PowerShell/ endpoint
	// (configuration Microsoft.Exchange): RBAC rights only, no WinRM shell
	// rights, no second hop, no script text (psrpsession.go).
	ModePSRP = "psrp"

	// DefaultMode is the Mode of zero-valued Options, as config's default.
	DefaultMode = ModePSRP
)

// PSRP endpoint defaults: the Exchange virtual directory every Exchange
// management tool connects to (New-PSSession -ConfigurationName
// Microsoft.Exchange -ConnectionUri https://<cas>/PowerShell/).
const (
	DefaultEndpointPath      = "/PowerShell/"
	DefaultConfigurationName = "Microsoft.Exchange"
	DefaultPSRPHTTPSPort     = 443
	DefaultPSRPHTTPPort      = 80
)

// Options configures a Pool (NewPool) or a standalone session (Open). The
// zero value of every field except Servers, User and Password means its
// default.
type Options struct {
	// Servers are the WinRM hosts (Exchange Client Access servers or a
	// management host) in preference order. At least one.
	Servers []string
	// Port defaults to 443 in psrp mode (80 with PlainHTTP), the IIS site
	// of the /PowerShell/ virtual directory; the WinRS modes default to
	// WinRM's 5986 (HTTPS), or 5985 with PlainHTTP.
	Port int
	// WinRM runs over TLS unless PlainHTTP is set. The certificate is
	// verified against CACert (PEM; the system roots when empty) and
	// TLSServerName (the server name when empty) unless InsecureSkipVerify
	// is set, which is refused together with SecondHopCredential (the
	// password would go to whoever answers).
	CACert             []byte
	InsecureSkipVerify bool
	TLSServerName      string
	// PlainHTTP selects WinRM over plain HTTP (port 5985). masterzen/winrm
	// does not encrypt messages itself, so everything a session carries
	// (every cmdlet, its parameters and output, and with Basic the
	// password) crosses the network in clear. It is refused unless the
	// server is a loopback address (a literal, or a name whose every
	// address is loopback; checked again at every connection) or
	// AllowUnencrypted is set; NewPool logs what it exposes.
	PlainHTTP bool
	// AllowUnencrypted permits PlainHTTP to hosts that are not loopback.
	AllowUnencrypted bool

	// Auth is "ntlm" (the default, DefaultAuth), "kerberos" or "basic".
	// No Basic Authorization header is ever sent unless Auth is "basic":
	// with NTLM a server that offers only Basic gets no credentials.
	// NTLM gets one HTTP transport per session, because NTLM authenticates
	// connections and shared connection pools break it under concurrency.
	// Kerberos logs in once per pool with User/Password in Realm (or the
	// realm after "@" in User), using the krb5.conf at KrbConfig; SPN
	// defaults to HTTP/<server>; Keytab, a keytab file path, replaces
	// Password for the Kerberos login (see kerberos.go). Basic sends the
	// password with every request; the WinRM service accepts it only where
	// Auth/Basic is enabled (off by default, see DefaultAuth).
	Auth      string
	User      string
	Password  secret.String
	Realm     string
	KrbConfig string
	SPN       string
	Keytab    string

	// Mode is "psrp" (the default, DefaultMode: MS-PSRP to the server's own
	// /PowerShell/ endpoint, Exchange RBAC rights only), "remoting"
	// (SessionConfig.ConnectionURI = http://<server>/PowerShell/) or
	// "snapin"; both WinRS modes need WinRM shell rights on the target
	// host.
	Mode string
	// EndpointPath is the URL path of the PSRP endpoint (psrp mode;
	// default /PowerShell/). WinRS modes always use /wsman.
	EndpointPath string
	// ConfigurationName is the PowerShell session configuration (psrp
	// mode; default Microsoft.Exchange): the resource URI is
	// http://schemas.microsoft.com/powershell/<ConfigurationName>.
	ConfigurationName string
	// SecondHopCredential passes User/Password to New-PSSession in
	// remoting mode (see SessionConfig): a shell opened with NTLM or
	// Kerberos cannot forward its logon to the /PowerShell endpoint.
	// It requires verified HTTPS (no PlainHTTP, no InsecureSkipVerify),
	// because the credential travels in the session's stdin.
	SecondHopCredential bool

	// CASFailover makes Start discover the organization's other Client
	// Access servers and lets the pool fail over to them.
	CASFailover bool
	// FailoverBackoff is how long a failed server stays down the first
	// time; it doubles on each further failure up to 64 times as long.
	FailoverBackoff time.Duration

	// Parallel mirrors Exchange's EnableParallelCommandSupport: false
	// forces Size to 1.
	Parallel bool
	// Size is the number of sessions (default 8). It must stay below
	// PowerShellMaxConcurrency so that administrators keep room for their
	// own Exchange Management Shells.
	Size int
	// PowerShellMaxConcurrency is the account's throttling policy value
	// (default 18).
	PowerShellMaxConcurrency int

	MaxRequestsPerSession int           // recycle a session after this many requests (default 1000)
	MaxSessionAge         time.Duration // recycle a session after this age (default 1h)
	// RequestTimeout is how long a request may go without output (its
	// first object, the next one, or its end) before it is considered
	// hung (default 5m). Such a request costs its session: there is no
	// ctrl_c over WinRS, so the session is terminated, deleted and
	// replaced. It is a stall timeout, not a total: a Get-MobileDevice
	// stream over 200,000 devices may run longer; callers bound the total
	// with their ctx.
	RequestTimeout time.Duration
	// ConnectTimeout bounds the start of a session, up to its Ready frame
	// (loading Exchange takes seconds).
	ConnectTimeout time.Duration
	// OperationTimeout is the WS-Man long-poll of Receive (default 20s);
	// the HTTP response-header timeout is OperationTimeout + 30s.
	OperationTimeout time.Duration

	Logger *slog.Logger
	// Metrics receives the pool's metrics; nil makes a new set (see
	// Pool.Metrics). One Pool per Set: the names would collide.
	Metrics *metrics.Set
}

// validHost reports whether s is a host name or an IP address, nothing more
// (no scheme, port, path or whitespace): it ends up in URLs and metric labels.
// The rule is shared with config.
var validHost = hostaddr.Valid

// resolve validates o and returns a copy with defaults applied.
func (o Options) resolve() (Options, error) {
	if len(o.Servers) == 0 {
		return o, fmt.Errorf("runspace: Servers: at least one server required")
	}
	servers := make([]string, 0, len(o.Servers))
	seen := make(map[string]bool, len(o.Servers))
	for i, s := range o.Servers {
		s = strings.TrimSpace(s)
		if !validHost(s) {
			return o, fmt.Errorf("runspace: Servers[%d]: %q is not a host name or IP address", i, o.Servers[i])
		}
		if k := strings.ToLower(s); !seen[k] {
			seen[k] = true
			servers = append(servers, s)
		}
	}
	o.Servers = servers
	if o.Mode == "" {
		o.Mode = DefaultMode
	}

	switch {
	case o.Port == 0 && o.Mode == ModePSRP && !o.PlainHTTP:
		o.Port = DefaultPSRPHTTPSPort
	case o.Port == 0 && o.Mode == ModePSRP:
		o.Port = DefaultPSRPHTTPPort
	case o.Port == 0 && o.PlainHTTP:
		o.Port = DefaultHTTPPort
	case o.Port == 0:
		o.Port = DefaultHTTPSPort
	case o.Port < 1 || o.Port > 65535:
		return o, fmt.Errorf("runspace: Port: must be between 1 and 65535, got %d", o.Port)
	}
	if o.PlainHTTP && !o.AllowUnencrypted {
		// Names are resolved when a connection is made (loopbackDialer);
		// a literal can be refused now.
		for i, s := range o.Servers {
			if ip := net.ParseIP(s); ip != nil && !ip.IsLoopback() {
				return o, fmt.Errorf("runspace: Servers[%d]: %w: %s is not a loopback address (use HTTPS, or set AllowUnencrypted)",
					i, ErrUnencrypted, s)
			}
		}
	}
	if !o.PlainHTTP && o.AllowUnencrypted {
		return o, errors.New("runspace: AllowUnencrypted: set, but PlainHTTP is off")
	}
	if o.PlainHTTP && (o.InsecureSkipVerify || o.TLSServerName != "") {
		return o, errors.New("runspace: InsecureSkipVerify, TLSServerName: set, but PlainHTTP is on")
	}
	if len(o.CACert) > 0 {
		if o.PlainHTTP {
			return o, fmt.Errorf("runspace: CACert: set but PlainHTTP is on")
		}
		if !x509.NewCertPool().AppendCertsFromPEM(o.CACert) {
			return o, fmt.Errorf("runspace: CACert: no PEM certificate found")
		}
	}

	o.Auth = strings.ToLower(strings.TrimSpace(o.Auth))
	switch o.Auth {
	case "":
		o.Auth = DefaultAuth
	case AuthBasic, AuthNTLM, AuthKerberos:
	default:
		return o, fmt.Errorf("runspace: Auth: must be %q, %q or %q, got %q", AuthBasic, AuthNTLM, AuthKerberos, o.Auth)
	}
	if o.User == "" {
		return o, fmt.Errorf("runspace: User: required")
	}
	if o.Keytab != "" && o.Auth != AuthKerberos {
		return o, fmt.Errorf("runspace: Keytab: only used with kerberos auth, got %q", o.Auth)
	}
	if o.Password.IsZero() && o.Keytab == "" {
		return o, fmt.Errorf("runspace: Password: required (or Keytab with kerberos auth)")
	}
	if o.Auth == AuthKerberos {
		if o.KrbConfig == "" {
			return o, fmt.Errorf("runspace: KrbConfig: required with kerberos auth")
		}
		if o.Realm == "" {
			if _, realm, ok := strings.Cut(o.User, "@"); ok && realm != "" {
				o.Realm = realm
			} else {
				return o, fmt.Errorf("runspace: Realm: required with kerberos auth when User has no @REALM")
			}
		}
	}

	switch o.Mode {
	case ModeRemoting, ModeSnapin:
	case ModePSRP:
		if o.EndpointPath == "" {
			o.EndpointPath = DefaultEndpointPath
		}
		if !endpointPathRe.MatchString(o.EndpointPath) {
			return o, fmt.Errorf("runspace: EndpointPath: %q is not an absolute URL path of letters, digits, '-', '_', '.' and '/'", o.EndpointPath)
		}
		if o.ConfigurationName == "" {
			o.ConfigurationName = DefaultConfigurationName
		}
		if !configNameRe.MatchString(o.ConfigurationName) {
			return o, fmt.Errorf("runspace: ConfigurationName: %q is not a session configuration name", o.ConfigurationName)
		}
	default:
		return o, fmt.Errorf("runspace: Mode: must be %q, %q or %q, got %q", ModePSRP, ModeRemoting, ModeSnapin, o.Mode)
	}
	if o.SecondHopCredential && o.Mode == ModeRemoting {
		if o.PlainHTTP {
			return o, errors.New("runspace: SecondHopCredential: needs HTTPS, the password would cross the network in clear text")
		}
		if o.InsecureSkipVerify {
			return o, errors.New("runspace: SecondHopCredential: refused with InsecureSkipVerify, the password would go to any server that answers")
		}
		if o.User == "" || o.Password.IsZero() {
			return o, errors.New("runspace: SecondHopCredential: needs User and Password")
		}
	}

	if o.PowerShellMaxConcurrency == 0 {
		o.PowerShellMaxConcurrency = DefaultPowerShellMaxConcurrency
	}
	if o.PowerShellMaxConcurrency < 2 {
		return o, fmt.Errorf("runspace: PowerShellMaxConcurrency: must be at least 2, got %d", o.PowerShellMaxConcurrency)
	}
	if o.Size == 0 {
		o.Size = DefaultSize
	}
	maxSize := min(o.PowerShellMaxConcurrency-1, MaxSize)
	if o.Size < 1 || o.Size > maxSize {
		return o, fmt.Errorf("runspace: Size: must be between 1 and %d (below PowerShellMaxConcurrency %d), got %d",
			maxSize, o.PowerShellMaxConcurrency, o.Size)
	}
	if !o.Parallel {
		o.Size = 1
	}

	if o.MaxRequestsPerSession == 0 {
		o.MaxRequestsPerSession = DefaultMaxRequestsPerSession
	}
	if o.MaxRequestsPerSession < 1 {
		return o, fmt.Errorf("runspace: MaxRequestsPerSession: must be positive, got %d", o.MaxRequestsPerSession)
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
		min  time.Duration
	}{
		{"MaxSessionAge", &o.MaxSessionAge, DefaultMaxSessionAge, time.Second},
		{"RequestTimeout", &o.RequestTimeout, DefaultRequestTimeout, time.Millisecond},
		{"ConnectTimeout", &o.ConnectTimeout, DefaultConnectTimeout, time.Millisecond},
		{"OperationTimeout", &o.OperationTimeout, DefaultOperationTimeout, time.Second},
		{"FailoverBackoff", &o.FailoverBackoff, DefaultFailoverBackoff, time.Millisecond},
	}
	for _, d := range durations {
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < d.min {
			return o, fmt.Errorf("runspace: %s: must be at least %s, got %s", d.name, d.min, *d.v)
		}
	}
	if o.OperationTimeout > time.Hour {
		return o, fmt.Errorf("runspace: OperationTimeout: must be at most 1h, got %s", o.OperationTimeout)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// logPlainHTTP says, at every start, what plain HTTP exposes.
func (o *Options) logPlainHTTP() {
	switch {
	case !o.PlainHTTP:
	case o.AllowUnencrypted:
		o.Logger.Warn("runspace: WinRM over plain HTTP to hosts that may not be loopback (AllowUnencrypted): "+
			plainHTTPExposure(o.Auth), "auth", o.Auth, "servers", o.Servers)
	default:
		o.Logger.Info("runspace: WinRM over plain HTTP, loopback only (checked at every connection): "+
			"other processes on this host can read "+plainHTTPExposure(o.Auth), "auth", o.Auth)
	}
}

// responseHeaderTimeout is the HTTP wait for response headers
// (winrm.Endpoint.Timeout): longer than the long-poll, so that a healthy
// server always answers Receive first with data or its timeout fault.
func (o *Options) responseHeaderTimeout() time.Duration {
	return o.OperationTimeout + 30*time.Second
}

// wsmanTimeout renders OperationTimeout as an xs:duration.
func (o *Options) wsmanTimeout() string {
	return fmt.Sprintf("PT%.3fS", o.OperationTimeout.Seconds())
}

var (
	endpointPathRe = regexp.MustCompile(`^/[A-Za-z0-9._/-]{0,200}$`)
	configNameRe   = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)
)

// urlPath is the path of the WS-Management endpoint: the PSRP virtual
// directory in psrp mode, WinRM's /wsman otherwise.
func (o *Options) urlPath() string {
	if o.Mode == ModePSRP {
		return o.EndpointPath
	}
	return "/wsman"
}

// endpoint is the winrm.Endpoint of server. The library only keeps it: our
// transport builds its own URL and TLS settings.
func (o *Options) endpoint(server string) *winrm.Endpoint {
	ep := winrm.NewEndpoint(server, o.Port, !o.PlainHTTP, o.InsecureSkipVerify, o.CACert, nil, nil, o.responseHeaderTimeout())
	ep.TLSServerName = o.TLSServerName
	return ep
}

// connectionURI is the Exchange PowerShell endpoint of server (remoting mode).
func connectionURI(server string) string {
	return "http://" + urlHost(server) + "/PowerShell/"
}

// urlHost brackets IPv6 literals.
func urlHost(server string) string {
	if strings.Contains(server, ":") {
		return "[" + server + "]"
	}
	return server
}

// EndpointURL returns the URL Open connects to on server and the auth
// mechanism it uses, with o's defaults applied: for psrp
// https://<server>:443/PowerShell/, for the WinRS modes WinRM's
// https://<server>:5986/wsman (easconnector check prints them).
func (o Options) EndpointURL(server string) (url, auth string, err error) {
	r, err := o.resolve()
	if err != nil {
		return "", "", err
	}
	scheme := "https"
	if r.PlainHTTP {
		scheme = "http"
	}
	return fmt.Sprintf("%s://%s:%d%s", scheme, urlHost(strings.TrimSpace(server)), r.Port, r.urlPath()), r.Auth, nil
}

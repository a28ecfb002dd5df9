package runspace

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	krbclient "github.com/jcmturner/gokrb5/v8/client"
	krbconfig "github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
)

// Kerberos with gokrb5, on Linux and Windows alike. The pool logs in
// once, with the password or the keytab, using the configured krb5.conf;
// gokrb5 renews the TGT in the background and caches one service ticket
// per SPN. Each request
// carries its own SPNEGO token (Authorization: Negotiate, RFC 4559), as
// the WinRM service and Exchange's /PowerShell virtual directory expect.
// Every failure becomes a *KerberosError that says what to fix.

// KerberosError is a Kerberos failure: the login (AS exchange), a service
// ticket (TGS exchange), or a server refusing the ticket. It matches
// ErrAuth with errors.Is.
type KerberosError struct {
	Op        string // "login", "service ticket" or "server refused ticket"
	Principal string // the client, user@REALM
	SPN       string // the service principal, for service tickets
	// Code is the Kerberos error code (RFC 4120 §7.5.9), 0 when the
	// failure was not a KRB-ERROR; Name is its name (KDC_ERR_…).
	Code int32
	Name string
	// Skew is the KDC's clock minus this host's, measured after a clock
	// skew error; 0 when not measured.
	Skew time.Duration
	Hint string // what to fix
	Err  error  // the underlying error
}

func (e *KerberosError) Error() string {
	var b strings.Builder
	b.WriteString("kerberos ")
	b.WriteString(e.Op)
	b.WriteByte(' ')
	b.WriteString(e.Principal)
	if e.SPN != "" {
		b.WriteString(" for ")
		b.WriteString(e.SPN)
	}
	b.WriteString(": ")
	b.WriteString(e.Hint)
	if e.Name != "" {
		fmt.Fprintf(&b, " (%s)", e.Name)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns ErrAuth and the underlying error.
func (e *KerberosError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrAuth}
	}
	return []error{ErrAuth, e.Err}
}

// kerberos is a pool's Kerberos client.
type kerberos struct {
	cl        *krbclient.Client
	cfg       *krbconfig.Config
	principal string // user@REALM
	realm     string
	user      string
	keytab    string

	mu        sync.Mutex // serializes authenticators (see setHeader)
	lastMicro int64
}

// krbUser splits User into the principal name and realm: "svc@REALM",
// "DOMAIN\svc" (the realm then comes from Options.Realm) or "svc".
func krbUser(user, realm string) (string, string) {
	if i := strings.LastIndexByte(user, '\\'); i >= 0 {
		user = user[i+1:]
	}
	name, r, ok := strings.Cut(user, "@")
	if ok && realm == "" {
		realm = r
	}
	return name, realm
}

// newKerberos reads the krb5.conf (and the keytab) and logs in: network
// I/O to the KDC, bounded by gokrb5's per-KDC dial timeouts.
func newKerberos(opts *Options) (*kerberos, error) {
	name, realm := krbUser(opts.User, opts.Realm)
	k := &kerberos{principal: name + "@" + realm, realm: realm, user: name, keytab: opts.Keytab}
	cfg, err := krbconfig.Load(opts.KrbConfig)
	if err != nil {
		return nil, &KerberosError{Op: "login", Principal: k.principal, Err: err,
			Hint: "cannot read krb5.conf " + opts.KrbConfig + " (exchange.krb5_conf, Options.KrbConfig)"}
	}
	k.cfg = cfg
	settings := []func(*krbclient.Settings){
		// Active Directory requires pre-authentication; sending it at once
		// saves a round trip. FAST is not offered by AD to this client.
		krbclient.DisablePAFXFAST(true), krbclient.AssumePreAuthentication(true),
	}
	if opts.Keytab != "" {
		kt, err := keytab.Load(opts.Keytab)
		if err != nil {
			return nil, &KerberosError{Op: "login", Principal: k.principal, Err: err,
				Hint: "cannot read keytab " + opts.Keytab + " (exchange.keytab_file, Options.Keytab)"}
		}
		k.cl = krbclient.NewWithKeytab(name, realm, kt, cfg, settings...)
	} else {
		k.cl = krbclient.NewWithPassword(name, realm, opts.Password.Reveal(), cfg, settings...)
	}
	if err := k.cl.Login(); err != nil {
		k.cl.Destroy()
		return nil, k.classify("login", "", err)
	}
	return k, nil
}

// destroy stops gokrb5's TGT renewal goroutine and drops the tickets.
// gokrb5 v8.4.4's Client.Destroy is not synchronised with a renewal that
// is already running (it rewrites Client.Credentials unlocked); with
// tickets of hours, a renewal lasts milliseconds every few hours, so a
// pool closed at that moment is the only exposure.
func (k *kerberos) destroy() { k.cl.Destroy() }

// setHeader adds the SPNEGO Authorization header for spn to req. It gets
// (or reuses) the service ticket and builds a fresh authenticator.
//
// Servers keep a replay cache keyed by client and authenticator time in
// microseconds (RFC 4120 §3.2.3), and gokrb5 stamps authenticators with
// time.Now: two sessions authenticating in the same microsecond would
// have the second request refused as a replay. Building authenticators
// one at a time, each in a later microsecond than the last, rules that
// out; it costs microseconds per request.
func (k *kerberos) setHeader(req *http.Request, spn string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for time.Now().UnixMicro() <= k.lastMicro {
		time.Sleep(time.Microsecond)
	}
	err := spnego.SetSPNEGOHeader(k.cl, req, spn)
	k.lastMicro = time.Now().UnixMicro()
	if err != nil {
		return k.classify("service ticket", spn, err)
	}
	return nil
}

// refused turns a 401 answer to a request that carried a ticket into a
// KerberosError naming the SPN: the server did not accept a ticket the
// KDC issued, so the SPN names another service or the server's keys are
// not the KDC's.
func (k *kerberos) refused(spn string, err error) error {
	return &KerberosError{Op: "server refused ticket", Principal: k.principal, SPN: spn, Err: err,
		Hint: "the server did not accept the service ticket: " + spn +
			" must be the SPN of the account the server's HTTP service runs as (setspn -Q " + spn +
			" shows it; set exchange.spn if it differs), and that account's keys must match the KDC's"}
}

var krbCodeRe = regexp.MustCompile(`KRB Error: \((\d+)\) ([A-Z0-9_]+)`)

// classify maps a gokrb5 error to a KerberosError with a remedy. gokrb5
// flattens KRB-ERRORs into text ("KRB Error: (24) KDC_ERR_PREAUTH_FAILED
// …", messages.KRBError.Error), so the code is read back from it.
func (k *kerberos) classify(op, spn string, err error) *KerberosError {
	e := &KerberosError{Op: op, Principal: k.principal, SPN: spn, Err: err}
	text := err.Error()
	if m := krbCodeRe.FindStringSubmatch(text); m != nil {
		code, _ := strconv.ParseInt(m[1], 10, 32)
		e.Code, e.Name = int32(code), m[2]
	}
	cred := "exchange.password (or exchange.password_file)"
	if k.keytab != "" {
		cred = "the keytab " + k.keytab + " (exchange.keytab_file): export it again after each password change (its key version must match)"
	}
	switch e.Code {
	case errorcode.KDC_ERR_PREAUTH_FAILED:
		e.Hint = "wrong password: pre-authentication failed; check " + cred
	case errorcode.KDC_ERR_C_PRINCIPAL_UNKNOWN:
		e.Hint = "the KDC does not know the user " + k.principal +
			": check exchange.user and exchange.realm (the realm is the AD domain in upper case)"
	case errorcode.KDC_ERR_S_PRINCIPAL_UNKNOWN:
		host := strings.TrimPrefix(spn, "HTTP/")
		e.Hint = "the KDC knows no service principal " + spn + " in realm " + k.realm +
			": register it on the account the Exchange server's HTTP service runs as (its computer account, or the alternate service account behind a load-balanced name) with setspn -S " +
			spn + " <account>, or set exchange.spn to the registered name"
		if net.ParseIP(host) != nil {
			e.Hint += "; Kerberos needs host names: list exchange.servers by FQDN, not IP address"
		}
	case errorcode.KDC_ERR_KEY_EXPIRED:
		e.Hint = "the password of " + k.principal + " has expired: set a new one (and export the keytab again); service accounts should have a password that does not expire or a managed rotation"
	case errorcode.KDC_ERR_NAME_EXP:
		e.Hint = "the account " + k.principal + " has expired: extend its expiry date in Active Directory"
	case errorcode.KDC_ERR_CLIENT_REVOKED:
		e.Hint = "the account " + k.principal + " is disabled or locked out: enable or unlock it"
	case errorcode.KRB_AP_ERR_TKT_EXPIRED:
		e.Hint = "the ticket has expired and could not be renewed: check the account's ticket lifetime policy and this host's clock"
	case errorcode.KDC_ERR_ETYPE_NOSUPP:
		e.Hint = "no common encryption type: enable AES for the account (msDS-SupportedEncryptionTypes) and permit aes256-cts-hmac-sha1-96 in krb5.conf"
	case errorcode.KDC_ERR_WRONG_REALM:
		e.Hint = "wrong realm " + k.realm + ": set exchange.realm to the user's AD domain in upper case"
	case errorcode.KRB_AP_ERR_SKEW:
		e.Skew = k.measureSkew()
		e.Hint = "clock skew: this host's clock and the KDC's differ by more than the allowed " + k.cfg.LibDefaults.Clockskew.String()
		if e.Skew != 0 {
			e.Hint = fmt.Sprintf("clock skew: the KDC's clock is %s %s this host's (allowed %s)",
				abs(e.Skew).Round(time.Second), aheadOrBehind(e.Skew), k.cfg.LibDefaults.Clockskew)
		}
		e.Hint += "; fix time synchronisation (chrony or systemd-timesyncd against the domain controllers)"
	case 0:
		switch {
		case strings.Contains(text, "clock skew with KDC too large"):
			e.Name = "KRB_AP_ERR_SKEW"
			e.Hint = "clock skew: the KDC's reply is stamped more than " + k.cfg.LibDefaults.Clockskew.String() +
				" away from this host's clock; fix time synchronisation (chrony or systemd-timesyncd against the domain controllers)"
		case strings.Contains(text, "no KDCs defined in configuration for realm"):
			e.Hint = "krb5.conf (exchange.krb5_conf) names no kdc for realm " + k.realm +
				": add it under [realms] (realm names are case-sensitive: the AD domain in upper case)"
		case strings.Contains(text, "communicate with KDC"), strings.Contains(text, "communication error with KDC"),
			strings.Contains(text, "Networking_Error"):
			kdcs := "none configured"
			if _, m, err := k.cfg.GetKDCs(k.realm, true); err == nil && len(m) > 0 {
				list := make([]string, 0, len(m))
				for i := 1; i <= len(m); i++ {
					list = append(list, m[i])
				}
				kdcs = strings.Join(list, ", ")
			}
			e.Hint = "no KDC of realm " + k.realm + " answered (tried " + kdcs +
				"): check the realm's kdc entries in krb5.conf (exchange.krb5_conf) and that TCP and UDP port 88 are open to them"
		case strings.Contains(text, "keytab"):
			e.Hint = "the keytab " + k.keytab + " has no key for " + k.principal +
				": check exchange.user against the keytab's principals (klist -k) and export it again"
		default:
			e.Hint = "kerberos failed; check exchange.user, exchange.realm and exchange.krb5_conf"
		}
	default:
		e.Hint = "the KDC refused the request; see the error code"
	}
	return e
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func aheadOrBehind(d time.Duration) string {
	if d > 0 {
		return "ahead of"
	}
	return "behind"
}

// measureSkew asks a KDC of the realm for its time: an AS-REQ without
// pre-authentication is answered with KDC_ERR_PREAUTH_REQUIRED, and every
// KRB-ERROR carries the KDC's stime (RFC 4120 §5.9.1). It returns the
// KDC's clock minus this host's, or 0 when no KDC answered.
func (k *kerberos) measureSkew() time.Duration {
	_, kdcs, err := k.cfg.GetKDCs(k.realm, true)
	if err != nil {
		return 0
	}
	req, err := messages.NewASReqForTGT(k.realm, k.cfg, types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, k.user))
	if err != nil {
		return 0
	}
	b, err := req.Marshal()
	if err != nil {
		return 0
	}
	for i := 1; i <= len(kdcs); i++ {
		if d, ok := kdcTimeOffset(kdcs[i], b); ok {
			return d
		}
	}
	return 0
}

// kdcTimeOffset sends one request over TCP (RFC 4120 §7.2.2: a 4-byte
// length, then the message) and reads the KDC's time from its KRB-ERROR.
func kdcTimeOffset(addr string, req []byte) (time.Duration, bool) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return 0, false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(req)))
	if _, err := c.Write(append(msg, req...)); err != nil {
		return 0, false
	}
	sent := time.Now()
	var n [4]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return 0, false
	}
	size := binary.BigEndian.Uint32(n[:])
	if size == 0 || size > 1<<20 {
		return 0, false
	}
	resp := make([]byte, size)
	if _, err := io.ReadFull(c, resp); err != nil {
		return 0, false
	}
	var ke messages.KRBError
	if err := ke.Unmarshal(resp); err != nil {
		return 0, false
	}
	stime := ke.STime.Add(time.Duration(ke.Susec) * time.Microsecond)
	return stime.Sub(sent).Round(time.Second), true
}

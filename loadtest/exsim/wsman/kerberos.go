package wsman

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/gssapi"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/service"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
)

// Kerberos makes a Server accept Negotiate (SPNEGO wrapping a Kerberos
// AP-REQ) and Kerberos HTTP authentication, as the WinRM service and the
// Exchange /PowerShell virtual directory do by default. Tickets are
// verified with the service's keytab and must be for the service's own
// SPN: a ticket for another host's SPN is refused even when the keytab
// holds that key too, as a Windows host refuses a ticket for a service it
// does not run.
//
// Only authentication is offered: the WinRM message encryption that a
// Windows client negotiates over plain HTTP (multipart/encrypted bodies,
// MS-WSMV 2.2.9.1) is not, so Kerberos clients must send plain SOAP, over
// HTTPS in production. See docs/operations.md.
//
// References: RFC 4559 (HTTP Negotiate), RFC 4178 (SPNEGO), RFC 4121 (the
// Kerberos GSS-API token); [MS-WSMV] 2.2.9.1 "Encrypted Message Types"
// (https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-wsmv/58421aa4-861a-4410-831a-c999f094cdb7)
// names both the Negotiate and the Kerberos scheme for WinRM over HTTP.
type Kerberos struct {
	// Keytab holds the service keys (HTTP/<host> principals).
	Keytab *keytab.Keytab
	// SPN is the service principal tickets must name, such as
	// "HTTP/cas01.contoso.com" (without realm). Empty means HTTP/<host>
	// of the request's Host header, lower-cased.
	SPN string
	// MaxClockSkew bounds the difference between the client's
	// authenticator time and this host's clock (default 5 minutes,
	// Windows' and MIT's default).
	MaxClockSkew time.Duration
}

// NewKerberos loads the keytab at path for a Server's Options.Kerberos.
func NewKerberos(path, spn string) (*Kerberos, error) {
	kt, err := keytab.Load(path)
	if err != nil {
		return nil, fmt.Errorf("wsman kerberos keytab %s: %w", path, err)
	}
	return &Kerberos{Keytab: kt, SPN: spn}, nil
}

// Authentication schemes of the WWW-Authenticate challenge.
const (
	schemeNegotiate = "Negotiate"
	schemeKerberos  = "Kerberos"
)

// challenge sets the 401 challenge: Basic always (Options.Users decide
// whether it succeeds), Negotiate and Kerberos when Kerberos is
// configured, one header each as the WinRM service sends them.
func (s *Server) challenge(h http.Header) {
	h.Set("WWW-Authenticate", `Basic realm="WSMAN"`)
	if s.opts.Kerberos != nil {
		h.Add("WWW-Authenticate", schemeNegotiate)
		h.Add("WWW-Authenticate", schemeKerberos)
	}
}

// kerberosAuth authenticates a Negotiate or Kerberos Authorization header.
// tried is false when the request carries neither (or Kerberos is not
// configured), so that Basic is checked instead.
func (s *Server) kerberosAuth(r *http.Request) (user string, ok, tried bool) {
	k := s.opts.Kerberos
	if k == nil {
		return "", false, false
	}
	scheme, token, found := strings.Cut(r.Header.Get("Authorization"), " ")
	if !found || (!strings.EqualFold(scheme, schemeNegotiate) && !strings.EqualFold(scheme, schemeKerberos)) {
		return "", false, false
	}
	name, realm, err := k.verify(r, strings.TrimSpace(token))
	if err != nil {
		s.log.Debug("wsman kerberos refused", "remote", r.RemoteAddr, "scheme", scheme, "err", err)
		return "", false, true
	}
	// The client principal maps to a user as a Windows logon maps
	// user@REALM to the account: Options.Users by full principal, else
	// by name.
	if len(s.users) == 0 {
		return name, true, true
	}
	if cred, known := s.users[strings.ToLower(name+"@"+realm)]; known {
		return cred.name, true, true
	}
	if cred, known := s.users[strings.ToLower(name)]; known {
		return cred.name, true, true
	}
	s.log.Debug("wsman kerberos principal is not a user", "principal", name+"@"+realm)
	return "", false, true
}

// errWrongSPN refuses a ticket issued for another service.
var errWrongSPN = errors.New("ticket is for another service principal")

// verify checks the token's AP-REQ and returns the client principal.
func (k *Kerberos) verify(r *http.Request, token string) (name, realm string, err error) {
	raw, err := base64.StdEncoding.DecodeString(token)
	if err != nil {
		return "", "", fmt.Errorf("token is not base64: %w", err)
	}
	apReq, err := apReqOf(raw)
	if err != nil {
		return "", "", err
	}
	want := k.SPN
	if want == "" {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		want = "HTTP/" + strings.ToLower(strings.TrimSuffix(host, "."))
	}
	if got := apReq.Ticket.SName.PrincipalNameString(); !strings.EqualFold(got, want) {
		return "", "", fmt.Errorf("%w: ticket for %s, this service is %s", errWrongSPN, got, want)
	}
	settings := []func(*service.Settings){
		service.KeytabPrincipal(want),
		service.MaxClockSkew(cmpDur(k.MaxClockSkew, 5*time.Minute)),
		service.DecodePAC(false),
	}
	if h, err := types.GetHostAddress(r.RemoteAddr); err == nil {
		settings = append(settings, service.ClientAddress(h))
	}
	ok, creds, err := service.VerifyAPREQ(&apReq, service.NewSettings(k.Keytab, settings...))
	if err != nil {
		return "", "", fmt.Errorf("AP-REQ for %s: %w", want, err)
	}
	if !ok || creds == nil {
		return "", "", fmt.Errorf("AP-REQ for %s not valid", want)
	}
	return creds.UserName(), creds.Domain(), nil
}

// apReqOf extracts the AP-REQ from a SPNEGO NegTokenInit carrying a
// Kerberos mechanism token, or from a bare Kerberos GSS-API token (the
// "Kerberos" scheme, or a Negotiate client that skips SPNEGO).
func apReqOf(raw []byte) (messages.APReq, error) {
	var k5 spnego.KRB5Token
	if err := k5.Unmarshal(raw); err == nil {
		if !k5.IsAPReq() {
			return messages.APReq{}, errors.New("kerberos token is not an AP-REQ")
		}
		return k5.APReq, nil
	}
	var st spnego.SPNEGOToken
	if err := st.Unmarshal(raw); err != nil {
		return messages.APReq{}, fmt.Errorf("token is neither SPNEGO nor Kerberos: %w", err)
	}
	if !st.Init {
		return messages.APReq{}, errors.New("SPNEGO token is not a NegTokenInit")
	}
	krb := false
	for _, oid := range st.NegTokenInit.MechTypes {
		if oid.Equal(gssapi.OIDKRB5.OID()) || oid.Equal(gssapi.OIDMSLegacyKRB5.OID()) {
			krb = true
		}
	}
	if !krb || len(st.NegTokenInit.MechTokenBytes) == 0 {
		// An NTLMSSP-only NegTokenInit: NTLM is not offered here.
		return messages.APReq{}, errors.New("SPNEGO token carries no Kerberos mechanism token")
	}
	if err := k5.Unmarshal(st.NegTokenInit.MechTokenBytes); err != nil {
		return messages.APReq{}, fmt.Errorf("SPNEGO mechanism token: %w", err)
	}
	if !k5.IsAPReq() {
		return messages.APReq{}, errors.New("SPNEGO mechanism token is not an AP-REQ")
	}
	return k5.APReq, nil
}

func cmpDur(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

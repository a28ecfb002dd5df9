package runspace

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors. Errors returned by this package wrap one of them, or are
// a *FaultError, *StatusError, *TransportError or *RemoteError; test with
// errors.Is and errors.As, or reduce to a metric label with Classify.
var (
	// ErrThrottled: Exchange or WinRM refused work because a quota was
	// exceeded (concurrent shells, cmdlet rate, budget, WinRM operations).
	ErrThrottled = errors.New("throttled")
	// ErrSessionBroken: the session can no longer be used (transport
	// failure, malformed or unexpected frame, shell gone, deadline overrun).
	ErrSessionBroken = errors.New("session broken")
	// ErrPoolClosed: Close was called.
	ErrPoolClosed = errors.New("runspace pool closed")
	// ErrNotStarted: Acquire or Do before Start.
	ErrNotStarted = errors.New("runspace pool not started")
	// ErrAuth: the server rejected the credentials (HTTP 401/403) or
	// Kerberos could not obtain a ticket.
	ErrAuth = errors.New("authentication failed")
	// ErrUnencrypted: plain HTTP to a host that is not loopback, without
	// Options.AllowUnencrypted.
	ErrUnencrypted = errors.New("plain HTTP refused")
	// ErrInitFailed: the bootstrap could not load Exchange (InitErr frame),
	// or the process ended before its Ready frame.
	ErrInitFailed = errors.New("session initialisation failed")
	// ErrAllServersDown: no endpoint could be reached.
	ErrAllServersDown = errors.New("all servers down")
	// ErrProtocol: a frame was malformed or did not belong to the request.
	ErrProtocol = errors.New("protocol error")
	// ErrInvalidCall: the Call was refused before anything was sent
	// (cmdlet not in the allowlist, bad parameter name or value type).
	ErrInvalidCall = errors.New("invalid call")
)

// WS-Man fault codes (WSManFault/@Code) this package acts on.
const (
	FaultOperationTimeout = 2150858793 // Receive long-poll expired: not an error
	FaultInvalidSelectors = 2150858843 // shell not found: the session is gone
	FaultQuotaLimit       = 2150858815
	FaultMaxShells        = 2150859173 // MaxShellsPerUser
	FaultMaxOperations    = 2150859174 // MaxConcurrentOperationsPerUser
	FaultQuotaUser        = 2150859175
	FaultQuotaSystem      = 2150859176
	FaultMaxShellUsers    = 2150859179 // MaxConcurrentUsers
	// The per-plugin quota (PPQ) faults, ERROR_WSMAN_QUOTA_MAX_SHELLS_PPQ
	// 2150859236 to ..._MIN_REQUIREMENT_NOT_AVAILABLE_PPQ 2150859242
	// (wsmerror.h), MaxCommandsPerShell among them. Windows sends them as
	// w:InternalError, not w:QuotaLimit (pypsrp issue #148).
	FaultFirstPluginQuota    = 2150859236
	FaultMaxCommandsPerShell = 2150859241
	FaultLastPluginQuota     = 2150859242
)

// FaultError is a WS-Management fault returned by a WinRM server.
type FaultError struct {
	HTTPStatus int
	Code       uint64 // WSManFault/@Code, 0 when absent
	Subcode    string // e.g. "w:QuotaLimit"
	Reason     string // s:Reason/s:Text, else f:Message
	Machine    string // WSManFault/@Machine
	Action     string // the request's action (Create, Command, Receive, ...)
}

func (e *FaultError) Error() string {
	var b strings.Builder
	b.WriteString("wsman ")
	if e.Action != "" {
		b.WriteString(e.Action)
		b.WriteByte(' ')
	}
	if e.Code == FaultOperationTimeout {
		// masterzen/winrm's Receive loop retries errors whose text
		// contains "OperationTimeout"; only this fault may say so.
		b.WriteString("OperationTimeout ")
	}
	b.WriteString("fault")
	if e.Code != 0 {
		b.WriteByte(' ')
		b.WriteString(strconv.FormatUint(e.Code, 10))
	}
	if e.Subcode != "" {
		fmt.Fprintf(&b, " (%s)", e.Subcode)
	}
	if e.Machine != "" {
		fmt.Fprintf(&b, " from %s", e.Machine)
	}
	fmt.Fprintf(&b, ", http %d", e.HTTPStatus)
	if e.Reason != "" {
		b.WriteString(": ")
		reason := e.Reason
		if e.Code != FaultOperationTimeout {
			reason = strings.ReplaceAll(reason, "OperationTimeout", "Operation Timeout")
		}
		b.WriteString(reason)
	}
	return b.String()
}

// Is makes quota faults match ErrThrottled and a lost shell match
// ErrSessionBroken.
func (e *FaultError) Is(target error) bool {
	switch target {
	case ErrThrottled:
		return e.throttle()
	case ErrSessionBroken:
		// MaxCommandsPerShell is counted over the shell's life on Windows
		// (pypsrp issue #148): the shell takes no more commands, so it is
		// replaced, and the fault is throttling as well.
		return e.Code == FaultInvalidSelectors || strings.HasSuffix(e.Subcode, ":InvalidSelectors") || e.Code == FaultMaxCommandsPerShell
	}
	return false
}

func (e *FaultError) throttle() bool {
	switch e.Code {
	case FaultQuotaLimit, FaultMaxShells, FaultMaxOperations, FaultQuotaUser, FaultQuotaSystem, FaultMaxShellUsers:
		return true
	}
	if e.Code >= FaultFirstPluginQuota && e.Code <= FaultLastPluginQuota {
		return true
	}
	return strings.HasSuffix(e.Subcode, ":QuotaLimit") || isThrottleText(e.Reason)
}

// timedOut reports the Receive long-poll timeout fault.
func (e *FaultError) timedOut() bool {
	return e.Code == FaultOperationTimeout || (e.Code == 0 && strings.HasSuffix(e.Subcode, ":TimedOut"))
}

// StatusError is an HTTP response that is not a WS-Man envelope (401, 413,
// a proxy's error page, a 200 without a SOAP content type).
type StatusError struct {
	StatusCode  int
	ContentType string
	Action      string
	Body        string // first bytes, for diagnostics
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("wsman %s: http %d %s", e.Action, e.StatusCode, strings.ToLower(http.StatusText(e.StatusCode)))
	if e.ContentType != "" {
		msg += " (" + e.ContentType + ")"
	}
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// Is makes 401 and 403 match ErrAuth.
func (e *StatusError) Is(target error) bool {
	return target == ErrAuth && (e.StatusCode == 401 || e.StatusCode == 403)
}

// TransportError is a failure below HTTP (dial, TLS, reset, timeout) or an
// unusable response body. It deliberately does not unwrap to *url.Error:
// masterzen/winrm retries url.Error timeouts forever, and a server that does
// not answer within OperationTimeout + slack is gone, not slow.
type TransportError struct {
	Action  string
	URL     string
	Timeout bool
	Err     error
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("wsman %s %s: %v", e.Action, e.URL, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// throttlePatterns are the quota texts of Exchange and WinRM (lowercase).
var throttlePatterns = []string{
	"concurrent shells",          // "This user is allowed a maximum of 18 concurrent shells" and WinRM MaxShellsPerUser
	"user load quota of",         // PowerShellMaxCmdlets
	"fail to create a runspace",  // budget: MaxConcurrency / MaxRunspaces
	"micro delay applied",        // budget micro delay
	"exceeded your budget",       // budget exhausted
	"concurrent operations",      // WinRM MaxConcurrentOperationsPerUser
	"concurrent commands per",    // WinRM MaxCommandsPerShell (pypsrp #148)
	"maximum number of users",    // WinRM MaxConcurrentUsers
	"remotely open on the same",  // MS-WSMV wording of MaxShellsPerUser
	"the request was throttled",  // generic
	"policy party : maxconcurre", // budget snapshot
}

func isThrottleText(s string) bool {
	if s == "" {
		return false
	}
	l := strings.ToLower(s)
	for _, p := range throttlePatterns {
		if strings.Contains(l, p) {
			return true
		}
	}
	return false
}

var (
	notApprovedRe = regexp.MustCompile(`(?i)not be approved for at least (\d+) milliseconds`)
	microDelayRe  = regexp.MustCompile(`(?i)actual delayed:\s*(\d+)\s*msecs`)
)

// throttleHint returns the wait that a throttling text asks for, or 0.
func throttleHint(s string) time.Duration {
	for _, re := range []*regexp.Regexp{notApprovedRe, microDelayRe} {
		if m := re.FindStringSubmatch(s); m != nil {
			if ms, err := strconv.ParseInt(m[1], 10, 64); err == nil && ms > 0 {
				return min(time.Duration(ms)*time.Millisecond, 5*time.Minute)
			}
		}
	}
	return 0
}

// remoteThrottled wraps a RemoteError whose text is a quota message.
func remoteError(re *RemoteError) error {
	if isThrottleText(re.Msg) {
		return fmt.Errorf("%w: %w", ErrThrottled, re)
	}
	if remoteSessionLost(re) {
		return fmt.Errorf("%w: %w", ErrSessionBroken, re)
	}
	return re
}

// remoteSessionLost reports errors after which an implicit-remoting
// session (Import-PSSession) is useless: every later call would fail too.
func remoteSessionLost(re *RemoteError) bool {
	for _, t := range []string{"PSRemotingTransportException", "InvalidRunspaceStateException"} {
		if strings.Contains(re.Type, t) {
			return true
		}
	}
	return false
}

// Label values of Classify.
const (
	ClassThrottle  = "throttle"
	ClassAuth      = "auth"
	ClassTLS       = "tls"
	ClassTimeout   = "timeout"
	ClassTransport = "transport"
	ClassFault     = "fault"
	ClassRemote    = "remote"
	ClassInit      = "init"
	ClassCanceled  = "canceled"
	ClassProtocol  = "protocol"
	ClassInvalid   = "invalid"
	ClassClosed    = "closed"
	ClassOther     = "other"
	// Subclasses of ClassRemote that RemoteClass gives a cmdlet's error
	// record, by its ErrorCategory (language independent; MS-PSRP
	// 2.2.3.15): the object does not exist, the account's rights (RBAC) do
	// not allow it, or Exchange refused a value.
	ClassNotFound   = "not_found"
	ClassDenied     = "denied"
	ClassInvalidArg = "invalid_argument"
)

// Classify reduces err to a bounded label value: "throttle", "auth",
// "tls", "timeout", "transport", "fault", "remote", "init", "canceled",
// "protocol", "invalid", "closed" or "other"; "" for nil.
func Classify(err error) string {
	if err == nil {
		return ""
	}
	var (
		fe *FaultError
		re *RemoteError
		te *TransportError
		se *StatusError
		ne net.Error
	)
	switch {
	case errors.Is(err, ErrThrottled):
		return ClassThrottle
	case errors.Is(err, ErrAuth):
		return ClassAuth
	case errors.Is(err, context.Canceled):
		return ClassCanceled
	case errors.Is(err, ErrPoolClosed):
		return ClassClosed
	case errors.Is(err, ErrInvalidCall), errors.Is(err, ErrNotStarted):
		return ClassInvalid
	case isTLSError(err):
		return ClassTLS
	case errors.Is(err, ErrInitFailed):
		return ClassInit
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, errRequestTimeout):
		return ClassTimeout
	case errors.As(err, &te) && te.Timeout:
		return ClassTimeout
	case errors.Is(err, ErrProtocol):
		return ClassProtocol
	case errors.As(err, &re):
		return ClassRemote
	case errors.As(err, &fe):
		if fe.timedOut() {
			return ClassTimeout
		}
		return ClassFault
	case errors.As(err, &ne) && ne.Timeout():
		return ClassTimeout
	case errors.As(err, &te), errors.As(err, &se), errors.As(err, &ne),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.ErrShortWrite),
		errors.Is(err, ErrAllServersDown), errors.Is(err, ErrSessionBroken):
		return ClassTransport
	}
	return ClassOther
}

func isTLSError(err error) bool {
	var (
		ua  x509.UnknownAuthorityError
		hn  x509.HostnameError
		ci  x509.CertificateInvalidError
		cve *tls.CertificateVerificationError
		rhe tls.RecordHeaderError
		ae  tls.AlertError
	)
	return errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) ||
		errors.As(err, &cve) || errors.As(err, &rhe) || errors.As(err, &ae)
}

// RemoteClass refines ClassRemote: for an error that wraps a
// *RemoteError it returns ClassNotFound, ClassDenied, ClassInvalidArg or
// ClassRemote by the record's ErrorCategory name, which both session kinds
// report ([string]$e.CategoryInfo.Category over WinRS,
// ErrorCategory_Category over PSRP); for any other error, Classify(err).
// Throttling and lost sessions are already ErrThrottled and
// ErrSessionBroken (remoteError, psrpRemoteError).
func RemoteClass(err error) string {
	re, ok := errors.AsType[*RemoteError](err)
	if !ok || Classify(err) != ClassRemote {
		return Classify(err)
	}
	return re.class()
}

func (e *RemoteError) class() string {
	switch e.Category {
	case "ObjectNotFound":
		return ClassNotFound
	case "PermissionDenied", "SecurityError", "AuthenticationError":
		return ClassDenied
	case "InvalidArgument", "InvalidData", "InvalidType":
		return ClassInvalidArg
	}
	// Exchange reports most cmdlet errors as NotSpecified; its
	// FullyQualifiedErrorId names the exception instead
	// ("[FailureCategory=Cmdlet-ManagementObjectNotFoundException] …"),
	// in every language, and so does the exception type.
	id := e.FQID + " " + e.Type
	switch {
	case strings.Contains(id, "ObjectNotFound"):
		return ClassNotFound
	case strings.Contains(id, "AccessDenied"), strings.Contains(id, "UnauthorizedAccess"),
		strings.Contains(id, "CommandNotFoundException"): // RBAC: a cmdlet the roles do not grant does not exist
		return ClassDenied
	case strings.Contains(id, "ParameterBinding"), strings.Contains(id, "DataValidationException"),
		strings.Contains(id, "ArgumentException"), strings.Contains(id, "InvalidArgument"):
		return ClassInvalidArg
	}
	return ClassRemote
}

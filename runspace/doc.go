// Package runspace manages a bounded pool of long-lived remote PowerShell
// sessions on Exchange Client Access servers, over WS-Management with
// github.com/masterzen/winrm's transport and SOAP builders. One pool serves
// two session kinds (sessionKind): PSRP (Options.Mode = ModePSRP, below)
// and WinRS (remoting, snapin).
//
// # PSRP sessions
//
// In psrp mode a session is one runspace pool (of one runspace) on the
// server's own /PowerShell/ endpoint, configuration Microsoft.Exchange,
// speaking MS-PSRP over WS-Management (psrpsession.go, psrpwire.go; the
// message layer is package psrp): Create with the client's ShellId and
// creationXml, Receive until RUNSPACEPOOL_STATE Opened; each call is one
// pipeline whose CREATE_PIPELINE carries the cmdlet (IsScript false) and
// each parameter as a typed CLIXML value, after the cmdlet and parameter
// allowlists of bootstrap.ps1 accepted them: no script text exists on
// this path. Output objects are projected straight from CLIXML to the
// flat JSON objects the WinRS bootstrap sends (psrp.Projection), one by
// one as they arrive, so callers see the same shape from both kinds. A
// pipeline that stalls for RequestTimeout, or whose ctx ends, is stopped
// with powershell/signal/crtl_c and the session is kept; a finished one
// is released with terminate. Error records become *RemoteError
// (FullyQualifiedErrorId, category; RemoteClass refines them), quota
// faults on Create and Exchange's "Micro delay applied" warnings drive
// the adaptive concurrency, the server's MaxEnvelopeSize is read from its
// WinRM configuration when the account may (else 150 KB), idle sessions
// send a short keep-alive Receive, and Close deletes the pool. The
// account needs only Exchange RBAC rights.
//
// # WinRS sessions
//
// A WinRS session is one WinRM shell running one long-lived powershell.exe. The
// command line carries only the constant stage 0 (Stage0); stage 1
// (bootstrap.ps1, embedded) and every request travel over stdin as tagged
// base64 JSON lines (protocol.go). Requests name an allowlisted cmdlet and
// carry arguments as data that the bootstrap binds by splatting, so no value
// is ever parsed as PowerShell code. Call values are checked before they are
// sent (allowlist, parameter names, value types, valid UTF-8).
//
// # Use
//
//	p, err := runspace.NewPool(opts) // validates; no I/O
//	err = p.Start(ctx)               // first session, CAS discovery, prober
//	res, err := p.Do(ctx, runspace.Call{Cmd: "Get-MobileDevice", …}, func(obj json.RawMessage) error { … })
//	err = p.Close(ctx)               // drains, deletes every shell, no goroutine left
//
// All Pool methods are safe for concurrent use. Do streams each output
// object to its callback on the calling goroutine as it arrives. Acquire and
// Release hand out a Session for a sequence of calls; a Session runs one
// request at a time. Open starts one standalone Session (for checks).
//
// # Sessions
//
// Opening a session creates the shell, starts powershell.exe, sends stage 1
// and a SessionConfig line, and waits for the Ready frame within
// ConnectTimeout. A session is broken, closed and replaced when its
// transport fails, a frame is malformed or belongs to another request, the
// shell disappears, the process exits, or a request stalls: there is no
// ctrl_c over WinRS, so a request that produces no output for
// RequestTimeout (or whose ctx ends) costs its session. Sessions are
// recycled after MaxRequestsPerSession requests or MaxSessionAge. Closing a
// session sends stdin EOF, a terminate signal and a shell Delete, each
// bounded in time (the library's calls take no context; a per-session
// transport context aborts whatever still runs). A shell left behind would
// hold one of the account's quota slots until WinRM reaps it, so deletion
// is retried on a fresh transport after an abort.
//
// # Transport
//
// The stock masterzen/winrm transports ignore the HTTP status (a fault on
// CreateShell yields an empty shell id, a fault on Receive is re-polled
// forever, an empty Receive body panics). This package installs its own
// winrm.Transporter: faults become *FaultError (only the Receive timeout
// fault keeps the "OperationTimeout" text the library retries), other
// non-SOAP answers *StatusError, failures below HTTP *TransportError (never
// an *url.Error, whose timeouts the library would retry forever), bodies
// are always read and closed, idle connections are kept per host, and
// WINRS_CONSOLEMODE_STDIN is sent as FALSE. Redirects are refused.
//
// The zero value is safe: HTTPS on 5986, TLS verified against CACert (or
// the system roots) unless InsecureSkipVerify is set, and NTLM
// (DefaultAuth). PlainHTTP reaches loopback addresses only (resolved and
// checked by the dialer at every connection, no proxy) unless
// AllowUnencrypted is set, and NewPool logs what it exposes. A Basic
// Authorization header is sent only with Auth "basic": the NTLM client
// (go-ntlmssp v0.1.1, whose CHALLENGE parser no longer panics on hostile
// offsets, GHSA-pjcq-xvwq-hhpj) never answers a Basic challenge, and a
// panic in it would become an ErrAuth. NTLM authenticates connections, so with
// NTLM each session gets its own two single-connection lanes (the Receive
// long-poll and everything else), keeping every handshake on one
// connection. Kerberos logs in once per pool (gokrb5, Options.Realm,
// KrbConfig, SPN; Password or Keytab) and adds a SPNEGO header per
// request; its failures are *KerberosError values that name the fix
// (kerberos.go).
//
// # Pool
//
// The pool opens sessions lazily up to an adaptive limit (at most Size,
// which stays below the account's PowerShellMaxConcurrency). Quota errors of
// Exchange ("maximum of N concurrent shells", "user load quota of",
// "Fail to create a runspace", "Micro delay applied", "exceeded your
// budget") and WinRM (MaxShellsPerUser 2150859173, max operations
// 2150859174) halve the limit (at least 1) and pause new work for a jittered
// backoff (or the wait the error asks for); after a quiet period, every
// max(limit, 4) successes raise it by one. Idempotent calls that failed on
// a broken session or by throttling are run again on another session (at
// most twice, jittered backoff) unless part of their output already reached
// the callback; calls that never reached a session are retried whatever
// their kind.
//
// With CASFailover, Start adds the Client Access servers that
// Get-ClientAccessService (or Get-ExchangeServer) reports after the
// configured ones. New sessions open on the first server that is up, in
// that order. A server whose connection fails is marked down with an
// exponential, jittered backoff; a background prober (stopped by Close)
// checks down servers that are preferred over the current one by creating
// and deleting a shell, and takes them back: new sessions go there, old
// ones drain by recycling.
//
// # Errors and metrics
//
// Errors wrap the sentinels ErrThrottled, ErrSessionBroken, ErrAuth,
// ErrInitFailed, ErrAllServersDown, ErrProtocol, ErrInvalidCall,
// ErrPoolClosed and ErrNotStarted, or are *FaultError, *StatusError,
// *TransportError or *RemoteError (a cmdlet's ErrorRecord). Classify reduces
// any of them to a bounded label value.
//
// The pool's metrics (Pool.Metrics; one Pool per metrics.Set):
// easconnector_runspace_sessions{state="busy|idle"},
// easconnector_runspace_limit, easconnector_runspace_session_opens_total,
// easconnector_runspace_session_failures_total{class},
// easconnector_runspace_request_duration_seconds{cmdlet} (Prometheus
// histogram), easconnector_runspace_errors_total{cmdlet,class},
// easconnector_runspace_throttle_events_total,
// easconnector_runspace_endpoint_up{server} and
// easconnector_runspace_failovers_total.
//
// # Remoting mode
//
// In "remoting" mode the bootstrap opens New-PSSession to
// http://<server>/PowerShell/ with Kerberos from inside the WinRS process.
// That second hop needs credentials the process holds: Basic over HTTPS (a
// cleartext logon) works; an NTLM or Kerberos WinRS logon needs CredSSP or
// constrained delegation. Configure servers by FQDN so that the Kerberos
// SPN of the /PowerShell endpoint matches.
package runspace

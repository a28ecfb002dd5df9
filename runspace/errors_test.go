package runspace

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{fmt.Errorf("x: %w", ErrThrottled), ClassThrottle},
		{fmt.Errorf("%w: %w", ErrInitFailed, fmt.Errorf("%w: %w", ErrThrottled, &RemoteError{Msg: "x"})), ClassThrottle},
		{&StatusError{StatusCode: 401}, ClassAuth},
		{&StatusError{StatusCode: 403}, ClassAuth},
		{&StatusError{StatusCode: 413}, ClassTransport},
		{fmt.Errorf("kerberos: %w", ErrAuth), ClassAuth},
		{context.Canceled, ClassCanceled},
		{fmt.Errorf("op: %w", context.DeadlineExceeded), ClassTimeout},
		{fmt.Errorf("%w: %w", ErrSessionBroken, errRequestTimeout), ClassTimeout},
		{&TransportError{Err: x509.UnknownAuthorityError{}}, ClassTLS},
		{&TransportError{Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}, ClassTransport},
		{&TransportError{Timeout: true, Err: errors.New("timeout awaiting response headers")}, ClassTimeout},
		{fmt.Errorf("%w: ready frame missing", ErrInitFailed), ClassInit},
		{fmt.Errorf("%w: bad base64", ErrProtocol), ClassProtocol},
		{fmt.Errorf("%w: Get-X", ErrInvalidCall), ClassInvalid},
		{ErrNotStarted, ClassInvalid},
		{fmt.Errorf("Get-CASMailbox: %w", &RemoteError{Type: "ManagementObjectNotFoundException", Msg: "not found"}), ClassRemote},
		{&FaultError{Code: FaultInvalidSelectors, Subcode: "w:InvalidSelectors"}, ClassFault},
		{&FaultError{Code: FaultOperationTimeout}, ClassTimeout},
		{&FaultError{Code: FaultMaxShells}, ClassThrottle},
		// Windows' per-shell and per-plugin quota faults are w:InternalError
		// (pypsrp #148), still throttling.
		{&FaultError{Code: 2150859241, Subcode: "w:InternalError", Reason: "The WS-Management service cannot process the request. The maximum number of concurrent commands per shell has been exceeded. Retry the request later or raise the Maximum Commands per Shell quota."}, ClassThrottle},
		{&FaultError{Code: 2150859236, Subcode: "w:InternalError"}, ClassThrottle},
		{&FaultError{Code: 2150859242, Subcode: "w:InternalError"}, ClassThrottle},
		{&FaultError{Code: 2150859243, Subcode: "w:InternalError"}, ClassFault},
		{fmt.Errorf("stdin: %w", io.ErrShortWrite), ClassTransport},
		{fmt.Errorf("stdout: %w", io.ErrUnexpectedEOF), ClassTransport},
		{fmt.Errorf("%w: x", ErrAllServersDown), ClassTransport},
		{fmt.Errorf("%w: powershell exited with code 1", ErrSessionBroken), ClassTransport},
		{ErrPoolClosed, ClassClosed},
		{errors.New("something else"), ClassOther},
	}
	for _, tt := range tests {
		if got := Classify(tt.err); got != tt.want {
			t.Errorf("Classify(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// TestThrottleTexts uses the texts of reference/exchange.md §3.4 and
// reference/winrm.md §2.6.
func TestThrottleTexts(t *testing.T) {
	tests := []struct {
		text     string
		throttle bool
		hint     time.Duration
	}{
		{"The WS-Management service cannot process the request. This user is allowed a maximum of 18 concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user.", true, 0},
		{"The WS-Management service cannot process the request. The user load quota of 400 requests per 60 seconds has been exceeded. Send future requests at a slower rate or raise the quota for this user. The next request from this user will not be approved for at least 2350 milliseconds.", true, 2350 * time.Millisecond},
		{"Fail to create a runspace because you have exceeded the maximum number of connections allowed : 3 for the policy party : MaxConcurrency. Please close existing runspace and try again.", true, 0},
		{"WARNING: Micro delay applied. Actual delayed: 21956 msecs, Enforced: True, Capped delay: 21956 msecs", true, 21956 * time.Millisecond},
		{"Sending data to a remote command failed with the following error message: You have exceeded your budget. Please try again later.", true, 0},
		{"The WS-Management service cannot process the request. This user is allowed a maximum number of 1500 concurrent operations, which has been exceeded.", true, 0},
		{"The WS-Management service cannot process the request. The maximum number of concurrent commands per shell has been exceeded. Retry the request later or raise the Maximum Commands per Shell quota.", true, 0},
		{"The Windows Remote Shell cannot process the request. The server is already executing the maximum number of concurrent shells a user can remotely open on the same system. Retry later.", true, 0},
		{"The operation couldn't be performed because object 'jdoe' couldn't be found on 'DC1.contoso.com'.", false, 0},
		{"", false, 0},
	}
	for _, tt := range tests {
		if got := isThrottleText(tt.text); got != tt.throttle {
			t.Errorf("isThrottleText(%.60q) = %v, want %v", tt.text, got, tt.throttle)
		}
		if got := throttleHint(tt.text); got != tt.hint {
			t.Errorf("throttleHint(%.60q) = %v, want %v", tt.text, got, tt.hint)
		}
	}
}

func TestRemoteError(t *testing.T) {
	quota := &RemoteError{Type: "System.Management.Automation.Remoting.PSRemotingTransportException",
		Msg: "The user load quota of 400 requests per 60 seconds has been exceeded."}
	if err := remoteError(quota); !errors.Is(err, ErrThrottled) || errors.Is(err, ErrSessionBroken) {
		t.Errorf("remoteError(quota) = %v, want throttled", err)
	}
	lost := &RemoteError{Type: "System.Management.Automation.Remoting.PSRemotingTransportException",
		Msg: "Processing data from remote server failed: the session is closed."}
	if err := remoteError(lost); !errors.Is(err, ErrSessionBroken) {
		t.Errorf("remoteError(lost) = %v, want session broken", err)
	}
	plain := &RemoteError{Type: "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException", Msg: "not found"}
	var re *RemoteError
	if err := remoteError(plain); !errors.As(err, &re) || errors.Is(err, ErrSessionBroken) || errors.Is(err, ErrThrottled) {
		t.Errorf("remoteError(plain) = %v, want the RemoteError alone", err)
	}
}

// TestMaxCommandsPerShellFault: Windows counts MaxCommandsPerShell over a
// shell's life (pypsrp issue #148), so its fault is throttling on a shell
// that must be replaced; the other plugin quota faults only throttle.
func TestMaxCommandsPerShellFault(t *testing.T) {
	f := &FaultError{Code: FaultMaxCommandsPerShell, Subcode: "w:InternalError"}
	if !errors.Is(f, ErrThrottled) || !errors.Is(f, ErrSessionBroken) {
		t.Errorf("MaxCommandsPerShell fault: throttled %v, session broken %v; want both", errors.Is(f, ErrThrottled), errors.Is(f, ErrSessionBroken))
	}
	g := &FaultError{Code: FaultFirstPluginQuota, Subcode: "w:InternalError"}
	if !errors.Is(g, ErrThrottled) || errors.Is(g, ErrSessionBroken) {
		t.Errorf("MaxShellsPPQ fault: throttled %v, session broken %v; want throttled only", errors.Is(g, ErrThrottled), errors.Is(g, ErrSessionBroken))
	}
}

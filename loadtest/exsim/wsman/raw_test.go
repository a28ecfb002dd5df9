package wsman_test

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/masterzen/winrm"

	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
)

// These tests send the client's own request envelopes (built with
// masterzen's request builders) over plain HTTP, to see each response.

func parseReceive(t testing.TB, body string) (stdout, stderr string, done bool, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	done, code, err := winrm.ParseSlurpOutputErrResponse(body, &out, &errb)
	if err != nil {
		t.Fatalf("ParseSlurpOutputErrResponse() error = %v; body %s", err, body)
	}
	return out.String(), errb.String(), done, code
}

func TestReceiveDoneSharesEnvelopeWithData(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	shellID := f.createShell(t)
	id := f.execute(t, shellID, "emit", "10", "3")
	f.runner.finished(t, id)
	status, body := f.receive(t, shellID, id, "PT5S")
	if status != http.StatusOK {
		t.Fatalf("Receive status = %d, body %s", status, body)
	}
	stdout, _, done, code := parseReceive(t, body)
	if stdout != string(pattern(10, false)) || !done || code != 3 {
		t.Fatalf("Receive = stdout %q, done %v, code %d; want data, Done and 3 in one envelope", stdout, done, code)
	}
	if !strings.Contains(body, `End="true"`) {
		t.Errorf("final streams lack End=\"true\": %s", body)
	}
	// A later Receive repeats Done (clients stop at the first one).
	status, body = f.receive(t, shellID, id, "PT5S")
	if _, _, done, code := parseReceive(t, body); status != http.StatusOK || !done || code != 3 {
		t.Errorf("Receive after Done = %d, done %v, code %d", status, done, code)
	}
}

func TestReceiveTimeoutFault(t *testing.T) {
	f := newFixture(t, fixtureConfig{opts: wsman.Options{MaxTimeout: 300 * time.Millisecond}})
	shellID := f.createShell(t)
	id := f.execute(t, shellID, "sleep")
	// PT60S is clamped to MaxTimeout.
	status, hdr, body := f.post(t, msg(winrm.NewGetOutputRequest(f.url(), shellID, id, "stdout stderr", params("PT60S", 153600))))
	text := wantFault(t, status, body, wsman.CodeOperationTimeout)
	if !strings.Contains(text, "OperationTimeout") || !strings.Contains(body, "<s:Value>w:TimedOut</s:Value>") {
		t.Errorf("timeout fault = %s", body)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/soap+xml;charset=UTF-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	// masterzen's parser sees no output and no Done: it polls again.
	if _, _, done, _ := parseReceive(t, body); done {
		t.Error("timeout fault parsed as Done")
	}
}

func TestDeleteFailsPendingReceive(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	shellID := f.createShell(t)
	id := f.execute(t, shellID, "sleep")
	type result struct {
		status int
		body   string
	}
	pending := make(chan result, 1)
	go func() {
		status, body := f.receive(t, shellID, id, "PT10S")
		pending <- result{status, body}
	}()
	eventually(t, "Receive pending", func() bool {
		sh := f.srv.Shells()
		return len(sh) == 1 && sh[0].PendingRequests == 1
	})
	status, _, body := f.post(t, msg(winrm.NewDeleteShellRequest(f.url(), shellID, params("PT5S", 153600))))
	if status != http.StatusOK || !strings.Contains(body, "transfer/DeleteResponse") {
		t.Fatalf("Delete = %d %s", status, body)
	}
	r := <-pending
	wantFault(t, r.status, r.body, wsman.CodeOperationAborted)
	if rec := f.runner.finished(t, id); !errors.Is(rec.cause, wsman.ErrShellDeleted) {
		t.Errorf("Runner cause = %v, want ErrShellDeleted", rec.cause)
	}
	status, body = f.receive(t, shellID, id, "PT1S")
	wantFault(t, status, body, wsman.CodeInvalidSelectors)
	if st := f.srv.Stats(); st.ShellsDeleted != 1 || st.CurrentShells != 0 {
		t.Errorf("ShellsDeleted = %d, CurrentShells = %d", st.ShellsDeleted, st.CurrentShells)
	}
}

// TestStockDeleteTrap documents what the stock client does when its shell
// is deleted under a running command: the faults read as "no output yet",
// so it polls in a loop until its context is cancelled.
func TestStockDeleteTrap(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	c := f.client(t, testUser, testPass, params("PT5S", 153600))
	shell, err := c.CreateShell()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd, err := shell.ExecuteWithContext(ctx, "sleep")
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr := drain(cmd.Stdout), drain(cmd.Stderr)
	eventually(t, "Receive pending", func() bool {
		sh := f.srv.Shells()
		return len(sh) == 1 && sh[0].PendingRequests == 1
	})
	if err := shell.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "client re-polls a deleted shell", func() bool {
		return f.srv.Stats().Faults[wsman.CodeInvalidSelectors] >= 3
	})
	cancel()
	stdout.wait(t)
	stderr.wait(t)
	cmd.Wait()
	if f.srv.Stats().Faults[wsman.CodeOperationAborted] != 1 {
		t.Error("the pending Receive did not get the 995 fault")
	}
}

func TestIdleReaping(t *testing.T) {
	f := newFixture(t, fixtureConfig{opts: wsman.Options{IdleTimeout: 150 * time.Millisecond}})
	idle := f.createShell(t)
	idleCmd := f.execute(t, idle, "sleep")
	busy := f.createShell(t)
	busyCmd := f.execute(t, busy, "sleep")
	// A long-poll on busy counts as activity for as long as it is pending.
	polled := make(chan string, 1)
	go func() {
		_, body := f.receive(t, busy, busyCmd, "PT10S")
		polled <- body
	}()
	eventually(t, "idle shell reaped", func() bool { return f.srv.Stats().ShellsReaped == 1 })
	if rec := f.runner.finished(t, idleCmd); !errors.Is(rec.cause, wsman.ErrIdleTimeout) {
		t.Errorf("idle Runner cause = %v, want ErrIdleTimeout", rec.cause)
	}
	status, body := f.receive(t, idle, idleCmd, "PT1S")
	wantFault(t, status, body, wsman.CodeInvalidSelectors)
	if sh := f.srv.Shells(); len(sh) != 1 || sh[0].ID != busy || sh[0].PendingRequests != 1 {
		t.Fatalf("Shells() = %+v, want only the busy shell, with its Receive pending", sh)
	}
	// Ending the command ends the long-poll; then busy idles out too.
	f.post(t, signalRequest(f, busy, busyCmd, "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate"))
	if code, _, _ := faultOf(<-polled); code != wsman.CodeCommandTerminated {
		t.Errorf("long-poll ended with fault %d, want CommandTerminated", code)
	}
	eventually(t, "busy shell reaped once idle", func() bool { return f.srv.Stats().ShellsReaped == 2 })
}

func TestDropShell(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	shellID := f.createShell(t)
	id := f.execute(t, shellID, "sleep")
	pending := make(chan string, 1)
	go func() {
		status, body := f.receive(t, shellID, id, "PT10S")
		if status != http.StatusInternalServerError {
			body = "unexpected status: " + body
		}
		pending <- body
	}()
	eventually(t, "Receive pending", func() bool { return len(f.srv.Shells()) == 1 && f.srv.Shells()[0].PendingRequests == 1 })
	if !f.srv.DropShell(strings.ToLower(shellID)) {
		t.Fatal("DropShell() = false for a live shell")
	}
	if code, _, _ := faultOf(<-pending); code != wsman.CodeInvalidSelectors {
		t.Errorf("pending Receive fault = %d, want InvalidSelectors", code)
	}
	if rec := f.runner.finished(t, id); !errors.Is(rec.cause, wsman.ErrShellDropped) {
		t.Errorf("Runner cause = %v, want ErrShellDropped", rec.cause)
	}
	if f.srv.DropShell(shellID) {
		t.Error("DropShell() = true for a dropped shell")
	}
	f.createShell(t)
	f.createShell(t)
	if n := f.srv.DropAllShells(); n != 2 {
		t.Errorf("DropAllShells() = %d, want 2", n)
	}
	if st := f.srv.Stats(); st.ShellsDropped != 3 || st.CurrentShells != 0 {
		t.Errorf("ShellsDropped = %d, CurrentShells = %d", st.ShellsDropped, st.CurrentShells)
	}
}

func signalRequest(f *fixture, shellID, commandID, code string) string {
	s := msg(winrm.NewSignalRequest(f.url(), shellID, commandID, params("PT5S", 153600)))
	return strings.Replace(s, "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate", code, 1)
}

func TestSignal(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	shellID := f.createShell(t)

	t.Run("ctrl_c keeps the exit code", func(t *testing.T) {
		id := f.execute(t, shellID, "sleep")
		status, _, body := f.post(t, signalRequest(f, shellID, id, "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c"))
		if status != http.StatusOK || !strings.Contains(body, "SignalResponse") {
			t.Fatalf("Signal ctrl_c = %d %s", status, body)
		}
		if rec := f.runner.finished(t, id); !errors.Is(rec.cause, wsman.ErrInterrupted) {
			t.Errorf("Runner cause = %v, want ErrInterrupted", rec.cause)
		}
		status, body = f.receive(t, shellID, id, "PT5S")
		if _, _, done, code := parseReceive(t, body); status != http.StatusOK || !done || code != statusControlCExit {
			t.Errorf("Receive after ctrl_c = %d, done %v, code %d", status, done, code)
		}
	})
	t.Run("terminate twice and on a finished command", func(t *testing.T) {
		id := f.execute(t, shellID, "exit", "0")
		f.runner.finished(t, id)
		for i := range 2 {
			status, _, body := f.post(t, signalRequest(f, shellID, id, "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate"))
			if status != http.StatusOK {
				t.Fatalf("terminate %d = %d %s", i, status, body)
			}
		}
		status, body := f.receive(t, shellID, id, "PT1S")
		wantFault(t, status, body, wsman.CodeCommandTerminated)
	})
	t.Run("unknown code and command", func(t *testing.T) {
		id := f.execute(t, shellID, "sleep")
		status, _, body := f.post(t, signalRequest(f, shellID, id, "http://example.com/signal/kill"))
		wantFault(t, status, body, wsman.CodeInvalidParameter)
		status, _, body = f.post(t, signalRequest(f, shellID, "0BADC0DE-0000-4000-8000-000000000000", "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate"))
		wantFault(t, status, body, wsman.CodeInvalidSelectors)
	})
}

func TestQuotas(t *testing.T) {
	t.Run("processes per shell", func(t *testing.T) {
		f := newFixture(t, fixtureConfig{opts: wsman.Options{MaxProcessesPerShell: 2}})
		shellID := f.createShell(t)
		f.execute(t, shellID, "sleep")
		done := f.execute(t, shellID, "exit", "0")
		f.runner.finished(t, done) // a finished command holds no process
		f.execute(t, shellID, "sleep")
		status, _, body := f.post(t, msg(winrm.NewExecuteCommandRequest(f.url(), shellID, "sleep", nil, params("PT5S", 153600))))
		wantFault(t, status, body, wsman.CodeMaxCommandsPerShell)
	})
	t.Run("operations per user", func(t *testing.T) {
		f := newFixture(t, fixtureConfig{opts: wsman.Options{MaxOperationsPerUser: 3}})
		a, b := f.createShell(t), f.createShell(t)
		first := f.execute(t, a, "exit", "0")
		f.execute(t, a, "exit", "0")
		f.execute(t, b, "exit", "0")
		status, _, body := f.post(t, msg(winrm.NewExecuteCommandRequest(f.url(), b, "noop", nil, params("PT5S", 153600))))
		if text := wantFault(t, status, body, wsman.CodeMaxOperations); !strings.Contains(text, "maximum number of 3 concurrent operations") {
			t.Errorf("fault text = %q", text)
		}
		// Terminating a finished command frees its operation.
		f.post(t, signalRequest(f, a, first, "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate"))
		f.execute(t, b, "noop")
	})
	t.Run("shells are per user", func(t *testing.T) {
		f := newFixture(t, fixtureConfig{opts: wsman.Options{MaxShellsPerUser: 1, Users: map[string]string{testUser: testPass, "other": "pw"}}})
		shellID := f.createShell(t)
		create := msg(winrm.NewOpenShellRequest(f.url(), params("PT5S", 153600)))
		if status, _, body := f.postAs(t, "other", "pw", create); status != http.StatusOK {
			t.Fatalf("other user's Create = %d %s", status, body)
		}
		// Another user's shell is not found.
		status, _, body := f.postAs(t, "other", "pw", msg(winrm.NewExecuteCommandRequest(f.url(), shellID, "noop", nil, params("PT5S", 153600))))
		wantFault(t, status, body, wsman.CodeInvalidSelectors)
	})
}

func TestCommandLineLimitSkipCmdShell(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	shellID := f.createShell(t)
	command := func(argLen int) (int, string) {
		s := msg(winrm.NewExecuteCommandRequest(f.url(), shellID, "noop", []string{strings.Repeat("b", argLen)}, params("PT5S", 153600)))
		s = strings.Replace(s, `Name="WINRS_SKIP_CMD_SHELL">FALSE`, `Name="WINRS_SKIP_CMD_SHELL">TRUE`, 1)
		status, _, body := f.post(t, s)
		return status, body
	}
	if status, body := command(20000); status != http.StatusOK {
		t.Errorf("20000 characters without cmd.exe = %d %s, want 200", status, body)
	}
	status, body := command(32768 - len("noop "))
	wantFault(t, status, body, wsman.CodeCmdTooLong)
}

func TestSendInput(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	shellID := f.createShell(t)
	id := f.execute(t, shellID, "echo")
	send := func(data string, end bool) (int, string) {
		status, _, body := f.post(t, msg(winrm.NewSendInputRequest(f.url(), shellID, id, []byte(data), end, params("PT5S", 153600))))
		return status, body
	}
	if status, body := send("one\n", false); status != http.StatusOK || !strings.Contains(body, "SendResponse") {
		t.Fatalf("Send = %d %s", status, body)
	}
	if status, body := send("", true); status != http.StatusOK {
		t.Fatalf("Send End = %d %s", status, body)
	}
	status, body := send("late\n", false)
	wantFault(t, status, body, wsman.CodePipeClosing)
	var stdout, stderr strings.Builder
	for {
		status, body := f.receive(t, shellID, id, "PT5S")
		if status != http.StatusOK {
			t.Fatalf("Receive = %d %s", status, body)
		}
		o, e, done, _ := parseReceive(t, body)
		stdout.WriteString(o)
		stderr.WriteString(e)
		if done {
			break
		}
	}
	if stdout.String() != "one\n" || stderr.String() != "eof\n" {
		t.Errorf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
	status, _, body = f.post(t, msg(winrm.NewSendInputRequest(f.url(), shellID, "0BADC0DE-0000-4000-8000-000000000000", []byte("x"), false, params("PT5S", 153600))))
	wantFault(t, status, body, wsman.CodeInvalidSelectors)
}

// TestRequestFaults feeds malformed or unsupported envelopes.
func TestRequestFaults(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	shellID := f.createShell(t)
	create := msg(winrm.NewOpenShellRequest(f.url(), params("PT5S", 153600)))
	receive := msg(winrm.NewGetOutputRequest(f.url(), shellID, "0BADC0DE-0000-4000-8000-000000000000", "stdout stderr", params("PT5S", 153600)))
	tests := []struct {
		name string
		body string
		want uint64
	}{
		{name: "not XML", body: "not xml", want: wsman.CodeInvalidBody},
		{name: "truncated", body: create[:len(create)/2], want: wsman.CodeInvalidBody},
		{name: "SOAP 1.1 envelope", body: strings.ReplaceAll(create, "http://www.w3.org/2003/05/soap-envelope", "http://schemas.xmlsoap.org/soap/envelope/"), want: wsman.CodeInvalidBody},
		{name: "unknown action", body: strings.Replace(create, "transfer/Create", "transfer/Put", 1), want: wsman.CodeActionNotSupported},
		{name: "other resource", body: strings.Replace(create, "windows/shell/cmd", "windows/shell/powershell", 1), want: wsman.CodeResourceNotFound},
		{name: "no MessageID", body: strings.Replace(strings.Replace(create, "<a:MessageID>", "<a:X>", 1), "</a:MessageID>", "</a:X>", 1), want: wsman.CodeHeaderRequired},
		{name: "bad timeout", body: strings.Replace(create, "PT5S", "PT5Q", 1), want: wsman.CodeInvalidTimeout},
		{name: "tiny MaxEnvelopeSize", body: strings.Replace(create, ">153600<", ">4096<", 1), want: wsman.CodeMaxEnvelopeSizeExceeded},
		{name: "bad codepage", body: strings.Replace(create, ">65001<", ">utf8<", 1), want: wsman.CodeInvalidOptions},
		{name: "unknown command", body: receive, want: wsman.CodeInvalidSelectors},
		{name: "unknown shell", body: strings.Replace(receive, shellID, "0BADC0DE-0000-4000-8000-000000000001", 1), want: wsman.CodeInvalidSelectors},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, body := f.post(t, tt.body)
			wantFault(t, status, body, tt.want)
			if ct := hdr.Get("Content-Type"); ct != "application/soap+xml;charset=UTF-8" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
}

func TestHTTPErrors(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	create := msg(winrm.NewOpenShellRequest(f.url(), params("PT5S", 153600)))
	do := func(method, path, contentType, user string) *http.Response {
		req, err := http.NewRequest(method, f.ts.URL+path, strings.NewReader(create))
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if user != "" {
			req.SetBasicAuth(user, testPass)
		}
		resp, err := f.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	tests := []struct {
		name, method, path, contentType, user string
		want                                  int
	}{
		{name: "GET", method: http.MethodGet, path: "/wsman", want: http.StatusMethodNotAllowed},
		{name: "other path", method: http.MethodPost, path: "/powershell", contentType: "application/soap+xml", user: testUser, want: http.StatusNotFound},
		{name: "no credentials", method: http.MethodPost, path: "/wsman", contentType: "application/soap+xml", want: http.StatusUnauthorized},
		{name: "text/xml", method: http.MethodPost, path: "/wsman", contentType: "text/xml", user: testUser, want: http.StatusUnsupportedMediaType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := do(tt.method, tt.path, tt.contentType, tt.user)
			if resp.StatusCode != tt.want {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.want)
			}
			if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/soap+xml") {
				t.Errorf("%d with a SOAP content type", resp.StatusCode)
			}
			if tt.want == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") != `Basic realm="WSMAN"` {
				t.Errorf("WWW-Authenticate = %q", resp.Header.Get("WWW-Authenticate"))
			}
			if tt.want == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != http.MethodPost {
				t.Errorf("Allow = %q", resp.Header.Get("Allow"))
			}
		})
	}
}

func TestAcceptAnyCredentials(t *testing.T) {
	f := newFixture(t, fixtureConfig{opts: wsman.Options{Users: map[string]string{}}})
	if status, _, body := f.postAs(t, "anyone", "anything", msg(winrm.NewOpenShellRequest(f.url(), params("PT5S", 153600)))); status != http.StatusOK {
		t.Fatalf("Create with any credentials = %d %s", status, body)
	}
	if status, _, _ := f.postAs(t, "", "", msg(winrm.NewOpenShellRequest(f.url(), params("PT5S", 153600)))); status != http.StatusUnauthorized {
		t.Errorf("Create without credentials = %d, want 401", status)
	}
	if sh := f.srv.Shells(); len(sh) != 1 || sh[0].User != "anyone" {
		t.Errorf("Shells() = %+v", sh)
	}
}

func TestCloseAnswersPendingRequests(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	shellID := f.createShell(t)
	id := f.execute(t, shellID, "sleep")
	pending := make(chan int, 1)
	go func() {
		status, _ := f.receive(t, shellID, id, "PT30S")
		pending <- status
	}()
	eventually(t, "Receive pending", func() bool { return len(f.srv.Shells()) == 1 && f.srv.Shells()[0].PendingRequests == 1 })
	closed := make(chan struct{})
	go func() { f.srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close() did not return within 5s")
	}
	if status := <-pending; status != http.StatusServiceUnavailable {
		t.Errorf("pending Receive after Close = %d, want 503", status)
	}
	if rec := f.runner.finished(t, id); !errors.Is(rec.cause, wsman.ErrServerClosed) {
		t.Errorf("Runner cause = %v, want ErrServerClosed", rec.cause)
	}
	if status, _, _ := f.post(t, msg(winrm.NewOpenShellRequest(f.url(), params("PT5S", 153600)))); status != http.StatusServiceUnavailable {
		t.Errorf("Create after Close = %d, want 503", status)
	}
	if leaked := serverGoroutines(); len(leaked) != 0 {
		t.Errorf("Close() returned with %d server goroutines alive:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
	}
}

func TestRunnerPanicIsACrashedProcess(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	c := f.client(t, testUser, testPass, nil)
	code, err := c.RunWithContextWithInput(context.Background(), "panic", new(strings.Builder), new(strings.Builder), nil)
	if err != nil || code != -1073741819 {
		t.Errorf("Run(panic) = %d, %v; want STATUS_ACCESS_VIOLATION", code, err)
	}
}

// TestFaultInjection covers SetFaultRate, SetTruncate and SetSlowdown.
func TestFaultInjection(t *testing.T) {
	t.Run("fault rate 1", func(t *testing.T) {
		f := newFixture(t, fixtureConfig{})
		shellID := f.createShell(t)
		id := f.execute(t, shellID, "echo")
		f.srv.SetFaultRate(1, 7)
		status, body := f.receive(t, shellID, id, "PT1S")
		if text := wantFault(t, status, body, wsman.CodeProviderFailure); !strings.Contains(text, "An error was encountered inside the plugin.") {
			t.Errorf("fault text = %q", text)
		}
		status, _, body = f.post(t, msg(winrm.NewSendInputRequest(f.url(), shellID, id, []byte("x\n"), false, params("PT5S", 153600))))
		wantFault(t, status, body, wsman.CodeProviderFailure)
		f.srv.SetFaultRate(0, 0)
		if status, _, body := f.post(t, msg(winrm.NewSendInputRequest(f.url(), shellID, id, nil, true, params("PT5S", 153600)))); status != http.StatusOK {
			t.Fatalf("Send after SetFaultRate(0) = %d %s", status, body)
		}
		if f.srv.Stats().InjectedFaults != 2 {
			t.Errorf("InjectedFaults = %d, want 2", f.srv.Stats().InjectedFaults)
		}
	})
	t.Run("stock client loses no output to Receive faults", func(t *testing.T) {
		f := newFixture(t, fixtureConfig{})
		f.srv.SetFaultRate(0.3, 42)
		c := f.client(t, testUser, testPass, params("PT5S", 16384))
		var stdout strings.Builder
		code, err := c.RunWithContextWithInput(context.Background(), "emit 100000 0", &stdout, new(strings.Builder), nil)
		if err != nil || code != 0 || stdout.String() != string(pattern(100000, false)) {
			t.Fatalf("Run = %d, %v, %d bytes", code, err, stdout.Len())
		}
		if f.srv.Stats().InjectedFaults == 0 {
			t.Error("no fault injected")
		}
	})
	t.Run("truncate", func(t *testing.T) {
		f := newFixture(t, fixtureConfig{})
		shellID := f.createShell(t)
		id := f.execute(t, shellID, "emit", "100")
		f.runner.finished(t, id)
		f.srv.SetTruncate(true)
		status, hdr, body := f.post(t, msg(winrm.NewGetOutputRequest(f.url(), shellID, id, "stdout stderr", params("PT5S", 153600))))
		if status != http.StatusOK || body == "" || !strings.HasPrefix(hdr.Get("Content-Type"), "application/soap+xml") {
			t.Fatalf("truncated Receive = %d %q %q", status, hdr.Get("Content-Type"), body)
		}
		if err := xml.Unmarshal([]byte(body), new(struct{})); err == nil {
			t.Errorf("truncated body is well-formed XML: %s", body)
		}
		// The stock client ends the command with the XML error.
		f.srv.SetTruncate(true)
		c := f.client(t, testUser, testPass, nil)
		if _, err := c.RunWithContextWithInput(context.Background(), "emit 10", new(strings.Builder), new(strings.Builder), nil); err == nil {
			t.Error("stock Run over truncated responses succeeded")
		}
		if f.srv.Stats().TruncatedResponses < 2 {
			t.Errorf("TruncatedResponses = %d", f.srv.Stats().TruncatedResponses)
		}
	})
	t.Run("slowdown", func(t *testing.T) {
		f := newFixture(t, fixtureConfig{})
		f.srv.SetSlowdown(200 * time.Millisecond)
		start := time.Now()
		f.createShell(t)
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Errorf("Create took %v with a 200ms slowdown", d)
		}
		f.srv.SetSlowdown(0)
	})
}

// TestNoEmptyBody is the guard of winrm.md §0-2: whatever happens, a SOAP
// response has a non-empty body, and (truncation aside) it is an envelope
// relating to the request.
func TestNoEmptyBody(t *testing.T) {
	type exchange struct {
		request  string
		status   int
		ct       string
		response []byte
	}
	var (
		mu        sync.Mutex
		exchanges []exchange
	)
	wrap := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			reqBody, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(reqBody))
			rec := &recorder{ResponseWriter: w, status: http.StatusOK}
			h.ServeHTTP(rec, r)
			mu.Lock()
			exchanges = append(exchanges, exchange{string(reqBody), rec.status, rec.Header().Get("Content-Type"), rec.body.Bytes()})
			mu.Unlock()
		})
	}
	f := newFixture(t, fixtureConfig{opts: wsman.Options{MaxShellsPerUser: 3, MaxTimeout: 200 * time.Millisecond}, wrap: wrap})
	c := f.client(t, testUser, testPass, params("PT0.1S", 16384))
	// Normal traffic, timeouts, quota faults, request faults, injected faults.
	if _, err := c.RunWithContextWithInput(context.Background(), "echo 1", new(strings.Builder), new(strings.Builder), strings.NewReader("a\nb\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RunWithContextWithInput(context.Background(), "delay 300 x", new(strings.Builder), new(strings.Builder), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RunWithContextWithInput(context.Background(), "emit 60000 0 utf8", new(strings.Builder), new(strings.Builder), nil); err != nil {
		t.Fatal(err) // responses filled up to the 16 KiB MaxEnvelopeSize
	}
	for range 4 {
		_, _ = c.CreateShell()
	}
	f.post(t, "garbage")
	f.post(t, "")
	shellID := f.srv.Shells()[0].ID
	id := f.execute(t, shellID, "emit", "50000")
	f.srv.SetFaultRate(0.5, 1)
	for range 6 {
		f.receive(t, shellID, id, "PT1S")
	}
	f.srv.SetFaultRate(0, 0)
	f.srv.DropShell(shellID)
	f.receive(t, shellID, id, "PT1S")

	mu.Lock()
	defer mu.Unlock()
	soapResponses := 0
	for i, ex := range exchanges {
		if !strings.HasPrefix(ex.ct, "application/soap+xml") {
			if ex.status == http.StatusOK {
				t.Errorf("exchange %d: 200 without a SOAP content type", i)
			}
			continue
		}
		soapResponses++
		if len(ex.response) == 0 {
			t.Errorf("exchange %d: empty SOAP body (status %d) for request %.200s", i, ex.status, ex.request)
			continue
		}
		var env struct {
			XMLName   xml.Name
			RelatesTo string `xml:"Header>RelatesTo"`
		}
		if err := xml.Unmarshal(ex.response, &env); err != nil || env.XMLName.Local != "Envelope" {
			t.Errorf("exchange %d: response is not an envelope (%v): %.200s", i, err, ex.response)
			continue
		}
		var req struct {
			MessageID       string `xml:"Header>MessageID"`
			MaxEnvelopeSize int    `xml:"Header>MaxEnvelopeSize"`
		}
		if xml.Unmarshal([]byte(ex.request), &req) != nil {
			continue
		}
		if req.MessageID != env.RelatesTo {
			t.Errorf("exchange %d: RelatesTo %q, want the request's MessageID %q", i, env.RelatesTo, req.MessageID)
		}
		if req.MaxEnvelopeSize > 0 && len(ex.response) > req.MaxEnvelopeSize {
			t.Errorf("exchange %d: %d-byte response above the request's MaxEnvelopeSize %d", i, len(ex.response), req.MaxEnvelopeSize)
		}
	}
	if soapResponses < 20 {
		t.Errorf("only %d SOAP responses observed", soapResponses)
	}
}

type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(p []byte) (int, error) {
	r.body.Write(p)
	return r.ResponseWriter.Write(p)
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name    string
		opts    wsman.Options
		wantErr string
	}{
		{name: "zero", opts: wsman.Options{}},
		{name: "windows defaults", opts: wsman.Options{MaxShellsPerUser: 30, MaxEnvelopeKB: 500, MaxTimeout: time.Minute, IdleTimeout: -1}},
		{name: "negative shells", opts: wsman.Options{MaxShellsPerUser: -1}, wantErr: "MaxShellsPerUser must not be negative, got -1"},
		{name: "negative operations", opts: wsman.Options{MaxOperationsPerUser: -3}, wantErr: "MaxOperationsPerUser"},
		{name: "tiny envelope", opts: wsman.Options{MaxEnvelopeKB: 4}, wantErr: "MaxEnvelopeKB must be at least 8"},
		{name: "huge command line", opts: wsman.Options{MaxCommandLine: 40000}, wantErr: "MaxCommandLine must be at most 32767"},
		{name: "negative timeout", opts: wsman.Options{MaxTimeout: -time.Second}, wantErr: "MaxTimeout"},
		{name: "empty user", opts: wsman.Options{Users: map[string]string{" ": "x"}}, wantErr: "empty user name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

package wsman_test

import (
	"bufio"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/masterzen/winrm"

	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
)

// These tests drive the server with the real masterzen/winrm client and its
// stock transport (winrm.md §6).

func TestStockRun(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	c := f.client(t, testUser, testPass, nil)
	tests := []struct {
		name       string
		command    string
		stdin      string
		wantStdout string
		wantStderr string
		wantCode   int
	}{
		{name: "echo exit 0", command: "echo", stdin: "a\nb\n", wantStdout: "a\nb\n", wantStderr: "eof\n", wantCode: 0},
		{name: "echo exit 3", command: "echo 3", stdin: "x\n", wantStdout: "x\n", wantStderr: "eof\n", wantCode: 3},
		{name: "exit 0 no stdin", command: "exit 0", wantCode: 0},
		{name: "exit 42", command: "exit 42", wantCode: 42},
		{name: "exit -1", command: "exit -1", wantCode: -1},
		{name: "emit with code", command: "emit 70000 5", wantStdout: string(pattern(70000, false)), wantCode: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var stdin *strings.Reader
			if tt.stdin != "" {
				stdin = strings.NewReader(tt.stdin)
			}
			var stdout, stderr strings.Builder
			var code int
			var err error
			if stdin != nil {
				code, err = c.RunWithContextWithInput(ctx, tt.command, &stdout, &stderr, stdin)
			} else {
				code, err = c.RunWithContextWithInput(ctx, tt.command, &stdout, &stderr, nil)
			}
			if err != nil {
				t.Fatalf("RunWithContextWithInput(%q) error = %v", tt.command, err)
			}
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d", code, tt.wantCode)
			}
			if stdout.String() != tt.wantStdout {
				t.Errorf("stdout = %.80q (%d bytes), want %.80q (%d bytes)", stdout.String(), stdout.Len(), tt.wantStdout, len(tt.wantStdout))
			}
			if stderr.String() != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", stderr.String(), tt.wantStderr)
			}
		})
	}
	st := f.srv.Stats()
	if st.CurrentShells != 0 || st.ShellsDeleted != uint64(len(tests)) {
		t.Errorf("CurrentShells = %d, ShellsDeleted = %d; want 0 and %d (Run* deletes its shell)", st.CurrentShells, st.ShellsDeleted, len(tests))
	}
	if st.Requests["Signal"] != uint64(len(tests)) || len(st.Faults) != 0 {
		t.Errorf("Signal requests = %d, faults = %v; want %d signals on finished commands and no fault", st.Requests["Signal"], st.Faults, len(tests))
	}
}

func TestStockOptionsRecorded(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	c := f.client(t, testUser, testPass, nil)
	if _, err := c.RunWithContextWithInput(context.Background(), "exit 0", new(strings.Builder), new(strings.Builder), nil); err != nil {
		t.Fatal(err)
	}
	cmd := f.runner.next(t)
	want := map[string]string{
		wsman.OptionNoProfile:        "FALSE",
		wsman.OptionCodepage:         "65001",
		wsman.OptionConsoleModeStdin: "TRUE",
		wsman.OptionSkipCmdShell:     "FALSE",
	}
	for k, v := range want {
		if cmd.Options[k] != v {
			t.Errorf("Options[%s] = %q, want %q (all: %v)", k, cmd.Options[k], v, cmd.Options)
		}
	}
	if cmd.User != testUser || cmd.Name != "exit 0" || len(cmd.Args) != 0 || cmd.ShellID == "" || cmd.CommandID == "" {
		t.Errorf("Command = %+v", cmd)
	}
	if cmd.CommandID != strings.ToUpper(cmd.CommandID) || len(cmd.ShellID) != 36 {
		t.Errorf("ids %s / %s are not upper-case GUIDs", cmd.ShellID, cmd.CommandID)
	}
}

// TestStockStreaming writes stdin many times, reads each echo back before
// the next write, sends a chunk above EnvelopeSize-1000, then Close → End.
func TestStockStreaming(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	c := f.client(t, testUser, testPass, nil)
	shell, err := c.CreateShell()
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := shell.ExecuteWithContext(context.Background(), "echo", "7")
	if err != nil {
		t.Fatalf("ExecuteWithContext() error = %v", err)
	}
	stderr := drain(cmd.Stderr)
	out := bufio.NewReader(cmd.Stdout)
	big := strings.Repeat("z", 400_000) + "\n" // 3 Sends of EnvelopeSize-1000 bytes
	lines := []string{"first\n", "second line\n", "héllo ünïcode\n", big}
	for i := range 20 {
		lines = append(lines, strings.Repeat("l", i)+"\n")
	}
	for i, line := range lines {
		if n, err := cmd.Stdin.Write([]byte(line)); err != nil || n != len(line) {
			t.Fatalf("Stdin.Write(line %d) = %d, %v", i, n, err)
		}
		got, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("read echo of line %d: %v", i, err)
		}
		if got != line {
			t.Fatalf("echo of line %d = %.40q (%d bytes), want %.40q (%d bytes)", i, got, len(got), line, len(line))
		}
	}
	if err := cmd.Stdin.Close(); err != nil {
		t.Fatalf("Stdin.Close() error = %v", err)
	}
	cmd.Wait()
	if got := stderr.wait(t); got != "eof\n" {
		t.Errorf("stderr = %q, want %q", got, "eof\n")
	}
	if cmd.ExitCode() != 7 {
		t.Errorf("ExitCode() = %d, want 7", cmd.ExitCode())
	}
	if err := cmd.Close(); err != nil { // Signal terminate on a finished command
		t.Errorf("Close() after Done error = %v", err)
	}
	if err := shell.Close(); err != nil {
		t.Errorf("shell.Close() error = %v", err)
	}
	st := f.srv.Stats()
	if want := uint64(len(lines) + 2 + 1); st.Requests["Send"] != want {
		t.Errorf("Send requests = %d, want %d (one per line, 2 extra for the big one, 1 End)", st.Requests["Send"], want)
	}
	if len(st.Faults) != 0 {
		t.Errorf("faults = %v, want none", st.Faults)
	}
}

// TestStockOutputSplit checks output spread over many Receives is
// reassembled exactly, split by MaxEnvelopeSize and by MaxReceiveBytes.
func TestStockOutputSplit(t *testing.T) {
	tests := []struct {
		name         string
		opts         wsman.Options
		envelope     int
		command      string
		want         []byte
		minReceives  uint64
		wantExitCode int
	}{
		{
			name: "envelope 16 KiB", envelope: 16384, command: "emit 200000 4",
			want: pattern(200000, false), minReceives: 200000 / 12000, wantExitCode: 4,
		},
		{
			name: "7 bytes per receive, mid UTF-8", opts: wsman.Options{MaxReceiveBytes: 7}, envelope: 153600,
			command: "emit 1500 0 utf8", want: pattern(1500, true), minReceives: 1500 / 7,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, fixtureConfig{opts: tt.opts})
			c := f.client(t, testUser, testPass, params("PT5S", tt.envelope))
			var stdout, stderr strings.Builder
			code, err := c.RunWithContextWithInput(context.Background(), tt.command, &stdout, &stderr, nil)
			if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantExitCode {
				t.Errorf("exit code = %d, want %d", code, tt.wantExitCode)
			}
			if stdout.String() != string(tt.want) {
				t.Errorf("stdout differs: got %d bytes, want %d", stdout.Len(), len(tt.want))
			}
			if n := f.srv.Stats().Requests["Receive"]; n < tt.minReceives {
				t.Errorf("Receive requests = %d, want at least %d", n, tt.minReceives)
			}
		})
	}
}

// TestStockLongPollTimeout: with no output, Receive answers the TimedOut
// fault after OperationTimeout; the stock client re-polls (no hot loop).
func TestStockLongPollTimeout(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	c := f.client(t, testUser, testPass, params("PT0.2S", 153600))
	var stdout, stderr strings.Builder
	code, err := c.RunWithContextWithInput(context.Background(), "delay 700 hello there", &stdout, &stderr, nil)
	if err != nil || code != 0 || stdout.String() != "hello there\n" {
		t.Fatalf("Run = %d, %v, stdout %q; want 0, nil, %q", code, err, stdout.String(), "hello there\n")
	}
	st := f.srv.Stats()
	// 700ms of silence at 200ms per poll is 3 timeouts; a client hot-looping
	// on faults would make hundreds.
	if n := st.Faults[wsman.CodeOperationTimeout]; n < 2 || n > 10 {
		t.Errorf("TimedOut faults = %d, want about 3", n)
	}
}

// TestStockSignal terminates a running command with Command.Close and by
// cancelling its context; the Runner sees ErrTerminated.
func TestStockSignal(t *testing.T) {
	tests := []struct {
		name string
		stop func(cmd *winrm.Command, cancel context.CancelFunc) error
	}{
		{name: "Close", stop: func(cmd *winrm.Command, _ context.CancelFunc) error { return cmd.Close() }},
		{name: "context", stop: func(_ *winrm.Command, cancel context.CancelFunc) error { cancel(); return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, fixtureConfig{})
			// The stock client notices a cancelled context only between
			// Receives: keep the long-poll short.
			c := f.client(t, testUser, testPass, params("PT0.5S", 153600))
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
			started := f.runner.next(t)
			eventually(t, "Receive pending", func() bool {
				sh := f.srv.Shells()
				return len(sh) == 1 && sh[0].PendingRequests == 1
			})
			if err := tt.stop(cmd, cancel); err != nil {
				t.Fatalf("stop error = %v", err)
			}
			rec := f.runner.finished(t, started.CommandID)
			if !errors.Is(rec.cause, wsman.ErrTerminated) {
				t.Errorf("Runner cause = %v, want ErrTerminated", rec.cause)
			}
			stdout.wait(t)
			stderr.wait(t)
			if stdout.err == nil || !strings.Contains(stdout.err.Error(), "canceled") {
				t.Errorf("Stdout read error = %v, want the client's \"canceled\"", stdout.err)
			}
			if err := shell.Close(); err != nil {
				t.Fatal(err)
			}
			if n := f.srv.Stats().Faults[wsman.CodeCommandTerminated]; n == 0 {
				t.Errorf("no CommandTerminated fault: the pending Receive was not failed")
			}
		})
	}
}

// TestStockMaxShellsTrap documents the stock transport's trap: a quota
// fault on Create comes back as a shell with an empty id and no error, and
// the first Command on it fails with a fault the client cannot parse.
func TestStockMaxShellsTrap(t *testing.T) {
	f := newFixture(t, fixtureConfig{opts: wsman.Options{MaxShellsPerUser: 2}})
	c := f.client(t, testUser, testPass, nil)
	var shells []*winrm.Shell
	for range 3 {
		sh, err := c.CreateShell()
		if err != nil {
			t.Fatalf("CreateShell() error = %v, want nil even over quota (stock trap)", err)
		}
		shells = append(shells, sh)
	}
	if n := f.srv.Stats().Faults[wsman.CodeMaxShells]; n != 1 {
		t.Fatalf("MaxShells faults = %d, want 1", n)
	}
	// The third shell has an empty id: its Command carries no selector.
	_, err := shells[2].ExecuteWithContext(context.Background(), "exit 0")
	var ece *winrm.ExecuteCommandError
	if !errors.As(err, &ece) || !strings.Contains(ece.Body, `Code="2150858843"`) {
		t.Fatalf("Execute on the over-quota shell: err = %v, want ExecuteCommandError with InvalidSelectors", err)
	}
	// The fault itself, as a raw Create shows it.
	status, _, body := f.post(t, msg(winrm.NewOpenShellRequest(f.url(), params("PT5S", 153600))))
	text := wantFault(t, status, body, wsman.CodeMaxShells)
	if !strings.Contains(text, "allowed a maximum number of 2 concurrent shells") {
		t.Errorf("fault text = %q", text)
	}
	if err := shells[0].Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RunWithContextWithInput(context.Background(), "exit 0", new(strings.Builder), new(strings.Builder), nil); err != nil {
		t.Errorf("Run after closing a shell: %v", err)
	}
	_ = shells[1].Close()
}

func TestStockEnvelopeTooLarge(t *testing.T) {
	f := newFixture(t, fixtureConfig{opts: wsman.Options{MaxEnvelopeKB: 8}})
	c := f.client(t, testUser, testPass, nil)
	shell, err := c.CreateShell()
	if err != nil {
		t.Fatal(err)
	}
	_, err = shell.ExecuteWithContext(context.Background(), "noop", strings.Repeat("a", 9000))
	if err == nil || !strings.Contains(err.Error(), "http response error: 413 - invalid content type") {
		t.Fatalf("Execute with a 9 KB envelope: err = %v, want the client's 413 error", err)
	}
	if n := f.srv.Stats().TooLarge; n != 1 {
		t.Errorf("TooLarge = %d, want 1", n)
	}
	_ = shell.Close()
}

func TestStockCommandLineLimit(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	c := f.client(t, testUser, testPass, nil)
	shell, err := c.CreateShell()
	if err != nil {
		t.Fatal(err)
	}
	defer shell.Close()
	tests := []struct {
		name    string
		argLen  int // "noop " + arg
		wantErr bool
	}{
		{name: "8191 fits", argLen: 8191 - len("noop ")},
		{name: "8192 too long", argLen: 8192 - len("noop "), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, err := shell.ExecuteWithContext(context.Background(), "noop", strings.Repeat("a", tt.argLen))
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Execute error = %v", err)
				}
				drain(cmd.Stderr)
				drain(cmd.Stdout)
				cmd.Wait()
				_ = cmd.Close()
				return
			}
			var ece *winrm.ExecuteCommandError
			if !errors.As(err, &ece) {
				t.Fatalf("Execute error = %v, want ExecuteCommandError", err)
			}
			if !strings.Contains(ece.Body, `Code="2147942606"`) || !strings.Contains(ece.Body, "The filename or extension is too long.") {
				t.Errorf("fault body = %s", ece.Body)
			}
		})
	}
}

func TestStockStartRefused(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	c := f.client(t, testUser, testPass, nil)
	_, err := c.RunWithContextWithInput(context.Background(), "missing.exe /x", new(strings.Builder), new(strings.Builder), nil)
	var ece *winrm.ExecuteCommandError
	if !errors.As(err, &ece) || !strings.Contains(ece.Body, "&#39;missing.exe&#39; is not recognized") {
		t.Fatalf("err = %v, want the Runner's refusal in a fault", err)
	}
	if n := f.srv.Stats().Faults[wsman.CodeStartFailed]; n != 1 {
		t.Errorf("StartFailed faults = %d, want 1", n)
	}
}

func TestStockBasicAuth(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	tests := []struct {
		name, user, pass string
		wantErr          string
	}{
		{name: "good", user: testUser, pass: testPass},
		{name: "user case-insensitive", user: strings.ToUpper(testUser), pass: testPass},
		{name: "wrong password", user: testUser, pass: "nope", wantErr: "http response error: 401 - invalid content type"},
		{name: "unknown user", user: "mallory", pass: testPass, wantErr: "http response error: 401 - invalid content type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := f.client(t, tt.user, tt.pass, nil)
			code, err := c.RunWithContextWithInput(context.Background(), "exit 0", new(strings.Builder), new(strings.Builder), nil)
			if tt.wantErr == "" {
				if err != nil || code != 0 {
					t.Fatalf("Run = %d, %v", code, err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("Run error = %v, want %q", err, tt.wantErr)
			}
		})
	}
	if n := f.srv.Stats().Unauthorized; n != 2 {
		t.Errorf("Unauthorized = %d, want 2", n)
	}
}

func TestStockHTTPS(t *testing.T) {
	f := newFixture(t, fixtureConfig{tls: true})
	c := f.client(t, testUser, testPass, nil)
	var stdout strings.Builder
	code, err := c.RunWithContextWithInput(context.Background(), "echo", &stdout, new(strings.Builder), strings.NewReader("over tls\n"))
	if err != nil || code != 0 || stdout.String() != "over tls\n" {
		t.Fatalf("Run over HTTPS = %d, %v, %q", code, err, stdout.String())
	}
	// A client that does not trust the generated certificate is refused.
	ep := winrm.NewEndpoint(f.host, f.port, true, false, nil, nil, nil, 5*time.Second)
	untrusting, err := winrm.NewClientWithParameters(ep, testUser, testPass, params("PT5S", 153600))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := untrusting.CreateShell(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("CreateShell without the CA: err = %v, want a certificate error", err)
	}
}

// TestStockConcurrentClients runs N clients × M commands at once.
func TestStockConcurrentClients(t *testing.T) {
	const clients, commands = 8, 4
	f := newFixture(t, fixtureConfig{})
	errs := make(chan error, clients)
	for i := range clients {
		go func() {
			errs <- func() error {
				c := f.client(t, testUser, testPass, nil)
				shell, err := c.CreateShell()
				if err != nil {
					return err
				}
				defer shell.Close()
				for j := range commands {
					code := (i + j) % 5
					cmd, err := shell.ExecuteWithContext(context.Background(), "echo", itoa(code))
					if err != nil {
						return err
					}
					stdout, stderr := drain(cmd.Stdout), drain(cmd.Stderr)
					var want strings.Builder
					for k := range 3 {
						line := "client " + itoa(i) + " command " + itoa(j) + " line " + itoa(k) + "\n"
						want.WriteString(line)
						if _, err := cmd.Stdin.Write([]byte(line)); err != nil {
							return err
						}
					}
					if err := cmd.Stdin.Close(); err != nil {
						return err
					}
					cmd.Wait()
					stdout.wg.Wait()
					stderr.wg.Wait()
					if got := stdout.buf.String(); got != want.String() {
						return errors.New("client " + itoa(i) + ": stdout " + got + " want " + want.String())
					}
					if cmd.ExitCode() != code {
						return errors.New("client " + itoa(i) + ": exit code " + itoa(cmd.ExitCode()) + " want " + itoa(code))
					}
					if err := cmd.Close(); err != nil {
						return err
					}
				}
				return nil
			}()
		}()
	}
	for range clients {
		select {
		case err := <-errs:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("clients did not finish within 30s")
		}
	}
	st := f.srv.Stats()
	if st.ShellsCreated != clients || st.CurrentShells != 0 || st.MaxConcurrentShells > clients || st.CommandsStarted != clients*commands {
		t.Errorf("stats = created %d current %d max %d commands %d", st.ShellsCreated, st.CurrentShells, st.MaxConcurrentShells, st.CommandsStarted)
	}
	if len(st.Faults) != 0 {
		t.Errorf("faults = %v, want none", st.Faults)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

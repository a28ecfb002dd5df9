package runspace_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/masterzen/winrm"

	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
	"github.com/easconnector/easconnector/runspace"
)

// Conformance of reference/winrm.md §6: the real masterzen/winrm client with
// this package's transport against the WS-Man server of loadtest/exsim/wsman.

const (
	confUser = "svc-conformance"
	confPass = "C0nformance!"
)

// shellRunner runs a few cmd.exe-like programs:
//
//	echo [code]       copy stdin lines to stdout until EOF, exit with code
//	emit N            write N bytes of a known pattern to stdout
//	exit N            exit with N
//	sleep             block until terminated
//	delay MS TEXT     print TEXT after MS milliseconds
type shellRunner struct{}

func (shellRunner) Start(cmd wsman.Command) error {
	switch cmd.Name {
	case "echo", "emit", "exit", "sleep", "delay":
		return nil
	}
	return fmt.Errorf("'%s' is not recognized as an internal or external command, operable program or batch file.", cmd.Name)
}

func (shellRunner) Run(ctx context.Context, cmd wsman.Command, stdin io.Reader, stdout, stderr io.Writer) int {
	arg := func(i int) string {
		if i < len(cmd.Args) {
			return cmd.Args[i]
		}
		return ""
	}
	switch cmd.Name {
	case "echo":
		r := bufio.NewReaderSize(stdin, 1<<20)
		for {
			line, err := r.ReadBytes('\n')
			if len(line) > 0 {
				if _, werr := stdout.Write(line); werr != nil {
					return 1
				}
			}
			if err != nil {
				code, _ := strconv.Atoi(arg(0))
				_, _ = io.WriteString(stderr, "eof\r\n")
				return code
			}
		}
	case "emit":
		n, _ := strconv.Atoi(arg(0))
		_, _ = stdout.Write(pattern(n))
		return 0
	case "exit":
		code, _ := strconv.Atoi(arg(0))
		return code
	case "sleep":
		<-ctx.Done()
		return -1
	case "delay":
		ms, _ := strconv.Atoi(arg(0))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			_, _ = io.WriteString(stdout, arg(1))
			return 0
		case <-ctx.Done():
			return -1
		}
	}
	return 1
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

type wsFixture struct {
	srv  *wsman.Server
	ts   *httptest.Server
	host string
	port int
}

func newWSFixture(t *testing.T, opts wsman.Options) *wsFixture {
	t.Helper()
	if opts.Users == nil {
		opts.Users = map[string]string{confUser: confPass}
	}
	f := &wsFixture{srv: wsman.NewServer(opts, shellRunner{})}
	f.ts = httptest.NewServer(f.srv)
	host, port, _ := net.SplitHostPort(f.ts.Listener.Addr().String())
	f.host = host
	f.port, _ = strconv.Atoi(port)
	t.Cleanup(func() {
		f.srv.Close()
		f.ts.Close()
	})
	return f
}

func (f *wsFixture) client(t *testing.T, mutate func(*runspace.Options)) *winrm.Client {
	t.Helper()
	o := runspace.Options{Servers: []string{f.host}, Port: f.port, User: confUser, Password: secret.New(confPass),
		PlainHTTP: true, Auth: runspace.AuthBasic, Mode: runspace.ModeRemoting,
		OperationTimeout: time.Second}
	if mutate != nil {
		mutate(&o)
	}
	c, stop, err := runspace.NewTestClient(o, f.host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return c
}

// readAll reads a command's stdout and stderr concurrently (the library's
// polling stalls if either is left unread).
func readAll(cmd *winrm.Command) (stdout, stderr []byte, err error) {
	var (
		wg      sync.WaitGroup
		out, se bytes.Buffer
		errOut  error
	)
	wg.Go(func() { _, _ = io.Copy(&se, cmd.Stderr) })
	_, errOut = io.Copy(&out, cmd.Stdout)
	wg.Wait()
	return out.Bytes(), se.Bytes(), errOut
}

func TestConformanceOutputAndExitCodes(t *testing.T) {
	// Small Receive chunks split output at arbitrary points.
	f := newWSFixture(t, wsman.Options{MaxReceiveBytes: 997})
	c := f.client(t, nil)
	shell, err := c.CreateShell()
	if err != nil {
		t.Fatalf("CreateShell() error = %v", err)
	}
	n := 300_000
	if testing.Short() {
		n = 60_000 // the XML and base64 work is slow under -race
	}
	cmd, err := shell.ExecuteWithContext(context.Background(), "emit", strconv.Itoa(n))
	if err != nil {
		t.Fatalf("Execute(emit) error = %v", err)
	}
	out, _, err := readAll(cmd)
	if err != nil || !bytes.Equal(out, pattern(n)) {
		t.Fatalf("emit: %d bytes, err %v; want the %d-byte pattern", len(out), err, n)
	}
	cmd.Wait()
	if cmd.ExitCode() != 0 {
		t.Errorf("emit exit code = %d, want 0", cmd.ExitCode())
	}
	_ = cmd.Close()
	for _, code := range []int{0, 3, 255} {
		cmd, err := shell.ExecuteWithContext(context.Background(), "exit", strconv.Itoa(code))
		if err != nil {
			t.Fatal(err)
		}
		_, _, _ = readAll(cmd)
		cmd.Wait()
		if cmd.ExitCode() != code {
			t.Errorf("exit %d: ExitCode() = %d", code, cmd.ExitCode())
		}
		if err := cmd.Close(); err != nil {
			t.Errorf("terminate a finished command: %v", err)
		}
	}
	if err := shell.Close(); err != nil {
		t.Fatalf("Shell.Close() error = %v", err)
	}
	if st := f.srv.Stats(); st.CurrentShells != 0 || st.Requests["Receive"] > uint64(n/997+40) {
		t.Errorf("stats after close: %d shells, %d Receives", st.CurrentShells, st.Requests["Receive"])
	}
}

func TestConformanceLongPollTimeoutIsRetried(t *testing.T) {
	f := newWSFixture(t, wsman.Options{})
	c := f.client(t, nil) // OperationTimeout 1s
	shell, err := c.CreateShell()
	if err != nil {
		t.Fatal(err)
	}
	defer shell.Close()
	cmd, err := shell.ExecuteWithContext(context.Background(), "delay", "2300", "hello")
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := readAll(cmd)
	if err != nil || string(out) != "hello" {
		t.Fatalf("stdout = %q, %v; want hello after two long-poll timeouts", out, err)
	}
	st := f.srv.Stats()
	if st.Faults[runspace.FaultOperationTimeout] < 2 {
		t.Errorf("timeout faults = %d, want at least 2", st.Faults[runspace.FaultOperationTimeout])
	}
	if st.Requests["Receive"] > 6 {
		t.Errorf("%d Receives for a 2.3s wait: the timeout fault is re-polled hot", st.Requests["Receive"])
	}
}

func TestConformanceStdinStreaming(t *testing.T) {
	f := newWSFixture(t, wsman.Options{})
	c := f.client(t, nil)
	shell, err := c.CreateShell()
	if err != nil {
		t.Fatal(err)
	}
	defer shell.Close()
	cmd, err := shell.ExecuteWithContext(context.Background(), "echo", "7")
	if err != nil {
		t.Fatal(err)
	}
	stderrDone := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(cmd.Stderr)
		stderrDone <- b
	}()
	r := bufio.NewReaderSize(cmd.Stdout, 1<<20)
	for i := range 20 {
		want := fmt.Sprintf("request %d\n", i)
		if _, err := cmd.Stdin.Write([]byte(want)); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadString('\n')
		if err != nil || got != want {
			t.Fatalf("round trip %d = %q, %v", i, got, err)
		}
	}
	size := 400_000
	if testing.Short() {
		size = 160_000
	}
	big := append(pattern(size), '\n') // > EnvelopeSize-1000 (152,600 bytes): several Sends
	if _, err := cmd.Stdin.Write(big); err != nil {
		t.Fatal(err)
	}
	got, err := r.ReadBytes('\n')
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("%d-byte line came back as %d bytes, %v", len(big), len(got), err)
	}
	if err := cmd.Stdin.Close(); err != nil { // End="true"
		t.Fatal(err)
	}
	if rest, _ := io.ReadAll(r); len(rest) != 0 {
		t.Errorf("stdout after EOF = %q", rest)
	}
	cmd.Wait()
	if cmd.ExitCode() != 7 {
		t.Errorf("ExitCode() = %d, want 7", cmd.ExitCode())
	}
	if se := <-stderrDone; string(se) != "eof\r\n" {
		t.Errorf("stderr = %q", se)
	}
	if st := f.srv.Stats(); st.Requests["Send"] < 23 {
		t.Errorf("%d Sends, want the long line split over several", st.Requests["Send"])
	}
}

func TestConformanceFaults(t *testing.T) {
	tests := []struct {
		name   string
		opts   wsman.Options
		mutate func(*runspace.Options)
		run    func(t *testing.T, f *wsFixture, c *winrm.Client) error
		check  func(t *testing.T, err error)
	}{
		{"MaxShellsPerUser on Create", wsman.Options{MaxShellsPerUser: 1}, nil,
			func(t *testing.T, _ *wsFixture, c *winrm.Client) error {
				s, err := c.CreateShell()
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				_, err = c.CreateShell()
				return err
			},
			func(t *testing.T, err error) {
				var fe *runspace.FaultError
				if !errors.As(err, &fe) || fe.Code != runspace.FaultMaxShells || !errors.Is(err, runspace.ErrThrottled) {
					t.Fatalf("second CreateShell() error = %v, want fault %d classified as throttling", err, runspace.FaultMaxShells)
				}
			}},
		{"command line over 8191 characters", wsman.Options{}, nil,
			func(t *testing.T, _ *wsFixture, c *winrm.Client) error {
				s, err := c.CreateShell()
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				_, err = s.ExecuteWithContext(context.Background(), "echo", strings.Repeat("x", 9000))
				return err
			},
			func(t *testing.T, err error) {
				var fe *runspace.FaultError
				if !errors.As(err, &fe) || fe.Code != 2147942606 {
					t.Fatalf("Execute() error = %v, want fault 2147942606", err)
				}
			}},
		{"refused command", wsman.Options{}, nil,
			func(t *testing.T, _ *wsFixture, c *winrm.Client) error {
				s, err := c.CreateShell()
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				_, err = s.ExecuteWithContext(context.Background(), "format", "c:")
				return err
			},
			func(t *testing.T, err error) {
				var fe *runspace.FaultError
				if !errors.As(err, &fe) || !strings.Contains(err.Error(), "not recognized") {
					t.Fatalf("Execute() error = %v, want a fault quoting the runner", err)
				}
			}},
		{"wrong password", wsman.Options{}, func(o *runspace.Options) { o.Password = secret.New("wrong") },
			func(t *testing.T, _ *wsFixture, c *winrm.Client) error {
				_, err := c.CreateShell()
				return err
			},
			func(t *testing.T, err error) {
				if !errors.Is(err, runspace.ErrAuth) || runspace.Classify(err) != runspace.ClassAuth {
					t.Fatalf("CreateShell() error = %v, want ErrAuth", err)
				}
			}},
		{"envelope above MaxEnvelopeSizekb", wsman.Options{MaxEnvelopeKB: 64}, nil,
			func(t *testing.T, f *wsFixture, c *winrm.Client) error {
				s, err := c.CreateShell()
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				cmd, err := s.ExecuteWithContext(context.Background(), "sleep")
				if err != nil {
					t.Fatal(err)
				}
				defer cmd.Close()
				go func() { _, _, _ = readAll(cmd) }()
				_, err = cmd.Stdin.Write(pattern(100_000))
				if f.srv.Stats().TooLarge == 0 {
					t.Errorf("server saw no oversized request")
				}
				return err
			},
			func(t *testing.T, err error) {
				if err == nil {
					t.Fatal("Stdin.Write() of an oversized envelope succeeded")
				}
			}},
		{"idle shell reaped", wsman.Options{IdleTimeout: 150 * time.Millisecond}, nil,
			func(t *testing.T, _ *wsFixture, c *winrm.Client) error {
				s, err := c.CreateShell()
				if err != nil {
					t.Fatal(err)
				}
				time.Sleep(600 * time.Millisecond)
				_, err = s.ExecuteWithContext(context.Background(), "exit", "0")
				return err
			},
			func(t *testing.T, err error) {
				var fe *runspace.FaultError
				if !errors.As(err, &fe) || fe.Code != runspace.FaultInvalidSelectors || !errors.Is(err, runspace.ErrSessionBroken) {
					t.Fatalf("Execute() on a reaped shell error = %v, want InvalidSelectors", err)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newWSFixture(t, tt.opts)
			c := f.client(t, tt.mutate)
			tt.check(t, tt.run(t, f, c))
		})
	}
}

// TestConformanceShellGoneEndsCommand: a dropped shell and a deleted shell
// end the command with an error instead of polling forever.
func TestConformanceShellGoneEndsCommand(t *testing.T) {
	for _, how := range []string{"dropped", "deleted", "terminated"} {
		t.Run(how, func(t *testing.T) {
			f := newWSFixture(t, wsman.Options{})
			c := f.client(t, nil)
			shell, err := c.CreateShell()
			if err != nil {
				t.Fatal(err)
			}
			cmd, err := shell.ExecuteWithContext(context.Background(), "sleep")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, _, err := readAll(cmd)
				done <- err
			}()
			time.Sleep(100 * time.Millisecond) // a Receive is pending
			switch how {
			case "dropped":
				ids := f.srv.Shells()
				if len(ids) != 1 || !f.srv.DropShell(ids[0].ID) {
					t.Fatalf("shells = %+v", ids)
				}
			case "deleted":
				if err := shell.Close(); err != nil {
					t.Fatal(err)
				}
			case "terminated":
				if err := cmd.Close(); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case err := <-done:
				// A pending Receive may see the process end first (Done)
				// or the shell gone (InvalidSelectors); nothing else.
				var fe *runspace.FaultError
				if err != nil && (!errors.As(err, &fe) || fe.Code != runspace.FaultInvalidSelectors) && how == "dropped" {
					t.Errorf("stdout error = %v, want InvalidSelectors or none", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("command still polling after its shell went away")
			}
			cmd.Wait()
			_ = shell.Close()
		})
	}
}

func TestConformanceConcurrentShells(t *testing.T) {
	f := newWSFixture(t, wsman.Options{})
	c := f.client(t, func(o *runspace.Options) { o.Parallel = true; o.Size = 8 })
	workers, commands := 8, 5
	if testing.Short() {
		workers, commands = 4, 3
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			shell, err := c.CreateShell()
			if err != nil {
				t.Error(err)
				return
			}
			defer shell.Close()
			for i := range commands {
				cmd, err := shell.ExecuteWithContext(context.Background(), "echo", "0")
				if err != nil {
					t.Error(err)
					return
				}
				line := fmt.Sprintf("worker %d request %d\n", w, i)
				if _, err := cmd.Stdin.Write([]byte(line)); err != nil {
					t.Error(err)
				}
				if err := cmd.Stdin.Close(); err != nil {
					t.Error(err)
				}
				out, _, err := readAll(cmd)
				cmd.Wait()
				_ = cmd.Close()
				if err != nil || string(out) != line {
					t.Errorf("worker %d: stdout %q, %v", w, out, err)
				}
			}
		})
	}
	wg.Wait()
	if st := f.srv.Stats(); st.CurrentShells != 0 || st.CommandsStarted != uint64(workers*commands) {
		t.Errorf("stats = %d shells open, %d commands, want 0 and %d", st.CurrentShells, st.CommandsStarted, workers*commands)
	}
}

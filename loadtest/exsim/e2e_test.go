package exsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/masterzen/winrm"
	"github.com/masterzen/winrm/soap"

	"github.com/easconnector/easconnector/runspace"
)

// startSim starts a Sim with listeners and closes it with the test, then
// checks that none of its goroutines outlive Close.
func startSim(t *testing.T, opts Options) *Sim {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		s.Close()
		checkNoSimGoroutines(t)
	})
	return s
}

func checkNoSimGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "loadtest/exsim.") && !strings.Contains(g, "_test.go") && !strings.Contains(g, "testing.tRunner") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d exsim goroutines left after Close:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func winrmClient(t *testing.T, s *Sim, i int, caPEM []byte) *winrm.Client {
	t.Helper()
	return newWinRMClient(t, s, i, caPEM, nil)
}

func newWinRMClient(t *testing.T, s *Sim, i int, caPEM []byte, transport func() winrm.Transporter) *winrm.Client {
	t.Helper()
	ep := winrm.NewEndpoint(s.Hosts()[i], s.Port(), s.TLS(), false, caPEM, nil, nil, 20*time.Second)
	params := winrm.NewParameters("PT3S", "en-US", 153600)
	params.TransportDecorator = transport
	cl, err := winrm.NewClientWithParameters(ep, DefaultUser, DefaultPassword, params)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// strictTransport is the minimal Transporter DESIGN.md §3 asks for: it
// honours the HTTP status, so a WS-Man fault becomes an error (the stock
// transport ignores it and re-polls a dead command forever). A Receive
// timeout fault keeps "OperationTimeout" in its text, so masterzen polls
// again.
type strictTransport struct {
	url  string
	user string
	pass string
	hc   *http.Client
}

func (st *strictTransport) Transport(ep *winrm.Endpoint) error {
	scheme := "http"
	if ep.HTTPS {
		scheme = "https"
	}
	st.url = fmt.Sprintf("%s://%s/wsman", scheme, net.JoinHostPort(ep.Host, strconv.Itoa(ep.Port)))
	st.hc = &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: ep.Timeout}}
	return nil
}

func (st *strictTransport) Post(_ *winrm.Client, m *soap.SoapMessage) (string, error) {
	req, err := http.NewRequest(http.MethodPost, st.url, strings.NewReader(m.String()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/soap+xml;charset=UTF-8")
	req.SetBasicAuth(st.user, st.pass)
	resp, err := st.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("http %d: %s", resp.StatusCode, body)
	}
	if len(body) == 0 {
		return "", errors.New("empty response body")
	}
	return string(body), nil
}

func strict() winrm.Transporter { return &strictTransport{user: DefaultUser, pass: DefaultPassword} }

// winrmSession is a client connected through the real masterzen client.
type winrmSession struct {
	*client
	shell  *winrm.Shell
	cmd    *winrm.Command
	cancel context.CancelFunc
	stderr *syncBuffer
	closed bool
}

// openWinRM starts a session exactly as runspace does: CreateShell, Execute
// powershell.exe with runspace.CommandArgs(), write Stage1Line() and the
// SessionConfig line, read the ready frame. Stdout and stderr are drained.
func openWinRM(t *testing.T, s *Sim, i int, cfg runspace.SessionConfig) (*winrmSession, runspace.Frame) {
	t.Helper()
	return openWinRMWith(t, s, i, cfg, nil)
}

func openWinRMWith(t *testing.T, s *Sim, i int, cfg runspace.SessionConfig, transport func() winrm.Transporter) (*winrmSession, runspace.Frame) {
	t.Helper()
	shell, err := newWinRMClient(t, s, i, s.CAPEM(), transport).CreateShell()
	if err != nil {
		t.Fatalf("CreateShell on listener %d: %v", i, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd, err := shell.ExecuteWithContext(ctx, runspace.PowerShellExe, runspace.CommandArgs()...)
	if err != nil {
		cancel()
		t.Fatalf("Execute: %v", err)
	}
	ws := &winrmSession{client: &client{t: t, stdin: cmd.Stdin, frames: frameReader(cmd.Stdout)}, shell: shell, cmd: cmd,
		cancel: cancel, stderr: &syncBuffer{}}
	go func() { _, _ = io.Copy(ws.stderr, cmd.Stderr) }()
	t.Cleanup(ws.close)
	f, err := ws.start(cfg)
	if err != nil {
		t.Fatalf("session start: %v", err)
	}
	return ws, f
}

// close ends stdin, waits for the command, and deletes the shell, each
// bounded in time (masterzen's Close calls take no ctx).
func (w *winrmSession) close() {
	if w.closed {
		return
	}
	w.closed = true
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.cmd.Stdin.Close()
		w.cmd.Wait()
		_ = w.cmd.Close()
		_ = w.shell.Close()
	}()
	select {
	case <-done:
	case <-time.After(testTimeout):
		w.t.Errorf("session close took more than %s", testTimeout)
	}
	w.cancel()
}

func TestEndToEndWinRM(t *testing.T) {
	p := genPopulation(300)
	s := startSim(t, Options{Population: p, Listeners: 2})
	if s.Port() == 0 || !slices.Equal(s.Hosts(), []string{"127.0.0.1", "127.0.0.2"}) {
		t.Fatalf("hosts %v port %d", s.Hosts(), s.Port())
	}
	c, f := openWinRM(t, s, 0, remoting(s.Hosts()[0]))
	if !f.Ready || f.Host != "CAS01" || f.Exchange != ExchangeVersion {
		t.Fatalf("ready = %+v", f)
	}
	// Discovery of the other CAS.
	r := c.mustOK("Get-ExchangeServer", nil, "Name", "Fqdn")
	if r.count != 2 || r.objs[1]["Fqdn"] != "127.0.0.2" {
		t.Fatalf("servers = %v", r.objs)
	}
	// Stream every device, more than one Receive's worth of output.
	r = c.mustOK("Get-MobileDevice", map[string]any{"ResultSize": "Unlimited"}, "DeviceId", "DistinguishedName", "DeviceAccessState", "FirstSyncTime")
	if r.count != len(p.Devices) {
		t.Fatalf("devices = %d, want %d", r.count, len(p.Devices))
	}
	mb := p.Mailboxes[0]
	c.mustOK("Set-CASMailbox", map[string]any{"Identity": mb.PrimarySmtp,
		"ActiveSyncBlockedDeviceIDs": runspace.ListEdit{Add: []string{"E2EBLOCKED"}}})
	// Refused by the bootstrap: the cmdlet never runs (not counted below).
	r = c.do("Set-CASMailbox", map[string]any{"Identity": mb.PrimarySmtp, "Bogus": true})
	if r.err == nil || r.err.Msg != "parameter is not in the easconnector allowlist of Set-CASMailbox: Bogus" {
		t.Fatalf("unknown parameter over WinRM = %+v", r.err)
	}

	// The second CAS serves the same organization.
	c2, _ := openWinRM(t, s, 1, remoting(s.Hosts()[1]))
	r = c2.mustOK("Get-CASMailbox", map[string]any{"Identity": mb.Guid}, "ActiveSyncBlockedDeviceIDs")
	if !slices.Contains(strs(r.objs[0]["ActiveSyncBlockedDeviceIDs"]), "E2EBLOCKED") {
		t.Fatalf("CAS02 does not see the write made through CAS01: %v", r.objs)
	}
	if got := s.Counters(); got.Sessions != 2 || got.MaxSessions != 2 || got.Cmdlets["Set-CASMailbox"] != 1 {
		t.Fatalf("counters = %+v", got)
	}
	c.close()
	c2.close()
	eventually(t, "sessions closed", func() bool { return s.Counters().Sessions == 0 })
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, testTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestKillAndRestartListener(t *testing.T) {
	s := startSim(t, Options{Population: genPopulation(50), Listeners: 2, Quiet: true})
	c0, _ := openWinRMWith(t, s, 0, remoting("127.0.0.1"), strict)
	c1, _ := openWinRMWith(t, s, 1, remoting("127.0.0.2"), strict)
	c0.mustOK("Get-ExchangeServer", nil, "Name")

	if err := s.Kill(0); err != nil {
		t.Fatal(err)
	}
	if err := s.Kill(0); !errors.Is(err, ErrListener) {
		t.Fatalf("second Kill = %v", err)
	}
	// The session on the dead CAS is gone: its output ends with an error.
	if _, err := c0.stdin.Write(mustLine(t, runspace.Request{ID: 99, Cmd: "Get-ExchangeServer", Select: []string{"Name"}})); err == nil {
		if f, err := c0.next(); err == nil {
			t.Fatalf("frame from a killed listener: %+v", f)
		}
	}
	if _, err := winrmClient(t, s, 0, nil).CreateShell(); err == nil {
		t.Fatal("CreateShell on a killed listener succeeded")
	}
	// The other CAS still serves, and its sessions are unaffected.
	c1.mustOK("Set-CASMailbox", map[string]any{"Identity": s.pop.Mailboxes[0].Guid, "ActiveSyncAllowedDeviceIDs": []string{"AFTERKILL"}})
	eventually(t, "killed session released", func() bool { return s.Counters().Sessions == 1 })

	if err := s.Restart(0); err != nil {
		t.Fatal(err)
	}
	if !s.Up(0) || s.Restart(0) == nil {
		t.Fatal("listener 0 state after restart")
	}
	c0b, f := openWinRMWith(t, s, 0, remoting("127.0.0.1"), strict)
	if !f.Ready {
		t.Fatalf("session after restart = %+v", f)
	}
	r := c0b.mustOK("Get-CASMailbox", map[string]any{"Identity": s.pop.Mailboxes[0].Guid}, "ActiveSyncAllowedDeviceIDs")
	if got := strs(r.objs[0]["ActiveSyncAllowedDeviceIDs"]); !slices.Equal(got, []string{"AFTERKILL"}) {
		t.Fatalf("after restart = %v", got)
	}

	// A session whose shell runs on CAS01 but whose remoting session is on
	// CAS02 breaks when CAS02 dies: an err frame, then exit 4.
	cross, f := openWinRMWith(t, s, 0, remoting("127.0.0.2"), strict)
	if !f.Ready {
		t.Fatalf("cross session = %+v", f)
	}
	cross.mustOK("Get-ExchangeServer", nil, "Name")
	c1.mustOK("Get-ExchangeServer", nil, "Name")
	if err := s.Kill(1); err != nil {
		t.Fatal(err)
	}
	r = cross.do("Get-ExchangeServer", nil, "Name")
	if r.err == nil || !strings.HasPrefix(r.err.Msg, "Processing data from remote server 127.0.0.2 failed") {
		t.Fatalf("call through a dead remote CAS = %+v", r.err)
	}
	cross.cmd.Wait()
	if code := cross.cmd.ExitCode(); code != exitBroken {
		t.Fatalf("broken session exit = %d, want %d", code, exitBroken)
	}
	if err := s.Restart(1); err != nil {
		t.Fatal(err)
	}
	c1, _ = openWinRMWith(t, s, 1, remoting("127.0.0.2"), strict)

	// Dropping shells ends their sessions too.
	n, err := s.DropShells(1)
	if err != nil || n != 1 {
		t.Fatalf("DropShells = %d, %v", n, err)
	}
	if _, err := c1.next(); err == nil {
		t.Fatal("session survived DropShells")
	}
	eventually(t, "dropped session released", func() bool { return s.Counters().Sessions == 1 })
}

func mustLine(t *testing.T, v any) []byte {
	t.Helper()
	b, err := runspace.EncodeLine(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEndToEndTLS(t *testing.T) {
	s := startSim(t, Options{TLS: true, Listeners: 2, Quiet: true})
	if !strings.HasPrefix(string(s.CAPEM()), "-----BEGIN CERTIFICATE-----") || !strings.HasPrefix(s.Endpoint(1), "https://127.0.0.2:") {
		t.Fatalf("CA %q endpoint %s", s.CAPEM(), s.Endpoint(1))
	}
	c, f := openWinRM(t, s, 1, remoting("127.0.0.2"))
	if !f.Ready {
		t.Fatalf("ready = %+v", f)
	}
	c.mustOK("Get-ActiveSyncOrganizationSettings", nil, "DefaultAccessLevel")
	// Without the CA the client refuses the certificate.
	if _, err := winrmClient(t, s, 0, nil).CreateShell(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("CreateShell without CA = %v", err)
	}
}

func TestEndToEndQuotaOverWinRM(t *testing.T) {
	s := startSim(t, Options{PowerShellMaxConcurrency: 1, Quiet: true})
	if _, f := openWinRM(t, s, 0, remoting("127.0.0.1")); !f.Ready {
		t.Fatalf("first = %+v", f)
	}
	c, f := openWinRM(t, s, 0, remoting("127.0.0.1"))
	if f.InitErr == nil || !strings.Contains(f.InitErr.Msg, "This user is allowed a maximum of 1 concurrent shells") {
		t.Fatalf("second = %+v", f)
	}
	c.cmd.Wait()
	if code := c.cmd.ExitCode(); code != exitInitError {
		t.Fatalf("exit code = %d, want %d", code, exitInitError)
	}
	// Refused command lines become a WS-Man fault on Execute.
	shell, err := winrmClient(t, s, 0, nil).CreateShell()
	if err != nil {
		t.Fatal(err)
	}
	defer shell.Close()
	if _, err := shell.Execute("cmd.exe", "/c", "whoami"); err == nil {
		t.Fatal("Execute of a foreign command line succeeded")
	}
}

func TestStartValidation(t *testing.T) {
	for _, opts := range []Options{{Listeners: 255}, {Listeners: -1}, {Port: 70000}, {Profile: "warp"},
		{PowerShellMaxCmdlets: -1}} {
		if s, err := Start(opts); err == nil {
			s.Close()
			t.Errorf("Start(%+v) succeeded", opts)
		}
	}
	// A fixed port that is taken fails at once, naming the address.
	s := startSim(t, Options{Quiet: true})
	if s2, err := Start(Options{Port: s.Port()}); err == nil {
		s2.Close()
		t.Fatal("second Sim on the same port started")
	}
}

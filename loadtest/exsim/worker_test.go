package exsim

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
	"github.com/easconnector/easconnector/runspace"
)

func TestStartRefusesOtherCommandLines(t *testing.T) {
	s := newSim(t, Options{})
	r := s.Runner(0)
	good := runspace.CommandArgs()
	if err := r.Start(wsman.Command{Name: runspace.PowerShellExe, Args: good}); err != nil {
		t.Fatalf("Start(stage 0) = %v", err)
	}
	tampered := append([]string(nil), good...)
	tampered[len(tampered)-1] = base64.StdEncoding.EncodeToString([]byte("Remove-Mailbox x"))
	for _, cmd := range []wsman.Command{
		{Name: "cmd.exe", Args: []string{"/c", "dir"}},
		{Name: runspace.PowerShellExe, Args: []string{"-Command", "Get-Mailbox"}},
		{Name: runspace.PowerShellExe, Args: tampered},
		{Name: "PowerShell.exe", Args: good},
	} {
		err := r.Start(cmd)
		if err == nil || !strings.Contains(err.Error(), "exsim runs only easconnector's runspace bootstrap") {
			t.Errorf("Start(%s %v) = %v, want refusal", cmd.Name, cmd.Args, err)
		}
	}
}

// runRaw runs the worker with the given stdin and returns its exit code,
// stdout and stderr.
func runRaw(t *testing.T, s *Sim, stdin string) (int, string, string) {
	t.Helper()
	var out, errOut syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	code := s.Runner(0).Run(ctx, wsman.Command{User: DefaultUser, Name: runspace.PowerShellExe, Args: runspace.CommandArgs()},
		strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func line(t *testing.T, v any) string {
	t.Helper()
	if cfg, ok := v.(runspace.SessionConfig); ok {
		b, err := cfg.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	b, err := runspace.EncodeLine(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func frames(t *testing.T, out string) []runspace.Frame {
	t.Helper()
	var fs []runspace.Frame
	for _, l := range strings.SplitAfter(out, "\n") {
		f, err := runspace.DecodeFrame([]byte(l))
		if errors.Is(err, runspace.ErrUntagged) {
			continue
		}
		if err != nil && strings.Contains(err.Error(), "response without request id") {
			// The bootstrap answers an undecodable request with id 0,
			// which DecodeFrame refuses; read it as it is.
			f = decodeLoose(t, l)
			err = nil
		}
		if err != nil {
			t.Fatalf("frame %q: %v", l, err)
		}
		fs = append(fs, f)
	}
	return fs
}

func decodeLoose(t *testing.T, l string) runspace.Frame {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(strings.TrimPrefix(l, runspace.FrameTag)))
	if err != nil {
		t.Fatal(err)
	}
	var f runspace.Frame
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSessionStartEdges(t *testing.T) {
	s := newSim(t, Options{Quiet: true})
	stage1 := string(runspace.Stage1Line())
	other := runspace.FrameTag + base64.StdEncoding.EncodeToString([]byte("Remove-Mailbox x -Confirm:$false")) + "\n"

	if code, out, _ := runRaw(t, s, ""); code != exitStage0 || out != "" {
		t.Errorf("empty stdin: exit %d, out %q; want %d", code, out, exitStage0)
	}
	if code, _, _ := runRaw(t, s, "Remove-Mailbox x\n"); code != exitStage0 {
		t.Errorf("untagged stage 1: exit %d, want %d", code, exitStage0)
	}
	if code, out, errOut := runRaw(t, s, other); code != exitScript || out != "" || !strings.Contains(errOut, "exsim cannot run this script") {
		t.Errorf("foreign stage 1: exit %d, out %q, err %q", code, out, errOut)
	}
	// EOF instead of a config line: the bootstrap exits 3 without a frame.
	code, out, _ := runRaw(t, s, stage1)
	if fs := frames(t, out); code != exitNoConfig || len(fs) != 0 {
		t.Errorf("no config: exit %d frames %+v", code, fs)
	}
	// An undecodable config line fails inside the bootstrap's try block.
	code, out, _ = runRaw(t, s, stage1+runspace.FrameTag+"e30K!!\n")
	fs := frames(t, out)
	if code != exitInitError || len(fs) != 1 || fs[0].InitErr == nil {
		t.Errorf("bad config: exit %d frames %+v", code, fs)
	}
	cases := []struct {
		name string
		cfg  runspace.SessionConfig
		want string // InitErr text fragment; "" = ready
	}{
		{"snapin", snapin(), ""},
		{"remoting own host", remoting("127.0.0.1"), ""},
		{"remoting by server name", runspace.SessionConfig{Mode: "remoting", ConnectionURI: "http://CAS01/powershell"}, ""},
		{"remoting other host", remoting("cas99.contoso.com"), ""},
		{"wrong path", runspace.SessionConfig{Mode: "remoting", ConnectionURI: "http://127.0.0.1/wsman"}, "HTTP status code of 404"},
		{"relative uri", runspace.SessionConfig{Mode: "remoting", ConnectionURI: "127.0.0.1/PowerShell/"}, "connection URI"},
		{"unknown mode is remoting", runspace.SessionConfig{Mode: "other"}, "'ConnectionUri'"},
		{"second-hop credential", runspace.SessionConfig{Mode: "remoting", ConnectionURI: "http://127.0.0.1/PowerShell/", User: DefaultUser, Password: secret.New(DefaultPassword)}, ""},
		{"wrong second-hop password", runspace.SessionConfig{Mode: "remoting", ConnectionURI: "http://127.0.0.1/PowerShell/", User: DefaultUser, Password: secret.New("nope")}, "Access is denied"},
		{"unknown second-hop user", runspace.SessionConfig{Mode: "remoting", ConnectionURI: "http://127.0.0.1/PowerShell/", User: "mallory", Password: secret.New(DefaultPassword)}, "Access is denied"},
	}
	for _, tc := range cases {
		code, out, _ := runRaw(t, s, stage1+"noise line the bootstrap skips\n"+line(t, tc.cfg))
		fs := frames(t, out)
		if len(fs) != 1 {
			t.Errorf("%s: frames %+v", tc.name, fs)
			continue
		}
		switch {
		case tc.want == "" && (!fs[0].Ready || code != exitOK || fs[0].Host != "CAS01" || fs[0].Exchange != ExchangeVersion || fs[0].PS != PowerShellVersion):
			t.Errorf("%s: exit %d frame %+v, want ready", tc.name, code, fs[0])
		case tc.want != "" && (fs[0].InitErr == nil || code != exitInitError || !strings.Contains(fs[0].InitErr.Msg, tc.want)):
			t.Errorf("%s: exit %d frame %+v, want initerr containing %q", tc.name, code, fs[0], tc.want)
		}
	}
	if got := s.Counters().HostMismatches; got != 1 {
		t.Errorf("host mismatches = %d, want 1 (cas99)", got)
	}
	if got := s.Counters().SecondHopCredentials; got != 3 {
		t.Errorf("second-hop credentials = %d, want 3", got)
	}
	// A user without the password line that must follow the config.
	cfgOnly, err := runspace.EncodeLine(runspace.SessionConfig{Mode: "remoting", ConnectionURI: "http://127.0.0.1/PowerShell/", User: DefaultUser})
	if err != nil {
		t.Fatal(err)
	}
	for _, tail := range []string{"", line(t, runspace.Request{ID: 1, Cmd: "Get-ExchangeServer"})[len(runspace.FrameTag):]} {
		code, out, _ := runRaw(t, s, stage1+string(cfgOnly)+tail)
		if fs := frames(t, out); code != exitInitError || len(fs) != 1 || fs[0].InitErr == nil ||
			!strings.Contains(fs[0].InitErr.Msg, "password line is missing") {
			t.Errorf("config with a user, then %q: exit %d frames %+v, want the missing-password initerr", tail, code, fs)
		}
	}
	// A bad request line is answered like the bootstrap's catch block: an
	// err frame with id 0; the session goes on.
	code, out, _ = runRaw(t, s, stage1+line(t, snapin())+runspace.FrameTag+"!!!\n"+line(t, runspace.Request{ID: 5, Cmd: "Get-ExchangeServer", Select: []string{"Name"}}))
	fs = frames(t, out)
	if code != exitOK || len(fs) != 4 || fs[1].Err == nil || fs[1].ID != 0 || fs[2].ID != 5 || !fs[3].End {
		t.Errorf("bad request line: exit %d frames %+v", code, fs)
	}
}

func TestNoise(t *testing.T) {
	s := newSim(t, Options{})
	code, out, errOut := runRaw(t, s, string(runspace.Stage1Line())+line(t, remoting("127.0.0.1")))
	if code != exitOK || !strings.HasPrefix(out, "\xef\xbb\xbfWARNING: ") || !strings.HasPrefix(errOut, "#< CLIXML\r\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if fs := frames(t, out); len(fs) != 1 || !fs[0].Ready {
		t.Fatalf("frames %+v", fs)
	}
}

func TestPowerShellMaxConcurrency(t *testing.T) {
	s := newSim(t, Options{Listeners: 2, PowerShellMaxConcurrency: 3, Quiet: true})
	var open []*pipeSession
	for i := range 3 {
		p, f := openPipe(t, s, i%2, "Svc-EASConnector", remoting("127.0.0.1")) // user names compare case-insensitively
		if !f.Ready {
			t.Fatalf("session %d: %+v", i, f)
		}
		open = append(open, p)
	}
	p, f := openPipe(t, s, 1, DefaultUser, remoting("127.0.0.2"))
	want := "Connecting to remote server 127.0.0.2 failed with the following error message : The WS-Management service cannot process the request. This user is allowed a maximum of 3 concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user. For more information, see the about_Remote_Troubleshooting Help topic."
	if f.InitErr == nil || f.InitErr.Msg != want || f.InitErr.FQID != "-2144108060,PSSessionOpenFailed" || f.InitErr.Type != typeRemoting {
		t.Fatalf("4th session = %+v, want initerr %q", f, want)
	}
	if code := p.exit(); code != exitInitError {
		t.Fatalf("refused session exit = %d, want %d", code, exitInitError)
	}
	// Another user and snap-in sessions are not limited by this user's quota.
	if _, f := openPipe(t, s, 0, "admin", remoting("127.0.0.1")); !f.Ready {
		t.Fatalf("other user: %+v", f)
	}
	if _, f := openPipe(t, s, 0, DefaultUser, snapin()); !f.Ready {
		t.Fatalf("snap-in: %+v", f)
	}
	if code := open[0].close(); code != exitOK {
		t.Fatalf("close = %d", code)
	}
	if _, f := openPipe(t, s, 0, DefaultUser, remoting("127.0.0.1")); !f.Ready {
		t.Fatalf("after one closed: %+v", f)
	}
	c := s.Counters()
	if c.SessionsRefused != 1 || c.MaxSessions != 5 || c.Sessions != 5 || c.InitErrors != 1 {
		t.Fatalf("counters %+v", c)
	}
	// The default is Exchange's 18.
	if q := newSim(t, Options{}).Quotas(); q.PowerShellMaxConcurrency != DefaultPowerShellMaxConcurrency {
		t.Fatalf("default quota = %d", q.PowerShellMaxConcurrency)
	}
}

func TestDefaultConcurrencyOf18(t *testing.T) {
	s := newSim(t, Options{Quiet: true})
	for i := range 18 {
		if _, f := openPipe(t, s, 0, DefaultUser, remoting("127.0.0.1")); !f.Ready {
			t.Fatalf("session %d: %+v", i+1, f)
		}
	}
	_, f := openPipe(t, s, 0, DefaultUser, remoting("127.0.0.1"))
	if f.InitErr == nil || !strings.Contains(f.InitErr.Msg, "This user is allowed a maximum of 18 concurrent shells, which has been exceeded.") {
		t.Fatalf("19th session = %+v", f)
	}
}

func TestCmdletRateBudget(t *testing.T) {
	s := newSim(t, Options{PowerShellMaxCmdlets: 3, PowerShellMaxCmdletsTimePeriod: time.Hour, Quiet: true})
	c, _ := openPipe(t, s, 0, DefaultUser, remoting("127.0.0.1"))
	c2, _ := openPipe(t, s, 0, DefaultUser, remoting("127.0.0.1"))
	for range 3 {
		c.mustOK("Get-ExchangeServer", nil, "Name")
	}
	r := c.do("Get-ExchangeServer", nil, "Name")
	if r.err == nil || r.err.Type != typeRemoting ||
		!strings.Contains(r.err.Msg, "The WS-Management service cannot process the request. The user load quota of 3 requests per 3600 seconds has been exceeded. Send future requests at a slower rate or raise the quota for this user. The next request from this user will not be approved for at least ") {
		t.Fatalf("4th call = %+v", r.err)
	}
	// The refusal breaks the imported session: the bootstrap exits 4.
	if code := c.exit(); code != exitBroken {
		t.Fatalf("throttled session exit = %d, want %d", code, exitBroken)
	}
	// The budget is the user's, not the session's.
	if r := c2.do("Get-CASMailbox", nil, "Name"); r.err == nil || !strings.Contains(r.err.Msg, "user load quota") {
		t.Fatalf("other session of the user = %+v", r.err)
	}
	// Snap-in sessions bypass Exchange throttling.
	p := openSession(t, s)
	p.mustOK("Get-ExchangeServer", nil, "Name")
	// The window slides: after it, calls are approved again.
	if err := s.SetQuotas(Quotas{PowerShellMaxCmdlets: 3, PowerShellMaxCmdletsTimePeriod: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	c3, _ := openPipe(t, s, 0, DefaultUser, remoting("127.0.0.1"))
	c3.mustOK("Get-ExchangeServer", nil, "Name")
	got := s.Counters()
	if got.Throttled != 2 || got.Cmdlets["Get-ExchangeServer"] != 5 {
		t.Fatalf("counters = %+v, want 2 throttled and 5 calls that ran", got)
	}
}

func TestFaultErrorRateAndSlowdown(t *testing.T) {
	s := newSim(t, Options{Quiet: true, Seed: 3})
	smallOrg(t, s)
	c := openSession(t, s)
	if err := s.SetFaults(Faults{ErrorRate: 1, Cmdlets: []string{"set-casmailbox"}}); err != nil {
		t.Fatal(err)
	}
	r := c.do("Set-CASMailbox", map[string]any{"Identity": "alice", "ActiveSyncBlockedDeviceIDs": []any{"X"}})
	if r.err == nil || r.err.Type != typeADTransient || !strings.Contains(r.err.Msg, "Please retry at a later time") {
		t.Fatalf("injected error = %+v", r.err)
	}
	if mb, _ := s.Org().Mailbox("alice"); len(mb.ActiveSyncBlockedDeviceIDs) != 0 {
		t.Fatal("failed call changed the mailbox")
	}
	c.mustOK("Get-CASMailbox", map[string]any{"Identity": "alice"}, "Name") // other cmdlets unaffected
	if err := s.SetFaults(Faults{Slowdown: 80 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.mustOK("Get-ExchangeServer", nil, "Name")
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Fatalf("slowed call took %s", d)
	}
	if err := s.SetFaults(Faults{ErrorRate: 2}); err == nil {
		t.Fatal("error rate 2 accepted")
	}
	if err := s.SetFaults(Faults{Cmdlets: []string{"Remove-Mailbox"}}); err == nil {
		t.Fatal("unknown cmdlet accepted")
	}
	if got := s.Counters().InjectedErrors; got != 1 {
		t.Fatalf("injected errors = %d", got)
	}
}

func TestFaultTruncate(t *testing.T) {
	s := newSim(t, Options{Quiet: true, Population: genPopulation(50)})
	c := openSession(t, s)
	if err := s.SetFaults(Faults{Truncate: true, TruncateAfter: 3}); err != nil {
		t.Fatal(err)
	}
	id := c.send("Get-MobileDevice", nil, "DeviceId")
	n := 0
	for {
		f, err := c.next()
		if err != nil {
			if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "frame") {
				t.Fatalf("after %d objects: %v", n, err)
			}
			break
		}
		if f.ID != id || f.Obj == nil {
			t.Fatalf("unexpected frame %+v", f)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("objects before truncation = %d, want 3", n)
	}
	if code := c.exit(); code != exitScript {
		t.Fatalf("exit = %d, want %d", code, exitScript)
	}
	// A response shorter than TruncateAfter loses its end frame.
	c2 := openSession(t, s)
	id = c2.send("Get-ExchangeServer", nil, "Name")
	if f, err := c2.next(); err != nil || f.ID != id || f.Obj == nil {
		t.Fatalf("first frame = %+v, %v", f, err)
	}
	if f, err := c2.next(); err == nil {
		t.Fatalf("frame after the cut: %+v", f)
	}
	if got := s.Counters().Truncated; got != 2 {
		t.Fatalf("truncated = %d", got)
	}
}

func TestFaultHang(t *testing.T) {
	s := newSim(t, Options{Quiet: true})
	c := openSession(t, s)
	if err := s.SetFaults(Faults{Hang: true}); err != nil {
		t.Fatal(err)
	}
	c.send("Get-ExchangeServer", nil, "Name")
	select {
	case fl := <-c.frames:
		t.Fatalf("hung call answered: %+v", fl)
	case <-time.After(150 * time.Millisecond):
	}
	if got := s.Counters().Hung; got != 1 {
		t.Fatalf("hung = %d", got)
	}
	c.cancel() // the client gives up: terminate the command
	if code := c.exit(); code != exitKilled {
		t.Fatalf("exit = %d, want %d", code, exitKilled)
	}
}

func TestCountersAndCallLog(t *testing.T) {
	s := newSim(t, Options{Quiet: true, CallLogSize: 4})
	smallOrg(t, s)
	var wg sync.WaitGroup
	const sessions = 4
	for i := range sessions {
		c := openSession(t, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 3 {
				c.mustOK("Get-CASMailbox", map[string]any{"Identity": "alice"}, "Name")
				c.mustOK("Set-CASMailbox", map[string]any{"Identity": "bob",
					"ActiveSyncAllowedDeviceIDs": map[string]any{"add": fmt.Sprintf("D%d-%d", i, j)}})
			}
		}()
	}
	wg.Wait()
	got := s.Counters()
	if got.Cmdlets["Get-CASMailbox"] != 12 || got.Cmdlets["Set-CASMailbox"] != 12 || got.WriteCmdlets != 12 {
		t.Fatalf("counters %+v", got)
	}
	if got.MaxSessions != sessions || got.Sessions != sessions || got.MaxConcurrentCmdlets < 1 || got.CurrentCmdlets != 0 {
		t.Fatalf("session counters %+v", got)
	}
	if mb, _ := s.Org().Mailbox("bob"); len(mb.ActiveSyncAllowedDeviceIDs) != 12 {
		t.Fatalf("concurrent adds: %d entries, want 12", len(mb.ActiveSyncAllowedDeviceIDs))
	}
	calls := s.CallLog(0, 0)
	if len(calls) != 4 || calls[3].Seq != 24 || calls[0].Seq != 21 {
		t.Fatalf("call log (bounded to 4) = %d entries, seqs %d..%d", len(calls), calls[0].Seq, calls[len(calls)-1].Seq)
	}
	if tail := s.CallLog(22, 1); len(tail) != 1 || tail[0].Seq != 23 {
		t.Fatalf("CallLog(22, 1) = %+v", tail)
	}
	for _, call := range calls {
		if call.Result != "ok" || call.User != DefaultUser || call.Session == 0 || call.Args["Identity"] == nil {
			t.Fatalf("call %+v", call)
		}
	}
	s.ResetCounters()
	if got := s.Counters(); len(got.Cmdlets) != 0 || got.Sessions != sessions || got.MaxSessions != sessions || len(s.CallLog(0, 0)) != 0 {
		t.Fatalf("after reset %+v", got)
	}
	var buf bytes.Buffer
	s.Metrics().WritePrometheus(&buf)
	for _, want := range []string{`easconnector_exsim_cmdlet_calls_total{cmdlet="Set-CASMailbox",result="ok"} 12`, "easconnector_exsim_sessions 4"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, buf.String())
		}
	}
}

func TestLatencyProfiles(t *testing.T) {
	for _, name := range ProfileNames() {
		p, err := LookupProfile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, cmd := range runspace.Allowlist {
			l := p.Latency(cmd)
			if name == ProfileZero && l != (Latency{}) || name != ProfileZero && l.Fixed <= 0 {
				t.Errorf("%s %s = %+v", name, cmd, l)
			}
		}
	}
	if _, err := LookupProfile("fast"); err == nil {
		t.Fatal("unknown profile accepted")
	}
	lab, _ := LookupProfile(ProfileLab)
	prod, _ := LookupProfile(ProfileProduction)
	if l := lab.Latency("Set-CASMailbox"); l.Fixed != 40*time.Millisecond {
		t.Fatalf("lab Set-CASMailbox = %+v", l)
	}
	if l := lab.Latency("Get-MobileDevice"); l.Fixed != 30*time.Millisecond || l.PerObject != 200*time.Microsecond {
		t.Fatalf("lab Get-MobileDevice = %+v", l)
	}
	if prod.SessionStart.Fixed != 2*time.Second || lab.SessionStart.Fixed != 200*time.Millisecond {
		t.Fatal("session start delays")
	}
	l := Latency{Jitter: 10 * time.Millisecond}
	if l.jitter(0) != 0 || l.jitter(0.999999999) != 80*time.Millisecond {
		t.Fatalf("jitter bounds: %s %s", l.jitter(0), l.jitter(0.999999999))
	}
	// The lab profile is observable end to end: a session takes ≥ 200 ms to
	// start and Set-CASMailbox ≥ 40 ms.
	if testing.Short() {
		return
	}
	s := newSim(t, Options{Profile: ProfileLab, Quiet: true})
	smallOrg(t, s)
	start := time.Now()
	c := openSession(t, s)
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("lab session start = %s", d)
	}
	start = time.Now()
	c.mustOK("Set-CASMailbox", map[string]any{"Identity": "alice", "ActiveSyncEnabled": true})
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Fatalf("lab Set-CASMailbox = %s", d)
	}
}

func TestSessionCancelDuringStartDelay(t *testing.T) {
	s := newSim(t, Options{Profile: ProfileProduction, Quiet: true})
	ctx, cancel := context.WithCancel(context.Background())
	inR, inW := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- s.Runner(0).Run(ctx, wsman.Command{User: DefaultUser, Name: runspace.PowerShellExe, Args: runspace.CommandArgs()},
			inR, io.Discard, io.Discard)
	}()
	_, _ = inW.Write(runspace.Stage1Line())
	_, _ = inW.Write([]byte(line(t, remoting("127.0.0.1"))))
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case code := <-done:
		if code != exitKilled {
			t.Fatalf("exit = %d", code)
		}
	case <-time.After(time.Second):
		t.Fatal("Run did not return after cancel during the 2 s session start")
	}
	// The remoting slot taken for the session was given back.
	s.counters.mu.Lock()
	slots := len(s.counters.remoting)
	s.counters.mu.Unlock()
	if c := s.Counters(); slots != 0 || c.Sessions != 0 {
		t.Fatalf("after cancel: %d users hold slots, %d sessions", slots, c.Sessions)
	}
	_ = inW.Close()
}

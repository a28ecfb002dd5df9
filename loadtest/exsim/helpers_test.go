package exsim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/runspace"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 15 * time.Second

// fixedNow keeps generated populations reproducible.
var fixedNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func genPopulation(devices int) *population.Population {
	return population.Generate(population.Options{Seed: 7, Devices: devices, Now: fixedNow})
}

// newSim builds a Sim without listeners and closes it with the test.
func newSim(t testing.TB, opts Options) *Sim {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// syncBuffer is a goroutine-safe bytes.Buffer.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// frameOrLine is one stdout line: a decoded frame, or diagnostics text.
type frameOrLine struct {
	frame runspace.Frame
	diag  string
	err   error
}

// frameReader decodes stdout lines on its own goroutine, so that tests can
// wait with a deadline.
func frameReader(r io.Reader) <-chan frameOrLine {
	ch := make(chan frameOrLine, 64)
	go func() {
		defer close(ch)
		br := bufio.NewReaderSize(r, 1<<20)
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 {
				f, ferr := runspace.DecodeFrame(line)
				switch {
				case errors.Is(ferr, runspace.ErrUntagged):
					ch <- frameOrLine{diag: strings.TrimRight(string(line), "\r\n")}
				case ferr != nil:
					ch <- frameOrLine{err: ferr, diag: string(line)}
				default:
					ch <- frameOrLine{frame: f}
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

// client is one session seen from the connector's side, over any
// transport: it writes lines to stdin and reads frames from stdout.
type client struct {
	t      testing.TB
	stdin  io.WriteCloser
	frames <-chan frameOrLine
	diag   []string
	nextID uint64
	ready  runspace.Frame
}

// start performs the session start exactly as runspace does after the
// command is running: stage 1 line, config line, then the ready frame.
func (c *client) start(cfg runspace.SessionConfig) (runspace.Frame, error) {
	c.t.Helper()
	if _, err := c.stdin.Write(runspace.Stage1Line()); err != nil {
		return runspace.Frame{}, err
	}
	line, err := runspace.EncodeLine(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.stdin.Write(line); err != nil {
		return runspace.Frame{}, err
	}
	f, err := c.next()
	if err == nil && f.Ready {
		c.ready = f
	}
	return f, err
}

// next returns the next frame, collecting diagnostics lines.
func (c *client) next() (runspace.Frame, error) {
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	for {
		select {
		case fl, ok := <-c.frames:
			if !ok {
				return runspace.Frame{}, io.EOF
			}
			if fl.err != nil {
				return runspace.Frame{}, fl.err
			}
			if fl.diag != "" || !fl.frame.Ready && fl.frame.ID == 0 && fl.frame.InitErr == nil && fl.frame.Err == nil {
				c.diag = append(c.diag, fl.diag)
				continue
			}
			return fl.frame, nil
		case <-timer.C:
			c.t.Fatalf("no frame within %s", testTimeout)
		}
	}
}

// result is the outcome of one request.
type result struct {
	objs  []map[string]any
	raw   []json.RawMessage
	count int
	err   *runspace.RemoteError
}

// send writes one request line.
func (c *client) send(cmd string, args map[string]any, sel ...string) uint64 {
	c.t.Helper()
	c.nextID++
	line, err := runspace.EncodeLine(runspace.Request{ID: c.nextID, Cmd: cmd, Args: args, Select: sel})
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.stdin.Write(line); err != nil {
		c.t.Fatalf("write request: %v", err)
	}
	return c.nextID
}

// read collects the response to request id.
func (c *client) read(id uint64) (result, error) {
	c.t.Helper()
	var r result
	for {
		f, err := c.next()
		if err != nil {
			return r, err
		}
		if f.ID != id {
			c.t.Fatalf("frame for request %d while waiting for %d: %+v", f.ID, id, f)
		}
		switch {
		case f.Obj != nil:
			var m map[string]any
			if err := json.Unmarshal(f.Obj, &m); err != nil {
				c.t.Fatalf("obj frame: %v", err)
			}
			r.objs = append(r.objs, m)
			r.raw = append(r.raw, f.Obj)
		case f.End:
			r.count = f.Count
			if f.Count != len(r.objs) {
				c.t.Fatalf("end count %d, want %d objects", f.Count, len(r.objs))
			}
			return r, nil
		case f.Err != nil:
			r.err = f.Err
			return r, nil
		}
	}
}

// do sends a request and reads its response, failing the test on a
// transport error.
func (c *client) do(cmd string, args map[string]any, sel ...string) result {
	c.t.Helper()
	r, err := c.read(c.send(cmd, args, sel...))
	if err != nil {
		c.t.Fatalf("%s: %v", cmd, err)
	}
	return r
}

// mustOK is do that fails on an err frame.
func (c *client) mustOK(cmd string, args map[string]any, sel ...string) result {
	c.t.Helper()
	r := c.do(cmd, args, sel...)
	if r.err != nil {
		c.t.Fatalf("%s %v: %s", cmd, args, r.err)
	}
	return r
}

// pipeSession is a client connected to a worker's Run over io.Pipes.
type pipeSession struct {
	*client
	cancel context.CancelFunc
	code   chan int
	stderr *syncBuffer
}

// openPipe runs listener i's worker in a goroutine for user and returns the
// client; the session is started with cfg unless cfg.Mode is "-".
func openPipe(t testing.TB, s *Sim, i int, user string, cfg runspace.SessionConfig) (*pipeSession, runspace.Frame) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	p := &pipeSession{client: &client{t: t, stdin: inW, frames: frameReader(outR)}, cancel: cancel,
		code: make(chan int, 1), stderr: &syncBuffer{}}
	cmd := wsman.Command{ShellID: "S", CommandID: "C", User: user, Name: runspace.PowerShellExe, Args: runspace.CommandArgs()}
	go func() {
		code := s.Runner(i).Run(ctx, cmd, inR, outW, p.stderr)
		_ = outW.Close()
		_ = inR.CloseWithError(io.ErrClosedPipe)
		p.code <- code
	}()
	t.Cleanup(func() { p.close() })
	f, err := p.start(cfg)
	if err != nil {
		t.Fatalf("session start: %v", err)
	}
	return p, f
}

// close ends stdin and waits for the exit code.
func (p *pipeSession) close() int {
	_ = p.stdin.Close()
	select {
	case code := <-p.code:
		p.code <- code
		p.cancel()
		return code
	case <-time.After(testTimeout):
		p.cancel()
		p.t.Errorf("worker did not exit within %s", testTimeout)
		return -1
	}
}

// exit waits for the worker to exit on its own.
func (p *pipeSession) exit() int {
	p.t.Helper()
	select {
	case code := <-p.code:
		p.code <- code
		return code
	case <-time.After(testTimeout):
		p.t.Fatalf("worker did not exit within %s", testTimeout)
		return -1
	}
}

func snapin() runspace.SessionConfig { return runspace.SessionConfig{Mode: "snapin"} }

func remoting(host string) runspace.SessionConfig {
	return runspace.SessionConfig{Mode: "remoting", ConnectionURI: "http://" + host + "/PowerShell/"}
}

// openSession opens a ready snap-in session on listener 0.
func openSession(t testing.TB, s *Sim) *pipeSession {
	t.Helper()
	p, f := openPipe(t, s, 0, DefaultUser, snapin())
	if !f.Ready {
		t.Fatalf("start: %+v, want ready", f)
	}
	return p
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// smallOrg is a hand-made organization for cmdlet and ABQ tests.
func smallOrg(t testing.TB, s *Sim) {
	t.Helper()
	o := s.Org()
	for _, m := range []MailboxSpec{
		{Name: "Alice Anderson", SamAccountName: "alice"},
		{Name: "Bob Baker", SamAccountName: "bob"},
		{Name: "Peggy O'Brien", SamAccountName: "peggy"},
		{Name: "Dan Disabled", SamAccountName: "dan", ActiveSyncDisabled: true},
	} {
		if _, err := o.AddMailbox(m); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []DeviceSpec{
		{Mailbox: "alice", DeviceId: "ApplAAAA1111", DeviceType: "iPhone", DeviceModel: "iPhone15C2", DeviceOS: "iOS 17.5.1 21F90",
			DeviceUserAgent: "Apple-iPhone15C2/2105.90", FirstSyncTime: fixedNow.Add(-48 * time.Hour)},
		{Mailbox: "alice", DeviceId: "androidc1234", DeviceType: "Android", DeviceModel: "Pixel 8", DeviceOS: "Android 14.0.0",
			DeviceUserAgent: "Android/14-EAS-2.0", FirstSyncTime: fixedNow.Add(-2 * time.Hour)},
		{Mailbox: "bob", DeviceId: "NINEBOB", DeviceType: "Nine", DeviceModel: "Nine Work", DeviceOS: "Android 13",
			DeviceUserAgent: "Nine/4.9.4", FirstSyncTime: fixedNow.Add(-30 * 24 * time.Hour)},
		{Mailbox: "peggy", DeviceId: "ApplPEGGY", DeviceType: "iPhone", DeviceModel: "iPhone15C2", DeviceOS: "iOS 17.4",
			FirstSyncTime: fixedNow.Add(-time.Hour), Discovery: true},
		{Mailbox: "dan", DeviceId: "ApplDAN", DeviceType: "iPhone", DeviceModel: "iPhone15C2", FirstSyncTime: fixedNow},
	} {
		if _, err := o.AddDevice(d); err != nil {
			t.Fatal(err)
		}
	}
}

package runspace_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
	"github.com/easconnector/easconnector/runspace"
)

// scriptRunner plays the bootstrap over a real WS-Man server: it checks
// stage 0 and stage 1, answers Ready, then hands every request to respond,
// which writes raw stdout bytes. It lets tests produce what exsim never
// does: paced streams, frames split across Receives, protocol violations.
type scriptRunner struct {
	respond func(ctx context.Context, req runspace.Request, out io.Writer) bool // false ends the process
}

func (scriptRunner) Start(cmd wsman.Command) error {
	return runspace.VerifyCommandLine(cmd.Name, cmd.Args)
}

func (r scriptRunner) Run(ctx context.Context, _ wsman.Command, stdin io.Reader, stdout, _ io.Writer) int {
	in := bufio.NewReader(stdin)
	stage1, err := in.ReadBytes('\n')
	if err != nil || runspace.VerifyStage1Line(stage1) != nil {
		return 3
	}
	if _, err := in.ReadBytes('\n'); err != nil {
		return 2
	}
	if _, err := stdout.Write(frameLine(runspace.Frame{Ready: true, Host: "SCRIPT"})); err != nil {
		return 1
	}
	for {
		line, err := in.ReadBytes('\n')
		if err != nil {
			return 0
		}
		req, err := runspace.DecodeRequest(line)
		if err != nil || !r.respond(ctx, req, stdout) {
			return 1
		}
	}
}

func frameLine(f runspace.Frame) []byte {
	line, err := runspace.EncodeLine(f)
	if err != nil {
		panic(err)
	}
	return line
}

func objFrame(id uint64, n int) runspace.Frame {
	return runspace.Frame{ID: id, Obj: json.RawMessage(`{"N":` + strconv.Itoa(n) + `}`)}
}

// scriptServer starts a WS-Man server running r (with small Receive
// chunks, so frames arrive split) and returns options that reach it.
func scriptServer(t *testing.T, r scriptRunner) runspace.Options {
	t.Helper()
	ws := wsman.NewServer(wsman.Options{Users: map[string]string{confUser: confPass}, MaxReceiveBytes: 61}, r)
	ts := httptest.NewServer(ws)
	t.Cleanup(func() {
		ws.Close()
		ts.Close()
	})
	host, port, _ := net.SplitHostPort(ts.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	return runspace.Options{Servers: []string{host}, Port: p, User: confUser, Password: secret.New(confPass), OperationTimeout: time.Second,
		PlainHTTP: true, Auth: runspace.AuthBasic, Mode: runspace.ModeRemoting}
}

// scriptSession opens a session on a WS-Man server running r.
func scriptSession(t *testing.T, r scriptRunner, mutate func(*runspace.Options)) *runspace.Session {
	t.Helper()
	o := scriptServer(t, r)
	host := o.Servers[0]
	if mutate != nil {
		mutate(&o)
	}
	ctx := testCtx(t, 30*time.Second)
	s, err := runspace.Open(ctx, o, host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(ctx) })
	return s
}

// TestSessionRequestTimeoutIsAStallTimeout: a stream that keeps producing
// objects outlives RequestTimeout; only silence breaks the session.
func TestSessionRequestTimeoutIsAStallTimeout(t *testing.T) {
	const timeout = 400 * time.Millisecond
	paced := scriptRunner{respond: func(ctx context.Context, req runspace.Request, out io.Writer) bool {
		for i := range 16 {
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return false
			}
			if _, err := out.Write(frameLine(objFrame(req.ID, i))); err != nil {
				return false
			}
		}
		_, err := out.Write(frameLine(runspace.Frame{ID: req.ID, End: true, Count: 16}))
		return err == nil
	}}
	s := scriptSession(t, paced, func(o *runspace.Options) { o.RequestTimeout = timeout })
	ctx := testCtx(t, 30*time.Second)
	res, err := s.Do(ctx, runspace.Call{Cmd: "Get-MobileDevice", Select: []string{"N"}}, nil)
	if err != nil || res.Count != 16 {
		t.Fatalf("Do() = %+v, %v; want 16 objects", res, err)
	}
	if res.Elapsed <= timeout {
		t.Fatalf("the stream took %v, not longer than the %v timeout", res.Elapsed, timeout)
	}
}

// TestSessionProtocolViolations: output that breaks the protocol breaks
// the session (never a wrong result); noise and frames split across
// Receives do not.
func TestSessionProtocolViolations(t *testing.T) {
	write := func(out io.Writer, chunks ...[]byte) bool {
		for _, c := range chunks {
			if _, err := out.Write(c); err != nil {
				return false
			}
		}
		return true
	}
	tests := []struct {
		name    string
		respond func(req runspace.Request, out io.Writer) bool
		count   int    // objects delivered before the end
		wantErr string // "" for success
	}{
		{"noise and split frames", func(req runspace.Request, out io.Writer) bool {
			return write(out, []byte("\xef\xbb\xbfWARNING: banner\r\n"), frameLine(objFrame(req.ID, 0)),
				[]byte("some text without newline then "), []byte("newline\n"),
				frameLine(objFrame(req.ID, 1)), frameLine(runspace.Frame{ID: req.ID, End: true, Count: 2}))
		}, 2, ""},
		{"frame of another request", func(req runspace.Request, out io.Writer) bool {
			return write(out, frameLine(objFrame(req.ID+1, 0)))
		}, 0, "frame for request"},
		{"malformed base64", func(req runspace.Request, out io.Writer) bool {
			return write(out, frameLine(objFrame(req.ID, 0)), []byte("EASC1 !!notbase64!!\n"))
		}, 1, "protocol error"},
		{"count mismatch", func(req runspace.Request, out io.Writer) bool {
			return write(out, frameLine(objFrame(req.ID, 0)), frameLine(runspace.Frame{ID: req.ID, End: true, Count: 2}))
		}, 1, "reported 2 objects, 1 received"},
		{"second ready frame", func(req runspace.Request, out io.Writer) bool {
			return write(out, frameLine(runspace.Frame{Ready: true}))
		}, 0, "frame for request 0"},
		{"process exits mid-stream", func(req runspace.Request, out io.Writer) bool {
			write(out, frameLine(objFrame(req.ID, 0)))
			return false
		}, 1, "powershell exited with code 1"},
		{"truncated last frame", func(req runspace.Request, out io.Writer) bool {
			line := frameLine(objFrame(req.ID, 0))
			write(out, line[:len(line)/2])
			return false
		}, 0, "protocol error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := scriptRunner{respond: func(_ context.Context, req runspace.Request, out io.Writer) bool { return tt.respond(req, out) }}
			s := scriptSession(t, r, nil)
			ctx := testCtx(t, 30*time.Second)
			res, err := s.Do(ctx, runspace.Call{Cmd: "Get-MobileDevice", Select: []string{"N"}}, nil)
			if res.Count != tt.count {
				t.Errorf("Do() delivered %d objects, want %d", res.Count, tt.count)
			}
			if tt.wantErr == "" {
				if err != nil || s.Err() != nil {
					t.Fatalf("Do() error = %v, session %v", err, s.Err())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || s.Err() == nil {
				t.Fatalf("Do() error = %v (session %v), want one containing %q and a broken session", err, s.Err(), tt.wantErr)
			}
			if _, err := s.Do(ctx, runspace.Call{Cmd: "Get-MobileDevice"}, nil); !errors.Is(err, runspace.ErrSessionBroken) {
				t.Errorf("Do() on the broken session error = %v, want ErrSessionBroken", err)
			}
		})
	}
}

// TestPoolDiscoveryFallsBackToGetExchangeServer: Exchange 2013 has no
// Get-ClientAccessService; the Mailbox and Client Access servers of
// Get-ExchangeServer are used, without Edge servers, duplicates of the
// configured server or invalid names.
func TestPoolDiscoveryFallsBackToGetExchangeServer(t *testing.T) {
	servers := []string{
		`{"Name":"EDGE1","Fqdn":"edge1.contoso.com","ServerRole":"Edge"}`,
		`{"Name":"MBX2","Fqdn":"mbx2.contoso.com","ServerRole":"Mailbox, ClientAccess"}`,
		`{"Name":"SCRIPT","Fqdn":"script.contoso.com","ServerRole":["Mailbox"]}`,
		`{"Name":"BAD","Fqdn":"bad host\"!","ServerRole":"Mailbox"}`,
		`{"Name":"CAS3","Fqdn":"cas3.contoso.com.","ServerRole":["ClientAccess"]}`,
	}
	r := scriptRunner{respond: func(_ context.Context, req runspace.Request, out io.Writer) bool {
		var lines []byte
		switch req.Cmd {
		case "Get-ClientAccessService":
			lines = frameLine(runspace.Frame{ID: req.ID, Err: &runspace.RemoteError{
				Type: "System.Management.Automation.CommandNotFoundException", Category: "ObjectNotFound",
				Msg: "The term 'Get-ClientAccessService' is not recognized as the name of a cmdlet."}})
		case "Get-ExchangeServer":
			for _, js := range servers {
				lines = append(lines, frameLine(runspace.Frame{ID: req.ID, Obj: json.RawMessage(js)})...)
			}
			lines = append(lines, frameLine(runspace.Frame{ID: req.ID, End: true, Count: len(servers)})...)
		default:
			lines = frameLine(runspace.Frame{ID: req.ID, End: true})
		}
		_, err := out.Write(lines)
		return err == nil
	}}
	o := scriptServer(t, r)
	o.CASFailover = true
	p := startPool(t, o)
	var got []string
	for _, e := range p.Endpoints() {
		got = append(got, e.Server)
	}
	want := []string{o.Servers[0], "cas3.contoso.com", "mbx2.contoso.com"}
	if !slices.Equal(got, want) {
		t.Errorf("Endpoints() = %q, want %q", got, want)
	}
}

package runspace

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/runspace/psrp"
	"github.com/easconnector/easconnector/runspace/psrp/psrptest"
)

// replayServer answers the psrp session kind with what Windows answered
// pypsrp in a recording (runspace/psrp/testdata/pypsrp), in order, after
// comparing each request with the recorded one structurally: action,
// resource URI, body element, streams, options, selectors and the PSRP
// message types it carries. Requests a recording lacks because pypsrp did
// not send them are answered as Windows would: the WinRM configuration
// Get with an access-denied fault (an RBAC account cannot read it), a
// terminate Signal after a finished pipeline with an empty SignalResponse.
type replayServer struct {
	t    *testing.T
	name string
	ex   []psrptest.Exchange

	mu   sync.Mutex
	next int
	errs []string
	// guids are the recorded ShellId and CommandIds, in the order the
	// client asks for new GUIDs.
	guids []psrp.GUID
}

func newReplay(t *testing.T, name string) *replayServer {
	t.Helper()
	ex, err := psrptest.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	r := &replayServer{t: t, name: name, ex: ex}
	for _, x := range ex {
		env, err := psrptest.ParseEnvelope(x.Request)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{env.ShellID, env.CommandID} {
			if id == "" || (env.Body != "Shell" && env.Body != "CommandLine") {
				continue
			}
			g, err := psrp.ParseGUID(id)
			if err != nil {
				t.Fatal(err)
			}
			r.guids = append(r.guids, g)
		}
	}
	return r
}

func (r *replayServer) failf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *replayServer) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	got, err := psrptest.ParseEnvelope(string(body))
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.failf("request %d: %v", r.next, err)
		http.Error(w, "bad envelope", http.StatusBadRequest)
		return
	}
	var want *psrptest.Envelope
	if r.next < len(r.ex) {
		want, _ = psrptest.ParseEnvelope(r.ex[r.next].Request)
	}
	w.Header().Set("Content-Type", soapContentType)
	switch {
	case lastSeg(got.Action) == "Get" && (want == nil || lastSeg(want.Action) != "Get"):
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, accessDeniedFault)
		return
	case lastSeg(got.Action) == "Signal" && strings.EqualFold(got.SignalCode, signalTerminate) && (want == nil || lastSeg(want.Action) != "Signal"):
		io.WriteString(w, signalResponse)
		return
	case want == nil:
		r.failf("request %d (%s) after the end of the recording", r.next, lastSeg(got.Action))
		http.Error(w, "no more", http.StatusGone)
		return
	}
	r.compare(got, want)
	x := r.ex[r.next]
	r.next++
	status := http.StatusOK
	if x.HTTPStatus != 0 {
		status = x.HTTPStatus
	} else if strings.Contains(x.Response, "Fault>") {
		status = http.StatusInternalServerError
	}
	w.WriteHeader(status)
	io.WriteString(w, r.fixGUIDs(x.Response))
}

func lastSeg(s string) string { return s[strings.LastIndexByte(s, '/')+1:] }

// compare checks the structure of a request against the recorded one.
func (r *replayServer) compare(got, want *psrptest.Envelope) {
	n := r.next
	if got.Action != want.Action {
		r.failf("request %d: action %s, recorded %s", n, got.Action, want.Action)
		return
	}
	if got.ResourceURI != want.ResourceURI || got.Body != want.Body {
		r.failf("request %d %s: resource %s body %s, recorded %s %s", n, lastSeg(got.Action), got.ResourceURI, got.Body, want.ResourceURI, want.Body)
	}
	if got.InputStreams != want.InputStreams || got.OutputStreams != want.OutputStreams {
		r.failf("request %d: streams %q/%q, recorded %q/%q", n, got.InputStreams, got.OutputStreams, want.InputStreams, want.OutputStreams)
	}
	if got.ShellID != want.ShellID || got.CommandID != want.CommandID || got.Selectors["ShellId"] != want.Selectors["ShellId"] {
		r.failf("request %d: ids shell=%s command=%s selector=%s, recorded %s %s %s", n, got.ShellID, got.CommandID, got.Selectors["ShellId"],
			want.ShellID, want.CommandID, want.Selectors["ShellId"])
	}
	for k, v := range want.Options {
		if !strings.EqualFold(got.Options[k], v) {
			r.failf("request %d %s: option %s = %q, recorded %q", n, lastSeg(got.Action), k, got.Options[k], v)
		}
	}
	if !strings.EqualFold(got.SignalCode, want.SignalCode) {
		r.failf("request %d: signal %q, recorded %q", n, got.SignalCode, want.SignalCode)
	}
	if g, w := messageTypes(got), messageTypes(want); g != w {
		r.failf("request %d %s: messages %s, recorded %s", n, lastSeg(got.Action), g, w)
	}
}

func messageTypes(e *psrptest.Envelope) string {
	var a psrp.Assembler
	var out []string
	for _, p := range e.Payloads {
		err := a.Write(p.Data, func(b []byte) error {
			m, err := psrp.ParseMessage(b)
			if err != nil {
				return err
			}
			out = append(out, m.Type.String())
			return nil
		})
		if err != nil {
			out = append(out, "error: "+err.Error())
		}
	}
	return strings.Join(out, ",")
}

// fixGUIDs rewrites the RPID and PID of recorded response messages into
// the .NET byte order this client writes. Some recordings were made by a
// pypsrp that wrote the GUIDs' canonical bytes; Windows echoes whatever
// the client sent, so a replay must echo what ours sends.
func (r *replayServer) fixGUIDs(resp string) string {
	env, err := psrptest.ParseEnvelope(resp)
	if err != nil || len(env.Payloads) == 0 {
		return resp
	}
	for _, p := range env.Payloads {
		fixed := append([]byte(nil), p.Data...)
		for b := fixed; len(b) >= psrp.FragmentHeaderSize; {
			n := int(binary.BigEndian.Uint32(b[17:21]))
			blob := b[psrp.FragmentHeaderSize : psrp.FragmentHeaderSize+n]
			if b[16]&1 != 0 && len(blob) >= psrp.MessageHeaderSize {
				for _, off := range []int{8, 24} {
					var canon psrp.GUID
					copy(canon[:], blob[off:off+16])
					for _, g := range r.guids {
						if g == canon {
							m := psrp.AppendMessage(nil, psrp.Message{RPID: g})
							copy(blob[off:off+16], m[8:24])
						}
					}
				}
			}
			b = b[psrp.FragmentHeaderSize+n:]
		}
		resp = strings.Replace(resp, b64(p.Data), b64(fixed), 1)
	}
	return resp
}

const accessDeniedFault = `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>w:AccessDenied</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">Access is denied.</s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="5" Machine="replay"><f:Message>Access is denied. </f:Message></f:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>`

const signalResponse = `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Header><a:Action>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse</a:Action></s:Header><s:Body><rsp:SignalResponse/></s:Body></s:Envelope>`

// replayOptions points a psrp session at the replay server. The recordings
// were made against /wsman with the Microsoft.PowerShell configuration.
func replayOptions(t *testing.T, url string) Options {
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(url, "http://"))
	p, _ := strconv.Atoi(port)
	return Options{Servers: []string{host}, Port: p, PlainHTTP: true, Auth: AuthBasic, User: "vagrant", Password: secret.New("vagrant"), Mode: ModePSRP,
		EndpointPath: "/wsman", ConfigurationName: "Microsoft.PowerShell", OperationTimeout: 20 * time.Second,
		Logger: slog.New(slog.DiscardHandler)}
}

// withGUIDs makes newGUID return the recording's ids for the test.
func withGUIDs(t *testing.T, gs []psrp.GUID) {
	var mu sync.Mutex
	old := newGUID
	newGUID = func() psrp.GUID {
		mu.Lock()
		defer mu.Unlock()
		if len(gs) == 0 {
			return psrp.NewGUID()
		}
		g := gs[0]
		gs = gs[1:]
		return g
	}
	t.Cleanup(func() { newGUID = old })
}

func TestPSRPReplay(t *testing.T) {
	type call struct {
		c       Call
		count   int
		wantErr func(error) bool
	}
	cases := []struct {
		name  string
		ps    string // the PSVersion of the recorded APPLICATION_PRIVATE_DATA
		calls []call
	}{
		{"test_psrp_open_runspace.yml", "5.1.14393.2248", nil},
		// Two pipelines on one pool, each released with terminate.
		{"test_psrp_multiple_invocations.yml", "5.1.26236.5000", []call{
			{c: Call{Cmd: "Get-ExchangeServer"}, count: 1},
			{c: Call{Cmd: "Get-ExchangeServer"}, count: 1},
		}},
		// Two OperationTimeout faults while the command runs, then its
		// output and Completed.
		{"test_psrp_long_running_cmdlet.yml", "5.1.14393.2248", []call{{c: Call{Cmd: "Get-ExchangeServer"}, count: 1}}},
		// A pipeline that fails: its ExceptionAsErrorRecord becomes a
		// *RemoteError with the FullyQualifiedErrorId and category.
		{"test_psrp_error_failed.yml", "5.1.14393.2248", []call{{c: Call{Cmd: "Get-ExchangeServer"}, count: 1, wantErr: func(err error) bool {
			re, ok := errors.AsType[*RemoteError](err)
			return ok && re.FQID == "Microsoft.PowerShell.Commands.WriteErrorException" && re.Category == "NotSpecified" &&
				re.Type == "Microsoft.PowerShell.Commands.WriteErrorException" && re.Msg == "error" && Classify(err) == ClassRemote
		}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newReplay(t, tc.name)
			srv := httptest.NewServer(r)
			defer srv.Close()
			withGUIDs(t, r.guids)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := Open(ctx, replayOptions(t, srv.URL), "127.0.0.1")
			if err != nil {
				t.Fatalf("Open: %v (server: %v)", err, r.errs)
			}
			if s.Info().PS != tc.ps {
				t.Errorf("PS version = %q, want the recorded %s", s.Info().PS, tc.ps)
			}
			for i, c := range tc.calls {
				res, err := s.Do(ctx, c.c, nil)
				switch {
				case c.wantErr == nil && err != nil:
					t.Errorf("call %d: %v", i, err)
				case c.wantErr != nil && !c.wantErr(err):
					t.Errorf("call %d: err = %v (%T)", i, err, err)
				}
				if res.Count != c.count {
					t.Errorf("call %d: %d objects, recorded %d", i, res.Count, c.count)
				}
			}
			if err := s.Close(ctx); err != nil {
				t.Errorf("Close: %v", err)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			for _, e := range r.errs {
				t.Error(e)
			}
			if r.next != len(r.ex) {
				t.Errorf("replayed %d of %d recorded exchanges", r.next, len(r.ex))
			}
		})
	}
}

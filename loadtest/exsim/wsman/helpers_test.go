package wsman_test

import (
	"crypto/tls"
	"encoding/xml"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/masterzen/winrm"
	"github.com/masterzen/winrm/soap"

	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
)

const (
	testUser = "exsim-svc"
	testPass = "Pa55w0rd!"
)

// fixture is a wsman.Server with a testRunner behind a loopback httptest
// server. Cleanup closes both and checks no server goroutine survived.
type fixture struct {
	srv    *wsman.Server
	ts     *httptest.Server
	runner *testRunner
	host   string
	port   int
	https  bool
	caPEM  []byte
}

type fixtureConfig struct {
	opts    wsman.Options
	tls     bool
	wrap    func(http.Handler) http.Handler
	noLeaks bool // skip the goroutine check (the test checks itself)
}

func newFixture(t testing.TB, cfg fixtureConfig) *fixture {
	t.Helper()
	f := &fixture{runner: newTestRunner()}
	if cfg.opts.Users == nil {
		cfg.opts.Users = map[string]string{testUser: testPass}
	}
	f.srv = wsman.NewServer(cfg.opts, f.runner)
	var h http.Handler = f.srv
	if cfg.wrap != nil {
		h = cfg.wrap(h)
	}
	f.ts = httptest.NewUnstartedServer(h)
	// Handshakes refused by a client that does not trust the certificate
	// are expected; keep them out of the test output.
	f.ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	if cfg.tls {
		cert, caPEM, err := wsman.GenerateCert([]string{"127.0.0.1", "localhost"})
		if err != nil {
			t.Fatalf("GenerateCert() error = %v", err)
		}
		f.ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		f.ts.StartTLS()
		f.https, f.caPEM = true, caPEM
	} else {
		f.ts.Start()
	}
	host, port, err := net.SplitHostPort(f.ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	f.host = host
	f.port, _ = strconv.Atoi(port)
	t.Cleanup(func() {
		f.srv.Close()
		f.ts.Close()
		if !cfg.noLeaks {
			checkNoServerGoroutines(t)
		}
	})
	return f
}

func (f *fixture) url() string {
	return f.ts.URL + "/wsman"
}

// client returns a masterzen client with its stock transport.
func (f *fixture) client(t testing.TB, user, pass string, params *winrm.Parameters) *winrm.Client {
	t.Helper()
	if params == nil {
		params = winrm.NewParameters("PT5S", "en-US", 153600)
	}
	ep := winrm.NewEndpoint(f.host, f.port, f.https, false, f.caPEM, nil, nil, 10*time.Second)
	c, err := winrm.NewClientWithParameters(ep, user, pass, params)
	if err != nil {
		t.Fatalf("NewClientWithParameters() error = %v", err)
	}
	return c
}

// post sends a raw request body with Basic credentials.
func (f *fixture) post(t testing.TB, body string) (int, http.Header, string) {
	t.Helper()
	return f.postAs(t, testUser, testPass, body)
}

func (f *fixture) postAs(t testing.TB, user, pass, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.url(), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/soap+xml;charset=UTF-8")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	hc := &http.Client{Timeout: 15 * time.Second, Transport: f.ts.Client().Transport}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", f.url(), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return resp.StatusCode, resp.Header, string(data)
}

// params are the masterzen parameters the raw helpers build requests with.
func params(timeout string, envelope int) *winrm.Parameters {
	return winrm.NewParameters(timeout, "en-US", envelope)
}

func msg(m *soap.SoapMessage) string {
	defer m.Free()
	return m.String()
}

// createShell opens a shell with the client's own Create request.
func (f *fixture) createShell(t testing.TB) string {
	t.Helper()
	status, _, body := f.post(t, msg(winrm.NewOpenShellRequest(f.url(), params("PT5S", 153600))))
	if status != http.StatusOK {
		t.Fatalf("Create: status %d, body %s", status, body)
	}
	id, err := winrm.ParseOpenShellResponse(body)
	if err != nil || id == "" {
		t.Fatalf("ParseOpenShellResponse() = %q, %v; body %s", id, err, body)
	}
	return id
}

// execute starts a command with the client's own Command request.
func (f *fixture) execute(t testing.TB, shellID, command string, args ...string) string {
	t.Helper()
	status, _, body := f.post(t, msg(winrm.NewExecuteCommandRequest(f.url(), shellID, command, args, params("PT5S", 153600))))
	if status != http.StatusOK {
		t.Fatalf("Command %s: status %d, body %s", command, status, body)
	}
	id, err := winrm.ParseExecuteCommandResponse(body)
	if err != nil {
		t.Fatalf("ParseExecuteCommandResponse() error = %v", err)
	}
	return id
}

func (f *fixture) receive(t testing.TB, shellID, commandID, timeout string) (int, string) {
	t.Helper()
	status, _, body := f.post(t, msg(winrm.NewGetOutputRequest(f.url(), shellID, commandID, "stdout stderr", params(timeout, 153600))))
	return status, body
}

// faultOf extracts the WSManFault code and message of a fault body; ok is
// false when the body is not a fault.
func faultOf(body string) (code uint64, message string, ok bool) {
	var env struct {
		Body struct {
			Fault *struct {
				Reason string `xml:"Reason>Text"`
				Detail struct {
					WSManFault struct {
						Code    string `xml:"Code,attr"`
						Message string `xml:",innerxml"`
					} `xml:"WSManFault"`
				} `xml:"Detail"`
			} `xml:"Fault"`
		} `xml:"Body"`
	}
	if err := xml.Unmarshal([]byte(body), &env); err != nil || env.Body.Fault == nil {
		return 0, "", false
	}
	code, err := strconv.ParseUint(env.Body.Fault.Detail.WSManFault.Code, 10, 32)
	if err != nil {
		return 0, "", false
	}
	return code, env.Body.Fault.Reason + " | " + env.Body.Fault.Detail.WSManFault.Message, true
}

func wantFault(t testing.TB, status int, body string, want uint64) string {
	t.Helper()
	if status != http.StatusInternalServerError {
		t.Errorf("status = %d, want 500; body %s", status, body)
	}
	code, message, ok := faultOf(body)
	if !ok {
		t.Fatalf("body is not a fault: %s", body)
	}
	if code != want {
		t.Errorf("fault code = %d, want %d; message %q", code, want, message)
	}
	return message
}

// eventually polls cond until it holds or 5s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkNoServerGoroutines fails when a goroutine of the server (or of the
// test Runner, which the server owns while it runs) is still alive.
func checkNoServerGoroutines(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		leaked := serverGoroutines()
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d server goroutines survive Close:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func serverGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	stacks := strings.Split(string(buf), "\n\n")
	var leaked []string
	for _, s := range stacks[1:] { // the first is this goroutine
		if strings.Contains(s, "loadtest/exsim/wsman.") || strings.Contains(s, "wsman_test.(*testRunner)") {
			leaked = append(leaked, s)
		}
	}
	return leaked
}

// drain copies r into a buffer on its own goroutine; wait returns it.
type drained struct {
	wg  sync.WaitGroup
	buf strings.Builder
	err error
}

func drain(r io.Reader) *drained {
	d := &drained{}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		_, d.err = io.Copy(&d.buf, r)
	}()
	return d
}

func (d *drained) wait(t testing.TB) string {
	t.Helper()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("output not drained within 10s")
	}
	return d.buf.String()
}

package runspace

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/easconnector/easconnector/internal/secret"
	"github.com/masterzen/winrm"
	"github.com/masterzen/winrm/soap"
)

// Fault envelopes as Windows sends them (reference/winrm.md §2.6).
func faultEnvelope(code, subcode, reason, wsmanCode, machine, message string) string {
	return `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xml:lang="en-US">` +
		`<s:Header><a:Action>http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</a:Action><a:MessageID>uuid:1</a:MessageID></s:Header>` +
		`<s:Body><s:Fault><s:Code><s:Value>` + code + `</s:Value><s:Subcode><s:Value>` + subcode + `</s:Value></s:Subcode></s:Code>` +
		`<s:Reason><s:Text xml:lang="en-US">` + reason + `</s:Text></s:Reason>` +
		`<s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="` + wsmanCode + `" Machine="` + machine + `">` +
		`<f:Message>` + message + `</f:Message></f:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>`
}

const (
	textTimeout      = "The WS-Management service cannot complete the operation within the time specified in OperationTimeout."
	textShellMissing = "The request for the Windows Remote Shell with ShellId 9A1F failed because the shell was not found on the server. Possible causes are: the specified ShellId is incorrect or the shell no longer exists on the server. Provide the correct ShellId or create a new shell and retry the operation."
	textMaxShells    = "The WS-Management service cannot process the request. The maximum number of concurrent shells for this user has been exceeded. Close existing shells or raise the quota for this user."
	textMaxShellsMsg = "The WS-Management service cannot process the request. This user is allowed a maximum number of 30 concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user."
	textMaxOps       = "The WS-Management service cannot process the request. This user is allowed a maximum number of 1500 concurrent operations, which has been exceeded. Close existing operations for this user, or raise the quota for this user."
	textExMaxShells  = "The WS-Management service cannot process the request. This user is allowed a maximum of 18 concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user."
)

func TestParseFault(t *testing.T) {
	tooLong := faultEnvelope("s:Receiver", "w:InternalError", "", "2147942606", "CAS1",
		`<f:ProviderFault provider="Shell cmd plugin" path="%systemroot%\system32\winrscmd.dll">The filename or extension is too long. </f:ProviderFault>`)
	tests := []struct {
		name        string
		body        string
		code        uint64
		subcode     string
		machine     string
		reason      string // substring
		throttle    bool
		broken      bool
		class       string
		opTimeoutOK bool // Error() may contain "OperationTimeout"
	}{
		{"receive timeout", faultEnvelope("s:Receiver", "w:TimedOut", textTimeout, "2150858793", "CAS1", textTimeout),
			FaultOperationTimeout, "w:TimedOut", "CAS1", "within the time specified", false, false, ClassTimeout, true},
		{"shell not found", faultEnvelope("s:Sender", "w:InvalidSelectors", textShellMissing, "2150858843", "CAS1", textShellMissing),
			FaultInvalidSelectors, "w:InvalidSelectors", "CAS1", "shell was not found", false, true, ClassFault, false},
		{"max shells per user", faultEnvelope("s:Sender", "w:QuotaLimit", textMaxShells, "2150859173", "CAS2", textMaxShellsMsg),
			FaultMaxShells, "w:QuotaLimit", "CAS2", "maximum number of 30 concurrent shells", true, false, ClassThrottle, false},
		{"max operations", faultEnvelope("s:Receiver", "w:InternalError", textMaxOps, "2150859174", "CAS1", textMaxOps),
			FaultMaxOperations, "w:InternalError", "CAS1", "1500 concurrent operations", true, false, ClassThrottle, false},
		{"exchange concurrency text without code", faultEnvelope("s:Sender", "w:InternalError", textExMaxShells, "0", "", ""),
			0, "w:InternalError", "", "maximum of 18 concurrent shells", true, false, ClassThrottle, false},
		{"command line too long (nested provider fault)", tooLong,
			2147942606, "w:InternalError", "CAS1", "The filename or extension is too long.", false, false, ClassFault, false},
		{"hex code", faultEnvelope("s:Sender", "w:InvalidSelectors", "gone", "0x8033805B", "H", "gone"),
			FaultInvalidSelectors, "w:InvalidSelectors", "H", "gone", false, true, ClassFault, false},
		{"other fault mentioning OperationTimeout", faultEnvelope("s:Sender", "w:InvalidHeader", "bad OperationTimeout header", "2150858881", "H", ""),
			2150858881, "w:InvalidHeader", "H", "Operation Timeout", false, false, ClassFault, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fe := parseFault([]byte(tt.body))
			if fe == nil {
				t.Fatalf("parseFault() = nil")
			}
			fe.HTTPStatus = 500
			if fe.Code != tt.code || fe.Subcode != tt.subcode || fe.Machine != tt.machine {
				t.Errorf("parseFault() = code %d subcode %q machine %q, want %d %q %q", fe.Code, fe.Subcode, fe.Machine, tt.code, tt.subcode, tt.machine)
			}
			if !strings.Contains(fe.Error(), tt.reason) {
				t.Errorf("Error() = %q, want it to contain %q", fe.Error(), tt.reason)
			}
			if got := errors.Is(fe, ErrThrottled); got != tt.throttle {
				t.Errorf("errors.Is(ErrThrottled) = %v, want %v", got, tt.throttle)
			}
			if got := errors.Is(fe, ErrSessionBroken); got != tt.broken {
				t.Errorf("errors.Is(ErrSessionBroken) = %v, want %v", got, tt.broken)
			}
			if got := Classify(fmt.Errorf("wrapped: %w", fe)); got != tt.class {
				t.Errorf("Classify() = %q, want %q", got, tt.class)
			}
			if got := strings.Contains(fe.Error(), "OperationTimeout"); got != tt.opTimeoutOK {
				t.Errorf("Error() contains OperationTimeout = %v, want %v: %s", got, tt.opTimeoutOK, fe.Error())
			}
		})
	}
	for _, body := range []string{"", "not xml", "<a>", `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body/></s:Envelope>`} {
		if fe := parseFault([]byte(body)); fe != nil {
			t.Errorf("parseFault(%q) = %+v, want nil", body, fe)
		}
	}
}

func TestSoapAction(t *testing.T) {
	p := winrm.NewParameters("PT20S", "en-US", envelopeSize)
	u := "http://h:5985/wsman"
	tests := []struct {
		msg  *soap.SoapMessage
		want string
	}{
		{winrm.NewOpenShellRequest(u, p), "Create"},
		{winrm.NewExecuteCommandRequest(u, "S", "powershell.exe", []string{"-a"}, p), "Command"},
		{winrm.NewSendInputRequest(u, "S", "C", []byte("x"), false, p), "Send"},
		{winrm.NewGetOutputRequest(u, "S", "C", "stdout stderr", p), "Receive"},
		{winrm.NewSignalRequest(u, "S", "C", p), "Signal"},
		{winrm.NewDeleteShellRequest(u, "S", p), "Delete"},
	}
	for _, tt := range tests {
		if got := soapAction(tt.msg.String()); got != tt.want {
			t.Errorf("soapAction() = %q, want %q", got, tt.want)
		}
	}
	if got := soapAction("<x/>"); got != "unknown" {
		t.Errorf("soapAction(<x/>) = %q, want unknown", got)
	}
}

const (
	createOK   = `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Body><x:ResourceCreated xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer"><w:SelectorSet><w:Selector Name="ShellId">9A1F-22</w:Selector></w:SelectorSet></x:ResourceCreated></s:Body></s:Envelope>`
	createNoID = `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><rsp:Shell xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><rsp:ShellId>9A1F</rsp:ShellId></rsp:Shell></s:Body></s:Envelope>`
	okEnvelope = `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body/></s:Envelope>`
	soapCT     = "application/soap+xml;charset=UTF-8"
)

// testFactory returns a transport factory for a test server URL.
func testFactory(t *testing.T, rawURL string, mutate func(*Options)) (*transportFactory, string) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(u.Host)
	p, _ := strconv.Atoi(port)
	o := Options{Servers: []string{host}, Port: p, User: "svc", Password: secret.New("pw"), PlainHTTP: u.Scheme == "http", Auth: AuthBasic,
		OperationTimeout: time.Second}
	if mutate != nil {
		mutate(&o)
	}
	o, err = o.resolve()
	if err != nil {
		t.Fatal(err)
	}
	f, err := newTransportFactory(&o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	return f, host
}

func TestTransportPost(t *testing.T) {
	type reply struct {
		status int
		ct     string
		body   string
	}
	p := winrm.NewParameters("PT1S", "en-US", envelopeSize)
	create := func(u string) *soap.SoapMessage { return winrm.NewOpenShellRequest(u, p) }
	receive := func(u string) *soap.SoapMessage { return winrm.NewGetOutputRequest(u, "S", "C", "stdout stderr", p) }
	tests := []struct {
		name  string
		reply reply
		msg   func(string) *soap.SoapMessage
		check func(t *testing.T, resp string, err error)
	}{
		{"create ok", reply{200, soapCT, createOK}, create, func(t *testing.T, resp string, err error) {
			if err != nil || !strings.Contains(resp, "9A1F-22") {
				t.Fatalf("Post() = %q, %v", resp, err)
			}
		}},
		{"create without ShellId selector", reply{200, soapCT, createNoID}, create, func(t *testing.T, _ string, err error) {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("Post() error = %v, want ErrProtocol", err)
			}
		}},
		{"create quota fault", reply{500, soapCT, faultEnvelope("s:Sender", "w:QuotaLimit", textMaxShells, "2150859173", "CAS1", textMaxShellsMsg)}, create,
			func(t *testing.T, _ string, err error) {
				var fe *FaultError
				if !errors.As(err, &fe) || fe.HTTPStatus != 500 || fe.Action != "Create" || !errors.Is(err, ErrThrottled) {
					t.Fatalf("Post() error = %#v, want a throttling *FaultError", err)
				}
			}},
		{"receive timeout fault stays retryable", reply{500, soapCT, faultEnvelope("s:Receiver", "w:TimedOut", textTimeout, "2150858793", "CAS1", textTimeout)}, receive,
			func(t *testing.T, _ string, err error) {
				if err == nil || !strings.Contains(err.Error(), "OperationTimeout") {
					t.Fatalf("Post() error = %v, want text with OperationTimeout", err)
				}
			}},
		{"401 without soap", reply{401, "", ""}, create, func(t *testing.T, _ string, err error) {
			var se *StatusError
			if !errors.As(err, &se) || se.StatusCode != 401 || !errors.Is(err, ErrAuth) || Classify(err) != ClassAuth {
				t.Fatalf("Post() error = %v, want 401 StatusError matching ErrAuth", err)
			}
		}},
		{"413", reply{413, "", ""}, create, func(t *testing.T, _ string, err error) {
			var se *StatusError
			if !errors.As(err, &se) || se.StatusCode != 413 || errors.Is(err, ErrAuth) {
				t.Fatalf("Post() error = %v, want 413 StatusError", err)
			}
		}},
		{"empty 200 body", reply{200, soapCT, ""}, receive, func(t *testing.T, _ string, err error) {
			var te *TransportError
			if !errors.As(err, &te) || !strings.Contains(err.Error(), "empty") {
				t.Fatalf("Post() error = %v, want empty-body TransportError", err)
			}
		}},
		{"not xml", reply{200, soapCT, "not xml"}, receive, func(t *testing.T, _ string, err error) {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("Post() error = %v, want ErrProtocol", err)
			}
		}},
		{"proxy html page", reply{200, "text/html", "<html>proxy</html>"}, receive, func(t *testing.T, _ string, err error) {
			var se *StatusError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), "proxy") {
				t.Fatalf("Post() error = %v, want StatusError quoting the body", err)
			}
		}},
		{"500 soap without fault", reply{500, soapCT, okEnvelope}, receive, func(t *testing.T, _ string, err error) {
			var se *StatusError
			if !errors.As(err, &se) || se.StatusCode != 500 {
				t.Fatalf("Post() error = %v, want 500 StatusError", err)
			}
		}},
		{"200 ok", reply{200, soapCT, okEnvelope}, receive, func(t *testing.T, resp string, err error) {
			if err != nil || resp != okEnvelope {
				t.Fatalf("Post() = %q, %v", resp, err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				if u, pw, ok := r.BasicAuth(); !ok || u != "svc" || pw != "pw" {
					t.Errorf("request without the Basic credentials")
				}
				if tt.reply.ct != "" {
					w.Header().Set("Content-Type", tt.reply.ct)
				}
				w.WriteHeader(tt.reply.status)
				_, _ = io.WriteString(w, tt.reply.body)
			}))
			defer srv.Close()
			f, host := testFactory(t, srv.URL, nil)
			tr := f.newTransport(host)
			defer tr.abort()
			resp, err := tr.Post(nil, tt.msg(tr.url))
			tt.check(t, resp, err)
		})
	}
}

func TestTransportRewritesConsoleModeStdin(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Store(string(b))
		w.Header().Set("Content-Type", soapCT)
		_, _ = io.WriteString(w, okEnvelope)
	}))
	defer srv.Close()
	f, host := testFactory(t, srv.URL, nil)
	tr := f.newTransport(host)
	defer tr.abort()
	p := winrm.NewParameters("PT1S", "en-US", envelopeSize)
	msg := winrm.NewExecuteCommandRequest(tr.url, "S", PowerShellExe, CommandArgs(), p)
	if !strings.Contains(msg.String(), consoleModeTrue) {
		t.Fatalf("the library no longer sends %s; revisit the rewrite", consoleModeTrue)
	}
	if _, err := tr.Post(nil, msg); err != nil {
		t.Fatal(err)
	}
	body := got.Load().(string)
	if !strings.Contains(body, consoleModeFalse) || strings.Contains(body, consoleModeTrue) {
		t.Errorf("Command request options = %s, want WINRS_CONSOLEMODE_STDIN FALSE", body)
	}
}

// TestTransportKeepsConnections checks that N concurrent sessions reuse
// their connections instead of reconnecting (Go's default keeps 2 idle
// connections per host).
func TestTransportKeepsConnections(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(2 * time.Millisecond)
		w.Header().Set("Content-Type", soapCT)
		_, _ = io.WriteString(w, okEnvelope)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	const sessions, rounds = 8, 10
	f, host := testFactory(t, srv.URL, func(o *Options) { o.Parallel = true; o.Size = sessions })
	p := winrm.NewParameters("PT1S", "en-US", envelopeSize)
	trs := make([]*transport, sessions)
	for i := range trs {
		trs[i] = f.newTransport(host)
		defer trs[i].abort()
	}
	for range rounds {
		var wg sync.WaitGroup
		for _, tr := range trs {
			wg.Go(func() {
				if _, err := tr.Post(nil, winrm.NewGetOutputRequest(tr.url, "S", "C", "stdout stderr", p)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	if n := conns.Load(); n > sessions+2 {
		t.Errorf("%d sessions × %d rounds opened %d connections, want at most %d", sessions, rounds, n, sessions+2)
	}
}

func TestTransportAbortEndsRequestInFlight(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	f, host := testFactory(t, srv.URL, nil)
	tr := f.newTransport(host)
	p := winrm.NewParameters("PT1S", "en-US", envelopeSize)
	errc := make(chan error, 1)
	go func() {
		_, err := tr.Post(nil, winrm.NewGetOutputRequest(tr.url, "S", "C", "stdout stderr", p))
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	tr.abort()
	select {
	case err := <-errc:
		var ue *url.Error
		if err == nil || errors.As(err, &ue) {
			t.Fatalf("Post() error = %#v, want a TransportError that is no *url.Error", err)
		}
		if strings.Contains(err.Error(), "OperationTimeout") {
			t.Fatalf("Post() error = %v would be retried by the library", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Post() still blocked after abort")
	}
}

// timeoutErr is a net.Error that timed out.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestTransportErrorHidesURLTimeout(t *testing.T) {
	err := transportError("Receive", "http://h/wsman", &url.Error{Op: "Post", URL: "http://h/wsman", Err: timeoutErr{}})
	var ue *url.Error
	if errors.As(err, &ue) {
		t.Fatalf("transportError() exposes *url.Error; masterzen/winrm would retry it forever")
	}
	var te *TransportError
	if !errors.As(err, &te) || !te.Timeout || Classify(err) != ClassTimeout {
		t.Fatalf("transportError() = %#v, want a timeout TransportError", err)
	}
}

func TestTransportTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", soapCT)
		_, _ = io.WriteString(w, okEnvelope)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // expected handshake failures
	srv.StartTLS()
	defer srv.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	p := winrm.NewParameters("PT1S", "en-US", envelopeSize)
	tests := []struct {
		name    string
		mutate  func(*Options)
		wantErr string // Classify of the error, "" for success
	}{
		{"system roots reject the test CA", nil, ClassTLS},
		{"CACert", func(o *Options) { o.CACert = caPEM }, ""},
		{"CACert with wrong server name", func(o *Options) { o.CACert = caPEM; o.TLSServerName = "cas9.contoso.com" }, ClassTLS},
		{"CACert with the certificate's name", func(o *Options) { o.CACert = caPEM; o.TLSServerName = "example.com" }, ""},
		{"InsecureSkipVerify", func(o *Options) { o.InsecureSkipVerify = true }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, host := testFactory(t, srv.URL, tt.mutate)
			tr := f.newTransport(host)
			defer tr.abort()
			_, err := tr.Post(nil, winrm.NewGetOutputRequest(tr.url, "S", "C", "stdout stderr", p))
			if got := Classify(err); got != tt.wantErr {
				t.Fatalf("Post() error = %v (class %q), want class %q", err, got, tt.wantErr)
			}
		})
	}
	if _, err := x509.ParseCertificate(srv.Certificate().Raw); err != nil {
		t.Fatal(err)
	}
}

func TestKerberosConfigErrors(t *testing.T) {
	o := Options{Servers: []string{"127.0.0.1"}, User: "svc@CONTOSO.COM", Password: secret.New("pw"), Auth: AuthKerberos,
		KrbConfig: t.TempDir() + "/missing.conf"}
	o, err := o.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if o.Realm != "CONTOSO.COM" {
		t.Errorf("Realm = %q, want the realm of User", o.Realm)
	}
	if _, err := newTransportFactory(&o); err == nil || !strings.Contains(err.Error(), "KrbConfig") {
		t.Fatalf("newTransportFactory() error = %v, want one naming KrbConfig", err)
	}
	_, err = Open(context.Background(), Options{Servers: []string{"127.0.0.1"}, User: "svc", Password: secret.New("pw"), Auth: AuthKerberos,
		KrbConfig: "/nonexistent"}, "127.0.0.1")
	if err == nil || !strings.Contains(err.Error(), "Realm") {
		t.Fatalf("Open() error = %v, want one naming Realm", err)
	}
}

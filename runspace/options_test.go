package runspace

import (
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/internal/secret"
)

func TestOptionsResolve(t *testing.T) {
	base := func() Options {
		return Options{Servers: []string{"cas1.contoso.com"}, User: "svc", Password: secret.New("pw"), Parallel: true, Mode: ModeRemoting}
	}
	tests := []struct {
		name    string
		mutate  func(*Options)
		wantErr string
	}{
		{"no servers", func(o *Options) { o.Servers = nil }, "Servers: at least one"},
		{"url as server", func(o *Options) { o.Servers = []string{"http://cas1/wsman"} }, "Servers[0]"},
		{"server with space", func(o *Options) { o.Servers = []string{"cas1", "cas 2"} }, "Servers[1]"},
		{"port", func(o *Options) { o.Port = 70000 }, "Port"},
		{"ca with plain http", func(o *Options) { o.PlainHTTP, o.AllowUnencrypted, o.CACert = true, true, []byte("x") }, "CACert: set but PlainHTTP is on"},
		{"ca not pem", func(o *Options) { o.CACert = []byte("x") }, "CACert: no PEM"},
		{"plain http to a remote literal", func(o *Options) { o.PlainHTTP, o.Servers = true, []string{"127.0.0.1", "10.0.0.5"} },
			"Servers[1]: plain HTTP refused: 10.0.0.5 is not a loopback address"},
		{"plain http to loopback literals", func(o *Options) { o.PlainHTTP, o.Servers = true, []string{"127.0.0.1", "::1"} }, ""},
		// Names are resolved by the dialer, at every connection.
		{"plain http to a name", func(o *Options) { o.PlainHTTP = true }, ""},
		{"plain http allowed", func(o *Options) { o.PlainHTTP, o.AllowUnencrypted, o.Servers = true, true, []string{"10.0.0.5"} }, ""},
		{"allow unencrypted without plain http", func(o *Options) { o.AllowUnencrypted = true }, "AllowUnencrypted: set, but PlainHTTP is off"},
		{"skip verify with plain http", func(o *Options) { o.PlainHTTP, o.InsecureSkipVerify = true, true }, "InsecureSkipVerify"},
		{"skip verify with second hop", func(o *Options) { o.InsecureSkipVerify, o.SecondHopCredential = true, true },
			"SecondHopCredential: refused with InsecureSkipVerify"},
		{"skip verify with second hop in snapin mode", func(o *Options) {
			o.InsecureSkipVerify, o.SecondHopCredential, o.Mode = true, true, ModeSnapin
		}, ""},
		{"second hop over plain http", func(o *Options) { o.PlainHTTP, o.AllowUnencrypted, o.SecondHopCredential = true, true, true },
			"SecondHopCredential: needs HTTPS"},
		{"auth", func(o *Options) { o.Auth = "digest" }, "Auth"},
		{"user", func(o *Options) { o.User = "" }, "User"},
		{"password", func(o *Options) { o.Password = secret.New("") }, "Password"},
		{"kerberos config", func(o *Options) { o.Auth = "kerberos" }, "KrbConfig"},
		{"kerberos realm", func(o *Options) { o.Auth = "kerberos"; o.KrbConfig = "/etc/krb5.conf" }, "Realm"},
		{"mode", func(o *Options) { o.Mode = "pssession" }, "Mode"},
		{"psrp", func(o *Options) { o.Mode = ModePSRP }, ""},
		{"psrp endpoint path", func(o *Options) { o.Mode = ModePSRP; o.EndpointPath = "PowerShell?x=1" }, "EndpointPath"},
		{"psrp configuration", func(o *Options) { o.Mode = ModePSRP; o.ConfigurationName = "Microsoft.Exchange/../x y" }, "ConfigurationName"},
		{"size at throttling limit", func(o *Options) { o.Size = 18 }, "Size: must be between 1 and 17"},
		{"size negative", func(o *Options) { o.Size = -1 }, "Size"},
		{"size with raised policy", func(o *Options) { o.Size = 24; o.PowerShellMaxConcurrency = 25 }, ""},
		{"policy too small", func(o *Options) { o.PowerShellMaxConcurrency = 1 }, "PowerShellMaxConcurrency"},
		{"max requests", func(o *Options) { o.MaxRequestsPerSession = -5 }, "MaxRequestsPerSession"},
		{"operation timeout", func(o *Options) { o.OperationTimeout = 10 * time.Millisecond }, "OperationTimeout"},
		{"request timeout", func(o *Options) { o.RequestTimeout = -time.Second }, "RequestTimeout"},
		{"ok", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base()
			if tt.mutate != nil {
				tt.mutate(&o)
			}
			_, err := o.resolve()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("resolve() error = %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("resolve() error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestOptionsDefaults(t *testing.T) {
	o, err := Options{Servers: []string{" CAS1 ", "cas1", "10.0.0.5", "fe80::1"}, User: "u", Password: secret.New("p")}.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Servers) != 3 || o.Servers[0] != "CAS1" {
		t.Errorf("Servers = %q, want trimmed and deduplicated", o.Servers)
	}
	if o.Size != 1 {
		t.Errorf("Size = %d without Parallel, want 1", o.Size)
	}
	// The zero value is safe and the product's default path: psrp to the
	// /PowerShell/ virtual directory over verified HTTPS on 443, NTLM
	// (Kerberos needs a krb5.conf, see DefaultAuthFor), never Basic.
	if o.Port != DefaultPSRPHTTPSPort || o.PlainHTTP || o.InsecureSkipVerify || o.Auth != AuthNTLM || o.Mode != ModePSRP ||
		o.EndpointPath != DefaultEndpointPath || o.ConfigurationName != DefaultConfigurationName ||
		o.RequestTimeout != DefaultRequestTimeout || o.ConnectTimeout != DefaultConnectTimeout ||
		o.OperationTimeout != DefaultOperationTimeout || o.MaxSessionAge != DefaultMaxSessionAge ||
		o.MaxRequestsPerSession != DefaultMaxRequestsPerSession || o.Logger == nil {
		t.Errorf("defaults not applied: %+v", o)
	}
	if o.wsmanTimeout() != "PT20.000S" {
		t.Errorf("wsmanTimeout() = %q", o.wsmanTimeout())
	}
	if got := connectionURI("fe80::1"); got != "http://[fe80::1]/PowerShell/" {
		t.Errorf("connectionURI() = %q", got)
	}
	o, _ = Options{Servers: []string{"cas1"}, User: "u", Password: secret.New("p"), PlainHTTP: true, Parallel: true}.resolve()
	if o.Port != DefaultPSRPHTTPPort || o.Size != DefaultSize {
		t.Errorf("Port = %d, Size = %d, want %d and %d", o.Port, o.Size, DefaultPSRPHTTPPort, DefaultSize)
	}
	// The WinRS modes: WinRM's own ports.
	o, _ = Options{Servers: []string{"cas1"}, User: "u", Password: secret.New("p"), Mode: ModeRemoting}.resolve()
	if o.Port != DefaultHTTPSPort || o.urlPath() != "/wsman" {
		t.Errorf("remoting: Port = %d, path %q, want %d and /wsman", o.Port, o.urlPath(), DefaultHTTPSPort)
	}
	o, _ = Options{Servers: []string{"cas1"}, User: "u", Password: secret.New("p"), PlainHTTP: true, Parallel: true, Mode: ModeSnapin}.resolve()
	if o.Port != DefaultHTTPPort || o.Size != DefaultSize {
		t.Errorf("Port = %d, Size = %d, want %d and %d", o.Port, o.Size, DefaultHTTPPort, DefaultSize)
	}
	// psrp: Exchange's /PowerShell/ virtual directory in IIS, 443.
	o, err = Options{Servers: []string{"cas1"}, User: "u", Password: secret.New("p"), Mode: ModePSRP}.resolve()
	if err != nil || o.Port != DefaultPSRPHTTPSPort || o.EndpointPath != "/PowerShell/" || o.ConfigurationName != "Microsoft.Exchange" || o.urlPath() != "/PowerShell/" {
		t.Errorf("psrp defaults: port %d, path %q, configuration %q, %v", o.Port, o.EndpointPath, o.ConfigurationName, err)
	}
}

func TestDefaultAuthFor(t *testing.T) {
	for mode, want := range map[string]string{"": AuthKerberos, ModePSRP: AuthKerberos, ModeRemoting: AuthNTLM, ModeSnapin: AuthNTLM} {
		if got := DefaultAuthFor(mode); got != want {
			t.Errorf("DefaultAuthFor(%q) = %q, want %q", mode, got, want)
		}
	}
}

func TestEndpointURL(t *testing.T) {
	f := func(o Options, server, wantURL, wantAuth string) {
		t.Helper()
		o.Servers, o.User, o.Password = []string{"cas1"}, "u", secret.New("p")
		url, auth, err := o.EndpointURL(server)
		if err != nil || url != wantURL || auth != wantAuth {
			t.Errorf("EndpointURL(%s) = %q, %q, %v; want %q, %q", server, url, auth, err, wantURL, wantAuth)
		}
	}
	f(Options{}, "cas1.contoso.com", "https://cas1.contoso.com:443/PowerShell/", AuthNTLM)
	f(Options{Auth: AuthBasic, EndpointPath: "/PowerShell-Proxy/"}, "cas1", "https://cas1:443/PowerShell-Proxy/", AuthBasic)
	f(Options{PlainHTTP: true, Port: 8080}, "::1", "http://[::1]:8080/PowerShell/", AuthNTLM)
	f(Options{Mode: ModeRemoting}, "cas1", "https://cas1:5986/wsman", AuthNTLM)
}

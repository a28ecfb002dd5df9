package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
	"github.com/easconnector/easconnector/loadtest/graphsim"
	"github.com/easconnector/easconnector/loadtest/kdc"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/pipeline"
)

// fleet is a simulated Exchange organization and Intune tenant that
// describe the same generated population, and a connector configuration
// for them.
type fleet struct {
	sim    *exsim.Sim
	graph  *graphsim.Server
	pop    *population.Population // exsim's copy: read only
	dir    string
	config string
	state  string
}

// fleetOptions shape a fleet and its configuration.
type fleetOptions struct {
	pop          population.Options
	profile      string // exsim latency profile ("" = zero)
	listeners    int
	maxNewBlocks int    // [guard] max_new_blocks (0: 100000, out of the way)
	listen       string // [server] listen ("" disables the server)
	shutdown     string // [sync] shutdown_timeout ("" = 10s)
	quick        string // [sync] quick_interval ("" = 1h)
	runspaces    int    // 0 = 4
	smtpPort     int    // [notify] to this loopback port (0: notifications off)
	// secrets replace the fleet's default credentials (zero fields keep
	// them); with smtpPort and secrets.smtp, notify uses STARTTLS and AUTH.
	secrets fleetSecrets
	// exchangeTLS serves Exchange over HTTPS (exsim's CA in ca_file) and
	// sends the second-hop credential (remoting mode only).
	exchangeTLS bool
	// mode is [exchange] mode ("": not written, the default psrp).
	mode string
	// kerberos makes exsim accept Kerberos tickets for kerberosSPN from
	// this KDC and the configuration log in as its user; auth is then not
	// written (psrp's default is kerberos). Without it, auth = "basic".
	kerberos *kdc.KDC
	// keytab logs in with the KDC's client keytab instead of the password.
	keytab    bool
	logLevel  string            // [log] level ("" = info)
	graphCert *x509.Certificate // graphsim also accepts assertions signed for it
}

// fleetSecrets are a fleet's credentials.
type fleetSecrets struct {
	exchange, graph, smtp, token, readToken string
}

func (s fleetSecrets) withDefaults() fleetSecrets {
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&s.exchange, exsim.DefaultPassword)
	def(&s.graph, "graph-secret-for-tests")
	def(&s.token, testToken)
	def(&s.readToken, testReadToken)
	return s
}

// startFleet starts the simulators on loopback and writes the
// configuration; everything is closed when the test ends.
func startFleet(t *testing.T, o fleetOptions) *fleet {
	t.Helper()
	if o.pop.Now.IsZero() {
		o.pop.Now = time.Now().UTC().Truncate(time.Minute)
	}
	if o.pop.Seed == 0 {
		o.pop.Seed = 3
	}
	if o.pop.AdminEntryRate == 0 {
		o.pop.AdminEntryRate = -1 // no administrator entries: every device ends as decided
	}
	if o.listeners == 0 {
		o.listeners = 1
	}
	if o.runspaces == 0 {
		o.runspaces = 4
	}
	sec := o.secrets.withDefaults()
	users := map[string]string{exsim.DefaultUser: sec.exchange}
	var kerb *wsman.Kerberos
	if o.kerberos != nil {
		var err error
		if kerb, err = wsman.NewKerberos(o.kerberos.ServiceKeytab, kerberosSPN); err != nil {
			t.Fatal(err)
		}
		// The ticket's principal is the account; Basic with this
		// password must not be what lets the connector in.
		users[o.kerberos.User] = "basic-is-not-used-" + o.kerberos.Password
		sec.exchange = o.kerberos.Password
	}
	sim, err := exsim.Start(exsim.Options{Population: population.Generate(o.pop), Listeners: o.listeners, Profile: o.profile, Quiet: true,
		Users: users, TLS: o.exchangeTLS, Kerberos: kerb})
	if err != nil {
		t.Fatalf("exsim.Start: %v", err)
	}
	t.Cleanup(sim.Close)
	st := sim.Org().Settings()
	st.DefaultAccessLevel = exchange.LevelQuarantine
	if err := sim.Org().SetOrg(st); err != nil {
		t.Fatal(err)
	}
	graph := graphsim.New(population.Generate(o.pop), graphsim.Options{ClientSecret: sec.graph, Certificate: o.graphCert})
	graphURL, err := graph.Start()
	if err != nil {
		t.Fatalf("graphsim.Start: %v", err)
	}
	t.Cleanup(graph.Close)

	f := &fleet{sim: sim, graph: graph, pop: sim.Population(), dir: t.TempDir()}
	f.state = filepath.Join(f.dir, "state")
	files := map[string]string{"exchange.pw": sec.exchange, "graph.secret": sec.graph, "api.token": sec.token, "api-read.token": sec.readToken,
		"exsim-ca.pem": string(sim.CAPEM())}
	if sec.smtp != "" {
		files["smtp.pw"] = sec.smtp
	}
	for name, v := range files {
		if err := os.WriteFile(filepath.Join(f.dir, name), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	orDefault := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	if o.maxNewBlocks == 0 {
		o.maxNewBlocks = 100_000
	}
	exchangeTLS := "https = false\nsecond_hop_credential = false"
	if o.exchangeTLS {
		exchangeTLS = "https = true\nca_file = \"exsim-ca.pem\"\nsecond_hop_credential = true"
	}
	if o.mode != "" {
		exchangeTLS += fmt.Sprintf("\nmode = %q", o.mode)
	}
	login := fmt.Sprintf("auth = \"basic\"\nuser = %q\npassword_file = \"exchange.pw\"", exsim.DefaultUser)
	if k := o.kerberos; k != nil {
		// No auth key: kerberos is psrp's default.
		login = fmt.Sprintf("user = %q\nrealm = %q\nkrb5_conf = %q\nspn = %q", k.User, k.Realm, k.Krb5Conf, kerberosSPN)
		if o.keytab {
			login += fmt.Sprintf("\nkeytab_file = %q", k.ClientKeytab)
		} else {
			login += "\npassword_file = \"exchange.pw\""
		}
	}
	doc := fmt.Sprintf(`[exchange]
servers = [%q]
port = %d
%s
%s
connect_timeout = "10s"
request_timeout = "30s"
enable_parallel_command_support = true
runspaces = %d

[log]
level = %q

[mdm]
source = "graph"
tenant_id = %q
client_id = %q
client_secret_file = "graph.secret"
authority_url = %q
graph_url = %q
included_groups = [%q]
excluded_groups = [%q]

[policy]
enabled = true
default_access_level = "quarantine"

[guard]
max_new_blocks = %d
max_new_blocks_ratio = 0.0

[sync]
state_dir = "state"
shutdown_timeout = %q
quick_interval = %q
quick_jitter = "0s"

[server]
listen = %q
token_file = "api.token"
read_token_file = "api-read.token"
`, sim.Hosts()[0], sim.Port(), exchangeTLS, login, o.runspaces, orDefault(o.logLevel, "info"), graphsim.DefaultTenantID, graphsim.DefaultClientID, graphURL, graphURL,
		f.pop.Included.ID, f.pop.Excluded.ID, o.maxNewBlocks, orDefault(o.shutdown, "10s"), orDefault(o.quick, "1h"), o.listen)
	switch {
	case o.smtpPort != 0 && sec.smtp != "":
		doc += fmt.Sprintf(`
[notify]
enabled = true
smtp_host = "127.0.0.1"
smtp_port = %d
security = "starttls"
user = "svc-mail@contoso.com"
password_file = "smtp.pw"
from = "mobile-access@contoso.com"
admin_recipients = ["eas-admins@contoso.com"]
`, o.smtpPort)
	case o.smtpPort != 0:
		doc += fmt.Sprintf(`
[notify]
enabled = true
smtp_host = "127.0.0.1"
smtp_port = %d
security = "none"
from = "mobile-access@contoso.com"
admin_recipients = ["eas-admins@contoso.com"]
`, o.smtpPort)
	}
	f.config = filepath.Join(f.dir, "easconnector.toml")
	if err := os.WriteFile(f.config, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// kerberosSPN is the service principal of every exsim listener in Kerberos
// fleets: the listeners answer on loopback addresses, which name no host
// a ticket could be for, so the configuration names the SPN (exchange.spn).
const kerberosSPN = "HTTP/cas01.easconnector.test"

// testToken and testReadToken are the admin and the read-only API tokens
// of fleet configurations.
const (
	testToken     = "test-token-0123456789abcdef"
	testReadToken = "test-read-token-fedcba9876543210"
)

// accessCounts counts exsim's devices by the access state Exchange would
// give them now.
func (f *fleet) accessCounts(t *testing.T) map[exchange.AccessState]int {
	t.Helper()
	// Get-MobileDevice shows the state stored at each phone's last
	// request: let every phone connect once, so the states are what
	// Exchange now decides.
	f.sim.Org().ContactAll()
	devs, _, err := f.sim.Org().Devices("", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[exchange.AccessState]int{}
	for _, d := range devs {
		out[d.DeviceAccessState]++
	}
	return out
}

// assertConverged checks that Exchange is in line with the policy: a dry
// run plans no write and Exchange gives every device the access decided
// (Allow → Allowed, Block → Blocked, Default → the org default,
// Quarantined).
func (f *fleet) assertConverged(t *testing.T) {
	t.Helper()
	code, out, errOut := runIn(t, t.Context(), "plan", "--full", "--json", "--config", f.config)
	var po planOutput
	decodeJSON(t, out, &po)
	if code != exitOK || po.HeldPlanID != "" || po.Report.Counts.Writes != 0 {
		t.Fatalf("plan = %d, %d writes, held plan %q; want nothing to change\n%s", code, po.Report.Counts.Writes, po.HeldPlanID, errOut)
	}
	got, c := f.accessCounts(t), po.Report.CountsByDecision
	want := map[exchange.AccessState]int{exchange.AccessAllowed: c[pipeline.Allow], exchange.AccessBlocked: c[pipeline.Block], exchange.AccessQuarantined: c[pipeline.Default]}
	for k, v := range want {
		if v == 0 {
			delete(want, k)
		}
	}
	if !maps.Equal(got, want) || c[pipeline.NoChange] != 0 {
		t.Errorf("Exchange access %v, decisions %v: want them equal", got, c)
	}
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// runIn runs a command in process with a deadline.
func runIn(t *testing.T, ctx context.Context, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var out, errOut lockedBuffer
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// decodeJSON decodes out into v or fails the test.
func decodeJSON(t *testing.T, out string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("output is not the expected JSON: %v\n%s", err, out)
	}
}

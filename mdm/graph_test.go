package mdm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/loadtest/graphsim"
	"github.com/easconnector/easconnector/loadtest/population"
)

const (
	tenant     = "11111111-2222-4333-8444-555555555555"
	client     = "66666666-7777-4888-9999-000000000000"
	testSecret = "s3cr3t~value"
)

// sim is a graphsim server and a Graph source pointed at it, whose waits
// are recorded instead of slept.
type sim struct {
	t     *testing.T
	srv   *graphsim.Server
	pop   *population.Population
	graph *Graph
	set   *metrics.Set

	mu    sync.Mutex
	waits []time.Duration
}

type simConfig struct {
	devices  int
	simOpts  graphsim.Options
	opts     GraphOptions // TenantID, ClientID, URLs and credential filled in unless set
	realWait bool
}

func newSim(t *testing.T, c simConfig) *sim {
	t.Helper()
	if c.devices == 0 {
		c.devices = 300
	}
	pop := population.Generate(population.Options{Seed: 3, Devices: c.devices, Now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)})
	c.simOpts.TenantID, c.simOpts.ClientID = tenant, client
	if c.simOpts.ClientSecret == "" {
		c.simOpts.ClientSecret = testSecret
	}
	srv := graphsim.New(pop, c.simOpts)
	base, err := srv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	o := c.opts
	o.TenantID, o.ClientID, o.AuthorityURL, o.GraphURL = tenant, client, base, base
	if o.ClientSecret.IsZero() && o.Certificate == nil {
		o.ClientSecret = secret.New(testSecret)
	}
	if o.BaseBackoff == 0 {
		o.BaseBackoff, o.MaxBackoff = time.Second, 4*time.Second
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	g, err := NewGraph(o)
	if err != nil {
		t.Fatal(err)
	}
	s := &sim{t: t, srv: srv, pop: pop, graph: g, set: o.Metrics}
	if !c.realWait {
		g.wait = func(ctx context.Context, d time.Duration) error {
			s.mu.Lock()
			s.waits = append(s.waits, d)
			s.mu.Unlock()
			return ctx.Err()
		}
	}
	return s
}

func (s *sim) snapshot(groups ...string) (*Snapshot, error) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return s.graph.Snapshot(ctx, groups)
}

func (s *sim) mustSnapshot(groups ...string) *Snapshot {
	s.t.Helper()
	snap, err := s.snapshot(groups...)
	if err != nil {
		s.t.Fatalf("Snapshot() error: %v", err)
	}
	return snap
}

func (s *sim) recordedWaits() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.waits...)
}

func (s *sim) metric(name string) string {
	var b bytes.Buffer
	s.set.WritePrometheus(&b)
	for line := range strings.Lines(b.String()) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok && k == name {
			return v
		}
	}
	return ""
}

// checkComplete compares a snapshot with the population it was read from.
func (s *sim) checkComplete(snap *Snapshot) {
	s.t.Helper()
	if got, want := len(snap.Records), len(s.pop.MDM); got != want || snap.NoEASID != 0 {
		s.t.Fatalf("Snapshot has %d records (%d without EAS id), want %d", got, snap.NoEASID, want)
	}
	for i, rec := range snap.Records {
		p := s.pop.MDM[i]
		want := Record{
			ID: p.ID, EASDeviceID: p.EASDeviceID, UserID: p.UserID, UserPrincipalName: p.UserPrincipalName, Email: p.Email,
			Compliance: Compliance(p.ComplianceState), EnrolledAt: p.EnrolledAt.UTC(), LastSyncAt: p.LastSyncAt.UTC(),
			Platform: p.OperatingSystem, OSVersion: p.OSVersion, Model: p.Model, EASActivated: true, ManagementAgent: "mdm",
		}
		if rec != want {
			s.t.Fatalf("record %d = %+v, want %+v", i, rec, want)
		}
	}
}

func TestGraphSnapshot(t *testing.T) {
	s := newSim(t, simConfig{devices: 1200, opts: GraphOptions{PageSize: 100}})
	inc, exc := s.pop.Included, s.pop.Excluded
	snap := s.mustSnapshot(inc.ID, exc.ID, strings.ToUpper(inc.ID)) // the duplicate is read once
	s.checkComplete(snap)
	devicePages := (len(s.pop.MDM) + 99) / 100
	// transitiveMembers lists each group's nested group too (dropped).
	memberPages := (len(inc.Members)+1+99)/100 + (len(exc.Members)+1+99)/100
	if snap.Pages != devicePages+memberPages || snap.Requests != snap.Pages {
		t.Errorf("Pages, Requests = %d, %d; want %d, %d", snap.Pages, snap.Requests, devicePages+memberPages, devicePages+memberPages)
	}
	if len(snap.Groups) != 2 {
		t.Fatalf("Groups has %d entries, want 2", len(snap.Groups))
	}
	for _, g := range []population.Group{inc, exc} {
		ms := snap.Groups[g.ID]
		if len(ms) != len(g.Members) {
			t.Fatalf("group %s: %d members, want %d", g.Name, len(ms), len(g.Members))
		}
		for i, m := range ms {
			mb := s.pop.Mailboxes[g.Members[i]]
			if m != (Member{ID: mb.EntraID, UserPrincipalName: mb.UPN, Mail: mb.PrimarySmtp}) {
				t.Fatalf("group %s member %d = %+v, want %s", g.Name, i, m, mb.UPN)
			}
		}
	}
	if snap.TakenAt.IsZero() || snap.Total() != len(s.pop.MDM) {
		t.Errorf("TakenAt %v, Total() %d", snap.TakenAt, snap.Total())
	}
	if got := s.metric(`easconnector_mdm_requests_total{endpoint="managedDevices",status="200"}`); got != itoa(devicePages) {
		t.Errorf("requests metric = %q, want %d", got, devicePages)
	}
	if got := s.metric("easconnector_mdm_records"); got != itoa(len(s.pop.MDM)) {
		t.Errorf("records metric = %q, want %d", got, len(s.pop.MDM))
	}
	if s.metric(`easconnector_mdm_request_duration_seconds_count{endpoint="token"}`) != "1" {
		t.Error("token request not timed")
	}

	// The token is reused by the next snapshot.
	s.mustSnapshot()
	if n := s.srv.TokensIssued(); n != 1 {
		t.Errorf("TokensIssued() = %d after two snapshots, want 1", n)
	}
	if len(s.recordedWaits()) != 0 {
		t.Errorf("waited %v without faults", s.recordedWaits())
	}
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }

func TestGraphPaging(t *testing.T) {
	tests := []struct {
		name      string
		fault     func(*graphsim.Server)
		extraReqs int
	}{
		{"one page", func(*graphsim.Server) {}, 0},
		{"empty pages with nextLink", func(s *graphsim.Server) { s.EmptyPages(3) }, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, simConfig{devices: 250})
			tc.fault(s.srv)
			snap := s.mustSnapshot()
			s.checkComplete(snap)
			if snap.Pages != 1+tc.extraReqs {
				t.Errorf("Pages = %d, want %d", snap.Pages, 1+tc.extraReqs)
			}
		})
	}
}

func TestGraphEndlessEmptyPages(t *testing.T) {
	s := newSim(t, simConfig{})
	s.srv.EmptyPages(1000)
	snap, err := s.snapshot()
	if err == nil || !strings.Contains(err.Error(), "101 empty pages in a row") || snap != nil {
		t.Fatalf("Snapshot() = %v, %v; want an error after 100 empty pages", snap, err)
	}
}

func TestGraphNextLinkLoop(t *testing.T) {
	s := newSim(t, simConfig{devices: 250, opts: GraphOptions{PageSize: 50}})
	s.srv.NextLinkLoop(true)
	snap, err := s.snapshot()
	if err == nil || !strings.Contains(err.Error(), "nextLink loop") || snap != nil {
		t.Fatalf("Snapshot() = %v, %v; want a nextLink loop error", snap, err)
	}
	if n := s.srv.RequestCount(graphsim.EndpointDevices, -1); n != 2 {
		t.Errorf("%d device requests, want 2 (the loop is caught before the repeat)", n)
	}
}

func TestGraphThrottling(t *testing.T) {
	tests := []struct {
		name       string
		retryAfter func() string
		check      func(t *testing.T, waits []time.Duration)
	}{
		{"Retry-After seconds", func() string { return "7" }, func(t *testing.T, w []time.Duration) {
			if len(w) != 2 || w[0] != 7*time.Second || w[1] != 7*time.Second {
				t.Errorf("waits = %v, want [7s 7s]", w)
			}
		}},
		{"Retry-After HTTP-date", func() string { return time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat) }, func(t *testing.T, w []time.Duration) {
			for _, d := range w {
				if d < 27*time.Second || d > 31*time.Second {
					t.Errorf("waits = %v, want about 30s each", w)
				}
			}
		}},
		{"no Retry-After", func() string { return "" }, func(t *testing.T, w []time.Duration) {
			// Full jitter: the first wait is within (0, 1s], the second within (0, 2s].
			if len(w) != 2 || w[0] <= 0 || w[0] > time.Second || w[1] <= 0 || w[1] > 2*time.Second {
				t.Errorf("waits = %v, want backoff with jitter within 1s then 2s", w)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, simConfig{})
			s.srv.Throttle(2, tc.retryAfter())
			snap := s.mustSnapshot()
			s.checkComplete(snap)
			tc.check(t, s.recordedWaits())
			if snap.Requests != 3 {
				t.Errorf("Requests = %d, want 3", snap.Requests)
			}
			if got := s.metric("easconnector_mdm_retries_total"); got != "2" {
				t.Errorf("retries metric = %q, want 2", got)
			}
			if got := s.metric(`easconnector_mdm_requests_total{endpoint="managedDevices",status="429"}`); got != "2" {
				t.Errorf("429 metric = %q, want 2", got)
			}
		})
	}
}

func TestGraphRetryBudget(t *testing.T) {
	tests := []struct {
		name    string
		opts    GraphOptions
		fault   func(*graphsim.Server)
		wantErr string // "" → success
		reqs    int    // device requests the server saw
	}{
		{"5xx then success", GraphOptions{}, func(s *graphsim.Server) { s.FailNext(3, 503) }, "", 4},
		{"retries exhausted", GraphOptions{MaxRetries: 3}, func(s *graphsim.Server) { s.FailNext(100, 502) }, "retry budget spent (3 retries): graph: HTTP 502 BadGateway", 4},
		{"no retries", GraphOptions{MaxRetries: -1}, func(s *graphsim.Server) { s.FailNext(1, 500) }, "retry budget spent (0 retries)", 1},
		{"Retry-After beyond the wait budget", GraphOptions{MaxRetryWait: time.Minute}, func(s *graphsim.Server) { s.Throttle(1, "120") }, "would pass 1m0s of waiting", 1},
		{"truncated once", GraphOptions{}, func(s *graphsim.Server) { s.TruncateNext(1) }, "", 2},
		{"truncated always", GraphOptions{MaxRetries: 2}, func(s *graphsim.Server) { s.TruncateNext(100) }, "read page: response body truncated", 3},
		{"outage", GraphOptions{MaxRetries: 2}, func(s *graphsim.Server) { s.SetOutage(true) }, "retry budget spent (2 retries): token: Post", 0},
		{"permission denied is not retried", GraphOptions{}, func(s *graphsim.Server) { s.FailNext(1, 403) }, "graph: HTTP 403 Authorization_RequestDenied: Insufficient privileges", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, simConfig{opts: tc.opts})
			tc.fault(s.srv)
			snap, err := s.snapshot()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Snapshot() error: %v", err)
				}
				s.checkComplete(snap)
			} else if err == nil || !strings.Contains(err.Error(), tc.wantErr) || snap != nil {
				t.Fatalf("Snapshot() = %v, %v; want error containing %q", snap, err, tc.wantErr)
			}
			if n := s.srv.RequestCount(graphsim.EndpointDevices, -1); tc.name != "outage" && n != tc.reqs {
				t.Errorf("server saw %d device requests, want %d", n, tc.reqs)
			}
		})
	}
}

func TestGraphWaitInterruptible(t *testing.T) {
	s := newSim(t, simConfig{realWait: true})
	s.srv.Throttle(1, "60")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for ctx.Err() == nil && s.srv.RequestCount(graphsim.EndpointDevices, 429) == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	snap, err := s.graph.Snapshot(ctx, nil)
	if !errors.Is(err, context.Canceled) || snap != nil {
		t.Fatalf("Snapshot() = %v, %v; want context.Canceled", snap, err)
	}
}

func TestGraphTokenFailure(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(*graphsim.Server, *GraphOptions)
		wantErr string
		tokReqs int
	}{
		{"endpoint down", func(s *graphsim.Server, o *GraphOptions) { s.SetTokenDown(true); o.MaxRetries = 2 },
			"token: HTTP 503: temporarily_unavailable: AADSTS50196", 3},
		{"wrong secret", func(s *graphsim.Server, o *GraphOptions) { o.ClientSecret = secret.New("wrong") },
			"token: HTTP 401: invalid_client: AADSTS7000215: Invalid client secret provided", 1},
		{"wrong tenant", func(s *graphsim.Server, o *GraphOptions) { o.TenantID = "contoso.onmicrosoft.com" },
			"AADSTS90002", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, simConfig{})
			o := s.graph.opts
			tc.setup(s.srv, &o)
			g, err := NewGraph(o)
			if err != nil {
				t.Fatal(err)
			}
			g.wait = s.graph.wait
			snap, err := g.Snapshot(context.Background(), []string{s.pop.Included.ID})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || snap != nil {
				t.Fatalf("Snapshot() = %v, %v; want error containing %q", snap, err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "Trace ID") {
				t.Errorf("error %q carries the trace ids", err)
			}
			if n := s.srv.RequestCount(graphsim.EndpointToken, -1); n != tc.tokReqs {
				t.Errorf("%d token requests, want %d", n, tc.tokReqs)
			}
			if n := s.srv.RequestCount(graphsim.EndpointDevices, -1); n != 0 {
				t.Errorf("%d device requests without a token", n)
			}
		})
	}
}

func TestGraphTokenRevoked(t *testing.T) {
	s := newSim(t, simConfig{})
	s.mustSnapshot()
	s.srv.RevokeTokens()
	s.checkComplete(s.mustSnapshot())
	if n := s.srv.TokensIssued(); n != 2 {
		t.Errorf("TokensIssued() = %d, want 2 (one after the revocation)", n)
	}
}

func TestGraphErrors(t *testing.T) {
	s := newSim(t, simConfig{})
	missing := "0e0e0e0e-1111-4222-8333-444444444444"
	_, err := s.snapshot(missing)
	var ge *GraphError
	if !errors.As(err, &ge) || ge.Status != 404 || ge.Code != "Request_ResourceNotFound" || ge.RequestID == "" {
		t.Fatalf("Snapshot(missing group) error = %v, want a 404 GraphError with a request-id", err)
	}
	if !strings.Contains(err.Error(), "group "+missing) {
		t.Errorf("error %q does not name the group", err)
	}
	if _, err := s.snapshot("../../deviceManagement"); err == nil || !strings.Contains(err.Error(), "not an object id") {
		t.Errorf("Snapshot(bad group id) error = %v", err)
	}
}

func TestGraphValidation(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(p *population.Population)
		wantErr string
		check   func(t *testing.T, p *population.Population, snap *Snapshot)
	}{
		{"unknown compliance state", func(p *population.Population) { p.MDM[3].ComplianceState = "Healthy" },
			"complianceState: unknown value \"Healthy\"", nil},
		{"duplicate id", func(p *population.Population) { p.MDM[150].ID = p.MDM[4].ID },
			"duplicate id", nil},
		{"EAS id on two users", func(p *population.Population) {
			p.MDM[8].UserPrincipalName = "someone.else@contoso.com"
			p.MDM[8].EASDeviceID = strings.ToLower(p.MDM[7].EASDeviceID)
		}, "", func(t *testing.T, p *population.Population, snap *Snapshot) {
			if snap.Conflicts != 1 {
				t.Errorf("Conflicts = %d, want 1", snap.Conflicts)
			}
			for i, r := range snap.Records {
				if r.Conflict != (i == 7 || i == 8) {
					t.Errorf("record %d Conflict = %v", i, r.Conflict)
				}
			}
		}},
		{"EAS id missing or blank", func(p *population.Population) { p.MDM[9].EASDeviceID = "  "; p.MDM[10].EASDeviceID = "" },
			"", func(t *testing.T, p *population.Population, snap *Snapshot) {
				if snap.NoEASID != 2 || len(snap.Records) != len(p.MDM)-2 || snap.Total() != len(p.MDM) {
					t.Errorf("NoEASID %d, records %d, Total %d; want 2, %d, %d", snap.NoEASID, len(snap.Records), snap.Total(), len(p.MDM)-2, len(p.MDM))
				}
			}},
		{"EAS id padded", func(p *population.Population) { p.MDM[11].EASDeviceID = " " + p.MDM[11].EASDeviceID + "\t" },
			"", func(t *testing.T, p *population.Population, snap *Snapshot) {
				if got := snap.Records[11].EASDeviceID; got != strings.TrimSpace(p.MDM[11].EASDeviceID) {
					t.Errorf("EASDeviceID = %q, want it trimmed", got)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, simConfig{opts: GraphOptions{PageSize: 100}})
			s.srv.Update(tc.edit)
			snap, err := s.snapshot()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || snap != nil {
					t.Fatalf("Snapshot() = %v, %v; want error containing %q", snap, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s.pop, snap)
		})
	}
	// The error names the record.
	s := newSim(t, simConfig{})
	s.srv.Update(func(p *population.Population) { p.MDM[5].ComplianceState = "bogus" })
	if _, err := s.snapshot(); err == nil || !strings.Contains(err.Error(), "record "+s.pop.MDM[5].ID) {
		t.Errorf("error %v does not name record %s", err, s.pop.MDM[5].ID)
	}
}

type testKey struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
	pem  []byte
}

var (
	keysOnce sync.Once
	keys     [2]testKey
	keysErr  error
)

func testKeys(t *testing.T) [2]testKey {
	t.Helper()
	keysOnce.Do(func() {
		for i := range keys {
			key, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				keysErr = err
				return
			}
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), Subject: pkix.Name{CommonName: "easconnector"},
				NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
			if err != nil {
				keysErr = err
				return
			}
			cert, _ := x509.ParseCertificate(der)
			p8, _ := x509.MarshalPKCS8PrivateKey(key)
			pemData := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
				pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
			keys[i] = testKey{cert, key, pemData}
		}
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
	return keys
}

func TestGraphCertificateAuth(t *testing.T) {
	ks := testKeys(t)
	cert, key, err := LoadCertificate(ks[0].pem)
	if err != nil {
		t.Fatal(err)
	}
	s := newSim(t, simConfig{simOpts: graphsim.Options{Certificate: ks[0].cert},
		opts: GraphOptions{Certificate: cert, PrivateKey: secret.NewValue(key)}})
	s.checkComplete(s.mustSnapshot())

	// A certificate the app registration does not know is refused.
	o := s.graph.opts
	o.Certificate, o.PrivateKey = ks[1].cert, secret.NewValue(ks[1].key)
	g, err := NewGraph(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Snapshot(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "AADSTS700027") {
		t.Errorf("Snapshot() with an unregistered certificate: %v, want AADSTS700027", err)
	}
}

func TestLoadCertificate(t *testing.T) {
	ks := testKeys(t)
	p1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(ks[1].key)})
	certOnly := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ks[0].cert.Raw})
	otherCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ks[1].cert.Raw})
	tests := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"PKCS #8", ks[0].pem, ""},
		{"PKCS #1, two certificates", append(append(append([]byte{}, certOnly...), otherCert...), p1...), ""},
		{"no key", certOnly, "no RSA private key"},
		{"no certificate", p1, "no CERTIFICATE"},
		{"mismatch", append(append([]byte{}, certOnly...), p1...), "matches the private key"},
		{"encrypted", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), "encrypted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, k, err := LoadCertificate(tc.data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("LoadCertificate() error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !c.PublicKey.(*rsa.PublicKey).Equal(&k.PublicKey) {
				t.Errorf("LoadCertificate() = %v, %v", c, err)
			}
		})
	}
}

func TestNewGraphValidation(t *testing.T) {
	ks := testKeys(t)
	ok := GraphOptions{TenantID: tenant, ClientID: client, ClientSecret: secret.New(testSecret)}
	tests := []struct {
		name    string
		edit    func(*GraphOptions)
		wantErr string
	}{
		{"ok", func(*GraphOptions) {}, ""},
		{"national cloud", func(o *GraphOptions) {
			o.AuthorityURL, o.GraphURL = "https://login.microsoftonline.us/", "https://graph.microsoft.us"
		}, ""},
		{"no tenant", func(o *GraphOptions) { o.TenantID = "" }, "TenantID: missing"},
		{"tenant with a slash", func(o *GraphOptions) { o.TenantID = "a/b" }, "TenantID"},
		{"no client", func(o *GraphOptions) { o.ClientID = "" }, "ClientID: missing"},
		{"no credential", func(o *GraphOptions) { o.ClientSecret = secret.New("") }, "a credential is required"},
		{"two credentials", func(o *GraphOptions) { o.Certificate, o.PrivateKey = ks[0].cert, secret.NewValue(ks[0].key) }, "not both"},
		{"certificate without key", func(o *GraphOptions) { o.ClientSecret, o.Certificate = secret.String{}, ks[0].cert }, "PrivateKey: required"},
		{"key of another certificate", func(o *GraphOptions) {
			o.ClientSecret, o.Certificate, o.PrivateKey = secret.String{}, ks[0].cert, secret.NewValue(ks[1].key)
		}, "does not match"},
		{"page too large", func(o *GraphOptions) { o.PageSize = 5000 }, "PageSize: must be between 1 and 1000"},
		{"graph URL", func(o *GraphOptions) { o.GraphURL = "graph.microsoft.com" }, "GraphURL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.edit(&o)
			g, err := NewGraph(o)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("NewGraph() error: %v", err)
				}
				if !strings.HasPrefix(g.tokenURL, strings.TrimRight(cmpOr(o.AuthorityURL, DefaultAuthorityURL), "/")+"/"+tenant+"/oauth2/v2.0/token") ||
					g.scope != cmpOr(o.GraphURL, DefaultGraphURL)+"/.default" {
					t.Errorf("token URL %q, scope %q", g.tokenURL, g.scope)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("NewGraph() error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestCheckNextLink(t *testing.T) {
	g, err := NewGraph(GraphOptions{TenantID: tenant, ClientID: client, ClientSecret: secret.New(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	for link, ok := range map[string]bool{
		"https://graph.microsoft.com/v1.0/deviceManagement/managedDevices?$skiptoken=x": true,
		"https://evil.example/v1.0/deviceManagement/managedDevices?$skiptoken=x":        false,
		"http://graph.microsoft.com/v1.0/x":                                             false,
		"/v1.0/deviceManagement/managedDevices":                                         false,
		"https://graph.microsoft.com.evil.example/v1.0":                                 false,
	} {
		if err := g.checkNextLink(link); (err == nil) != ok {
			t.Errorf("checkNextLink(%q) = %v, want ok %v", link, err, ok)
		}
	}
}

func TestGraphTokenCache(t *testing.T) {
	tests := []struct {
		name string
		ttl  time.Duration
		want int // tokens for two snapshots of 3 pages each
	}{
		{"renewed only when due", time.Hour, 1},
		{"renewed within TokenEarlyExpiry of expiry", 4 * time.Minute, 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, simConfig{simOpts: graphsim.Options{TokenTTL: tc.ttl}, opts: GraphOptions{PageSize: 100}})
			s.srv.Update(func(p *population.Population) { p.MDM = p.MDM[:250] })
			s.mustSnapshot()
			s.mustSnapshot()
			if n := s.srv.TokensIssued(); n != tc.want {
				t.Errorf("TokensIssued() = %d, want %d", n, tc.want)
			}
		})
	}
}

func TestGraphErrorParse(t *testing.T) {
	tests := []struct {
		name, body, header string
		want               GraphError
		wantText           string
	}{
		{"innerError", `{"error":{"code":"TooManyRequests","message":"Please retry again later.","innerError":{"code":"429","date":"2020-08-18T12:51:51","request-id":"94fb3b52"}}}`, "",
			GraphError{Status: 429, Code: "TooManyRequests", Message: "Please retry again later.", InnerCode: "429", RequestID: "94fb3b52", Date: "2020-08-18T12:51:51"},
			"graph: HTTP 429 TooManyRequests: Please retry again later. (request-id 94fb3b52)"},
		{"innererror", `{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges.","innererror":{"code":"AccessDenied","request-id":"r2"}}}`, "",
			GraphError{Status: 429, Code: "Authorization_RequestDenied", Message: "Insufficient privileges.", InnerCode: "AccessDenied", RequestID: "r2"},
			"graph: HTTP 429 Authorization_RequestDenied/AccessDenied: Insufficient privileges. (request-id r2)"},
		{"HTML from a proxy", "<html>\n<body>Bad gateway</body></html>", "hdr-id",
			GraphError{Status: 429, Message: "<html> <body>Bad gateway</body></html>", RequestID: "hdr-id"},
			"graph: HTTP 429: <html> <body>Bad gateway</body></html> (request-id hdr-id)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: 429, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(tc.body))}
			if tc.header != "" {
				resp.Header.Set("request-id", tc.header)
			}
			ge := graphError(resp)
			if *ge != tc.want || ge.Error() != tc.wantText {
				t.Errorf("graphError() = %+v %q, want %+v %q", *ge, ge.Error(), tc.want, tc.wantText)
			}
		})
	}
}

// TestGraphMembersWithoutUserRead: an app holding GroupMember.Read.All but
// not User.Read.All gets user members with only their id and @odata.type
// (graphsim's NoUsers grant). The snapshot still carries every member by
// object id, counts them as unnamed, and the records carry the userId that
// the join needs. The members are read without the /microsoft.graph.user
// cast, which graphsim (like Graph) refuses without the advanced query
// parameters.
func TestGraphMembersWithoutUserRead(t *testing.T) {
	s := newSim(t, simConfig{devices: 400})
	s.srv.SetGrants(graphsim.Grants{NoUsers: true})
	inc, exc := s.pop.Included, s.pop.Excluded
	snap := s.mustSnapshot(inc.ID, exc.ID)
	s.checkComplete(snap)
	for _, g := range []population.Group{inc, exc} {
		ms := snap.Groups[g.ID]
		if len(ms) != len(g.Members) {
			t.Fatalf("group %s: %d members, want %d", g.Name, len(ms), len(g.Members))
		}
		for i, m := range ms {
			if want := (Member{ID: s.pop.Mailboxes[g.Members[i]].EntraID}); m != want {
				t.Fatalf("group %s member %d = %+v, want %+v", g.Name, i, m, want)
			}
		}
	}
	if want := len(inc.Members) + len(exc.Members); snap.Unnamed != want {
		t.Errorf("Unnamed = %d, want %d", snap.Unnamed, want)
	}
	for i, rec := range snap.Records {
		if rec.UserID == "" {
			t.Fatalf("record %d has no UserID", i)
		}
	}
}

// TestGraphMembersWithoutIDs: members that come without an object id
// cannot be joined, so the snapshot fails (nothing will be written) with
// an error that names the permission to check.
func TestGraphMembersWithoutIDs(t *testing.T) {
	s := newSim(t, simConfig{devices: 50})
	s.srv.DropMemberIDs(true)
	_, err := s.snapshot(s.pop.Included.ID)
	if err == nil || !strings.Contains(err.Error(), "id: missing") || !strings.Contains(err.Error(), PermMembers) {
		t.Fatalf("Snapshot() error = %v, want id: missing naming %s", err, PermMembers)
	}
	if got := s.metric(`easconnector_mdm_retries_total`); got != "0" {
		t.Errorf("retries = %s, want 0 (a data error is not retried)", got)
	}
}

// TestGraphMemberTypes: transitiveMembers lists nested groups, devices and
// other directory objects beside users; only users are kept, and an item
// without @odata.type is an error, not a guess.
func TestGraphMemberTypes(t *testing.T) {
	const gid = "aaaaaaaa-0000-4000-8000-000000000001"
	f := func(body, wantErr string, want []Member) {
		t.Helper()
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case strings.HasSuffix(r.URL.Path, "/token"):
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, `{"token_type":"Bearer","expires_in":3600,"access_token":"t"}`)
			case strings.HasSuffix(r.URL.Path, "/managedDevices"):
				fmt.Fprint(w, `{"value":[]}`)
			case r.URL.Path == "/v1.0/groups/"+gid+"/transitiveMembers":
				if r.URL.Query().Get("$select") != "id,userPrincipalName,mail" {
					http.Error(w, "bad $select "+r.URL.RawQuery, 400)
					return
				}
				fmt.Fprint(w, body)
			default:
				http.Error(w, "unexpected "+r.URL.Path, 404)
			}
		}))
		defer srv.Close()
		g, err := NewGraph(GraphOptions{TenantID: "contoso.com", ClientID: "c", ClientSecret: secret.New("s"), AuthorityURL: srv.URL, GraphURL: srv.URL, MaxRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		snap, err := g.Snapshot(context.Background(), []string{gid})
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("Snapshot() error = %v, want %q", err, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("Snapshot() error = %v", err)
		}
		if got := snap.Groups[gid]; !slices.Equal(got, want) {
			t.Fatalf("members = %+v, want %+v", got, want)
		}
	}
	const u1, u2 = "11111111-2222-4333-8444-555555555555", "21111111-2222-4333-8444-555555555555"
	f(`{"value":[{"@odata.type":"#microsoft.graph.group","id":"c43a7cc9-2d95-44b6-bf6a-6392e41949b4","mail":null},`+
		`{"@odata.type":"#microsoft.graph.user","id":"`+u1+`","userPrincipalName":"a@contoso.com","mail":"a@contoso.com"},`+
		`{"@odata.type":"#microsoft.graph.device","id":"d282309e-f91d-43b6-badb-9e68aa4b4fc8"},`+
		`{"@odata.type":"#microsoft.graph.user","id":"`+u2+`","userPrincipalName":null,"mail":null},`+
		`{"@odata.type":"#microsoft.graph.user","id":"`+strings.ToUpper(u1)+`","userPrincipalName":"a@contoso.com","mail":null}]}`,
		"", []Member{{ID: u1, UserPrincipalName: "a@contoso.com", Mail: "a@contoso.com"}, {ID: u2}})
	f(`{"value":[{"id":"`+u1+`","userPrincipalName":"a@contoso.com"}]}`, "member 1: @odata.type missing", nil)
	f(`{"value":[{"@odata.type":"#microsoft.graph.group","id":"x"},{"@odata.type":"#microsoft.graph.user","id":null}]}`, "member 2: id: missing", nil)
	f(`{"value":[{"@odata.type":"#microsoft.graph.user","id":"alice"}]}`, `member 1: id: "alice" is not an object id`, nil)
}

// TestProbe: the check's read of one page of devices and members names
// the missing permission: a 403 on managedDevices or on transitiveMembers,
// members whose properties come back null, members without ids.
func TestProbe(t *testing.T) {
	s := newSim(t, simConfig{devices: 120})
	inc, exc := s.pop.Included.ID, s.pop.Excluded.ID
	f := func(g graphsim.Grants, noIDs bool, want ...string) {
		t.Helper()
		s.srv.SetGrants(g)
		s.srv.DropMemberIDs(noIDs)
		res, err := s.graph.Probe(context.Background(), []string{inc, exc})
		if err != nil {
			t.Fatalf("Probe() error = %v", err)
		}
		var got []string
		for _, fd := range res.Findings() {
			kind := "warn"
			if fd.Fatal {
				kind = "fatal"
			}
			got = append(got, kind+" "+fd.Permission)
			if fd.Permission != "" && !strings.Contains(fd.Text, fd.Permission) {
				t.Errorf("finding %q does not name %s", fd.Text, fd.Permission)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("Grants %+v, no ids %v: findings %q (%+v), want %q", g, noIDs, got, res, want)
		}
	}
	f(graphsim.Grants{}, false)
	f(graphsim.Grants{NoUsers: true}, false, "warn "+PermUsers, "warn "+PermUsers)
	f(graphsim.Grants{NoMembers: true}, false, "fatal "+PermMembers, "fatal "+PermMembers)
	f(graphsim.Grants{NoDevices: true}, false, "fatal "+PermDevices)
	f(graphsim.Grants{}, true, "fatal "+PermMembers, "fatal "+PermMembers)
	if _, err := s.graph.Probe(context.Background(), []string{"not-a-guid"}); err == nil {
		t.Error("Probe(bad group id) = nil error")
	}
}

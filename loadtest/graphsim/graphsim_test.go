package graphsim

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/easconnector/easconnector/loadtest/population"
)

const (
	testTenant = "11111111-2222-4333-8444-555555555555"
	testClient = "66666666-7777-4888-9999-000000000000"
	testSecret = "s3cr3t~value"
)

type fixture struct {
	t    *testing.T
	srv  *Server
	base string
	pop  *population.Population
}

func newFixture(t *testing.T, devices int, opts Options) *fixture {
	t.Helper()
	pop := population.Generate(population.Options{Seed: 7, Devices: devices, Now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)})
	opts.TenantID, opts.ClientID = testTenant, testClient
	if opts.ClientSecret == "" {
		opts.ClientSecret = testSecret
	}
	s := New(pop, opts)
	base, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return &fixture{t: t, srv: s, base: base, pop: pop}
}

func (f *fixture) tokenForm(form url.Values) (int, map[string]any) {
	f.t.Helper()
	resp, err := http.PostForm(f.base+"/"+testTenant+"/oauth2/v2.0/token", form)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		f.t.Fatalf("token response: %v", err)
	}
	return resp.StatusCode, m
}

func secretForm() url.Values {
	return url.Values{
		"grant_type": {"client_credentials"}, "client_id": {testClient},
		"client_secret": {testSecret}, "scope": {"https://graph.microsoft.com/.default"},
	}
}

func (f *fixture) token() string {
	f.t.Helper()
	status, m := f.tokenForm(secretForm())
	if status != 200 {
		f.t.Fatalf("token: status %d: %v", status, m)
	}
	return m["access_token"].(string)
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (f *fixture) get(rawURL, token string) response {
	f.t.Helper()
	req, err := http.NewRequest("GET", rawURL, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

type page struct {
	Value    []map[string]any `json:"value"`
	NextLink string           `json:"@odata.nextLink"`
	Context  string           `json:"@odata.context"`
}

func (f *fixture) page(rawURL, token string) page {
	f.t.Helper()
	r := f.get(rawURL, token)
	if r.status != 200 {
		f.t.Fatalf("GET %s: status %d: %s", rawURL, r.status, r.body)
	}
	var p page
	if err := json.Unmarshal(r.body, &p); err != nil {
		f.t.Fatalf("GET %s: %v in %.200s", rawURL, err, r.body)
	}
	return p
}

// all follows nextLinks from rawURL and returns the ids read and the pages.
func (f *fixture) all(rawURL, token string) (ids []string, pages int) {
	f.t.Helper()
	for rawURL != "" {
		p := f.page(rawURL, token)
		pages++
		for _, v := range p.Value {
			ids = append(ids, v["id"].(string))
		}
		rawURL = p.NextLink
		if pages > 10000 {
			f.t.Fatal("paging does not end")
		}
	}
	return ids, pages
}

func (f *fixture) devicesURL(query string) string {
	return f.base + "/v1.0/deviceManagement/managedDevices" + query
}

func mdmIDs(p *population.Population) []string {
	var ids []string
	for _, r := range p.MDM {
		ids = append(ids, r.ID)
	}
	return ids
}

func graphErrorCode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Error struct {
			Code       string `json:"code"`
			Message    string `json:"message"`
			InnerError struct {
				RequestID string `json:"request-id"`
			} `json:"innerError"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("graph error body %q: %v", body, err)
	}
	if e.Error.Message == "" || e.Error.InnerError.RequestID == "" {
		t.Errorf("graph error body %s lacks message or request-id", body)
	}
	return e.Error.Code
}

func TestTokenSecret(t *testing.T) {
	f := newFixture(t, 10, Options{})
	tests := []struct {
		name   string
		edit   func(url.Values)
		status int
		code   string
		aadsts string
	}{
		{"ok", func(url.Values) {}, 200, "", ""},
		{"wrong secret", func(v url.Values) { v.Set("client_secret", "nope") }, 401, "invalid_client", "AADSTS7000215"},
		{"no credential", func(v url.Values) { v.Del("client_secret") }, 401, "invalid_client", "AADSTS7000218"},
		{"unknown client", func(v url.Values) { v.Set("client_id", "abc") }, 400, "unauthorized_client", "AADSTS700016"},
		{"scope without /.default", func(v url.Values) {
			v.Set("scope", "https://graph.microsoft.com/DeviceManagementManagedDevices.Read.All")
		}, 400, "invalid_scope", "AADSTS1002012"},
		{"no scope", func(v url.Values) { v.Del("scope") }, 400, "invalid_request", "AADSTS900144"},
		{"password grant", func(v url.Values) { v.Set("grant_type", "password") }, 400, "unsupported_grant_type", "AADSTS70003"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			form := secretForm()
			tc.edit(form)
			status, m := f.tokenForm(form)
			if status != tc.status {
				t.Fatalf("status = %d, want %d (%v)", status, tc.status, m)
			}
			if tc.status == 200 {
				if m["token_type"] != "Bearer" || m["access_token"] == "" || m["expires_in"].(float64) != 3600 {
					t.Errorf("token response = %v", m)
				}
				return
			}
			desc, _ := m["error_description"].(string)
			if m["error"] != tc.code || !strings.HasPrefix(desc, tc.aadsts+":") {
				t.Errorf("error = %v %q, want %s %s", m["error"], desc, tc.code, tc.aadsts)
			}
		})
	}

	// Unknown tenant.
	resp, err := http.PostForm(f.base+"/contoso.onmicrosoft.com/oauth2/v2.0/token", secretForm())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "AADSTS90002") {
		t.Errorf("unknown tenant: %d %s", resp.StatusCode, b)
	}
	if got := f.srv.TokensIssued(); got != 1 {
		t.Errorf("TokensIssued() = %d, want 1", got)
	}
}

type testCert struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
}

var (
	certOnce  sync.Once
	certs     [2]testCert
	errCertGn error
)

// twoCerts returns a registered and an unregistered self-signed certificate.
func twoCerts(t testing.TB) [2]testCert {
	t.Helper()
	certOnce.Do(func() {
		for i := range certs {
			key, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				errCertGn = err
				return
			}
			tmpl := &x509.Certificate{
				SerialNumber: big.NewInt(int64(i + 1)), Subject: pkix.Name{CommonName: "easconnector test"},
				NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
			if err != nil {
				errCertGn = err
				return
			}
			c, err := x509.ParseCertificate(der)
			if err != nil {
				errCertGn = err
				return
			}
			certs[i] = testCert{c, key}
		}
	})
	if errCertGn != nil {
		t.Fatal(errCertGn)
	}
	return certs
}

func signJWT(t testing.TB, hdr, claims map[string]any, key *rsa.PrivateKey) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(hdr) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestTokenAssertion(t *testing.T) {
	cs := twoCerts(t)
	f := newFixture(t, 10, Options{Certificate: cs[0].cert})
	aud := f.base + "/" + testTenant + "/oauth2/v2.0/token"
	x5t := func(c *x509.Certificate) string {
		s := sha1.Sum(c.Raw)
		return base64.RawURLEncoding.EncodeToString(s[:])
	}
	now := time.Now()
	good := func() (map[string]any, map[string]any, *rsa.PrivateKey) {
		return map[string]any{"alg": "RS256", "typ": "JWT", "x5t": x5t(cs[0].cert)},
			map[string]any{"aud": aud, "iss": testClient, "sub": testClient, "jti": "j1",
				"nbf": now.Unix(), "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}, cs[0].key
	}
	tests := []struct {
		name   string
		edit   func(h, c map[string]any) *rsa.PrivateKey
		status int
		aadsts string
	}{
		{"ok", func(h, c map[string]any) *rsa.PrivateKey { return nil }, 200, ""},
		{"signed by another key", func(h, c map[string]any) *rsa.PrivateKey { return cs[1].key }, 401, "AADSTS700027"},
		{"unknown thumbprint", func(h, c map[string]any) *rsa.PrivateKey { h["x5t"] = x5t(cs[1].cert); return cs[1].key }, 401, "AADSTS700027"},
		{"expired", func(h, c map[string]any) *rsa.PrivateKey { c["exp"] = now.Add(-time.Hour).Unix(); return nil }, 401, "AADSTS700024"},
		{"not yet valid", func(h, c map[string]any) *rsa.PrivateKey { c["nbf"] = now.Add(time.Hour).Unix(); return nil }, 401, "AADSTS700024"},
		{"wrong audience", func(h, c map[string]any) *rsa.PrivateKey {
			c["aud"] = "https://login.microsoftonline.com/x/oauth2/v2.0/token"
			return nil
		}, 401, "AADSTS700212"},
		{"wrong issuer", func(h, c map[string]any) *rsa.PrivateKey { c["iss"] = "someone"; return nil }, 401, "AADSTS700021"},
		{"HS256", func(h, c map[string]any) *rsa.PrivateKey { h["alg"] = "HS256"; return nil }, 401, "AADSTS700027"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, c, key := good()
			if k := tc.edit(h, c); k != nil {
				key = k
			}
			form := url.Values{
				"grant_type": {"client_credentials"}, "client_id": {testClient},
				"scope":                 {"https://graph.microsoft.com/.default"},
				"client_assertion_type": {assertionType}, "client_assertion": {signJWT(t, h, c, key)},
			}
			status, m := f.tokenForm(form)
			if status != tc.status {
				t.Fatalf("status = %d, want %d (%v)", status, tc.status, m)
			}
			if desc, _ := m["error_description"].(string); tc.aadsts != "" && !strings.HasPrefix(desc, tc.aadsts+":") {
				t.Errorf("error_description = %q, want %s", desc, tc.aadsts)
			}
		})
	}
	status, m := f.tokenForm(url.Values{
		"grant_type": {"client_credentials"}, "client_id": {testClient}, "scope": {"https://graph.microsoft.com/.default"},
		"client_assertion_type": {assertionType}, "client_assertion": {"not.a.jwt!"},
	})
	if status != 400 || m["error"] != "invalid_request" {
		t.Errorf("malformed assertion: %d %v", status, m)
	}
}

func TestBearerRequired(t *testing.T) {
	f := newFixture(t, 10, Options{})
	for _, tc := range []struct{ name, token string }{{"none", ""}, {"unknown", "abc"}} {
		r := f.get(f.devicesURL(""), tc.token)
		if r.status != 401 || graphErrorCode(t, r.body) != "InvalidAuthenticationToken" {
			t.Errorf("%s token: %d %s", tc.name, r.status, r.body)
		}
	}
	tok := f.token()
	if r := f.get(f.devicesURL(""), tok); r.status != 200 {
		t.Fatalf("valid token: %d %s", r.status, r.body)
	}
	f.srv.RevokeTokens()
	if r := f.get(f.devicesURL(""), tok); r.status != 401 {
		t.Errorf("revoked token: %d, want 401", r.status)
	}
	if n := f.srv.RequestCount(EndpointDevices, 401); n != 3 {
		t.Errorf("RequestCount(devices, 401) = %d, want 3", n)
	}
}

func TestTokenExpiry(t *testing.T) {
	f := newFixture(t, 10, Options{TokenTTL: time.Second})
	tok := f.token()
	f.srv.mu.Lock()
	f.srv.tokens[tok] = time.Now().Add(-time.Second) // as if TokenTTL had passed
	f.srv.mu.Unlock()
	r := f.get(f.devicesURL(""), tok)
	if r.status != 401 || !strings.Contains(string(r.body), "expired") {
		t.Errorf("expired token: %d %s", r.status, r.body)
	}
}

func TestPaging(t *testing.T) {
	f := newFixture(t, 1500, Options{})
	tok := f.token()
	want := mdmIDs(f.pop)
	if len(want) <= 1000 {
		t.Fatalf("population has %d MDM records; the test needs more than 1000", len(want))
	}
	tests := []struct {
		query     string
		wantPages int
	}{
		{"", (len(want) + 999) / 1000},
		{"?$top=100", (len(want) + 99) / 100},
		{"?$top=5000", (len(want) + 999) / 1000}, // clamped to 1000
		{"?$select=id,easDeviceId&$top=" + strconv.Itoa(len(want)), 2},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			got, pages := f.all(f.devicesURL(tc.query), tok)
			if !slices.Equal(got, want) {
				t.Errorf("ids: got %d, want %d (first diff at %d)", len(got), len(want), firstDiff(got, want))
			}
			if pages != tc.wantPages {
				t.Errorf("pages = %d, want %d", pages, tc.wantPages)
			}
		})
	}

	p := f.page(f.devicesURL("?$select=id&$top=10"), tok)
	u, err := url.Parse(p.NextLink)
	if err != nil || u.Query().Get("$skiptoken") == "" || u.Query().Get("$select") != "id" || u.Query().Get("$top") != "10" {
		t.Errorf("nextLink = %q, want $select, $top and an opaque $skiptoken", p.NextLink)
	}
	// A nextLink can be requested again (a client retrying after a failure).
	a, b := f.page(p.NextLink, tok), f.page(p.NextLink, tok)
	if len(a.Value) != 10 || a.Value[0]["id"] != b.Value[0]["id"] || a.Value[0]["id"] != want[10] {
		t.Errorf("repeated nextLink gave %v then %v, want %s", a.Value[0], b.Value[0], want[10])
	}
	for _, bad := range []string{"?$top=0", "?$top=x", "?$filter=model%20eq%20'x'", "?$select=id,deviceName"} {
		if r := f.get(f.devicesURL(bad), tok); r.status != 400 || graphErrorCode(t, r.body) != "BadRequest" {
			t.Errorf("%s: %d %s, want 400 BadRequest", bad, r.status, r.body)
		}
	}
	if r := f.get(f.devicesURL("?$skiptoken=forged"), tok); r.status != 400 {
		t.Errorf("forged skiptoken: %d, want 400", r.status)
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestSelect(t *testing.T) {
	f := newFixture(t, 50, Options{})
	tok := f.token()
	p := f.page(f.devicesURL("?$select=id,easDeviceId,complianceState"), tok)
	if !strings.HasSuffix(p.Context, "#deviceManagement/managedDevices(id,easDeviceId,complianceState)") {
		t.Errorf("@odata.context = %q", p.Context)
	}
	for i, v := range p.Value {
		if len(v) != 3 || v["id"] != f.pop.MDM[i].ID || v["easDeviceId"] != f.pop.MDM[i].EASDeviceID || v["complianceState"] != f.pop.MDM[i].ComplianceState {
			t.Fatalf("record %d = %v, want only id, easDeviceId, complianceState of %+v", i, v, f.pop.MDM[i])
		}
	}
	p = f.page(f.devicesURL(""), tok)
	v, rec := p.Value[0], f.pop.MDM[0]
	if len(v) != len(deviceFields) {
		t.Errorf("unselected record has %d fields, want %d: %v", len(v), len(deviceFields), v)
	}
	want := map[string]any{
		"id": rec.ID, "userId": rec.UserID, "userPrincipalName": rec.UserPrincipalName, "emailAddress": rec.Email, "easDeviceId": rec.EASDeviceID,
		"complianceState": rec.ComplianceState, "enrolledDateTime": rec.EnrolledAt.UTC().Format(time.RFC3339),
		"lastSyncDateTime": rec.LastSyncAt.UTC().Format(time.RFC3339), "operatingSystem": rec.OperatingSystem,
		"osVersion": rec.OSVersion, "model": rec.Model, "easActivated": true, "managementAgent": "mdm",
	}
	for k, w := range want {
		if v[k] != w {
			t.Errorf("%s = %v, want %v", k, v[k], w)
		}
	}
}

// getWith is get with extra request headers.
func (f *fixture) getWith(rawURL, token string, header map[string]string) response {
	f.t.Helper()
	req, err := http.NewRequest("GET", rawURL, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// TestMembers: transitiveMembers lists directoryObjects, each with its
// @odata.type: the group's nested group first, then its users by Entra
// object id (not the AD guid).
func TestMembers(t *testing.T) {
	f := newFixture(t, 300, Options{})
	tok := f.token()
	for _, g := range []population.Group{f.pop.Included, f.pop.Excluded} {
		var want []string
		for _, i := range g.Members {
			want = append(want, f.pop.Mailboxes[i].EntraID)
		}
		u := f.base + "/v1.0/groups/" + g.ID + "/transitiveMembers?$select=id,userPrincipalName,mail&$top=7"
		got, _ := f.all(u, tok)
		if len(got) != len(want)+1 || !slices.Equal(got[1:], want) {
			t.Errorf("group %s: got %d members, want %d users and the nested group", g.Name, len(got), len(want))
		}
	}
	p := f.page(f.base+"/v1.0/groups/"+strings.ToUpper(f.pop.Included.ID)+"/transitiveMembers?$top=5000", tok)
	mb := f.pop.Mailboxes[f.pop.Included.Members[0]]
	if len(p.Value) != min(999, len(f.pop.Included.Members)+1) || p.Value[0]["@odata.type"] != "#microsoft.graph.group" ||
		p.Value[1]["@odata.type"] != "#microsoft.graph.user" || p.Value[1]["userPrincipalName"] != mb.UPN || p.Value[1]["mail"] != mb.PrimarySmtp {
		t.Errorf("first page: %d members, first %v, %v, want the nested group then %s", len(p.Value), p.Value[0], p.Value[1], mb.UPN)
	}
	r := f.get(f.base+"/v1.0/groups/"+newGUID()+"/transitiveMembers", tok)
	if r.status != 404 || graphErrorCode(t, r.body) != "Request_ResourceNotFound" {
		t.Errorf("unknown group: %d %s", r.status, r.body)
	}
}

// TestMembersCast: the /microsoft.graph.user cast is an advanced query:
// refused with 400 Request_UnsupportedQuery unless ConsistencyLevel:
// eventual and $count=true are both given; then users only, without
// per-item @odata.type, with @odata.count.
func TestMembersCast(t *testing.T) {
	f := newFixture(t, 200, Options{})
	tok := f.token()
	g := f.pop.Included
	base := f.base + "/v1.0/groups/" + g.ID + "/transitiveMembers/microsoft.graph.user?$select=id,mail"
	for _, c := range []struct {
		name   string
		query  string
		header map[string]string
	}{
		{"neither", "", nil},
		{"header only", "", map[string]string{"ConsistencyLevel": "eventual"}},
		{"$count only", "&$count=true", nil},
	} {
		r := f.getWith(base+c.query, tok, c.header)
		if r.status != 400 || graphErrorCode(t, r.body) != "Request_UnsupportedQuery" ||
			!strings.Contains(string(r.body), "Try adding $count=true query parameter and ConsistencyLevel:eventual header") {
			t.Errorf("%s: %d %s, want 400 Request_UnsupportedQuery", c.name, r.status, r.body)
		}
	}
	r := f.getWith(base+"&$count=true&$top=999", tok, map[string]string{"ConsistencyLevel": "eventual"})
	var p struct {
		Count int              `json:"@odata.count"`
		Value []map[string]any `json:"value"`
	}
	if r.status != 200 || json.Unmarshal(r.body, &p) != nil {
		t.Fatalf("advanced query: %d %s", r.status, r.body)
	}
	if p.Count != len(g.Members) || len(p.Value) != len(g.Members) || p.Value[0]["@odata.type"] != nil ||
		p.Value[0]["id"] != f.pop.Mailboxes[g.Members[0]].EntraID {
		t.Errorf("advanced query: count %d, %d items, first %v; want %d users", p.Count, len(p.Value), p.Value[0], len(g.Members))
	}
}

// TestGrants: the app's permissions shape the answers: without
// User.Read.All user members carry only @odata.type and id (every other
// selected property null, as Graph's "limited information" rule says);
// without GroupMember.Read.All or DeviceManagementManagedDevices.Read.All
// the listing is a 403.
func TestGrants(t *testing.T) {
	f := newFixture(t, 100, Options{})
	tok := f.token()
	g := f.pop.Included
	f.srv.SetGrants(Grants{NoUsers: true})
	p := f.page(f.base+"/v1.0/groups/"+g.ID+"/transitiveMembers?$select=id,userPrincipalName,mail,displayName", tok)
	u := p.Value[1]
	want := map[string]any{"@odata.type": "#microsoft.graph.user", "id": f.pop.Mailboxes[g.Members[0]].EntraID,
		"userPrincipalName": nil, "mail": nil, "displayName": nil}
	if len(u) != len(want) {
		t.Errorf("limited member = %v, want %v", u, want)
	}
	for k, w := range want {
		if v, ok := u[k]; !ok || v != w {
			t.Errorf("limited member %s = %v, want %v", k, v, w)
		}
	}
	if p.Value[0]["displayName"] == nil {
		t.Errorf("nested group %v: groups stay readable with GroupMember.Read.All", p.Value[0])
	}

	f.srv.SetGrants(Grants{NoMembers: true})
	r := f.get(f.base+"/v1.0/groups/"+g.ID+"/transitiveMembers", tok)
	if r.status != 403 || graphErrorCode(t, r.body) != "Authorization_RequestDenied" {
		t.Errorf("without GroupMember.Read.All: %d %s", r.status, r.body)
	}
	f.srv.SetGrants(Grants{NoDevices: true})
	r = f.get(f.devicesURL(""), tok)
	if r.status != 403 || graphErrorCode(t, r.body) != "Forbidden" ||
		!strings.Contains(string(r.body), "Application must have one of the following scopes: DeviceManagementManagedDevices.Read.All") {
		t.Errorf("without DeviceManagementManagedDevices.Read.All: %d %s", r.status, r.body)
	}
	f.srv.SetGrants(Grants{})
	f.srv.DropMemberIDs(true)
	p = f.page(f.base+"/v1.0/groups/"+g.ID+"/transitiveMembers?$select=id", tok)
	if p.Value[1]["id"] != nil || p.Value[0]["id"] == nil {
		t.Errorf("DropMemberIDs: %v, %v; want the user's id null", p.Value[0], p.Value[1])
	}
}

func TestConsistentPagingDuringUpdate(t *testing.T) {
	f := newFixture(t, 400, Options{})
	tok := f.token()
	want := mdmIDs(f.pop)
	p := f.page(f.devicesURL("?$top=50"), tok)
	got := []string{}
	for _, v := range p.Value {
		got = append(got, v["id"].(string))
	}
	var changes []population.Change
	f.srv.Update(func(p *population.Population) { changes = p.Churn(0.3, time.Hour) })
	if len(changes) == 0 {
		t.Fatal("Churn changed nothing")
	}
	rest, _ := f.all(p.NextLink, tok)
	got = append(got, rest...)
	if !slices.Equal(got, want) {
		t.Errorf("listing started before Update: %d ids, want the %d of its start", len(got), len(want))
	}
	after, _ := f.all(f.devicesURL("?$top=50"), tok)
	if now := mdmIDs(f.pop); !slices.Equal(after, now) || slices.Equal(now, want) {
		t.Errorf("listing started after Update: %d ids, want the %d after churn", len(after), len(now))
	}
}

func TestFaults(t *testing.T) {
	f := newFixture(t, 300, Options{})
	tok := f.token()
	first := f.devicesURL("?$top=100")

	t.Run("429 with Retry-After", func(t *testing.T) {
		f.srv.Throttle(2, "7")
		for range 2 {
			r := f.get(first, tok)
			if r.status != 429 || r.header.Get("Retry-After") != "7" || graphErrorCode(t, r.body) != "TooManyRequests" {
				t.Fatalf("got %d Retry-After %q %s", r.status, r.header.Get("Retry-After"), r.body)
			}
		}
		if r := f.get(first, tok); r.status != 200 {
			t.Errorf("after the throttled requests: %d, want 200", r.status)
		}
	})
	t.Run("429 without Retry-After", func(t *testing.T) {
		f.srv.Throttle(1, "")
		r := f.get(first, tok)
		if _, ok := r.header["Retry-After"]; r.status != 429 || ok {
			t.Errorf("got %d with header %v", r.status, r.header)
		}
	})
	t.Run("5xx N times", func(t *testing.T) {
		f.srv.FailNext(2, 503)
		var got []int
		for range 3 {
			got = append(got, f.get(first, tok).status)
		}
		if !slices.Equal(got, []int{503, 503, 200}) {
			t.Errorf("statuses = %v", got)
		}
	})
	t.Run("error rate", func(t *testing.T) {
		f.srv.SetErrorRate(1, 502)
		r := f.get(first, tok)
		f.srv.SetErrorRate(0, 0)
		if r.status != 502 || graphErrorCode(t, r.body) != "BadGateway" {
			t.Errorf("got %d %s", r.status, r.body)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		f.srv.TruncateNext(1)
		r := f.get(first, tok)
		var p page
		if err := json.Unmarshal(r.body, &p); r.status != 200 || err == nil {
			t.Errorf("truncated page: status %d, decode error %v", r.status, err)
		}
		if r := f.get(first, tok); json.Unmarshal(r.body, &p) != nil {
			t.Error("page after the truncated one is not whole")
		}
	})
	t.Run("empty pages", func(t *testing.T) {
		f.srv.EmptyPages(2)
		p := f.page(first, tok)
		if len(p.Value) != 0 || p.NextLink == "" {
			t.Fatalf("first page: %d values, nextLink %q; want empty with a nextLink", len(p.Value), p.NextLink)
		}
		ids, pages := f.all(first, tok) // the second empty page is consumed here
		if !slices.Equal(ids, mdmIDs(f.pop)) || pages != 1+(len(ids)+99)/100 {
			t.Errorf("after empty pages: %d ids in %d pages", len(ids), pages)
		}
	})
	t.Run("nextLink loop", func(t *testing.T) {
		f.srv.NextLinkLoop(true)
		defer f.srv.NextLinkLoop(false)
		p1 := f.page(first, tok)
		p2 := f.page(p1.NextLink, tok)
		if p2.NextLink != p1.NextLink {
			t.Errorf("loop: second page links to %q, want its own link %q", p2.NextLink, p1.NextLink)
		}
	})
	t.Run("token endpoint down", func(t *testing.T) {
		f.srv.SetTokenDown(true)
		status, m := f.tokenForm(secretForm())
		f.srv.SetTokenDown(false)
		if status != 503 || m["error"] != "temporarily_unavailable" {
			t.Errorf("got %d %v", status, m)
		}
	})
	t.Run("outage", func(t *testing.T) {
		f.srv.SetOutage(true)
		_, err := http.Get(first)
		f.srv.SetOutage(false)
		if err == nil {
			t.Fatal("request during outage succeeded")
		}
		if n := f.srv.RequestCount(EndpointDevices, 0); n == 0 {
			t.Error("reset connection not counted with status 0")
		}
	})
	t.Run("latency", func(t *testing.T) {
		f.srv.SetLatency(time.Minute)
		defer f.srv.SetLatency(0)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", first, nil)
		_, err := http.DefaultClient.Do(req)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want deadline exceeded", err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		f.srv.Throttle(5, "1")
		f.srv.SetOutage(true)
		f.srv.Reset()
		if r := f.get(first, tok); r.status != 200 {
			t.Errorf("after Reset: %d", r.status)
		}
	})
}

func TestStartClose(t *testing.T) {
	before := runtime.NumGoroutine()
	s := New(population.Generate(population.Options{Devices: 5}), Options{})
	base, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Errorf("base = %q", base)
	}
	if _, err := s.Start(); err == nil {
		t.Error("second Start succeeded")
	}
	tr := &http.Transport{}
	c := &http.Client{Transport: tr}
	s.SetLatency(time.Minute) // a request in flight when Close comes
	errc := make(chan error, 1)
	go func() {
		_, err := c.Get(base + "/v1.0/deviceManagement/managedDevices")
		errc <- err
	}()
	for s.inflight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	s.Close()
	if err := <-errc; err == nil {
		t.Error("request in flight at Close succeeded")
	}
	if _, err := c.Get(base + "/v1.0/deviceManagement/managedDevices"); err == nil {
		t.Error("request after Close succeeded")
	}
	s.Close() // idempotent
	tr.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Close, %d before", n, before)
	}
}

func TestDefaultPageSize(t *testing.T) {
	f := newFixture(t, 300, Options{PageSize: 40})
	p := f.page(f.devicesURL(""), f.token())
	if len(p.Value) != 40 || p.NextLink == "" {
		t.Errorf("page without $top: %d records, nextLink %q; want 40 and a link", len(p.Value), p.NextLink)
	}
}

package mdm

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/VictoriaMetrics/metrics"

	"github.com/easconnector/easconnector/internal/secret"
	"golang.org/x/oauth2"
)

// Defaults for GraphOptions.
const (
	DefaultAuthorityURL     = "https://login.microsoftonline.com"
	DefaultGraphURL         = "https://graph.microsoft.com"
	DefaultPageSize         = 1000 // managedDevices' default and effective maximum page
	DefaultMaxRetries       = 8
	DefaultMaxRetryWait     = 5 * time.Minute
	DefaultBaseBackoff      = time.Second
	DefaultMaxBackoff       = 60 * time.Second
	DefaultTokenEarlyExpiry = 5 * time.Minute
	DefaultRequestTimeout   = 2 * time.Minute

	maxPageSize       = 1000
	maxMemberPageSize = 999      // directory collections allow at most 999
	maxPageBytes      = 64 << 20 // far above a selected page of 1,000 devices (~0.6 MB)
	maxEmptyPages     = 100      // empty pages may come, but not without end
)

// deviceSelect is every managedDevice property the connector reads, and no
// other: an unselected device is about 5 KB of JSON. userId (the owner's
// Entra object id; managedDevice in Graph v1.0's metadata,
// microsoftgraph/msgraph-metadata clean_v10_metadata/cleanMetadata.xml) is
// what ties a device to the group members, whose UPN and mail Graph may
// withhold.
const deviceSelect = "id,userId,userPrincipalName,emailAddress,easDeviceId,complianceState,enrolledDateTime," +
	"lastSyncDateTime,operatingSystem,osVersion,model,easActivated,managementAgent"

// memberSelect is what the connector reads of a group member. The listing
// is of directoryObjects (users, groups, devices, contacts, service
// principals), so the properties are the user's and Graph leaves them out
// of other types.
const memberSelect = "id,userPrincipalName,mail"

// userType is the @odata.type of a user in a directoryObject collection.
const userType = "#microsoft.graph.user"

// Permissions the Graph source needs, named in errors and by Probe.
const (
	PermDevices = "DeviceManagementManagedDevices.Read.All"
	PermMembers = "GroupMember.Read.All"
	PermUsers   = "User.Read.All"
)

// Metric endpoint labels.
const (
	endpointToken   = "token"
	endpointDevices = "managedDevices"
	endpointMembers = "transitiveMembers"
)

// GraphOptions configure a Graph source. Exactly one credential is given:
// ClientSecret, or Certificate with PrivateKey. The zero value of every
// other field takes the default noted beside it.
type GraphOptions struct {
	TenantID     string        // directory (tenant) id or verified domain; required
	ClientID     string        // application (client) id; required
	ClientSecret secret.String // client secret value; the caller reads it from the environment or a file
	// Certificate and PrivateKey authenticate with a signed client
	// assertion instead of a secret (see LoadCertificate).
	Certificate *x509.Certificate
	PrivateKey  secret.Value[*rsa.PrivateKey]

	AuthorityURL string // "" → DefaultAuthorityURL; national clouds differ (login.microsoftonline.us, login.chinacloudapi.cn)
	GraphURL     string // "" → DefaultGraphURL (graph.microsoft.us, dod-graph.microsoft.us, microsoftgraph.chinacloudapi.cn)
	PageSize     int    // managedDevices $top; 0 → 1000, at most 1000

	// The retry budget of one snapshot: at most MaxRetries retries and
	// MaxRetryWait spent waiting, across all its requests. 429 waits the
	// Retry-After it is given; without one, and after 5xx or a network
	// error, waits grow from BaseBackoff to MaxBackoff with full jitter.
	MaxRetries   int           // 0 → 8; negative → no retries
	MaxRetryWait time.Duration // 0 → 5 min
	BaseBackoff  time.Duration // 0 → 1 s
	MaxBackoff   time.Duration // 0 → 60 s

	TokenEarlyExpiry time.Duration // renew a token this long before it expires; 0 → 5 min
	RequestTimeout   time.Duration // one request including its body; 0 → 2 min

	HTTPClient *http.Client // nil → a client with Go's default transport
	Logger     *slog.Logger // nil → discard
	// Metrics receives easconnector_mdm_requests_total{endpoint,status},
	// easconnector_mdm_request_duration_seconds{endpoint} (until the
	// response headers),
	// easconnector_mdm_retries_total and easconnector_mdm_records; nil →
	// a private set.
	Metrics *metrics.Set
}

// Graph reads managed devices and group members from Microsoft Graph with
// application permissions DeviceManagementManagedDevices.Read.All and
// GroupMember.Read.All, and User.Read.All (or User.ReadBasic.All) when the
// members' UPN and mail should be readable; see docs/operations.md. It is
// safe for concurrent use; the access token is shared between snapshots.
type Graph struct {
	opts     GraphOptions
	tokenURL string
	scope    string
	graphURL *url.URL
	client   *http.Client // instrumented
	log      *slog.Logger
	m        *graphMetrics
	wait     func(context.Context, time.Duration) error // sleep; replaced in tests

	tokLock chan struct{} // a mutex that a ctx can give up on; guards tok
	tok     *oauth2.Token

	lastTotal atomic.Int64 // records in the last snapshot, to size the next
}

var _ Source = (*Graph)(nil)

var tenantRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]{0,253}$`)

// NewGraph validates opts and returns a Graph source. It makes no request.
func NewGraph(opts GraphOptions) (*Graph, error) {
	o := opts
	switch {
	case o.TenantID == "":
		return nil, errors.New("mdm graph: TenantID: missing")
	case !tenantRe.MatchString(o.TenantID):
		return nil, fmt.Errorf("mdm graph: TenantID: %q is neither a tenant id nor a domain name", o.TenantID)
	case o.ClientID == "":
		return nil, errors.New("mdm graph: ClientID: missing")
	case !o.ClientSecret.IsZero() && o.Certificate != nil:
		return nil, errors.New("mdm graph: ClientSecret and Certificate: give one credential, not both")
	case o.ClientSecret.IsZero() && o.Certificate == nil:
		return nil, errors.New("mdm graph: ClientSecret or Certificate: a credential is required")
	case o.Certificate != nil && o.PrivateKey.Reveal() == nil:
		return nil, errors.New("mdm graph: PrivateKey: required with Certificate")
	case o.PageSize < 0 || o.PageSize > maxPageSize:
		return nil, fmt.Errorf("mdm graph: PageSize: must be between 1 and %d, got %d", maxPageSize, o.PageSize)
	}
	if o.Certificate != nil {
		pub, ok := o.Certificate.PublicKey.(*rsa.PublicKey)
		if !ok || !pub.Equal(&o.PrivateKey.Reveal().PublicKey) {
			return nil, errors.New("mdm graph: Certificate: its public key does not match PrivateKey")
		}
	}
	authority, err := baseURL("AuthorityURL", o.AuthorityURL, DefaultAuthorityURL)
	if err != nil {
		return nil, err
	}
	graphURL, err := baseURL("GraphURL", o.GraphURL, DefaultGraphURL)
	if err != nil {
		return nil, err
	}
	def := func(p *time.Duration, d time.Duration) {
		if *p <= 0 {
			*p = d
		}
	}
	if o.PageSize == 0 {
		o.PageSize = DefaultPageSize
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = DefaultMaxRetries
	}
	o.MaxRetries = max(o.MaxRetries, 0)
	def(&o.MaxRetryWait, DefaultMaxRetryWait)
	def(&o.BaseBackoff, DefaultBaseBackoff)
	def(&o.MaxBackoff, DefaultMaxBackoff)
	def(&o.TokenEarlyExpiry, DefaultTokenEarlyExpiry)
	def(&o.RequestTimeout, DefaultRequestTimeout)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	g := &Graph{
		opts:     o,
		tokenURL: authority.String() + "/" + url.PathEscape(o.TenantID) + "/oauth2/v2.0/token",
		scope:    graphURL.String() + "/.default",
		graphURL: graphURL,
		log:      o.Logger,
		m:        newGraphMetrics(o.Metrics),
		wait:     sleep,
		tokLock:  make(chan struct{}, 1),
	}
	g.client = &http.Client{
		Transport:     &instrumented{base: base, m: g.m},
		CheckRedirect: hc.CheckRedirect,
		Timeout:       hc.Timeout,
	}
	return g, nil
}

func baseURL(field, v, def string) (*url.URL, error) {
	if v == "" {
		v = def
	}
	u, err := url.Parse(strings.TrimRight(v, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" {
		return nil, fmt.Errorf("mdm graph: %s: %q is not an http(s) base URL", field, v)
	}
	return u, nil
}

// Snapshot reads every managed device and the transitive user members of
// each group in groups (Entra object ids). It returns a complete snapshot
// or an error; TakenAt is when the read began.
func (g *Graph) Snapshot(ctx context.Context, groups []string) (*Snapshot, error) {
	ids, err := groupIDs(groups)
	if err != nil {
		return nil, err
	}
	r := &run{g: g, seen: make(map[string]bool)}
	snap := &Snapshot{TakenAt: time.Now().UTC(), Groups: make(map[string][]Member, len(ids))}
	b := newBuilder(int(g.lastTotal.Load()))
	if err := r.devices(ctx, b); err != nil {
		return nil, fmt.Errorf("mdm graph: managed devices: %w", err)
	}
	b.finish(snap)
	for _, id := range ids {
		ms, err := r.members(ctx, id, &snap.Unnamed)
		if err != nil {
			return nil, fmt.Errorf("mdm graph: group %s: %w", id, err)
		}
		snap.Groups[id] = ms
	}
	snap.Pages, snap.Requests = r.pages, r.requests
	g.lastTotal.Store(int64(snap.Total()))
	g.m.records.Set(float64(snap.Total()))
	if snap.Unnamed > 0 {
		g.log.Warn("group members without userPrincipalName and mail: the application cannot read users; "+
			"they are matched to mailboxes only through device records carrying their id (grant "+PermUsers+" to match all)",
			"members", snap.Unnamed)
	}
	g.log.Info("mdm snapshot read", "records", len(snap.Records), "no_eas_id", snap.NoEASID,
		"conflicts", snap.Conflicts, "groups", len(snap.Groups), "unnamed_members", snap.Unnamed, "pages", r.pages,
		"requests", r.requests, "retries", r.retries, "duration", time.Since(snap.TakenAt).Round(time.Millisecond))
	return snap, nil
}

var guidRe = regexp.MustCompile(`^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$`)

// groupIDs validates and dedupes group ids before any request is made.
func groupIDs(groups []string) ([]string, error) {
	var ids []string
	for _, id := range groups {
		if !guidRe.MatchString(id) {
			return nil, fmt.Errorf("mdm graph: group %q: not an object id (GUID)", id)
		}
		dup := false
		for _, have := range ids {
			dup = dup || strings.EqualFold(have, id)
		}
		if !dup {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// run is the state of one snapshot: its retry budget, counters and the
// nextLinks followed.
type run struct {
	g        *Graph
	retries  int
	waited   time.Duration
	reauthed bool
	pages    int
	requests int
	seen     map[string]bool
}

func (r *run) devices(ctx context.Context, b *builder) error {
	var pending []Record
	page := 0
	item := func(dec *json.Decoder) error {
		var d device
		if err := decodeItem(dec, &d); err != nil {
			return err
		}
		rec, err := d.record()
		if err != nil {
			if d.ID != "" {
				return &dataError{fmt.Errorf("record %s: %w", d.ID, err)}
			}
			return &dataError{fmt.Errorf("page %d item %d: %w", page, len(pending)+1, err)}
		}
		pending = append(pending, rec)
		return nil
	}
	u := r.g.graphURL.String() + "/v1.0/deviceManagement/managedDevices?$select=" + deviceSelect +
		"&$top=" + strconv.Itoa(r.g.opts.PageSize)
	return r.list(ctx, endpointDevices, u, item,
		func(n int) { page, pending = n, pending[:0] },
		func() error {
			where := "page " + strconv.Itoa(page)
			for _, rec := range pending {
				if err := b.add(rec, where); err != nil {
					return err
				}
			}
			return nil
		})
}

// members reads the transitive user members of group.
//
// It lists /transitiveMembers without the /microsoft.graph.user cast and
// keeps the items whose @odata.type is a user. The cast is an advanced
// query: Graph serves it only with ConsistencyLevel: eventual and
// $count=true, from an index "that might not be up-to-date with recent
// changes" (api-reference/v1.0/api/group-list-transitivemembers.md,
// concepts/aad-advanced-queries.md in microsoftgraph/microsoft-graph-docs-contrib).
// Who is exempt from the policy is a security decision, so the connector
// reads the directory itself, consistent, at the price of also reading the
// nested groups and devices (a few items) that it then drops.
//
// Every user member must carry an id: the sync joins on it. A member
// without one fails the snapshot (an infrastructure failure: nothing is
// written) with an error naming the permission. Members whose UPN and mail
// are both null (the application lacks User.Read.All) are kept and counted
// in *unnamed.
func (r *run) members(ctx context.Context, group string, unnamed *int) ([]Member, error) {
	var out, pending []Member
	seen := make(map[string]bool)
	done, n := 0, 0 // items of the committed pages; item number within them and this page
	item := func(dec *json.Decoder) error {
		var m memberJSON
		if err := decodeItem(dec, &m); err != nil {
			return err
		}
		n++
		mb, ok, err := userMember(&m, n)
		if err != nil {
			return &dataError{err}
		}
		if !ok {
			return nil // a nested group, a device, a contact: not a mailbox user
		}
		pending = append(pending, mb)
		return nil
	}
	u := r.g.graphURL.String() + "/v1.0/groups/" + url.PathEscape(group) +
		"/transitiveMembers?$select=" + memberSelect + "&$top=" +
		strconv.Itoa(min(r.g.opts.PageSize, maxMemberPageSize))
	err := r.list(ctx, endpointMembers, u, item,
		func(int) { pending, n = pending[:0], done },
		func() error {
			done = n
			for _, m := range pending {
				k := strings.ToLower(m.ID)
				if !seen[k] { // a user reached through two nested groups
					seen[k] = true
					out = append(out, m)
					if !m.Named() {
						*unnamed++
					}
				}
			}
			return nil
		})
	if out == nil {
		out = []Member{}
	}
	return out, err
}

// userMember converts item n of a transitiveMembers page: ok is false for
// a directory object that is not a user; a user must carry an object id
// (the error names the permission to check), its UPN and mail may be
// null.
func userMember(m *memberJSON, n int) (mb Member, ok bool, err error) {
	switch {
	case m.Type == "":
		return mb, false, fmt.Errorf("member %d: @odata.type missing (a directoryObject collection names each item's type)", n)
	case m.Type != userType:
		return mb, false, nil
	}
	id := strings.TrimSpace(m.ID)
	if !guidRe.MatchString(id) {
		what := "missing"
		if id != "" {
			what = fmt.Sprintf("%q is not an object id", clip(id, 60))
		}
		return mb, false, fmt.Errorf("member %d: id: %s; the sync joins members by Entra object id, "+
			"so it stops here: check that the application has %s (application permission, admin consent granted)", n, what, PermMembers)
	}
	return Member{ID: id, UserPrincipalName: strings.TrimSpace(m.UserPrincipalName), Mail: strings.TrimSpace(m.Mail)}, true, nil
}

// list reads every page of a collection, following @odata.nextLink whole.
// begin(page) is called before each attempt at a page and commit after the
// page decoded completely, so a page that is retried is never counted
// twice.
func (r *run) list(ctx context.Context, endpoint, link string, item func(*json.Decoder) error, begin func(page int), commit func() error) error {
	empty := 0 // consecutive empty pages
	for page := 1; link != ""; page++ {
		if r.seen[link] {
			return fmt.Errorf("page %d: nextLink loop: %s was already read", page, clip(link, 300))
		}
		r.seen[link] = true
		var n int
		next, err := r.get(ctx, endpoint, link, func(body io.Reader) (next string, err error) {
			begin(page)
			next, n, err = decodePage(body, item)
			return next, err
		})
		if err != nil {
			return fmt.Errorf("page %d: %w", page, err)
		}
		if n > 0 {
			empty = 0
		} else if empty++; empty > maxEmptyPages {
			return fmt.Errorf("page %d: %d empty pages in a row, each with a nextLink", page, empty)
		}
		if err := commit(); err != nil {
			return err
		}
		r.pages++
		if next != "" {
			if err := r.g.checkNextLink(next); err != nil {
				return fmt.Errorf("page %d: %w", page, err)
			}
		}
		link = next
	}
	return nil
}

// checkNextLink refuses a nextLink that leaves the Graph endpoint: the
// bearer token must not be sent anywhere else.
func (g *Graph) checkNextLink(link string) error {
	u, err := url.Parse(link)
	if err != nil {
		return fmt.Errorf("nextLink %q: %w", clip(link, 200), err)
	}
	if u.Scheme != g.graphURL.Scheme || u.Host != g.graphURL.Host {
		return fmt.Errorf("nextLink %q leaves %s", clip(link, 200), g.graphURL.Host)
	}
	return nil
}

// permanent marks a failure that retrying cannot fix.
type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }

// get fetches one page, retrying within the snapshot's budget.
func (r *run) get(ctx context.Context, endpoint, link string, page func(io.Reader) (string, error)) (string, error) {
	for attempt := 0; ; attempt++ {
		next, retryAfter, err := r.try(ctx, endpoint, link, page)
		if err == nil {
			return next, nil
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
		var p *permanent
		if errors.As(err, &p) {
			return "", p.err
		}
		if err := r.backoff(ctx, endpoint, attempt, retryAfter, err); err != nil {
			return "", err
		}
	}
}

// backoff waits before a retry, or returns an error when the snapshot's
// retry budget cannot pay for the wait.
func (r *run) backoff(ctx context.Context, endpoint string, attempt int, retryAfter time.Duration, cause error) error {
	o := r.g.opts
	if r.retries >= o.MaxRetries {
		return fmt.Errorf("retry budget spent (%d retries): %w", r.retries, cause)
	}
	d := retryAfter
	if d <= 0 {
		d = backoff(attempt, o.BaseBackoff, o.MaxBackoff)
	}
	if r.waited+d > o.MaxRetryWait {
		return fmt.Errorf("retry budget spent (a wait of %v would pass %v of waiting): %w", d.Round(time.Millisecond), o.MaxRetryWait, cause)
	}
	r.retries++
	r.waited += d
	r.g.m.retries.Inc()
	r.g.log.Warn("graph request failed; retrying", "endpoint", endpoint, "retry", r.retries,
		"wait", d.Round(time.Millisecond), "err", cause)
	return r.g.wait(ctx, d)
}

// try makes one request and reads its page. Errors are retryable unless
// wrapped in permanent; retryAfter is the server's requested wait, if any.
func (r *run) try(ctx context.Context, endpoint, link string, page func(io.Reader) (string, error)) (next string, retryAfter time.Duration, err error) {
	tok, err := r.g.token(ctx)
	if err != nil {
		err, retryable, ra := tokenError(err)
		if !retryable {
			return "", 0, &permanent{err}
		}
		return "", ra, err
	}
	actx, cancel := context.WithTimeout(withEndpoint(ctx, endpoint), r.g.opts.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodGet, link, nil)
	if err != nil {
		return "", 0, &permanent{err}
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "easconnector")
	r.requests++
	resp, err := r.g.client.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
		resp.Body.Close()
	}()
	switch s := resp.StatusCode; {
	case s == http.StatusOK:
		next, err := page(&cappedReader{r: resp.Body, left: maxPageBytes})
		var de *dataError
		if errors.As(err, &de) {
			return "", 0, &permanent{de.err}
		}
		if err != nil {
			return "", 0, fmt.Errorf("read page: %w", err)
		}
		return next, 0, nil
	case s == http.StatusTooManyRequests || s == http.StatusRequestTimeout || s >= 500:
		ra, _ := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		return "", ra, graphError(resp)
	case s == http.StatusUnauthorized && !r.reauthed:
		// The token may have been revoked early: fetch a new one, once.
		r.reauthed = true
		r.g.dropToken(ctx)
		return "", 0, graphError(resp)
	default:
		return "", 0, &permanent{graphError(resp)}
	}
}

// cappedReader fails once more than left bytes were read, so a runaway
// body cannot exhaust memory.
type cappedReader struct {
	r    io.Reader
	left int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, fmt.Errorf("page larger than %d bytes", int64(maxPageBytes))
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// GraphError is an error answer from Microsoft Graph.
type GraphError struct {
	Status    int    // HTTP status
	Code      string // error.code, e.g. Authorization_RequestDenied, TooManyRequests
	Message   string // error.message
	InnerCode string // innerError.code, when Graph gives one
	RequestID string // innerError.request-id (or the request-id header): quote it to Microsoft support
	Date      string // innerError.date
}

func (e *GraphError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "graph: HTTP %d", e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.InnerCode != "" && e.InnerCode != e.Code && e.InnerCode != strconv.Itoa(e.Status) {
		b.WriteString("/" + e.InnerCode)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.RequestID != "" {
		b.WriteString(" (request-id " + e.RequestID + ")")
	}
	return b.String()
}

// graphError reads Graph's error body. JSON field names match
// case-insensitively, so both innerError and innererror are read.
func graphError(resp *http.Response) *GraphError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Error struct {
			Code       string `json:"code"`
			Message    string `json:"message"`
			InnerError struct {
				Code      string `json:"code"`
				RequestID string `json:"request-id"`
				Date      string `json:"date"`
			} `json:"innerError"`
		} `json:"error"`
	}
	ge := &GraphError{Status: resp.StatusCode}
	if json.Unmarshal(body, &e) == nil && e.Error.Code != "" {
		ge.Code = clip(sanitize(e.Error.Code), 100)
		ge.Message = clip(sanitize(e.Error.Message), 500)
		ge.InnerCode = clip(sanitize(e.Error.InnerError.Code), 100)
		ge.RequestID = clip(sanitize(e.Error.InnerError.RequestID), 100)
		ge.Date = clip(sanitize(e.Error.InnerError.Date), 40)
	} else {
		ge.Message = clip(sanitize(string(body)), 200)
	}
	if ge.RequestID == "" {
		ge.RequestID = clip(sanitize(resp.Header.Get("request-id")), 100)
	}
	return ge
}

// sanitize drops control characters from service-supplied text before it
// reaches logs.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.TrimSpace(s))
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

type endpointKey struct{}

func withEndpoint(ctx context.Context, endpoint string) context.Context {
	return context.WithValue(ctx, endpointKey{}, endpoint)
}

type graphMetrics struct {
	set     *metrics.Set
	retries *metrics.Counter
	records *metrics.Gauge
}

func newGraphMetrics(set *metrics.Set) *graphMetrics {
	return &graphMetrics{
		set:     set,
		retries: set.GetOrCreateCounter("easconnector_mdm_retries_total"),
		records: set.GetOrCreateGauge("easconnector_mdm_records", nil),
	}
}

// instrumented counts and times every request to the token endpoint and to
// Graph, by endpoint and status ("error" when no answer came).
type instrumented struct {
	base http.RoundTripper
	m    *graphMetrics
}

func (t *instrumented) RoundTrip(req *http.Request) (*http.Response, error) {
	ep, _ := req.Context().Value(endpointKey{}).(string)
	if ep == "" {
		ep = "other"
	}
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	status := "error"
	if err == nil {
		status = strconv.Itoa(resp.StatusCode)
	}
	t.m.set.GetOrCreateCounter(`easconnector_mdm_requests_total{endpoint="` + ep + `",status="` + status + `"}`).Inc()
	t.m.set.GetOrCreatePrometheusHistogram(`easconnector_mdm_request_duration_seconds{endpoint="` + ep + `"}`).UpdateDuration(start)
	return resp, err
}

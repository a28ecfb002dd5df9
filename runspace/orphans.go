package runspace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/masterzen/winrm/soap"

	"github.com/easconnector/easconnector/runspace/psrp"
)

// Orphaned shells. A Client Access server that answers slower than the
// client waits still carries out what it was asked: a Create the client
// gave up on leaves a shell (a WinRS cmd shell or a PSRP runspace pool)
// on the server until WinRM's IdleTimeout (2 h by default), and each one
// holds one of the account's MaxShellsPerUser / PowerShellMaxConcurrency
// slots, so a few slow episodes exhaust them. The orphan book of a pool
// sees every Create and Delete its transports send (transport.post):
//
//   - a request whose answer never came (the client's deadline, a reset
//     connection, a gateway's 502/504) is remembered per server: a PSRP
//     Create by the ShellId the client chose itself (MS-PSRP 3.1.5.3.1), a
//     Delete by the ShellId it named; a WinRS Create, where the server picks
//     the ShellId, by the rsp:Name the client sent (MS-WSMV 2.2.4.37, the
//     Shell type's Name element; pypsrp's WinRS(name=...) sends it, recorded
//     against Windows in tests_pypsrp/responses/test_winrs_extra_opts.yml)
//     and by when it was sent;
//   - once that server answers anything again, a sweep deletes them: by id,
//     or for WinRS by enumerating the account's shells (a WS-Enumeration
//     Enumerate of http://schemas.microsoft.com/wbem/wsman/1/windows/shell
//     with OptimizeEnumeration, MS-WSMV 3.1.4.8.2, as pypsrp's
//     RunspacePool.get_runspace_pools and Get-WSManInstance -Enumerate
//     shell do; recorded in test_psrp_disconnect_runspaces.yml) and deleting
//     the cmd shells of ours that no session holds. Windows does not echo a
//     cmd shell's Name in the recorded CreateResponse, so a listed shell
//     without a Name is matched by its creation time (now − ShellRunTime)
//     falling within the lost Create's window, and only while no Create to
//     that server is in flight (a shell being made for a session must not be
//     mistaken for an orphan);
//   - creations against a server whose Creates go unanswered are held back
//     with an exponential, jittered backoff (base FailoverBackoff, reset by
//     any answered Create), so a slow server is not asked for a new shell at
//     full rate while the pool retries.
//
// The book outlives the pool's transport factories (a failed Start keeps
// what it lost), sweeps run in the background on the attached factory, and
// detach (the factory's close) cancels and awaits them.

const (
	wsenNamespace    = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
	wsenEnumerate    = wsenNamespace + "/Enumerate"
	wsenPull         = wsenNamespace + "/Pull"
	resourceURIShell = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
	resourceURICmd   = resourceURIShell + "/cmd"
	// orphanMarkerPrefix starts the rsp:Name of every WinRS shell we create.
	orphanMarkerPrefix = "easconnector-"
	// maxLostPerServer bounds the book: past it the oldest record is
	// dropped (and counted as given up).
	maxLostPerServer = 256
	// maxPulls bounds one enumeration.
	maxPulls = 64
	// runTimeSlack widens the creation window: ShellRunTime counts whole
	// seconds ("P0DT0H0M14S").
	runTimeSlack = 2 * time.Second
	// enumerateMaxElements is what pypsrp and PowerShell ask for.
	enumerateMaxElements = 32000
)

// errCreateHeld is the cause of a Create refused by the creation backoff.
var errCreateHeld = errors.New("shell creation held back: the server's last creations went unanswered")

// lostShell is one request whose answer never came.
type lostShell struct {
	seq      uint64
	id       string // ShellId when the client knows it
	resource string // ResourceURI of the shell
	marker   string // rsp:Name sent with a WinRS Create
	create   bool   // a Create (the server may still be making it), not a Delete
	sent     time.Time
	lost     time.Time // when the client gave up
}

// orphanServer is the book's page for one server; orphanBook.mu guards it.
type orphanServer struct {
	lost       []lostShell
	live       map[string]bool // ShellIds created for us and not yet deleted
	creating   int             // Creates in flight
	sweeping   bool
	nextSweep  time.Time
	sweepFails int
	timeouts   int // consecutive unanswered Creates
	holdUntil  time.Time
}

// orphanBook is described above. Its methods are safe for concurrent use
// and do nothing on a nil book (standalone sessions).
type orphanBook struct {
	opts *Options
	log  *slog.Logger
	met  *orphanMetrics

	mu      sync.Mutex
	seq     uint64
	servers map[string]*orphanServer
	f       *transportFactory // attached: sweeps use it
	ctx     context.Context   // ends when f is detached
	cancel  context.CancelFunc
	wg      sync.WaitGroup // sweeps
}

func newOrphanBook(o *Options) *orphanBook {
	b := &orphanBook{opts: o, log: o.Logger, servers: map[string]*orphanServer{}}
	b.met = newOrphanMetrics(o.Metrics, b)
	return b
}

// attach makes f the factory of the book's sweeps and the book f's.
func (b *orphanBook) attach(f *transportFactory) {
	if b == nil {
		return
	}
	f.orphans = b
	b.mu.Lock()
	defer b.mu.Unlock()
	b.f = f
	b.ctx, b.cancel = context.WithCancel(context.Background())
}

// detach stops using f: sweeps in flight are cancelled and awaited. What
// they did not delete stays in the book for the next factory.
func (b *orphanBook) detach(f *transportFactory) {
	if b == nil {
		return
	}
	b.mu.Lock()
	if b.f == f {
		b.f = nil
		b.cancel()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// flush gives every server's orphans a last sweep within ctx (Pool.Close):
// once the process is gone nobody knows them. Sweeps in flight finish first.
func (b *orphanBook) flush(ctx context.Context) {
	if b == nil || !waitGroup(ctx, &b.wg) {
		return
	}
	b.mu.Lock()
	f := b.f
	var servers []string
	for server, st := range b.servers {
		if f != nil && len(st.lost) > 0 && !st.sweeping {
			st.sweeping = true
			servers = append(servers, server)
		}
	}
	b.mu.Unlock()
	var wg sync.WaitGroup
	for _, server := range servers {
		wg.Go(func() { b.sweep(ctx, f, server) })
	}
	wg.Wait()
}

func (b *orphanBook) serverLocked(server string) *orphanServer {
	st := b.servers[server]
	if st == nil {
		st = &orphanServer{live: map[string]bool{}}
		b.servers[server] = st
	}
	return st
}

// Pending returns how many shells are remembered and not yet deleted.
func (b *orphanBook) pending() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, st := range b.servers {
		n += len(st.lost)
	}
	return n
}

// post sends one WS-Man request through the orphan book: Creates are
// gated by the creation backoff and marked, unanswered Creates and Deletes
// are remembered, answers trigger the server's sweep.
func (t *transport) post(action, body string) (string, error) {
	b := t.f.orphans
	if b == nil {
		return t.send(action, body)
	}
	var rec lostShell
	switch action {
	case "Create":
		if err := b.gate(t); err != nil {
			return "", err
		}
		body, rec = markCreate(body)
		b.mu.Lock()
		b.serverLocked(t.server).creating++
		b.mu.Unlock()
	case "Delete":
		rec = lostShell{id: selectorShellID(body), resource: headerResourceURI(body)}
	}
	rec.sent = time.Now()
	resp, err := t.send(action, body)
	b.settle(t, action, rec, err)
	return resp, err
}

// gate waits out the creation backoff of t's server, within t's context
// (aborted by the caller's deadline), or refuses at once when the wait
// would outlast ConnectTimeout anyway.
func (b *orphanBook) gate(t *transport) error {
	b.mu.Lock()
	st := b.serverLocked(t.server)
	wait, n := time.Until(st.holdUntil), st.timeouts
	b.mu.Unlock()
	if wait <= 0 {
		return nil
	}
	b.met.held.Inc()
	if wait > b.opts.ConnectTimeout {
		return &TransportError{Action: "Create", URL: t.url,
			Err: fmt.Errorf("%w (%d in a row), for another %s", errCreateHeld, n, wait.Round(time.Millisecond))}
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-t.ctx.Done():
		return &TransportError{Action: "Create", URL: t.url, Err: errAborted}
	}
}

// lostAnswer reports whether err means the request may have reached the
// server but its answer never reached us.
func lostAnswer(err error) bool {
	if te, ok := errors.AsType[*TransportError](err); ok {
		var oe *net.OpError
		if errors.As(te.Err, &oe) && oe.Op == "dial" {
			return false // never sent
		}
		return !errors.Is(te.Err, errCreateHeld)
	}
	if se, ok := errors.AsType[*StatusError](err); ok {
		// A proxy or load balancer that gave up waiting for WinRM.
		return se.StatusCode == 502 || se.StatusCode == 504
	}
	return false
}

func (b *orphanBook) settle(t *transport, action string, rec lostShell, err error) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.serverLocked(t.server)
	if action == "Create" {
		st.creating--
	}
	if lostAnswer(err) {
		if action == "Create" {
			st.timeouts++
			base := max(b.opts.FailoverBackoff, 50*time.Millisecond)
			d := min(base<<min(st.timeouts-1, 6), base*maxFailoverBackoffFactor)
			st.holdUntil = now.Add(jitter(d))
		}
		if rec.id == "" && rec.marker == "" {
			return // nothing to find it by (a Delete without a ShellId)
		}
		if rec.id != "" {
			delete(st.live, rec.id)
		}
		b.seq++
		rec.seq, rec.create, rec.lost = b.seq, action == "Create", now
		if len(st.lost) >= maxLostPerServer {
			b.log.Warn("runspace: too many unanswered shell requests remembered; forgetting the oldest",
				"server", t.server, "shell", st.lost[0].id)
			st.lost = st.lost[1:]
			b.met.forgotten.Inc()
		}
		st.lost = append(st.lost, rec)
		b.log.Warn("runspace: no answer to a shell request; the shell is deleted once the server answers again",
			"server", t.server, "action", action, "shell", rec.id, "name", rec.marker, "err", err)
		return
	}
	// The server answered.
	switch action {
	case "Create":
		st.timeouts, st.holdUntil = 0, time.Time{}
		if err == nil {
			if id := t.shell(); id != "" {
				st.live[strings.ToUpper(id)] = true
			}
		}
	case "Delete":
		if rec.id != "" {
			delete(st.live, strings.ToUpper(rec.id))
		}
	}
	if err == nil || errors.As(err, new(*FaultError)) || errors.As(err, new(*StatusError)) {
		b.maybeSweepLocked(t.server, st, now)
	}
}

// maybeSweepLocked starts the server's sweep when it has orphans and none
// runs.
func (b *orphanBook) maybeSweepLocked(server string, st *orphanServer, now time.Time) {
	if b.f == nil || st.sweeping || len(st.lost) == 0 || now.Before(st.nextSweep) {
		return
	}
	st.sweeping = true
	f, ctx := b.f, b.ctx
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.sweep(ctx, f, server)
	}()
}

// sweep deletes the server's orphans, within ConnectTimeout.
func (b *orphanBook) sweep(ctx context.Context, f *transportFactory, server string) {
	ctx, cancel := context.WithTimeout(ctx, b.opts.ConnectTimeout)
	defer cancel()
	tr := f.newTransport(server)
	defer tr.abort()
	stop := context.AfterFunc(ctx, tr.abort)
	defer stop()

	b.mu.Lock()
	items := slices.Clone(b.serverLocked(server).lost)
	b.mu.Unlock()
	settleAge := b.opts.ConnectTimeout
	done := map[uint64]bool{}
	var deleted, gone int
	var errs []error
	var byName []lostShell
	for _, it := range items {
		if it.id == "" {
			byName = append(byName, it)
			continue
		}
		err := tr.deleteShell(b.opts, it.resource, it.id)
		switch {
		case err == nil:
			done[it.seq] = true
			deleted++
		case errors.As(err, new(*FaultError)):
			// Not there (w:InvalidSelectors): never made, or already gone.
			// A Create may still be under way on a slow server: keep it
			// until it is older than the time the server had to answer.
			if !it.create || time.Since(it.lost) >= settleAge {
				done[it.seq] = true
				gone++
			}
		default:
			errs = append(errs, fmt.Errorf("delete shell %s: %w", it.id, err))
		}
	}
	if len(byName) > 0 {
		d, g, err := b.sweepByEnumeration(tr, server, byName, done)
		deleted += d
		gone += g
		if err != nil {
			errs = append(errs, err)
		}
	}

	now := time.Now()
	b.mu.Lock()
	st := b.serverLocked(server)
	st.lost = slices.DeleteFunc(st.lost, func(l lostShell) bool { return done[l.seq] })
	st.sweeping = false
	if len(errs) > 0 {
		st.sweepFails++
		base := max(b.opts.FailoverBackoff, 50*time.Millisecond)
		st.nextSweep = now.Add(jitter(min(base<<min(st.sweepFails-1, 6), base*maxFailoverBackoffFactor)))
	} else {
		st.sweepFails = 0
		st.nextSweep = now.Add(min(settleAge/4, 15*time.Second))
	}
	left := len(st.lost)
	b.mu.Unlock()
	b.met.deleted.Add(deleted)
	b.met.gone.Add(gone)
	if deleted > 0 || gone > 0 || len(errs) > 0 {
		b.log.Info("runspace: orphaned shells swept", "server", server, "deleted", deleted, "gone", gone,
			"pending", left, "err", errors.Join(errs...))
	}
}

// sweepByEnumeration lists the account's shells on the server and deletes
// the WinRS orphans among them; it marks resolved records in done.
func (b *orphanBook) sweepByEnumeration(tr *transport, server string, items []lostShell, done map[uint64]bool) (deleted, gone int, err error) {
	shells, err := tr.enumerateShells(b.opts)
	if err != nil {
		return 0, 0, fmt.Errorf("enumerate shells: %w", err)
	}
	now := time.Now()
	b.mu.Lock()
	st := b.serverLocked(server)
	creating, live := st.creating, maps.Clone(st.live)
	b.mu.Unlock()
	match := matchOrphans(items, shells, live, b.opts.User, b.opts.ConnectTimeout, creating > 0, now)
	for _, it := range items {
		id, ok := match[it.seq]
		if !ok {
			if now.Sub(it.lost) >= b.opts.ConnectTimeout && creating == 0 {
				done[it.seq] = true // not there: never made, or already gone
				gone++
			}
			continue
		}
		switch derr := tr.deleteShell(b.opts, resourceURICmd, id); {
		case derr == nil:
			done[it.seq] = true
			deleted++
		case errors.As(derr, new(*FaultError)):
			done[it.seq] = true
			gone++
		default:
			err = errors.Join(err, fmt.Errorf("delete shell %s: %w", id, derr))
		}
	}
	return deleted, gone, err
}

// enumeratedShell is one rsp:Shell of an enumeration.
type enumeratedShell struct {
	ID, Name, ResourceURI, Owner string
	Created                      time.Time // now − ShellRunTime; zero when not reported
}

// matchOrphans pairs WinRS records (by marker) with listed shells: a shell
// is ours if it is a cmd shell of our account that no session holds, and
// either carries the record's Name, or carries none and was created within
// the record's window [sent−slack, lost+settle+slack]. Time matching is
// skipped while a Create is in flight (unsafe); each shell and record is
// used once, earliest first.
func matchOrphans(items []lostShell, shells []enumeratedShell, live map[string]bool, user string, settle time.Duration, creating bool, now time.Time) map[uint64]string {
	out := map[uint64]string{}
	used := map[string]bool{}
	var candidates []enumeratedShell
	for _, sh := range shells {
		id := strings.ToUpper(sh.ID)
		if id == "" || live[id] || !strings.EqualFold(sh.ResourceURI, resourceURICmd) || !sameAccount(sh.Owner, user) {
			continue
		}
		candidates = append(candidates, sh)
	}
	slices.SortFunc(candidates, func(a, b enumeratedShell) int { return a.Created.Compare(b.Created) })
	byMarker := map[string]uint64{}
	for _, it := range items {
		if it.marker != "" {
			byMarker[it.marker] = it.seq
		}
	}
	for _, sh := range candidates {
		if seq, ok := byMarker[sh.Name]; ok && sh.Name != "" {
			out[seq] = sh.ID
			used[strings.ToUpper(sh.ID)] = true
		}
	}
	if creating {
		return out
	}
	sorted := slices.Clone(items)
	slices.SortFunc(sorted, func(a, b lostShell) int { return a.sent.Compare(b.sent) })
	for _, it := range sorted {
		if _, ok := out[it.seq]; ok || it.marker == "" {
			continue
		}
		from, to := it.sent.Add(-runTimeSlack), it.lost.Add(settle+runTimeSlack)
		for _, sh := range candidates {
			if sh.Name != "" || used[strings.ToUpper(sh.ID)] || sh.Created.IsZero() {
				continue
			}
			if !sh.Created.Before(from) && !sh.Created.After(to) {
				out[it.seq] = sh.ID
				used[strings.ToUpper(sh.ID)] = true
				break
			}
		}
	}
	return out
}

// sameAccount compares a shell's Owner ("DOMAIN\user", "user", or
// "user@domain") with the configured user by account name; an empty Owner
// is taken as ours (a server that does not report it lists only the
// caller's shells).
func sameAccount(owner, user string) bool {
	if owner == "" {
		return true
	}
	name := func(s string) string {
		if _, after, ok := strings.Cut(s, `\`); ok {
			s = after
		}
		s, _, _ = strings.Cut(s, "@")
		return strings.ToLower(strings.TrimSpace(s))
	}
	return name(owner) == name(user)
}

var (
	shellTagRe    = regexp.MustCompile(`<([A-Za-z0-9_]+:)?Shell(\s[^>]*)?>`)
	shellIDAttrRe = regexp.MustCompile(`\sShellId="([^"]+)"`)
	resourceURIRe = regexp.MustCompile(`<(?:[A-Za-z0-9_]+:)?ResourceURI[^>]*>\s*([^<\s]+)\s*<`)
)

// markCreate reads a Create: a PSRP Create names its ShellId; a WinRS one
// gets a unique rsp:Name (MS-WSMV 2.2.4.37) to find it by.
func markCreate(body string) (string, lostShell) {
	rec := lostShell{resource: headerResourceURI(body)}
	loc := shellTagRe.FindStringSubmatchIndex(body)
	if loc == nil {
		return body, rec
	}
	tag := body[loc[0]:loc[1]]
	if m := shellIDAttrRe.FindStringSubmatch(tag); m != nil {
		rec.id = strings.ToUpper(m[1])
		return body, rec
	}
	if strings.HasSuffix(tag, "/>") {
		return body, rec
	}
	prefix := ""
	if loc[2] >= 0 {
		prefix = body[loc[2]:loc[3]]
	}
	var r [8]byte
	_, _ = rand.Read(r[:]) // crypto/rand.Read never fails
	rec.marker = orphanMarkerPrefix + hex.EncodeToString(r[:])
	el := "<" + prefix + "Name>" + rec.marker + "</" + prefix + "Name>"
	return body[:loc[1]] + el + body[loc[1]:], rec
}

func selectorShellID(body string) string {
	if m := shellIDRe.FindStringSubmatch(body); m != nil {
		return strings.ToUpper(m[1])
	}
	return ""
}

func headerResourceURI(body string) string {
	if m := resourceURIRe.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	return ""
}

// wsmanRequest builds a request for the orphan sweep.
func (t *transport) wsmanRequest(o *Options, action, resourceURI, shellID string) *soap.SoapMessage {
	m := soap.NewMessage()
	h := m.Header().
		To(t.url).
		ReplyTo("http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous").
		MaxEnvelopeSize(envelopeSize).
		Id("uuid:" + psrp.NewGUID().String()).
		Locale("en-US").
		Timeout(o.wsmanTimeout()).
		Action(action).
		ResourceURI(resourceURI)
	if shellID != "" {
		h = h.ShellId(shellID)
	}
	h.Build()
	return m
}

// deleteShell deletes one shell by id (MS-WSMV 3.1.4.3, wxf:Delete).
func (t *transport) deleteShell(o *Options, resourceURI, id string) error {
	if resourceURI == "" {
		resourceURI = resourceURICmd
	}
	m := t.wsmanRequest(o, "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete", resourceURI, id)
	m.NewBody()
	_, err := t.send("Delete", m.String())
	return err
}

// enumerateShells lists the account's shells (Enumerate with
// OptimizeEnumeration, then Pull until EndOfSequence), as pypsrp does in
// test_psrp_disconnect_runspaces.yml.
func (t *transport) enumerateShells(o *Options) ([]enumeratedShell, error) {
	body, err := t.send("Enumerate", t.enumerateEnvelope(o))
	if err != nil {
		return nil, err
	}
	var out []enumeratedShell
	for pulls := 0; ; pulls++ {
		page, err := parseShellEnumeration(strings.NewReader(body), time.Now())
		if err != nil {
			return nil, err
		}
		out = append(out, page.shells...)
		if page.end || page.context == "" {
			return out, nil
		}
		if pulls == maxPulls {
			return nil, fmt.Errorf("%w: enumeration did not end after %d pulls", ErrProtocol, maxPulls)
		}
		pm := t.wsmanRequest(o, wsenPull, resourceURIShell, "")
		p := pm.CreateBodyElement("Pull", soap.DOM_NS_ENUM)
		pm.CreateElement(p, "EnumerationContext", soap.DOM_NS_ENUM).SetContent(page.context)
		pm.CreateElement(p, "MaxElements", soap.DOM_NS_ENUM).SetContent(strconv.Itoa(enumerateMaxElements))
		if body, err = t.send("Pull", pm.String()); err != nil {
			return nil, err
		}
	}
}

// enumerateEnvelope is the Enumerate of the shell resource, as pypsrp
// sends it.
func (t *transport) enumerateEnvelope(o *Options) string {
	m := t.wsmanRequest(o, wsenEnumerate, resourceURIShell, "")
	en := m.CreateBodyElement("Enumerate", soap.DOM_NS_ENUM)
	m.CreateElement(en, "OptimizeEnumeration", soap.DOM_NS_WSMAN_DMTF)
	m.CreateElement(en, "MaxElements", soap.DOM_NS_WSMAN_DMTF).SetContent(strconv.Itoa(enumerateMaxElements))
	return m.String()
}

// enumerationPage is one EnumerateResponse or PullResponse.
type enumerationPage struct {
	context string
	end     bool
	shells  []enumeratedShell
}

type xmlEnumShell struct {
	ShellID      string `xml:"ShellId"`
	Name         string `xml:"Name"`
	ResourceURI  string `xml:"ResourceUri"`
	Owner        string `xml:"Owner"`
	ShellRunTime string `xml:"ShellRunTime"`
}

type xmlEnumResponse struct {
	XMLName xml.Name
	Context *string `xml:"EnumerationContext"`
	Items   []struct {
		Shells []xmlEnumShell `xml:"Shell"`
	} `xml:"Items"`
	End []struct{} `xml:"EndOfSequence"`
}

// parseShellEnumeration decodes an EnumerateResponse (items under
// wsman:Items, wsman:EndOfSequence: DSP0226 8.2.3) or a PullResponse
// (wsen:Items, wsen:EndOfSequence); elements are matched by local name.
func parseShellEnumeration(r io.Reader, now time.Time) (enumerationPage, error) {
	var env struct {
		Body struct {
			Responses []xmlEnumResponse `xml:",any"`
		} `xml:"Body"`
	}
	if err := xml.NewDecoder(r).Decode(&env); err != nil {
		return enumerationPage{}, fmt.Errorf("%w: enumeration response: %w", ErrProtocol, err)
	}
	var resp *xmlEnumResponse
	for i, x := range env.Body.Responses {
		if x.XMLName.Space == wsenNamespace && (x.XMLName.Local == "EnumerateResponse" || x.XMLName.Local == "PullResponse") {
			resp = &env.Body.Responses[i]
			break
		}
	}
	if resp == nil {
		return enumerationPage{}, fmt.Errorf("%w: enumeration response: no EnumerateResponse or PullResponse in the body", ErrProtocol)
	}
	page := enumerationPage{end: len(resp.End) > 0}
	if resp.Context != nil {
		page.context = strings.TrimSpace(*resp.Context)
	}
	for _, items := range resp.Items {
		for _, x := range items.Shells {
			sh := enumeratedShell{ID: strings.TrimSpace(x.ShellID), Name: strings.TrimSpace(x.Name),
				ResourceURI: strings.TrimSpace(x.ResourceURI), Owner: strings.TrimSpace(x.Owner)}
			if sh.ID == "" {
				return enumerationPage{}, fmt.Errorf("%w: enumeration response: rsp:Shell without ShellId", ErrProtocol)
			}
			if rt := strings.TrimSpace(x.ShellRunTime); rt != "" {
				d, err := parseXSDuration(rt)
				if err != nil {
					return enumerationPage{}, fmt.Errorf("%w: enumeration response: shell %s: ShellRunTime: %w", ErrProtocol, sh.ID, err)
				}
				sh.Created = now.Add(-d)
			}
			page.shells = append(page.shells, sh)
		}
	}
	return page, nil
}

// parseXSDuration reads the xs:duration forms WinRM writes: "P0DT0H0M14S",
// "PT7200.000S". Years and months are refused (WinRM never sends them).
func parseXSDuration(s string) (time.Duration, error) {
	rest, ok := strings.CutPrefix(s, "P")
	if !ok || rest == "" {
		return 0, fmt.Errorf("%q is not an xs:duration", s)
	}
	var d time.Duration
	inTime := false
	for rest != "" {
		if rest[0] == 'T' {
			if inTime {
				return 0, fmt.Errorf("%q: second T", s)
			}
			inTime = true
			rest = rest[1:]
			continue
		}
		i := strings.IndexAny(rest, "DHMS")
		if i <= 0 {
			return 0, fmt.Errorf("%q: malformed", s)
		}
		v, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil || v < 0 || v > 1e9 {
			return 0, fmt.Errorf("%q: bad number %q", s, rest[:i])
		}
		var unit time.Duration
		switch c := rest[i]; {
		case c == 'D' && !inTime:
			unit = 24 * time.Hour
		case c == 'H' && inTime:
			unit = time.Hour
		case c == 'M' && inTime:
			unit = time.Minute
		case c == 'S' && inTime:
			unit = time.Second
		default:
			return 0, fmt.Errorf("%q: unit %c out of place", s, c)
		}
		d += time.Duration(v * float64(unit))
		rest = rest[i+1:]
	}
	return d, nil
}

// orphanMetrics are the book's counters; their HELP texts are in
// internal/metricdoc's catalog, like every other series.
type orphanMetrics struct {
	deleted, gone, forgotten, held *metrics.Counter
}

func newOrphanMetrics(set *metrics.Set, b *orphanBook) *orphanMetrics {
	if set == nil {
		set = metrics.NewSet() // counted, never exposed
	}
	set.NewGauge("easconnector_runspace_orphan_shells_pending", func() float64 { return float64(b.pending()) })
	return &orphanMetrics{
		deleted:   set.NewCounter("easconnector_runspace_orphan_shells_deleted_total"),
		gone:      set.NewCounter("easconnector_runspace_orphan_shells_gone_total"),
		forgotten: set.NewCounter("easconnector_runspace_orphan_shells_forgotten_total"),
		held:      set.NewCounter("easconnector_runspace_shell_creations_held_total"),
	}
}

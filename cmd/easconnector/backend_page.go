package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/pipeline/notify"
	"github.com/easconnector/easconnector/server"
)

// What the backend adds for the status page and the API beyond the
// engine's results: what Default means, the Exchange servers' names, the
// fleet after each sync and the change-to-enforcement lag of its writes,
// one row per device change, and a device's story.

// maxPageNotes bounds the per-sync fleet counts kept (the engine keeps
// the last 32 results).
const maxPageNotes = 64

// storyAuditLines bounds the audit lines read for a sync's lag
// (ReadAuditTail reads at most 1 MiB anyway).
const storyAuditLines = 20_000

// pageNotes is what the backend measured after each sync.
type pageNotes struct {
	mu    sync.Mutex
	fleet map[string]*server.FleetCounts // by sync id
	lag   map[string]*server.LagStats
	order []string
	names map[string]string // lower-case host → Exchange server name
}

func (n *pageNotes) put(id string, f *server.FleetCounts, l *server.LagStats) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fleet == nil {
		n.fleet, n.lag = map[string]*server.FleetCounts{}, map[string]*server.LagStats{}
	}
	if _, ok := n.fleet[id]; !ok {
		n.order = append(n.order, id)
	}
	n.fleet[id], n.lag[id] = f, l
	if len(n.order) > maxPageNotes {
		delete(n.fleet, n.order[0])
		delete(n.lag, n.order[0])
		n.order = n.order[1:]
	}
}

func (n *pageNotes) get(id string) (*server.FleetCounts, *server.LagStats) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fleet[id], n.lag[id]
}

func (n *pageNotes) latest() *server.FleetCounts {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := len(n.order) - 1; i >= 0; i-- {
		if f := n.fleet[n.order[i]]; f != nil {
			return f
		}
	}
	return nil
}

// defaultMeans is the access level a Default decision falls to when no
// device access rule matches: the policy's view of the organization's
// DefaultAccessLevel (the file's, which a full sync asserts, else what
// Exchange reported at start).
func (b *backend) defaultMeans() string {
	if lv := b.a.cfg.Policy.DefaultAccessLevel; lv != "" {
		if l, err := exchange.ParseAccessLevel(lv); err == nil {
			return string(l)
		}
	}
	return string(b.a.orgDefault)
}

// decisionText says what a decision does: "Default (Quarantine)".
func decisionText(d, defaultMeans string) string {
	if d == string(pipeline.Default) && defaultMeans != "" {
		return d + " (" + defaultMeans + ")"
	}
	return d
}

// decorateStatus adds the page's fields to a status: what Default means,
// the fleet counts and the servers' names.
func (b *backend) decorateStatus(st *server.Status) {
	st.DefaultMeans = b.defaultMeans()
	st.Fleet = b.page.latest()
	b.page.mu.Lock()
	defer b.page.mu.Unlock()
	for i := range st.Servers {
		sv := &st.Servers[i]
		sv.Address = sv.Name
		if name := b.page.names[hostKey(sv.Address)]; name != "" {
			sv.Name = name
		}
	}
}

// decorateSync adds what was measured after the sync.
func (b *backend) decorateSync(sr *server.SyncResult) {
	sr.Fleet, sr.Lag = b.page.get(sr.ID)
}

func hostKey(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		addr = h
	}
	return strings.ToLower(strings.TrimSuffix(addr, "."))
}

// learnServerNames reads the Client Access servers' names (CAS01) once per
// full sync, so that the page shows names with the address as detail:
// Get-ClientAccessService, else Get-ExchangeServer (Exchange 2013).
func (b *backend) learnServerNames(ctx context.Context, kind pipeline.SyncKind) {
	b.page.mu.Lock()
	known := b.page.names != nil
	b.page.mu.Unlock()
	if b.a.client == nil || (known && kind != pipeline.SyncFull) || ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	servers, err := b.a.client.ClientAccessServers(ctx)
	if err != nil {
		servers, err = b.a.client.ExchangeServers(ctx)
	}
	if err != nil {
		b.log.Debug("read Exchange server names for the status page", "err", err)
		return
	}
	names := map[string]string{}
	for _, s := range servers {
		if s.Name != "" && s.Fqdn != "" {
			names[hostKey(s.Fqdn)] = s.Name
		}
	}
	b.page.mu.Lock()
	b.page.names = names
	b.page.mu.Unlock()
}

// afterSyncPage counts the fleet after a sync and measures the lag of its
// writes. It costs one pass over the engine's rows and one read of the
// audit log's tail.
func (b *backend) afterSyncPage(ctx context.Context, id string, kind pipeline.SyncKind, rep *pipeline.Report) {
	if rep == nil || rep.ID == "" {
		return
	}
	b.learnServerNames(ctx, kind)
	rows, total := b.a.engine.Devices(pipeline.DeviceQuery{}, 0, 0)
	if total == 0 {
		return
	}
	f := &server.FleetCounts{SyncID: rep.ID, At: rep.End, Total: total, Decisions: map[string]int{}, ExchangeStatesBefore: map[string]int{},
		ListsAfter: map[string]int{}}
	if f.At.IsZero() {
		f.At = time.Now()
	}
	type key struct{ mailbox, device string }
	lastSync := make(map[key]time.Time, len(rows))
	for _, r := range rows {
		f.Decisions[string(r.Decision)]++
		st := string(r.ExchangeState)
		if st == "" {
			st = string(exchange.AccessUnknown)
		}
		f.ExchangeStatesBefore[st]++
		after := string(r.ExchangeAfter)
		if after == "" {
			after = "Neither"
		}
		f.ListsAfter[after]++
		if !r.MDMLastSync.IsZero() {
			lastSync[key{strings.ToLower(r.Mailbox), r.DeviceID}] = r.MDMLastSync
		}
	}

	var prevStart time.Time
	for _, r := range b.a.engine.LastResults() {
		if r.ID != rep.ID && r.Start.Before(rep.Start) {
			prevStart = r.Start
			break
		}
	}
	var lag *server.LagStats
	if rep.Changes > 0 && !prevStart.IsZero() {
		entries, err := pipeline.ReadAuditTail(b.stateDir, min(4*rep.Changes+64, storyAuditLines))
		if err != nil {
			b.log.Warn("read audit log for the lag", "err", err)
		}
		lag = measureLag(entries, rep.ID, prevStart, func(mailbox, device string) time.Time {
			return lastSync[key{strings.ToLower(mailbox), device}]
		})
	}
	b.page.put(rep.ID, f, lag)
}

// measureLag computes the change-to-enforcement lag of sync id's writes:
// for each device whose list entry the sync wrote because of its MDM
// compliance (reasons Compliant, NotCompliant, PendingEvaluation), the
// audit write time minus the MDM record's lastSyncDateTime, when that
// check-in came after the previous sync started (earlier ones that sync
// could already have enforced). nil when no write qualifies.
func measureLag(entries []pipeline.AuditEntry, id string, prevStart time.Time, lastSync func(mailbox, device string) time.Time) *server.LagStats {
	seen := map[string]bool{}
	var lags []float64
	for _, e := range entries {
		if e.SyncID != id || !e.Applied() {
			continue
		}
		switch e.Reason {
		case pipeline.ReasonCompliant, pipeline.ReasonNotCompliant, pipeline.ReasonPendingEvaluation:
		default:
			continue
		}
		k := strings.ToLower(e.Mailbox) + "\n" + e.Device
		if seen[k] {
			continue // the other list of the same move
		}
		seen[k] = true
		ls := lastSync(e.Mailbox, e.Device)
		if ls.IsZero() || !ls.After(prevStart) || ls.After(e.Time) {
			continue
		}
		lags = append(lags, e.Time.Sub(ls).Seconds())
	}
	if len(lags) == 0 {
		return nil
	}
	slices.Sort(lags)
	// Nearest rank: the smallest lag that p of the lags do not exceed.
	q := func(p float64) float64 { return lags[max(0, int(math.Ceil(p*float64(len(lags))))-1)] }
	return &server.LagStats{Devices: len(lags), P50: q(0.5), P95: q(0.95), Max: lags[len(lags)-1]}
}

// deviceRow converts an engine row.
func deviceRow(r pipeline.DeviceRow, defaultMeans string) server.DeviceRow {
	return server.DeviceRow{
		Mailbox: r.Mailbox, User: r.User, DeviceID: r.DeviceID, DeviceType: r.DeviceType, DeviceModel: r.DeviceModel,
		Decision: string(r.Decision), DecisionText: decisionText(string(r.Decision), defaultMeans), Reason: string(r.Reason),
		ExchangeStateBefore: string(r.ExchangeState), ExchangeState: string(r.ExchangeState), ExchangeAfter: string(r.ExchangeAfter),
		Compliance: string(r.Compliance), MDMLastSync: r.MDMLastSync,
	}
}

// Changes implements server.Backend: the newest device changes of the
// audit log, one per device and write.
func (b *backend) Changes(ctx context.Context, limit int) []server.Change {
	entries, err := pipeline.ReadAuditTail(b.stateDir, 2*limit+16)
	if err != nil {
		b.log.Warn("read audit log", "err", err)
	}
	out := mergeChanges(entries)
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}

// mergeChanges turns audit entries (newest first) into device changes:
// the entries of one sync for one device on one mailbox (a move from one
// list to the other is two) become one change. Intents, writes that never
// took effect and organization writes are left out.
func mergeChanges(entries []pipeline.AuditEntry) []server.Change {
	out := []server.Change{}
	at := map[string]int{}
	for _, e := range entries {
		if !e.Applied() {
			continue
		}
		k := e.SyncID + "\n" + strings.ToLower(e.Mailbox) + "\n" + e.Device
		i, ok := at[k]
		if !ok {
			i = len(out)
			at[k] = i
			out = append(out, server.Change{Time: e.Time, SyncID: e.SyncID, Mailbox: e.Mailbox, DeviceID: e.Device,
				From: server.PlaceNeither, To: server.PlaceNeither, Reason: string(e.Reason)})
		}
		c := &out[i]
		if e.From == pipeline.Present {
			c.From = string(e.List)
		}
		if e.To == pipeline.Present {
			c.To = string(e.List)
		}
	}
	for i := range out {
		out[i].Summary = placeWords(out[i].To) + ", was " + placeWords(out[i].From)
	}
	return out
}

// placeWords names a place for people.
func placeWords(p string) string {
	if p == server.PlaceNeither {
		return "left to Exchange"
	}
	return p
}

// auditOfDevices reads the whole audit log (rotated files too) for the
// entries of the given device ids, newest first. Lines are parsed only when
// they contain one of the ids, so a search costs about one read of the log.
func auditOfDevices(ctx context.Context, dir string, ids []string) ([]pipeline.AuditEntry, error) {
	files, err := pipeline.AuditFiles(dir)
	if err != nil {
		return nil, err
	}
	needles := make([][]byte, len(ids))
	for i, id := range ids {
		needles[i] = []byte(`"` + id + `"`)
	}
	var out []pipeline.AuditEntry
	for _, path := range files {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // rotated away meanwhile
		}
		if err != nil {
			return out, fmt.Errorf("read audit log %s: %w", path, err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if !slices.ContainsFunc(needles, func(n []byte) bool { return bytes.Contains(line, n) }) {
				continue
			}
			if e, err := pipeline.ParseAuditLine(line); err == nil && slices.Contains(ids, e.Device) {
				out = append(out, e)
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return out, fmt.Errorf("read audit log %s: %w", path, err)
		}
	}
	slices.Reverse(out)
	return out, nil
}

// DeviceStories implements server.Backend.
func (b *backend) DeviceStories(ctx context.Context, q string, limit int) ([]server.DeviceStory, error) {
	rows, _ := b.a.engine.Devices(pipeline.DeviceQuery{}, 0, 0)
	means := b.defaultMeans()
	var out []server.DeviceStory
	for _, r := range rows {
		if len(out) >= limit {
			break
		}
		if !strings.EqualFold(q, r.DeviceID) && !strings.EqualFold(q, r.Mailbox) && !strings.EqualFold(q, r.UPN) && !strings.EqualFold(q, r.User) {
			continue
		}
		out = append(out, server.DeviceStory{DeviceRow: deviceRow(r, means), UPN: r.UPN, Writes: []server.Change{}, Notices: []server.Notice{}})
	}
	if len(out) == 0 {
		return out, nil
	}
	ids := make([]string, len(out))
	for i := range out {
		ids[i] = out[i].DeviceID
	}
	entries, err := auditOfDevices(ctx, b.stateDir, ids)
	if err != nil {
		b.log.Warn("read audit log", "err", err)
	}
	changes := mergeChanges(entries)
	for i := range out {
		s := &out[i]
		for _, c := range changes {
			if c.DeviceID == s.DeviceID && strings.EqualFold(c.Mailbox, s.Mailbox) && len(s.Writes) < 10 {
				s.Writes = append(s.Writes, c)
			}
		}
		if len(s.Writes) > 0 {
			s.LastWrittenTo = s.Writes[0].To
		}
		if b.a.state != nil {
			for _, st := range []notify.State{notify.StateBlocked, notify.StateQuarantined} {
				if t, ok := b.a.state.NotifiedAt(notify.Key(s.Mailbox, s.DeviceID, st)); ok {
					s.Notices = append(s.Notices, server.Notice{State: string(st), Sent: t})
				}
			}
		}
	}
	return out, nil
}

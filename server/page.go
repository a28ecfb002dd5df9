package server

import (
	"cmp"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/easconnector/easconnector/internal/humanize"
)

// The pages' templates: the status page, a device's story, the glossary.
// They share the style sheet (the "style" template of page.html.tmpl).
var (
	//go:embed page.html.tmpl
	pageTemplate string
	//go:embed device.html.tmpl
	deviceTemplate string
	//go:embed glossary.html.tmpl
	glossaryTemplate string
)

// Limits of the status page's tables and charts.
const (
	pageSyncs   = 10
	pageChanges = 25
	trendSyncs  = 32 // the engine keeps the last 32 results
	storyLimit  = 20
)

type pageRenderer struct {
	tmpl *template.Template
}

func newPageRenderer() (*pageRenderer, error) {
	t, err := template.New("page").Funcs(template.FuncMap{
		"num":   humanize.Num,
		"lower": strings.ToLower,
		"gloss": glossaryText,
	}).Option("missingkey=error").Parse(pageTemplate)
	if err != nil {
		return nil, fmt.Errorf("server: parse status page template: %w", err)
	}
	for name, text := range map[string]string{"device": deviceTemplate, "glossary": glossaryTemplate} {
		if _, err := t.New(name).Parse(text); err != nil {
			return nil, fmt.Errorf("server: parse %s page template: %w", name, err)
		}
	}
	return &pageRenderer{tmpl: t}, nil
}

// pageData is what the status page template sees.
type pageData struct {
	Nonce        string
	Version      string
	Status       Status
	Updated      string
	TokenEnabled bool
	// Public is the aggregate view shown without a token
	// (Options.LoopbackPublicCounts): no personal data, no actions.
	Public     bool
	Syncs      []syncRow
	Changes    []changeRow
	Chart      *barChart
	ChartTitle string
	LastFull   *syncRow
	LastQuick  *syncRow
	// LastFullOK and LastQuickOK are the last successful syncs, shown
	// beside a last sync that failed.
	LastFullOK  *syncRow
	LastQuickOK *syncRow
	Running     *syncRow
	NextQuick   timeCell
	NextFull    timeCell
	Plan        *planBox
	// DefaultMeans is what a Default decision leads to now ("Quarantine").
	DefaultMeans string
	// Fleet counts the last sync's view: decisions beside Exchange's states.
	Fleet   *FleetCounts
	FleetAt timeCell
	States  *barChart
	After   *barChart
	Trends  []*trendChart
	Refresh int
	Servers []serverRow
}

type serverRow struct {
	ServerState
	Detail string // the address, when the name is not the address
}

type timeCell struct {
	Abs string // "2026-06-10 03:00:05"
	Rel string // "5m ago", "in 1h 2m"
}

type syncRow struct {
	SyncResult
	Started  timeCell
	Ended    timeCell
	Duration string
	// When reads "ended 2 min ago (took 41 s)" or "running for 12 s".
	When   string
	Counts string // "Allow 1,234 · Block 56 · Default 7"
	Lag    string // "p95 48 s over 12 devices"
}

type changeRow struct {
	Change
	At timeCell
}

type planBox struct {
	PlanSummary
	Created timeCell
	URL     string
}

// barChart is a horizontal bar chart of device counts, laid out here so
// that the template only places numbers.
type barChart struct {
	Width, Height int
	Total         int
	Bars          []chartBar
}

type chartBar struct {
	Label   string // the value (Allow, Quarantined)
	Text    string // what the chart shows: "Default (Quarantine)"
	Count   int
	Percent string
	Class   string
	Y       int // top of the row
	BarY    int
	BarW    int
	TextX   int
}

const (
	chartLabelW = 150
	chartBarMax = 160
	chartRowH   = 30
	chartBarH   = 20
)

// basicRealm is the realm of the status page's Basic challenge.
const basicRealm = `Basic realm="easconnector status page", charset="UTF-8"`

// challenge asks a browser for the token: Basic, because a browser cannot
// send a Bearer header when it navigates. The API itself takes Bearer
// only, so credentials a browser caches for the page cannot be replayed
// by a cross-site form against the mutating endpoints.
func (s *Server) challenge(w http.ResponseWriter, res authResult) {
	if s.tokenHash == nil && s.readHash == nil {
		writeError(w, http.StatusForbidden, "the status page is disabled: no token is configured (set the server's token or read-only token in the configuration)")
		return
	}
	if res == authInvalid {
		s.authFailures.Inc()
	}
	w.Header().Set("WWW-Authenticate", basicRealm)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	fmt.Fprintln(w, "Sign in with any user name and the admin or read-only API token as the password,")
	fmt.Fprintln(w, "or send Authorization: Bearer <token>.")
}

// handleSignin makes the browser ask for the token, then goes back to the
// status page (for the public view, which never challenges).
func (s *Server) handleSignin(w http.ResponseWriter, r *http.Request) {
	if !noParams(w, r) {
		return
	}
	if _, res := s.authenticate(r, true); res != authOK {
		s.challenge(w, res)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) handlePage(w http.ResponseWriter, r *http.Request) {
	if !noParams(w, r) {
		return
	}
	_, res := s.authenticate(r, true)
	public := res != authOK
	if public && !(s.opts.LoopbackPublicCounts && s.listen.loopback) {
		s.challenge(w, res)
		return
	}
	ctx, cancel := s.backendCtx(r)
	defer cancel()
	now := time.Now()
	d := &pageData{
		Nonce:        nonce(),
		Version:      s.opts.Version,
		Status:       s.status(ctx),
		Updated:      now.In(s.opts.Location).Format("2006-01-02 15:04:05 MST"),
		TokenEnabled: s.tokenHash != nil,
		Public:       public,
	}
	st := &d.Status
	d.DefaultMeans, d.Refresh = st.DefaultMeans, max(1, int(s.opts.PageRefresh/time.Second))
	syncs := s.opts.Backend.Syncs(ctx, trendSyncs)
	if public {
		publicStatus(st)
	}
	for i, sr := range syncs {
		if public {
			sr.Error = ""
		}
		if i < pageSyncs {
			d.Syncs = append(d.Syncs, s.syncRow(sr, now))
		}
	}
	d.Trends = s.trends(syncs)
	for _, sv := range st.Servers {
		row := serverRow{ServerState: sv}
		if sv.Address != "" && !strings.EqualFold(sv.Address, sv.Name) {
			row.Detail = sv.Address
		}
		d.Servers = append(d.Servers, row)
	}
	if !public {
		for _, c := range s.opts.Backend.Changes(ctx, pageChanges) {
			d.Changes = append(d.Changes, changeRow{Change: c, At: s.timeCell(c.Time, now)})
		}
	}
	if f := st.Fleet; f != nil {
		d.Fleet = f
		d.FleetAt = s.timeCell(f.At, now)
		d.Chart = s.chart(f.Decisions, d.DefaultMeans)
		d.ChartTitle = "after sync " + f.SyncID + ", " + d.FleetAt.Abs
		d.States = s.stateChart(f.ExchangeStatesBefore)
		if len(f.ListsAfter) > 0 {
			d.After = s.afterChart(f.ListsAfter, d.DefaultMeans)
		}
	}
	if st.LastFull != nil {
		row := s.syncRow(*st.LastFull, now)
		d.LastFull = &row
	}
	if st.LastQuick != nil {
		row := s.syncRow(*st.LastQuick, now)
		d.LastQuick = &row
	}
	okRow := func(last, ok *SyncResult) *syncRow {
		if ok == nil || last != nil && last.ID == ok.ID {
			return nil
		}
		row := s.syncRow(*ok, now)
		return &row
	}
	d.LastFullOK, d.LastQuickOK = okRow(st.LastFull, st.LastFullSuccess), okRow(st.LastQuick, st.LastQuickSuccess)
	// The chart shows the fleet as the last full sync that got through
	// decided it, not the empty counts of one that failed.
	if full := cmp.Or(st.LastFullSuccess, st.LastFull); full != nil && d.Chart == nil {
		d.Chart = s.chart(full.Counts, d.DefaultMeans)
		d.ChartTitle = "after the last full sync, " + s.timeCell(full.Start, now).Abs
	}
	if st.Running != nil {
		row := s.syncRow(*st.Running, now)
		d.Running = &row
	}
	d.NextQuick, d.NextFull = s.timeCell(st.NextQuick, now), s.timeCell(st.NextFull, now)
	if p := st.HeldPlan; p != nil {
		d.Plan = &planBox{PlanSummary: *p, Created: s.timeCell(p.Created, now), URL: "/api/v1/plans/" + p.ID}
	}

	s.renderHTML(w, "page", http.StatusOK, d.Nonce, d)
}

// publicStatus keeps what the aggregate view may show: states, times and
// counts. Free text goes (errors and reasons may name a mailbox, a user
// or a device), and so does the held plan's id and reason. It copies what
// it changes: the Backend may share these values.
func publicStatus(st *Status) {
	st.Reason = ""
	st.Servers = slices.Clone(st.Servers)
	for i := range st.Servers {
		st.Servers[i].LastError = ""
	}
	for _, sr := range []**SyncResult{&st.LastFull, &st.LastQuick, &st.LastFullSuccess, &st.LastQuickSuccess, &st.Running} {
		if *sr != nil {
			c := **sr
			c.Error = ""
			*sr = &c
		}
	}
	if st.HeldPlan != nil {
		p := *st.HeldPlan
		p.ID, p.SyncID, p.Reason = "", "", ""
		st.HeldPlan = &p
	}
}

func nonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:]) // no + or /: nothing for html/template to escape
}

func (s *Server) timeCell(t, now time.Time) timeCell {
	if t.IsZero() {
		return timeCell{Abs: "—", Rel: ""}
	}
	d := t.Sub(now)
	rel := "in " + humanize.Long(d)
	if d < 0 {
		rel = humanize.Long(-d) + " ago"
	}
	if d > -time.Second && d < time.Second {
		rel = "now"
	}
	return timeCell{Abs: t.In(s.opts.Location).Format("2006-01-02 15:04:05"), Rel: rel}
}

func (s *Server) syncRow(sr SyncResult, now time.Time) syncRow {
	row := syncRow{SyncResult: sr, Started: s.timeCell(sr.Start, now), Ended: s.timeCell(sr.End, now)}
	switch {
	case !sr.End.IsZero():
		row.Duration = humanize.Long(sr.End.Sub(sr.Start))
		row.When = "ended " + row.Ended.Rel + " (took " + row.Duration + ")"
	case sr.Result == ResultRunning:
		row.Duration = humanize.Long(now.Sub(sr.Start)) + " so far"
		row.When = "running for " + humanize.Long(now.Sub(sr.Start))
	default:
		row.When = "started " + row.Started.Rel
	}
	if l := sr.Lag; l != nil && l.Devices > 0 {
		row.Lag = "p95 " + humanize.Long(seconds(l.P95)) + " over " + humanize.Num(l.Devices) + " devices"
	}
	var parts []string
	for _, k := range s.orderedKeys(sr.Counts) {
		parts = append(parts, k+" "+humanize.Num(sr.Counts[k]))
	}
	row.Counts = strings.Join(parts, " · ")
	return row
}

// orderedKeys returns the decisions of counts, the known ones first in
// their configured order.
func (s *Server) orderedKeys(counts map[string]int) []string {
	var keys, rest []string
	for _, d := range s.opts.Decisions {
		if _, ok := counts[d]; ok {
			keys = append(keys, d)
		}
	}
	for k := range counts {
		if !slices.Contains(keys, k) {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	return append(keys, rest...)
}

// seconds converts a float number of seconds.
func seconds(v float64) time.Duration { return time.Duration(v * float64(time.Second)) }

func (s *Server) chart(counts map[string]int, defaultMeans string) *barChart {
	c := s.bars(s.orderedKeys(counts), counts)
	if c != nil && defaultMeans != "" {
		for i := range c.Bars {
			if c.Bars[i].Label == "Default" {
				c.Bars[i].Text = "Default (" + defaultMeans + ")"
			}
		}
	}
	return c
}

// exchangeStates is the order of DeviceAccessState values on the page.
var exchangeStates = []string{"Allowed", "Blocked", "Quarantined", "DeviceDiscovery", "Unknown"}

// afterChart shows what the lists give the devices after the sync; Neither
// is named by what it leads to.
func (s *Server) afterChart(counts map[string]int, defaultMeans string) *barChart {
	var keys []string
	for _, k := range []string{"Allowed", "Blocked", "Neither"} {
		if _, ok := counts[k]; ok {
			keys = append(keys, k)
		}
	}
	c := s.bars(keys, counts)
	if c != nil {
		for i := range c.Bars {
			if c.Bars[i].Label == "Neither" {
				c.Bars[i].Class, c.Bars[i].Text = "bar-default", "neither list"
				if defaultMeans != "" {
					c.Bars[i].Text += " (" + defaultMeans + ")"
				}
			}
		}
	}
	return c
}

func (s *Server) stateChart(counts map[string]int) *barChart {
	var keys, rest []string
	for _, k := range exchangeStates {
		if _, ok := counts[k]; ok {
			keys = append(keys, k)
		}
	}
	for k := range counts {
		if !slices.Contains(exchangeStates, k) {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	return s.bars(append(keys, rest...), counts)
}

func (s *Server) bars(keys []string, counts map[string]int) *barChart {
	if len(keys) == 0 {
		return nil
	}
	c := &barChart{Width: chartLabelW + chartBarMax + 100, Height: len(keys) * chartRowH}
	most := 0
	for _, k := range keys {
		c.Total += counts[k]
		most = max(most, counts[k])
	}
	for i, k := range keys {
		n := counts[k]
		b := chartBar{Label: k, Text: k, Count: n, Y: i * chartRowH, BarY: i*chartRowH + (chartRowH-chartBarH)/2, Class: "bar-other"}
		switch strings.ToLower(k) {
		case "allow", "allowed":
			b.Class = "bar-allow"
		case "block", "blocked":
			b.Class = "bar-block"
		case "default", "quarantined":
			b.Class = "bar-default"
		}
		if most > 0 {
			b.BarW = n * chartBarMax / most
			if n > 0 && b.BarW == 0 {
				b.BarW = 1
			}
		}
		if c.Total > 0 {
			b.Percent = strconv.FormatFloat(100*float64(n)/float64(c.Total), 'f', 1, 64) + "%"
		}
		b.TextX = chartLabelW + b.BarW + 6
		c.Bars = append(c.Bars, b)
	}
	return c
}

package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/easconnector/easconnector/internal/humanize"
	"github.com/easconnector/easconnector/server"
)

const statusHelp = `Prints a running service's status from its admin API: connected,
degraded or disconnected (and why), the Exchange servers, the last full and
quick syncs, the running one, when the next are due, and a plan a guard
holds. Exit codes: 0 connected, 1 not connected or no answer, 2 usage.`

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", "[--server URL] [--config file] [--json]", stderr)
	srv := addServerFlags(fs, "server", configUsageRemote, serverUsage)
	asJSON := fs.Bool("json", false, "print the status JSON as the API returns it")
	withHelp(fs, statusHelp)
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	c, err := srv.client(false)
	if err != nil {
		fmt.Fprintf(stderr, "easconnector status: %v\n", err)
		return exitFailed
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	var st server.Status
	if err := c.call(ctx, "GET", "/api/v1/status", nil, nil, &st); err != nil {
		fmt.Fprintf(stderr, "easconnector status: %v\n", err)
		return exitFailed
	}
	code := exitOK
	if st.Status != server.StatusConnected {
		code = exitFailed
	}
	if *asJSON {
		if c := printJSON(stdout, stderr, st); c != exitOK {
			return c
		}
		return code
	}
	printStatus(stdout, &st, time.Now())
	return code
}

func printStatus(w io.Writer, st *server.Status, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	status := st.Status
	if st.Reason != "" {
		status += ": " + st.Reason
	}
	row("Status", status)
	for i, s := range st.Servers {
		k := ""
		if i == 0 {
			k = "Exchange"
		}
		name := s.Name
		if s.Address != "" && !strings.EqualFold(s.Address, s.Name) {
			name += " (" + s.Address + ")"
		}
		v := fmt.Sprintf("%s %s, %d sessions", name, s.State, s.Sessions)
		if s.LastError != "" {
			v += " (" + s.LastError + ")"
		}
		row(k, v)
	}
	row("Last full", syncLine(st.LastFull, now))
	if ok := st.LastFullSuccess; ok != nil && (st.LastFull == nil || ok.ID != st.LastFull.ID) {
		row("Last good full", syncLine(ok, now))
	}
	row("Last quick", syncLine(st.LastQuick, now))
	if ok := st.LastQuickSuccess; ok != nil && (st.LastQuick == nil || ok.ID != st.LastQuick.ID) {
		row("Last good quick", syncLine(ok, now))
	}
	if st.Running != nil {
		row("Running", fmt.Sprintf("%s sync %s, started %s", st.Running.Kind, st.Running.ID, when(st.Running.Start, now)))
	}
	row("Next quick", when(st.NextQuick, now))
	row("Next full", when(st.NextFull, now))
	if p := st.HeldPlan; p != nil {
		row("Held plan", fmt.Sprintf("%s: %s new blocks (limit %s) on %s mailboxes, held %s; review: easconnector plan --show %s; apply: easconnector sync --approve %s",
			p.ID, humanize.Num(p.NewBlocks), humanize.Num(p.Limit), humanize.Num(p.Mailboxes), when(p.Created, now), p.ID, p.ID))
	}
	row("Version", orDash(st.Version))
	tw.Flush()
}

// syncLine summarises one sync.
func syncLine(r *server.SyncResult, now time.Time) string {
	if r == nil {
		return "none yet"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Result, when(r.Start, now))
	if !r.End.IsZero() {
		fmt.Fprintf(&b, ", took %s", r.End.Sub(r.Start).Round(100*time.Millisecond))
	}
	var parts []string
	for _, c := range sortedCounts(r.Counts) {
		parts = append(parts, c.key+" "+humanize.Num(c.n))
	}
	if len(parts) > 0 {
		fmt.Fprintf(&b, "; %s", strings.Join(parts, " · "))
	}
	fmt.Fprintf(&b, "; %s writes", humanize.Num(r.Writes))
	if r.Failures > 0 {
		fmt.Fprintf(&b, ", %s failed", humanize.Num(r.Failures))
	}
	if r.Trigger != "" {
		fmt.Fprintf(&b, " (%s)", r.Trigger)
	}
	if r.Error != "" {
		fmt.Fprintf(&b, ": %s", r.Error)
	}
	return b.String()
}

// when formats a time relative to now: "12:04:05 (3m ago)", "in 5m".
func when(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now)
	rel := "in " + humanize.Short(d)
	if d < 0 {
		rel = humanize.Short(-d) + " ago"
	}
	layout := "15:04:05"
	if t.Local().YearDay() != now.Local().YearDay() || t.Year() != now.Year() {
		layout = "2006-01-02 15:04"
	}
	return t.Local().Format(layout) + " (" + rel + ")"
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/easconnector/easconnector/internal/humanize"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/server"
)

// maxResponse bounds an admin API answer the demo reads.
const maxResponse = 8 << 20

// apiClient reads the connector's admin API for the status line.
type apiClient struct {
	base  string
	token string
	hc    *http.Client
}

func (c *apiClient) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", path, resp.StatusCode)
	}
	if v == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponse)).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

func (c *apiClient) healthy(ctx context.Context) bool { return c.get(ctx, "/healthz", nil) == nil }

// summary is the demo's one-line status, read from the API; mails is the
// mail sink's count.
func (c *apiClient) summary(ctx context.Context, mails int) string {
	var st server.Status
	if err := c.get(ctx, "/api/v1/status", &st); err != nil {
		return fmt.Sprintf("connector not answering (%v) | mails %s", err, humanize.Num(mails))
	}
	var list struct {
		Syncs []server.SyncResult `json:"syncs"`
	}
	if err := c.get(ctx, "/api/v1/syncs?limit="+strconv.Itoa(server.MaxLimit), &list); err != nil {
		return fmt.Sprintf("connector not answering (%v) | mails %s", err, humanize.Num(mails))
	}
	return summaryLine(&st, list.Syncs, mails, time.Now())
}

// summaryLine renders the status line: the running or last sync, the
// fleet's decisions after the last sync (or the last full sync's), the
// mailbox writes of the syncs the connector remembers, the mails the sink
// received since the demo started and when the next quick sync is due.
// Each number says what it covers.
func summaryLine(st *server.Status, syncs []server.SyncResult, mails int, now time.Time) string {
	var b strings.Builder
	var last *server.SyncResult
	for i := range syncs {
		if syncs[i].Result != server.ResultRunning {
			last = &syncs[i]
			break
		}
	}
	switch {
	case st.Running != nil:
		fmt.Fprintf(&b, "%s sync running %s", st.Running.Kind, humanize.Short(now.Sub(st.Running.Start)))
	case last != nil:
		fmt.Fprintf(&b, "last %s sync %s in %s", last.Kind, resultWord(last), humanize.Short(last.End.Sub(last.Start)))
	default:
		b.WriteString("first sync starting")
	}
	if last != nil {
		def := "default"
		if st.DefaultMeans != "" {
			def += " (" + strings.ToLower(st.DefaultMeans) + ")"
		}
		counts := func(c map[string]int) string {
			return fmt.Sprintf("allowed %s, blocked %s, %s %s", humanize.Num(c[string(pipeline.Allow)]), humanize.Num(c[string(pipeline.Block)]), def, humanize.Num(c[string(pipeline.Default)]))
		}
		switch {
		case st.Fleet != nil:
			fmt.Fprintf(&b, " | %s devices: %s", humanize.Num(st.Fleet.Total), counts(st.Fleet.Decisions))
		case st.LastFull != nil:
			fmt.Fprintf(&b, " | last full sync: %s", counts(st.LastFull.Counts))
		}
		writes, n := 0, 0
		for i := range syncs {
			if syncs[i].Result != server.ResultRunning {
				writes, n = writes+syncs[i].Writes, n+1
			}
		}
		word := "syncs"
		if n == 1 {
			word = "sync"
		}
		fmt.Fprintf(&b, " | mailbox writes in %d %s %s", n, word, humanize.Num(writes))
	}
	fmt.Fprintf(&b, " | mails sent %s", humanize.Num(mails))
	if st.Running == nil && !st.NextQuick.IsZero() {
		if until := st.NextQuick.Sub(now); until > 0 {
			fmt.Fprintf(&b, " | next quick in %s", humanize.Short(until))
		} else {
			b.WriteString(" | next quick due")
		}
	}
	return b.String()
}

// resultWord is a sync result in one word.
func resultWord(r *server.SyncResult) string {
	if r.Result == server.ResultOK && r.Failures > 0 {
		return "partial"
	}
	return r.Result
}

// liveLine shows a status line: redrawn every second on a terminal,
// printed every 10 seconds otherwise.
type liveLine struct {
	w   io.Writer
	tty bool
}

func newLiveLine(w io.Writer, tty bool) *liveLine { return &liveLine{w: w, tty: tty} }

// run refreshes the line until ctx ends or stopped delivers (the
// connector stopped by itself; the value is put back for the caller).
func (l *liveLine) run(ctx context.Context, stopped chan error, line func() string) {
	every := 10 * time.Second
	if l.tty {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if l.tty {
			fmt.Fprintf(l.w, "\r\033[K%s", line())
		}
		select {
		case <-ctx.Done():
			return
		case err := <-stopped:
			stopped <- err
			return
		case <-t.C:
			if !l.tty {
				fmt.Fprintf(l.w, "%s  %s\n", time.Now().Format("15:04:05"), line())
			}
		}
	}
}

// done ends the line and prints the final state.
func (l *liveLine) done(last string) {
	if l.tty {
		fmt.Fprintf(l.w, "\r\033[K")
	}
	fmt.Fprintf(l.w, "%s  %s\n", time.Now().Format("15:04:05"), last)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/server"
)

// TestRunShowsTheStateDirectory: a service started after a manual
// `easconnector sync --full` shows that sync and its devices at once,
// before its own first sync ends (Exchange is slowed so that it cannot);
// and after more quick syncs than the engine keeps recent results the
// status and the page still show the last full sync.
func TestRunShowsTheStateDirectory(t *testing.T) {
	noLeaks(t)
	addr := freeAddr(t)
	fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 30}, listen: addr})
	code, out, errOut := runIn(t, t.Context(), "sync", "--full", "--json", "--config", fl.config)
	var cli syncOutput
	if out != "" {
		decodeJSON(t, out, &cli)
	}
	if code != exitOK || cli.Report == nil {
		t.Fatalf("sync --full = %d\n%s\n%s", code, out, errOut)
	}
	for _, name := range []string{"history.json", "devices.bin"} {
		if _, err := os.Stat(filepath.Join(fl.state, name)); err != nil {
			t.Errorf("after sync --full: %v", err)
		}
	}
	// The service's own first sync cannot end soon.
	if err := fl.sim.SetFaults(exsim.Faults{Slowdown: 5 * time.Second, Cmdlets: []string{"Get-MobileDevice", "Get-CASMailbox"}}); err != nil {
		t.Fatal(err)
	}
	d := startRun(t, fl, addr)
	st := d.waitStatus(t, "an answer", func(*server.Status) bool { return true })
	if st.LastFull == nil || st.LastFull.ID != cli.Report.ID || st.LastFull.Result != server.ResultOK || st.LastFull.Trigger != triggerCLI ||
		st.LastFullSuccess == nil || st.LastFullSuccess.ID != cli.Report.ID || st.LastFull.Counts["Block"] != cli.Report.CountsByDecision["Block"] {
		t.Errorf("status at start = last full %+v, last success %+v; want the sync --full %s", st.LastFull, st.LastFullSuccess, cli.Report.ID)
	}
	if st.Status != server.StatusConnected {
		t.Errorf("status at start = %s (%s), want connected", st.Status, st.Reason)
	}
	code, out, _ = runIn(t, t.Context(), "devices", "--server", d.base, "--token-file", d.read, "--json", "--limit", "0")
	var page server.DevicePage
	decodeJSON(t, out, &page)
	if code != exitOK || page.Total != 30 || len(page.Devices) != 30 {
		t.Errorf("devices at start = %d, total %d, %d rows; want the 30 of sync --full", code, page.Total, len(page.Devices))
	}
	blocked := 0
	for _, r := range page.Devices {
		if r.Mailbox == "" || r.DeviceID == "" || r.Decision == "" || r.Reason == "" || r.ExchangeState == "" {
			t.Errorf("device row at start lacks a field: %+v", r)
		}
		if r.Decision == "Block" {
			blocked++
		}
	}
	if blocked != cli.Report.CountsByDecision["Block"] {
		t.Errorf("devices at start: %d blocked, sync --full blocked %d", blocked, cli.Report.CountsByDecision["Block"])
	}
	if st := d.waitStatus(t, "an answer", func(*server.Status) bool { return true }); st.LastFull != nil && st.LastFull.ID != cli.Report.ID {
		t.Fatalf("the service's own sync ended within the slowdown (last full %+v): the checks above proved nothing", st.LastFull)
	}

	// A full sync of its own (the last full one was recent: the service
	// did not start with one), then more quick syncs than the recent ring
	// holds.
	if err := fl.sim.SetFaults(exsim.Faults{}); err != nil {
		t.Fatal(err)
	}
	token := filepath.Join(fl.dir, "api.token")
	idRe := regexp.MustCompile(`Sync (\S+) \((?:quick|full)\) requested\.|joins the pending sync (\S+)\.`)
	trigger := func(kind string) string {
		t.Helper()
		code, out, errOut := runIn(t, t.Context(), "sync", "--"+kind, "--remote", d.base, "--token-file", token)
		m := idRe.FindStringSubmatch(out)
		if code != exitOK || m == nil {
			t.Fatalf("sync --%s --remote = %d\n%s%s", kind, code, out, errOut)
		}
		return m[1] + m[2]
	}
	id := trigger("full")
	st = d.waitStatus(t, "the service's full sync", func(st *server.Status) bool { return st.LastFull != nil && st.LastFull.ID == id })
	lastFull := st.LastFull
	for i := range 34 {
		id := trigger("quick")
		d.waitStatus(t, fmt.Sprintf("quick sync %d (%s)", i, id), func(st *server.Status) bool { return st.LastQuick != nil && st.LastQuick.ID == id })
	}
	st = d.waitStatus(t, "an answer", func(*server.Status) bool { return true })
	if st.LastFull == nil || st.LastFull.ID != lastFull.ID || st.LastFullSuccess == nil || st.LastFullSuccess.ID != lastFull.ID {
		t.Errorf("status after 34 quick syncs: last full %+v, last success %+v; want %s", st.LastFull, st.LastFullSuccess, lastFull.ID)
	}
	code, out, _ = runIn(t, t.Context(), "status", "--server", d.base, "--token-file", d.read)
	if !regexp.MustCompile(`(?m)^Last full\s+ok `).MatchString(out) {
		t.Errorf("status after 34 quick syncs = %d:\n%s", code, out)
	}
	tok, err := os.ReadFile(d.read)
	if err != nil {
		t.Fatal(err)
	}
	getPage := func() (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), "GET", d.base+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	lastFullCell := regexp.MustCompile(`<dd id="last-full">.*</dd>`)
	code, body := getPage()
	if code != 200 || strings.Contains(string(body), "No full sync has finished yet") || !strings.Contains(string(body), `id="last-full"><span class="pill r-ok">`) {
		t.Errorf("status page after 34 quick syncs = %d, says no full sync finished: %v, last full %s", code,
			strings.Contains(string(body), "No full sync has finished yet"), lastFullCell.Find(body))
	}
	http.DefaultClient.CloseIdleConnections()

	// A full sync that fails: the last full one is that, and the last good
	// one is still shown beside it.
	if err := fl.sim.Kill(0); err != nil {
		t.Fatal(err)
	}
	id = trigger("full")
	st = d.waitStatus(t, "the failed full sync", func(st *server.Status) bool { return st.LastFull != nil && st.LastFull.ID == id })
	if st.LastFull.Result != server.ResultFailed || st.LastFullSuccess == nil || st.LastFullSuccess.ID != lastFull.ID {
		t.Errorf("status after a failed full sync: last full %+v, last success %+v; want failed and %s", st.LastFull, st.LastFullSuccess, lastFull.ID)
	}
	_, out, _ = runIn(t, t.Context(), "status", "--server", d.base, "--token-file", d.read)
	if !regexp.MustCompile(`(?m)^Last full\s+failed `).MatchString(out) || !regexp.MustCompile(`(?m)^Last good full\s+ok `).MatchString(out) {
		t.Errorf("status after a failed full sync:\n%s", out)
	}
	code, body = getPage()
	if cell := lastFullCell.Find(body); code != 200 || !regexp.MustCompile(`r-failed.*· last ok `).Match(cell) ||
		strings.Contains(string(body), "No full sync has finished yet") {
		t.Errorf("status page after a failed full sync = %d, last full %s", code, cell)
	}
	http.DefaultClient.CloseIdleConnections()
	d.stop(t)
}

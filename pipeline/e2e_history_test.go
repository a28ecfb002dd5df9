package pipeline_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/pipeline"
)

// TestHistoryOutlivesTheRing: the last full sync stays known however many
// quick syncs follow it (it once fell out of the 32 recent results, and the
// status said no full sync had finished), and the history and the devices
// list survive a restart: a new engine over the same state directory shows
// them before its first sync.
func TestHistoryOutlivesTheRing(t *testing.T) {
	f := newFixture(t, fixtureOptions{devices: 40})
	full := f.sync(pipeline.SyncFull)
	const quicks = 34
	var lastQuick *pipeline.Report
	for range quicks {
		f.clock.Advance(time.Minute)
		lastQuick = f.sync(pipeline.SyncQuick)
		if lastQuick.Kind != pipeline.SyncQuick {
			t.Fatalf("Sync(quick) ran as %s (%s)", lastQuick.Kind, lastQuick.Escalated)
		}
	}
	check := func(when string, eng *pipeline.Engine) {
		t.Helper()
		recent := eng.LastResults()
		if len(recent) != 32 || recent[0].ID != lastQuick.ID {
			t.Errorf("%s: LastResults() = %d results, newest %s; want 32, newest %s", when, len(recent), recent[0].ID, lastQuick.ID)
		}
		for _, r := range recent {
			if r.Kind == pipeline.SyncFull {
				t.Errorf("%s: LastResults() still holds the full sync after %d quick ones", when, quicks)
			}
		}
		for _, get := range []func(pipeline.SyncKind) (pipeline.SyncResult, bool){eng.LastSync, eng.LastSuccess} {
			got, ok := get(pipeline.SyncFull)
			if !ok || got.ID != full.ID || !got.End.Equal(full.End) || got.Devices != full.Devices || !reflect.DeepEqual(got.CountsByDecision, full.CountsByDecision) {
				t.Errorf("%s: last full sync = %+v, %v; want %s with %d devices", when, got, ok, full.ID, full.Devices)
			}
			if got, ok := get(pipeline.SyncQuick); !ok || got.ID != lastQuick.ID {
				t.Errorf("%s: last quick sync = %s, %v; want %s", when, got.ID, ok, lastQuick.ID)
			}
		}
	}
	check("after the syncs", f.eng)
	rows, total := f.eng.Devices(pipeline.DeviceQuery{}, 0, 0)
	if total != full.Devices || len(rows) != total {
		t.Fatalf("Devices() = %d rows of %d, want the %d devices", len(rows), total, full.Devices)
	}
	// ExchangeAfter is what the mailbox's lists in Exchange now give the
	// device: the blocked list first, then the allowed list.
	mbs, _ := f.sim.Org().Mailboxes(0, 0)
	bySMTP := map[string]exchange.CASMailbox{}
	for _, mb := range mbs {
		bySMTP[strings.ToLower(mb.PrimarySmtpAddress)] = mb
	}
	after := map[exchange.AccessState]int{}
	for _, r := range rows {
		mb := bySMTP[strings.ToLower(r.Mailbox)]
		var want exchange.AccessState
		switch {
		case containsFold(mb.ActiveSyncBlockedDeviceIDs, r.DeviceID):
			want = exchange.AccessBlocked
		case containsFold(mb.ActiveSyncAllowedDeviceIDs, r.DeviceID):
			want = exchange.AccessAllowed
		}
		if r.ExchangeAfter != want {
			t.Errorf("device %s of %s: ExchangeAfter = %q, the lists in Exchange give %q", r.DeviceID, r.Mailbox, r.ExchangeAfter, want)
		}
		after[r.ExchangeAfter]++
	}
	if after[exchange.AccessBlocked] == 0 || after[exchange.AccessAllowed] == 0 {
		t.Errorf("ExchangeAfter counts = %v, want some of each list", after)
	}

	// A restart: the history and the rows are there before any sync.
	eng := f.newEngine(nil)
	check("after a restart", eng)
	got, gotTotal := eng.Devices(pipeline.DeviceQuery{}, 0, 0)
	if gotTotal != total || !reflect.DeepEqual(got, rows) {
		t.Errorf("Devices() after a restart = %d rows of %d, want the %d rows of the last sync", len(got), gotTotal, total)
		for i := range min(len(got), len(rows)) {
			if got[i] != rows[i] {
				t.Errorf("row %d = %+v, want %+v", i, got[i], rows[i])
				break
			}
		}
	}
	// Filters work on the loaded rows as on a sync's.
	blocked, n := eng.Devices(pipeline.DeviceQuery{Decision: pipeline.Block}, 0, 0)
	if n != full.CountsByDecision[pipeline.Block] || len(blocked) != n {
		t.Errorf("Devices(Block) after a restart = %d rows of %d, want %d", len(blocked), n, full.CountsByDecision[pipeline.Block])
	}

	// A damaged history or devices file costs the display, not the start.
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{pipeline.HistoryFile, pipeline.DevicesFile} {
		if err := os.WriteFile(filepath.Join(f.dir, name), []byte("{not ours"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f.eng = nil
	eng = f.newEngine(nil)
	if r := eng.LastResults(); len(r) != 0 {
		t.Errorf("LastResults() over a damaged history = %d results, want none", len(r))
	}
	if _, n := eng.Devices(pipeline.DeviceQuery{}, 0, 0); n != 0 {
		t.Errorf("Devices() over a damaged file = %d rows, want none", n)
	}
	f.clock.Advance(time.Minute)
	next := f.sync(pipeline.SyncFull)
	if got, ok := eng.LastSync(pipeline.SyncFull); !ok || got.ID != next.ID {
		t.Errorf("LastSync(full) after the next sync = %s, %v; want %s", got.ID, ok, next.ID)
	}
}

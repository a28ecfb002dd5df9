package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func sampleState() *State {
	st := NewState()
	st.SetOwned("Contoso.com/Users/Alice", Owned{Allowed: ids("ApplB", "ApplA", "ApplA"), Blocked: ids("androidc1")})
	st.SetOwned("bob", Owned{Blocked: ids("NINE1")})
	st.UpdateMarks(func(w *Watermarks) {
		w.LastFull = now
		w.LastQuick = now.Add(time.Hour)
		w.LastGoodMDMCount = 4321
		w.LastDeviceFirstSync = now.Add(-time.Minute)
	})
	st.MarkSent("alice\nApplA\nblocked", now)
	st.CloseAdoption()
	return st
}

func TestStateMethods(t *testing.T) {
	st := sampleState()
	if got := st.OwnedOf("CONTOSO.COM/users/alice"); !reflect.DeepEqual(got, Owned{Allowed: ids("ApplA", "ApplB"), Blocked: ids("androidc1")}) {
		t.Errorf("OwnedOf() = %+v: want sorted, deduplicated, mailbox case-insensitive", got)
	}
	st.SetOwned("bob", Owned{Blocked: ids("bad-id", "")})
	if got := st.OwnedMailboxes(); !reflect.DeepEqual(got, ids("contoso.com/users/alice")) {
		t.Errorf("OwnedMailboxes() = %q after bob's invalid-only ownership", got)
	}
	if !st.Sent("alice\nApplA\nblocked") || st.Sent("other") {
		t.Error("Sent() wrong")
	}
	st.Forget("alice\nApplA\nblocked")
	if st.Sent("alice\nApplA\nblocked") {
		t.Error("Forget() kept the key")
	}
	st.MarkSent("old", now.Add(-48*time.Hour))
	st.MarkSent("new", now)
	if n := st.PruneNotified(now.Add(-24 * time.Hour)); n != 1 || !st.Sent("new") || st.Sent("old") {
		t.Errorf("PruneNotified() = %d", n)
	}
	if st.MayAdopt(true) {
		t.Error("MayAdopt(true) after CloseAdoption")
	}
	if fresh := NewState(); !fresh.MayAdopt(true) || fresh.MayAdopt(false) {
		t.Error("MayAdopt on a new state must follow adopt_existing")
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	st := sampleState()
	if err := SaveState(dir, st); err != nil {
		t.Fatal(err)
	}
	got, status, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if status.Origin != StateLoaded {
		t.Errorf("status = %+v, want loaded", status)
	}
	if !reflect.DeepEqual(got.Owned, st.Owned) || !marksEqual(got.Watermarks, st.Watermarks) ||
		!reflect.DeepEqual(got.Notified, st.Notified) || got.AdoptClosed != st.AdoptClosed || got.Version != StateVersion {
		t.Errorf("LoadState() = %+v\nwant %+v", got, st)
	}
	info, err := os.Stat(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", info.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("state dir holds %d entries after a save, want only %s", len(ents), StateFile)
	}
}

func TestLoadStateMissing(t *testing.T) {
	dir := t.TempDir()
	st, status, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if status.Origin != StateNew || !strings.Contains(status.Message, "first sync") || !st.MayAdopt(true) || len(st.Owned) != 0 {
		t.Errorf("missing file: status %+v, MayAdopt %v", status, st.MayAdopt(true))
	}
	// With an audit log the state was lost, not never made.
	if err := os.WriteFile(filepath.Join(dir, AuditFile), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, status, err = LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if status.Origin != StateLost || st.MayAdopt(true) {
		t.Errorf("missing file beside an audit log: status %+v, MayAdopt %v", status, st.MayAdopt(true))
	}
}

func TestLoadStateCorrupt(t *testing.T) {
	dir := t.TempDir()
	if err := SaveState(dir, sampleState()); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"truncated":       good[:len(good)/2],
		"truncated by 1":  good[:len(good)-2],
		"empty":           {},
		"not json":        []byte("owned: yes\n"),
		"binary":          {0x00, 0xff, 0xfe, 0x7b},
		"no version":      []byte(`{"owned":{}}`),
		"version zero":    []byte(`{"version":0}`),
		"version string":  []byte(`{"version":"1"}`),
		"trailing object": append(append([]byte{}, good...), []byte(`{"version":1}`)...),
		"wrong type":      []byte(`{"version":1,"owned":{"mb":{"allowed":"ApplA"}}}`),
		"negative count":  []byte(`{"version":1,"watermarks":{"last_good_mdm_count":-5}}`),
		"a json array":    []byte(`[1,2,3]`),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, StateFile)
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			st, status, err := LoadState(dir)
			if err != nil {
				t.Fatalf("LoadState() error %v: a corrupt file must never stop the daemon", err)
			}
			if status.Origin != StateRecovered || !strings.Contains(status.Message, "corrupt") || st.MayAdopt(true) || len(st.Owned) != 0 {
				t.Errorf("status %+v, MayAdopt %v, owned %d", status, st.MayAdopt(true), len(st.Owned))
			}
			kept, err := os.ReadFile(status.CorruptCopy)
			if err != nil || string(kept) != string(data) {
				t.Errorf("corrupt copy %s: %v (%d bytes, want %d)", status.CorruptCopy, err, len(kept), len(data))
			}
			// The fresh state was saved: a crash now must not reopen adoption.
			st2, status2, err := LoadState(dir)
			if err != nil || status2.Origin != StateLoaded || st2.MayAdopt(true) {
				t.Errorf("reload after recovery: %+v, %v, MayAdopt %v", status2, err, st2 != nil && st2.MayAdopt(true))
			}
		})
	}
}

func TestLoadStateNewerVersion(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, StateFile)
	data := []byte(fmt.Sprintf(`{"version":%d,"owned":{},"future":true}`, StateVersion+1))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadState(dir)
	if !errors.Is(err, ErrStateTooNew) {
		t.Fatalf("LoadState(newer version) = %v, want ErrStateTooNew", err)
	}
	if kept, _ := os.ReadFile(path); string(kept) != string(data) {
		t.Error("a newer state file was modified")
	}
}

func TestLoadStateUnreadable(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, StateFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadState(dir); err == nil {
		t.Error("LoadState() with a directory for a state file = nil error")
	}
}

// TestCrashedWriter: a writer that died before its rename leaves a temp
// file; readers never see it, and a later save clears it once it is old.
func TestCrashedWriter(t *testing.T) {
	dir := t.TempDir()
	st := sampleState()
	if err := SaveState(dir, st); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "."+StateFile+".tmp-12345")
	if err := os.WriteFile(tmp, []byte(`{"version":1,"owned":{"mallory":{"allowed":["Ev`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, status, err := LoadState(dir)
	if err != nil || status.Origin != StateLoaded || !reflect.DeepEqual(got.Owned, st.Owned) {
		t.Fatalf("LoadState() beside a crashed temp file = %+v, %+v, %v", got.Owned, status, err)
	}
	// Only a temp file (the crash came before the first rename): first sync.
	dir2 := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir2, "."+StateFile+".tmp-1"), []byte(`{"version":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, status, err := LoadState(dir2); err != nil || status.Origin != StateNew {
		t.Errorf("LoadState() with only a temp file = %+v, %v", status, err)
	}
	// A young temp file may be another process's write in progress: kept.
	if err := SaveState(dir, st); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Errorf("young temp file removed: %v", err)
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(tmp, old, old); err != nil {
		t.Fatal(err)
	}
	if err := SaveState(dir, st); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old temp file kept: %v", err)
	}
}

func TestStateConcurrentSave(t *testing.T) {
	dir := t.TempDir()
	st := NewState()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				mb := fmt.Sprintf("mb%d-%d", w, i)
				st.SetOwned(mb, Owned{Allowed: ids(fmt.Sprintf("Appl%d", i))})
				st.MarkSent(mb, now)
				st.UpdateMarks(func(m *Watermarks) { m.LastGoodMDMCount++ })
			}
		})
	}
	wg.Go(func() {
		for range 10 {
			if err := SaveState(dir, st); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	if err := SaveState(dir, st); err != nil {
		t.Fatal(err)
	}
	got, _, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Owned) != 800 || len(got.Notified) != 800 || got.Watermarks.LastGoodMDMCount != 800 {
		t.Errorf("after concurrent updates: %d owned, %d notified, count %d; want 800 each",
			len(got.Owned), len(got.Notified), got.Watermarks.LastGoodMDMCount)
	}
}

func marksEqual(a, b Watermarks) bool {
	return a.LastFull.Equal(b.LastFull) && a.LastQuick.Equal(b.LastQuick) &&
		a.LastGoodMDMCount == b.LastGoodMDMCount && a.LastDeviceFirstSync.Equal(b.LastDeviceFirstSync)
}

// FuzzDecodeState: any bytes either decode into a state that survives a
// save and reload unchanged, or are reported corrupt; nothing panics.
func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"version":1,"owned":{"mb":{"allowed":["ApplA"],"blocked":["bad-id"]}},"notified":{"k":"2025-03-01T12:00:00Z"}}`))
	f.Add([]byte(`{"version":1,"adopt_closed":true,"watermarks":{"last_good_mdm_count":3,"last_full":"2025-03-01T12:00:00Z"}}`))
	f.Add([]byte(`{"version":3}`))
	f.Add([]byte(`{"version":2,"owned":{"g1":{"allowed":["ApplA"]}},"pending":{"G1":{"dn":"CN=A","sync_id":"s","changes":[{"device_id":"ApplB","list":"blocked","op":"add"}]},` +
		`"g2":{"dn":"","changes":[{"device_id":"ApplC","list":"allowed","op":"add"}]}},"pending_rules":[{"op":"new","name":"X (DeviceType)"}],"pending_org":{"sync_id":"s","changes":[{"setting":"DefaultAccessLevel","from":"Allow","to":"Block","applied":false}]}}`))
	f.Add([]byte(`{"version":2,"pending_rules":[{"op":"drop","name":"X"}]}`))
	f.Add([]byte(`{"version":1}{}`))
	f.Add([]byte(`{"version":1,"owned":{"":{"allowed":["A"]}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeState(data)
		if err != nil {
			return
		}
		for mb, o := range st.Owned {
			if mb != strings.ToLower(mb) || o.IsZero() || !reflect.DeepEqual(o.Allowed, cleanIDs(o.Allowed)) || !reflect.DeepEqual(o.Blocked, cleanIDs(o.Blocked)) {
				t.Fatalf("decoded ownership not clean: %q %+v", mb, o)
			}
		}
		for mb, p := range st.Pending {
			if mb == "" || mb != strings.ToLower(mb) || strings.TrimSpace(p.DN) == "" {
				t.Fatalf("decoded pending write not usable: %q %+v", mb, p)
			}
		}
		out, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		st2, err := decodeState(out)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", out, err)
		}
		if !reflect.DeepEqual(st.Owned, st2.Owned) || !reflect.DeepEqual(st.Pending, st2.Pending) || !reflect.DeepEqual(st.PendingRules, st2.PendingRules) || len(st.Notified) != len(st2.Notified) || !marksEqual(st.Watermarks, st2.Watermarks) {
			t.Fatalf("round trip changed the state:\n%+v\n%+v", st, st2)
		}
	})
}

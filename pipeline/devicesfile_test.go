package pipeline

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/mdm"
)

// testFleet builds a sealed baseline of n devices, two per mailbox, with
// hostile strings in the fields phones choose.
func testFleet(n int) *baseline {
	mbs := make(map[string]*mbox, n/2+1)
	for i := 0; i < n; i += 2 {
		mb := &mbox{dn: fmt.Sprintf("CN=user%06d,OU=Users,DC=contoso,DC=com", i/2), guid: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i),
			smtp: fmt.Sprintf("user%06d@contoso.com", i/2), name: fmt.Sprintf("User %d", i/2), upn: fmt.Sprintf("user%06d@contoso.com", i/2)}
		for j := range min(2, n-i) {
			mb.devs = append(mb.devs, row{id: fmt.Sprintf("ApplF%015d", i+j), typ: "iPhone\t\x00", model: "iPhone15,2 \u202e",
				d: uint8((i + j) % len(decisionList)), r: uint8((i + j) % len(reasonList)), st: uint8((i + j) % len(accessStates)), c: uint8((i + j) % len(compliances)), after: uint8((i + j + 1) % len(accessStates))})
		}
		mbs[dnKey(mb.dn)] = mb
	}
	return newBaseline(mbs)
}

func allRows(b *baseline) []DeviceRow {
	var out []DeviceRow
	for _, mb := range b.order {
		for i := range mb.devs {
			out = append(out, mb.devs[i].export(mb))
		}
	}
	return out
}

func TestDevicesFileRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 7, 1000} {
		b := testFleet(n)
		at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
		got, err := decodeDevices(encodeDevices(b, at))
		if err != nil {
			t.Fatalf("n=%d: decodeDevices() error = %v", n, err)
		}
		if !got.savedAt.Equal(at) || got.b.devices != n || !reflect.DeepEqual(allRows(got.b), allRows(b)) {
			t.Errorf("n=%d: decoded %d devices saved at %s, want %d at %s, rows equal: %v", n, got.b.devices, got.savedAt, n, at,
				reflect.DeepEqual(allRows(got.b), allRows(b)))
		}
		for k, mb := range b.byDN {
			if g := got.b.byDN[k]; g == nil || g.identity() != mb.identity() || !g.sealed {
				t.Errorf("n=%d: mailbox %s decoded as %+v", n, k, g)
			}
		}
	}
}

// TestDevicesFileRejects: damage is reported with where it is, never
// taken for rows.
func TestDevicesFileRejects(t *testing.T) {
	good := encodeDevices(testFleet(10), time.Unix(1e9, 0))
	reseal := func(body []byte) []byte {
		return binary.LittleEndian.AppendUint32(body, crc32.Checksum(body, crcTable))
	}
	f := func(name string, data []byte, want string) {
		t.Helper()
		if _, err := decodeDevices(data); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: decodeDevices() error = %v, want %q", name, err, want)
		}
	}
	f("empty", nil, "not an easconnector devices file")
	f("json", []byte(`{"version":1}`), "not an easconnector devices file")
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 1
	f("flipped bit", flipped, "checksum")
	f("truncated", reseal(bytes.Clone(good[:len(good)/2])), "offset")
	f("trailing bytes", reseal(append(bytes.Clone(good[:len(good)-4]), 0)), "bytes after the last mailbox")
	// A decision this code does not know is not read as Allow.
	unknown := bytes.Replace(good[:len(good)-4], []byte("\x05Allow"), []byte("\x05Alloz"), 1)
	f("unknown decision", reseal(unknown), `decision "Alloz": unknown`)
}

func TestDevicesFileSaveLoad(t *testing.T) {
	dir := t.TempDir()
	if s, err := loadDevices(dir); s != nil || err != nil {
		t.Fatalf("loadDevices() of no file = %v, %v; want nil, nil", s, err)
	}
	b := testFleet(20)
	sv := newDeviceSaver(dir, slog.New(slog.DiscardHandler))
	sv.save(testFleet(4))
	sv.save(b) // replaces the first if it is not written yet
	sv.wait()
	got, err := loadDevices(dir)
	if err != nil || !reflect.DeepEqual(allRows(got.b), allRows(b)) {
		t.Fatalf("loadDevices() = %v; want the last saved rows", err)
	}
	if err := os.WriteFile(filepath.Join(dir, DevicesFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadDevices(dir); err == nil || !strings.Contains(err.Error(), DevicesFile) {
		t.Errorf("loadDevices() of garbage: error = %v, want one naming the file", err)
	}
}

// FuzzDecodeDevices: any bytes decode into rows that survive an encode
// and decode unchanged, or are reported damaged; nothing panics or
// allocates beyond the input's size. Each input is tried as it is and with
// a valid checksum appended, so that mutations reach the parser.
func FuzzDecodeDevices(f *testing.F) {
	f.Add(encodeDevices(testFleet(0), time.Unix(0, 0)))
	f.Add(encodeDevices(testFleet(3), time.Unix(1e9, 0)))
	three := encodeDevices(testFleet(3), time.Unix(1e9, 0))
	f.Add(three[:len(three)-4])
	f.Add([]byte(devicesMagic + "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sealed := binary.LittleEndian.AppendUint32(bytes.Clone(data), crc32.Checksum(data, crcTable))
		for _, in := range [][]byte{data, sealed} {
			s, err := decodeDevices(in)
			if err != nil {
				continue
			}
			again, err := decodeDevices(encodeDevices(s.b, s.savedAt))
			if err != nil {
				t.Fatalf("re-decode: %v", err)
			}
			if !reflect.DeepEqual(allRows(again.b), allRows(s.b)) {
				t.Fatal("round trip changed the rows")
			}
		}
	})
}

func TestHistoryBounds(t *testing.T) {
	var h History
	start := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	res := func(i int, kind SyncKind, errText string) SyncResult {
		at := start.Add(time.Duration(i) * time.Minute)
		return SyncResult{ID: fmt.Sprintf("s%03d", i), Kind: kind, Start: at, End: at.Add(time.Second), Error: errText}
	}
	h.add(res(0, SyncFull, ""))
	h.add(res(1, SyncFull, "mdm unavailable: "+strings.Repeat("é", 4000)))
	for i := 2; i < 40; i++ {
		h.add(res(i, SyncQuick, ""))
	}
	if len(h.Recent) != maxResults || h.Recent[len(h.Recent)-1].ID != "s039" {
		t.Errorf("Recent = %d results, newest %s; want %d, newest s039", len(h.Recent), h.Recent[len(h.Recent)-1].ID, maxResults)
	}
	if h.Last[SyncFull].ID != "s001" || h.LastOK[SyncFull].ID != "s000" || h.LastOK[SyncQuick].ID != "s039" {
		t.Errorf("Last full %s, last good full %s, last good quick %s; want s001, s000, s039", h.Last[SyncFull].ID, h.LastOK[SyncFull].ID, h.LastOK[SyncQuick].ID)
	}
	if e := h.Last[SyncFull].Error; len(e) > maxResultError+len("…") || !strings.HasSuffix(e, "…") || !strings.HasPrefix(e, "mdm unavailable: ") {
		t.Errorf("a long error is kept as %d bytes", len(e))
	}
	dir := t.TempDir()
	if err := SaveHistory(dir, &h); err != nil {
		t.Fatal(err)
	}
	got, err := LoadHistory(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Recent) != maxResults || got.Last[SyncFull].ID != "s001" || got.LastOK[SyncFull].ID != "s000" {
		t.Errorf("LoadHistory() = %d recent, last full %s, last good full %s", len(got.Recent), got.Last[SyncFull].ID, got.LastOK[SyncFull].ID)
	}
	for name, data := range map[string]string{
		"newer":      `{"version":2}`,
		"bad kind":   `{"version":1,"last":{"full":{"id":"x","kind":"quick","start":"2025-03-01T00:00:00Z","end":"2025-03-01T00:00:01Z"}}}`,
		"unfinished": `{"version":1,"recent":[{"id":"x","kind":"full","start":"2025-03-01T00:00:00Z"}]}`,
		"not json":   `{`,
	} {
		if err := os.WriteFile(filepath.Join(dir, HistoryFile), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if h, err := LoadHistory(dir); err == nil || len(h.Recent) != 0 || len(h.Last) != 0 {
			t.Errorf("%s: LoadHistory() = %+v, %v; want an empty history and an error", name, h, err)
		}
	}
}

// BenchmarkDevicesFile measures the devices file at 100,000 devices (on
// 50,000 mailboxes): its size, the time to encode it, to write it (fsync
// included) and to load it at start. The write runs beside the next sync,
// not in it.
func BenchmarkDevicesFile(b *testing.B) {
	const n = 100_000
	fleet := testFleet(n)
	for _, mb := range fleet.order { // realistic strings, not the hostile ones
		for j := range mb.devs {
			mb.devs[j].typ, mb.devs[j].model = "iPhone", "iPhone15,2"
			mb.devs[j].st = pack(accessStates, exchange.AccessAllowed)
			mb.devs[j].c = pack(compliances, mdm.ComplianceCompliant)
		}
	}
	dir := b.TempDir()
	at := time.Now()
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		var size int
		for b.Loop() {
			size = len(encodeDevices(fleet, at))
		}
		b.ReportMetric(float64(size)/(1<<20), "MB")
		b.ReportMetric(float64(size)/n, "bytes/device")
	})
	b.Run("save", func(b *testing.B) {
		for b.Loop() {
			if err := saveDevices(dir, fleet, at); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/save")
	})
	b.Run("load", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s, err := loadDevices(dir)
			if err != nil || s.b.devices != n {
				b.Fatalf("loadDevices() = %v", err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/load")
	})
}

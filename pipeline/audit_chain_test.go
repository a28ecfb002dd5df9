package pipeline

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeAudit appends n entries (devices D<start>…) to the log in dir and
// closes it.
func writeAudit(t *testing.T, dir string, opts AuditOptions, start, n int) {
	t.Helper()
	a, err := OpenAudit(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := start; i < start+n; i++ {
		e := AuditEntry{Time: now, SyncID: "s1", Mailbox: fmt.Sprintf("user%d@contoso.com", i), Device: fmt.Sprintf("D%d", i),
			List: ListBlocked, From: Absent, To: Present, Decision: Block, Reason: ReasonNotCompliant}
		if err := a.Write(e); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			if err := a.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
}

func verify(t *testing.T, dir string) *AuditVerification {
	t.Helper()
	v, err := VerifyAudit(dir)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestAuditChainVerifies(t *testing.T) {
	dir := t.TempDir()
	writeAudit(t, dir, AuditOptions{}, 0, 30)
	writeAudit(t, dir, AuditOptions{}, 30, 20) // reopened: the chain goes on
	v := verify(t, dir)
	data, _ := os.ReadFile(filepath.Join(dir, AuditFile))
	lines := bytes.Split(bytes.TrimSuffix(data, []byte{'\n'}), []byte{'\n'})
	if !v.OK() || v.Lines != 50 || !v.Anchored || v.Legacy != 0 || v.Head != lineHash(lines[49]) {
		t.Fatalf("VerifyAudit = %+v, want 50 chained lines ending in %s", v, lineHash(lines[49]))
	}
	first, err := ParseAuditLine(lines[0])
	if err != nil || first.Prev != AuditGenesis {
		t.Errorf("first line prev = %q, %v; want the genesis value", first.Prev, err)
	}
	for i := 1; i < len(lines); i++ {
		e, _ := ParseAuditLine(lines[i])
		if e.Prev != lineHash(lines[i-1]) {
			t.Fatalf("line %d prev = %s, want the hash of line %d", i+1, e.Prev, i)
		}
	}
}

// TestAuditVerifyFindsTampering: each kind of damage is reported at the
// line where the chain breaks.
func TestAuditVerifyFindsTampering(t *testing.T) {
	f := func(name string, edit func(lines [][]byte) [][]byte, tail string, wantKind string, wantLine int) {
		t.Helper()
		dir := t.TempDir()
		writeAudit(t, dir, AuditOptions{}, 0, 20)
		path := filepath.Join(dir, AuditFile)
		data, _ := os.ReadFile(path)
		lines := bytes.Split(bytes.TrimSuffix(data, []byte{'\n'}), []byte{'\n'})
		out := append(bytes.Join(edit(lines), []byte{'\n'}), '\n')
		out = append(out, tail...)
		if err := os.WriteFile(path, out, 0o600); err != nil {
			t.Fatal(err)
		}
		v := verify(t, dir)
		if v.OK() {
			t.Errorf("%s: VerifyAudit found nothing", name)
			return
		}
		p := v.Problems[0]
		if p.Kind != wantKind || p.Line != wantLine || p.File != AuditFile && wantLine != 0 {
			t.Errorf("%s: first problem %v, want %s at %s:%d (all: %v)", name, p, wantKind, AuditFile, wantLine, v.Problems)
		}
	}
	f("one byte changed", func(l [][]byte) [][]byte {
		l[9] = bytes.Replace(l[9], []byte("user9@"), []byte("user8@"), 1)
		return l
	}, "", AuditBroken, 11)
	f("a line deleted", func(l [][]byte) [][]byte { return slices.Delete(l, 9, 10) }, "", AuditBroken, 10)
	f("two lines swapped", func(l [][]byte) [][]byte { l[9], l[10] = l[10], l[9]; return l }, "", AuditBroken, 10)
	f("a line made undecodable", func(l [][]byte) [][]byte { l[4] = []byte("{not json"); return l }, "", AuditUndecodable, 5)
	f("a line without prev inserted", func(l [][]byte) [][]byte {
		return slices.Insert(l, 5, []byte(`{"time":"2026-01-02T03:04:05Z","sync_id":"x","mailbox":"m","device":"d","list":"allowed","from":"absent","to":"present","decision":"Allow","reason":"Compliant"}`))
	}, "", AuditUnchained, 6)
	f("lines cut from the end", func(l [][]byte) [][]byte { return l[:17] }, "", AuditHead, 0)
	f("truncated inside a line", func(l [][]byte) [][]byte { return l[:19] }, `{"prev":"ab`, AuditTorn, 20)
	f("a second log spliced in", func(l [][]byte) [][]byte {
		other := t.TempDir()
		writeAudit(t, other, AuditOptions{}, 100, 3)
		b, _ := os.ReadFile(filepath.Join(other, AuditFile))
		return append(l, bytes.Split(bytes.TrimSuffix(b, []byte{'\n'}), []byte{'\n'})...)
	}, "", AuditBroken, 21)
}

// TestAuditTornLineRestart: a torn last line is reported, then set aside
// at the next open, and the chain goes on from the last whole line.
func TestAuditTornLineRestart(t *testing.T) {
	dir := t.TempDir()
	writeAudit(t, dir, AuditOptions{}, 0, 10)
	path := filepath.Join(dir, AuditFile)
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"prev":"0123","time":"2026-`)
	f.Close()
	if v := verify(t, dir); len(v.Problems) != 1 || v.Problems[0].Kind != AuditTorn || v.Problems[0].Line != 11 {
		t.Fatalf("VerifyAudit of a torn log = %v, want one torn line at 11", v.Problems)
	}
	a, err := OpenAudit(dir, AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	aside := a.TornSetAside()
	if frag, err := os.ReadFile(aside); err != nil || string(frag) != `{"prev":"0123","time":"2026-` {
		t.Errorf("set-aside fragment %s = %q, %v", aside, frag, err)
	}
	if err := a.Write(AuditEntry{Time: now, SyncID: "after", Mailbox: "m", Device: "D"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	v := verify(t, dir)
	if !v.OK() || v.Lines != 11 || len(v.Torn) != 1 || v.Torn[0] != filepath.Base(aside) {
		t.Errorf("VerifyAudit after restart = %+v, want 11 chained lines and the fragment listed", v)
	}
	// A torn file with no whole line at all.
	dir = t.TempDir()
	os.WriteFile(filepath.Join(dir, AuditFile), []byte(`{"pr`), 0o600)
	writeAudit(t, dir, AuditOptions{}, 0, 2)
	if v := verify(t, dir); !v.OK() || v.Lines != 2 || !v.Anchored {
		t.Errorf("VerifyAudit after a torn first line = %+v", v)
	}
}

// TestAuditLegacyLines: a log written before the chain existed is
// continued: its lines count as legacy, and the chain starts after them.
func TestAuditLegacyLines(t *testing.T) {
	dir := t.TempDir()
	legacy := `{"time":"2026-01-02T03:04:05Z","sync_id":"old","mailbox":"m","device":"d","list":"blocked","from":"absent","to":"present","decision":"Block","reason":"NotCompliant"}` + "\n"
	os.WriteFile(filepath.Join(dir, AuditFile), []byte(legacy+legacy), 0o600)
	writeAudit(t, dir, AuditOptions{}, 0, 3)
	if v := verify(t, dir); !v.OK() || v.Legacy != 2 || v.Lines != 5 || v.Anchored {
		t.Errorf("VerifyAudit of an upgraded log = %+v, want 2 legacy lines then a chain", v)
	}
}

// TestAuditRotation: the log rotates by size, keeps Keep files, and one
// chain runs through them; the tail reader reads across them.
func TestAuditRotation(t *testing.T) {
	dir := t.TempDir()
	opts := AuditOptions{MaxBytes: 2 << 10, Keep: -1}
	for round := range 5 {
		writeAudit(t, dir, opts, round*40, 40)
	}
	files, _ := AuditFiles(dir)
	if len(files) < 5 {
		t.Fatalf("%d files after 200 lines of ~220 bytes with 2 KiB files, want many", len(files))
	}
	for _, f := range files {
		if info, _ := os.Stat(f); info.Size() > opts.MaxBytes {
			t.Errorf("%s is %d bytes, bound %d", f, info.Size(), opts.MaxBytes)
		}
	}
	v := verify(t, dir)
	if !v.OK() || v.Lines != 200 || !v.Anchored || len(v.Files) != len(files) {
		t.Fatalf("VerifyAudit across %d files = %+v", len(files), v)
	}
	got, err := ReadAuditTail(dir, 150)
	if err != nil || len(got) != 150 {
		t.Fatalf("ReadAuditTail(150) = %d entries, %v", len(got), err)
	}
	for i, e := range got {
		if want := fmt.Sprintf("D%d", 199-i); e.Device != want {
			t.Fatalf("ReadAuditTail[%d] = %s, want %s", i, e.Device, want)
		}
	}

	// A rotated file removed from the middle.
	os.Remove(files[2])
	v = verify(t, dir)
	kinds := []string{}
	for _, p := range v.Problems {
		kinds = append(kinds, p.Kind)
	}
	if !slices.Contains(kinds, AuditMissing) || !slices.Contains(kinds, AuditBroken) {
		t.Errorf("VerifyAudit without %s = %v, want missing and chain", filepath.Base(files[2]), v.Problems)
	}

	// Keep bounds the rotated files; the oldest kept is not anchored.
	dir = t.TempDir()
	opts.Keep = 2
	for round := range 5 {
		writeAudit(t, dir, opts, round*40, 40)
	}
	files, _ = AuditFiles(dir)
	if len(files) != 3 || filepath.Base(files[2]) != AuditFile {
		t.Fatalf("files with Keep 2 = %v, want 2 rotated and the current", files)
	}
	if v := verify(t, dir); !v.OK() || v.Anchored {
		t.Errorf("VerifyAudit with old files rotated away = %+v, want OK, not anchored", v)
	}
}

// TestAuditStateLostAfterRotation: an empty current file after a rotation
// still shows that earlier syncs wrote.
func TestAuditStateLostAfterRotation(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, rotatedName(1)), []byte("{}\n"), 0o600)
	os.WriteFile(filepath.Join(dir, AuditFile), nil, 0o600)
	if _, st, err := LoadState(dir); err != nil || st.Origin != StateLost {
		t.Errorf("LoadState = %v, %v; want lost", st.Origin, err)
	}
}

func TestParseAuditLine(t *testing.T) {
	f := func(line, wantErr string) {
		t.Helper()
		_, err := ParseAuditLine([]byte(line))
		if (err == nil) != (wantErr == "") || err != nil && !strings.Contains(err.Error(), wantErr) {
			t.Errorf("ParseAuditLine(%q) = %v, want %q", line, err, wantErr)
		}
	}
	f(`{"prev":"`+AuditGenesis+`","device":"D"}`, "")
	f(`{"device":"D"}`, "")
	f(`{"prev":"ABC","device":"D"}`, "not a lowercase hex SHA-256")
	f(`{"device":"D","added_later":1}`, "")
	f(`{"device":"D"} {}`, "invalid character")
	f(`{"device":1}`, "cannot unmarshal")
	f(`null`, "not a JSON object")
	f(``, "not a JSON object")
}

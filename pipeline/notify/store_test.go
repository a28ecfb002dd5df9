package notify

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFileStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notified.json")
	s, err := OpenFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	k1, k2 := Key("A@Example.com", "Dev1", StateBlocked), Key("a@example.com", "Dev2", StateQuarantined)
	if s.Sent(k1) {
		t.Error("Sent() on an empty store = true")
	}
	at := time.Date(2026, 6, 10, 3, 0, 0, 0, time.UTC)
	for _, k := range []string{k1, k2} {
		if err := s.MarkSent(k, at); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600 (the file lists mailboxes)", fi.Mode().Perm())
	}
	s2, err := OpenFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if !s2.Sent(Key("a@example.com", "Dev1", StateBlocked)) || !s2.Sent(k2) || s2.Len() != 2 {
		t.Errorf("reopened store: Sent(k1) %v, Sent(k2) %v, Len %d; want true, true, 2", s2.Sent(k1), s2.Sent(k2), s2.Len())
	}
	if err := s2.Forget(k1); err != nil {
		t.Fatal(err)
	}
	s3, err := OpenFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if s3.Sent(k1) || !s3.Sent(k2) {
		t.Error("Forget() not persisted")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d files, want 1 (no temp files left)", len(entries))
	}
}

func TestFileStoreErrors(t *testing.T) {
	dir := t.TempDir()
	f := func(content, want string) {
		t.Helper()
		p := filepath.Join(dir, fmt.Sprintf("s%d.json", len(content)))
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenFileStore(p); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), p) {
			t.Errorf("OpenFileStore(%q) error = %v, want mention of %q and the path", content, err, want)
		}
	}
	f(`{"version":1,"sent":{`, "unexpected end")
	f(`{"version":2,"sent":{}}`, "version 2")
}

func TestKeyUnambiguous(t *testing.T) {
	a := Key("a@example.com", "x\nblocked", StateQuarantined)
	b := Key("a@example.com", "x", StateBlocked)
	if a == b || !strings.HasSuffix(a, "\nquarantined") {
		t.Errorf("Key() collision: %q, %q", a, b)
	}
}

// BenchmarkFileStoreMarkSent measures a MarkSent that writes a store of
// 50,000 keys (the worst case: one write per FileStoreWriteInterval).
func BenchmarkFileStoreMarkSent(b *testing.B) {
	s, err := OpenFileStore(filepath.Join(b.TempDir(), "n.json"))
	if err != nil {
		b.Fatal(err)
	}
	for i := range 50000 {
		s.sent[Key(fmt.Sprintf("user%05d@example.com", i), fmt.Sprintf("Dev%08d", i), StateBlocked)] = time.Now()
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.lastWrite = time.Time{} // force the write
		if err := s.MarkSent(fmt.Sprintf("k%d", i), time.Now()); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

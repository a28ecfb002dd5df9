package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWriteReplacesAndCleansUp(t *testing.T) {
	dir := t.TempDir()
	// A temporary file a crashed writer left an hour ago, and a fresh one
	// that may belong to a writer in another process.
	stale := filepath.Join(dir, ".state.json.tmp-1")
	fresh := filepath.Join(dir, ".state.json.tmp-2")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("torn"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	for _, content := range []string{"first", "second"} {
		if err := Write(dir, "state.json", []byte(content)); err != nil {
			t.Fatalf("Write(%q) = %v", content, err)
		}
		got, err := ReadLimited(filepath.Join(dir, "state.json"), 100)
		if err != nil || string(got) != content {
			t.Fatalf("ReadLimited() = %q, %v; want %q", got, err, content)
		}
	}
	info, err := os.Stat(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode = %v, want 0600 (the file names mailboxes and devices)", perm)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temp file still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temp file removed: %v", err)
	}
}

func TestReadLimited(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(p, []byte(strings.Repeat("x", 11)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadLimited(p, 10); err == nil || !strings.Contains(err.Error(), "larger than the limit of 10 bytes") {
		t.Errorf("ReadLimited(11 bytes, limit 10) error = %v", err)
	}
	if b, err := ReadLimited(p, 11); err != nil || len(b) != 11 {
		t.Errorf("ReadLimited(11 bytes, limit 11) = %d bytes, %v", len(b), err)
	}
	if _, err := ReadLimited(filepath.Join(t.TempDir(), "missing"), 10); !os.IsNotExist(err) {
		t.Errorf("ReadLimited(missing) error = %v, want not-exist", err)
	}
}

func TestWriteIntoMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	if err := Write(dir, "f", []byte("x")); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("Write(missing dir) error = %v, want one naming %s", err, dir)
	}
}

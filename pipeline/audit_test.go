package pipeline

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func readAudit(t *testing.T, dir string) []AuditEntry {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, AuditFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []AuditEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e AuditEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line %d %q: %v", len(out)+1, sc.Text(), err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAuditConcurrent(t *testing.T) {
	dir := t.TempDir()
	a, err := OpenAudit(dir, AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const writers, per = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				p := MailboxPlan{Identity: fmt.Sprintf("mb%d", w), Changes: []Change{
					{DeviceID: fmt.Sprintf("Appl%d", i), List: ListBlocked, Op: OpAdd, Decision: Block, Reason: ReasonNotCompliant},
				}}
				if err := a.Write(p.AuditEntries(fmt.Sprintf("sync-%d", w), now)...); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	if err := a.Write(AuditEntry{}); !errors.Is(err, ErrAuditClosed) {
		t.Errorf("Write after Close = %v, want ErrAuditClosed", err)
	}
	entries := readAudit(t, dir)
	if len(entries) != writers*per {
		t.Fatalf("%d audit lines, want %d", len(entries), writers*per)
	}
	next := map[string]int{}
	for _, e := range entries {
		if e.SyncID != "sync-"+strings.TrimPrefix(e.Mailbox, "mb") || e.From != Absent || e.To != Present || e.List != ListBlocked {
			t.Fatalf("audit line mixed up: %+v", e)
		}
		if want := fmt.Sprintf("Appl%d", next[e.Mailbox]); e.Device != want {
			t.Fatalf("mailbox %s: device %s out of order, want %s", e.Mailbox, e.Device, want)
		}
		next[e.Mailbox]++
	}
}

// TestAuditBounded: the buffer never holds more than its bound; whole lines
// reach the file before Flush, and Flush writes the rest.
func TestAuditBounded(t *testing.T) {
	dir := t.TempDir()
	a, err := OpenAudit(dir, AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	e := AuditEntry{Time: now, SyncID: "s", Mailbox: strings.Repeat("m", 200), Device: "ApplA", List: ListAllowed, From: Absent, To: Present}
	for range 2000 {
		if err := a.Write(e); err != nil {
			t.Fatal(err)
		}
		if len(a.buf) > auditBufferBytes {
			t.Fatalf("buffer holds %d bytes, bound %d", len(a.buf), auditBufferBytes)
		}
	}
	info, err := os.Stat(filepath.Join(dir, AuditFile))
	if err != nil {
		t.Fatal(err)
	}
	if info.Size() == 0 {
		t.Fatal("nothing reached the file before Flush: the buffer is not bounded")
	}
	data, _ := os.ReadFile(filepath.Join(dir, AuditFile))
	if data[len(data)-1] != '\n' {
		t.Error("the file ends inside a line before Flush")
	}
	big := e
	big.Mailbox = strings.Repeat("x", 2*auditBufferBytes)
	if err := a.Write(big); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := readAudit(t, dir); len(got) != 2001 || got[2000].Mailbox != big.Mailbox {
		t.Errorf("%d lines after Flush, want 2001 ending with the big one", len(got))
	}
}

func TestAuditAppends(t *testing.T) {
	dir := t.TempDir()
	for i := range 3 {
		a, err := OpenAudit(dir, AuditOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Write(AuditEntry{SyncID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
	}
	got := readAudit(t, dir)
	if len(got) != 3 || got[0].SyncID != "0" || got[2].SyncID != "2" {
		t.Errorf("reopened audit log = %+v, want three appended lines", got)
	}
	info, _ := os.Stat(filepath.Join(dir, AuditFile))
	if info.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode %v, want 0600", info.Mode().Perm())
	}
}

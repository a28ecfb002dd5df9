package pipeline

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseAuditLine: any bytes give an entry or an error, never a
// panic, and an accepted prev is a hash.
func FuzzParseAuditLine(f *testing.F) {
	f.Add([]byte(`{"prev":"` + AuditGenesis + `","time":"2026-01-02T03:04:05Z","sync_id":"s","mailbox":"m@x","device":"D1","list":"blocked","from":"absent","to":"present","decision":"Block","reason":"NotCompliant"}`))
	f.Add([]byte(`{"device":"D2"}`))
	f.Add([]byte(`{"prev":"zz"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, line []byte) {
		e, err := ParseAuditLine(line)
		if err == nil && e.Prev != "" && !isHash(e.Prev) {
			t.Fatalf("ParseAuditLine(%q) accepted prev %q", line, e.Prev)
		}
	})
}

// FuzzAuditTail: any file content gives at most limit entries, never a
// panic.
func FuzzAuditTail(f *testing.F) {
	f.Add([]byte(`{"time":"2026-01-02T03:04:05Z","sync_id":"s","mailbox":"m@x","device":"D1","list":"blocked","from":"absent","to":"present","decision":"Block","reason":"NotCompliant"}`+"\n"), false, 5)
	f.Add([]byte("torn\n{\"device\":\"D2\"}\n{"), true, 1)
	f.Add([]byte("\n\n\n"), false, 0)
	f.Fuzz(func(t *testing.T, buf []byte, cut bool, limit int) {
		limit = max(0, min(limit, 100))
		if got := parseAuditTail(buf, cut, limit); len(got) > limit {
			t.Fatalf("parseAuditTail returned %d entries, limit %d", len(got), limit)
		}
	})
}

// FuzzVerifyAudit: whatever the file holds, VerifyAudit reports and
// OpenAudit continues it, after which the new lines chain on.
func FuzzVerifyAudit(f *testing.F) {
	f.Add([]byte(`{"prev":"` + AuditGenesis + `","device":"D1"}` + "\n"))
	f.Add([]byte("{\"device\":\"D1\"}\n{\"prev\":\"0"))
	f.Add([]byte("\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, AuditFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := VerifyAudit(dir); err != nil {
			t.Fatalf("VerifyAudit: %v", err)
		}
		a, err := OpenAudit(dir, AuditOptions{})
		if err != nil {
			t.Fatalf("OpenAudit: %v", err)
		}
		if err := a.Write(AuditEntry{Device: "after"}, AuditEntry{Device: "after2"}); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		v, err := VerifyAudit(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range v.Problems {
			if p.Kind == AuditTorn {
				t.Fatalf("torn line after OpenAudit and Write: %v", p)
			}
		}
	})
}

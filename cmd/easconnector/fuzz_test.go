package main

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzClean: whatever a phone reports, what reaches the terminal is one
// cell of printable characters within the limit.
func FuzzClean(f *testing.F) {
	for _, s := range []string{"iPhone", "", "a\tb", "\x1b[31mred", "\u202eevil", "x\r\ny", "\xff\xfe", strings.Repeat("é", 60)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := clean(s, 40)
		if !utf8.ValidString(got) || utf8.RuneCountInString(got) > 40 || got == "" {
			t.Fatalf("clean(%q) = %q: invalid, empty or longer than 40", s, got)
		}
		for _, r := range got {
			if !unicode.IsGraphic(r) || unicode.IsSpace(r) && r != ' ' || unicode.Is(unicode.Cf, r) {
				t.Fatalf("clean(%q) = %q keeps %U", s, got, r)
			}
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

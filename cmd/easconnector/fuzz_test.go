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

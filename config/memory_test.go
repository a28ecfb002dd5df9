package config

import "testing"

func TestParseMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true}, {"off", -1, true}, {" OFF ", -1, true},
		{"1536MiB", 1536 << 20, true}, {"2GiB", 2 << 30, true}, {"1.5GiB", 3 << 29, true}, {"800MB", 800e6, true},
		{"134217728", 128 << 20, true}, {"64 MiB", 64 << 20, true},
		{"1MiB", 0, false}, {"lots", 0, false}, {"-2GiB", 0, false}, {"2GB/s", 0, false}, {"0", 0, false},
	} {
		got, err := ParseMemoryLimit(c.in)
		if (err == nil) != c.ok || (c.ok && got != c.want) {
			t.Errorf("ParseMemoryLimit(%q) = %d, %v; want %d, ok %v", c.in, got, err, c.want, c.ok)
		}
	}
}

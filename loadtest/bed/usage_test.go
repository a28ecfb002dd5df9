package bed

import (
	"os"
	"runtime"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// proc(5): utime and stime are fields 14 and 15; the command name may
	// hold spaces and parentheses.
	line := "4242 (easc (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 130 0 0 20 0 12 0 100 200000000 5000 18446744073709551615\n"
	got, err := parseStatCPU([]byte(line))
	if err != nil || got != 3800*time.Millisecond {
		t.Errorf("parseStatCPU = %s, %v; want 3.8s (380 ticks)", got, err)
	}
	for _, bad := range []string{"no paren", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 ab 12 13"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q) succeeded", bad)
		}
	}
}

func TestReadUsageSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	u, err := ReadUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.PeakRSS < 1<<20 || u.RSS < 1<<20 || u.PeakRSS < u.RSS {
		t.Errorf("ReadUsage(self) = %+v: want RSS of at least 1 MiB and peak ≥ now", u)
	}
	if _, err := ReadUsage(1 << 30); err == nil {
		t.Error("ReadUsage of a pid that cannot exist succeeded")
	}
}

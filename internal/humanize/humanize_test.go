package humanize

import (
	"testing"
	"time"
)

func TestNum(t *testing.T) {
	f := func(n int, want string) {
		t.Helper()
		if got := Num(n); got != want {
			t.Errorf("Num(%d) = %q, want %q", n, got, want)
		}
	}
	f(0, "0")
	f(999, "999")
	f(1000, "1,000")
	f(-1000, "-1,000")
	f(-999, "-999")
	f(1234567, "1,234,567")
	f(-9223372036854775808, "-9,223,372,036,854,775,808")
}

func TestDurations(t *testing.T) {
	f := func(d time.Duration, short, long string) {
		t.Helper()
		if got := Short(d); got != short {
			t.Errorf("Short(%v) = %q, want %q", d, got, short)
		}
		if got := Long(d); got != long {
			t.Errorf("Long(%v) = %q, want %q", d, got, long)
		}
	}
	f(0, "0s", "0 s")
	f(1499*time.Millisecond, "1s", "1 s")
	f(45*time.Second, "45s", "45 s")
	f(4*time.Minute+12*time.Second, "4m12s", "4 min 12 s")
	f(12*time.Minute+5*time.Second, "12m5s", "12 min")
	f(3*time.Hour+20*time.Minute, "3h20m", "3 h 20 min")
	f(52*time.Hour, "52h0m", "2 d 4 h")
}

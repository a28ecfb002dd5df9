package config

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written as a string in the file: "30s", "5m",
// "1h30m", and whole days as "7d" or "1d12h". A bare number is refused
// rather than read as nanoseconds. It is a struct (not a named int64) so that
// the TOML decoder hands integers to UnmarshalText too.
type Duration struct {
	time.Duration
}

// Dur is shorthand for Duration{d}.
func Dur(d time.Duration) Duration { return Duration{d} }

var daysRe = regexp.MustCompile(`^([0-9]+)d(.*)$`)

// UnmarshalText parses a duration.
func (d *Duration) UnmarshalText(b []byte) error {
	s := string(b)
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	bad := func(why string) error {
		return fmt.Errorf("invalid duration %q: %s (write e.g. \"30s\", \"5m\", \"2h\" or \"7d\")", s, why)
	}
	if s == "" {
		return 0, bad("empty")
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil && s != "0" {
		return 0, bad("missing unit")
	}
	var days time.Duration
	rest := s
	if m := daysRe.FindStringSubmatch(s); m != nil {
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n > math.MaxInt64/int64(24*time.Hour) {
			return 0, bad("too many days")
		}
		days = time.Duration(n) * 24 * time.Hour
		rest = m[2]
		if rest == "" {
			return days, nil
		}
		if strings.HasPrefix(rest, "-") || strings.HasPrefix(rest, "+") {
			return 0, bad("sign after the days")
		}
	}
	v, err := time.ParseDuration(rest)
	if err != nil {
		return 0, bad(strings.TrimPrefix(strings.TrimPrefix(err.Error(), "time: "), "invalid duration "))
	}
	if v > math.MaxInt64-days {
		return 0, bad("too long")
	}
	return days + v, nil
}

// MarshalText writes the shortest form UnmarshalText reads back.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(formatDuration(d.Duration)), nil
}

// String is the form MarshalText writes.
func (d Duration) String() string { return formatDuration(d.Duration) }

func formatDuration(v time.Duration) string {
	if v == 0 {
		return "0s"
	}
	if v < 0 || v%time.Millisecond != 0 {
		return v.String()
	}
	var b strings.Builder
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}, {time.Millisecond, "ms"}} {
		if n := v / u.unit; n > 0 {
			b.WriteString(strconv.FormatInt(int64(n), 10))
			b.WriteString(u.name)
			v -= n * u.unit
		}
	}
	return b.String()
}

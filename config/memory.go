package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Memory-limit values besides a size.
const (
	MemoryLimitAuto = "" // 90 % of the cgroup's limit, when there is one
	MemoryLimitOff  = "off"
)

// minMemoryLimit is the smallest limit accepted: below it the garbage
// collector would run nearly all the time for a fleet of any size.
const minMemoryLimit = 64 << 20

var memoryUnits = []struct {
	suffix string
	mult   float64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}

// ParseMemoryLimit reads [sync] memory_limit: 0 for MemoryLimitAuto, -1
// for MemoryLimitOff, else the size in bytes (a number with one of B, KiB,
// MiB, GiB, TiB, KB, MB, GB, TB, as GOMEMLIMIT takes them; a bare number
// is bytes).
func ParseMemoryLimit(s string) (int64, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case MemoryLimitAuto:
		return 0, nil
	case MemoryLimitOff:
		return -1, nil
	}
	num, mult := s, 1.0
	for _, u := range memoryUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 {
		return 0, fmt.Errorf(`want "", "off" or a size such as "1536MiB" or "2GiB", got %q`, s)
	}
	b := f * mult
	if b < minMemoryLimit || b > 1<<50 {
		return 0, fmt.Errorf("%q: must be between 64MiB and 1PiB", s)
	}
	return int64(b), nil
}

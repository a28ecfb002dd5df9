package scenario

import (
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/easconnector/easconnector/loadtest/exsim"
)

// Change is one change the driver made to the fleet, at the moment the
// last simulator acknowledged it (the change "happened" then: the
// connector can see it from that moment on).
type Change struct {
	At       time.Time
	Kind     string // population.ChangeKind, or "burst"
	DeviceID string // the EAS DeviceId whose access the change can alter
}

// Write is one Set-CASMailbox that Exchange applied, at the moment it
// completed (its arrival plus its duration, from exsim's call log), with
// every DeviceId it added to or removed from either list.
type Write struct {
	At      time.Time
	Devices []string
}

// listArgs are Set-CASMailbox's list parameters.
var listArgs = []string{"ActiveSyncAllowedDeviceIDs", "ActiveSyncBlockedDeviceIDs"}

// WritesFromCalls picks the applied Set-CASMailbox calls from exsim's call
// log. The device ids are every string under the list parameters, so that
// either the WinRS frame ({"add":[…],"remove":[…]}) or the PSRP hashtable
// (@{Add=…;Remove=…}) shape counts.
func WritesFromCalls(calls []exsim.Call) []Write {
	var out []Write
	for _, c := range calls {
		if !strings.EqualFold(c.Cmd, "Set-CASMailbox") || c.Result != "ok" {
			continue
		}
		w := Write{At: c.Time.Add(c.Duration)}
		for _, a := range listArgs {
			w.Devices = strings2(c.Args[a], w.Devices)
		}
		if len(w.Devices) > 0 {
			out = append(out, w)
		}
	}
	return out
}

// strings2 appends every string in v (nested maps and slices included).
func strings2(v any, out []string) []string {
	switch v := v.(type) {
	case string:
		return append(out, v)
	case []any:
		for _, e := range v {
			out = strings2(e, out)
		}
	case map[string]any:
		for _, e := range v {
			out = strings2(e, out)
		}
	}
	return out
}

// LagResult is the change-to-enforcement lag of a run.
type LagResult struct {
	Lags []time.Duration // one per enforced change, in the order of the changes
	// Unwritten counts changes no write followed: changes that need none
	// (a phone the MDM does not know stays with the org default; an
	// untargeted user; an MDM record without a partnership) and changes
	// the connector missed, which the closing full sync's writes reveal.
	Unwritten int
}

// Lags matches each change with the first write at or after it that names
// its device (DeviceIds compare case-insensitively, as Exchange's do) and
// returns the time between them.
func Lags(changes []Change, writes []Write) LagResult {
	by := map[string][]time.Time{}
	for _, w := range writes {
		for _, d := range w.Devices {
			k := strings.ToLower(d)
			by[k] = append(by[k], w.At)
		}
	}
	for _, ts := range by {
		slices.SortFunc(ts, time.Time.Compare)
	}
	var r LagResult
	for _, c := range changes {
		ts := by[strings.ToLower(c.DeviceID)]
		i := sort.Search(len(ts), func(i int) bool { return !ts[i].Before(c.At) })
		if i == len(ts) {
			r.Unwritten++
			continue
		}
		r.Lags = append(r.Lags, ts[i].Sub(c.At))
	}
	return r
}

// Percentile returns the p-th percentile (0 < p ≤ 100) of ds by the
// nearest-rank method: the smallest value with at least p % of the values
// at or below it. It returns 0 for no values.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(p/100*float64(len(s)) + 0.999999999)
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// Dist is the p50, p95 and max of a set of durations.
type Dist struct {
	N   int           `json:"n"`
	P50 time.Duration `json:"p50"`
	P95 time.Duration `json:"p95"`
	Max time.Duration `json:"max"`
}

// Distribution summarises ds.
func Distribution(ds []time.Duration) Dist {
	return Dist{N: len(ds), P50: Percentile(ds, 50), P95: Percentile(ds, 95), Max: Percentile(ds, 100)}
}

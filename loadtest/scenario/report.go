package scenario

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"
	"time"
)

// Report is what one scenario run measured.
type Report struct {
	Scenario string        `json:"scenario"`
	Devices  int           `json:"devices"`
	Wall     time.Duration `json:"wallNs"` // from the connector's start to the closing full sync's end

	FirstSync    time.Duration `json:"firstSyncNs"` // the start-up full sync (the first deployment)
	Syncs        Dist          `json:"syncs"`       // every later sync, scheduled or requested, the closing one excluded
	FailedSyncs  int           `json:"failedSyncs"` // syncs whose result was not ok (held, failed, partial)
	SyncFailures int           `json:"writeFailures"`

	Changes   int  `json:"changes"`   // changes injected
	Lag       Dist `json:"lag"`       // change → the write that enforced it landed in Exchange
	Unwritten int  `json:"unwritten"` // changes no write followed (most need none)

	Cmdlets       uint64  `json:"cmdlets"`       // cmdlets Exchange served during the run
	Writes        uint64  `json:"writes"`        // Set-CASMailbox calls Exchange applied
	CmdletsPerSec float64 `json:"cmdletsPerSec"` // Cmdlets ÷ the time spent in syncs
	ExchangeErrs  uint64  `json:"exchangeErrors"`
	Throttled     uint64  `json:"throttled"` // calls refused by Exchange's cmdlet budget
	GraphErrors   int     `json:"graphErrors"`

	FinalWrites int  `json:"finalWrites"` // writes of the closing full sync: what was left to enforce
	CleanExit   bool `json:"cleanExit"`   // SIGTERM at the end: exit 0 within shutdown_timeout

	PeakRSS int64         `json:"peakRssBytes"` // VmHWM of the connector process (the largest incarnation)
	CPU     time.Duration `json:"cpuNs"`        // utime+stime, summed over incarnations

	// Extra holds scenario-specific measurements (writes during an
	// outage, kills, …).
	Extra map[string]float64 `json:"extra,omitempty"`

	Objectives []Outcome `json:"objectives"`
}

// Outcome is one objective's verdict.
type Outcome struct {
	Objective string `json:"objective"`
	Got       string `json:"got"`
	OK        bool   `json:"ok"`
}

// OK reports whether every objective held.
func (r *Report) OK() bool {
	for _, o := range r.Objectives {
		if !o.OK {
			return false
		}
	}
	return len(r.Objectives) > 0
}

// Objective is a service objective a scenario states: a description and
// its check against a report.
type Objective struct {
	Text  string
	Check func(r *Report) (got string, ok bool)
}

// Evaluate checks objs against r and records the outcomes in r.
func (r *Report) Evaluate(objs []Objective) {
	r.Objectives = r.Objectives[:0]
	for _, o := range objs {
		got, ok := o.Check(r)
		r.Objectives = append(r.Objectives, Outcome{Objective: o.Text, Got: got, OK: ok})
	}
}

// LagP95AtMost holds when the lag's p95 is at most d and at least one
// change was enforced (a run that enforced nothing proves nothing).
func LagP95AtMost(d time.Duration) Objective {
	return Objective{Text: "lag p95 ≤ " + d.String(), Check: func(r *Report) (string, bool) {
		if r.Lag.N == 0 {
			return "no change enforced", false
		}
		return fmt.Sprintf("%s over %d changes", dur(r.Lag.P95), r.Lag.N), r.Lag.P95 <= d
	}}
}

// LagMaxAtMost holds when every enforced change took at most d.
func LagMaxAtMost(d time.Duration) Objective {
	return Objective{Text: "lag max ≤ " + d.String(), Check: func(r *Report) (string, bool) {
		if r.Lag.N == 0 {
			return "no change enforced", false
		}
		return dur(r.Lag.Max), r.Lag.Max <= d
	}}
}

// Converged holds when the closing full sync had nothing left to write and
// the connector stopped cleanly.
func Converged() Objective {
	return Objective{Text: "converged: closing full sync writes 0, clean exit", Check: func(r *Report) (string, bool) {
		return fmt.Sprintf("%d writes, clean exit %v", r.FinalWrites, r.CleanExit), r.FinalWrites == 0 && r.CleanExit
	}}
}

// FailedSyncsAtMost holds when at most n syncs did not end ok.
func FailedSyncsAtMost(n int) Objective {
	return Objective{Text: fmt.Sprintf("failed syncs ≤ %d", n), Check: func(r *Report) (string, bool) {
		return fmt.Sprint(r.FailedSyncs), r.FailedSyncs <= n
	}}
}

// FirstSyncAtMost holds when the start-up full sync took at most d.
func FirstSyncAtMost(d time.Duration) Objective {
	return Objective{Text: "first full sync ≤ " + d.String(), Check: func(r *Report) (string, bool) {
		return dur(r.FirstSync), r.FirstSync > 0 && r.FirstSync <= d
	}}
}

// PeakRSSAtMost holds when the connector's resident set never exceeded mib.
func PeakRSSAtMost(mib int64) Objective {
	return Objective{Text: fmt.Sprintf("peak RSS ≤ %d MiB", mib), Check: func(r *Report) (string, bool) {
		return fmt.Sprintf("%d MiB", r.PeakRSS>>20), r.PeakRSS > 0 && r.PeakRSS <= mib<<20
	}}
}

// ExtraAtMost holds when r.Extra[key] is at most v.
func ExtraAtMost(key string, v float64, text string) Objective {
	return Objective{Text: text, Check: func(r *Report) (string, bool) {
		got, ok := r.Extra[key]
		return fmt.Sprintf("%s = %g", key, got), ok && got <= v
	}}
}

// ExtraAtLeast holds when r.Extra[key] is at least v.
func ExtraAtLeast(key string, v float64, text string) Objective {
	return Objective{Text: text, Check: func(r *Report) (string, bool) {
		got, ok := r.Extra[key]
		return fmt.Sprintf("%s = %g", key, got), ok && got >= v
	}}
}

func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < 10*time.Second:
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func (d Dist) String() string {
	if d.N == 0 {
		return "-"
	}
	return fmt.Sprintf("%s / %s / %s (n=%d)", dur(d.P50), dur(d.P95), dur(d.Max), d.N)
}

// Print writes the report for a person.
func (r *Report) Print(w io.Writer) {
	verdict := "PASS"
	if !r.OK() {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "\n== %s: %s (%d devices, %s)\n", r.Scenario, verdict, r.Devices, dur(r.Wall))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, v) }
	row("first full sync", dur(r.FirstSync))
	row("syncs p50 / p95 / max", r.Syncs.String())
	row("failed syncs, write failures", fmt.Sprintf("%d, %d", r.FailedSyncs, r.SyncFailures))
	row("changes injected, unwritten", fmt.Sprintf("%d, %d", r.Changes, r.Unwritten))
	row("lag p50 / p95 / max", r.Lag.String())
	row("cmdlets, writes", fmt.Sprintf("%d, %d", r.Cmdlets, r.Writes))
	row("cmdlets/s (in syncs)", fmt.Sprintf("%.0f", r.CmdletsPerSec))
	row("Exchange errors, throttled", fmt.Sprintf("%d, %d", r.ExchangeErrs, r.Throttled))
	row("Graph errors answered", fmt.Sprint(r.GraphErrors))
	row("connector peak RSS, CPU", fmt.Sprintf("%d MiB, %s", r.PeakRSS>>20, dur(r.CPU)))
	for _, k := range sortedKeys(r.Extra) {
		row(k, fmt.Sprintf("%g", r.Extra[k]))
	}
	tw.Flush()
	for _, o := range r.Objectives {
		mark := "ok  "
		if !o.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  [%s] %s: %s\n", mark, o.Objective, o.Got)
	}
}

func sortedKeys(m map[string]float64) []string {
	return slices.Sorted(maps.Keys(m))
}

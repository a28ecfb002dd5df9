package server

import (
	"slices"
	"time"

	"github.com/easconnector/easconnector/internal/humanize"
)

// trendChart is a small column chart of one value over the recent syncs,
// oldest on the left, laid out here so that the template only places
// numbers (server-rendered SVG, no script).
type trendChart struct {
	ID, Title string
	Width     int
	Height    int // of the plot area
	Bars      []trendBar
	Max       string // the value at the top of the plot: "max 41 s"
	Last      string // the newest value: "last 3 s"
	Empty     string // shown instead when no sync has the value
	Legend    []legendItem
	Note      string
}

type trendBar struct {
	X, W  int
	Title string // tooltip: "quick sync 20261206T…: 3 s"
	Segs  []trendSeg
	Value float64 // for tests: the bar's total
}

type trendSeg struct {
	Y, H  int
	Class string
}

type legendItem struct{ Class, Text string }

const (
	trendW      = 360
	trendPlotH  = 80
	trendMaxBar = 16
)

// trendValue is one segment's value and class.
type trendValue struct {
	v     float64
	class string
}

// trends builds the status page's trend charts from syncs (newest first).
func (s *Server) trends(syncs []SyncResult) []*trendChart {
	done := make([]SyncResult, 0, len(syncs))
	for _, sr := range syncs {
		if !sr.End.IsZero() && sr.Result != ResultRunning {
			done = append(done, sr)
		}
	}
	slices.Reverse(done) // oldest first
	kindClass := func(sr SyncResult) string {
		if sr.Kind == "full" {
			return "t-full"
		}
		return "t-quick"
	}
	kinds := []legendItem{{"t-full", "full"}, {"t-quick", "quick"}}
	dur := func(v float64) string { return humanize.Long(seconds(v)) }
	var out []*trendChart
	out = append(out, s.trend("trend-duration", "Sync duration", done, kinds, dur, "", func(sr SyncResult) []trendValue {
		return []trendValue{{sr.End.Sub(sr.Start).Seconds(), kindClass(sr)}}
	}))
	out = append(out, s.trend("trend-writes", "Mailbox writes per sync", done, kinds, func(v float64) string { return humanize.Num(int(v)) },
		"Set-CASMailbox calls that changed a list", func(sr SyncResult) []trendValue {
			return []trendValue{{float64(sr.Writes), kindClass(sr)}}
		}))
	decisions := []legendItem{{"bar-allow", "Allow"}, {"bar-block", "Block"}, {"bar-default", "Default"}, {"bar-other", "NoChange"}}
	out = append(out, s.trend("trend-decisions", "Devices by decision", done, decisions, func(v float64) string { return humanize.Num(int(v)) },
		"the whole fleet after each sync", func(sr SyncResult) []trendValue {
			if sr.Fleet == nil {
				return nil
			}
			var vs []trendValue
			for _, l := range decisions {
				vs = append(vs, trendValue{float64(sr.Fleet.Decisions[l.Text]), l.Class})
			}
			return vs
		}))
	out = append(out, s.trend("trend-lag", "Change-to-enforcement lag (p95)", done, nil, dur,
		"MDM check-in with the change → the write that enforced it", func(sr SyncResult) []trendValue {
			if sr.Lag == nil || sr.Lag.Devices == 0 {
				return nil
			}
			return []trendValue{{sr.Lag.P95, "t-lag"}}
		}))
	return out
}

// trend lays out one chart: values returns a sync's stacked segments, nil
// when the sync has no value.
func (s *Server) trend(id, title string, syncs []SyncResult, legend []legendItem, format func(float64) string, note string,
	values func(SyncResult) []trendValue) *trendChart {
	c := &trendChart{ID: id, Title: title, Width: trendW, Height: trendPlotH, Legend: legend, Note: note}
	type col struct {
		sr  SyncResult
		vs  []trendValue
		sum float64
	}
	var cols []col
	most := 0.0
	for _, sr := range syncs {
		vs := values(sr)
		if vs == nil {
			continue
		}
		sum := 0.0
		for _, v := range vs {
			sum += v.v
		}
		cols = append(cols, col{sr, vs, sum})
		most = max(most, sum)
	}
	if len(cols) == 0 {
		c.Empty = "No finished sync has this value yet."
		return c
	}
	step := trendW / max(len(cols), trendW/(trendMaxBar+4))
	w := max(step-3, 2)
	for i, cl := range cols {
		b := trendBar{X: i * step, W: w, Value: cl.sum,
			Title: cl.sr.Kind + " sync " + cl.sr.ID + " (" + cl.sr.End.In(s.opts.Location).Format(time.DateTime) + "): " + format(cl.sum)}
		y := trendPlotH
		for _, v := range cl.vs {
			h := 0
			if most > 0 {
				h = int(v.v / most * trendPlotH)
			}
			if v.v > 0 && h == 0 {
				h = 1
			}
			y -= h
			b.Segs = append(b.Segs, trendSeg{Y: y, H: h, Class: v.class})
		}
		c.Bars = append(c.Bars, b)
	}
	c.Max = "max " + format(most)
	c.Last = "last " + format(cols[len(cols)-1].sum)
	return c
}

package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/easconnector/easconnector/internal/humanize"
	"github.com/easconnector/easconnector/pipeline"
)

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressReporter shows a sync's progress: bars on a terminal, log lines
// otherwise. The engine calls event from its stages, never concurrently;
// finish is called once the sync has returned.
type progressReporter interface {
	event(pipeline.ProgressEvent)
	finish()
}

func newProgress(w io.Writer, tty bool) progressReporter {
	if tty {
		return &barProgress{w: w}
	}
	return &lineProgress{w: w, every: 2 * time.Second, now: time.Now}
}

// stageText names what a stage counts.
func stageText(s pipeline.Stage) string {
	switch s {
	case pipeline.StageDiscover:
		return "reading Exchange"
	case pipeline.StageDecide:
		return "devices decided"
	case pipeline.StagePlan:
		return "mailboxes planned"
	case pipeline.StageApply:
		return "mailboxes written"
	}
	return string(s)
}

// barProgress draws one bar per stage; a stage whose total is not known
// yet (devices still streaming from Exchange) gets a spinner with a count.
type barProgress struct {
	w     io.Writer
	mu    sync.Mutex
	stage pipeline.Stage
	total int // the bar's length; 0 while unknown (a spinner)
	bar   *progressbar.ProgressBar
}

func (p *barProgress) event(ev pipeline.ProgressEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ev.Stage != p.stage || p.bar == nil {
		p.closeBar()
		p.stage, p.total = ev.Stage, max(ev.Total, 0)
		length := int64(ev.Total)
		if length <= 0 {
			length = -1
		}
		p.bar = progressbar.NewOptions64(length,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription(fmt.Sprintf("%-18s", stageText(ev.Stage))),
			progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionSpinnerType(14),
			progressbar.OptionFullWidth(),
		)
	}
	if ev.Total > 0 && ev.Total != p.total {
		p.total = ev.Total
		p.bar.ChangeMax64(int64(ev.Total))
	}
	_ = p.bar.Set64(int64(ev.Done))
}

// closeBar finishes the current bar on its own line.
func (p *barProgress) closeBar() {
	if p.bar == nil {
		return
	}
	_ = p.bar.Finish()
	fmt.Fprintln(p.w)
	p.bar = nil
}

func (p *barProgress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeBar()
}

// lineProgress writes a line when a stage starts and ends, and at most
// every `every` in between.
type lineProgress struct {
	w     io.Writer
	every time.Duration
	now   func() time.Time

	mu      sync.Mutex
	last    pipeline.ProgressEvent // the latest event
	printed pipeline.ProgressEvent // the latest event written
	at      time.Time
}

func (p *lineProgress) line(ev pipeline.ProgressEvent) {
	count := humanize.Num(ev.Done)
	if ev.Total > 0 {
		count += " of " + humanize.Num(ev.Total)
	}
	fmt.Fprintf(p.w, "sync %s: %s: %s\n", ev.SyncID, stageText(ev.Stage), count)
	p.printed, p.at = ev, p.now()
}

func (p *lineProgress) event(ev pipeline.ProgressEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ev.Stage != p.last.Stage && p.last.Stage != "" && p.last != p.printed {
		p.line(p.last) // where the previous stage ended
	}
	if ev.Stage != p.printed.Stage || (ev.Total > 0 && ev.Done == ev.Total) || p.now().Sub(p.at) >= p.every {
		p.line(ev)
	}
	p.last = ev
}

func (p *lineProgress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last.Stage != "" && p.last != p.printed {
		p.line(p.last)
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/internal/humanize"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/server"
)

func TestFormatting(t *testing.T) {
	for _, c := range []struct {
		n    int
		want string
	}{{0, "0"}, {999, "999"}, {1000, "1,000"}, {-1234567, "-1,234,567"}, {200000, "200,000"}} {
		if got := humanize.Num(c.n); got != c.want {
			t.Errorf("humanize.Num(%d) = %q, want %q", c.n, got, c.want)
		}
	}
	for _, c := range []struct {
		d    time.Duration
		want string
	}{{0, "0s"}, {20 * time.Second, "20s"}, {400 * time.Millisecond, "0s"}, {90 * time.Second, "1m30s"}, {3*time.Hour + 20*time.Minute + 10*time.Second, "3h20m"}} {
		if got := humanize.Short(c.d); got != c.want {
			t.Errorf("humanize.Short(%s) = %q, want %q", c.d, got, c.want)
		}
	}
	for _, c := range []struct {
		listen string
		tls    bool
		want   string
	}{{"127.0.0.1:8443", false, "http://127.0.0.1:8443"}, {":8443", true, "https://127.0.0.1:8443"},
		{"0.0.0.0:80", false, "http://127.0.0.1:80"}, {"[::]:80", false, "http://127.0.0.1:80"}, {"eas.contoso.com:8443", true, "https://eas.contoso.com:8443"}} {
		if got := listenURL(c.listen, c.tls); got != c.want {
			t.Errorf("listenURL(%q, %v) = %q, want %q", c.listen, c.tls, got, c.want)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"iPhone", "iPhone"}, {"", "-"}, {"a\tb\x1b[2J", `a\tb\x1b[2J`}, {"\u202emodel", `\u202emodel`}, {strings.Repeat("x", 50), strings.Repeat("x", 39) + "…"},
	} {
		if got := clean(c.in, 40); got != c.want {
			t.Errorf("clean(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestSyncExitCode(t *testing.T) {
	ge := &pipeline.GuardError{Kind: pipeline.GuardBlastRadius, Got: 9, Limit: 5}
	f := func(rep *pipeline.Report, err error, want int) {
		t.Helper()
		if got := syncExitCode(rep, err); got != want {
			t.Errorf("syncExitCode(%v) = %d, want %d", err, got, want)
		}
	}
	f(&pipeline.Report{}, nil, exitOK)
	f(&pipeline.Report{SyncResult: pipeline.SyncResult{Failures: 2}}, nil, exitPartial)
	f(&pipeline.Report{}, ge, exitHeld)
	f(&pipeline.Report{}, fmt.Errorf("sync: %w", ge), exitHeld)
	f(&pipeline.Report{}, fmt.Errorf("%w: %w", pipeline.ErrMDM, &pipeline.GuardError{Kind: pipeline.GuardMDMShrunk}), exitFailed)
	f(&pipeline.Report{}, pipeline.ErrMDM, exitFailed)
	f(&pipeline.Report{}, context.Canceled, exitFailed)
	f(nil, pipeline.ErrSyncRunning, exitFailed)
}

// fakeClock advances by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestLineProgress(t *testing.T) {
	var b strings.Builder
	clk := &fakeClock{t: time.Unix(0, 0)}
	p := &lineProgress{w: &b, every: 2 * time.Second, now: clk.now}
	ev := func(stage pipeline.Stage, done, total int, after time.Duration) {
		clk.t = clk.t.Add(after)
		p.event(pipeline.ProgressEvent{SyncID: "s1", Stage: stage, Done: done, Total: total})
	}
	ev(pipeline.StageDecide, 100, 0, 0)
	ev(pipeline.StageDecide, 200, 0, time.Second) // too soon
	ev(pipeline.StageDecide, 300, 0, 1500*time.Millisecond)
	ev(pipeline.StageDecide, 400, 0, 100*time.Millisecond) // too soon, but where the stage ends
	ev(pipeline.StagePlan, 10, 50, 0)
	ev(pipeline.StagePlan, 50, 50, 0) // complete
	ev(pipeline.StageApply, 0, 20, 0)
	ev(pipeline.StageApply, 7, 20, 100*time.Millisecond)
	p.finish()
	want := `sync s1: devices decided: 100
sync s1: devices decided: 300
sync s1: devices decided: 400
sync s1: mailboxes planned: 10 of 50
sync s1: mailboxes planned: 50 of 50
sync s1: mailboxes written: 0 of 20
sync s1: mailboxes written: 7 of 20
`
	if b.String() != want {
		t.Errorf("lineProgress wrote\n%s\nwant\n%s", b.String(), want)
	}
}

func TestBarProgress(t *testing.T) {
	var b lockedBuffer
	p := newProgress(&b, true)
	p.event(pipeline.ProgressEvent{Stage: pipeline.StageDecide, Done: 10})
	p.event(pipeline.ProgressEvent{Stage: pipeline.StageDecide, Done: 30, Total: 30})
	p.event(pipeline.ProgressEvent{Stage: pipeline.StageApply, Done: 5, Total: 10})
	p.finish()
	out := b.String()
	for _, want := range []string{"devices decided", "mailboxes written", "(30/30", "(10/10"} {
		if !strings.Contains(out, want) {
			t.Errorf("bar output lacks %q:\n%q", want, out)
		}
	}
}

func TestStateLock(t *testing.T) {
	dir := t.TempDir()
	l, err := lockStateDir(dir, "run")
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockStateDir(dir, "sync")
	if !errors.Is(err, errLocked) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d (easconnector run)", os.Getpid())) {
		t.Errorf("second lock = %v, want errLocked naming pid %d", err, os.Getpid())
	}
	if err := l.unlock(); err != nil {
		t.Fatal(err)
	}
	l, err = lockStateDir(dir, "sync")
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	l.unlock()
}

func TestAuditTail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, pipeline.AuditFile)
	if got, err := pipeline.ReadAuditTail(dir, 10); err != nil || got != nil {
		t.Errorf("ReadAuditTail(missing) = %v, %v", got, err)
	}
	a, err := pipeline.OpenAudit(dir, pipeline.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 5 {
		if err := a.Write(pipeline.AuditEntry{Time: at.Add(time.Duration(i) * time.Minute), SyncID: "s", Mailbox: fmt.Sprintf("m%d@contoso.com", i),
			Device: fmt.Sprintf("DEV%d", i), List: pipeline.ListBlocked, From: pipeline.Absent, To: pipeline.Present, Decision: pipeline.Block, Reason: pipeline.ReasonNotCompliant}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("{not json\n")
	f.Close()
	got, err := pipeline.ReadAuditTail(dir, 3)
	if err != nil || len(got) != 3 || got[0].Device != "DEV4" || got[2].Device != "DEV2" {
		t.Fatalf("ReadAuditTail(3) = %+v, %v; want DEV4, DEV3, DEV2", got, err)
	}
	b := &backend{stateDir: dir}
	ch := b.Changes(t.Context(), 1)
	want := server.Change{Time: at.Add(4 * time.Minute), SyncID: "s", Mailbox: "m4@contoso.com", DeviceID: "DEV4", From: server.PlaceNeither, To: server.PlaceBlocked, Reason: "NotCompliant",
		Summary: "blocked, was left to Exchange"}
	if len(ch) != 1 || ch[0] != want {
		t.Errorf("Changes(1) = %+v, want %+v", ch, want)
	}
}

func TestSyncResultMapping(t *testing.T) {
	b := &backend{notes: map[string]*syncNote{}}
	b.note("a").trigger, b.note("a").result = "manual", pipeline.ResultPartial
	f := func(r pipeline.SyncResult, override, wantResult, wantTrigger string) {
		t.Helper()
		got := b.syncResult(&r, override)
		if got.Result != wantResult || got.Trigger != wantTrigger {
			t.Errorf("syncResult(%s) = %s/%s, want %s/%s", r.ID, got.Result, got.Trigger, wantResult, wantTrigger)
		}
	}
	f(pipeline.SyncResult{ID: "a", Failures: 2}, "", server.ResultFailed, "manual")
	f(pipeline.SyncResult{ID: "b"}, "", server.ResultOK, "")
	f(pipeline.SyncResult{ID: "c", Guard: pipeline.GuardOutcome{Result: pipeline.GuardHeld}, Error: "guard"}, "", server.ResultHeld, "")
	f(pipeline.SyncResult{ID: "d", Error: "boom"}, "", server.ResultFailed, "")
	f(pipeline.SyncResult{ID: "e"}, server.ResultRunning, server.ResultRunning, "")
	for i := range maxSyncNotes + 5 {
		b.note(fmt.Sprint(i))
	}
	if len(b.notes) != maxSyncNotes || len(b.order) != maxSyncNotes {
		t.Errorf("notes grew to %d/%d, want at most %d", len(b.notes), len(b.order), maxSyncNotes)
	}
}

// humanStdout makes sync and plan print for a terminal, as a person at
// one sees them, until the test ends.
func humanStdout(t *testing.T) {
	t.Helper()
	prev := humanOutput
	humanOutput = func(io.Writer) bool { return true }
	t.Cleanup(func() { humanOutput = prev })
}

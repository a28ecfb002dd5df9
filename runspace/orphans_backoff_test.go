package runspace

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"
)

// Creations against a server whose Creates go unanswered back off
// exponentially with jitter, give way to the caller's context, and start
// over once a Create is answered.
func TestCreateBackoff(t *testing.T) {
	o := &Options{ConnectTimeout: 10 * time.Second, FailoverBackoff: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	b := newOrphanBook(o)
	tr := &transport{f: &transportFactory{opts: o, orphans: b}, server: "cas", url: "http://cas:5985/wsman"}
	tr.ctx, tr.cancel = context.WithCancel(context.Background())
	lost := &TransportError{Action: "Create", Err: errAborted}
	hold := func() time.Duration {
		b.mu.Lock()
		defer b.mu.Unlock()
		return time.Until(b.servers["cas"].holdUntil)
	}
	if err := b.gate(tr); err != nil {
		t.Fatalf("gate() before any loss = %v", err)
	}
	for n := 1; n <= 8; n++ {
		b.settle(tr, "Create", lostShell{marker: "easconnector-x", sent: time.Now()}, lost)
		d := min(o.FailoverBackoff<<min(n-1, 6), o.FailoverBackoff*maxFailoverBackoffFactor)
		if h := hold(); h < d/2-50*time.Millisecond || h > d*3/2 {
			t.Errorf("after %d unanswered Creates: held for %v, want within [%v, %v]", n, h, d/2, d*3/2)
		}
	}
	if b.pending() != 8 {
		t.Errorf("pending() = %d, want 8", b.pending())
	}
	// Longer than ConnectTimeout could bear: refused at once.
	o.ConnectTimeout = 100 * time.Millisecond
	start := time.Now()
	if err := b.gate(tr); !errors.Is(err, errCreateHeld) || time.Since(start) > 50*time.Millisecond {
		t.Errorf("gate() = %v after %v, want errCreateHeld at once", err, time.Since(start))
	}
	// Within ConnectTimeout: waited out, unless the caller gives up first.
	o.ConnectTimeout = time.Hour
	tr.cancel()
	if err := b.gate(tr); !errors.Is(err, errAborted) {
		t.Errorf("gate() with the caller gone = %v, want errAborted", err)
	}
	// An answered Create (even a fault) resets the backoff.
	b.settle(tr, "Create", lostShell{}, &FaultError{Code: 2150859173})
	if h := hold(); h > 0 {
		t.Errorf("held for %v after an answered Create", h)
	}
	if err := b.gate(tr); err != nil {
		t.Errorf("gate() after an answer = %v", err)
	}
	if got := b.met.held.Get(); got != 2 {
		t.Errorf("creations held = %d, want 2", got)
	}
}

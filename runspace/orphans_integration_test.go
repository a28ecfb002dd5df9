package runspace_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
	"github.com/easconnector/easconnector/runspace"
)

// A Client Access server slower than the client's ConnectTimeout still
// creates the shells the client gave up on. Episode after episode, the
// shells on the listener must come back to what the pool holds, and the
// account's few shell slots must never run out. Without the orphan book
// every episode leaves its unanswered creations behind until WinRM's idle
// timeout (2 h), and by the second episode Create answers MaxShellsPerUser.
func TestNoOrphanedShellsOnSlowServer(t *testing.T) { forModes(t, testNoOrphanedShells) }

func testNoOrphanedShells(t *testing.T, mode string) {
	const (
		size = 4
		// The account's slots on the server, both kinds: room for the
		// pool, and for one episode's worth of shells in creation or
		// deletion (each slowed past the timeouts), not for leaks that
		// pile up (size per episode).
		quota    = 3 * size
		episodes = 5
		slow     = 1500 * time.Millisecond // past ConnectTimeout
	)
	sim := startSim(t, exsim.Options{MaxShellsPerUser: quota, PowerShellMaxConcurrency: quota})
	p := startPool(t, simOptions(t, sim, func(o *runspace.Options) {
		o.Mode = mode
		o.Size = size
		o.ConnectTimeout = 400 * time.Millisecond
		o.RequestTimeout = 5 * time.Second
		o.FailoverBackoff = 50 * time.Millisecond
		// Sessions are replaced after a second, so that every episode
		// needs new shells while the server is slow.
		o.MaxSessionAge = time.Second
	}))
	ws := sim.WSMan(0)
	ctx := testCtx(t, 3*time.Minute)
	burst := func(d time.Duration) (failed int) {
		var (
			wg sync.WaitGroup
			mu sync.Mutex
		)
		for range size {
			wg.Go(func() {
				cctx, cancel := context.WithTimeout(ctx, d)
				defer cancel()
				if _, err := p.Do(cctx, getSettings, nil); err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return failed
	}
	shells := func() int { return len(ws.Shells()) }
	held := func() int { return p.Endpoints()[0].Sessions }

	for ep := range episodes {
		// The server turns slow once the pool's sessions are due for
		// replacement: every call needs a shell of its own and none
		// answers in time.
		time.Sleep(1100 * time.Millisecond)
		if err := sim.SetHTTPFaults(0, exsim.HTTPFaults{Slowdown: slow}); err != nil {
			t.Fatal(err)
		}
		created := ws.Stats().ShellsCreated
		if failed := burst(slow); failed == 0 {
			t.Fatalf("episode %d: every call succeeded against a server slower than the timeouts", ep)
		}
		if ws.Stats().ShellsCreated == created {
			t.Fatalf("episode %d: no shell was created while the server was slow", ep)
		}
		t.Logf("episode %d: %d shells created while slow, %v unanswered shell requests remembered, %d shells on the listener, %d held by the pool",
			ep, ws.Stats().ShellsCreated-created, metricValue(t, p, "easconnector_runspace_orphan_shells_pending"), shells(), held())

		// It answers again: calls succeed, and the orphans are deleted.
		if err := sim.SetHTTPFaults(0, exsim.HTTPFaults{}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			failed := burst(10 * time.Second)
			n, h := shells(), held()
			left := metricValue(t, p, "easconnector_runspace_orphan_shells_pending")
			if failed == 0 && n == h && left == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("episode %d: %d shells on the listener, the pool holds %d, %v orphans pending, %d calls failed",
					ep, n, h, left, failed)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if f := ws.Stats().Faults[wsman.CodeMaxShells]; f != 0 {
			t.Fatalf("episode %d: the account's shell quota was exhausted %d times", ep, f)
		}
	}
	if d := metricValue(t, p, "easconnector_runspace_orphan_shells_deleted_total"); d == 0 {
		t.Errorf("orphan_shells_deleted_total = 0 after %d episodes", episodes)
	}
	st := ws.Stats()
	t.Logf("%s: shells created %d, deleted %d, max concurrent %d (quota %d), orphans deleted %v, gone %v, creations held %v",
		mode, st.ShellsCreated, st.ShellsDeleted, st.MaxConcurrentShells, quota,
		metricValue(t, p, "easconnector_runspace_orphan_shells_deleted_total"),
		metricValue(t, p, "easconnector_runspace_orphan_shells_gone_total"),
		metricValue(t, p, "easconnector_runspace_shell_creations_held_total"))
}

// A pool closed right after a slow episode deletes its orphans on the way
// out: after a restart nobody would know them.
func TestPoolCloseDeletesOrphans(t *testing.T) { forModes(t, testPoolCloseDeletesOrphans) }

func testPoolCloseDeletesOrphans(t *testing.T, mode string) {
	sim := startSim(t, exsim.Options{})
	p, err := runspace.NewPool(simOptions(t, sim, func(o *runspace.Options) {
		o.Mode = mode
		o.Size = 3
		o.ConnectTimeout = 400 * time.Millisecond
		o.FailoverBackoff = 50 * time.Millisecond
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, time.Minute)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ws := sim.WSMan(0)
	if err := sim.SetHTTPFaults(0, exsim.HTTPFaults{Slowdown: 1500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
			defer cancel()
			_, _ = p.Do(cctx, getSettings, nil)
		})
	}
	wg.Wait()
	if metricValue(t, p, "easconnector_runspace_orphan_shells_pending") == 0 {
		t.Fatal("no unanswered creation remembered")
	}
	if err := sim.SetHTTPFaults(0, exsim.HTTPFaults{}); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := p.Close(cctx); err != nil {
		t.Fatalf("Close() error = %v", err)
	}
	eventually(t, "no shell left on the listener", func() bool { return len(ws.Shells()) == 0 })
	if left := metricValue(t, p, "easconnector_runspace_orphan_shells_pending"); left != 0 {
		t.Errorf("%v orphans pending after Close", left)
	}
}

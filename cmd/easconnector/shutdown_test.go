//go:build !windows

package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/pipeline"
)

// buildBinary builds easconnector into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "easconnector")
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestShutdownDuringApply stops `easconnector run` with SIGTERM while its
// first full sync writes to Exchange (lab latencies, so writes take time):
// it must exit 0 within shutdown_timeout, start no write after the signal,
// finish the writes in flight rather than cut them off, and record every
// write Exchange applied in a valid state file; a second run then
// converges.
func TestShutdown(t *testing.T) {
	bin := buildBinary(t)
	t.Run("during apply", func(t *testing.T) { testShutdownDuringApply(t, bin) })
	t.Run("slow write", func(t *testing.T) { testShutdownSlowWrite(t, bin) })
	t.Run("second signal", func(t *testing.T) { testSecondSignal(t, bin) })
}

// proc is an `easconnector run` process.
type proc struct {
	cmd    *exec.Cmd
	out    lockedBuffer
	exited chan struct{} // closed once the process has exited
	err    error         // of Wait, once exited is closed
}

func startProc(t *testing.T, bin string, fl *fleet) *proc {
	t.Helper()
	p := &proc{exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "run", "--config", fl.config)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill() // an error once it has exited
		<-p.exited
	})
	return p
}

// waitWrites waits until exsim has received n Set-CASMailbox calls.
func (p *proc) waitWrites(t *testing.T, fl *fleet, n uint64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for fl.sim.Counters().Cmdlets["Set-CASMailbox"] < n {
		select {
		case <-p.exited:
			t.Fatalf("run exited before its writes: %v\n%s", p.err, &p.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not %d writes within 60s\n%s", n, &p.out)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wait waits for the process to exit and returns its exit code and how
// long after since it exited.
func (p *proc) wait(t *testing.T, since time.Time, limit time.Duration) (int, time.Duration) {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode(), time.Since(since)
	case <-time.After(limit):
		t.Fatalf("run still running %s after the signal\n%s", limit, &p.out)
	}
	return -1, 0
}

func testShutdownDuringApply(t *testing.T, bin string) {
	const shutdownTimeout = 10 * time.Second
	fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 600}, profile: exsim.ProfileLab, shutdown: "10s", listeners: 2})
	p := startProc(t, bin, fl)
	p.waitWrites(t, fl, 40)
	sigAt := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, took := p.wait(t, sigAt, shutdownTimeout+5*time.Second)
	if code != exitOK || took > shutdownTimeout {
		t.Fatalf("run after SIGTERM: exit %d after %s, want 0 within %s\n%s", code, took, shutdownTimeout, &p.out)
	}
	t.Logf("stopped %s after SIGTERM", took.Round(time.Millisecond))
	if !strings.Contains(p.out.String(), `msg=stopping cause="received terminated"`) {
		t.Errorf("the log does not say why it stopped:\n%s", &p.out)
	}

	// A write is one cmdlet, atomic in exsim: none may start after the
	// signal (beyond one already on the wire), and each that started ran
	// to its end.
	st, status, err := pipeline.LoadState(fl.state)
	if err != nil || status.Origin != pipeline.StateLoaded {
		t.Fatalf("state after SIGTERM: %v, %+v", err, status)
	}
	writes := 0
	for _, c := range fl.sim.CallLog(0, 0) {
		if c.Cmd != "Set-CASMailbox" {
			continue
		}
		writes++
		if c.Time.After(sigAt.Add(300 * time.Millisecond)) {
			t.Errorf("Set-CASMailbox %v started %s after SIGTERM", c.Args["Identity"], c.Time.Sub(sigAt))
		}
		if c.Result != "ok" {
			t.Errorf("Set-CASMailbox %v ended %q (%s): a write in flight was cut off", c.Args["Identity"], c.Result, c.Error)
		}
		id, _ := c.Args["Identity"].(string)
		if st.OwnedOf(id).IsZero() {
			t.Errorf("Exchange applied the write to %s, but the state does not record it", id)
		}
	}
	devices := fl.sim.Org().DeviceCount()
	if writes >= devices/2 {
		t.Fatalf("%d writes of ~%d: the sync was not interrupted during apply", writes, devices)
	}
	t.Logf("%d writes before the stop", writes)

	// The next run finishes the job.
	if code, o, errOut := runIn(t, t.Context(), "sync", "--full", "--config", fl.config); code != exitOK {
		t.Fatalf("sync --full after the interrupted run = %d\n%s\n%s", code, o, errOut)
	}
	fl.assertConverged(t)
}

// testShutdownSlowWrite: a write that is in flight at SIGTERM and takes
// seconds is waited for (within shutdown_timeout), not cut off.
func testShutdownSlowWrite(t *testing.T, bin string) {
	fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 40}, shutdown: "10s", runspaces: 1})
	const slow = 2 * time.Second
	if err := fl.sim.SetFaults(exsim.Faults{Slowdown: slow, Cmdlets: []string{"Set-CASMailbox"}}); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, bin, fl)
	p.waitWrites(t, fl, 1)
	sigAt := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, took := p.wait(t, sigAt, 15*time.Second)
	if code != exitOK || took < slow/2 {
		t.Fatalf("run after SIGTERM during a %s write: exit %d after %s; want 0, after the write\n%s", slow, code, took, &p.out)
	}
	calls := fl.sim.CallLog(0, 0)
	var writes []exsim.Call
	for _, c := range calls {
		if c.Cmd == "Set-CASMailbox" {
			writes = append(writes, c)
		}
	}
	if len(writes) != 1 || writes[0].Result != "ok" {
		t.Fatalf("writes = %+v, want exactly the one in flight, finished", writes)
	}
	st, _, err := pipeline.LoadState(fl.state)
	if id, _ := writes[0].Args["Identity"].(string); err != nil || st.OwnedOf(id).IsZero() {
		t.Errorf("state after the stop: %v; the finished write to %s is not recorded", err, id)
	}
}

// testSecondSignal: a second signal exits at once, and the state file,
// written atomically, is still readable.
func testSecondSignal(t *testing.T, bin string) {
	fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 40}, shutdown: "1m", runspaces: 1})
	if err := fl.sim.SetFaults(exsim.Faults{Slowdown: 30 * time.Second, Cmdlets: []string{"Set-CASMailbox"}}); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, bin, fl)
	p.waitWrites(t, fl, 1)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	sigAt := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	code, took := p.wait(t, sigAt, 5*time.Second)
	if code != exitFailed || took > time.Second || !strings.Contains(p.out.String(), "interrupt again: exiting without waiting") {
		t.Fatalf("run after a second signal: exit %d after %s; want %d at once\n%s", code, took, exitFailed, &p.out)
	}
	if _, status, err := pipeline.LoadState(fl.state); err != nil || status.Origin == pipeline.StateRecovered {
		t.Errorf("state after an abrupt exit: %v, %+v", err, status)
	}
}

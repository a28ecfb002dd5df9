package scenario

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/easconnector/easconnector/loadtest/bed"
)

// buildOnce builds the three commands once per test binary.
var buildOnce = sync.OnceValues(func() (map[string]string, error) {
	dir, err := os.MkdirTemp("", "easload-test-bin-")
	if err != nil {
		return nil, err
	}
	root, err := bed.ModuleRoot(testContext)
	if err != nil {
		return nil, err
	}
	return bed.Build(testContext, root, dir)
})

// logWriter sends progress lines to t.Log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestSteadyTiny runs the steady scenario end to end at its tiny size
// (300 devices, 6 s of churn at 2,000 % an hour, quick syncs requested every
// 2 s): the real binaries as processes, the lag measured from exsim's call
// log, and every objective held.
func TestSteadyTiny(t *testing.T) {
	runTiny(t, "steady")
}

func runTiny(t *testing.T, name string) *Report {
	t.Helper()
	bins, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := Get(name, Tiny)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rep, err := Execute(t.Context(), sc, Options{Bins: bins, Dir: dir, Log: logWriter{t}})
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "easconnector.log"))
		t.Fatalf("%s: %v\nconnector log:\n%s", name, err, log)
	}
	var b strings.Builder
	rep.Print(&b)
	t.Log(b.String())
	if !rep.OK() {
		log, _ := os.ReadFile(filepath.Join(dir, "easconnector.log"))
		t.Errorf("%s: an objective broke\nconnector log (tail):\n%s", name, tail(string(log), 4000))
	}
	if rep.Changes == 0 || rep.Lag.N == 0 || rep.PeakRSS == 0 || rep.CPU == 0 || rep.Cmdlets == 0 {
		t.Errorf("%s: report misses measurements: %+v", name, rep)
	}
	return rep
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

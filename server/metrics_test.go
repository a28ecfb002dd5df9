package server

import (
	"bufio"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/easconnector/easconnector/internal/metricdoc"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// TestMetricsGolden checks the /metrics exposition of the server's own set
// and two component sets against testdata/metrics.golden, and that every
// family has TYPE and a HELP line with text from internal/metricdoc.
func TestMetricsGolden(t *testing.T) {
	a := metrics.NewSet()
	a.NewCounter(`easconnector_sync_total{kind="full",result="ok"}`).Add(3)
	a.NewCounter(`easconnector_sync_total{kind="quick",result="failed"}`).Add(1)
	a.NewGauge(`easconnector_sync_devices{decision="Block"}`, func() float64 { return 500 })
	h := a.NewPrometheusHistogramExt(`easconnector_runspace_request_duration_seconds{cmdlet="Set-CASMailbox"}`, []float64{0.1, 1, 10})
	for _, v := range []float64{0.05, 0.2, 0.3, 4} {
		h.Update(v)
	}
	b := metrics.NewSet()
	b.NewCounter(`easconnector_notify_sent_total{kind="notice"}`).Add(7)

	s, _ := newTestServer(t, func(o *Options) { o.Metrics = []*metrics.Set{a, b} })
	w := do(t, s, "GET", "/metrics", "", nil)
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics = %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	got := w.Body.String()

	golden := filepath.Join("testdata", "metrics.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestMetricsGolden -update)", err)
	}
	if got != string(want) {
		t.Errorf("/metrics differs from %s (run with -update if intended):\n%s", golden, got)
	}

	help, typ := map[string]bool{}, map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(got))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# HELP "):
			f := strings.Fields(line)
			if len(f) < 4 || strings.Contains(line, metricdoc.Missing) {
				t.Errorf("%q: want a HELP text from internal/metricdoc", line)
			}
			help[f[2]] = true
		case strings.HasPrefix(line, "# TYPE "):
			typ[strings.Fields(line)[2]] = true
		case line != "":
			name := line[:strings.IndexAny(line, "{ ")]
			family := name
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if f, ok := strings.CutSuffix(name, suf); ok && typ[f] {
					family = f
				}
			}
			if !help[family] || !typ[family] {
				t.Errorf("sample %q: family %s lacks HELP or TYPE before it", line, family)
			}
		}
	}
	if !typ["easconnector_runspace_request_duration_seconds"] || !strings.Contains(got, "# TYPE easconnector_runspace_request_duration_seconds histogram") {
		t.Error("histogram not typed as histogram")
	}
}

func TestProcessMetrics(t *testing.T) {
	s, _ := newTestServer(t, func(o *Options) { o.ProcessMetrics = true })
	got := do(t, s, "GET", "/metrics", "", nil).Body.String()
	for _, want := range []string{"# TYPE go_goroutines gauge", "process_resident_memory_bytes"} {
		if !strings.Contains(got, want) {
			t.Errorf("/metrics with ProcessMetrics lacks %q", want)
		}
	}
	// Every family VictoriaMetrics/metrics writes for the process is in
	// the catalog: a new version that adds one fails here.
	for _, line := range strings.Split(got, "\n") {
		if strings.HasPrefix(line, "# HELP ") && strings.HasSuffix(line, metricdoc.Missing) {
			t.Errorf("%q: not in internal/metricdoc's catalog", line)
		}
	}
}

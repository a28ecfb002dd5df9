package metricdoc

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/metrics.md from the catalog")

// TestDocsMatchCatalog keeps docs/metrics.md generated from Catalog.
func TestDocsMatchCatalog(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "metrics.md")
	got := Markdown()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the catalog: run go generate ./internal/metricdoc", path)
	}
}

var (
	nameRe = regexp.MustCompile(`^(easconnector_(sync|schedule|runspace|mdm|notify|cache|server)_|go_|process_)[a-z0-9_]+$`)
	// unitRe: a HELP text names its unit: a count of something, seconds,
	// bytes, a Unix time, or a 0/1 state.
	unitRe = regexp.MustCompile(`\(count|\bcount\)|in seconds|in bytes|Unix time|\b1 when\b|\b1 while\b|Always 1|\(0 to 1\)|\(quantiles\)`)
)

// TestCatalog checks every entry: a valid name, a type, one-line HELP text
// that names its unit, and the naming rules of STYLE.md.
func TestCatalog(t *testing.T) {
	n := 0
	for _, s := range Catalog {
		for _, f := range s.Families {
			n++
			if !nameRe.MatchString(f.Name) {
				t.Errorf("%s: not a family name of ours", f.Name)
			}
			if typeNames[f.Type] == "" {
				t.Errorf("%s: type %q, want c, g, h or s", f.Name, f.Type)
			}
			if f.Help == "" || strings.ContainsAny(f.Help, "\n`|") {
				t.Errorf("%s: HELP %q: want one line of plain text", f.Name, f.Help)
			}
			if !unitRe.MatchString(f.Help) {
				t.Errorf("%s: HELP %q does not say its unit (count of …, in seconds, in bytes, Unix time, 1 when …)", f.Name, f.Help)
			}
			if strings.HasPrefix(f.Name, "easconnector_") {
				if f.Type == "c" && !strings.HasSuffix(f.Name, "_total") {
					t.Errorf("%s: a counter's name ends in _total", f.Name)
				}
				if f.Type == "h" && !strings.HasSuffix(f.Name, "_seconds") {
					t.Errorf("%s: our histograms measure seconds", f.Name)
				}
			}
		}
	}
	if n < 100 {
		t.Errorf("catalog has %d families; the daemon exposes more than 100", n)
	}
}

func TestFill(t *testing.T) {
	in := "# HELP easconnector_sync_total\n# TYPE easconnector_sync_total counter\neasconnector_sync_total{kind=\"full\",result=\"ok\"} 3\n" +
		"# HELP easconnector_made_up_total\n# TYPE easconnector_made_up_total counter\neasconnector_made_up_total 1\n" +
		"# HELP go_goroutines Already described.\n"
	var out bytes.Buffer
	missing, err := Fill(&out, []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	help, _ := Help("easconnector_sync_total")
	want := "# HELP easconnector_sync_total " + help + "\n# TYPE easconnector_sync_total counter\neasconnector_sync_total{kind=\"full\",result=\"ok\"} 3\n" +
		"# HELP easconnector_made_up_total " + Missing + "\n# TYPE easconnector_made_up_total counter\neasconnector_made_up_total 1\n" +
		"# HELP go_goroutines Already described.\n"
	if out.String() != want {
		t.Errorf("Fill() =\n%s\nwant\n%s", out.String(), want)
	}
	if len(missing) != 1 || missing[0] != "easconnector_made_up_total" {
		t.Errorf("Fill() missing = %v, want [easconnector_made_up_total]", missing)
	}
}

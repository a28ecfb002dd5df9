package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	glossaryStart = "<!-- glossary: generated from server/glossary.go by `go test ./server -run TestReadmeGlossary -update` -->\n"
	glossaryEnd   = "<!-- end of glossary -->"
)

// TestReadmeGlossary keeps the README's glossary generated from Glossary.
func TestReadmeGlossary(t *testing.T) {
	path := filepath.Join("..", "README.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	i, j := strings.Index(readme, glossaryStart), strings.Index(readme, glossaryEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the glossary markers", path)
	}
	want := readme[:i+len(glossaryStart)] + string(GlossaryMarkdown()) + "\n" + readme[j:]
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		readme = want
	}
	if readme != want {
		t.Errorf("%s's glossary differs from server/glossary.go (run go test ./server -run TestReadmeGlossary -update)", path)
	}
}

// TestGlossaryComplete: every decision and reason the API accepts, and
// every compliance value and Exchange state, is explained once.
func TestGlossaryComplete(t *testing.T) {
	seen := map[string]string{}
	for _, g := range Glossary {
		for _, term := range g.Terms {
			if prev, dup := seen[term.Name]; dup {
				t.Errorf("%s explained in %s and %s", term.Name, prev, g.ID)
			}
			seen[term.Name] = g.ID
			if term.Text == "" {
				t.Errorf("%s: no text", term.Name)
			}
		}
	}
	var want []string
	want = append(want, DefaultDecisions...)
	want = append(want, "NoChange")
	want = append(want, DefaultReasons...)
	want = append(want, "compliant", "inGracePeriod", "noncompliant", "conflict", "error", "unknown", "configManager")
	want = append(want, exchangeStates...)
	for _, w := range want {
		if seen[w] == "" {
			t.Errorf("glossary lacks %s", w)
		}
	}
}

func TestGlossaryPage(t *testing.T) {
	s, _ := newTestServer(t, nil)
	w := do(t, s, "GET", "/glossary", "", nil) // no personal data: no token
	body := w.Body.String()
	if w.Code != 200 || w.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /glossary = %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	for _, want := range []string{`id="PendingEvaluation"`, `id="AdminOverride"`, `id="inGracePeriod"`, `id="Quarantined"`,
		"organization&#39;s DefaultAccessLevel does (here: Quarantine)"} {
		if !strings.Contains(body, want) {
			t.Errorf("glossary page lacks %q", want)
		}
	}
	if w := do(t, s, "GET", "/glossary?x=1", "", nil); w.Code != 400 {
		t.Errorf("GET /glossary?x=1 = %d, want 400", w.Code)
	}
}

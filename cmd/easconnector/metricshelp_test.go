package main

import (
	"strings"
	"testing"

	"github.com/easconnector/easconnector/internal/metricdoc"
)

// checkMetricsHelp fails on a family of a real daemon's /metrics without a
// HELP text from internal/metricdoc: a series added without its
// description (which docs/metrics.md is generated from) fails here.
func checkMetricsHelp(t *testing.T, body string) {
	t.Helper()
	families := 0
	for _, line := range strings.Split(body, "\n") {
		name, ok := strings.CutPrefix(line, "# HELP ")
		if !ok {
			continue
		}
		families++
		name, _, _ = strings.Cut(name, " ")
		if _, known := metricdoc.Help(name); !known {
			t.Errorf("/metrics family %s has no description: add it to internal/metricdoc's Catalog and run go generate ./internal/metricdoc", name)
		}
	}
	if families < 30 {
		t.Errorf("/metrics has %d families with HELP lines, want the daemon's (more than 30)", families)
	}
}

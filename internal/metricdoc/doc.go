// Package metricdoc is the one description of every series easconnector
// exposes at /metrics: its type, labels, a HELP text that says what it
// counts and in which unit, the longer meaning and what to alert on.
//
// VictoriaMetrics/metrics (v1.45) writes "# HELP name" lines with no text
// (metrics.ExposeMetadata) and has no way to register one, so the admin
// server's exposition fills them in from Catalog (Fill), and
// docs/metrics.md is generated from the same table (Markdown; the golden
// test TestDocsMatchCatalog fails when they differ, `go generate
// ./internal/metricdoc` rewrites it). A series whose family is not in the
// catalog gets the HELP text Missing, and the daemon's test fails on it.
//
// Components (pipeline, runspace, mdm, …) keep registering their series
// where they are; only the descriptions live here, so that a new series
// needs one entry in Catalog next to its code change.
package metricdoc

//go:generate go test -run TestDocsMatchCatalog -update

// Package server manages the daemon's admin HTTP interface: Prometheus
// metrics at /metrics, liveness at /healthz, readiness at /readyz, a JSON API
// under /api/v1 (status, syncs, devices, held plans) and a status page at /.
//
// The server reads everything through the Backend interface, which the
// daemon implements over the pipeline, so this package depends on no
// pipeline internals. Read endpoints are open; endpoints that change
// something (POST /api/v1/syncs, POST /api/v1/plans/{id}/approve) need
// "Authorization: Bearer <token>", compared in constant time, and are
// disabled (403) when no token is configured. The default listen address
// is loopback; bodies are limited to MaxBodyBytes; the http.Server has
// header, read, write and idle timeouts; every error is JSON
// {"error": "..."} naming what was wrong.
//
// The status page is rendered on the server with html/template, inline CSS
// and an inline SVG chart, no external assets, and a few lines of inline
// JavaScript (allowed by a per-request CSP nonce) for the sync and approve
// buttons, which POST with a token typed into the page.
//
// Lifecycle: New, then ListenAndServe(ctx) (or Serve with a listener); when
// ctx ends the server stops accepting, lets requests finish within
// ShutdownTimeout and returns. Handler serves the same routes for tests.
package server

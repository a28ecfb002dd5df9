// Package server manages the daemon's admin HTTP interface: Prometheus
// metrics at /metrics, liveness at /healthz, readiness at /readyz, a JSON API
// under /api/v1 (status, syncs, devices, held plans) and a status page at /.
//
// The server reads everything through the Backend interface, which the
// daemon implements over the pipeline, so this package depends on no
// pipeline internals.
//
// Access: every endpoint under /api/v1 needs a bearer token
// ("Authorization: Bearer <token>"): the admin token (Options.Token) for
// everything, the read-only token (Options.ReadToken) for GETs only. Each
// request's token is hashed and compared in constant time with the digest
// of every configured token. The status page and the GETs also take the
// token as the password of HTTP Basic credentials, because a browser cannot
// send a Bearer header when it navigates; the mutating endpoints never do,
// since a browser replays cached Basic credentials for cross-site forms.
// Without a token the status page answers 401 with a Basic challenge, or,
// with Options.LoopbackPublicCounts on a loopback listener, an aggregate
// view without personal data. /healthz, /readyz and /metrics are open; the
// metrics carry no mailbox, user or DeviceId.
//
// Every other route checks the Host header against Listen's host,
// Options.AllowedHosts and, on loopback, localhost (IP literals pass), and
// answers 421 otherwise: DNS rebinding gives a page its own name in Host,
// so it cannot read a loopback API through a browser. Listen is loopback
// when its host is a literal loopback address or a name every address of
// which is loopback; the server then binds to that address.
//
// The default listen address is loopback; bodies are limited to
// MaxBodyBytes; the http.Server has header, read, write and idle timeouts;
// every error is JSON {"error": "..."} naming what was wrong.
//
// The status page is rendered on the server with html/template, inline CSS
// and an inline SVG chart, no external assets, and a few lines of inline
// JavaScript (allowed by a per-request CSP nonce) for the sync and approve
// buttons, which POST with the admin token typed into the page.
//
// Lifecycle: New, then ListenAndServe(ctx) (or Serve with a listener); when
// ctx ends the server stops accepting, lets requests finish within
// ShutdownTimeout and returns. Handler serves the same routes for tests.
package server

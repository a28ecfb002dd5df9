// Package notify mails users whose ActiveSync device was blocked or is left
// in quarantine, and mails administrators a digest when a sync needs them
// (a plan held by the guard, repeated failures).
//
// A Notifier owns a bounded queue and one worker. Enqueue never blocks the
// sync that calls it: when the queue is full the notice is dropped and
// counted, and because it was not recorded as sent the next sync derives it
// again. The worker renders the templates (text and HTML, html/template
// escaping device strings), builds a multipart/alternative MIME message and
// sends it over SMTP with implicit TLS, STARTTLS or plain TCP, AUTH PLAIN or
// LOGIN only over TLS, a deadline per message, and retries with backoff for
// transient (4xx, network) errors. A message is recorded in the SentStore
// after the server accepted it, keyed by mailbox, device id and state, so
// each user hears about a device and state once, across restarts.
//
// Device strings (DeviceId, DeviceType, DeviceModel) are chosen by the phone
// and hostile: they are stripped of control and formatting characters,
// length-capped, escaped in HTML, and can never reach a header unencoded;
// addresses and subjects with CR or LF are rejected.
//
// Lifecycle: New, then Run(ctx) in its own goroutine; Enqueue, Digest and
// Resolved are safe for concurrent use at any time. When ctx ends, Run
// interrupts the message being sent, counts what is still queued as
// dropped, flushes the store and returns.
package notify

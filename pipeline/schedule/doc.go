// Package schedule decides when syncs run: a quick sync every
// QuickInterval (with bounded, seeded jitter so that restarts and several
// connectors do not line up), a full sync every day at FullAt local time
// (computed with time.Date in the configured location, so it stays at the
// same wall-clock time across DST changes and runs once on the day the clock
// falls back), a catch-up full sync at start when the last successful full
// sync is older than 24 hours, and manual triggers.
//
// Exactly one sync runs at a time. A request that arrives while a sync runs
// is coalesced into the next one; a full request upgrades a pending quick
// one, since a full sync does everything a quick sync does. A failed sync is
// retried with exponential backoff and jitter (RetryMin doubling up to
// RetryMax); no scheduled sync starts before the backoff has passed, so a
// broken Exchange or MDM is never hammered. Manual triggers are not held
// back by the backoff: an administrator who asks for a sync gets one.
//
// Use: New with Options and the sync callback, then Run(ctx) in its own
// goroutine; Trigger, Next and Status are safe for concurrent use from any
// goroutine, before, during and after Run. When ctx ends, Run cancels the
// running sync's context (its cause is ErrStopping), waits up to
// ShutdownTimeout for the callback to return and then returns. The clock is
// an interface so that tests drive time by hand.
package schedule

// Package cache manages the in-memory caches that let a quick sync skip
// work: MailboxCache (a mailbox's ActiveSyncAllowedDeviceIDs and
// ActiveSyncBlockedDeviceIDs as last read) and FingerprintCache (a hash of
// the policy-relevant fields of each MDM record, to find the records that
// changed since the last sync). Both are typed wrappers over
// github.com/dgraph-io/ristretto/v2.
//
// Nothing authoritative lives here. Ristretto may refuse or evict any entry
// at any time (Set is asynchronous and admission is probabilistic), and the
// process forgets everything on restart; a miss only costs a read from
// Exchange or one more decision. A cache built with Options.Disabled drops
// every entry, and a sync run with it must give the same result as with a
// working cache, only slower. The connector's memory of what it wrote is
// pipeline.State, never this package.
//
// A cached mailbox snapshot can be stale: an administrator may have edited
// the lists since. Use it to find mailboxes that need no write (a plan
// against the snapshot is empty); read the mailbox again before writing, so
// that an administrator's new entry is seen and never contradicted.
//
// # Cost model
//
// One model for both caches: an entry's cost is its approximate size in
// bytes (key, values and a fixed overhead for headers and the map slot),
// Options.MaxCostBytes is the capacity in bytes, IgnoreInternalCost is set
// (the overhead is already in the estimate) and NumCounters is ten times
// Options.ExpectedItems, as ristretto recommends.
//
// # Metrics
//
//	easconnector_cache_hits_total{cache}         Get found a usable entry
//	easconnector_cache_misses_total{cache}       Get found none (or a too old one)
//	easconnector_cache_evictions_total{cache}    entries evicted for room
//	easconnector_cache_rejections_total{cache}   Sets refused (admission, full buffer, Disabled)
//
// cache is "mailbox" or "fingerprint". All methods are safe for concurrent
// use, and all are safe on a nil cache, which behaves like a disabled one
// without metrics. Close stops ristretto's goroutine.
package cache

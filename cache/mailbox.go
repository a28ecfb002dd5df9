package cache

import (
	"slices"
	"time"
)

// MailboxSnapshot is a mailbox's device lists as last read from Exchange.
type MailboxSnapshot struct {
	Allowed   []string  // ActiveSyncAllowedDeviceIDs
	Blocked   []string  // ActiveSyncBlockedDeviceIDs
	FetchedAt time.Time // when Get-CASMailbox returned them
}

// cost is the snapshot's approximate size in bytes under the package's cost
// model: key, ids with their string headers, slices and the timestamp, plus
// a fixed overhead for the map slot and ristretto's item.
func (s *MailboxSnapshot) cost(k string) int64 {
	n := int64(96 + len(k))
	for _, l := range [][]string{s.Allowed, s.Blocked} {
		for _, id := range l {
			n += int64(16 + len(id))
		}
	}
	return n
}

func (s MailboxSnapshot) clone() MailboxSnapshot {
	return MailboxSnapshot{Allowed: slices.Clone(s.Allowed), Blocked: slices.Clone(s.Blocked), FetchedAt: s.FetchedAt}
}

// MailboxCache maps a mailbox identity (case-insensitive; prefer the Guid)
// to a snapshot of its lists. A nil *MailboxCache is a disabled cache.
type MailboxCache struct {
	s      *store[MailboxSnapshot]
	maxAge time.Duration
}

// NewMailboxCache builds a mailbox cache. Entries older than maxAge (by
// FetchedAt) are misses; maxAge 0 keeps them until evicted.
func NewMailboxCache(o Options, maxAge time.Duration) (*MailboxCache, error) {
	s, err := newStore[MailboxSnapshot]("mailbox", o, DefaultMailboxMaxCost)
	if err != nil {
		return nil, err
	}
	return &MailboxCache{s: s, maxAge: maxAge}, nil
}

// Get returns the snapshot of identity if one is cached and, with a maxAge,
// fetched no longer than maxAge before now. The slices are the caller's.
func (c *MailboxCache) Get(identity string, now time.Time) (MailboxSnapshot, bool) {
	if c == nil {
		return MailboxSnapshot{}, false
	}
	k := key(identity)
	snap, ok := c.s.lookup(k)
	if ok && c.maxAge > 0 && now.Sub(snap.FetchedAt) > c.maxAge {
		c.s.del(k)
		ok = false
	}
	c.s.count(ok)
	if !ok {
		return MailboxSnapshot{}, false
	}
	return snap.clone(), true
}

// Set caches a copy of snap and reports whether it was accepted for
// admission (ristretto may still drop it; call Wait before reading back in
// tests).
func (c *MailboxCache) Set(identity string, snap MailboxSnapshot) bool {
	if c == nil {
		return false
	}
	k := key(identity)
	return c.s.set(k, snap.clone(), snap.cost(k))
}

// Del forgets identity, e.g. after a write changed its lists.
func (c *MailboxCache) Del(identity string) {
	if c != nil {
		c.s.del(key(identity))
	}
}

// Wait blocks until buffered Sets are applied (for tests).
func (c *MailboxCache) Wait() {
	if c != nil {
		c.s.wait()
	}
}

// Close stops the cache's goroutine; later calls miss. Closing twice is a
// no-op.
func (c *MailboxCache) Close() {
	if c != nil {
		c.s.close()
	}
}

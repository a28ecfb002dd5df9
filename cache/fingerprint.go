package cache

import (
	"encoding/binary"
	"hash/fnv"
	"strings"

	"github.com/easconnector/easconnector/mdm"
)

// Fingerprint hashes the fields of an MDM record that the policy reads:
// the EAS device id (ASCII case-folded), the owner's UPN and e-mail
// (lower-cased), the compliance state and the enrolment time. A quick sync
// re-decides a device when its record's fingerprint changed.
//
// LastSyncAt is left out on purpose: it moves at every check-in, so it
// would make every record look changed. What it decides (staleness) and
// the grace period change with the clock, not with the record; fold them
// in with WithTimeState. Fields the policy ignores (model, OS version,
// platform) are left out too. The hash is FNV-1a 64 over length-prefixed
// fields: deterministic across processes and versions of Go.
func Fingerprint(r mdm.Record) uint64 {
	h := fnv.New64a()
	var n [8]byte
	field := func(s string) {
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field(foldASCII(r.EASDeviceID))
	field(strings.ToLower(r.UserPrincipalName))
	field(strings.ToLower(r.Email))
	field(string(r.Compliance))
	var enrolled int64
	if !r.EnrolledAt.IsZero() {
		enrolled = r.EnrolledAt.UnixNano()
	}
	binary.LittleEndian.PutUint64(n[:], uint64(enrolled))
	h.Write(n[:])
	return h.Sum64()
}

// WithTimeState folds the clock-driven facts about a record into its
// fingerprint: whether the record is stale and whether it is within the
// policy's grace period. Store WithTimeState(Fingerprint(r), stale, grace)
// so that a record crossing either line counts as changed.
func WithTimeState(fp uint64, stale, withinGrace bool) uint64 {
	var bits uint64
	if stale {
		bits |= 1
	}
	if withinGrace {
		bits |= 2
	}
	// A multiply-xorshift step keeps the four variants far apart.
	x := fp ^ (bits+1)*0x9e3779b97f4a7c15
	x ^= x >> 31
	x *= 0xbf58476d1ce4e5b9
	return x ^ x>>29
}

func foldASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// fingerprintCost is an entry's approximate size under the cost model:
// key, the uint64 and a fixed overhead for the map slot and the item.
func fingerprintCost(k string) int64 { return int64(64 + len(k)) }

// FingerprintCache maps an MDM record key (the MDM device id, or the
// lower-cased EAS id) to the fingerprint seen at the last sync. A nil
// *FingerprintCache is a disabled cache.
type FingerprintCache struct {
	s *store[uint64]
}

// NewFingerprintCache builds a fingerprint cache.
func NewFingerprintCache(o Options) (*FingerprintCache, error) {
	s, err := newStore[uint64]("fingerprint", o, DefaultFingerprintMaxCost)
	if err != nil {
		return nil, err
	}
	return &FingerprintCache{s: s}, nil
}

// Get returns the cached fingerprint of k.
func (c *FingerprintCache) Get(k string) (uint64, bool) {
	if c == nil {
		return 0, false
	}
	fp, ok := c.s.lookup(key(k))
	c.s.count(ok)
	return fp, ok
}

// Set caches fp for k and reports whether it was accepted for admission.
func (c *FingerprintCache) Set(k string, fp uint64) bool {
	if c == nil {
		return false
	}
	k = key(k)
	return c.s.set(k, fp, fingerprintCost(k))
}

// Changed reports whether k's fingerprint differs from the cached one (or
// none is cached: a miss always counts as changed) and caches fp.
func (c *FingerprintCache) Changed(k string, fp uint64) bool {
	if old, ok := c.Get(k); ok && old == fp {
		return false
	}
	c.Set(k, fp)
	return true
}

// Del forgets k.
func (c *FingerprintCache) Del(k string) {
	if c != nil {
		c.s.del(key(k))
	}
}

// Wait blocks until buffered Sets are applied (for tests).
func (c *FingerprintCache) Wait() {
	if c != nil {
		c.s.wait()
	}
}

// Close stops the cache's goroutine; later calls miss. Closing twice is a
// no-op.
func (c *FingerprintCache) Close() {
	if c != nil {
		c.s.close()
	}
}

package cache

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"
	"github.com/dgraph-io/ristretto/v2"
)

// Defaults.
const (
	// DefaultExpectedItems fits the largest fleet the connector is sized
	// for (200,000 devices).
	DefaultExpectedItems = 200_000
	// DefaultMailboxMaxCost holds ~200,000 mailboxes of two devices each.
	DefaultMailboxMaxCost = 64 << 20
	// DefaultFingerprintMaxCost holds ~200,000 fingerprints.
	DefaultFingerprintMaxCost = 32 << 20
)

// Options configure one cache. The zero value takes the defaults.
type Options struct {
	// MaxCostBytes is the capacity in approximate bytes (see the cost
	// model); 0 takes the cache's default.
	MaxCostBytes int64
	// ExpectedItems is how many entries the cache should hold when full;
	// it sizes ristretto's admission counters (NumCounters = 10×). 0 takes
	// DefaultExpectedItems.
	ExpectedItems int64
	// Disabled makes a cache that drops every entry (every Get misses).
	Disabled bool
	// Metrics is the set the cache's counters are registered on; nil keeps
	// them on a private set.
	Metrics *metrics.Set
}

func (o Options) validate() error {
	switch {
	case o.MaxCostBytes < 0:
		return fmt.Errorf("max_cost_bytes: must not be negative, got %d", o.MaxCostBytes)
	case o.ExpectedItems < 0:
		return fmt.Errorf("expected_items: must not be negative, got %d", o.ExpectedItems)
	}
	return nil
}

// store is the typed ristretto cache with its metrics, shared by both
// caches. A nil c means disabled. mu makes Close safe against concurrent
// use: ristretto's own Close races with a concurrent Set.
type store[V any] struct {
	c                                   *ristretto.Cache[string, V]
	hits, misses, evictions, rejections *metrics.Counter
	mu                                  sync.RWMutex
	closed                              bool
	closing                             atomic.Bool
}

func newStore[V any](name string, o Options, defaultMax int64) (*store[V], error) {
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("cache %s: %w", name, err)
	}
	set := o.Metrics
	if set == nil {
		set = metrics.NewSet()
	}
	counter := func(what string) *metrics.Counter {
		return set.GetOrCreateCounter(fmt.Sprintf(`easconnector_cache_%s_total{cache=%q}`, what, name))
	}
	s := &store[V]{hits: counter("hits"), misses: counter("misses"), evictions: counter("evictions"), rejections: counter("rejections")}
	if o.Disabled {
		return s, nil
	}
	maxCost := o.MaxCostBytes
	if maxCost == 0 {
		maxCost = defaultMax
	}
	items := o.ExpectedItems
	if items == 0 {
		items = DefaultExpectedItems
	}
	c, err := ristretto.NewCache(&ristretto.Config[string, V]{
		NumCounters:        10 * items,
		MaxCost:            maxCost,
		BufferItems:        64,
		IgnoreInternalCost: true,
		OnEvict: func(*ristretto.Item[V]) {
			if !s.closing.Load() {
				s.evictions.Inc()
			}
		},
		OnReject: func(*ristretto.Item[V]) { s.rejections.Inc() },
	})
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", name, err)
	}
	s.c = c
	return s, nil
}

// lookup finds key without counting a hit or a miss.
func (s *store[V]) lookup(key string) (V, bool) {
	var zero V
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.c == nil || s.closed {
		return zero, false
	}
	return s.c.Get(key)
}

// count records the outcome of one Get.
func (s *store[V]) count(hit bool) {
	if hit {
		s.hits.Inc()
	} else {
		s.misses.Inc()
	}
}

func (s *store[V]) set(key string, v V, cost int64) bool {
	s.mu.RLock()
	ok := s.c != nil && !s.closed && s.c.Set(key, v, cost)
	s.mu.RUnlock()
	if !ok {
		s.rejections.Inc()
	}
	return ok
}

func (s *store[V]) del(key string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.c != nil && !s.closed {
		s.c.Del(key)
	}
}

func (s *store[V]) wait() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.c != nil && !s.closed {
		s.c.Wait()
	}
}

func (s *store[V]) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil && !s.closed {
		s.closed = true
		s.closing.Store(true) // Close clears through OnEvict: not evictions
		s.c.Close()
	}
}

// key folds a key to the case-insensitive form both caches use: mailbox
// identities and EAS ids are case-insensitive in Exchange.
func key(k string) string { return strings.ToLower(k) }

package mdm

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// parseRetryAfter reads a Retry-After header: delta-seconds or an
// HTTP-date (RFC 9110 §10.2.3). A date in the past means no wait; ok is
// false when the header is absent or unreadable.
func parseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(min(secs, int64(24*time.Hour/time.Second))) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// backoff returns the wait before retry number attempt (0 for the first)
// with full jitter: uniform in (0, min(ceiling, base·2^attempt)].
func backoff(attempt int, base, ceiling time.Duration) time.Duration {
	limit := ceiling
	if attempt < 32 && base<<attempt > 0 && base<<attempt < ceiling {
		limit = base << attempt
	}
	if limit <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(limit))) + 1
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

package runspace

import (
	"math/rand/v2"
	"time"
)

// Adaptive concurrency (AIMD). Exchange and WinRM say "slow down" with
// quota errors; the pool answers by halving its active limit (at least 1)
// and pausing new work for a jittered backoff, and grows the limit back by
// one after every max(limit, increaseMin) successes, up to Size. Successes
// count only after a quiet period of quietFactor pauses: probing a session
// quota costs a failed session start each time, so it is not done at once.

const (
	increaseMin     = 4
	throttleBackoff = 500 * time.Millisecond // first pause after a quota error
	throttleMax     = 30 * time.Second       // longest pause (doubling per consecutive event)
	quietFactor     = 2
)

// limiter is not safe for concurrent use; the pool guards it.
type limiter struct {
	size      int
	limit     int
	successes int
	// pause grows while quota errors follow each other without a success.
	pause time.Duration
	// holdUntil: no new request starts before this time.
	holdUntil time.Time
	// decreasedAt: quota errors of requests started before this time were
	// caused by the old limit and do not halve it again.
	decreasedAt time.Time
	// quietUntil: successes before this time do not raise the limit.
	quietUntil time.Time
}

func newLimiter(size int) limiter {
	return limiter{size: size, limit: size}
}

// throttled records a quota error of work started at started. hint is the
// wait the error text asked for (0 if none). It reports whether the limit
// was lowered. Errors of work started before the last decrease were caused
// by the old limit: they neither lower it again nor lengthen the pause.
func (l *limiter) throttled(now, started time.Time, hint time.Duration) bool {
	l.successes = 0
	if !started.IsZero() && started.Before(l.decreasedAt) {
		l.hold(now, hint)
		return false
	}
	if l.pause == 0 {
		l.pause = throttleBackoff
	} else {
		l.pause = min(2*l.pause, throttleMax)
	}
	wait := max(jitter(l.pause), hint)
	l.hold(now, wait)
	if quiet := now.Add(quietFactor * wait); quiet.After(l.quietUntil) {
		l.quietUntil = quiet
	}
	l.decreasedAt = now
	if l.limit > 1 {
		l.limit = max(1, l.limit/2)
		return true
	}
	return false
}

// hold pauses new work for at least d.
func (l *limiter) hold(now time.Time, d time.Duration) {
	if until := now.Add(d); until.After(l.holdUntil) {
		l.holdUntil = until
	}
}

// success records a request that Exchange accepted at now. It reports
// whether the limit was raised.
func (l *limiter) success(now time.Time) bool {
	l.pause = 0
	if l.limit >= l.size || now.Before(l.quietUntil) {
		l.successes = 0
		return false
	}
	l.successes++
	if l.successes >= max(l.limit, increaseMin) {
		l.successes = 0
		l.limit++
		return true
	}
	return false
}

// jitter returns a duration uniformly spread over [d/2, 3d/2).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d)
}

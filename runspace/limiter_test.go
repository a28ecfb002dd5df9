package runspace

import (
	"testing"
	"time"
)

func TestLimiterAIMD(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	l := newLimiter(8)
	if !l.throttled(t0, t0.Add(-time.Second), 0) || l.limit != 4 {
		t.Fatalf("first quota error: limit = %d, want 4", l.limit)
	}
	if wait := l.holdUntil.Sub(t0); wait < throttleBackoff/2 || wait >= throttleBackoff*3/2 {
		t.Errorf("pause = %v, want within [%v, %v)", wait, throttleBackoff/2, throttleBackoff*3/2)
	}
	// Requests that started before the decrease saw the old limit: they
	// do not halve it again.
	if l.throttled(t0.Add(10*time.Millisecond), t0.Add(-time.Millisecond), 0) || l.limit != 4 {
		t.Errorf("stale quota error lowered the limit to %d", l.limit)
	}
	// A request started after the decrease did.
	if !l.throttled(t0.Add(time.Second), t0.Add(500*time.Millisecond), 0) || l.limit != 2 {
		t.Errorf("new quota error: limit = %d, want 2", l.limit)
	}
	t1 := t0.Add(2 * time.Second)
	l.throttled(t1, t1, 0)
	l.throttled(t1.Add(time.Second), t1.Add(time.Second), 0)
	if l.limit != 1 {
		t.Errorf("limit = %d, want the floor 1", l.limit)
	}
	// The hint of "not approved for at least N milliseconds" wins over a
	// shorter backoff.
	t2 := t1.Add(time.Minute)
	l.throttled(t2, t2, 45*time.Second)
	if got := l.holdUntil.Sub(t2); got != 45*time.Second {
		t.Errorf("pause = %v, want the server's 45s", got)
	}
	// No increase during the quiet period after a quota error.
	for range 20 {
		if l.success(t2.Add(time.Second)) {
			t.Fatal("limit raised during the quiet period")
		}
	}
	// Then additive increase: +1 after max(limit, increaseMin) successes.
	later := l.quietUntil
	steps := 0
	for l.limit < 8 {
		steps++
		l.success(later)
		if steps > 100 {
			t.Fatalf("limit stuck at %d", l.limit)
		}
	}
	if want := 4 + 4 + 4 + 4 + 5 + 6 + 7; steps != want {
		t.Errorf("recovery from 1 to 8 took %d successes, want %d", steps, want)
	}
	l.success(later)
	if l.limit != 8 {
		t.Errorf("limit = %d, want the size 8", l.limit)
	}
	if l.pause != 0 {
		t.Errorf("pause = %v after successes, want reset", l.pause)
	}
}

func TestLimiterBackoffGrows(t *testing.T) {
	l := newLimiter(1)
	now := time.Unix(1_700_000_000, 0)
	var last time.Duration
	for i := range 10 {
		l.throttled(now, now, 0)
		if i > 0 && l.pause < last {
			t.Fatalf("pause shrank from %v to %v without a success", last, l.pause)
		}
		last = l.pause
		now = now.Add(time.Minute)
	}
	if last != throttleMax {
		t.Errorf("pause = %v after 10 quota errors, want the cap %v", last, throttleMax)
	}
	if l.limit != 1 {
		t.Errorf("limit = %d, want 1", l.limit)
	}
}

package schedule

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// TimeOfDay is a wall-clock time without a date, such as the daily full
// sync's "03:00".
type TimeOfDay struct {
	Hour, Minute int
}

// ParseTimeOfDay parses "HH:MM" (24-hour clock; a one-digit hour is
// accepted).
func ParseTimeOfDay(s string) (TimeOfDay, error) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(h) < 1 || len(h) > 2 || len(m) != 2 || !digits(h) || !digits(m) {
		return TimeOfDay{}, fmt.Errorf("time of day %q: want HH:MM", s)
	}
	hour, _ := strconv.Atoi(h)
	minute, _ := strconv.Atoi(m)
	if hour > 23 || minute > 59 {
		return TimeOfDay{}, fmt.Errorf("time of day %q: hour must be 00-23 and minute 00-59", s)
	}
	return TimeOfDay{Hour: hour, Minute: minute}, nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func (t TimeOfDay) String() string { return fmt.Sprintf("%02d:%02d", t.Hour, t.Minute) }

// date is a calendar day in the schedule's location, as yyyymmdd.
type date int

func dateOf(t time.Time, loc *time.Location) date {
	y, m, d := t.In(loc).Date()
	return date(y*10000 + int(m)*100 + d)
}

// nextDaily returns the first daily slot at tod in loc that is strictly
// after t and falls on a calendar day after done (zero: no day is done).
//
// Slots are built with time.Date per calendar day, never by adding 24h, so
// that they keep their wall-clock time across DST changes. On the day the
// clock springs forward, a slot inside the gap is normalised by time.Date
// (02:30 becomes 03:30); on the day it falls back, an ambiguous slot exists
// twice, and done makes sure it runs once.
func nextDaily(t time.Time, tod TimeOfDay, loc *time.Location, done date) time.Time {
	y, m, d := t.In(loc).Date()
	for i := 0; ; i++ {
		c := time.Date(y, m, d+i, tod.Hour, tod.Minute, 0, 0, loc)
		if c.After(t) && dateOf(c, loc) > done {
			return c
		}
	}
}

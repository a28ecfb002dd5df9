package mdm

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseCompliance(t *testing.T) {
	f := func(in string, want Compliance, wantErr string) {
		t.Helper()
		got, err := ParseCompliance(in)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("ParseCompliance(%q) error = %v, want %q", in, err, wantErr)
			}
			return
		}
		if err != nil || got != want {
			t.Errorf("ParseCompliance(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	f("compliant", ComplianceCompliant, "")
	f("inGracePeriod", ComplianceInGracePeriod, "")
	f("NonCompliant", ComplianceNoncompliant, "")
	f(" configManager ", ComplianceConfigManager, "")
	f("", "", "missing")
	f("healthy", "", `unknown value "healthy"`)
	f("compliant ok", "", "unknown value")
}

func TestParseTime(t *testing.T) {
	f := func(in string, want time.Time, wantErr bool) {
		t.Helper()
		got, err := parseTime(in)
		if (err != nil) != wantErr || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v, error %v", in, got, err, want, wantErr)
		}
	}
	f("", time.Time{}, false)
	f("0001-01-01T00:00:00Z", time.Time{}, false)
	f("2024-05-01T10:00:00Z", time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC), false)
	f("2024-05-01T10:00:00.1234567Z", time.Date(2024, 5, 1, 10, 0, 0, 123456700, time.UTC), false)
	f("2024-05-01T12:00:00+02:00", time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC), false)
	f("2024-05-01 10:00:00", time.Time{}, true)
	f("yesterday", time.Time{}, true)
}

func TestBuilder(t *testing.T) {
	rec := func(id, eas, upn string) Record {
		return Record{ID: id, EASDeviceID: eas, UserPrincipalName: upn, Compliance: ComplianceCompliant}
	}
	b := newBuilder(0)
	for i, r := range []Record{
		rec("1", "AppleA", "alice@contoso.com"),
		rec("2", "applea", "ALICE@contoso.com"), // same user, same phone re-enrolled: no conflict
		rec("3", "AppleB", "bob@contoso.com"),
		rec("4", "appleb", "carol@contoso.com"), // another user claims Bob's phone
		rec("5", "APPLEB", "dan@contoso.com"),
		rec("6", "", "erin@contoso.com"),
		rec("7", "AppleC", ""),
		{ID: "8", EASDeviceID: "AppleD", Email: "frank@contoso.com", Compliance: ComplianceCompliant},
		{ID: "9", EASDeviceID: "AppleD", Email: "grace@contoso.com", Compliance: ComplianceCompliant}, // no UPN: told apart by mail
	} {
		if err := b.add(r, "line "+strconv.Itoa(i+2)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.add(rec("3", "X", "x@contoso.com"), "line 99"); err == nil || err.Error() != "line 99: duplicate id 3 (first at line 4)" {
		t.Errorf("duplicate: %v", err)
	}
	var s Snapshot
	b.finish(&s)
	if s.Conflicts != 2 || s.NoEASID != 1 || len(s.Records) != 8 || s.Total() != 9 {
		t.Fatalf("Conflicts %d, NoEASID %d, records %d, Total %d; want 2, 1, 8, 9", s.Conflicts, s.NoEASID, len(s.Records), s.Total())
	}
	var flagged []string
	for _, r := range s.Records {
		if r.Conflict {
			flagged = append(flagged, r.ID)
		}
	}
	if strings.Join(flagged, ",") != "3,4,5,8,9" {
		t.Errorf("flagged %v, want 3,4,5,8,9", flagged)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f := func(in string, want time.Duration, wantOK bool) {
		t.Helper()
		got, ok := parseRetryAfter(in, now)
		if got != want || ok != wantOK {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", in, got, ok, want, wantOK)
		}
	}
	f("", 0, false)
	f("10", 10*time.Second, true)
	f(" 0 ", 0, true)
	f("-5", 0, false)
	f("9999999999999", 24*time.Hour, true)
	f("Sat, 01 Mar 2025 12:00:30 GMT", 30*time.Second, true)
	f("Sat, 01 Mar 2025 11:59:00 GMT", 0, true) // in the past
	f("Saturday, 01-Mar-25 12:01:00 GMT", time.Minute, true)
	f("soon", 0, false)
}

func TestBackoff(t *testing.T) {
	for attempt, ceiling := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		var maxSeen time.Duration
		for range 200 {
			d := backoff(attempt, time.Second, 8*time.Second)
			if d <= 0 || d > ceiling {
				t.Fatalf("backoff(%d) = %v, want within (0, %v]", attempt, d, ceiling)
			}
			maxSeen = max(maxSeen, d)
		}
		if maxSeen < ceiling/2 { // 200 uniform draws all in the lower half: p = 2^-200
			t.Errorf("backoff(%d) never exceeded %v: no jitter over the full range", attempt, ceiling/2)
		}
	}
	if d := backoff(1000, time.Second, time.Minute); d <= 0 || d > time.Minute {
		t.Errorf("backoff(1000) = %v, want capped at 1m", d)
	}
}

package main

import (
	"testing"
	"time"

	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/server"
)

// TestMergeChanges: a move from one list to the other, written as two
// audit entries, is one change; intents and org writes are not changes.
func TestMergeChanges(t *testing.T) {
	at := time.Date(2026, 6, 10, 9, 0, 0, 0, time.UTC)
	e := func(sync, mb, dev string, l pipeline.List, from, to, phase string) pipeline.AuditEntry {
		return pipeline.AuditEntry{Time: at, SyncID: sync, Mailbox: mb, Device: dev, List: l, From: from, To: to, Reason: pipeline.ReasonNotCompliant, Phase: phase}
	}
	entries := []pipeline.AuditEntry{ // newest first
		e("s2", "a@contoso.com", "DEV1", pipeline.ListBlocked, pipeline.Absent, pipeline.Present, pipeline.PhaseDone),
		e("s2", "A@contoso.com", "DEV1", pipeline.ListAllowed, pipeline.Present, pipeline.Absent, pipeline.PhaseDone),
		e("s2", "a@contoso.com", "DEV1", pipeline.ListBlocked, pipeline.Absent, pipeline.Present, pipeline.PhaseIntent),
		e("s2", "b@contoso.com", "DEV2", pipeline.ListAllowed, pipeline.Present, pipeline.Absent, ""),
		e("s1", "a@contoso.com", "DEV1", pipeline.ListAllowed, pipeline.Absent, pipeline.Present, pipeline.PhaseDone),
		{Time: at, SyncID: "s1", Setting: "DefaultAccessLevel", From: "Allow", To: "Quarantine"},
	}
	got := mergeChanges(entries)
	want := []struct{ sync, dev, from, to, summary string }{
		{"s2", "DEV1", server.PlaceAllowed, server.PlaceBlocked, "blocked, was allowed"},
		{"s2", "DEV2", server.PlaceAllowed, server.PlaceNeither, "left to Exchange, was allowed"},
		{"s1", "DEV1", server.PlaceNeither, server.PlaceAllowed, "allowed, was left to Exchange"},
	}
	if len(got) != len(want) {
		t.Fatalf("mergeChanges() = %d changes %+v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.SyncID != w.sync || g.DeviceID != w.dev || g.From != w.from || g.To != w.to || g.Summary != w.summary {
			t.Errorf("change %d = %+v, want %+v", i, g, w)
		}
	}
}

// TestMeasureLag: the lag is the write time minus the MDM check-in, for
// compliance-driven writes whose check-in the previous sync could not see.
func TestMeasureLag(t *testing.T) {
	prev := time.Date(2026, 6, 10, 9, 0, 0, 0, time.UTC)
	write := prev.Add(5 * time.Minute)
	lastSync := map[string]time.Time{
		"DEV1": write.Add(-30 * time.Second),  // 30 s
		"DEV2": write.Add(-120 * time.Second), // 120 s, written to two lists
		"DEV3": prev.Add(-time.Hour),          // seen by the previous sync: not counted
		"DEV4": write.Add(-10 * time.Second),  // reason not from the MDM: not counted
		"DEV5": write.Add(-60 * time.Second),  // another sync's write: not counted
		// DEV6: no check-in time: not counted
	}
	e := func(sync, dev string, r pipeline.Reason, l pipeline.List, to string) pipeline.AuditEntry {
		from := pipeline.Absent
		if to == pipeline.Absent {
			from = pipeline.Present
		}
		return pipeline.AuditEntry{Time: write, SyncID: sync, Mailbox: "u@contoso.com", Device: dev, List: l, From: from, To: to, Reason: r, Phase: pipeline.PhaseDone}
	}
	entries := []pipeline.AuditEntry{
		e("s", "DEV1", pipeline.ReasonCompliant, pipeline.ListAllowed, pipeline.Present),
		e("s", "DEV2", pipeline.ReasonNotCompliant, pipeline.ListBlocked, pipeline.Present),
		e("s", "DEV2", pipeline.ReasonNotCompliant, pipeline.ListAllowed, pipeline.Absent),
		e("s", "DEV3", pipeline.ReasonCompliant, pipeline.ListAllowed, pipeline.Present),
		e("s", "DEV4", pipeline.ReasonNotEnrolled, pipeline.ListAllowed, pipeline.Absent),
		e("other", "DEV5", pipeline.ReasonCompliant, pipeline.ListAllowed, pipeline.Present),
		e("s", "DEV6", pipeline.ReasonCompliant, pipeline.ListAllowed, pipeline.Present),
	}
	got := measureLag(entries, "s", prev, func(_, dev string) time.Time { return lastSync[dev] })
	want := server.LagStats{Devices: 2, P50: 30, P95: 120, Max: 120}
	if got == nil || *got != want {
		t.Errorf("measureLag() = %+v, want %+v", got, want)
	}
	if got := measureLag(entries, "none", prev, func(_, dev string) time.Time { return lastSync[dev] }); got != nil {
		t.Errorf("measureLag(no writes) = %+v, want nil", got)
	}
}

// TestAuditOfDevices reads a device's entries from the whole log, however
// far back, and no other device's (one id a prefix of another).
func TestAuditOfDevices(t *testing.T) {
	dir := t.TempDir()
	a, err := pipeline.OpenAudit(dir, pipeline.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 3000 {
		dev := "OTHER"
		switch i {
		case 1, 2999:
			dev = "DEV1"
		case 5:
			dev = "DEV10"
		}
		if err := a.Write(pipeline.AuditEntry{Time: at.Add(time.Duration(i) * time.Second), SyncID: "s", Mailbox: "a@contoso.com",
			Device: dev, List: pipeline.ListBlocked, From: pipeline.Absent, To: pipeline.Present, Reason: pipeline.ReasonNotCompliant}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := auditOfDevices(t.Context(), dir, []string{"DEV1"})
	if err != nil || len(got) != 2 || !got[0].Time.Equal(at.Add(2999*time.Second)) || !got[1].Time.Equal(at.Add(time.Second)) {
		t.Errorf("auditOfDevices(DEV1) = %+v, %v; want its 2 entries, newest first", got, err)
	}
}

package pipeline_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/pipeline"
)

// TestDuplicateMDMRecordsOrder gives some compliant phones a second MDM
// record with the same check-in time that is noncompliant, then serves the
// MDM in reverse order: the decision must not follow Graph's order (the
// noncompliant twin wins the tie, see pipeline.Newer), so the second full
// sync writes nothing.
func TestDuplicateMDMRecordsOrder(t *testing.T) {
	f := newFixture(t, fixtureOptions{devices: 800})
	var twinned []string
	f.graph.Update(func(p *population.Population) {
		for _, r := range slices.Clone(p.MDM) {
			if r.ComplianceState != "compliant" || r.EASDeviceID == "" || len(twinned) == 25 {
				continue
			}
			twin := r
			twin.ID = r.ID + "-twin"
			twin.ComplianceState = "noncompliant"
			p.MDM = append(p.MDM, twin)
			twinned = append(twinned, r.EASDeviceID)
		}
	})
	if len(twinned) == 0 {
		t.Fatal("the fleet has no compliant enrolled phone to twin")
	}
	f.eng = f.newEngine(nil)
	f.sync(pipeline.SyncFull)
	f.checkAccess()
	blocked := map[string]bool{}
	for _, l := range f.lists() {
		for _, id := range l[1] {
			blocked[strings.ToLower(id)] = true
		}
	}
	why := map[string]pipeline.Reason{}
	for _, x := range f.expectations() {
		why[strings.ToLower(x.device.DeviceId)] = x.why
	}
	nBlocked := 0
	for _, id := range twinned {
		id = strings.ToLower(id)
		switch {
		case why[id] == pipeline.ReasonCompliant:
			t.Errorf("device %s has a compliant and a noncompliant record with the same check-in; decided Compliant", id)
		case why[id] == pipeline.ReasonNotCompliant && !blocked[id]:
			t.Errorf("device %s decided NotCompliant but is not in a blocked list", id)
		case why[id] == pipeline.ReasonNotCompliant:
			nBlocked++
		}
	}
	if nBlocked == 0 {
		t.Errorf("none of the %d twinned devices is blocked", len(twinned))
	}
	f.graph.Update(func(p *population.Population) { slices.Reverse(p.MDM) })
	before := f.lastSeq()
	f.sync(pipeline.SyncFull)
	if n := len(f.calls(before, "Set-CASMailbox")); n != 0 {
		t.Errorf("the same MDM in reverse order: full sync wrote %d mailboxes, want 0", n)
	}
	f.checkAccess()
}

package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/mdm"
	"github.com/easconnector/easconnector/runspace"
)

func snapshotOf(n int) *mdm.Snapshot {
	return &mdm.Snapshot{Records: make([]mdm.Record, n)}
}

func TestCheckSnapshot(t *testing.T) {
	cfg := DefaultGuardConfig()
	f := func(snap *mdm.Snapshot, last int, cfg GuardConfig, want GuardKind) {
		t.Helper()
		err := CheckSnapshot(snap, last, cfg)
		var ge *GuardError
		switch {
		case want == "" && err != nil:
			t.Errorf("CheckSnapshot(%v, last %d) = %v, want nil", snap != nil, last, err)
		case want != "" && (!errors.As(err, &ge) || ge.Kind != want || !errors.Is(err, ErrGuard)):
			t.Errorf("CheckSnapshot(last %d) = %v, want a %s guard error", last, err, want)
		}
	}
	f(nil, 0, cfg, GuardMDMMissing)
	f(snapshotOf(0), 0, cfg, "") // first sync of an empty tenant
	f(snapshotOf(10), 0, cfg, "")
	f(snapshotOf(0), 1, cfg, GuardMDMEmpty)
	f(snapshotOf(500), 1000, cfg, "")
	f(snapshotOf(499), 1000, cfg, GuardMDMShrunk)
	f(snapshotOf(1), 3, cfg, GuardMDMShrunk) // minimum is ceil(1.5) = 2
	f(snapshotOf(2), 3, cfg, "")
	f(snapshotOf(5000), 1000, cfg, "") // growth is fine
	f(snapshotOf(1), 1000, GuardConfig{}, "")
	f(snapshotOf(0), 1000, GuardConfig{}, GuardMDMEmpty) // even with the ratio off
	err := CheckSnapshot(snapshotOf(100), 1000, cfg)
	if want := "guard: mdm snapshot has 100 records, below the minimum 500 (last good 1000)"; err == nil || err.Error() != want {
		t.Errorf("error text = %v, want %q", err, want)
	}
}

// blockPlans makes n mailbox plans of one new block each, and one plan
// that only moves allow entries around.
// planned wraps plans as a sync reports them, with a made-up address.
func planned(plans []MailboxPlan) []PlannedMailbox {
	out := make([]PlannedMailbox, len(plans))
	for i, p := range plans {
		out[i] = PlannedMailbox{MailboxPlan: p, Mailbox: p.Identity + "@contoso.com", Name: "User " + p.Identity}
	}
	return out
}

func blockPlans(n int) []MailboxPlan {
	plans := make([]MailboxPlan, 0, n+1)
	for i := range n {
		plans = append(plans, MailboxPlan{Identity: fmt.Sprintf("mb%d", i), Blocked: runspace.ListEdit{Add: ids(fmt.Sprintf("Appl%d", i))}})
	}
	return append(plans, MailboxPlan{Identity: "adds", Allowed: runspace.ListEdit{Add: ids("ApplX", "ApplY")}})
}

func TestCheckBlastRadius(t *testing.T) {
	cfg := DefaultGuardConfig()
	f := func(plans []MailboxPlan, devices int, cfg GuardConfig, wantLimit int, trip bool) {
		t.Helper()
		err := CheckBlastRadius(plans, devices, cfg)
		var ge *GuardError
		if !trip {
			if err != nil {
				t.Errorf("CheckBlastRadius(%d plans, %d devices) = %v, want nil", len(plans), devices, err)
			}
			return
		}
		if !errors.As(err, &ge) || ge.Kind != GuardBlastRadius || ge.Limit != wantLimit || ge.Devices != devices || ge.Got != ge.Counts.Revocations {
			t.Errorf("CheckBlastRadius(%d plans, %d devices) = %#v, want a blast radius error with limit %d", len(plans), devices, err, wantLimit)
		}
	}
	f(blockPlans(500), 1000, cfg, 500, false) // the absolute cap
	f(blockPlans(501), 1000, cfg, 500, true)
	f(blockPlans(5000), 50000, cfg, 5000, false) // 10 % of a big fleet
	f(blockPlans(5001), 50000, cfg, 5000, true)
	f(blockPlans(1), 10, GuardConfig{}, 0, true) // both zero: any revocation is held
	f(blockPlans(0), 10, GuardConfig{}, 0, false)
	// Removing an allow entry revokes access as surely as a block.
	revoke := []MailboxPlan{{Identity: "a", Allowed: runspace.ListEdit{Remove: ids("ApplA", "ApplB")}, Blocked: runspace.ListEdit{Add: ids("appla")}}}
	f(revoke, 10, GuardConfig{MaxNewBlocks: 1}, 1, true)
	f(revoke, 10, GuardConfig{MaxNewBlocks: 2}, 2, false)

	err := CheckBlastRadius(blockPlans(600), 1000, cfg)
	if want := "guard: 600 devices would lose access (600 block adds, 0 allow removes in 601 mailboxes), above the limit 500 for 1000 devices"; err == nil || err.Error() != want {
		t.Errorf("error text = %v\nwant %q", err, want)
	}
}

// TestGuardMassDamage runs the scenarios the guards exist for through
// Decide, PlanMailbox and the guards together: the MDM reports every device
// noncompliant, or a tenth of the usual snapshot.
func TestGuardMassDamage(t *testing.T) {
	p := testPolicy()
	const devices = 2000
	var plans []MailboxPlan
	for i := range devices {
		in := targeted()
		in.Device.DeviceId = fmt.Sprintf("Appl%05d", i)
		in.Record.Compliance = mdm.ComplianceNoncompliant
		d, r := Decide(p, in, now)
		plans = append(plans, PlanMailbox(MailboxInput{Identity: fmt.Sprintf("mb%d", i), Devices: []DeviceDecision{dd(in.Device.DeviceId, d, r)}}))
	}
	if err := CheckBlastRadius(plans, devices, DefaultGuardConfig()); !errors.Is(err, ErrGuard) {
		t.Errorf("100%% noncompliant: CheckBlastRadius() = %v, want a guard error", err)
	}
	if err := CheckSnapshot(snapshotOf(devices/10), devices, DefaultGuardConfig()); !errors.Is(err, ErrGuard) {
		t.Errorf("90%% drop: CheckSnapshot() = %v, want a guard error", err)
	}
}

func TestGuardConfigValidate(t *testing.T) {
	if err := DefaultGuardConfig().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for _, c := range []struct {
		cfg  GuardConfig
		want string
	}{
		{GuardConfig{MinMDMRatio: 1.5}, "min_mdm_ratio"},
		{GuardConfig{MinMDMRatio: -0.1}, "min_mdm_ratio"},
		{GuardConfig{MaxNewBlocks: -1}, "max_new_blocks:"},
		{GuardConfig{MaxNewBlocksRatio: 2}, "max_new_blocks_ratio"},
	} {
		if err := c.cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
}

func TestHeldPlan(t *testing.T) {
	dir := t.TempDir()
	plans := blockPlans(3)
	plans = append(plans, MailboxPlan{Identity: "empty"})
	guard := CheckBlastRadius(plans, 3, GuardConfig{MaxNewBlocks: 1})
	hp, err := NewHeldPlan("sync-1", SyncFull, HeldByGuard, planned(plans), 3, guard, now)
	if err != nil {
		t.Fatal(err)
	}
	if !heldIDRe.MatchString(hp.ID) || len(hp.Plans) != 4 || hp.Counts.BlockAdds != 3 || !strings.Contains(hp.Reason, "lose access") {
		t.Fatalf("NewHeldPlan() = %+v", hp)
	}
	other, _ := NewHeldPlan("sync-2", SyncQuick, HeldByGuard, planned(plans), 3, guard, now.Add(time.Minute))
	if other.ID == hp.ID {
		t.Fatal("two held plans share an id")
	}
	for _, h := range []*HeldPlan{hp, other} {
		if err := SaveHeldPlan(dir, h); err != nil {
			t.Fatal(err)
		}
	}
	got, err := LoadHeldPlan(dir, hp.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, hp) {
		t.Errorf("LoadHeldPlan() = %+v\nwant %+v", got, hp)
	}
	list, err := ListHeldPlans(dir)
	if err != nil || len(list) != 2 || list[0].ID != hp.ID || list[1].ID != other.ID || list[0].Plans != nil {
		t.Errorf("ListHeldPlans() = %+v, %v", list, err)
	}
	if err := hp.CheckApprovable(now.Add(time.Hour), 24*time.Hour); err != nil {
		t.Errorf("CheckApprovable(1h old) = %v", err)
	}
	if err := hp.CheckApprovable(now.Add(25*time.Hour), 24*time.Hour); err == nil {
		t.Error("CheckApprovable(25h old, max 24h) = nil")
	}
	for _, bad := range []string{"", "../state", hp.ID[:31], strings.ToUpper(hp.ID), hp.ID + "/../x"} {
		if _, err := LoadHeldPlan(dir, bad); err == nil || errors.Is(err, ErrHeldPlanNotFound) {
			t.Errorf("LoadHeldPlan(%q) = %v, want an id error", bad, err)
		}
	}
	if _, err := LoadHeldPlan(dir, strings.Repeat("0", 32)); !errors.Is(err, ErrHeldPlanNotFound) {
		t.Errorf("LoadHeldPlan(unknown) = %v, want ErrHeldPlanNotFound", err)
	}
	if err := RemoveHeldPlan(dir, other.ID); err != nil {
		t.Fatal(err)
	}
	if err := RemoveHeldPlan(dir, other.ID); !errors.Is(err, ErrHeldPlanNotFound) {
		t.Errorf("second RemoveHeldPlan() = %v", err)
	}
}

// TestHeldPlanTampered: a held plan edited on disk to carry PowerShell is
// refused before anything could apply it.
func TestHeldPlanTampered(t *testing.T) {
	dir := t.TempDir()
	hp, _ := NewHeldPlan("s", SyncFull, HeldByGuard, planned(blockPlans(2)), 2, nil, now)
	if err := SaveHeldPlan(dir, hp); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, HeldDir, hp.ID+".json")
	data, _ := os.ReadFile(path)
	evil := strings.Replace(string(data), `"Appl0"`, `"Appl0\"; Remove-Mailbox x; \""`, 1)
	if evil == string(data) {
		t.Fatal("test did not tamper")
	}
	if err := os.WriteFile(path, []byte(evil), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadHeldPlan(dir, hp.ID); err == nil || !strings.Contains(err.Error(), "invalid DeviceId") {
		t.Errorf("LoadHeldPlan(tampered) = %v, want an invalid DeviceId error", err)
	}
	// And a file renamed to another plan's id.
	other, _ := NewHeldPlan("s", SyncFull, HeldByGuard, planned(blockPlans(1)), 1, nil, now)
	if err := os.WriteFile(filepath.Join(dir, HeldDir, other.ID+".json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadHeldPlan(dir, other.ID); err == nil {
		t.Error("LoadHeldPlan(file of another id) = nil error")
	}
	if _, err := ListHeldPlans(dir); err == nil {
		t.Error("ListHeldPlans() hides undecodable plans")
	}
}

func FuzzDecodeHeldPlan(f *testing.F) {
	hp, _ := NewHeldPlan("s", SyncFull, HeldByGuard, planned(blockPlans(2)), 2, nil, now)
	good, _ := json.Marshal(hp)
	f.Add(good)
	f.Add([]byte(`{"id":"00000000000000000000000000000000","plans":[{"identity":"a","blocked":{"add":["x y"]}}]}`))
	f.Add([]byte(`{"id":"00000000000000000000000000000000","plans":[{"identity":"a"},{"identity":"A"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		hp, err := DecodeHeldPlan(data)
		if err != nil {
			return
		}
		if err := hp.Validate(); err != nil {
			t.Fatalf("decoded plan fails Validate: %v", err)
		}
		for _, p := range hp.Plans {
			for _, id := range slices.Concat(p.Allowed.Add, p.Allowed.Remove, p.Blocked.Add, p.Blocked.Remove) {
				if strings.ContainsAny(id, "\"'`$;|&(){}@ \t\r\n") {
					t.Fatalf("accepted id %q", id)
				}
			}
		}
	})
}

// TestHeldPlanSource: a plan keeps where it came from; files written
// before the field existed read as a guard's hold, unless their reason is
// the one `easconnector plan` gave; an unknown source is refused.
func TestHeldPlanSource(t *testing.T) {
	if _, err := NewHeldPlan("s", SyncFull, "mine", planned(blockPlans(1)), 1, nil, now); err == nil {
		t.Error("NewHeldPlan(source mine) = nil error")
	}
	hp, err := NewHeldPlan("s", SyncFull, HeldByPlan, planned(blockPlans(1)), 1, nil, now)
	if err != nil || hp.Source != HeldByPlan || hp.Reason != heldByPlanReason || hp.Plans[0].Mailbox != "mb0@contoso.com" {
		t.Fatalf("NewHeldPlan(plan) = %+v, %v", hp, err)
	}
	f := func(reason, source, want string) {
		t.Helper()
		c := *hp
		c.Reason, c.Source = reason, source
		data, err := json.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeHeldPlan(data)
		switch {
		case want == "" && err == nil:
			t.Errorf("DecodeHeldPlan(source %q) = %s, want an error", source, got.Source)
		case want != "" && (err != nil || got.Source != want):
			t.Errorf("DecodeHeldPlan(reason %q, source %q) = %v, %v; want source %s", reason, source, got, err, want)
		}
	}
	f(heldByPlanReason, "", HeldByPlan)
	f("too many new blocks", "", HeldByGuard)
	f("too many new blocks", HeldByPlan, HeldByPlan)
	f("x", "elsewhere", "")
}

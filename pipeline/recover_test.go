package pipeline

import (
	"bufio"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/runspace"
)

// listsExchange is an Exchange whose mailboxes, rules and org settings are
// read from memory; writes are refused, so a test sees that recovery only
// reads.
type listsExchange struct {
	mu       sync.Mutex
	mbs      []exchange.CASMailbox
	rules    []exchange.DeviceAccessRule
	org      exchange.OrgSettings
	readErr  error
	mbReads  [][]string
	ruleRead int
	orgRead  int
}

var _ Exchange = (*listsExchange)(nil)

var errNoWrite = errors.New("recovery must not write")

func (x *listsExchange) MobileDevices(context.Context, exchange.DeviceFilter, func(exchange.MobileDevice, error) error) error {
	return errors.New("not read by recovery")
}

func (x *listsExchange) CASMailboxes(_ context.Context, ids []string, each func(exchange.CASMailbox) error) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.readErr != nil {
		return x.readErr
	}
	x.mbReads = append(x.mbReads, slices.Clone(ids))
	for _, mb := range x.mbs {
		if slices.ContainsFunc(ids, func(id string) bool { return strings.EqualFold(id, mb.DistinguishedName) }) {
			if err := each(mb); err != nil {
				return err
			}
		}
	}
	return nil
}

func (x *listsExchange) SetCASMailbox(context.Context, string, runspace.ListEdit, runspace.ListEdit) error {
	return errNoWrite
}

func (x *listsExchange) OrgSettings(context.Context) (exchange.OrgSettings, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.orgRead++
	return x.org, nil
}

func (x *listsExchange) SetOrgSettings(context.Context, exchange.OrgSettingsUpdate) error {
	return errNoWrite
}

func (x *listsExchange) DeviceAccessRules(context.Context) ([]exchange.DeviceAccessRule, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.ruleRead++
	return slices.Clone(x.rules), nil
}

func (x *listsExchange) NewDeviceAccessRule(context.Context, exchange.Characteristic, string, exchange.AccessLevel) error {
	return errNoWrite
}

func (x *listsExchange) SetDeviceAccessRule(context.Context, string, exchange.AccessLevel) error {
	return errNoWrite
}

func (x *listsExchange) RemoveDeviceAccessRule(context.Context, string) error { return errNoWrite }

// readAuditLines returns every line of the audit log in dir, oldest first.
func readAuditLines(t *testing.T, dir string) []AuditEntry {
	t.Helper()
	files, err := AuditFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []AuditEntry
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, maxAuditLine)
		for sc.Scan() {
			e, err := ParseAuditLine(sc.Bytes())
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			out = append(out, e)
		}
		f.Close()
	}
	return out
}

// TestRecoverPending: writes a killed run left pending are settled from
// what Exchange holds, before any plan: an add that took effect and a
// remove that did not are ours, an add that did not take effect and a
// remove that did are not; a pending rule is ours when it exists; every
// entry is audited as recovered with what Exchange holds; the pending
// records are gone from the saved state, and nothing is written.
func TestRecoverPending(t *testing.T) {
	dir := t.TempDir()
	const (
		dn1 = "CN=Ann,OU=Users,DC=contoso,DC=com"
		dn2 = "CN=Bob,OU=Users,DC=contoso,DC=com"
		dn3 = "CN=Gone,OU=Users,DC=contoso,DC=com"
	)
	x := &listsExchange{
		mbs: []exchange.CASMailbox{
			// Ann: the allow add of ApplAdd1 and the block remove of
			// ApplRem1 took effect; the block add of ApplAdd2 did not and
			// the allow remove of ApplRem2 did not.
			{Guid: "g1", DistinguishedName: dn1, PrimarySmtpAddress: "ann@contoso.com",
				ActiveSyncAllowedDeviceIDs: []string{"APPLADD1", "ApplRem2", "ApplOld1"}, ActiveSyncBlockedDeviceIDs: []string{"ApplAdmin"}},
			// Bob: nothing of the write took effect.
			{Guid: "g2", DistinguishedName: dn2, PrimarySmtpAddress: "bob@contoso.com"},
		},
		rules: []exchange.DeviceAccessRule{
			{Name: "WindowsMail (DeviceType)", Characteristic: exchange.CharDeviceType, QueryString: "WindowsMail", AccessLevel: exchange.LevelAllow},
			{Name: "Nine Work (DeviceModel)", Characteristic: exchange.CharDeviceModel, QueryString: "Nine Work", AccessLevel: exchange.LevelQuarantine},
		},
		org: exchange.OrgSettings{DefaultAccessLevel: exchange.LevelQuarantine},
	}
	st := NewState()
	st.SetOwned("g1", Owned{Allowed: []string{"ApplOld1", "ApplRem2"}, Blocked: []string{"ApplRem1"}})
	st.SetOwned("g3", Owned{Allowed: []string{"ApplGone1"}})
	st.SetOwnedRules([]string{"Old (DeviceOS)", "Nine Work (DeviceModel)"})
	add := func(id string, l List) Change {
		return Change{DeviceID: id, List: l, Op: OpAdd, Decision: Allow, Reason: ReasonCompliant}
	}
	rem := func(id string, l List) Change {
		return Change{DeviceID: id, List: l, Op: OpRemove, Decision: Block, Reason: ReasonNotCompliant}
	}
	st.AddPending("g1", Pending{DN: dn1, Mailbox: "ann@contoso.com", SyncID: "s1", Changes: []Change{
		add("ApplAdd1", ListAllowed), add("ApplAdd2", ListBlocked), rem("ApplRem1", ListBlocked), rem("ApplRem2", ListAllowed),
	}})
	st.AddPending("g2", Pending{DN: dn2, SyncID: "s1", Changes: []Change{add("ApplBob1", ListAllowed)}})
	st.AddPending("g3", Pending{DN: dn3, SyncID: "s1", Changes: []Change{add("ApplGone2", ListBlocked)}})
	st.addPendingRules([]PendingRule{
		{Op: ruleNew, Name: "WindowsMail (DeviceType)", SyncID: "s1", From: Absent, To: "Allow"},
		{Op: ruleNew, Name: "Never Made (DeviceModel)", SyncID: "s1", From: Absent, To: "Block"},
		{Op: ruleRemove, Name: "Old (DeviceOS)", SyncID: "s1", From: "Block", To: Absent},
		{Op: ruleRemove, Name: "Nine Work (DeviceModel)", SyncID: "s1", From: "Quarantine", To: Absent},
	})
	st.setPendingOrg(&PendingOrg{SyncID: "s1", Changes: []OrgChange{{Setting: "DefaultAccessLevel", From: "Allow", To: "Quarantine"}}})

	// Before reconciliation, every pending entry is claimed.
	if got := st.OwnedOf("G1"); !slices.Equal(got.Allowed, []string{"ApplAdd1", "ApplOld1", "ApplRem2"}) ||
		!slices.Equal(got.Blocked, []string{"ApplAdd2", "ApplRem1"}) {
		t.Errorf("OwnedOf(g1) with a pending write = %+v, want the recorded entries and every pending one", got)
	}
	if got := st.OwnedRules(); len(got) != 4 {
		t.Errorf("OwnedRules with pending rules = %v, want 4", got)
	}
	if err := SaveState(dir, st); err != nil {
		t.Fatal(err)
	}
	loaded, _, err := LoadState(dir)
	if err != nil || len(loaded.PendingWrites()) != 3 || len(loaded.pendingRules()) != 4 || loaded.pendingOrg() == nil {
		t.Fatalf("LoadState kept %d pending writes, %d rules, org %v (%v); want 3, 4, set", len(loaded.PendingWrites()), len(loaded.pendingRules()), loaded.pendingOrg(), err)
	}

	e, err := New(Options{Exchange: x, MDM: noSource{}, Policy: DefaultPolicy(), Guard: DefaultGuardConfig(), StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	r := &run{e: e, rep: &Report{SyncResult: SyncResult{ID: "s2"}}}
	if err := e.recoverPending(t.Context(), r); err != nil {
		t.Fatalf("recoverPending: %v", err)
	}

	f := func(mb string, want Owned) {
		t.Helper()
		for _, s := range []*State{e.st, mustLoad(t, dir)} {
			if got := s.OwnedOf(mb); !slices.Equal(got.Allowed, want.Allowed) || !slices.Equal(got.Blocked, want.Blocked) {
				t.Errorf("OwnedOf(%s) after recovery = %+v, want %+v", mb, got, want)
			}
		}
	}
	f("g1", Owned{Allowed: []string{"APPLADD1", "ApplOld1", "ApplRem2"}})
	f("g2", Owned{})
	f("g3", Owned{Allowed: []string{"ApplGone1"}, Blocked: []string{"ApplGone2"}}) // not found: claims kept
	for _, s := range []*State{e.st, mustLoad(t, dir)} {
		if s.HasPending() {
			t.Errorf("pending records left after recovery: %+v %+v %+v", s.PendingWrites(), s.pendingRules(), s.pendingOrg())
		}
		if got := s.OwnedRules(); !slices.Equal(got, []string{"Nine Work (DeviceModel)", "WindowsMail (DeviceType)"}) {
			t.Errorf("OwnedRules after recovery = %v, want the two that exist", got)
		}
	}
	if len(x.mbReads) != 1 || len(x.mbReads[0]) != 3 || x.ruleRead != 1 || x.orgRead != 1 {
		t.Errorf("reads: mailboxes %v, rules %d, org %d; want one read of the 3 mailboxes, one of rules, one of org", x.mbReads, x.ruleRead, x.orgRead)
	}

	type key struct{ mb, dev, target string }
	got := map[key]AuditEntry{}
	for _, l := range readAuditLines(t, dir) {
		if l.Phase != PhaseRecovered || l.SyncID != "s1" {
			t.Errorf("audit line %+v: want phase recovered of sync s1", l)
		}
		got[key{l.Mailbox, l.Device, l.Setting + l.Target}] = l
	}
	want := map[key]string{
		{"ann@contoso.com", "ApplAdd1", ""}:      Present,
		{"ann@contoso.com", "ApplAdd2", ""}:      Absent,
		{"ann@contoso.com", "ApplRem1", ""}:      Absent,
		{"ann@contoso.com", "ApplRem2", ""}:      Present,
		{"g2", "ApplBob1", ""}:                   Absent,
		{"g3", "ApplGone2", ""}:                  Absent,
		{"", "", "RuleWindowsMail (DeviceType)"}: "Allow",
		{"", "", "RuleNever Made (DeviceModel)"}: Absent,
		{"", "", "RuleOld (DeviceOS)"}:           Absent,
		{"", "", "RuleNine Work (DeviceModel)"}:  "Quarantine",
		{"", "", "DefaultAccessLevel"}:           "Quarantine",
	}
	if len(got) != len(want) {
		t.Errorf("%d recovered audit lines, want %d: %+v", len(got), len(want), got)
	}
	for k, to := range want {
		if l, ok := got[k]; !ok || l.To != to {
			t.Errorf("recovered line for %+v = %+v, want To %q", k, l, to)
		}
	}
	if n := r.rep.Recovered; n != len(want) {
		t.Errorf("Report.Recovered = %d, want %d", n, len(want))
	}

	// Nothing pending: a second call reads nothing.
	if err := e.recoverPending(t.Context(), r); err != nil || len(x.mbReads) != 1 {
		t.Errorf("second recoverPending = %v after %d reads, want no read", err, len(x.mbReads))
	}
}

// TestRecoverPendingReadFails: when Exchange cannot be read, the pending
// records stay, claimed, for the next try.
func TestRecoverPendingReadFails(t *testing.T) {
	dir := t.TempDir()
	st := NewState()
	st.AddPending("g1", Pending{DN: "CN=Ann", SyncID: "s1", Changes: []Change{{DeviceID: "ApplAdd1", List: ListAllowed, Op: OpAdd}}})
	x := &listsExchange{readErr: errors.New("all Client Access servers down")}
	e, err := New(Options{Exchange: x, MDM: noSource{}, Policy: DefaultPolicy(), Guard: DefaultGuardConfig(), StateDir: dir, State: st})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rep, err := e.Sync(t.Context(), SyncRequest{Kind: SyncFull})
	if err == nil || !strings.Contains(err.Error(), "recover 1 pending mailbox writes") {
		t.Fatalf("Sync = %v, want the recovery's read error", err)
	}
	if rep.Writes != 0 || !st.HasPending() || !slices.Equal(st.OwnedOf("g1").Allowed, []string{"ApplAdd1"}) {
		t.Errorf("after a failed recovery: %d writes, pending %v, owned %+v; want none, kept, claimed", rep.Writes, st.HasPending(), st.OwnedOf("g1"))
	}
}

func mustLoad(t *testing.T, dir string) *State {
	t.Helper()
	st, _, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/mdm"
	"github.com/easconnector/easconnector/runspace"
)

// noSource is an MDM that is never read.
type noSource struct{}

func (noSource) Snapshot(context.Context, []string) (*mdm.Snapshot, error) {
	return nil, errors.New("not read in this test")
}

func TestForEach(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	f := func(name string, workers, n int, cancelAt int, wantStarted func(int) bool) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var running, peak, calls atomic.Int64
			seen := make([]atomic.Bool, n)
			started, err := forEach(ctx, workers, n, log, func(i int) {
				if seen[i].Swap(true) {
					t.Errorf("task %d ran twice", i)
				}
				r := running.Add(1)
				for p := peak.Load(); r > p && !peak.CompareAndSwap(p, r); p = peak.Load() {
				}
				if int(calls.Add(1)) == cancelAt {
					cancel()
				}
				time.Sleep(time.Millisecond)
				running.Add(-1)
				if i == 3 {
					panic("task 3 panics")
				}
			})
			if int(calls.Load()) != started || !wantStarted(started) {
				t.Errorf("forEach started %d, ran %d", started, calls.Load())
			}
			if cancelAt > 0 && !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want context.Canceled", err)
			}
			if cancelAt == 0 && err != nil {
				t.Errorf("err = %v", err)
			}
			if peak.Load() > int64(max(workers, 1)) {
				t.Errorf("%d tasks ran at once, want at most %d", peak.Load(), workers)
			}
			if running.Load() != 0 {
				t.Errorf("%d tasks still running after forEach returned", running.Load())
			}
		})
	}
	f("all", 4, 50, 0, func(s int) bool { return s == 50 })
	f("one worker", 1, 10, 0, func(s int) bool { return s == 10 })
	f("more workers than tasks", 16, 3, 0, func(s int) bool { return s == 3 })
	f("cancelled", 2, 1000, 10, func(s int) bool { return s >= 10 && s < 20 })
	if n, err := forEach(context.Background(), 4, 0, log, func(int) { t.Error("ran") }); n != 0 || err != nil {
		t.Errorf("forEach(0) = %d, %v", n, err)
	}
}

func TestPermanent(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("x: %w", runspace.ErrInvalidCall), true},
		{fmt.Errorf("x: %w", exchange.ErrInvalidDeviceID), true},
		{&runspace.RemoteError{Type: "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"}, true},
		{&runspace.RemoteError{Type: "Microsoft.Exchange.Data.Directory.ADTransientException"}, false},
		{fmt.Errorf("x: %w", runspace.ErrSessionBroken), false},
		{fmt.Errorf("x: %w", runspace.ErrThrottled), false},
		{errors.New("connection reset"), false},
	} {
		if got := permanent(tc.err); got != tc.want {
			t.Errorf("permanent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestEditList(t *testing.T) {
	got := editList([]string{"A1", "b2", "C3"}, runspace.ListEdit{Add: []string{"D4", "a1"}, Remove: []string{"B2"}})
	if want := []string{"A1", "C3", "D4"}; !slices.Equal(got, want) {
		t.Errorf("editList = %v, want %v", got, want)
	}
}

func TestReconcile(t *testing.T) {
	held := &MailboxPlan{
		Identity: "g1",
		Allowed:  runspace.ListEdit{Add: []string{"NEW1"}, Remove: []string{"OLD1"}},
		Blocked:  runspace.ListEdit{Add: []string{"OLD1", "BAD1"}, Remove: []string{"GONE1"}},
		Changes: []Change{
			{DeviceID: "NEW1", List: ListAllowed, Op: OpAdd, Decision: Allow},
			{DeviceID: "OLD1", List: ListAllowed, Op: OpRemove, Decision: Block},
			{DeviceID: "OLD1", List: ListBlocked, Op: OpAdd, Decision: Block},
			{DeviceID: "BAD1", List: ListBlocked, Op: OpAdd, Decision: Block},
			{DeviceID: "GONE1", List: ListBlocked, Op: OpRemove, Decision: Allow},
			{DeviceID: "THEIRS", List: ListAllowed, Op: OpRemove, Decision: Default},
		},
	}
	// Since the plan was held: an administrator allowed BAD1, GONE1 left
	// the blocked list, THEIRS is no longer ours.
	mb := &mbox{smtp: "u@contoso.com", allowed: []string{"old1", "BAD1", "THEIRS"}, blocked: nil}
	owned := Owned{Allowed: []string{"old1"}, Blocked: []string{"GONE1"}}
	got, refused := reconcile(held, mb, owned)
	if want := (runspace.ListEdit{Add: []string{"NEW1"}, Remove: []string{"old1"}}); !slices.Equal(got.Allowed.Add, want.Add) || !slices.Equal(got.Allowed.Remove, want.Remove) {
		t.Errorf("allowed edit = %+v, want %+v", got.Allowed, want)
	}
	if want := []string{"OLD1"}; !slices.Equal(got.Blocked.Add, want) || len(got.Blocked.Remove) != 0 {
		t.Errorf("blocked edit = %+v, want add %v", got.Blocked, want)
	}
	if len(refused) != 2 || refused[0].DeviceID != "BAD1" || refused[1].DeviceID != "THEIRS" {
		t.Errorf("refused = %+v, want BAD1 (admin allowed) and THEIRS (not ours)", refused)
	}
	if !slices.Equal(got.NewOwned.Allowed, []string{"NEW1"}) || !slices.Equal(got.NewOwned.Blocked, []string{"GONE1", "OLD1"}) {
		t.Errorf("NewOwned = %+v", got.NewOwned)
	}
	if len(got.Changes) != 3 {
		t.Errorf("Changes = %+v, want the 3 applied", got.Changes)
	}
}

func TestPlanOrg(t *testing.T) {
	p := DefaultPolicy()
	p.OrgDefault = exchange.LevelQuarantine
	p.PlatformExceptions = []PlatformException{
		{Characteristic: exchange.CharDeviceType, Value: "WindowsMail", Action: ActionBlock},
		{Characteristic: exchange.CharDeviceType, Value: "windowsmail", Action: ActionAllow}, // shadowed
		{Characteristic: exchange.CharDeviceModel, Value: "Nine Work", Action: ActionQuarantine},
		{Characteristic: exchange.CharDeviceOS, Value: "Android 9", Action: ActionDefault},
		{Characteristic: exchange.CharUserAgent, Value: "Outlook", Action: ActionAllow},
	}
	insert := "Enroll"
	cfg := OrgConfig{DefaultAccessLevel: true, AdminMailRecipients: []string{"A@contoso.com"}, UserMailInsert: &insert, DeviceAccessRules: true}
	cur := orgView{
		settings: exchange.OrgSettings{DefaultAccessLevel: exchange.LevelAllow, AdminMailRecipients: []string{"a@contoso.com"}},
		rules: []exchange.DeviceAccessRule{
			{Name: "WindowsMail (DeviceType)", Characteristic: exchange.CharDeviceType, QueryString: "WindowsMail", AccessLevel: exchange.LevelAllow},
			{Name: "Nine Work (DeviceModel)", Characteristic: exchange.CharDeviceModel, QueryString: "Nine Work", AccessLevel: exchange.LevelBlock},
			{Name: "Old (DeviceType)", Characteristic: exchange.CharDeviceType, QueryString: "Old", AccessLevel: exchange.LevelBlock},
			{Name: "Admin (DeviceType)", Characteristic: exchange.CharDeviceType, QueryString: "Admin", AccessLevel: exchange.LevelBlock},
		},
	}
	op := planOrg(&p, cfg, cur, []string{"WindowsMail (DeviceType)", "Old (DeviceType)", "Vanished (DeviceType)"})
	if op.update.DefaultAccessLevel == nil || *op.update.DefaultAccessLevel != exchange.LevelQuarantine || !op.tighten {
		t.Errorf("DefaultAccessLevel update = %v, tighten %v", op.update.DefaultAccessLevel, op.tighten)
	}
	if op.update.AdminMailRecipients != nil {
		t.Errorf("recipients differ only in case, yet updated to %v", op.update.AdminMailRecipients)
	}
	if op.update.UserMailInsert == nil || *op.update.UserMailInsert != insert {
		t.Errorf("UserMailInsert update = %v", op.update.UserMailInsert)
	}
	var ops []string
	for _, r := range op.rules {
		ops = append(ops, r.op+" "+r.name+" "+string(r.to))
	}
	want := []string{"set WindowsMail (DeviceType) Block", "new Outlook (UserAgent) Allow", "remove Old (DeviceType) "}
	if !slices.Equal(ops, want) {
		t.Errorf("rule ops = %q, want %q", ops, want)
	}
	if len(op.conflicts) != 1 {
		t.Errorf("conflicts = %v, want the administrator's Nine Work rule", op.conflicts)
	}
	if slices.Contains(op.owned, "Vanished (DeviceType)") {
		t.Errorf("owned = %v: a rule gone from Exchange is still claimed", op.owned)
	}
	// Nothing declared: nothing to do.
	if op := planOrg(&p, OrgConfig{}, cur, nil); !op.empty() {
		t.Errorf("zero OrgConfig planned %+v", op)
	}
}

func TestOptionsValidate(t *testing.T) {
	base := func() Options {
		p := DefaultPolicy()
		return Options{Exchange: &exchange.Client{}, MDM: noSource{}, Policy: p, Guard: DefaultGuardConfig(), StateDir: t.TempDir()}
	}
	f := func(mutate func(*Options), want string) {
		t.Helper()
		o := base()
		mutate(&o)
		_, err := New(o)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New() error = %v, want one naming %q", err, want)
		}
	}
	f(func(o *Options) { o.MDM = nil }, "MDM")
	f(func(o *Options) { o.Exchange = nil }, "Exchange")
	f(func(o *Options) { o.StateDir = " " }, "StateDir")
	f(func(o *Options) { o.Workers = -1 }, "Workers")
	f(func(o *Options) { o.Guard.MinMDMRatio = 2 }, "guard.min_mdm_ratio")
	f(func(o *Options) { o.Policy.Enabled = true }, "policy.included_groups")
	long := string(make([]rune, 300))
	f(func(o *Options) { o.Org.UserMailInsert = &long }, "org.user_mail_insert")
}

// TestLastSuccessSurvivesRestart: the last-success gauges start from the
// state file, so a restart does not look like a connector that never
// synced.
func TestLastSuccessSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	full := time.Date(2026, 11, 27, 3, 0, 40, 0, time.UTC)
	st := NewState()
	st.UpdateMarks(func(w *Watermarks) { w.LastFull = full })
	if err := SaveState(dir, st); err != nil {
		t.Fatal(err)
	}
	set := metrics.NewSet()
	e, err := New(Options{Exchange: &exchange.Client{}, MDM: noSource{}, Policy: DefaultPolicy(), Guard: DefaultGuardConfig(),
		StateDir: dir, Metrics: set})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var b strings.Builder
	set.WritePrometheus(&b)
	wantFull := fmt.Sprintf(`easconnector_sync_last_success_timestamp_seconds{kind="full"} %d`, full.Unix())
	if !strings.Contains(b.String(), wantFull) {
		t.Errorf("metrics lack %q:\n%s", wantFull, b.String())
	}
	if !strings.Contains(b.String(), `easconnector_sync_last_success_timestamp_seconds{kind="quick"} 0`) {
		t.Errorf("quick sync never succeeded, but its gauge is not 0:\n%s", b.String())
	}
}

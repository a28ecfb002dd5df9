package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/runspace"
)

// killer passes calls through to Exchange until the k-th Set-CASMailbox
// has been applied; at that moment it copies the state directory as it is
// on disk, which is what a SIGKILL leaves behind (the page cache survives
// a process kill, buffers in the process do not), and from then on no
// call reaches Exchange any more: the process is gone.
type killer struct {
	pipeline.Exchange
	k            int64 // kill after the k-th Set-CASMailbox
	atRule       bool  // kill after the first New-ActiveSyncDeviceAccessRule
	n            atomic.Int64
	from, to     string
	once         sync.Once
	killed       chan struct{}
	copyErr      error
	cancelSyncFn context.CancelFunc
}

func (x *killer) dead(ctx context.Context) error {
	select {
	case <-x.killed:
		<-ctx.Done()
		return ctx.Err()
	default:
		return nil
	}
}

func (x *killer) SetCASMailbox(ctx context.Context, id string, a, b runspace.ListEdit) error {
	if err := x.dead(ctx); err != nil {
		return err
	}
	err := x.Exchange.SetCASMailbox(ctx, id, a, b)
	if x.n.Add(1) == x.k {
		x.kill()
	}
	if derr := x.dead(ctx); derr != nil {
		return derr
	}
	return err
}

func (x *killer) kill() {
	x.once.Do(func() {
		x.copyErr = copyDir(x.from, x.to)
		close(x.killed)
		x.cancelSyncFn()
	})
}

func (x *killer) SetOrgSettings(ctx context.Context, u exchange.OrgSettingsUpdate) error {
	if err := x.dead(ctx); err != nil {
		return err
	}
	return x.Exchange.SetOrgSettings(ctx, u)
}

func (x *killer) NewDeviceAccessRule(ctx context.Context, ch exchange.Characteristic, q string, l exchange.AccessLevel) error {
	if err := x.dead(ctx); err != nil {
		return err
	}
	err := x.Exchange.NewDeviceAccessRule(ctx, ch, q, l)
	if x.atRule {
		x.kill()
		return x.dead(ctx)
	}
	return err
}

func (x *killer) SetDeviceAccessRule(ctx context.Context, name string, l exchange.AccessLevel) error {
	if err := x.dead(ctx); err != nil {
		return err
	}
	return x.Exchange.SetDeviceAccessRule(ctx, name, l)
}

func (x *killer) RemoveDeviceAccessRule(ctx context.Context, name string) error {
	if err := x.dead(ctx); err != nil {
		return err
	}
	return x.Exchange.RemoveDeviceAccessRule(ctx, name)
}

// copyDir copies the regular files of from into to.
func copyDir(from, to string) error {
	if err := os.MkdirAll(to, 0o700); err != nil {
		return err
	}
	return filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // a temporary file renamed meanwhile
		}
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(to, rel)), 0o700); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), data, 0o600)
	})
}

// changeMDM turns every fourth compliant phone noncompliant and unenrols
// every seventh record, the same way on any copy of the population.
func changeMDM(p *population.Population) {
	kept := p.MDM[:0]
	for i, r := range p.MDM {
		if i%7 == 3 {
			continue
		}
		if r.ComplianceState == "compliant" && i%4 == 1 {
			r.ComplianceState = "noncompliant"
			r.LastSyncAt = p.Options.Now
		}
		kept = append(kept, r)
	}
	p.MDM = kept
}

// TestCrashMidApplyKeepsOwnership kills the engine (as SIGKILL would: what
// is on disk at that instant is all the next process has) after a number
// of writes Exchange applied, or right after it created a device access
// rule, restarts it over that state, syncs, changes the MDM and syncs,
// then drops the platform exception whose rule came first and syncs
// again: the lists and the rules must end as in a run without the kill.
// Before intent was recorded ahead of the writes, the entries written
// since the last save became the administrator's, so a phone that turned
// noncompliant kept its allow entry, and a rule created just before the
// kill was never removed.
func TestCrashMidApplyKeepsOwnership(t *testing.T) { forModes(t, testCrashMidApplyKeepsOwnership) }

func testCrashMidApplyKeepsOwnership(t *testing.T, mode string) {
	const devices = 300
	type result struct {
		lists  map[string][2][]string
		rules  []string
		writes int
	}
	end := func(kill int64, atRule bool) (result, *fixture) {
		// The MDM change revokes more than the blast-radius guard lets
		// through at this size; the guard is not what is tested here.
		open := func(o *pipeline.Options) { o.Guard.MaxNewBlocks = devices }
		f := newFixture(t, fixtureOptions{devices: devices, seed: 21, engine: open, mode: mode})
		var res result
		if kill == 0 && !atRule {
			res.writes = f.sync(pipeline.SyncFull).Writes
		} else {
			crashDir := filepath.Join(t.TempDir(), "after-kill")
			ctx, cancel := context.WithCancel(testCtx(t, 3*time.Minute))
			k := &killer{Exchange: f.ex, k: kill, atRule: atRule, from: f.dir, to: crashDir, killed: make(chan struct{}), cancelSyncFn: cancel}
			f.opts.engine = func(o *pipeline.Options) { open(o); o.Exchange = k }
			eng := f.newEngine(nil)
			_, _ = eng.Sync(ctx, pipeline.SyncRequest{Kind: pipeline.SyncFull})
			select {
			case <-k.killed:
			default:
				t.Fatalf("the sync ended before the kill (after %d writes, at a rule: %v)", kill, atRule)
			}
			if k.copyErr != nil {
				t.Fatal(k.copyErr)
			}
			// The restart: a new engine over what the kill left.
			f.dir, f.opts.engine = crashDir, open
			f.newEngine(nil)
			rep := f.sync(pipeline.SyncFull)
			if rep.Recovered == 0 {
				t.Errorf("the restart reconciled no pending write")
			}
		}
		f.graph.Update(changeMDM)
		f.clock.Advance(10 * time.Minute)
		f.sync(pipeline.SyncFull)
		f.policy.PlatformExceptions = f.policy.PlatformExceptions[1:]
		f.newEngine(nil)
		f.sync(pipeline.SyncFull)
		if rep := f.sync(pipeline.SyncFull); rep.Writes != 0 || len(rep.Org) != 0 {
			t.Errorf("a further full sync wrote %d mailboxes and %v, want nothing", rep.Writes, rep.Org)
		}
		res.lists = f.lists()
		for _, r := range f.sim.Org().Rules() {
			res.rules = append(res.rules, fmt.Sprintf("%s=%s", r.Name, r.AccessLevel))
		}
		slices.Sort(res.rules)
		return res, f
	}
	want, ref := end(0, false)
	ref.checkAccess()
	if want.writes < 20 {
		t.Fatalf("the first sync wrote %d mailboxes; the test needs more", want.writes)
	}
	f := func(kill int64, atRule bool) {
		t.Helper()
		got, fx := end(kill, atRule)
		what := fmt.Sprintf("kill after %d of %d writes", kill, want.writes)
		if atRule {
			what = "kill after the first rule"
		}
		bad := 0
		for dn, w := range want.lists {
			if g := got.lists[dn]; fmt.Sprint(g) != fmt.Sprint(w) {
				if bad++; bad <= 5 {
					t.Errorf("%s: %s lists allowed %v blocked %v, want %v %v", what, dn, g[0], g[1], w[0], w[1])
				}
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d mailboxes differ from the run without the kill", what, bad)
		}
		if !slices.Equal(got.rules, want.rules) {
			t.Errorf("%s: device access rules %v, want %v as without the kill", what, got.rules, want.rules)
		}
		fx.checkAccess()
	}
	f(int64(want.writes/2), false)
	if mode == runspace.ModeRemoting {
		return // the WinRS kind: one kill point keeps both kinds covered within make test's budget
	}
	f(1, false)
	f(int64(want.writes-1), false)
	f(0, true)
}

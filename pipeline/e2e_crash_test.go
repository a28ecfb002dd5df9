package pipeline_test

import (
	"context"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
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
	k            int64
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
		x.once.Do(func() {
			x.copyErr = copyDir(x.from, x.to)
			close(x.killed)
			x.cancelSyncFn()
		})
	}
	if derr := x.dead(ctx); derr != nil {
		return derr
	}
	return err
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
	return x.Exchange.NewDeviceAccessRule(ctx, ch, q, l)
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
// of writes Exchange applied, restarts it over that state, syncs, changes
// the MDM and syncs again: the lists must end as in a run without the
// kill. Before intent was recorded ahead of the writes, the entries
// written since the last save became the administrator's, so a phone
// that turned noncompliant kept its allow entry.
func TestCrashMidApplyKeepsOwnership(t *testing.T) {
	const devices = 300
	end := func(kill int64) (map[string][2][]string, *fixture, int) {
		// The MDM change revokes more than the blast-radius guard lets
		// through at this size; the guard is not what is tested here.
		open := func(o *pipeline.Options) { o.Guard.MaxNewBlocks = devices }
		f := newFixture(t, fixtureOptions{devices: devices, seed: 21, engine: open})
		var writes int
		if kill == 0 {
			writes = f.sync(pipeline.SyncFull).Writes
		} else {
			crashDir := filepath.Join(t.TempDir(), "after-kill")
			ctx, cancel := context.WithCancel(testCtx(t, 3*time.Minute))
			k := &killer{Exchange: f.ex, k: kill, from: f.dir, to: crashDir, killed: make(chan struct{}), cancelSyncFn: cancel}
			f.opts.engine = func(o *pipeline.Options) { open(o); o.Exchange = k }
			eng := f.newEngine(nil)
			_, _ = eng.Sync(ctx, pipeline.SyncRequest{Kind: pipeline.SyncFull})
			select {
			case <-k.killed:
			default:
				t.Fatalf("the sync made fewer than %d writes", kill)
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
		if rep := f.sync(pipeline.SyncFull); rep.Writes != 0 {
			t.Errorf("a further full sync wrote %d mailboxes, want none", rep.Writes)
		}
		return f.lists(), f, writes
	}
	want, ref, writes := end(0)
	ref.checkAccess()
	if writes < 20 {
		t.Fatalf("the first sync wrote %d mailboxes; the test needs more", writes)
	}
	for _, kill := range []int64{1, int64(writes / 2), int64(writes - 1)} {
		got, f, _ := end(kill)
		bad := 0
		for dn, w := range want {
			if g := got[dn]; !maps.EqualFunc(map[int][]string{0: g[0], 1: g[1]}, map[int][]string{0: w[0], 1: w[1]}, func(a, b []string) bool {
				return strings.Join(a, ",") == strings.Join(b, ",")
			}) {
				if bad++; bad <= 5 {
					t.Errorf("kill after %d writes: %s lists allowed %v blocked %v, want %v %v", kill, dn, g[0], g[1], w[0], w[1])
				}
			}
		}
		if bad > 0 {
			t.Errorf("kill after %d of %d writes: %d mailboxes differ from the run without the kill", kill, writes, bad)
		}
		f.checkAccess()
	}
}

//go:build !windows

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/runspace"
)

// The crash tests run the real easconnector binary against exsim and
// graphsim (in this process, on loopback), kill it with SIGKILL in the
// middle of its first full sync's writes, after a random number of
// Set-CASMailbox calls Exchange applied, restart it, change the MDM (some
// compliant phones turn noncompliant, some unenrol) and sync again. Every
// run must end exactly as a run of the same fleet without the kill: the
// same lists on every mailbox and the same access for every device. And
// every list entry the connector wrote to Exchange must have an intent
// line and a done or recovered line in the audit log.
//
// Before intent was recorded ahead of the writes, the entries Exchange had
// applied since the last periodic save were nobody's after the restart,
// hence the administrator's: a phone among them that turned noncompliant
// kept its allow entry.

// TestCrash is the short version, part of `make test`.
func TestCrash(t *testing.T) {
	bin := buildBinary(t)
	crashRuns(t, bin, []crashSize{{devices: 60, runs: 4}})
}

// TestCrashLoad is the long version behind `make loadtest`: 24 kills over
// three fleet sizes.
func TestCrashLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("long crash run: make loadtest")
	}
	bin := buildBinary(t)
	crashRuns(t, bin, []crashSize{{devices: 100, runs: 8}, {devices: 400, runs: 8}, {devices: 1500, runs: 8}})
}

type crashSize struct{ devices, runs int }

// endState is every mailbox's lists and every device's access, by
// mailbox DN and device id, as exsim holds them.
type endState map[string]string

func (f *fleet) endState(t *testing.T) endState {
	t.Helper()
	org := f.sim.Org()
	mbs, _ := org.Mailboxes(0, 0)
	out := endState{}
	for _, mb := range mbs {
		a, b := slices.Sorted(slices.Values(mb.ActiveSyncAllowedDeviceIDs)), slices.Sorted(slices.Values(mb.ActiveSyncBlockedDeviceIDs))
		out["lists "+mb.DistinguishedName] = fmt.Sprintf("allowed %v blocked %v", a, b)
		devs, _, err := org.Devices(mb.DistinguishedName, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range devs {
			st, reason := org.Access(mb.DistinguishedName, d.DeviceId)
			out["access "+mb.PrimarySmtpAddress+" "+d.DeviceId] = fmt.Sprintf("%s (%s)", st, reason)
		}
	}
	return out
}

// changeFleetMDM turns every fourth compliant phone noncompliant and
// unenrols every seventh record, the same way in any copy of the fleet.
func changeFleetMDM(p *population.Population) {
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

// binSync runs `easconnector sync --full` as a process and fails the test
// unless it exits 0.
func binSync(t *testing.T, bin string, f *fleet) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "sync", "--full", "--config", f.config).CombinedOutput()
	if err != nil {
		t.Fatalf("easconnector sync --full: %v\n%s", err, out)
	}
}

func crashRuns(t *testing.T, bin string, sizes []crashSize) {
	now := time.Now().UTC().Truncate(time.Minute)
	seed := uint64(time.Now().UnixNano())
	t.Logf("kill offsets from seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	for _, sz := range sizes {
		popts := population.Options{Devices: sz.devices, Seed: 41, Now: now}
		opts := fleetOptions{pop: popts, maxNewBlocks: 100_000, runspaces: 4}
		// The run without the kill.
		ref := startFleet(t, opts)
		binSync(t, bin, ref)
		writes := ref.sim.Counters().Cmdlets["Set-CASMailbox"]
		ref.graph.Update(changeFleetMDM)
		binSync(t, bin, ref)
		want := ref.endState(t)
		if writes < 10 {
			t.Fatalf("%d devices: the first sync wrote %d mailboxes; too few to kill it in the middle", sz.devices, writes)
		}
		for range sz.runs {
			kill := 1 + rng.Uint64N(writes-1)
			t.Run(fmt.Sprintf("devices=%d/kill=%d", sz.devices, kill), func(t *testing.T) {
				crashRun(t, bin, opts, kill, writes, want)
			})
		}
	}
}

func crashRun(t *testing.T, bin string, opts fleetOptions, kill, writes uint64, want endState) {
	f := startFleet(t, opts)
	p := startProc(t, bin, f)
	p.waitWrites(t, f, kill)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	killedAt := f.sim.Counters().Cmdlets["Set-CASMailbox"]
	st, _, err := pipeline.LoadState(f.state)
	if err != nil {
		t.Fatalf("state after the kill: %v", err)
	}
	pending := len(st.PendingWrites())
	binSync(t, bin, f) // the restart
	f.graph.Update(changeFleetMDM)
	binSync(t, bin, f)
	got := f.endState(t)
	t.Logf("killed after %d of %d writes (%d applied by Exchange, %d pending in the state)", kill, writes, killedAt, pending)

	bad := 0
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got[k] != want[k] {
			if bad++; bad <= 8 {
				t.Errorf("%s: %s, want %s as without the kill", k, got[k], want[k])
			}
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d mailboxes and devices, want %d", len(got), len(want))
	}
	if bad > 0 {
		t.Errorf("%d of %d lists and devices differ from the run without the kill", bad, len(want))
	}
	checkWritesAudited(t, f)
}

// checkWritesAudited checks that every list entry a Set-CASMailbox that
// Exchange applied added or removed has an intent line and then a done
// line or a recovered line saying it took effect.
func checkWritesAudited(t *testing.T, f *fleet) {
	t.Helper()
	smtp := map[string]string{}
	mbs, _ := f.sim.Org().Mailboxes(0, 0)
	for _, mb := range mbs {
		smtp[strings.ToLower(mb.Guid)] = strings.ToLower(mb.PrimarySmtpAddress)
	}
	type key struct{ mailbox, device, list, to string }
	phases := map[key][]string{}
	files, err := pipeline.AuditFiles(f.state)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		fh, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			e, err := pipeline.ParseAuditLine(sc.Bytes())
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if e.Setting != "" {
				continue
			}
			k := key{strings.ToLower(e.Mailbox), strings.ToLower(e.Device), string(e.List), e.To}
			phases[k] = append(phases[k], e.Phase)
		}
		fh.Close()
	}
	missing := 0
	for _, c := range f.sim.CallLog(0, 0) {
		if c.Cmd != "Set-CASMailbox" || c.Result != "ok" {
			continue
		}
		id, _ := c.Args["Identity"].(string)
		mb := smtp[strings.ToLower(id)]
		for list, arg := range map[pipeline.List]string{pipeline.ListAllowed: "ActiveSyncAllowedDeviceIDs", pipeline.ListBlocked: "ActiveSyncBlockedDeviceIDs"} {
			raw, _ := json.Marshal(c.Args[arg])
			var ed runspace.ListEdit
			if c.Args[arg] != nil {
				if err := json.Unmarshal(raw, &ed); err != nil {
					t.Fatalf("Set-CASMailbox %s %s = %s: %v", id, arg, raw, err)
				}
			}
			check := func(dev, to string) {
				ph := phases[key{mb, strings.ToLower(dev), string(list), to}]
				if !slices.Contains(ph, pipeline.PhaseIntent) || (!slices.Contains(ph, pipeline.PhaseDone) && !slices.Contains(ph, pipeline.PhaseRecovered)) {
					if missing++; missing <= 8 {
						t.Errorf("Exchange applied %s %s on %s's %s list, but the audit log has %v for it; want intent, then done or recovered", dev, to, mb, list, ph)
					}
				}
			}
			for _, dev := range ed.Add {
				check(dev, pipeline.Present)
			}
			for _, dev := range ed.Remove {
				check(dev, pipeline.Absent)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d list entries written without their audit lines", missing)
	}
}

package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/mdm"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/runspace"
)

// The baseline is what an Exchange administrator's script does without a
// connector (the pattern of the scripts that replaced the retired Intune
// Exchange connector): one remote PowerShell session; read every device
// (Get-MobileDevice -ResultSize Unlimited) and the whole MDM every run;
// then, device by device, read its mailbox (Get-CASMailbox -Identity) and
// send one Set-CASMailbox for that device when its lists are not as the
// MDM says. It decides as the connector's policy does for the common rows
// (in scope, enrolled compliant → allow; enrolled noncompliant → block;
// anything else left alone), through the same exchange package, against
// the same simulator, fleet and latency profile.

// scriptStats is what one run of the script cost.
type scriptStats struct {
	elapsed        time.Duration
	cmdlets, setCA uint64
}

// runScript runs the baseline once on ex (a one-session pool) and src.
func (t *bed) runScript(ex *exchange.Client, src *mdm.Graph) scriptStats {
	t.b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	t.sim.ResetCounters()
	start := time.Now()
	snap, err := src.Snapshot(ctx, []string{t.pop.Included.ID, t.pop.Excluded.ID})
	if err != nil {
		t.b.Fatalf("script: MDM: %v", err)
	}
	inScope := map[string]bool{}
	for _, m := range snap.Groups[t.pop.Included.ID] {
		inScope[strings.ToLower(m.ID)] = true
	}
	for _, m := range snap.Groups[t.pop.Excluded.ID] {
		delete(inScope, strings.ToLower(m.ID))
	}
	records := make(map[string]mdm.Record, len(snap.Records))
	for _, r := range snap.Records {
		records[strings.ToLower(r.EASDeviceID)] = r
	}
	var devices []exchange.MobileDevice
	if err := ex.MobileDevices(ctx, exchange.DeviceFilter{}, func(d exchange.MobileDevice, err error) error {
		if err == nil {
			devices = append(devices, d)
		}
		return nil
	}); err != nil {
		t.b.Fatalf("script: Get-MobileDevice: %v", err)
	}
	for _, d := range devices {
		r, ok := records[strings.ToLower(d.DeviceId)]
		if !ok || !inScope[strings.ToLower(r.UserID)] {
			continue
		}
		var allow bool
		switch r.Compliance {
		case mdm.ComplianceCompliant, mdm.ComplianceInGracePeriod:
			allow = true
		case mdm.ComplianceNoncompliant, mdm.ComplianceConflict, mdm.ComplianceError:
		default:
			continue
		}
		dn, err := d.MailboxDN()
		if err != nil {
			continue
		}
		var mb exchange.CASMailbox
		if err := ex.CASMailboxes(ctx, []string{dn}, func(m exchange.CASMailbox) error { mb = m; return nil }); err != nil {
			t.b.Fatalf("script: Get-CASMailbox %s: %v", dn, err)
		}
		in := func(list []string) bool {
			return slices.ContainsFunc(list, func(s string) bool { return strings.EqualFold(s, d.DeviceId) })
		}
		var allowed, blocked runspace.ListEdit
		if allow {
			if in(mb.ActiveSyncAllowedDeviceIDs) && !in(mb.ActiveSyncBlockedDeviceIDs) {
				continue
			}
			allowed.Add = []string{d.DeviceId}
			if in(mb.ActiveSyncBlockedDeviceIDs) {
				blocked.Remove = []string{d.DeviceId}
			}
		} else {
			if in(mb.ActiveSyncBlockedDeviceIDs) && !in(mb.ActiveSyncAllowedDeviceIDs) {
				continue
			}
			blocked.Add = []string{d.DeviceId}
			if in(mb.ActiveSyncAllowedDeviceIDs) {
				allowed.Remove = []string{d.DeviceId}
			}
		}
		if err := ex.SetCASMailbox(ctx, dn, allowed, blocked); err != nil {
			t.b.Fatalf("script: Set-CASMailbox %s: %v", dn, err)
		}
	}
	st := scriptStats{elapsed: time.Since(start)}
	c := t.sim.Counters()
	for _, n := range c.Cmdlets {
		st.cmdlets += n
	}
	st.setCA = c.Cmdlets["Set-CASMailbox"]
	return st
}

// scriptClient opens the script's one session against the bed's simulator.
func (t *bed) scriptClient() *exchange.Client {
	t.b.Helper()
	pool, err := runspace.NewPool(runspace.Options{
		Servers: t.sim.Hosts(), Port: t.sim.Port(), User: exsim.DefaultUser, Password: secret.New(exsim.DefaultPassword),
		PlainHTTP: true, Auth: runspace.AuthBasic, Size: 1, ConnectTimeout: time.Minute, RequestTimeout: 30 * time.Minute,
	})
	if err != nil {
		t.b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pool.Start(ctx); err != nil {
		t.b.Fatalf("script pool: %v", err)
	}
	t.b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = pool.Close(ctx)
	})
	return exchange.New(pool)
}

// BenchmarkBaseline times, side by side on the same fleet and latency
// profile, a first sync by the baseline script (one session) and by
// easconnector (the engine with runspaces sessions), each from empty lists,
// and reports the connector's speedup over the script (script-s ÷
// connector-s). ns/op covers both.
func BenchmarkBaseline(b *testing.B) {
	for _, devices := range []int{1000, 5000, 20_000} {
		for _, profile := range []string{exsim.ProfileZero, exsim.ProfileLab} {
			if devices > 1000 && profile == exsim.ProfileLab && !asked(devices) {
				continue // the script alone takes most of an hour at 5,000 lab devices
			}
			name := fmt.Sprintf("devices=%d/runspaces=8/profile=%s", devices, profile)
			b.Run(name, func(b *testing.B) {
				skipUnlessAsked(b, devices)
				benchBaseline(b, devices, 8, profile)
			})
		}
	}
}

func benchBaseline(b *testing.B, devices, size int, profile string) {
	t := newBed(b, devices, size, profile)
	ex := t.scriptClient()
	var script, conn time.Duration
	var scriptCmdlets, scriptWrites, connCmdlets, connWrites uint64
	n := 0
	for b.Loop() {
		b.StopTimer()
		t.reset()
		b.StartTimer()
		s := t.runScript(ex, t.src)
		if s.setCA == 0 {
			b.Fatal("the script wrote nothing: the fleet should need most mailboxes written")
		}
		b.StopTimer()
		t.reset()
		b.StartTimer()
		st := t.timedSync(pipeline.SyncFull)
		n++
		script += s.elapsed
		conn += st.elapsed
		scriptCmdlets += s.cmdlets
		scriptWrites += s.setCA
		connCmdlets += st.cmdlets
		connWrites += st.setCAS
	}
	f := float64(n)
	b.ReportMetric(script.Seconds()/f, "script-s")
	b.ReportMetric(conn.Seconds()/f, "connector-s")
	b.ReportMetric(script.Seconds()/conn.Seconds(), "speedup")
	b.ReportMetric(float64(scriptCmdlets)/f, "script-cmdlets")
	b.ReportMetric(float64(scriptWrites)/f, "script-writes")
	b.ReportMetric(float64(connCmdlets)/f, "connector-cmdlets")
	b.ReportMetric(float64(connWrites)/f, "connector-writes")
}

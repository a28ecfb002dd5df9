package exchange_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/runspace"
)

// The runspace pool is the production Runner; a single session is one too.
var (
	_ exchange.Runner = (*runspace.Pool)(nil)
	_ exchange.Runner = (*runspace.Session)(nil)
)

// startSim starts exsim with pop and a started pool of size sessions
// against it, both closed when tb ends.
func startSim(tb testing.TB, pop *population.Population, size int) (*exsim.Sim, *exchange.Client) {
	return startSimMode(tb, pop, size, runspace.ModeRemoting)
}

// forModes runs an integration test over both session kinds: WinRS
// (remoting) and PSRP to exsim's /PowerShell/ endpoint.
func forModes(t *testing.T, test func(t *testing.T, mode string)) {
	for _, mode := range []string{runspace.ModeRemoting, runspace.ModePSRP} {
		t.Run(mode, func(t *testing.T) { test(t, mode) })
	}
}

// startSimMode is startSim with the pool's session kind.
func startSimMode(tb testing.TB, pop *population.Population, size int, mode string) (*exsim.Sim, *exchange.Client) {
	tb.Helper()
	sim, err := exsim.Start(exsim.Options{Population: pop, Listeners: 1, Profile: "zero", Quiet: true})
	if err != nil {
		tb.Fatalf("exsim.Start: %v", err)
	}
	tb.Cleanup(sim.Close)
	pool, err := runspace.NewPool(runspace.Options{
		Servers: sim.Hosts(), Port: sim.Port(), Auth: runspace.AuthBasic, PlainHTTP: true,
		User: exsim.DefaultUser, Password: secret.New(exsim.DefaultPassword),
		Parallel: true, Size: size, ConnectTimeout: 20 * time.Second, RequestTimeout: 10 * time.Minute, Mode: mode,
	})
	if err != nil {
		tb.Fatalf("NewPool: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pool.Start(ctx); err != nil {
		tb.Fatalf("pool.Start: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := pool.Close(ctx); err != nil {
			tb.Errorf("pool.Close: %v", err)
		}
	})
	return sim, exchange.New(pool)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestIntegration reads and writes through the real pool, WinRM client and
// WS-Man server against the simulated organization.
func TestIntegration(t *testing.T) { forModes(t, testIntegration) }

func testIntegration(t *testing.T, mode string) {
	pop := population.Generate(population.Options{Devices: 300, Seed: 7})
	sim, c := startSimMode(t, pop, 4, mode)
	ctx := testCtx(t)

	// Every device arrives, valid, with a resolvable mailbox.
	var devs []exchange.MobileDevice
	err := c.MobileDevices(ctx, exchange.DeviceFilter{}, func(d exchange.MobileDevice, err error) error {
		if err != nil {
			t.Errorf("device %s: %v", d.Identity, err)
		}
		devs = append(devs, d)
		return nil
	})
	if err != nil {
		t.Fatalf("MobileDevices: %v", err)
	}
	if len(devs) != len(pop.Devices) {
		t.Fatalf("MobileDevices returned %d devices, want %d", len(devs), len(pop.Devices))
	}
	if n, err := c.CountMobileDevices(ctx, 100); n != 100 || err != nil {
		t.Errorf("CountMobileDevices(100) = %d, %v, want 100", n, err)
	}
	if n, err := c.CountMobileDevices(ctx, 0); n != len(pop.Devices) || err != nil {
		t.Errorf("CountMobileDevices(0) = %d, %v, want %d", n, err, len(pop.Devices))
	}
	dns := map[string]bool{}
	for _, d := range devs {
		dn, err := d.MailboxDN()
		if err != nil {
			t.Fatalf("MailboxDN(%s): %v", d.DistinguishedName, err)
		}
		if _, err := sim.Org().Mailbox(dn); err != nil {
			t.Errorf("MailboxDN(%s) = %s, not a mailbox: %v", d.DistinguishedName, dn, err)
		}
		dns[dn] = true
	}

	// The CAS mailboxes of those DNs, in batches, each exactly once.
	ids := slices.Sorted(func(yield func(string) bool) {
		for dn := range dns {
			if !yield(dn) {
				return
			}
		}
	})
	got := map[string]exchange.CASMailbox{}
	if err := c.CASMailboxes(ctx, ids, func(m exchange.CASMailbox) error {
		if _, dup := got[m.DistinguishedName]; dup {
			t.Errorf("mailbox %s delivered twice", m.DistinguishedName)
		}
		got[m.DistinguishedName] = m
		return nil
	}); err != nil {
		t.Fatalf("CASMailboxes: %v", err)
	}
	if len(got) != len(ids) {
		t.Errorf("CASMailboxes returned %d mailboxes, want %d", len(got), len(ids))
	}
	all := 0
	if err := c.CASMailboxes(ctx, nil, func(exchange.CASMailbox) error { all++; return nil }); err != nil || all != len(ids) {
		t.Errorf("CASMailboxes(nil) = %d mailboxes, %v; want %d", all, err, len(ids))
	}

	// A list edit lands and reads back; Exchange's access state follows.
	d := devs[0]
	dn, _ := d.MailboxDN()
	if err := c.SetCASMailbox(ctx, dn, runspace.ListEdit{}, runspace.ListEdit{Add: []string{d.DeviceId}}); err != nil {
		t.Fatalf("SetCASMailbox: %v", err)
	}
	var after exchange.CASMailbox
	if err := c.CASMailboxes(ctx, []string{dn}, func(m exchange.CASMailbox) error { after = m; return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(after.ActiveSyncBlockedDeviceIDs, d.DeviceId) {
		t.Errorf("blocked list after SetCASMailbox = %v, want it to hold %s", after.ActiveSyncBlockedDeviceIDs, d.DeviceId)
	}
	var state exchange.AccessState
	if err := c.MobileDevices(ctx, exchange.DeviceFilter{Mailbox: dn}, func(m exchange.MobileDevice, err error) error {
		if m.DeviceId == d.DeviceId {
			state = m.DeviceAccessState
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if state != exchange.AccessBlocked {
		t.Errorf("device %s after blocking: state %s, want Blocked", d.DeviceId, state)
	}

	// Organization settings.
	q := exchange.LevelQuarantine
	if err := c.SetOrgSettings(ctx, exchange.OrgSettingsUpdate{DefaultAccessLevel: &q,
		AdminMailRecipients: []string{"eas-admins@contoso.com"}, UserMailInsert: new("Enroll at https://portal.manage.microsoft.com")}); err != nil {
		t.Fatalf("SetOrgSettings: %v", err)
	}
	org, err := c.OrgSettings(ctx)
	if err != nil || org.DefaultAccessLevel != q || !slices.Equal(org.AdminMailRecipients, []string{"eas-admins@contoso.com"}) ||
		org.UserMailInsert != "Enroll at https://portal.manage.microsoft.com" {
		t.Errorf("OrgSettings() = %+v, %v", org, err)
	}
	if err := c.SetOrgSettings(ctx, exchange.OrgSettingsUpdate{AdminMailRecipients: []string{}, UserMailInsert: new("")}); err != nil {
		t.Fatalf("SetOrgSettings(clear): %v", err)
	}
	if org, err = c.OrgSettings(ctx); err != nil || len(org.AdminMailRecipients) != 0 || org.UserMailInsert != "" {
		t.Errorf("OrgSettings() after clearing = %+v, %v", org, err)
	}

	// Device access rules: create, change, remove.
	if err := c.NewDeviceAccessRule(ctx, exchange.CharDeviceType, "WindowsMail", exchange.LevelBlock); err != nil {
		t.Fatalf("NewDeviceAccessRule: %v", err)
	}
	rules, err := c.DeviceAccessRules(ctx)
	if err != nil || len(rules) != 1 || rules[0].QueryString != "WindowsMail" || rules[0].AccessLevel != exchange.LevelBlock {
		t.Fatalf("DeviceAccessRules() = %+v, %v", rules, err)
	}
	if err := c.SetDeviceAccessRule(ctx, rules[0].Identity, exchange.LevelAllow); err != nil {
		t.Fatalf("SetDeviceAccessRule: %v", err)
	}
	if rules, err = c.DeviceAccessRules(ctx); err != nil || len(rules) != 1 || rules[0].AccessLevel != exchange.LevelAllow {
		t.Errorf("rule after SetDeviceAccessRule = %+v, %v", rules, err)
	}
	if err := c.RemoveDeviceAccessRule(ctx, rules[0].Identity); err != nil {
		t.Fatalf("RemoveDeviceAccessRule: %v", err)
	}
	if rules, err = c.DeviceAccessRules(ctx); err != nil || len(rules) != 0 {
		t.Errorf("rules after RemoveDeviceAccessRule = %+v, %v", rules, err)
	}
	var remote *runspace.RemoteError
	if err := c.RemoveDeviceAccessRule(ctx, "WindowsMail (DeviceType)"); !errors.As(err, &remote) {
		t.Errorf("RemoveDeviceAccessRule(gone) = %v, want a RemoteError", err)
	}

	servers, err := c.ExchangeServers(ctx)
	if err != nil || len(servers) != 1 || servers[0].Fqdn != sim.Hosts()[0] || !slices.Contains(servers[0].ServerRole, "ClientAccess") {
		t.Errorf("ExchangeServers() = %+v, %v", servers, err)
	}
	cas, err := c.ClientAccessServers(ctx)
	if err != nil || len(cas) != 1 || cas[0].Fqdn != sim.Hosts()[0] {
		t.Errorf("ClientAccessServers() = %+v, %v", cas, err)
	}
	checkCallLog(t, sim, nil)
}

// TestIntegrationFilter: the OPATH filter, evaluated by the simulator, and
// the exact client-side bound select the same devices as a direct scan.
func TestIntegrationFilter(t *testing.T) { forModes(t, testIntegrationFilter) }

func testIntegrationFilter(t *testing.T, mode string) {
	now := time.Now().UTC().Truncate(time.Minute)
	pop := population.Generate(population.Options{Devices: 200, Seed: 3, Now: now})
	sim, c := startSimMode(t, pop, 2, mode)
	ctx := testCtx(t)
	// Quarantine by default, so that devices nobody listed are Quarantined.
	q := exchange.LevelQuarantine
	if err := c.SetOrgSettings(ctx, exchange.OrgSettingsUpdate{DefaultAccessLevel: &q}); err != nil {
		t.Fatal(err)
	}
	// Exchange stores a device's state at its requests: the phones connect
	// under the new default before their state is read.
	sim.Org().ContactAll()
	all, _, err := sim.Org().Devices("", 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	times := make([]time.Time, 0, len(all))
	for _, d := range all {
		times = append(times, d.FirstSyncTime)
	}
	slices.SortFunc(times, time.Time.Compare)
	after := times[len(times)/2]
	states := []exchange.AccessState{exchange.AccessQuarantined, exchange.AccessDeviceDiscovery}
	want := map[string]bool{}
	for _, d := range all {
		if d.FirstSyncTime.After(after) && slices.Contains(states, d.DeviceAccessState) {
			want[d.Identity] = true
		}
	}
	got := map[string]bool{}
	err = c.MobileDevices(ctx, exchange.DeviceFilter{FirstSyncAfter: after, States: states}, func(d exchange.MobileDevice, err error) error {
		got[d.Identity] = true
		return err
	})
	if err != nil {
		t.Fatalf("MobileDevices(filter): %v", err)
	}
	if len(want) == 0 || !mapsEqual(got, want) {
		t.Errorf("MobileDevices(filter) = %d devices, want %d (of %d)", len(got), len(want), len(all))
	}
	log := sim.CallLog(0, 100)
	if f, _ := log[len(log)-1].Args["Filter"].(string); !strings.HasPrefix(f, "FirstSyncTime -gt '") {
		t.Errorf("last call's filter = %q", f)
	}
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// hostile strings a phone can send as DeviceId, DeviceType, model or user
// agent.
var hostile = []string{
	"'; Remove-Mailbox x -Confirm:$false; '",
	"$(Remove-Mailbox x -Confirm:$false)",
	"`$(calc)`n`0",
	"Appl\u2018;Remove-Mailbox x\u2019",
	"line1\nline2\r\nline3",
	"nul\x00byte",
	"\"; & calc.exe; \"",
	strings.Repeat("A", 10<<10),
}

// TestIntegrationInjection: devices whose phone-chosen strings are hostile
// are read back byte for byte, flagged when their DeviceId is invalid, never
// sent back, and the simulator sees nothing but allowlisted cmdlets.
func TestIntegrationInjection(t *testing.T) { forModes(t, testIntegrationInjection) }

func testIntegrationInjection(t *testing.T, mode string) {
	pop := population.Generate(population.Options{Devices: 20, Seed: 11})
	sim, c := startSimMode(t, pop, 2, mode)
	ctx := testCtx(t)
	org := sim.Org()

	// A mailbox whose name needs RFC 4514 escaping and OPATH quoting.
	mb, err := org.AddMailbox(exsim.MailboxSpec{Name: "O’Brien, Pat ‘Q’ $(x)", PrimarySmtpAddress: "pat.obrien@contoso.com"})
	if err != nil {
		t.Fatalf("AddMailbox: %v", err)
	}
	type spec struct {
		id, typ, model, ua string
		validID            bool
	}
	var specs []spec
	for i, h := range hostile {
		specs = append(specs,
			spec{id: h, typ: fmt.Sprintf("T%d", i), validID: false},
			spec{id: fmt.Sprintf("GOODID%d", i), typ: h, model: h, ua: h, validID: true},
		)
	}
	for _, s := range specs {
		if _, err := org.AddDevice(exsim.DeviceSpec{Mailbox: mb.Identity, DeviceId: s.id, DeviceType: s.typ,
			DeviceModel: s.model, DeviceUserAgent: s.ua}); err != nil {
			t.Fatalf("AddDevice(%.40q): %v", s.id, err)
		}
	}
	mailboxesBefore, _ := org.Mailboxes(0, 1<<20)

	seen := 0
	var toBlock []string
	err = c.MobileDevices(ctx, exchange.DeviceFilter{Mailbox: mb.DistinguishedName}, func(d exchange.MobileDevice, derr error) error {
		i := slices.IndexFunc(specs, func(s spec) bool { return s.id == d.DeviceId })
		if i < 0 {
			t.Errorf("device %.60q came back altered", d.DeviceId)
			return nil
		}
		seen++
		s := specs[i]
		if d.DeviceType != s.typ || d.DeviceModel != s.model || d.DeviceUserAgent != s.ua {
			t.Errorf("device %.40q: strings altered in transit", s.id)
		}
		switch {
		case s.validID && derr != nil:
			t.Errorf("device %.40q: %v, want no error", s.id, derr)
		case !s.validID && !errors.Is(derr, exchange.ErrInvalidDeviceID):
			t.Errorf("device %.40q: error %v, want ErrInvalidDeviceID", s.id, derr)
		case !s.validID && !strings.Contains(derr.Error(), "ExchangeActiveSyncDevices"):
			t.Errorf("device %.40q: error %v does not name the device", s.id, derr)
		}
		dn, err := d.MailboxDN()
		if err != nil || dn != mb.DistinguishedName {
			t.Errorf("device %.40q: MailboxDN() = %q, %v, want %q", s.id, dn, err, mb.DistinguishedName)
		}
		if derr == nil {
			toBlock = append(toBlock, d.DeviceId)
		} else if err := c.SetCASMailbox(ctx, dn, runspace.ListEdit{}, runspace.ListEdit{Add: []string{d.DeviceId}}); !errors.Is(err, exchange.ErrInvalidDeviceID) {
			t.Errorf("SetCASMailbox(%.40q) = %v, want ErrInvalidDeviceID", s.id, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("MobileDevices: %v", err)
	}
	if seen != len(specs) {
		t.Errorf("read %d hostile devices, want %d", seen, len(specs))
	}
	if err := c.SetCASMailbox(ctx, mb.DistinguishedName, runspace.ListEdit{}, runspace.ListEdit{Add: toBlock}); err != nil {
		t.Fatalf("SetCASMailbox(valid ids): %v", err)
	}
	var got exchange.CASMailbox
	if err := c.CASMailboxes(ctx, []string{mb.DistinguishedName}, func(m exchange.CASMailbox) error { got = m; return nil }); err != nil {
		t.Fatalf("CASMailboxes(%s): %v", mb.DistinguishedName, err)
	}
	if !slices.Equal(got.ActiveSyncBlockedDeviceIDs, toBlock) {
		t.Errorf("blocked list = %v, want %v", got.ActiveSyncBlockedDeviceIDs, toBlock)
	}
	if after, _ := org.Mailboxes(0, 1<<20); len(after) != len(mailboxesBefore) {
		t.Errorf("mailboxes: %d before, %d after", len(mailboxesBefore), len(after))
	}
	checkCallLog(t, sim, func(call exsim.Call) {
		if !strings.HasPrefix(call.Cmd, "Set-") {
			return
		}
		b, _ := json.Marshal(call.Args)
		for _, h := range hostile {
			hb, _ := json.Marshal(h)
			if strings.Contains(string(b), strings.Trim(string(hb), `"`)) {
				t.Errorf("%s carried a hostile string: %.200s", call.Cmd, b)
			}
		}
	})
}

// checkCallLog asserts every call the simulator received was allowlisted and
// succeeded or failed as a cmdlet (never as a parse or allowlist refusal).
func checkCallLog(t *testing.T, sim *exsim.Sim, each func(exsim.Call)) {
	t.Helper()
	for _, call := range sim.CallLog(0, 1<<20) {
		if !runspace.Allowed(call.Cmd) {
			t.Errorf("call %d ran %q, not in the allowlist", call.Seq, call.Cmd)
		}
		if each != nil {
			each(call)
		}
	}
}

// BenchmarkMobileDevices streams 100,000 devices from exsim (zero latency
// profile) through WS-Man, the runspace session and the typed decoder. The
// simulator runs in the same process, so B/device and allocs/device include
// the server side; compare runs, not absolute values.
func BenchmarkMobileDevices(b *testing.B) {
	if testing.Short() {
		b.Skip("streams 100,000 devices; not under -short")
	}
	const n = 100_000
	pop := population.Generate(population.Options{Devices: n, Seed: 1})
	_, c := startSim(b, pop, 1)
	ctx := context.Background()
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	iters := 0
	for b.Loop() {
		got := 0
		err := c.MobileDevices(ctx, exchange.DeviceFilter{}, func(d exchange.MobileDevice, err error) error {
			got++
			return err
		})
		if err != nil || got != n {
			b.Fatalf("MobileDevices = %d devices, %v; want %d", got, err, n)
		}
		iters++
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&ms1)
	devices := float64(iters * n)
	b.ReportMetric(devices/elapsed.Seconds(), "devices/s")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/devices, "B/device")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/devices, "allocs/device")
}

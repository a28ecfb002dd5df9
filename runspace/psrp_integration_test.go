package runspace_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/runspace"
)

// The psrp session kind against exsim's /PowerShell/ endpoint over HTTPS
// (verified TLS, Basic): the real client, the real simulator.

func psrpOptions(t testing.TB, sim *exsim.Sim, mutate func(*runspace.Options)) runspace.Options {
	return simOptions(t, sim, func(o *runspace.Options) {
		o.Mode = runspace.ModePSRP
		if mutate != nil {
			mutate(o)
		}
	})
}

func TestPSRPPoolAgainstExsim(t *testing.T) {
	sim := startSim(t, exsim.Options{TLS: true})
	p := startPool(t, psrpOptions(t, sim, nil))
	ctx := testCtx(t, 60*time.Second)

	// Stream every device, object by object, in the shape exchange decodes.
	seen := map[string]bool{}
	res, err := p.Do(ctx, runspace.Call{Cmd: "Get-MobileDevice", Args: map[string]any{"ResultSize": "Unlimited"},
		Select: []string{"Identity", "DeviceId", "DeviceType", "FirstSyncTime", "DeviceAccessState"}, Idempotent: true},
		func(raw json.RawMessage) error {
			var d struct {
				Identity, DeviceId, DeviceType, DeviceAccessState string
				FirstSyncTime                                     time.Time
			}
			if err := json.Unmarshal(raw, &d); err != nil {
				return err
			}
			if d.DeviceId == "" || d.Identity == "" || d.DeviceAccessState == "" || d.FirstSyncTime.IsZero() {
				t.Errorf("device %s: missing properties", raw)
			}
			seen[d.DeviceId] = true
			return nil
		})
	if err != nil || res.Count != sim.Org().DeviceCount() || len(seen) != res.Count {
		t.Fatalf("Get-MobileDevice = %+v, %d distinct, %v; want %d", res, len(seen), err, sim.Org().DeviceCount())
	}

	// A cmdlet error is the call's: classified by its category.
	_, err = p.Do(ctx, runspace.Call{Cmd: "Get-CASMailbox", Args: map[string]any{"Identity": "nobody@nowhere.example"},
		Select: []string{"Identity"}, Idempotent: true}, nil)
	if re, ok := errors.AsType[*runspace.RemoteError](err); !ok || runspace.RemoteClass(err) != runspace.ClassNotFound {
		t.Fatalf("Get-CASMailbox of an unknown mailbox: %v (%+v), want not_found", err, re)
	}

	// Refused before anything is sent: no cmdlet reaches exsim.
	before := sim.Counters()
	for _, c := range []runspace.Call{
		{Cmd: "Invoke-Expression", Args: map[string]any{"Command": "Remove-Mailbox x"}},
		{Cmd: "Set-CASMailbox", Args: map[string]any{"Identity": "x", "ScriptBlock": "x"}},
	} {
		if _, err := p.Do(ctx, c, nil); !errors.Is(err, runspace.ErrInvalidCall) {
			t.Errorf("%s: %v, want ErrInvalidCall", c.Cmd, err)
		}
	}
	after := sim.Counters()
	if after.Cmdlets["Set-CASMailbox"] != before.Cmdlets["Set-CASMailbox"] || after.Cmdlets["Invoke-Expression"] != 0 {
		t.Errorf("refused calls reached exsim: %v before, %v after", before.Cmdlets, after.Cmdlets)
	}
}

// Hostile strings travel as data: each is the exact value exsim binds.
func TestPSRPHostileStringsArriveIntact(t *testing.T) {
	sim := startSim(t, exsim.Options{})
	s, err := runspace.Open(testCtx(t, 20*time.Second), psrpOptions(t, sim, nil), sim.Hosts()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(testCtx(t, 10*time.Second))
	hostile := []string{`'; Remove-Mailbox -Identity * -Confirm:$false; '`, `"$(Get-Date)"`, "`n`$x", "line\nbreak\r\n",
		"nul\x00byte", "\x01\x1b[2J\x7f", "_x000A_ literal", "‘’“”", "😀 \U0010FFFF", strings.Repeat("A", 1<<20)}
	for i, h := range hostile {
		since := uint64(0)
		if log := sim.CallLog(0, 0); len(log) > 0 {
			since = log[len(log)-1].Seq
		}
		_, err := s.Do(testCtx(t, 30*time.Second), runspace.Call{Cmd: "Set-CASMailbox", Args: map[string]any{
			"Identity": h, "ActiveSyncAllowedDeviceIDs": runspace.ListEdit{Add: []string{h}}}}, nil)
		if err == nil {
			t.Errorf("hostile %d: Set-CASMailbox of a mailbox that does not exist succeeded", i)
		}
		log := sim.CallLog(since, 10)
		if len(log) != 1 || log[0].Protocol != "psrp" || log[0].Cmd != "Set-CASMailbox" {
			t.Fatalf("hostile %d: call log %+v", i, log)
		}
		if got, _ := log[0].Args["Identity"].(string); got != h {
			t.Errorf("hostile %d: exsim bound -Identity %.60q, sent %.60q", i, got, h)
		}
	}
	if s.Err() != nil {
		t.Errorf("session broken: %v", s.Err())
	}
}

// A pipeline past its deadline is stopped with the PSRP stop signal; the
// session survives and runs the next call.
func TestPSRPDeadlineStopsPipelineKeepsSession(t *testing.T) {
	sim := startSim(t, exsim.Options{})
	s, err := runspace.Open(testCtx(t, 20*time.Second), psrpOptions(t, sim, func(o *runspace.Options) {
		o.RequestTimeout = 500 * time.Millisecond
	}), sim.Hosts()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(testCtx(t, 10*time.Second))
	if err := sim.SetFaults(exsim.Faults{Hang: true, Cmdlets: []string{"Get-ExchangeServer"}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.Do(testCtx(t, 30*time.Second), runspace.Call{Cmd: "Get-ExchangeServer", Select: []string{"Name"}}, nil)
	if runspace.Classify(err) != runspace.ClassTimeout {
		t.Fatalf("hung call: %v (class %s), want a timeout", err, runspace.Classify(err))
	}
	if s.Err() != nil {
		t.Fatalf("session broken by a stopped pipeline: %v", s.Err())
	}
	t.Logf("stopped after %s", time.Since(start))
	if err := sim.SetFaults(exsim.Faults{}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Do(testCtx(t, 30*time.Second), runspace.Call{Cmd: "Get-ExchangeServer", Select: []string{"Name"}}, nil)
	if err != nil || res.Count == 0 {
		t.Fatalf("next call on the same session: %+v, %v", res, err)
	}
	if log := sim.CallLog(0, 0); len(log) < 2 || log[0].Result == "ok" {
		t.Errorf("call log %+v: the first call should not be ok", log)
	}
	if c := sim.Counters(); c.Hung != 1 || c.SessionsStarted != 1 || c.Cmdlets["Get-ExchangeServer"] != 2 {
		t.Errorf("simulator: %d hung, %d sessions started, %d calls; want 1 hung call on the one session, then 1 more call",
			c.Hung, c.SessionsStarted, c.Cmdlets["Get-ExchangeServer"])
	}
}

// A stalled pipeline that produced no output is stopped (the session
// kept) and an idempotent call runs again, as the WinRS path retries it
// after breaking its session; a call that is not idempotent is not.
func TestPSRPStalledIdempotentCallRetried(t *testing.T) {
	sim := startSim(t, exsim.Options{})
	p := startPool(t, psrpOptions(t, sim, func(o *runspace.Options) {
		o.Parallel, o.RequestTimeout = false, 300*time.Millisecond
	}))
	ctx := testCtx(t, 30*time.Second)
	mbs, _ := sim.Org().Mailboxes(0, 1)
	hangOnce := func() {
		t.Helper()
		hung := sim.Counters().Hung
		if err := sim.SetFaults(exsim.Faults{Hang: true, Cmdlets: []string{"Get-CASMailbox"}}); err != nil {
			t.Fatal(err)
		}
		go func() {
			// Only the first attempt hangs: the fault ends once exsim
			// holds it.
			for sim.Counters().Hung == hung && ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
			_ = sim.SetFaults(exsim.Faults{})
		}()
	}

	call := getMailbox(mbs[0].DistinguishedName)
	call.Idempotent = true
	hangOnce()
	res, err := p.Do(ctx, call, nil)
	if err != nil || res.Attempts != 2 || res.Count != 1 {
		t.Fatalf("idempotent call after a stall = %+v, %v; want 1 object on the 2nd attempt", res, err)
	}
	if c := sim.Counters(); c.Hung != 1 || c.Cmdlets["Get-CASMailbox"] != 2 || c.SessionsStarted != 1 {
		t.Errorf("simulator: %d hung, %d Get-CASMailbox, %d sessions started; want 1, 2 and 1 (session kept)",
			c.Hung, c.Cmdlets["Get-CASMailbox"], c.SessionsStarted)
	}

	call.Idempotent = false
	hangOnce()
	res, err = p.Do(ctx, call, nil)
	if runspace.Classify(err) != runspace.ClassTimeout || res.Attempts != 1 {
		t.Fatalf("non-idempotent call after a stall = %+v, %v (class %s); want a timeout after 1 attempt", res, err, runspace.Classify(err))
	}
	if c := sim.Counters(); c.Hung != 2 || c.Cmdlets["Get-CASMailbox"] != 3 || c.SessionsStarted != 1 {
		t.Errorf("simulator: %d hung, %d Get-CASMailbox, %d sessions started; want 2, 3 and 1", c.Hung, c.Cmdlets["Get-CASMailbox"], c.SessionsStarted)
	}
	if e := metricValue(t, p, `easconnector_runspace_errors_total{cmdlet="Get-CASMailbox",class="timeout"}`); e != 1 {
		t.Errorf("errors_total{timeout} = %v, want 1", e)
	}
}

// PowerShellMaxConcurrency refuses the Create; the pool sees throttling.
func TestPSRPQuotaOnCreateIsThrottle(t *testing.T) {
	sim := startSim(t, exsim.Options{PowerShellMaxConcurrency: 1})
	o := psrpOptions(t, sim, nil)
	s1, err := runspace.Open(testCtx(t, 20*time.Second), o, sim.Hosts()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close(testCtx(t, 10*time.Second))
	_, err = runspace.Open(testCtx(t, 20*time.Second), o, sim.Hosts()[0])
	if !errors.Is(err, runspace.ErrThrottled) || runspace.Classify(err) != runspace.ClassThrottle {
		t.Fatalf("second session over PowerShellMaxConcurrency=1: %v, want throttled", err)
	}
}

// "Micro delay applied" warnings shrink the pool's concurrency.
func TestPSRPMicroDelayWarningThrottles(t *testing.T) {
	sim := startSim(t, exsim.Options{})
	p := startPool(t, psrpOptions(t, sim, nil))
	q := sim.Quotas()
	q.MicroDelay = 5 * time.Millisecond
	if err := sim.SetQuotas(q); err != nil {
		t.Fatal(err)
	}
	before := p.Limit()
	if _, err := p.Do(testCtx(t, 30*time.Second), runspace.Call{Cmd: "Get-ExchangeServer", Select: []string{"Name"}}, nil); err != nil {
		t.Fatal(err)
	}
	if p.Limit() >= before {
		t.Errorf("limit %d after a micro delay warning, was %d", p.Limit(), before)
	}
	// exsim applied the delay to the call it warned about.
	log := sim.CallLog(0, 0)
	if len(log) == 0 || log[len(log)-1].Cmd != "Get-ExchangeServer" || log[len(log)-1].Duration < q.MicroDelay {
		t.Errorf("call log %+v: want the Get-ExchangeServer call delayed by %s", log, q.MicroDelay)
	}
	if ev := metricValue(t, p, "easconnector_runspace_throttle_events_total"); ev == 0 {
		t.Error("no throttle event counted")
	}
}

// An idle session sends keep-alive Receives, so WinRM's IdleTimeout does
// not reap its runspace pool.
func TestPSRPKeepAlive(t *testing.T) {
	defer runspace.SetPSRPKeepAlive(100 * time.Millisecond)()
	sim := startSim(t, exsim.Options{IdleTimeout: 400 * time.Millisecond})
	s, err := runspace.Open(testCtx(t, 20*time.Second), psrpOptions(t, sim, nil), sim.Hosts()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(testCtx(t, 10*time.Second))
	time.Sleep(1500 * time.Millisecond)
	if _, err := s.Do(testCtx(t, 20*time.Second), runspace.Call{Cmd: "Get-ExchangeServer", Select: []string{"Name"}}, nil); err != nil {
		t.Fatalf("call after 1.5 s idle (IdleTimeout 400 ms): %v", err)
	}
	if st := sim.WSMan(0).Stats(); st.ShellsReaped != 0 || st.Requests["Receive"] < 3 {
		t.Errorf("server stats: %d shells reaped, %d Receives; want none reaped and keep-alives", st.ShellsReaped, st.Requests["Receive"])
	}
}

// A caller that stops reading, or whose ctx ends, stops the pipeline; the
// session stays usable.
func TestPSRPCallerStopKeepsSession(t *testing.T) {
	sim := startSim(t, exsim.Options{Profile: exsim.ProfileLab})
	s, err := runspace.Open(testCtx(t, 20*time.Second), psrpOptions(t, sim, nil), sim.Hosts()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(testCtx(t, 10*time.Second))
	devices := runspace.Call{Cmd: "Get-MobileDevice", Args: map[string]any{"ResultSize": "Unlimited"}, Select: []string{"DeviceId"}}
	errEnough := errors.New("enough")
	n := 0
	_, err = s.Do(testCtx(t, 30*time.Second), devices, func(json.RawMessage) error {
		n++
		return errEnough
	})
	if !errors.Is(err, errEnough) || n != 1 || s.Err() != nil {
		t.Fatalf("each error: %v after %d objects (session %v)", err, n, s.Err())
	}
	ctx, cancel := context.WithCancel(testCtx(t, 30*time.Second))
	_, err = s.Do(ctx, devices, func(json.RawMessage) error { cancel(); return nil })
	if !errors.Is(err, context.Canceled) || s.Err() != nil {
		t.Fatalf("canceled call: %v (session %v)", err, s.Err())
	}
	res, err := s.Do(testCtx(t, 30*time.Second), devices, nil)
	if err != nil || res.Count != sim.Org().DeviceCount() {
		t.Fatalf("next call: %+v, %v; want %d devices", res, err, sim.Org().DeviceCount())
	}
}

package main

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/kdc"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/server"
)

// TestPSRPEndToEnd: the product's default path, with the real commands:
// check, plan, sync --full, sync --quick and run speak PSRP to exsim's
// /PowerShell/ endpoint over verified HTTPS (exsim's CA in ca_file), with
// Basic (where the admin enabled it on the virtual directory) and with
// Kerberos from a real MIT KDC (the directory's default: the configuration
// names no auth), by password and by keytab. Every cmdlet exsim received
// came over PSRP.
//
// No noLeaks here: gokrb5's service side (exsim's) starts a process-wide
// replay cache goroutine that lives on by design.
func TestPSRPEndToEnd(t *testing.T) {
	var k *kdc.KDC
	kerberos := func() *kdc.KDC {
		if k == nil {
			k = kdc.StartT(t, kdc.Options{Services: []string{kerberosSPN}, ClientKeytab: true})
		}
		return k
	}
	for _, tc := range []struct {
		name, auth string
		keytab     bool
	}{
		{"basic", "basic", false},
		{"kerberos password", "kerberos", false},
		{"kerberos keytab", "kerberos", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := fleetOptions{pop: population.Options{Devices: 40}, exchangeTLS: true, listen: freeAddr(t), keytab: tc.keytab}
			if tc.auth == "kerberos" {
				o.kerberos = kerberos()
			}
			fl := startFleet(t, o)
			ctx := t.Context()

			code, out, errOut := runIn(t, ctx, "check", "--config", fl.config)
			endpoint := fmt.Sprintf("https://%s:%d/PowerShell/ (psrp, auth %s)", fl.sim.Hosts()[0], fl.sim.Port(), tc.auth)
			if code != exitOK || !strings.Contains(out, "endpoint  "+endpoint) || !strings.Contains(out, "exchange  "+exsim.ExchangeVersion) ||
				!strings.Contains(out, fmt.Sprintf("rbac      ok: the account may run all %d cmdlets", len(exchange.Cmdlets()))) {
				t.Fatalf("check = %d, want endpoint %s, version %s and no RBAC gap\n%s\n%s", code, endpoint, exsim.ExchangeVersion, out, errOut)
			}

			code, out, errOut = runIn(t, ctx, "plan", "--full", "--json", "--config", fl.config)
			var po planOutput
			decodeJSON(t, out, &po)
			if code != exitOK || po.Report.Counts.Writes == 0 {
				t.Fatalf("plan --full = %d, %d writes planned; want writes\n%s", code, po.Report.Counts.Writes, errOut)
			}
			if c := fl.sim.Counters(); c.WriteCmdlets != 0 {
				t.Fatalf("plan wrote %d times", c.WriteCmdlets)
			}
			// The service: its start-up full sync converges the fleet.
			d := startRun(t, fl, o.listen)
			st := d.waitStatus(t, "the service's first full sync", func(st *server.Status) bool { return st.LastFull != nil })
			if st.Status != server.StatusConnected || st.LastFull.Result != server.ResultOK || st.LastFull.Writes == 0 {
				t.Errorf("status of the service = %+v, want connected after an ok full sync that wrote", st)
			}
			d.stop(t)
			fl.graph.Update(changeFleetMDM) // work for the one-shot syncs

			if code, out, errOut = runIn(t, ctx, "sync", "--full", "--config", fl.config); code != exitOK {
				t.Fatalf("sync --full = %d\n%s\n%s", code, out, errOut)
			}
			if code, out, errOut = runIn(t, ctx, "sync", "--quick", "--config", fl.config); code != exitOK {
				t.Fatalf("sync --quick = %d\n%s\n%s", code, out, errOut)
			}
			fl.assertConverged(t)

			log := fl.sim.CallLog(0, 0)
			if len(log) == 0 {
				t.Fatal("exsim received no cmdlet")
			}
			for _, c := range log {
				if c.Protocol != "psrp" {
					t.Fatalf("call %d (%s) came over %q, want psrp", c.Seq, c.Cmd, c.Protocol)
				}
			}
			if tc.auth == "kerberos" {
				if !strings.Contains(k.Log(), "for "+kerberosSPN+"@"+k.Realm) {
					t.Errorf("KDC issued no ticket for %s", kerberosSPN)
				}
				if c := fl.sim.Counters(); c.SecondHopCredentials != 0 {
					t.Errorf("psrp passed %d second-hop credentials", c.SecondHopCredentials)
				}
			}
		})
	}
}

// TestCheckRBACGap: an account whose Exchange roles lack cmdlets is told,
// per server, which ones and how to grant them; the check fails, and it
// finds out without calling any cmdlet it lacks (Get-Command only).
func TestCheckRBACGap(t *testing.T) {
	noLeaks(t)
	fl := startFleet(t, fleetOptions{pop: population.Options{Devices: 10}})
	lacking := []string{"New-ActiveSyncDeviceAccessRule", "Set-CASMailbox"}
	granted := slices.DeleteFunc(exchange.Cmdlets(), func(c string) bool { return slices.Contains(lacking, c) })
	if err := fl.sim.SetRoles(exsim.DefaultUser, granted); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runIn(t, t.Context(), "check", "--config", fl.config)
	t.Logf("check output:\n%s", out)
	if code != exitFailed {
		t.Errorf("check with an RBAC gap = %d, want %d\n%s\n%s", code, exitFailed, out, errOut)
	}
	for _, c := range lacking {
		re := regexp.MustCompile(`(?m)^  rbac\s+cannot run ` + c + `: grant it with deploy/exchange/New-EasConnectorRbac\.ps1`)
		if !re.MatchString(out) {
			t.Errorf("check output does not name the missing %s:\n%s", c, out)
		}
	}
	if !strings.Contains(out, "127.0.0.1: RBAC: the account's Exchange roles do not grant every cmdlet easconnector runs") ||
		!strings.Contains(out, "docs/exchange-rbac.md") {
		t.Errorf("check output lacks the RBAC advice:\n%s", out)
	}
	for _, c := range fl.sim.CallLog(0, 0) {
		if verb, _, _ := strings.Cut(c.Cmd, "-"); verb != "Get" || slices.Contains(lacking, c.Cmd) {
			t.Errorf("check called %s", c.Cmd)
		}
	}

	// Missing only the optional discovery cmdlet: a note, not a failure.
	if err := fl.sim.SetRoles(exsim.DefaultUser, slices.DeleteFunc(exchange.Cmdlets(), func(c string) bool { return c == "Get-ClientAccessService" })); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runIn(t, t.Context(), "check", "--config", fl.config)
	if code != exitOK || !strings.Contains(out, "cannot run (optional: CAS discovery falls back to Get-ExchangeServer) Get-ClientAccessService") {
		t.Errorf("check without Get-ClientAccessService = %d\n%s", code, out)
	}
}

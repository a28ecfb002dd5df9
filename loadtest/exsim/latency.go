package exsim

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"
)

// Latency is the simulated cost of one cmdlet: Fixed before the first
// object, PerObject for each object produced, and a random extra drawn from
// an exponential distribution of mean Jitter (capped at 8 × Jitter), which
// gives the long right tail real cmdlet timings have.
type Latency struct {
	Fixed     time.Duration
	PerObject time.Duration
	Jitter    time.Duration
}

// Profile is a named set of latencies.
type Profile struct {
	Name string
	// SessionStart is the time from the session's config line to its ready
	// frame: Import-PSSession (remoting) or Add-PSSnapin (snap-in).
	SessionStart Latency
	// Cmdlets holds per-cmdlet latencies; others take Default.
	Cmdlets map[string]Latency
	Default Latency
}

// Latency returns the latency of cmd.
func (p Profile) Latency(cmd string) Latency {
	if l, ok := p.Cmdlets[cmd]; ok {
		return l
	}
	return p.Default
}

// Profile names.
const (
	ProfileZero       = "zero"
	ProfileLab        = "lab"
	ProfileProduction = "production"
)

// Microsoft publishes no timings for these cmdlets (reference/exchange.md
// §4 lists the gaps), so the profiles are estimates to be replaced by lab
// measurements, reasoned from what each cmdlet does:
//
//   - zero: no delay at all, for unit tests and for measuring the client's
//     own cost.
//   - lab: one idle Exchange 2019 server on the same LAN as the client and
//     its domain controller. A remote PowerShell round trip with an AD read
//     is ~15–30 ms; a write (Set-CASMailbox) adds an LDAP modify and the
//     admin audit log, ~40 ms. Get-MobileDevice reads one
//     msExchActiveSyncDevice object per result and serializes it through
//     remoting, ~0.2 ms each on top of ~30 ms. Import-PSSession of the
//     eleven allowlisted cmdlets takes ~200 ms.
//   - production: a busy multi-server organization behind a load balancer,
//     the service account's domain controller in another site, the
//     MSExchangePowerShellAppPool shared with admins and scripts. Every
//     call costs 3–5× lab with a heavy tail (jitter means of 50–150 ms), and
//     Import-PSSession takes ~2 s, as admins see when opening a session.
var profiles = map[string]Profile{
	ProfileZero: {Name: ProfileZero},
	ProfileLab: {
		Name:         ProfileLab,
		SessionStart: Latency{Fixed: 200 * time.Millisecond, Jitter: 30 * time.Millisecond},
		Default:      Latency{Fixed: 20 * time.Millisecond, Jitter: 5 * time.Millisecond},
		Cmdlets: map[string]Latency{
			"Get-MobileDevice":                   {Fixed: 30 * time.Millisecond, PerObject: 200 * time.Microsecond, Jitter: 5 * time.Millisecond},
			"Get-CASMailbox":                     {Fixed: 25 * time.Millisecond, PerObject: 150 * time.Microsecond, Jitter: 5 * time.Millisecond},
			"Set-CASMailbox":                     {Fixed: 40 * time.Millisecond, Jitter: 8 * time.Millisecond},
			"Get-ActiveSyncOrganizationSettings": {Fixed: 15 * time.Millisecond, Jitter: 3 * time.Millisecond},
			"Set-ActiveSyncOrganizationSettings": {Fixed: 35 * time.Millisecond, Jitter: 8 * time.Millisecond},
			"Get-ActiveSyncDeviceAccessRule":     {Fixed: 15 * time.Millisecond, PerObject: 100 * time.Microsecond, Jitter: 3 * time.Millisecond},
			"New-ActiveSyncDeviceAccessRule":     {Fixed: 40 * time.Millisecond, Jitter: 8 * time.Millisecond},
			"Set-ActiveSyncDeviceAccessRule":     {Fixed: 40 * time.Millisecond, Jitter: 8 * time.Millisecond},
			"Remove-ActiveSyncDeviceAccessRule":  {Fixed: 40 * time.Millisecond, Jitter: 8 * time.Millisecond},
			"Get-ExchangeServer":                 {Fixed: 20 * time.Millisecond, PerObject: time.Millisecond, Jitter: 5 * time.Millisecond},
			"Get-ClientAccessService":            {Fixed: 20 * time.Millisecond, PerObject: time.Millisecond, Jitter: 5 * time.Millisecond},
		},
	},
	ProfileProduction: {
		Name:         ProfileProduction,
		SessionStart: Latency{Fixed: 2 * time.Second, Jitter: 500 * time.Millisecond},
		Default:      Latency{Fixed: 80 * time.Millisecond, Jitter: 50 * time.Millisecond},
		Cmdlets: map[string]Latency{
			"Get-MobileDevice":                   {Fixed: 150 * time.Millisecond, PerObject: 600 * time.Microsecond, Jitter: 100 * time.Millisecond},
			"Get-CASMailbox":                     {Fixed: 120 * time.Millisecond, PerObject: 500 * time.Microsecond, Jitter: 80 * time.Millisecond},
			"Set-CASMailbox":                     {Fixed: 180 * time.Millisecond, Jitter: 150 * time.Millisecond},
			"Get-ActiveSyncOrganizationSettings": {Fixed: 60 * time.Millisecond, Jitter: 40 * time.Millisecond},
			"Set-ActiveSyncOrganizationSettings": {Fixed: 150 * time.Millisecond, Jitter: 100 * time.Millisecond},
			"Get-ActiveSyncDeviceAccessRule":     {Fixed: 60 * time.Millisecond, PerObject: 300 * time.Microsecond, Jitter: 40 * time.Millisecond},
			"New-ActiveSyncDeviceAccessRule":     {Fixed: 150 * time.Millisecond, Jitter: 100 * time.Millisecond},
			"Set-ActiveSyncDeviceAccessRule":     {Fixed: 150 * time.Millisecond, Jitter: 100 * time.Millisecond},
			"Remove-ActiveSyncDeviceAccessRule":  {Fixed: 150 * time.Millisecond, Jitter: 100 * time.Millisecond},
			"Get-ExchangeServer":                 {Fixed: 80 * time.Millisecond, PerObject: 3 * time.Millisecond, Jitter: 50 * time.Millisecond},
			"Get-ClientAccessService":            {Fixed: 80 * time.Millisecond, PerObject: 3 * time.Millisecond, Jitter: 50 * time.Millisecond},
		},
	},
}

// ProfileNames lists the built-in profiles.
func ProfileNames() []string {
	names := make([]string, 0, len(profiles))
	for n := range profiles {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// LookupProfile returns a built-in profile ("" means zero).
func LookupProfile(name string) (Profile, error) {
	if name == "" {
		name = ProfileZero
	}
	p, ok := profiles[name]
	if !ok {
		return Profile{}, fmt.Errorf("latency profile %q: want one of %v", name, ProfileNames())
	}
	return p, nil
}

// jitter draws the random extra of l from u, a uniform number in [0,1).
func (l Latency) jitter(u float64) time.Duration {
	if l.Jitter <= 0 {
		return 0
	}
	x := -math.Log(1 - u)
	return time.Duration(min(x, 8) * float64(l.Jitter))
}

// sleepCtx waits d or until ctx ends, whichever is first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

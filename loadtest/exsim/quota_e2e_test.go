package exsim

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/runspace"
)

// TestPluginQuotaIsThrottling: Windows counts the PowerShell plugin's
// MaxConcurrentCommandsPerShell over a shell's life (pypsrp issue #148) and
// answers the next Command with w:InternalError 2150859241 and the quota
// text. The connector's pool must read that as throttling on a used-up
// shell: back off, replace the session and run the call again, so reads
// keep working past the quota instead of failing.
func TestPluginQuotaIsThrottling(t *testing.T) {
	sim, err := Start(Options{Listeners: 1, Profile: "zero", Quiet: true, MaxCommandsPerShell: 2})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(sim.Close)
	smallOrg(t, sim)
	pool, err := runspace.NewPool(runspace.Options{
		Servers: sim.Hosts(), Port: sim.Port(), Auth: runspace.AuthBasic, PlainHTTP: true,
		User: DefaultUser, Password: secret.New(DefaultPassword),
		Size: 1, ConnectTimeout: 20 * time.Second, RequestTimeout: time.Minute, Mode: runspace.ModePSRP,
	})
	if err != nil {
		t.Fatalf("NewPool: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := pool.Start(ctx); err != nil {
		t.Fatalf("pool.Start: %v", err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer ccancel()
		_ = pool.Close(cctx)
	})
	call := runspace.Call{Cmd: "Get-ActiveSyncOrganizationSettings", Select: []string{"DefaultAccessLevel"}, Idempotent: true}
	for i := range 5 {
		n := 0
		if _, err := pool.Do(ctx, call, func(json.RawMessage) error { n++; return nil }); err != nil {
			t.Fatalf("call %d: %v (class %s)", i+1, err, runspace.Classify(err))
		}
		if n != 1 {
			t.Fatalf("call %d: %d objects", i+1, n)
		}
	}
}

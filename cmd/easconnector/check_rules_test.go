package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/exsim"
)

// TestCheckShadowedException: Exchange tries device access rules by
// characteristic (user agent, OS, model, type) and the first match
// decides. A platform exception on DeviceType that an administrator's
// DeviceModel rule overrides for some devices is reported by check as
// shadowed, naming both rules; without the administrator's rule check
// says no exception is shadowed.
func TestCheckShadowedException(t *testing.T) {
	sim := startSim(t, exsim.Options{Listeners: 1})
	devs, _, err := sim.Org().Devices("", 0, 0)
	if err != nil || len(devs) == 0 {
		t.Fatalf("devices: %d, %v", len(devs), err)
	}
	var d exchange.MobileDevice
	for _, x := range devs {
		if x.DeviceModel != "" && x.DeviceType != "" {
			d = x
			break
		}
	}
	cfg := writeConfig(t, sim, exsim.DefaultPassword, 0o600, "")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	policy := fmt.Sprintf("\n[policy]\n[[policy.platform_exceptions]]\ncharacteristic = \"DeviceType\"\nvalue = %q\naction = \"block\"\n", d.DeviceType)
	if err := os.WriteFile(cfg, append(b, policy...), 0o644); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := runCmd(t, "check", "--config", cfg)
	if code != exitOK || !strings.Contains(out, "No platform exception is shadowed by Exchange's rule order.") {
		t.Fatalf("check without an admin rule = %d:\n%s\n%s", code, out, errOut)
	}
	if _, err := sim.Org().AddRule(exchange.CharDeviceModel, d.DeviceModel, exchange.LevelAllow); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runCmd(t, "check", "--config", cfg)
	want := fmt.Sprintf("WARNING: platform exception %q (block) is shadowed: Exchange tries device access rule %q first (Allow)",
		d.DeviceType+" (DeviceType)", d.DeviceModel+" (DeviceModel)")
	if code != exitOK || !strings.Contains(out, want) {
		t.Fatalf("check with the admin rule = %d, want a line %q:\n%s\n%s", code, want, out, errOut)
	}
}

//go:build windows

package main

import (
	"testing"

	"golang.org/x/sys/windows"

	"github.com/easconnector/easconnector/config"
)

// TestServiceConfig: the service runs as its virtual account, with no
// password and an unrestricted service SID, never as LocalSystem.
func TestServiceConfig(t *testing.T) {
	c := serviceConfig()
	if config.WindowsServiceAccount != `NT SERVICE\easconnector` {
		t.Errorf("WindowsServiceAccount = %s", config.WindowsServiceAccount)
	}
	if c.ServiceStartName != config.WindowsServiceAccount || c.Password != "" || c.SidType != windows.SERVICE_SID_TYPE_UNRESTRICTED {
		t.Errorf("serviceConfig() = %+v, want NT SERVICE\\easconnector without password", c)
	}
}

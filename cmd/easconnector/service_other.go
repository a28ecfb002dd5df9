//go:build !windows

package main

import (
	"context"
	"fmt"
	"io"
)

const systemdNote = `On this system easconnector runs under systemd, not as a Windows service.
The unit file is deploy/easconnector.service; install it with:

  install -m 0644 deploy/easconnector.service /etc/systemd/system/
  systemctl daemon-reload
  systemctl enable --now easconnector

'systemctl stop easconnector' stops it cleanly (SIGTERM: writes in flight
finish within [sync] shutdown_timeout, the state is saved).`

// runAsWindowsService reports that this process is not a Windows service.
func runAsWindowsService([]string) (int, bool) { return 0, false }

func runService(_ context.Context, args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		fmt.Fprintln(stdout, systemdNote)
		return exitOK
	case args[0] == "-h" || args[0] == "-help" || args[0] == "--help":
		fmt.Fprintf(stdout, "Usage: easconnector service install|uninstall|start|stop [--config file]   (Windows)\n\n%s\n", systemdNote)
		return exitOK
	}
	fmt.Fprintf(stderr, "easconnector service %s: Windows services only.\n\n%s\n", args[0], systemdNote)
	return exitUsage
}

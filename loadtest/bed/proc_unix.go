//go:build !windows

package bed

import (
	"os"
	"syscall"
)

// ownGroup puts the child in a process group of its own, so that a
// terminal's Ctrl-C reaches only the driver, which stops it in order.
func ownGroup() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// interrupt asks the process to stop as systemd does.
func interrupt(p *os.Process) error { return p.Signal(syscall.SIGTERM) }

//go:build !windows

package main

import (
	"os"
	"syscall"
)

// ownGroup puts the child in a process group of its own.
func ownGroup() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// interrupt asks the process to stop as systemd does.
func interrupt(p *os.Process) error { return p.Signal(syscall.SIGTERM) }

//go:build windows

package main

import (
	"os"
	"syscall"

	"golang.org/x/sys/windows"
)

// ownGroup puts the child in a console process group of its own, so that
// a CTRL_BREAK can be sent to it alone.
func ownGroup() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{CreationFlags: windows.CREATE_NEW_PROCESS_GROUP}
}

// interrupt sends CTRL_BREAK to the process's group, which the Go runtime
// delivers to the connector as os.Interrupt (os.Process.Signal cannot
// interrupt a process on Windows).
func interrupt(p *os.Process) error {
	return windows.GenerateConsoleCtrlEvent(windows.CTRL_BREAK_EVENT, uint32(p.Pid))
}

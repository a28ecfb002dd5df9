package kdc

import "syscall"

// sysProcAttr kills the KDC with the test binary should it die without
// running its cleanup, so no krb5kdc outlives a crashed test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

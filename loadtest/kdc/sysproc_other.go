//go:build !linux

package kdc

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }

package bed

import (
	"errors"
	"os"
	"syscall"
)

func ownGroup() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{CreationFlags: syscall.CREATE_NEW_PROCESS_GROUP}
}

// interrupt cannot deliver CTRL_BREAK without the console API: the caller
// then kills the process.
func interrupt(*os.Process) error { return errors.New("no polite stop on Windows") }

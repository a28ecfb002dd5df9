package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// lockFile is the lock file's name in the state directory.
const lockFile = "easconnector.lock"

// errLocked says another easconnector process owns the state directory.
var errLocked = errors.New("state directory in use")

// stateLock is an exclusive lock on the state directory, held for the
// life of a process that writes state, so that a `sync` started by hand
// cannot interleave its state and audit writes with those of the running
// service. The operating system releases it when the process dies, so a
// crash leaves no stale lock. The file holds the owner's pid and command,
// for the message the next process shows.
type stateLock struct {
	f *os.File
}

// lockStateDir takes the lock of dir or fails with errLocked, naming the
// process that holds it.
func lockStateDir(dir, command string) (*stateLock, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock state directory: %w", err)
	}
	if err := lockFileExclusive(f); err != nil {
		owner, _ := io.ReadAll(io.LimitReader(f, 256))
		f.Close()
		who := strings.TrimSpace(string(owner))
		if who == "" {
			who = "another easconnector process"
		}
		return nil, fmt.Errorf("%w: %s holds %s (%v); stop it, or ask the running service with --remote", errLocked, who, path, err)
	}
	if err := f.Truncate(0); err == nil {
		fmt.Fprintf(f, "pid %d (easconnector %s)\n", os.Getpid(), command)
		_ = f.Sync()
	}
	return &stateLock{f: f}, nil
}

// unlock releases the lock. The file stays: removing it would race with a
// process that has just opened it.
func (l *stateLock) unlock() error {
	if err := unlockFile(l.f); err != nil {
		l.f.Close()
		return fmt.Errorf("unlock state directory: %w", err)
	}
	return l.f.Close()
}

//go:build !windows

package config

import (
	"fmt"
	"io/fs"
)

// checkPrivate refuses a secret file that group or others may read, write
// or execute: anyone who can read it has the service account's password.
func checkPrivate(path string, mode fs.FileMode) error {
	if perm := mode.Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o; run chmod 600 %s", ErrSecretExposed, path, perm, path)
	}
	return nil
}

func defaultStateDir() string { return "/var/lib/easconnector" }

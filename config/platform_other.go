//go:build !windows

package config

import (
	"fmt"
	"io/fs"
	"os"
)

// checkPrivate refuses a secret file that group or others may read, write
// or execute: anyone who can read it has the service account's password.
func checkPrivate(path string, mode fs.FileMode) error {
	if perm := mode.Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o; run chmod 600 %s", ErrSecretExposed, path, perm, path)
	}
	return nil
}

// CheckPrivateDir accepts any state directory here: every file in it is
// created 0600 (the directory itself 0700), so its mode bits do not expose
// the contents, and an existing installation keeps working. On Windows,
// where files inherit the directory's ACL, the directory is checked.
func CheckPrivateDir(string) error { return nil }

// MkdirPrivate creates dir and its parents, dir owner-only (0700).
func MkdirPrivate(dir string) error { return os.MkdirAll(dir, 0o700) }

func defaultStateDir() string { return "/var/lib/easconnector" }

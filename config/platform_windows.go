//go:build windows

package config

import (
	"io/fs"
	"os"
	"path/filepath"
)

// checkPrivate does nothing on Windows: access is governed by ACLs, which
// the mode bits Go reports do not reflect. Protect the file with an ACL that
// grants only the service account and Administrators.
func checkPrivate(string, fs.FileMode) error { return nil }

func defaultStateDir() string {
	if pd := os.Getenv("ProgramData"); pd != "" {
		return filepath.Join(pd, "easconnector")
	}
	return `C:\ProgramData\easconnector`
}

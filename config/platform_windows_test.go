//go:build windows

package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/windows"
)

// TestCheckPrivateWindows: a file in the user's temporary directory
// (owner and ACL: this user, Administrators, SYSTEM) passes; the same
// file with Users granted read through an explicit ACL is refused, naming
// the principal.
func TestCheckPrivateWindows(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.secret")
	if err := os.WriteFile(p, []byte("s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readSecretFile("x_file", p); err != nil {
		t.Fatalf("private file refused: %v", err)
	}
	if err := setSDDL(p, "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FR;;;BU)"); err != nil {
		t.Fatal(err)
	}
	_, err := readSecretFile("x_file", p)
	if !errors.Is(err, ErrSecretExposed) {
		t.Fatalf("file readable by Users = %v, want ErrSecretExposed", err)
	}
	if err := CheckPrivateDir(dir); err != nil {
		t.Errorf("private temp directory refused: %v", err)
	}
	// A directory readable by Users is refused; MkdirPrivate makes one
	// that passes even under such a parent.
	if err := setSDDL(dir, "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;OW)(A;OICI;FR;;;BU)"); err != nil {
		t.Fatal(err)
	}
	if err := CheckPrivateDir(dir); !errors.Is(err, ErrSecretExposed) {
		t.Errorf("directory readable by Users = %v, want ErrSecretExposed", err)
	}
	state := filepath.Join(dir, "state", "sub")
	if err := MkdirPrivate(state); err != nil {
		t.Fatal(err)
	}
	if err := CheckPrivateDir(state); err != nil {
		t.Errorf("MkdirPrivate made a directory others can read: %v", err)
	}
}

// setSDDL replaces path's DACL with the one of sddl (tests).
func setSDDL(path, sddl string) error {
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return err
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return err
	}
	return windows.SetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil)
}

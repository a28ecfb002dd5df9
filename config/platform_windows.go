//go:build windows

package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/windows"
)

// checkPrivate refuses a secret file that a principal other than the
// service account, Administrators, SYSTEM and the account running this
// process can read, judged from the file's owner and DACL (the mode bits
// Go reports do not reflect ACLs).
func checkPrivate(path string, _ fs.FileMode) error {
	readers, err := aclReaders(path)
	if err != nil {
		return fmt.Errorf("read the ACL of %s: %w", path, err)
	}
	if len(readers) > 0 {
		return exposedError("secret file", path, readers, false)
	}
	return nil
}

// CheckPrivateDir refuses a state directory (it holds the owned list
// entries and the audit log, which name users and devices) that others
// can read or list, judged as checkPrivate judges a secret file.
func CheckPrivateDir(dir string) error {
	readers, err := aclReaders(dir)
	if err != nil {
		return fmt.Errorf("sync.state_dir: read the ACL of %s: %w", dir, err)
	}
	if len(readers) > 0 {
		return fmt.Errorf("sync.state_dir: %w", exposedError("state directory", dir, readers, true))
	}
	return nil
}

// allowedSIDs are the principals that may read secrets: SYSTEM,
// Administrators, the account running this process (the service account
// under the service manager, an administrator at a prompt) and the
// service's virtual account once the service is installed.
func allowedSIDs() map[string]bool {
	m := map[string]bool{sidSystem: true, sidAdministrators: true}
	if u, err := windows.GetCurrentProcessToken().GetTokenUser(); err == nil {
		m[u.User.Sid.String()] = true
	}
	if sid, _, _, err := windows.LookupSID("", WindowsServiceAccount); err == nil {
		m[sid.String()] = true
	}
	return m
}

// ACE types (https://learn.microsoft.com/en-us/windows/win32/api/winnt/ns-winnt-ace_header).
const (
	aceAllowed         = 0x0 // ACCESS_ALLOWED_ACE_TYPE
	aceDenied          = 0x1 // ACCESS_DENIED_ACE_TYPE
	aceDeniedObject    = 0x6
	aceAllowedCallback = 0x9 // same layout as ACCESS_ALLOWED_ACE
	aceDeniedCallback  = 0xA
	aceDeniedCbObject  = 0xC
)

// aclReaders reads path's owner and DACL and returns exposedReaders.
func aclReaders(path string) ([]string, error) {
	sd, err := windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.OWNER_SECURITY_INFORMATION|windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		return nil, err
	}
	owner, _, err := sd.Owner()
	if err != nil {
		return nil, err
	}
	var ownerSID, ownerName string
	if owner != nil {
		ownerSID, ownerName = owner.String(), accountName(owner)
	}
	dacl, _, err := sd.DACL()
	null := errors.Is(err, windows.ERROR_OBJECT_NOT_FOUND) || err == nil && dacl == nil
	if err != nil && !null {
		return nil, err
	}
	var aces []ACE
	if !null {
		for i := range uint32(dacl.AceCount) {
			var ace *windows.ACCESS_ALLOWED_ACE
			if err := windows.GetAce(dacl, i, &ace); err != nil {
				return nil, fmt.Errorf("ACE %d: %w", i, err)
			}
			e := ACE{Mask: uint32(ace.Mask), InheritOnly: ace.Header.AceFlags&windows.INHERIT_ONLY_ACE != 0}
			switch ace.Header.AceType {
			case aceAllowed, aceAllowedCallback, aceDenied, aceDeniedCallback:
				sid := (*windows.SID)(unsafe.Pointer(&ace.SidStart))
				e.SID, e.Name = sid.String(), accountName(sid)
				e.Deny = ace.Header.AceType == aceDenied || ace.Header.AceType == aceDeniedCallback
			case aceDeniedObject, aceDeniedCbObject:
				continue // ignoring a deny errs on the side of refusing
			default:
				// An allow entry of a layout we do not read: count it as
				// granting someone everything.
				e.SID = fmt.Sprintf("an ACE of type %d", ace.Header.AceType)
				e.Mask = accessGenericAll
			}
			aces = append(aces, e)
		}
	}
	return exposedReaders(ownerSID, ownerName, aces, null, allowedSIDs()), nil
}

func accountName(sid *windows.SID) string {
	account, domain, _, err := sid.LookupAccount("")
	switch {
	case err != nil:
		return ""
	case domain == "":
		return account
	}
	return domain + `\` + account
}

// SetPrivateACL gives path an owner of Administrators and a protected DACL
// (nothing inherited from the parent) of full control for SYSTEM and
// Administrators and, for the service account (which must exist: install
// the service first), read on a file or modify on a directory, inherited
// by what it contains (its existing children are re-inherited).
func SetPrivateACL(path string, dir bool) error {
	sid, _, _, err := windows.LookupSID("", WindowsServiceAccount)
	if err != nil {
		return fmt.Errorf("set the ACL of %s: look up %s: %w", path, WindowsServiceAccount, err)
	}
	// SDDL: https://learn.microsoft.com/en-us/windows/win32/secauthz/ace-strings;
	// 0x1301bf is Modify (read, write, execute, delete).
	sddl := fmt.Sprintf("O:BAD:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FR;;;%s)", sid)
	if dir {
		sddl = fmt.Sprintf("O:BAD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1301bf;;;%s)", sid)
	}
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return fmt.Errorf("set the ACL of %s: %w", path, err)
	}
	owner, _, err := sd.Owner()
	if err != nil {
		return fmt.Errorf("set the ACL of %s: %w", path, err)
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return fmt.Errorf("set the ACL of %s: %w", path, err)
	}
	if err := windows.SetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.OWNER_SECURITY_INFORMATION|windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION,
		owner, nil, dacl, nil); err != nil {
		return fmt.Errorf("set the ACL of %s: %w", path, err)
	}
	return nil
}

// MkdirPrivate creates dir (and its parents) if it does not exist, dir
// itself with a protected DACL: full control for SYSTEM, Administrators
// and the account running this process, modify for the service account if
// the service is installed, inherited by what it will hold. Created with
// os.MkdirAll it would inherit its parent's ACL (%ProgramData% lets Users
// read), and CheckPrivateDir would refuse it. An existing directory is
// left as it is.
func MkdirPrivate(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return err
	}
	sddl := "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"
	if u, err := windows.GetCurrentProcessToken().GetTokenUser(); err == nil {
		sddl += fmt.Sprintf("(A;OICI;FA;;;%s)", u.User.Sid)
	}
	if sid, _, _, err := windows.LookupSID("", WindowsServiceAccount); err == nil {
		sddl += fmt.Sprintf("(A;OICI;0x1301bf;;;%s)", sid)
	}
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return fmt.Errorf("mkdir %s: %w", dir, err)
	}
	sa := &windows.SecurityAttributes{SecurityDescriptor: sd}
	sa.Length = uint32(unsafe.Sizeof(*sa))
	p, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return fmt.Errorf("mkdir %s: %w", dir, err)
	}
	if err := windows.CreateDirectory(p, sa); err != nil && !errors.Is(err, windows.ERROR_ALREADY_EXISTS) {
		return fmt.Errorf("mkdir %s: %w", dir, err)
	}
	return nil
}

func defaultStateDir() string {
	if pd := os.Getenv("ProgramData"); pd != "" {
		return filepath.Join(pd, "easconnector")
	}
	return `C:\ProgramData\easconnector`
}

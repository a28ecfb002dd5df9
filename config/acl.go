package config

import (
	"fmt"
	"strings"
)

// WindowsServiceAccount is the virtual account the Windows service runs
// as: a per-service identity that needs no password and has no rights
// beyond those granted to it (Microsoft Learn, "Service accounts",
// section "Virtual accounts":
// https://learn.microsoft.com/en-us/windows/security/identity-protection/access-control/service-accounts#virtual-accounts).
const WindowsServiceAccount = `NT SERVICE\easconnector`

// Well-known SIDs the readability check treats specially
// (https://learn.microsoft.com/en-us/windows/win32/secauthz/well-known-sids).
const (
	sidSystem         = "S-1-5-18"
	sidAdministrators = "S-1-5-32-544"
	sidCreatorOwner   = "S-1-3-0" // placeholders: they only shape what children inherit
	sidCreatorGroup   = "S-1-3-1"
	sidOwnerRights    = "S-1-3-4" // stands for the object's owner
)

// Access-mask bits that let a principal read a file's data or list a
// directory, or give itself that right (WRITE_DAC, WRITE_OWNER)
// (https://learn.microsoft.com/en-us/windows/win32/secauthz/access-mask-format,
// https://learn.microsoft.com/en-us/windows/win32/fileio/file-access-rights-constants).
const (
	accessReadData       = 0x00000001 // FILE_READ_DATA, FILE_LIST_DIRECTORY on a directory
	accessWriteDAC       = 0x00040000
	accessWriteOwner     = 0x00080000
	accessMaximumAllowed = 0x02000000
	accessGenericAll     = 0x10000000
	accessGenericRead    = 0x80000000
	accessReadMask       = accessReadData | accessWriteDAC | accessWriteOwner | accessMaximumAllowed | accessGenericAll | accessGenericRead
)

// ACE is one entry of a discretionary ACL, reduced to what the
// readability check needs. Entries other than access-allowed and
// access-denied ones (object and callback ACEs) are passed as allowed
// ones, which errs on the side of refusing.
type ACE struct {
	SID         string // e.g. "S-1-5-32-545"
	Name        string // e.g. `BUILTIN\Users`; "" if it could not be looked up
	Deny        bool
	Mask        uint32
	InheritOnly bool // INHERIT_ONLY_ACE: applies to children only
}

// principal names a SID for messages.
func principal(sid, name string) string {
	if name == "" {
		return sid
	}
	return name + " (" + sid + ")"
}

// exposedReaders returns, in ACL order, the principals other than the
// allowed SIDs that can read the object (or give themselves that right):
// those an applicable allow entry grants a read bit that no earlier deny
// entry for the same SID takes away, and an owner outside the allowed
// set, who can always rewrite the DACL. A null DACL (nullDACL) grants
// everyone everything. Windows evaluates entries in order and a token
// may hold several group SIDs, so a deny for a group does not cancel an
// allow for another SID: the check refuses rather than guesses.
func exposedReaders(ownerSID, ownerName string, dacl []ACE, nullDACL bool, allowed map[string]bool) []string {
	var out []string
	seen := map[string]bool{}
	add := func(who, why string) {
		if !seen[who] {
			seen[who] = true
			out = append(out, who+why)
		}
	}
	if ownerSID != "" && !allowed[ownerSID] {
		add(principal(ownerSID, ownerName), " (its owner, who can change its ACL)")
	}
	if nullDACL {
		add(principal("S-1-1-0", `Everyone`), " (the object has no DACL)")
		return out
	}
	denied := map[string]uint32{}
	for _, e := range dacl {
		if e.InheritOnly || e.SID == sidCreatorOwner || e.SID == sidCreatorGroup {
			continue
		}
		sid, name := e.SID, e.Name
		if sid == sidOwnerRights {
			sid, name = ownerSID, ownerName
		}
		if e.Deny {
			denied[sid] |= e.Mask
			continue
		}
		if allowed[sid] {
			continue
		}
		if bits := e.Mask & accessReadMask &^ denied[sid]; bits != 0 {
			add(principal(sid, name), "")
		}
	}
	return out
}

// exposedError is the error for a file or directory others can read.
func exposedError(what, path string, readers []string, dir bool) error {
	fix := fmt.Sprintf(`icacls "%s" /inheritance:r /grant:r "%s:R" "*%s:F" "*%s:F"`, path, WindowsServiceAccount, sidAdministrators, sidSystem)
	if dir {
		fix = fmt.Sprintf(`icacls "%s" /inheritance:r /grant:r "%s:(OI)(CI)M" "*%s:(OI)(CI)F" "*%s:(OI)(CI)F"`, path, WindowsServiceAccount, sidAdministrators, sidSystem)
	}
	return fmt.Errorf("%w: %s %s can be read by %s; 'easconnector service install' sets its ACL to %s, Administrators and SYSTEM, or run: %s",
		ErrSecretExposed, what, path, strings.Join(readers, ", "), WindowsServiceAccount, fix)
}

// SecretFiles returns the files the configuration reads secrets from (and
// the configuration's own path is not among them): what must be readable
// by the service account and nobody else.
func (c *Config) SecretFiles() []string {
	var out []string
	for _, p := range []string{c.Exchange.PasswordFile, c.MDM.ClientSecretFile, c.MDM.KeyFile, c.Server.TokenFile, c.Server.TLSKey, c.Notify.PasswordFile} {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

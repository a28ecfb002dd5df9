package config

import (
	"reflect"
	"strings"
	"testing"
)

// TestExposedReaders runs on every OS: the decision which principals a
// DACL lets read is pure; only reading the DACL is Windows-only.
func TestExposedReaders(t *testing.T) {
	const svc = "S-1-5-80-1111"
	const users, everyone, alice = "S-1-5-32-545", "S-1-1-0", "S-1-5-21-1-2-3-1001"
	allowed := map[string]bool{sidSystem: true, sidAdministrators: true, svc: true}
	full := uint32(0x001F01FF) // FILE_ALL_ACCESS
	read := uint32(0x00120089) // FILE_GENERIC_READ
	f := func(name, owner string, dacl []ACE, null bool, want []string) {
		t.Helper()
		got := exposedReaders(owner, "", dacl, null, allowed)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: exposedReaders = %q, want %q", name, got, want)
		}
	}
	private := []ACE{{SID: sidSystem, Mask: full}, {SID: sidAdministrators, Mask: full}, {SID: svc, Mask: read}}
	f("service, Administrators and SYSTEM only", sidAdministrators, private, false, nil)
	f("an empty DACL lets nobody in", sidAdministrators, nil, false, nil)
	f("Users can read", sidAdministrators, append(private, ACE{SID: users, Mask: read}), false, []string{users})
	f("Everyone with GENERIC_READ", sidAdministrators, append(private, ACE{SID: everyone, Mask: accessGenericRead}), false, []string{everyone})
	f("another account with WRITE_DAC only", sidAdministrators, append(private, ACE{SID: alice, Mask: accessWriteDAC}), false, []string{alice})
	f("another account with traverse only", sidAdministrators, append(private, ACE{SID: alice, Mask: 0x00100020}), false, nil) // SYNCHRONIZE|FILE_EXECUTE
	f("an inherit-only entry does not apply", sidAdministrators, append(private, ACE{SID: users, Mask: read, InheritOnly: true}), false, nil)
	f("CREATOR OWNER is a placeholder", sidAdministrators, append(private, ACE{SID: sidCreatorOwner, Mask: full}), false, nil)
	f("a deny before the allow cancels it", sidAdministrators, append([]ACE{{SID: users, Deny: true, Mask: full}}, append(private, ACE{SID: users, Mask: read})...), false, nil)
	f("a deny after the allow is too late", sidAdministrators, append(append(private, ACE{SID: users, Mask: read}), ACE{SID: users, Deny: true, Mask: full}), false, []string{users})
	f("a deny for another SID does not help", sidAdministrators, append([]ACE{{SID: everyone, Deny: true, Mask: full}}, append(private, ACE{SID: users, Mask: read})...), false, []string{users})
	f("owned by another account", alice, private, false, []string{alice + " (its owner, who can change its ACL)"})
	f("OWNER RIGHTS stands for the owner", alice, append(private, ACE{SID: sidOwnerRights, Mask: read}), false, []string{alice + " (its owner, who can change its ACL)"})
	f("null DACL", sidAdministrators, nil, true, []string{"Everyone (S-1-1-0) (the object has no DACL)"})

	got := exposedReaders(sidAdministrators, "", []ACE{{SID: users, Name: `BUILTIN\Users`, Mask: read}}, false, allowed)
	if len(got) != 1 || got[0] != `BUILTIN\Users (S-1-5-32-545)` {
		t.Errorf("names = %q", got)
	}
	err := exposedError("secret file", `C:\easc\graph.secret`, got, false)
	if msg := err.Error(); !strings.Contains(msg, `C:\easc\graph.secret can be read by BUILTIN\Users (S-1-5-32-545)`) || !strings.Contains(msg, "icacls") {
		t.Errorf("exposedError = %v", err)
	}
}

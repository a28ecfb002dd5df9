package exsim

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/exchange"
)

func TestParseFilterCanonical(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		got, err := ParseFilter(in)
		if err != nil {
			t.Errorf("ParseFilter(%q) = %v", in, err)
			return
		}
		if got.String() != want {
			t.Errorf("ParseFilter(%q) = %s, want %s", in, got, want)
		}
	}
	f("HasActiveSyncDevicePartnership -eq $true", "HasActiveSyncDevicePartnership -eq $true")
	f("DeviceAccessState -EQ 'Quarantined' -OR DeviceAccessState -eq \"DeviceDiscovery\"",
		"(DeviceAccessState -eq 'Quarantined' -or DeviceAccessState -eq 'DeviceDiscovery')")
	f("A -eq 1 -or B -eq 2 -and C -eq 3", "(A -eq '1' -or (B -eq '2' -and C -eq '3'))")
	f("(A -eq 1 -or B -eq 2) -and C -eq 3", "((A -eq '1' -or B -eq '2') -and C -eq '3')")
	f("-not DisplayName -like 'CAS_{*'", "(-not DisplayName -like 'CAS_{*')")
	f("HasActiveSyncDevicePartnership -eq $true -and -not DisplayName -like 'CAS_{*'",
		"(HasActiveSyncDevicePartnership -eq $true -and (-not DisplayName -like 'CAS_{*'))")
	f("Name -eq 'O''Brien'", "Name -eq 'O''Brien'")
	f(`Name -eq "say ""hi"""`, `Name -eq 'say "hi"'`)
	f("FirstSyncTime -gt '03/01/2025 12:00:00'", "FirstSyncTime -gt '03/01/2025 12:00:00'")
	f("  ( ( X -ne $null ) )  ", "X -ne $null")
	f("DeviceId -notlike '*abc*'", "DeviceId -notlike '*abc*'")
}

func TestParseFilterErrors(t *testing.T) {
	f := func(in string, pos int) {
		t.Helper()
		_, err := ParseFilter(in)
		var fe *FilterError
		if !errors.As(err, &fe) || fe.Pos != pos || fe.Reason != reasonSyntax {
			t.Errorf("ParseFilter(%q) = %v, want syntax error at %d", in, err, pos)
		}
	}
	f("", 1)
	f("DeviceId", 9)
	f("DeviceId -eq", 13)
	f("DeviceId -eq 'x", 14)
	f("DeviceId -contains 'x'", 10)
	f("DeviceId -eq 'x' -and", 22)
	f("(DeviceId -eq 'x'", 18)
	f("DeviceId -eq 'x')", 17)
	f("DeviceId -eq $nothing", 14)
	f("-eq 'x'", 1)
	f("'x' -eq DeviceId", 1)
	f("Device.Id -eq 'x'", 1)
	f(strings.Repeat("(", 200)+"A -eq 1"+strings.Repeat(")", 200), 101)
	f("DeviceId -gt $null", 14)
}

func TestFilterEvaluation(t *testing.T) {
	mb := &mailbox{name: "Peggy O'Brien", dn: "CN=Peggy O'Brien,OU=Users,DC=contoso,DC=com"}
	d := &device{mb: mb, id: "ApplXYZ", typ: "iPhone", dn: "CN=iPhone§ApplXYZ,CN=ExchangeActiveSyncDevices," + mb.dn,
		firstSync: time.Date(2025, 2, 10, 8, 30, 0, 0, time.UTC), client: "EAS"}
	dev := &deviceRec{d: d, model: "iPhone15C2", verdict: Verdict{State: exchange.AccessQuarantined, Reason: exchange.ReasonGlobal}}
	box := &mailboxRec{mb: mb, allowed: []string{"ApplXYZ", "androidc1"}, enabled: true, partner: true}
	devCase := func(filter string, want bool) {
		t.Helper()
		f, err := ParseFilter(filter)
		if err != nil {
			t.Fatalf("ParseFilter(%q): %v", filter, err)
		}
		pred, ferr := compileFilter(f, deviceSchema)
		if ferr != nil {
			t.Fatalf("compile %q: %v", filter, ferr)
		}
		if got := pred(dev); got != want {
			t.Errorf("%q = %v, want %v", filter, got, want)
		}
	}
	devCase("DeviceAccessState -eq 'quarantined'", true)
	devCase("DeviceAccessState -ne 'Quarantined'", false)
	devCase("DeviceAccessState -eq 'Quarantined' -or DeviceAccessState -eq 'DeviceDiscovery'", true)
	devCase("DeviceAccessState -eq Allowed", false)
	devCase("DeviceAccessState -gt 'Blocked'", true) // enum order: Unknown, Allowed, Blocked, Quarantined, DeviceDiscovery
	devCase("FirstSyncTime -gt '02/10/2025 08:29:59'", true)
	devCase("FirstSyncTime -gt '2/10/2025 8:30:00 AM'", false)
	devCase("FirstSyncTime -ge '2025-02-10T08:30:00Z'", true)
	devCase("FirstSyncTime -lt '2025-02-10T09:30:00+02:00'", false) // 07:30 UTC
	devCase("FirstSyncTime -le '2/10/2025'", false)
	devCase("FirstSyncTime -ne $null", true)
	devCase("UserDisplayName -eq 'Peggy O''Brien'", true)
	devCase("ProvisioningFlags -eq 0", true)
	devCase("ProvisioningFlags -gt 0", false)
	devCase("DeviceId -like 'appl*'", true)
	devCase("DeviceId -like '*X*Z'", true)
	devCase("DeviceId -like '*X*Q'", false)
	devCase("DeviceId -notlike 'Appl*'", false)
	devCase("DeviceModel -eq $null", false)
	devCase("FriendlyName -eq $null", true)
	devCase("-not (DeviceType -eq 'iPhone' -and ClientType -eq 'EAS')", false)
	devCase("DeviceImei -eq ''", true)

	boxCase := func(filter string, want bool) {
		t.Helper()
		f, err := ParseFilter(filter)
		if err != nil {
			t.Fatalf("ParseFilter(%q): %v", filter, err)
		}
		pred, ferr := compileFilter(f, mailboxSchema)
		if ferr != nil {
			t.Fatalf("compile %q: %v", filter, ferr)
		}
		if got := pred(box); got != want {
			t.Errorf("%q = %v, want %v", filter, got, want)
		}
	}
	boxCase("HasActiveSyncDevicePartnership -eq $true", true)
	boxCase("ActiveSyncEnabled -eq $false", false)
	boxCase("ActiveSyncEnabled -ne 'False'", true)
	boxCase("ActiveSyncAllowedDeviceIDs -eq 'ANDROIDC1'", true)
	boxCase("ActiveSyncAllowedDeviceIDs -ne 'androidc1'", false)
	boxCase("ActiveSyncBlockedDeviceIDs -eq $null", true)
	boxCase("ActiveSyncAllowedDeviceIDs -like 'android*'", true)
	boxCase("Name -eq 'Peggy O''Brien'", true)

	bad := func(filter, reasonPart string, pos int) {
		t.Helper()
		f, err := ParseFilter(filter)
		if err != nil {
			t.Fatalf("ParseFilter(%q): %v", filter, err)
		}
		_, ferr := compileFilter(f, deviceSchema)
		if ferr == nil || !strings.Contains(ferr.Reason, reasonPart) || ferr.Pos != pos {
			t.Errorf("compile %q = %v, want %q at %d", filter, ferr, reasonPart, pos)
		}
	}
	bad("LastSuccessSync -gt '01/01/2025'", `"LastSuccessSync" is not a recognized filterable property`, 1)
	bad("DeviceId -eq 'x' -and IsManaged -eq $true", `"IsManaged" is not a recognized filterable property`, 23)
	// Only Get-MobileDevice.md's filterable properties: not the AD ones.
	bad("DistinguishedName -eq 'CN=x'", `"DistinguishedName" is not a recognized filterable property`, 1)
	bad("Name -eq 'iPhone§ApplXYZ'", `"Name" is not a recognized filterable property`, 1)
	bad("Guid -eq 'x'", `"Guid" is not a recognized filterable property`, 1)
	bad("DeviceAccessState -eq 'Sideways'", "could not be converted", 23)
	bad("FirstSyncTime -gt 'last tuesday'", "could not be converted to type System.DateTime", 19)
	bad("FirstSyncTime -like '2025*'", "isn't supported", 21)
}

func TestWildcard(t *testing.T) {
	f := func(pattern, s string, want bool) {
		t.Helper()
		if got := newWildcard(pattern).match(s); got != want {
			t.Errorf("%q like %q = %v, want %v", s, pattern, got, want)
		}
	}
	f("*", "", true)
	f("abc", "ABC", true)
	f("ab*", "abc", true)
	f("*bc", "abc", true)
	f("a*c", "abbbc", true)
	f("ab*b", "ab", false)
	f("a**c", "ac", true)
	f("*a*b*", "xxaxxbxx", true)
	f("*a*b*", "xxbxxaxx", false)
}

// FuzzOPATH checks that the parser never panics, that its canonical form
// parses back to itself, and that compiled filters evaluate without panics.
func FuzzOPATH(f *testing.F) {
	for _, s := range []string{
		"HasActiveSyncDevicePartnership -eq $true",
		"FirstSyncTime -gt '03/01/2025 12:00:00'",
		"DeviceAccessState -eq 'Quarantined' -or DeviceAccessState -eq 'DeviceDiscovery'",
		"DistinguishedName -eq 'CN=a,DC=x' -or DistinguishedName -eq 'CN=O''Brien,DC=x'",
		"-not (DeviceId -like '*x*') -and ClientType -ne $null",
		`Name -eq "a""b"`,
	} {
		f.Add(s)
	}
	mb := &mailbox{name: "N", dn: "CN=N,DC=x"}
	d := &device{mb: mb, id: "ID", typ: "T", client: "EAS", firstSync: time.Unix(1_700_000_000, 0).UTC()}
	dev := &deviceRec{d: d, verdict: Verdict{State: exchange.AccessAllowed, Reason: exchange.ReasonGlobal}}
	box := &mailboxRec{mb: mb, allowed: []string{"a"}}
	f.Fuzz(func(t *testing.T, src string) {
		flt, err := ParseFilter(src)
		if err != nil {
			var fe *FilterError
			if !errors.As(err, &fe) || fe.Pos < 1 || fe.Pos > len(src)+1 {
				t.Fatalf("ParseFilter(%q) error %v has position out of range", src, err)
			}
			return
		}
		canon := flt.String()
		again, err := ParseFilter(canon)
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", canon, src, err)
		}
		if again.String() != canon {
			t.Fatalf("canonical form not stable: %q → %q", canon, again.String())
		}
		if pred, ferr := compileFilter(flt, deviceSchema); ferr == nil {
			pred(dev)
		}
		if pred, ferr := compileFilter(flt, mailboxSchema); ferr == nil {
			pred(box)
		}
	})
}

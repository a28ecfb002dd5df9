package exchange

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/easconnector/easconnector/runspace"
)

// deviceJSON is a device object as the bootstrap writes it: Exchange
// property names, dates in .NET's round-trip format ("o", 7 fractional
// digits), null for a property the object lacks.
func deviceJSON(identity, dn, id, typ, first string) string {
	if first != "null" {
		first = `"` + first + `"`
	}
	return fmt.Sprintf(`{"Identity":%q,"DistinguishedName":%q,"DeviceId":%q,"DeviceType":%q,"DeviceModel":"iPhone15C2",`+
		`"DeviceOS":"iOS 17.5.1 21F90","DeviceUserAgent":"Apple-iPhone15C2/2105.90","UserDisplayName":"contoso.com/Users/Pat",`+
		`"FirstSyncTime":%s,"DeviceAccessState":"Quarantined","DeviceAccessStateReason":"Global","ClientType":"EAS"}`,
		identity, dn, id, typ, first)
}

func TestMobileDevicesDecodeAndValidate(t *testing.T) {
	hostile := "'; Remove-Mailbox x -Confirm:$false; '"
	fk := &fake{respond: objects(
		deviceJSON(`contoso.com/Users/Pat/ExchangeActiveSyncDevices/iPhone§ApplF17X`,
			`CN=iPhone§ApplF17X,CN=ExchangeActiveSyncDevices,CN=Pat\, O'Brien,OU=Users,DC=contoso,DC=com`,
			"ApplF17X", "iPhone", "2024-05-01T10:00:00.1234567Z"),
		deviceJSON(`contoso.com/Users/Pat/ExchangeActiveSyncDevices/Evil§x`,
			`CN=Evil§x,CN=ExchangeActiveSyncDevices,CN=Pat,DC=contoso,DC=com`, hostile, "iPhone$(calc)", "null"),
		`{"Identity":"contoso.com/Users/Pat/ExchangeActiveSyncDevices/Bad§Date","DeviceId":"GoodId1","FirstSyncTime":"05/01/2024"}`,
		`null`,
	)}
	type got struct {
		dev MobileDevice
		err error
	}
	var all []got
	err := New(fk).MobileDevices(t.Context(), DeviceFilter{}, func(d MobileDevice, err error) error {
		all = append(all, got{d, err})
		return nil
	})
	if err != nil {
		t.Fatalf("MobileDevices() = %v", err)
	}
	if len(all) != 4 {
		t.Fatalf("MobileDevices delivered %d devices, want 4 (none dropped)", len(all))
	}
	want0 := MobileDevice{
		Identity:          `contoso.com/Users/Pat/ExchangeActiveSyncDevices/iPhone§ApplF17X`,
		DistinguishedName: `CN=iPhone§ApplF17X,CN=ExchangeActiveSyncDevices,CN=Pat\, O'Brien,OU=Users,DC=contoso,DC=com`,
		DeviceId:          "ApplF17X", DeviceType: "iPhone", DeviceModel: "iPhone15C2", DeviceOS: "iOS 17.5.1 21F90",
		DeviceUserAgent: "Apple-iPhone15C2/2105.90", UserDisplayName: "contoso.com/Users/Pat",
		FirstSyncTime:     time.Date(2024, 5, 1, 10, 0, 0, 123456700, time.UTC),
		DeviceAccessState: AccessQuarantined, DeviceAccessStateReason: ReasonGlobal, ClientType: "EAS",
	}
	if all[0].err != nil || !reflect.DeepEqual(all[0].dev, want0) {
		t.Errorf("device 0 = %+v, %v\nwant %+v", all[0].dev, all[0].err, want0)
	}
	if dn, err := all[0].dev.MailboxDN(); dn != `CN=Pat\, O'Brien,OU=Users,DC=contoso,DC=com` || err != nil {
		t.Errorf("MailboxDN() = %q, %v", dn, err)
	}
	if e := all[1].err; !errors.Is(e, ErrInvalidDeviceID) || !strings.Contains(e.Error(), "Evil§x") {
		t.Errorf("hostile device error = %v, want ErrInvalidDeviceID naming the identity", e)
	}
	if all[1].dev.DeviceId != hostile || !all[1].dev.FirstSyncTime.IsZero() {
		t.Errorf("hostile device = %+v, want its fields kept as data", all[1].dev)
	}
	if e := all[2].err; e == nil || !strings.Contains(e.Error(), "decode mobile device") || !strings.Contains(e.Error(), "Bad§Date") {
		t.Errorf("undecodable device error = %v, want a decode error naming the identity", e)
	}
	if !errors.Is(all[3].err, ErrInvalidDeviceID) {
		t.Errorf("null object error = %v, want ErrInvalidDeviceID", all[3].err)
	}
}

// TestMobileDevicesExactFilter: the server-side filter is widened by the
// time-zone margin; the exact bound and the states apply client-side.
func TestMobileDevicesExactFilter(t *testing.T) {
	after := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	fk := &fake{respond: objects(
		deviceJSON("a", "", "A1", "t", "2024-05-01T10:00:00.0000000Z"), // equal: not after
		deviceJSON("b", "", "B1", "t", "2024-05-01T10:00:00.0000001Z"),
		deviceJSON("c", "", "C1", "t", "2024-04-30T23:00:00.0000000Z"),
		strings.Replace(deviceJSON("d", "", "D1", "t", "2024-05-02T00:00:00Z"), "Quarantined", "Allowed", 1),
	)}
	var ids []string
	f := DeviceFilter{FirstSyncAfter: after, States: []AccessState{AccessQuarantined}}
	err := New(fk).MobileDevices(t.Context(), f, func(d MobileDevice, err error) error {
		ids = append(ids, d.DeviceId)
		return err
	})
	if err != nil || !reflect.DeepEqual(ids, []string{"B1"}) {
		t.Errorf("MobileDevices() delivered %v, %v; want [B1]", ids, err)
	}
}

func TestMobileDevicesStops(t *testing.T) {
	stop := errors.New("enough")
	fk := &fake{respond: objects(deviceJSON("a", "", "A1", "t", "null"), deviceJSON("b", "", "B1", "t", "null"))}
	n := 0
	err := New(fk).MobileDevices(t.Context(), DeviceFilter{}, func(MobileDevice, error) error {
		n++
		return stop
	})
	if err != stop || n != 1 {
		t.Errorf("MobileDevices() = %v after %d devices, want the callback's error after 1", err, n)
	}
}

// TestCASMailboxesBatches: identities are deduplicated, sent 50 per call,
// and only requested mailboxes come back, each once.
func TestCASMailboxesBatches(t *testing.T) {
	var ids []string
	for i := range 120 {
		ids = append(ids, fmt.Sprintf("CN=User %d,OU=Users,DC=contoso,DC=com", i))
	}
	ids = append(ids, strings.ToUpper(ids[3]), ids[7]) // duplicates
	fk := &fake{respond: func(c runspace.Call) response {
		filter := c.Args["Filter"].(string)
		var objs []string
		for term := range strings.SplitSeq(filter, " -or ") {
			dn := strings.TrimSuffix(strings.TrimPrefix(term, "DistinguishedName -eq '"), "'")
			obj := fmt.Sprintf(`{"Identity":%q,"DistinguishedName":%q,"ActiveSyncEnabled":true,"HasActiveSyncDevicePartnership":true,`+
				`"ActiveSyncAllowedDeviceIDs":["A1"],"ActiveSyncBlockedDeviceIDs":[]}`, dn, dn)
			objs = append(objs, obj, obj) // a repeated object
		}
		// A mailbox nobody asked for, as a too-wide filter would return.
		objs = append(objs, `{"Identity":"admin","DistinguishedName":"CN=Administrator,CN=Users,DC=contoso,DC=com"}`)
		return response{objs: objs, count: -1}
	}}
	seen := map[string]int{}
	err := New(fk).CASMailboxes(t.Context(), ids, func(m CASMailbox) error {
		seen[m.DistinguishedName]++
		return nil
	})
	if err != nil {
		t.Fatalf("CASMailboxes() = %v", err)
	}
	calls := fk.sent()
	if len(calls) != 3 {
		t.Fatalf("CASMailboxes sent %d calls, want 3", len(calls))
	}
	for i, want := range []int{50, 50, 20} {
		if n := strings.Count(calls[i].Args["Filter"].(string), "DistinguishedName -eq"); n != want {
			t.Errorf("call %d asks for %d mailboxes, want %d", i, n, want)
		}
	}
	if len(seen) != 120 {
		t.Errorf("delivered %d mailboxes, want 120", len(seen))
	}
	for dn, n := range seen {
		if n != 1 || !strings.HasPrefix(dn, "CN=User ") {
			t.Errorf("mailbox %s delivered %d times", dn, n)
		}
	}

	// A DN with a typographic quote is read by -Identity; a missing one is
	// absent, not an error.
	notFound := &runspace.RemoteError{Type: "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException", Msg: "couldn't be found"}
	fk3 := &fake{respond: func(c runspace.Call) response {
		if c.Args["Identity"] == "CN=Gone’,DC=x" {
			return response{err: fmt.Errorf("Get-CASMailbox: %w", notFound), count: -1}
		}
		return response{objs: []string{`{"DistinguishedName":"CN=O’Brien,DC=x"}`}, count: -1}
	}}
	var names []string
	err = New(fk3).CASMailboxes(t.Context(), []string{"CN=O’Brien,DC=x", "CN=Gone’,DC=x", "CN=Plain,DC=x"}, func(m CASMailbox) error {
		names = append(names, m.DistinguishedName)
		return nil
	})
	if err != nil || !reflect.DeepEqual(names, []string{"CN=O’Brien,DC=x"}) || len(fk3.sent()) != 3 {
		t.Errorf("CASMailboxes(typographic) = %v, %v after %d calls; want [CN=O’Brien,DC=x] after 3", names, err, len(fk3.sent()))
	}

	// An empty, non-nil list reads nothing.
	fk2 := &fake{}
	if err := New(fk2).CASMailboxes(t.Context(), []string{}, nil); err != nil || len(fk2.sent()) != 0 {
		t.Errorf("CASMailboxes([]) = %v with %d calls, want nil and 0", err, len(fk2.sent()))
	}
}

func TestCASMailboxesAllRecheck(t *testing.T) {
	fk := &fake{respond: objects(
		`{"Identity":"pat","DistinguishedName":"CN=Pat,DC=x","HasActiveSyncDevicePartnership":true,"ActiveSyncAllowedDeviceIDs":null,"ActiveSyncBlockedDeviceIDs":["B1","B2"]}`,
		`{"Identity":"sam","DistinguishedName":"CN=Sam,DC=x","HasActiveSyncDevicePartnership":false}`,
	)}
	var got []CASMailbox
	err := New(fk).CASMailboxes(t.Context(), nil, func(m CASMailbox) error { got = append(got, m); return nil })
	want := []CASMailbox{{Identity: "pat", DistinguishedName: "CN=Pat,DC=x", HasActiveSyncDevicePartnership: true,
		ActiveSyncBlockedDeviceIDs: []string{"B1", "B2"}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("CASMailboxes(nil) = %+v, %v, want %+v", got, err, want)
	}
	stop := errors.New("stop")
	err = New(fk).CASMailboxes(t.Context(), nil, func(CASMailbox) error { return stop })
	if err != stop {
		t.Errorf("CASMailboxes with stopping callback = %v, want the callback's error unwrapped", err)
	}
	fk.respond = objects(`{"Identity":"pat","ActiveSyncAllowedDeviceIDs":"A1"}`)
	err = New(fk).CASMailboxes(t.Context(), nil, func(CASMailbox) error { return nil })
	if err == nil || !strings.Contains(err.Error(), `decode cas mailbox "pat"`) {
		t.Errorf("CASMailboxes(bad shape) = %v, want a decode error naming the mailbox", err)
	}
}

func TestMailboxDN(t *testing.T) {
	f := func(dn, want, wantErr string) {
		t.Helper()
		got, err := MobileDevice{Identity: "x", DistinguishedName: dn}.MailboxDN()
		switch {
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Errorf("MailboxDN(%q) error = %v, want %q", dn, err, wantErr)
		case wantErr == "" && (err != nil || got != want):
			t.Errorf("MailboxDN(%q) = %q, %v, want %q", dn, got, err, want)
		}
	}
	f(`CN=iPhone§ApplF17X,CN=ExchangeActiveSyncDevices,CN=Pat Smith,OU=Users,DC=contoso,DC=com`,
		`CN=Pat Smith,OU=Users,DC=contoso,DC=com`, "")
	f(`CN=iPhone§ApplF17X,CN=ExchangeActiveSyncDevices,CN=Smith\, Pat,OU=Users,DC=contoso,DC=com`,
		`CN=Smith\, Pat,OU=Users,DC=contoso,DC=com`, "")
	// The device RDN is phone-chosen: escaped commas, backslashes, hex pairs.
	f(`CN=Evil\,CN\=ExchangeActiveSyncDevices\,CN\=Admin§x,CN=ExchangeActiveSyncDevices,CN=Pat,DC=contoso,DC=com`,
		`CN=Pat,DC=contoso,DC=com`, "")
	f(`CN=a\\\2C§b,cn=exchangeactivesyncdevices,CN=Pat\\,DC=x`, `CN=Pat\\,DC=x`, "")
	f(`CN=a+UID=b,CN=ExchangeActiveSyncDevices, CN=Pat,DC=x`, `CN=Pat,DC=x`, "")
	f(`CN=Ünï§c0de,CN=ExchangeActiveSyncDevices,CN=Zoë ‘Q’,DC=x`, `CN=Zoë ‘Q’,DC=x`, "")
	f(``, ``, "too few RDNs")
	f(`CN=a,CN=ExchangeActiveSyncDevices`, ``, "too few RDNs")
	f(`CN=a\,CN=ExchangeActiveSyncDevices,CN=Pat`, ``, "is not CN=ExchangeActiveSyncDevices")
	f(`CN=a,CN=Other,CN=Pat,DC=x`, ``, "is not CN=ExchangeActiveSyncDevices")
	f(`CN=a,CN=ExchangeActiveSyncDevices,CN=Pat\`, ``, "dangling escape")
	f(`CN=a,CN=ExchangeActiveSyncDevices,CN=Pat,,DC=x`, ``, "empty RDN")
	f(`CN=a,CN=ExchangeActiveSyncDevices,CN=Pat,`, ``, "ends with a comma")
	f(`CN=a,CN=ExchangeActiveSyncDevices,Pat`, ``, "no attribute type")
	f(`=a,CN=ExchangeActiveSyncDevices,CN=Pat`, ``, "no attribute type")
}

// FuzzMailboxDN: whatever the device DN, MailboxDN never panics, and on
// success its result is a suffix of the input that, put back under a device
// and the EAS container, yields itself again.
func FuzzMailboxDN(f *testing.F) {
	for _, s := range []string{
		`CN=iPhone§ApplF17X,CN=ExchangeActiveSyncDevices,CN=Smith\, Pat,OU=Users,DC=contoso,DC=com`,
		`CN=a\\\2C§b,CN=ExchangeActiveSyncDevices,CN=Pat\\,DC=x`,
		`CN=a+UID=b,CN=ExchangeActiveSyncDevices, CN=Pat,DC=x`,
		`CN=a,CN=ExchangeActiveSyncDevices,CN=Pat\`,
		`CN=Evil\,CN\=ExchangeActiveSyncDevices\,CN\=Admin§x,CN=ExchangeActiveSyncDevices,CN=Pat,DC=x`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dn string) {
		got, err := MobileDevice{DistinguishedName: dn}.MailboxDN()
		if err != nil {
			return
		}
		if !strings.HasSuffix(dn, got) || got == "" {
			t.Fatalf("MailboxDN(%q) = %q, not a non-empty suffix", dn, got)
		}
		again, err := MobileDevice{DistinguishedName: `CN=x\,y§z,CN=ExchangeActiveSyncDevices,` + got}.MailboxDN()
		if err != nil || again != got {
			t.Fatalf("MailboxDN round trip of %q = %q, %v", got, again, err)
		}
	})
}

// unquotePS reads one single-quoted string the way PowerShell's tokenizer
// does (any of the five single-quote characters opens, closes, or, doubled,
// stands for itself) and returns its value and what follows it.
func unquotePS(s string) (val, rest string, ok bool) {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 || !isSingleQuote(r) {
		return "", s, false
	}
	var b strings.Builder
	for i := n; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		i += n
		if !isSingleQuote(r) {
			b.WriteString(s[i-n : i])
			continue
		}
		if r2, n2 := utf8.DecodeRuneInString(s[i:]); n2 > 0 && isSingleQuote(r2) {
			b.WriteString(s[i : i+n2])
			i += n2
			continue
		}
		return b.String(), s[i:], true
	}
	return "", "", false
}

func TestOPATHQuote(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		if got := opathQuote(in); got != want {
			t.Errorf("opathQuote(%q) = %s, want %s", in, got, want)
		}
	}
	f(`CN=Pat,DC=x`, `'CN=Pat,DC=x'`)
	f(`O'Brien`, `'O''Brien'`)
	f("a\u2018b\u2019c\u201ad\u201be", "'a\u2018\u2018b\u2019\u2019c\u201a\u201ad\u201b\u201be'")
	f(`$(calc) "x" `+"`n", `'$(calc) "x" `+"`n'")
}

// FuzzOPATHQuote: a quoted value reads back, under PowerShell's quoting
// rules, as exactly itself and ends where the quoting ends.
func FuzzOPATHQuote(f *testing.F) {
	for _, s := range []string{"", "O'Brien", "'; Remove-Mailbox x -Confirm:$false; '", "\u2019) -or (1 -eq 1", "''\u2018"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := opathQuote(s)
		val, rest, ok := unquotePS(q + " -or x")
		if !ok || val != s || rest != " -or x" {
			t.Fatalf("opathQuote(%q) = %s reads back as %q, rest %q, ok %v", s, q, val, rest, ok)
		}
	})
}

// FuzzMobileDeviceObject: whatever object a server sends, MobileDevices
// hands it to the callback exactly once, with an error unless it decodes to
// a device with a valid DeviceId, and never panics.
func FuzzMobileDeviceObject(f *testing.F) {
	f.Add(deviceJSON("a", "CN=x,CN=ExchangeActiveSyncDevices,CN=P,DC=x", "ApplF17X", "iPhone", "2024-05-01T10:00:00.1234567Z"))
	f.Add(`{"DeviceId":"'; Remove-Mailbox x; '","FirstSyncTime":"05/01/2024"}`)
	f.Add(`null`)
	f.Add(`{"DeviceId":["A"]}`)
	f.Fuzz(func(t *testing.T, obj string) {
		if !json.Valid([]byte(obj)) {
			return // the session layer refuses frames that are not JSON
		}
		fk := &fake{respond: objects(obj)}
		calls := 0
		err := New(fk).MobileDevices(t.Context(), DeviceFilter{}, func(d MobileDevice, err error) error {
			calls++
			if err == nil && !ValidDeviceID(d.DeviceId) {
				t.Fatalf("device %q delivered without error", d.DeviceId)
			}
			_, _ = d.MailboxDN()
			return nil
		})
		if err != nil || calls != 1 {
			t.Fatalf("MobileDevices(%q) = %v after %d callbacks, want nil after 1", obj, err, calls)
		}
	})
}

// FuzzExchangeServerJSON: the custom decoder never panics, and what it
// accepts survives a marshal/unmarshal round trip.
func FuzzExchangeServerJSON(f *testing.F) {
	f.Add(`{"Name":"EX1","ServerRole":"Mailbox, ClientAccess"}`)
	f.Add(`{"Name":"EX1","ServerRole":["Mailbox"],"Site":null}`)
	f.Add(`{"ServerRole":7}`)
	f.Fuzz(func(t *testing.T, in string) {
		var s ExchangeServer
		if json.Unmarshal([]byte(in), &s) != nil {
			return
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back ExchangeServer
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, s) {
			t.Fatalf("%s → %+v → %s → %+v, %v", in, s, b, back, err)
		}
	})
}

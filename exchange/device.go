package exchange

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/easconnector/easconnector/runspace"
)

// DeviceFilter narrows MobileDevices. The zero value selects every device.
type DeviceFilter struct {
	// Mailbox limits the read to one mailbox (Get-MobileDevice -Mailbox).
	Mailbox string
	// FirstSyncAfter, if set, selects devices whose FirstSyncTime is after it.
	FirstSyncAfter time.Time
	// States, if set, selects devices in any of these access states.
	States []AccessState
}

// opathDateLayout is the en-US form Exchange's OPATH parser reads dates in.
const opathDateLayout = "01/02/2006 15:04:05"

// filterMargin widens the server-side FirstSyncTime bound. Exchange reads an
// OPATH date in the server's time zone, which we do not know; UTC offsets
// lie within ±14h, so a bound 14h early always selects a superset, and
// MobileDevices applies the exact bound to what comes back.
const filterMargin = 14 * time.Hour

var knownStates = []AccessState{AccessAllowed, AccessBlocked, AccessQuarantined, AccessDeviceDiscovery, AccessUnknown}

// opathFilter builds the -Filter of f. It is composed only of property names,
// operators, enum names checked against knownStates and a formatted date:
// never of a string that came from a device or the caller.
func (f DeviceFilter) opathFilter() (string, error) {
	var terms []string
	if !f.FirstSyncAfter.IsZero() {
		t := f.FirstSyncAfter.UTC().Add(-filterMargin).Truncate(time.Second)
		terms = append(terms, "FirstSyncTime -gt '"+t.Format(opathDateLayout)+"'")
	}
	if len(f.States) > 0 {
		var or []string
		for _, s := range f.States {
			if !slices.Contains(knownStates, s) {
				return "", fmt.Errorf("device filter: unknown access state %s", quote(string(s)))
			}
			term := "DeviceAccessState -eq '" + string(s) + "'"
			if !slices.Contains(or, term) {
				or = append(or, term)
			}
		}
		if len(or) == 1 {
			terms = append(terms, or[0])
		} else {
			terms = append(terms, "("+strings.Join(or, " -or ")+")")
		}
	}
	return strings.Join(terms, " -and "), nil
}

// match applies f exactly to a device the server returned.
func (f DeviceFilter) match(d *MobileDevice) bool {
	if !f.FirstSyncAfter.IsZero() && !d.FirstSyncTime.After(f.FirstSyncAfter) {
		return false
	}
	if len(f.States) > 0 && !slices.Contains(f.States, d.DeviceAccessState) {
		return false
	}
	return true
}

// MobileDevices streams the devices matching f (Get-MobileDevice
// -ResultSize Unlimited) to each, one at a time, as they arrive.
//
// Every device reaches each, paired with a nil error or with an error
// describing why it must not be acted on: a DeviceId that fails
// ValidDeviceID gives an error wrapping ErrInvalidDeviceID and naming the
// device's Identity; an object that does not decode gives a decode error.
// Devices are never dropped silently. If each returns an error, the read
// stops and MobileDevices returns that error.
func (c *Client) MobileDevices(ctx context.Context, f DeviceFilter, each func(MobileDevice, error) error) error {
	filter, err := f.opathFilter()
	if err != nil {
		return fmt.Errorf("get mobile devices: %w", err)
	}
	if strings.ContainsFunc(f.Mailbox, isControl) {
		return fmt.Errorf("get mobile devices: mailbox %s contains control characters", quote(f.Mailbox))
	}
	args := map[string]any{"ResultSize": resultSizeUnlimited}
	if f.Mailbox != "" {
		args["Mailbox"] = f.Mailbox
	}
	if filter != "" {
		args["Filter"] = filter
	}
	call := runspace.Call{Cmd: cmdGetMobileDevice, Args: args, Select: mobileDeviceProps}
	stopped := false
	err = c.read(ctx, call, func(raw json.RawMessage) error {
		var d MobileDevice
		var derr error
		if err := json.Unmarshal(raw, &d); err != nil {
			derr = fmt.Errorf("decode mobile device %s: %w", identityOf(raw), err)
		} else if !f.match(&d) {
			return nil
		} else {
			derr = d.Validate()
		}
		if err := each(d, derr); err != nil {
			stopped = true
			return err
		}
		return nil
	})
	if err != nil && !stopped {
		return fmt.Errorf("get mobile devices: %w", err)
	}
	return err
}

// CountMobileDevices counts the devices Exchange lets this account see, up
// to limit (0: all of them), asking for nothing but the DeviceId. A result
// equal to limit means "at least limit". It is for diagnostics (easconnector
// check); a sync reads devices with MobileDevices.
func (c *Client) CountMobileDevices(ctx context.Context, limit int) (int, error) {
	if limit < 0 {
		return 0, fmt.Errorf("count mobile devices: negative limit %d", limit)
	}
	var size any = resultSizeUnlimited
	if limit > 0 {
		size = limit
	}
	call := runspace.Call{Cmd: cmdGetMobileDevice, Args: map[string]any{"ResultSize": size}, Select: []string{"DeviceId"}}
	n := 0
	if err := c.read(ctx, call, func(json.RawMessage) error { n++; return nil }); err != nil {
		return n, fmt.Errorf("count mobile devices: %w", err)
	}
	return n, nil
}

// Validate reports whether d may be acted on: its DeviceId must pass
// ValidDeviceID. The error wraps ErrInvalidDeviceID and names the Identity.
func (d *MobileDevice) Validate() error {
	if !ValidDeviceID(d.DeviceId) {
		return fmt.Errorf("mobile device %s: %w %s", quote(d.Identity), ErrInvalidDeviceID, quote(d.DeviceId))
	}
	return nil
}

// identityOf extracts the Identity of an object that failed to decode, for
// the error message.
func identityOf(raw json.RawMessage) string {
	var v struct{ Identity any }
	if json.Unmarshal(raw, &v) == nil {
		if s, ok := v.Identity.(string); ok {
			return quote(s)
		}
	}
	return "(unknown identity)"
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// easDevicesRDN is the container Exchange keeps a user's EAS devices in.
const easDevicesRDN = "CN=ExchangeActiveSyncDevices"

// MailboxDN returns the distinguished name of the mailbox user that owns the
// device: the device's DN without its first two RDNs (the device itself and
// the ExchangeActiveSyncDevices container). It splits on unescaped commas
// only (RFC 4514), so a CN such as "Smith\, John" is kept whole; the device
// RDN, whose DeviceType the phone chose, may hold any escaped character.
func (d MobileDevice) MailboxDN() (string, error) {
	dn := d.DistinguishedName
	first, err := rdnEnd(dn, 0)
	if err != nil {
		return "", fmt.Errorf("mailbox of %s: %w", quote(d.Identity), err)
	}
	second, err := rdnEnd(dn, first+1)
	if err != nil {
		return "", fmt.Errorf("mailbox of %s: %w", quote(d.Identity), err)
	}
	if !strings.EqualFold(strings.TrimSpace(dn[first+1:second]), easDevicesRDN) {
		return "", fmt.Errorf("mailbox of %s: second RDN %s is not %s", quote(d.Identity), quote(dn[first+1:second]), easDevicesRDN)
	}
	if second == len(dn) {
		return "", fmt.Errorf("mailbox of %s: distinguished name has too few RDNs", quote(d.Identity))
	}
	rest := strings.TrimLeft(dn[second+1:], " ")
	if rest == "" {
		return "", fmt.Errorf("mailbox of %s: distinguished name ends with a comma", quote(d.Identity))
	}
	// Check the remainder is a well-formed DN too: every RDN non-empty, with
	// an attribute type, and no dangling escape.
	for i := 0; i < len(rest); {
		end, err := rdnEnd(rest, i)
		if err != nil {
			return "", fmt.Errorf("mailbox of %s: %w", quote(d.Identity), err)
		}
		if end == len(rest)-1 {
			return "", fmt.Errorf("mailbox of %s: distinguished name ends with a comma", quote(d.Identity))
		}
		i = end + 1
	}
	return rest, nil
}

// rdnEnd returns the index of the unescaped comma that ends the RDN starting
// at start, or len(dn) for the last RDN. It fails on an RDN that is empty,
// lacks an attribute type ("type=value"), or ends in a dangling backslash.
func rdnEnd(dn string, start int) (int, error) {
	if start >= len(dn) {
		return 0, errors.New("distinguished name has too few RDNs")
	}
	eq := -1
	for i := start; i < len(dn); i++ {
		switch dn[i] {
		case '\\':
			if i+1 >= len(dn) {
				return 0, errors.New("distinguished name ends in a dangling escape")
			}
			i++ // the escaped byte, or the first of two hex digits
		case '=':
			if eq < 0 {
				eq = i
			}
		case ',':
			if err := checkRDN(dn[start:i], eq-start); err != nil {
				return 0, err
			}
			return i, nil
		}
	}
	if err := checkRDN(dn[start:], eq-start); err != nil {
		return 0, err
	}
	return len(dn), nil
}

func checkRDN(rdn string, eq int) error {
	if strings.TrimSpace(rdn) == "" {
		return errors.New("distinguished name has an empty RDN")
	}
	if eq <= 0 || strings.TrimSpace(rdn[:eq]) == "" {
		return fmt.Errorf("RDN %s has no attribute type", quote(rdn))
	}
	return nil
}

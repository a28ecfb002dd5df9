package exchange

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// AccessState is Exchange's DeviceAccessState of a mobile device.
type AccessState string

// The access states Exchange reports.
const (
	AccessAllowed         AccessState = "Allowed"
	AccessBlocked         AccessState = "Blocked"
	AccessQuarantined     AccessState = "Quarantined"
	AccessDeviceDiscovery AccessState = "DeviceDiscovery"
	AccessUnknown         AccessState = "Unknown"
)

// AccessReason is Exchange's DeviceAccessStateReason: which layer of the ABQ
// evaluation decided the state.
type AccessReason string

// The reasons Exchange reports.
const (
	ReasonGlobal     AccessReason = "Global"     // organization DefaultAccessLevel
	ReasonIndividual AccessReason = "Individual" // the mailbox's allowed/blocked lists
	ReasonDeviceRule AccessReason = "DeviceRule" // a device access rule
	ReasonPolicy     AccessReason = "Policy"     // mailbox policy not met
	ReasonUpgrade    AccessReason = "Upgrade"
	ReasonUnknown    AccessReason = "Unknown"
)

// AccessLevel is the level of DefaultAccessLevel and of device access rules.
type AccessLevel string

// Access levels.
const (
	LevelAllow      AccessLevel = "Allow"
	LevelBlock      AccessLevel = "Block"
	LevelQuarantine AccessLevel = "Quarantine"
)

// ParseAccessLevel accepts the level case-insensitively.
func ParseAccessLevel(s string) (AccessLevel, error) {
	for _, l := range []AccessLevel{LevelAllow, LevelBlock, LevelQuarantine} {
		if strings.EqualFold(s, string(l)) {
			return l, nil
		}
	}
	return "", fmt.Errorf("access level %q: want Allow, Block or Quarantine", s)
}

// Characteristic is what a device access rule matches on (exact match).
type Characteristic string

// Rule characteristics.
const (
	CharDeviceType  Characteristic = "DeviceType"
	CharDeviceModel Characteristic = "DeviceModel"
	CharDeviceOS    Characteristic = "DeviceOS"
	CharUserAgent   Characteristic = "UserAgent"
	CharXMSWLHeader Characteristic = "XMSWLHeader"
)

// MobileDevice is one EAS device partnership as Get-MobileDevice returns it.
// JSON names are Exchange's property names (the wire form of the bootstrap
// and the simulator). Every string except Identity and DistinguishedName is
// chosen by the phone: treat them as hostile.
type MobileDevice struct {
	Identity                string       `json:"Identity"`
	DistinguishedName       string       `json:"DistinguishedName"`
	DeviceId                string       `json:"DeviceId"`
	DeviceType              string       `json:"DeviceType"`
	DeviceModel             string       `json:"DeviceModel"`
	DeviceOS                string       `json:"DeviceOS"`
	DeviceUserAgent         string       `json:"DeviceUserAgent"`
	UserDisplayName         string       `json:"UserDisplayName"`
	FirstSyncTime           time.Time    `json:"FirstSyncTime"`
	DeviceAccessState       AccessState  `json:"DeviceAccessState"`
	DeviceAccessStateReason AccessReason `json:"DeviceAccessStateReason"`
	ClientType              string       `json:"ClientType"` // EAS or Outlook
}

// CASMailbox is the client access view of a mailbox (Get-CASMailbox).
type CASMailbox struct {
	Identity                       string   `json:"Identity"`
	Guid                           string   `json:"Guid"`
	DistinguishedName              string   `json:"DistinguishedName"`
	Name                           string   `json:"Name"`
	DisplayName                    string   `json:"DisplayName"`
	PrimarySmtpAddress             string   `json:"PrimarySmtpAddress"`
	SamAccountName                 string   `json:"SamAccountName"`
	ActiveSyncEnabled              bool     `json:"ActiveSyncEnabled"`
	HasActiveSyncDevicePartnership bool     `json:"HasActiveSyncDevicePartnership"`
	ActiveSyncAllowedDeviceIDs     []string `json:"ActiveSyncAllowedDeviceIDs"`
	ActiveSyncBlockedDeviceIDs     []string `json:"ActiveSyncBlockedDeviceIDs"`
}

// OrgSettings is the part of Get-ActiveSyncOrganizationSettings we manage.
type OrgSettings struct {
	Identity            string      `json:"Identity"`
	DefaultAccessLevel  AccessLevel `json:"DefaultAccessLevel"`
	AdminMailRecipients []string    `json:"AdminMailRecipients"`
	UserMailInsert      string      `json:"UserMailInsert"`
}

// MaxUserMailInsert is Exchange's limit on UserMailInsert.
const MaxUserMailInsert = 256

// DeviceAccessRule is one ActiveSync device access rule.
type DeviceAccessRule struct {
	Identity       string         `json:"Identity"`
	Name           string         `json:"Name"`
	Characteristic Characteristic `json:"Characteristic"`
	QueryString    string         `json:"QueryString"`
	AccessLevel    AccessLevel    `json:"AccessLevel"`
}

// ExchangeServer is one server of the organization (Get-ExchangeServer).
type ExchangeServer struct {
	Name                string   `json:"Name"`
	Fqdn                string   `json:"Fqdn"`
	ServerRole          []string `json:"ServerRole"`
	AdminDisplayVersion string   `json:"AdminDisplayVersion"`
	Site                string   `json:"Site"`
}

// UnmarshalJSON accepts ServerRole as a list or as the string PowerShell
// makes of Exchange's flags enum ("Mailbox, ClientAccess").
func (s *ExchangeServer) UnmarshalJSON(b []byte) error {
	type plain ExchangeServer
	var w struct {
		plain
		ServerRole json.RawMessage `json:"ServerRole"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*s = ExchangeServer(w.plain)
	s.ServerRole = nil
	if len(w.ServerRole) == 0 || string(w.ServerRole) == "null" {
		return nil
	}
	if w.ServerRole[0] == '"' {
		var flags string
		if err := json.Unmarshal(w.ServerRole, &flags); err != nil {
			return fmt.Errorf("ServerRole: %w", err)
		}
		for r := range strings.SplitSeq(flags, ",") {
			if r = strings.TrimSpace(r); r != "" {
				s.ServerRole = append(s.ServerRole, r)
			}
		}
		return nil
	}
	if err := json.Unmarshal(w.ServerRole, &s.ServerRole); err != nil {
		return fmt.Errorf("ServerRole: %w", err)
	}
	return nil
}

var deviceIDRe = regexp.MustCompile(`^[A-Za-z0-9]{1,64}$`)

// ValidDeviceID reports whether id may be written to Exchange. EAS device
// ids are chosen by the phone; MS-ASHTTP forbids special characters, and we
// accept ASCII letters and digits only, 1 to 64 of them.
func ValidDeviceID(id string) bool { return deviceIDRe.MatchString(id) }

// ErrInvalidDeviceID is wrapped by the error of a device record whose
// DeviceId fails ValidDeviceID.
var ErrInvalidDeviceID = fmt.Errorf("invalid DeviceId")

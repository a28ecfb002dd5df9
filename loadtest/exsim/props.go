package exsim

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/easconnector/easconnector/exchange"
)

// kind is the type of an object property, which decides how -Filter
// compares it and how it is written on the wire.
type kind int

const (
	kString kind = iota
	kEnum        // a .NET enum: compared by name, ordered by declaration
	kBool
	kTime // DateTime; zero means $null
	kList // MultiValuedProperty<string>
	kInt
)

func (k kind) typeName() string {
	switch k {
	case kBool:
		return "System.Boolean"
	case kTime:
		return "System.DateTime"
	case kInt:
		return "System.Int64"
	case kList:
		return "Microsoft.Exchange.Data.MultiValuedProperty`1[System.String]"
	}
	return "System.String"
}

// prop is one property of an output object of type T. Exactly the accessor
// matching kind is set.
type prop[T any] struct {
	name       string
	kind       kind
	filterable bool
	enum       []string // kEnum: names in declaration order
	str        func(*T) string
	bl         func(*T) bool
	tm         func(*T) time.Time
	list       func(*T) []string
	num        func(*T) int64
}

// schema is the property table of one object type: what Select can pick
// and -Filter can test. Names are matched case-insensitively, as
// PowerShell's PSObject.Properties does.
type schema[T any] struct {
	shape    *psShape[T] // the PSRP form (psrp_objects.go)
	typeName string
	props    []prop[T]
	byName   map[string]int
}

func newSchema[T any](typeName string, props ...prop[T]) *schema[T] {
	s := &schema[T]{typeName: typeName, props: props, byName: make(map[string]int, len(props))}
	for i, p := range props {
		s.byName[strings.ToLower(p.name)] = i
	}
	return s
}

func (s *schema[T]) lookup(name string) *prop[T] {
	if i, ok := s.byName[strings.ToLower(name)]; ok {
		return &s.props[i]
	}
	return nil
}

// Property constructors.
func pStr[T any](name string, filterable bool, f func(*T) string) prop[T] {
	return prop[T]{name: name, kind: kString, filterable: filterable, str: f}
}
func pEnum[T any](name string, filterable bool, values []string, f func(*T) string) prop[T] {
	return prop[T]{name: name, kind: kEnum, filterable: filterable, enum: values, str: f}
}
func pBool[T any](name string, filterable bool, f func(*T) bool) prop[T] {
	return prop[T]{name: name, kind: kBool, filterable: filterable, bl: f}
}
func pTime[T any](name string, filterable bool, f func(*T) time.Time) prop[T] {
	return prop[T]{name: name, kind: kTime, filterable: filterable, tm: f}
}
func pInt[T any](name string, filterable bool, f func(*T) int64) prop[T] {
	return prop[T]{name: name, kind: kInt, filterable: filterable, num: f}
}
func pList[T any](name string, filterable bool, f func(*T) []string) prop[T] {
	return prop[T]{name: name, kind: kList, filterable: filterable, list: f}
}

// selection is a request's Select list resolved against a schema. Keys keep
// the spelling the client sent (the bootstrap writes [ordered]@{$name=…});
// an unknown name yields null, as PSObject.Properties[$name] does.
type selection[T any] struct {
	schema *schema[T]
	keys   []string
	props  []*prop[T]
}

func (s *schema[T]) selection(names []string) selection[T] {
	sel := selection[T]{schema: s, keys: names, props: make([]*prop[T], len(names))}
	for i, n := range names {
		sel.props[i] = s.lookup(n)
	}
	return sel
}

// appendObject writes rec as a JSON object holding the selected properties,
// in Select order, the way the bootstrap's ConvertTo-Wire does: strings and
// enums as strings, DateTime as UTC round-trip ("o") strings, multi-valued
// properties as string arrays, missing values as null.
func (sel selection[T]) appendObject(b []byte, rec *T) []byte {
	b = append(b, '{')
	for i, k := range sel.keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		p := sel.props[i]
		if p == nil {
			b = append(b, "null"...)
			continue
		}
		switch p.kind {
		case kString, kEnum:
			b = appendJSONString(b, p.str(rec))
		case kBool:
			b = strconv.AppendBool(b, p.bl(rec))
		case kTime:
			if t := p.tm(rec); t.IsZero() {
				b = append(b, "null"...)
			} else {
				b = append(b, '"')
				b = t.UTC().AppendFormat(b, wireTime)
				b = append(b, '"')
			}
		case kList:
			b = append(b, '[')
			for j, v := range p.list(rec) {
				if j > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, v)
			}
			b = append(b, ']')
		case kInt:
			b = strconv.AppendInt(b, p.num(rec), 10)
		}
	}
	return append(b, '}')
}

// wireTime is .NET's round-trip format ("o") of a UTC DateTime, which is
// RFC 3339 with seven fractional digits.
const wireTime = "2006-01-02T15:04:05.0000000Z"

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as .NET's decoder would have made it before ConvertTo-Json saw it.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				switch c {
				case '\n':
					b = append(b, '\\', 'n')
				case '\r':
					b = append(b, '\\', 'r')
				case '\t':
					b = append(b, '\\', 't')
				default:
					b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
				}
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// Enum value lists, in .NET declaration order.
var (
	enumAccessState = []string{string(exchange.AccessUnknown), string(exchange.AccessAllowed), string(exchange.AccessBlocked),
		string(exchange.AccessQuarantined), string(exchange.AccessDeviceDiscovery)}
	enumAccessReason = []string{string(exchange.ReasonUnknown), string(exchange.ReasonGlobal), string(exchange.ReasonIndividual),
		string(exchange.ReasonDeviceRule), string(exchange.ReasonUpgrade), string(exchange.ReasonPolicy), "UserAgentsChanges",
		"RecentCommands", "Watsons", "OutOfBudgets", "SyncCommands", "EnableNotificationEmail", "CommandFrequency",
		"ExternallyManaged", "ExternalCompliance", "ExternalEnrollment"}
	enumClientType     = []string{"EAS", "MOWA", "Outlook", "REST"}
	enumAccessLevel    = []string{string(exchange.LevelAllow), string(exchange.LevelBlock), string(exchange.LevelQuarantine)}
	enumCharacteristic = []string{string(exchange.CharDeviceType), string(exchange.CharDeviceModel), string(exchange.CharDeviceOS),
		string(exchange.CharUserAgent), string(exchange.CharXMSWLHeader)}
)

// deviceRec is one Get-MobileDevice object, copied out of the organization
// with its access state evaluated at the time of the call.
type deviceRec struct {
	d       *device
	verdict Verdict
	// copies of d's mutable fields, taken under the organization's lock
	model, os, ua, friendly string
}

// deviceSchema lists Get-MobileDevice's properties; the filterable ones are
// exactly those Get-MobileDevice.md's -Filter section lists
// (MicrosoftDocs/office-docs-powershell, exchange/exchange-ps/exchange/
// Get-MobileDevice.md), ProvisioningFlags included; any other name, the AD
// ones (Name, DistinguishedName, Guid) too, is refused with Exchange's
// "is not a recognized filterable property".
var deviceSchema = newSchema("MobileDevice",
	pStr("Identity", false, func(r *deviceRec) string { return r.d.identity }),
	pStr("Guid", false, func(r *deviceRec) string { return r.d.guid }),
	pStr("Name", false, func(r *deviceRec) string { return r.d.typ + "§" + r.d.id }),
	pStr("DistinguishedName", false, func(r *deviceRec) string { return r.d.dn }),
	pStr("DeviceId", true, func(r *deviceRec) string { return r.d.id }),
	pStr("DeviceType", true, func(r *deviceRec) string { return r.d.typ }),
	pStr("DeviceModel", true, func(r *deviceRec) string { return r.model }),
	pStr("DeviceOS", true, func(r *deviceRec) string { return r.os }),
	pStr("DeviceUserAgent", true, func(r *deviceRec) string { return r.ua }),
	pStr("FriendlyName", true, func(r *deviceRec) string { return r.friendly }),
	pStr("DeviceImei", true, func(*deviceRec) string { return "" }),
	pStr("DeviceMobileOperator", true, func(*deviceRec) string { return "" }),
	pStr("DeviceOSLanguage", true, func(*deviceRec) string { return "" }),
	pStr("DeviceTelephoneNumber", true, func(*deviceRec) string { return "" }),
	pStr("DeviceActiveSyncVersion", true, func(*deviceRec) string { return "16.1" }),
	pStr("UserDisplayName", true, func(r *deviceRec) string { return r.d.mb.name }),
	pTime("FirstSyncTime", true, func(r *deviceRec) time.Time { return r.d.firstSync }),
	pEnum("DeviceAccessState", true, enumAccessState, func(r *deviceRec) string { return string(r.verdict.State) }),
	pEnum("DeviceAccessStateReason", true, enumAccessReason, func(r *deviceRec) string { return string(r.verdict.Reason) }),
	pStr("DeviceAccessControlRule", true, func(r *deviceRec) string { return r.verdict.Rule }),
	pEnum("ClientType", true, enumClientType, func(r *deviceRec) string { return r.d.client }),
	// ProvisioningFlags (Int32) is exsim's constant 0: no simulated phone
	// reports provisioning flags.
	pInt("ProvisioningFlags", true, func(*deviceRec) int64 { return 0 }),
	pBool("IsManaged", false, func(*deviceRec) bool { return false }),
	pBool("IsCompliant", false, func(*deviceRec) bool { return false }),
	pBool("IsDisabled", false, func(*deviceRec) bool { return false }),
)

// mailboxRec is one Get-CASMailbox object.
type mailboxRec struct {
	mb               *mailbox
	allowed, blocked []string
	enabled, partner bool
	whenChanged      time.Time
}

var mailboxSchema = newSchema("CASMailbox",
	pStr("Identity", false, func(r *mailboxRec) string { return r.mb.name }),
	pStr("Guid", true, func(r *mailboxRec) string { return r.mb.guid }),
	pStr("Name", true, func(r *mailboxRec) string { return r.mb.name }),
	pStr("DisplayName", true, func(r *mailboxRec) string { return r.mb.displayName }),
	pStr("Alias", true, func(r *mailboxRec) string { return r.mb.sam }),
	pStr("SamAccountName", true, func(r *mailboxRec) string { return r.mb.sam }),
	pStr("PrimarySmtpAddress", true, func(r *mailboxRec) string { return r.mb.smtp }),
	pStr("UserPrincipalName", true, func(r *mailboxRec) string { return r.mb.upn }),
	pStr("DistinguishedName", true, func(r *mailboxRec) string { return r.mb.dn }),
	pBool("ActiveSyncEnabled", true, func(r *mailboxRec) bool { return r.enabled }),
	pBool("HasActiveSyncDevicePartnership", true, func(r *mailboxRec) bool { return r.partner }),
	pList("ActiveSyncAllowedDeviceIDs", true, func(r *mailboxRec) []string { return r.allowed }),
	pList("ActiveSyncBlockedDeviceIDs", true, func(r *mailboxRec) []string { return r.blocked }),
	pStr("ActiveSyncMailboxPolicy", true, func(*mailboxRec) string { return "Default" }),
	pTime("WhenChanged", true, func(r *mailboxRec) time.Time { return r.whenChanged }),
)

// settingsRec is the Get-ActiveSyncOrganizationSettings object.
type settingsRec struct {
	exchange.OrgSettings
	dn, ota     string
	whenChanged time.Time
}

var settingsSchema = newSchema("ActiveSyncOrganizations",
	pStr("Identity", false, func(r *settingsRec) string { return r.Identity }),
	pStr("Name", false, func(r *settingsRec) string { return r.Identity }),
	pStr("DistinguishedName", false, func(r *settingsRec) string { return r.dn }),
	pEnum("DefaultAccessLevel", false, enumAccessLevel, func(r *settingsRec) string { return string(r.DefaultAccessLevel) }),
	pList("AdminMailRecipients", false, func(r *settingsRec) []string { return r.AdminMailRecipients }),
	pStr("UserMailInsert", false, func(r *settingsRec) string { return r.UserMailInsert }),
	pStr("OtaNotificationMailInsert", false, func(r *settingsRec) string { return r.ota }),
	pBool("AllowAccessForUnSupportedPlatform", false, func(*settingsRec) bool { return false }),
	pTime("WhenChanged", false, func(r *settingsRec) time.Time { return r.whenChanged }),
)

// ruleRec is one Get-ActiveSyncDeviceAccessRule object.
type ruleRec struct{ rule }

var ruleSchema = newSchema("ActiveSyncDeviceAccessRule",
	pStr("Identity", false, func(r *ruleRec) string { return r.name }),
	pStr("Name", false, func(r *ruleRec) string { return r.name }),
	pStr("Guid", false, func(r *ruleRec) string { return r.guid }),
	pStr("DistinguishedName", false, func(r *ruleRec) string { return r.dn }),
	pEnum("Characteristic", false, enumCharacteristic, func(r *ruleRec) string { return string(r.ch) }),
	pStr("QueryString", false, func(r *ruleRec) string { return r.query }),
	pEnum("AccessLevel", false, enumAccessLevel, func(r *ruleRec) string { return string(r.level) }),
	pBool("IsValid", false, func(*ruleRec) bool { return true }),
	pTime("WhenChanged", false, func(r *ruleRec) time.Time { return r.whenChanged }),
)

// serverRec is one Get-ExchangeServer / Get-ClientAccessService object.
type serverRec struct {
	exchange.ExchangeServer
	dn string
}

var serverSchema = newSchema("ExchangeServer",
	pStr("Identity", false, func(r *serverRec) string { return r.Name }),
	pStr("Name", false, func(r *serverRec) string { return r.Name }),
	pStr("Fqdn", false, func(r *serverRec) string { return r.Fqdn }),
	pList("ServerRole", false, func(r *serverRec) []string { return r.ServerRole }),
	pStr("AdminDisplayVersion", false, func(r *serverRec) string { return r.AdminDisplayVersion }),
	pStr("Site", false, func(r *serverRec) string { return r.Site }),
	pStr("Edition", false, func(*serverRec) string { return "Enterprise" }),
	pStr("DistinguishedName", false, func(r *serverRec) string { return r.dn }),
	pBool("IsClientAccessServer", false, func(*serverRec) bool { return true }),
	pBool("IsMailboxServer", false, func(*serverRec) bool { return true }),
)

var casSchema = newSchema("ClientAccessServer",
	pStr("Identity", false, func(r *serverRec) string { return r.Name }),
	pStr("Name", false, func(r *serverRec) string { return r.Name }),
	pStr("Fqdn", false, func(r *serverRec) string { return r.Fqdn }),
	pStr("AutoDiscoverServiceInternalUri", false, func(r *serverRec) string {
		return "https://" + r.Fqdn + "/Autodiscover/Autodiscover.xml"
	}),
	pStr("DistinguishedName", false, func(r *serverRec) string { return r.dn }),
)

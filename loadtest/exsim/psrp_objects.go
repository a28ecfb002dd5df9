package exsim

import (
	"strings"
	"time"
)

// Output objects as the Exchange endpoint serializes them into
// PIPELINE_OUTPUT. Type names, their base classes, property names, property
// types and enum values are those of the Exchange 2013+ object model
// (evilashz/exchange-server-27065, Microsoft.Exchange.Data.Directory/Data/
// Directory/SystemConfiguration/MobileDevice.cs, ActiveSyncOrganizationSettings.cs,
// ActiveSyncDeviceAccessRule.cs, DeviceAccessState.cs, DeviceAccessStateReason.cs,
// MobileClientType.cs, DeviceAccessLevel.cs, DeviceAccessCharacteristic.cs;
// Management/CASMailbox.cs, ExchangeServer.cs, ClientAccessServer.cs; ADObject.cs,
// ADRawEntry.cs, ConfigurableObject.cs), which clients see as Deserialized.<type>
// ("Deserialized.Microsoft.Exchange.Data.Directory.Management.CASMailbox" in
// scripts written against Exchange remote sessions). Adapted properties are
// written in <Props>, derived class first. Exchange values without a CLIXML
// primitive (ADObjectId, SmtpAddress, ServerVersion, ExchangeObjectVersion,
// OrganizationId) travel as their string form, as remote sessions show them
// [inference: the property bag of Learn's "Use the Exchange Management Shell
// cmdlet response"]; MultiValuedProperty travels as a list and enums as enum
// objects.

// psEnv is what object writers need beyond the record: taken under the
// organization's lock when the call starts.
type psEnv struct {
	dc string
}

// psProp writes one property of a T.
type psProp[T any] struct {
	name  string
	write func(w *clixmlWriter, n string, r *T, env *psEnv)
}

// psShape is the serialized form of a T.
type psShape[T any] struct {
	types    []string
	toString func(*T) string
	props    []psProp[T]
	byName   map[string]int
}

func newShape[T any](types []string, toString func(*T) string, props ...psProp[T]) *psShape[T] {
	s := &psShape[T]{types: types, toString: toString, props: props, byName: map[string]int{}}
	for i, p := range props {
		s.byName[strings.ToLower(p.name)] = i
	}
	return s
}

func (s *psShape[T]) lookup(name string) *psProp[T] {
	if i, ok := s.byName[strings.ToLower(name)]; ok {
		return &s.props[i]
	}
	return nil
}

// writeFull writes rec as the cmdlet outputs it.
func (s *psShape[T]) writeFull(w *clixmlWriter, rec *T, env *psEnv) {
	w.openObj("", s.types)
	w.raw(`<ToString>`)
	w.b = appendCLIXMLText(w.b, s.toString(rec), false)
	w.raw(`</ToString><Props>`)
	for _, p := range s.props {
		p.write(w, p.name, rec, env)
	}
	w.raw(`</Props></Obj>`)
}

// writeSelected writes rec as Select-Object -Property names makes it: a
// PSCustomObject of type Selected.<type> whose note properties keep the
// spelling asked for; an unknown name gives $null, as Select-Object does.
func (s *psShape[T]) writeSelected(w *clixmlWriter, rec *T, env *psEnv, names []string) {
	w.openObj("", []string{"Selected." + s.types[0], "System.Management.Automation.PSCustomObject", "System.Object"})
	w.raw(`<MS>`)
	for _, n := range names {
		if p := s.lookup(n); p != nil {
			p.write(w, n, rec, env)
		} else {
			w.nilv(n)
		}
	}
	w.raw(`</MS></Obj>`)
}

// Property writer constructors.
func psStr[T any](name string, f func(*T) string) psProp[T] {
	return psProp[T]{name, func(w *clixmlWriter, n string, r *T, _ *psEnv) { w.str(n, f(r)) }}
}

// psStrOrNil writes "" as $null: an unset ADObjectId or string property.
func psStrOrNil[T any](name string, f func(*T) string) psProp[T] {
	return psProp[T]{name, func(w *clixmlWriter, n string, r *T, _ *psEnv) {
		if v := f(r); v == "" {
			w.nilv(n)
		} else {
			w.str(n, v)
		}
	}}
}

func psBool[T any](name string, f func(*T) bool) psProp[T] {
	return psProp[T]{name, func(w *clixmlWriter, n string, r *T, _ *psEnv) { w.boolean(n, f(r)) }}
}

func psConst[T any](name, v string) psProp[T] { return psStr(name, func(*T) string { return v }) }

func psFixedBool[T any](name string, v bool) psProp[T] {
	return psBool(name, func(*T) bool { return v })
}

func psNil[T any](name string) psProp[T] {
	return psProp[T]{name, func(w *clixmlWriter, n string, _ *T, _ *psEnv) { w.nilv(n) }}
}

func psGUID[T any](name string, f func(*T) string) psProp[T] {
	return psProp[T]{name, func(w *clixmlWriter, n string, r *T, _ *psEnv) { w.guid(n, f(r)) }}
}

// psTime writes a DateTime?; the zero time is $null.
func psTime[T any](name string, f func(*T) time.Time) psProp[T] {
	return psProp[T]{name, func(w *clixmlWriter, n string, r *T, _ *psEnv) {
		if t := f(r); t.IsZero() {
			w.nilv(n)
		} else {
			w.dateTime(n, t)
		}
	}}
}

// psEnum writes an enum property of .NET type typ whose values are numbered
// by values.
func psEnum[T any](name, typ string, values map[string]int64, f func(*T) string) psProp[T] {
	return psProp[T]{name, func(w *clixmlWriter, n string, r *T, _ *psEnv) {
		v := f(r)
		w.enum(n, typ, v, values[v])
	}}
}

// mvpString is the type of a MultiValuedProperty<string>.
var mvpString = []string{
	"Microsoft.Exchange.Data.MultiValuedProperty`1[[System.String, mscorlib, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089]]",
	"Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object",
}

func psList[T any](name string, types []string, f func(*T) []string) psProp[T] {
	return psProp[T]{name, func(w *clixmlWriter, n string, r *T, _ *psEnv) { w.stringList(n, types, f(r)) }}
}

func psDC[T any]() psProp[T] {
	return psProp[T]{"OriginatingServer", func(w *clixmlWriter, n string, _ *T, env *psEnv) { w.str(n, env.dc) }}
}

// Enum types and numbering (the enum declarations cited above).
const (
	nsSysConfig     = "Microsoft.Exchange.Data.Directory.SystemConfiguration."
	typeObjectState = "Microsoft.Exchange.Data.ObjectState"
)

var (
	valuesAccessState = map[string]int64{"Unknown": 0, "Allowed": 1, "Blocked": 2, "Quarantined": 3, "DeviceDiscovery": 4}
	valuesReason      = map[string]int64{"Unknown": 0, "Global": 1, "Individual": 2, "DeviceRule": 3, "Upgrade": 4, "Policy": 5,
		"UserAgentsChanges": 6, "RecentCommands": 7, "Watsons": 8, "OutOfBudgets": 9, "SyncCommands": 10,
		"EnableNotificationEmail": 11, "CommandFrequency": 12, "ExternallyManaged": 51, "ExternalCompliance": 52, "ExternalEnrollment": 53}
	valuesClientType     = map[string]int64{"EAS": 1, "MOWA": 2}
	valuesAccessLevel    = map[string]int64{"Allow": 0, "Block": 1, "Quarantine": 2}
	valuesCharacteristic = map[string]int64{"DeviceType": 0, "DeviceModel": 1, "DeviceOS": 2, "UserAgent": 3, "XMSWLHeader": 4}
	valuesObjectState    = map[string]int64{"Unchanged": 0}
	// ServerRole is a flags enum (Mailbox = 2, ClientAccess = 4):
	// Get-ExchangeServer shows "Mailbox, ClientAccess".
	valuesServerRole = map[string]int64{"Mailbox": 2, "ClientAccess": 4, "UnifiedMessaging": 16, "HubTransport": 32, "Edge": 64}
)

// adObjectProps are the properties every AD object adds after its own
// (ADObject, ADRawEntry, ConfigurableObject), in declaration order.
func adObjectProps[T any](version string, classes []string, name, dn, identity, guid func(*T) string,
	category string, changed, created func(*T) time.Time) []psProp[T] {
	return []psProp[T]{
		psConst[T]("ExchangeVersion", version),
		psStr("Name", name),
		psStr("DistinguishedName", dn),
		psStr("Identity", identity),
		psGUID("Guid", guid),
		psConst[T]("ObjectCategory", category),
		psList("ObjectClass", mvpString, func(*T) []string { return classes }),
		psTime("WhenChanged", changed),
		psTime("WhenCreated", created),
		psTime("WhenChangedUTC", changed),
		psTime("WhenCreatedUTC", created),
		psConst[T]("OrganizationId", ""),
		psStr("Id", identity),
		psDC[T](),
		psFixedBool[T]("IsValid", true),
		psEnum[T]("ObjectState", typeObjectState, valuesObjectState, func(*T) string { return "Unchanged" }),
	}
}

func typesOf(own ...string) []string {
	return append(own, "Microsoft.Exchange.Data.Directory.ADObject", "Microsoft.Exchange.Data.Directory.ADRawEntry",
		"Microsoft.Exchange.Data.ConfigurableObject", "System.Object")
}

var deviceShape = newShape(typesOf(nsSysConfig+"MobileDevice", nsSysConfig+"ADConfigurationObject"),
	func(r *deviceRec) string { return r.d.identity },
	append([]psProp[deviceRec]{
		psStr("FriendlyName", func(r *deviceRec) string { return r.friendly }),
		psStr("DeviceId", func(r *deviceRec) string { return r.d.id }),
		psConst[deviceRec]("DeviceImei", ""),
		psConst[deviceRec]("DeviceMobileOperator", ""),
		psStr("DeviceOS", func(r *deviceRec) string { return r.os }),
		psConst[deviceRec]("DeviceOSLanguage", ""),
		psConst[deviceRec]("DeviceTelephoneNumber", ""),
		psStr("DeviceType", func(r *deviceRec) string { return r.d.typ }),
		psStr("DeviceUserAgent", func(r *deviceRec) string { return r.ua }),
		psStr("DeviceModel", func(r *deviceRec) string { return r.model }),
		psTime("FirstSyncTime", func(r *deviceRec) time.Time { return r.d.firstSync }),
		psStr("UserDisplayName", func(r *deviceRec) string { return r.d.mb.name }),
		psEnum("DeviceAccessState", nsSysConfig+"DeviceAccessState", valuesAccessState, func(r *deviceRec) string { return string(r.verdict.State) }),
		psEnum("DeviceAccessStateReason", nsSysConfig+"DeviceAccessStateReason", valuesReason, func(r *deviceRec) string { return string(r.verdict.Reason) }),
		psStrOrNil("DeviceAccessControlRule", func(r *deviceRec) string { return r.verdict.Rule }),
		psConst[deviceRec]("ClientVersion", "16.1"),
		psConst[deviceRec]("DeviceActiveSyncVersion", "16.1"),
		psEnum("ClientType", nsSysConfig+"MobileClientType", valuesClientType, func(r *deviceRec) string { return r.d.client }),
		{"ProvisioningFlags", func(w *clixmlWriter, n string, _ *deviceRec, _ *psEnv) { w.i32(n, 0) }},
		psFixedBool[deviceRec]("IsManaged", false),
		psFixedBool[deviceRec]("IsCompliant", false),
		psFixedBool[deviceRec]("IsDisabled", false),
		psNil[deviceRec]("AdminDisplayName"),
	}, adObjectProps("0.12 (14.0.451.0)", []string{"top", "msExchActiveSyncDevice"},
		func(r *deviceRec) string { return r.d.typ + "§" + r.d.id },
		func(r *deviceRec) string { return r.d.dn },
		func(r *deviceRec) string { return r.d.identity },
		func(r *deviceRec) string { return r.d.guid },
		"msExchActiveSyncDevice",
		func(r *deviceRec) time.Time { return r.d.firstSync },
		func(r *deviceRec) time.Time { return r.d.firstSync })...)...)

var mailboxShape = newShape(typesOf("Microsoft.Exchange.Data.Directory.Management.CASMailbox", "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject"),
	func(r *mailboxRec) string { return r.mb.canonical },
	append([]psProp[mailboxRec]{
		psList("EmailAddresses", []string{"Microsoft.Exchange.Data.ProxyAddressCollection", "Microsoft.Exchange.Data.ProxyAddressBaseCollection`1[[Microsoft.Exchange.Data.ProxyAddress, Microsoft.Exchange.Data, Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]", "Microsoft.Exchange.Data.MultiValuedProperty`1[[Microsoft.Exchange.Data.ProxyAddress, Microsoft.Exchange.Data, Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]", "Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object"},
			func(r *mailboxRec) []string { return []string{"SMTP:" + r.mb.smtp} }),
		psConst[mailboxRec]("LinkedMasterAccount", ""),
		psStr("PrimarySmtpAddress", func(r *mailboxRec) string { return r.mb.smtp }),
		psStr("SamAccountName", func(r *mailboxRec) string { return r.mb.sam }),
		psStr("DisplayName", func(r *mailboxRec) string { return r.mb.displayName }),
		psList("ActiveSyncAllowedDeviceIDs", mvpString, func(r *mailboxRec) []string { return r.allowed }),
		psList("ActiveSyncBlockedDeviceIDs", mvpString, func(r *mailboxRec) []string { return r.blocked }),
		psConst[mailboxRec]("ActiveSyncMailboxPolicy", "Default"),
		psFixedBool[mailboxRec]("ActiveSyncMailboxPolicyIsDefaulted", true),
		psFixedBool[mailboxRec]("ActiveSyncDebugLogging", false),
		psBool("ActiveSyncEnabled", func(r *mailboxRec) bool { return r.enabled }),
		psBool("HasActiveSyncDevicePartnership", func(r *mailboxRec) bool { return r.partner }),
		psNil[mailboxRec]("OwaMailboxPolicy"),
		psFixedBool[mailboxRec]("OWAEnabled", true),
		psFixedBool[mailboxRec]("OWAforDevicesEnabled", true),
		psFixedBool[mailboxRec]("ECPEnabled", true),
		psFixedBool[mailboxRec]("PopEnabled", true),
		psFixedBool[mailboxRec]("ImapEnabled", true),
		psFixedBool[mailboxRec]("MAPIEnabled", true),
		psNil[mailboxRec]("EwsEnabled"),
		// Not CASMailbox members in that build, kept because exsim's
		// WinRS schema offers them (the Select of older clients).
		psStr("Alias", func(r *mailboxRec) string { return r.mb.sam }),
		psStr("UserPrincipalName", func(r *mailboxRec) string { return r.mb.upn }),
	}, adObjectProps("0.20 (15.0.0.0)", []string{"top", "person", "organizationalPerson", "user"},
		func(r *mailboxRec) string { return r.mb.name },
		func(r *mailboxRec) string { return r.mb.dn },
		func(r *mailboxRec) string { return r.mb.canonical },
		func(r *mailboxRec) string { return r.mb.guid },
		"Person",
		func(r *mailboxRec) time.Time { return r.whenChanged },
		func(r *mailboxRec) time.Time { return r.whenChanged })...)...)

var settingsShape = newShape(typesOf(nsSysConfig+"ActiveSyncOrganizationSettings", nsSysConfig+"ADContainer", nsSysConfig+"ADConfigurationObject"),
	func(r *settingsRec) string { return r.Identity },
	append([]psProp[settingsRec]{
		psEnum("DefaultAccessLevel", nsSysConfig+"DeviceAccessLevel", valuesAccessLevel, func(r *settingsRec) string { return string(r.DefaultAccessLevel) }),
		psStrOrNil("UserMailInsert", func(r *settingsRec) string { return r.UserMailInsert }),
		psFixedBool[settingsRec]("AllowAccessForUnSupportedPlatform", false),
		psList("AdminMailRecipients", []string{
			"Microsoft.Exchange.Data.MultiValuedProperty`1[[Microsoft.Exchange.Data.SmtpAddress, Microsoft.Exchange.Data, Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]",
			"Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object"},
			func(r *settingsRec) []string { return r.AdminMailRecipients }),
		psStrOrNil("OtaNotificationMailInsert", func(r *settingsRec) string { return r.ota }),
		psNil[settingsRec]("DeviceFiltering"),
		psFixedBool[settingsRec]("IsIntuneManaged", false),
		psNil[settingsRec]("AdminDisplayName"),
	}, adObjectProps("0.1 (8.0.535.0)", []string{"top", "container", "msExchActiveSyncOrganizationSettings"},
		func(r *settingsRec) string { return r.Identity },
		func(r *settingsRec) string { return r.dn },
		func(r *settingsRec) string { return r.Identity },
		func(r *settingsRec) string { return nameGUID("settings:" + strings.ToLower(r.dn)) },
		"msExchActiveSyncOrganizationSettings",
		func(r *settingsRec) time.Time { return r.whenChanged },
		func(r *settingsRec) time.Time { return r.whenChanged })...)...)

var ruleShape = newShape(typesOf(nsSysConfig+"ActiveSyncDeviceAccessRule", nsSysConfig+"ADConfigurationObject"),
	func(r *ruleRec) string { return r.name },
	append([]psProp[ruleRec]{
		psStr("QueryString", func(r *ruleRec) string { return r.query }),
		psEnum("Characteristic", nsSysConfig+"DeviceAccessCharacteristic", valuesCharacteristic, func(r *ruleRec) string { return string(r.ch) }),
		psEnum("AccessLevel", nsSysConfig+"DeviceAccessLevel", valuesAccessLevel, func(r *ruleRec) string { return string(r.level) }),
		psNil[ruleRec]("AdminDisplayName"),
	}, adObjectProps("0.10 (14.0.100.0)", []string{"top", "msExchDeviceAccessRule"},
		func(r *ruleRec) string { return r.name },
		func(r *ruleRec) string { return r.dn },
		func(r *ruleRec) string { return r.name },
		func(r *ruleRec) string { return r.guid },
		"msExchDeviceAccessRule",
		func(r *ruleRec) time.Time { return r.whenChanged },
		func(r *ruleRec) time.Time { return r.whenChanged })...)...)

func serverRoles(r *serverRec) string { return strings.Join(r.ServerRole, ", ") }

func serverRoleValue(r *serverRec) int64 {
	var v int64
	for _, role := range r.ServerRole {
		v |= valuesServerRole[role]
	}
	return v
}

var serverShape = newShape(typesOf("Microsoft.Exchange.Data.Directory.Management.ExchangeServer", "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject"),
	func(r *serverRec) string { return r.Name },
	append([]psProp[serverRec]{
		psStr("Fqdn", func(r *serverRec) string { return r.Fqdn }),
		psConst[serverRec]("Edition", "Enterprise"),
		psFixedBool[serverRec]("IsClientAccessServer", true),
		psFixedBool[serverRec]("IsMailboxServer", true),
		psFixedBool[serverRec]("IsE15OrLater", true),
		psStr("AdminDisplayVersion", func(r *serverRec) string { return r.AdminDisplayVersion }),
		psStr("Site", func(r *serverRec) string { return r.Site }),
		{"ServerRole", func(w *clixmlWriter, n string, r *serverRec, _ *psEnv) {
			w.enum(n, nsSysConfig+"ServerRole", serverRoles(r), serverRoleValue(r))
		}},
	}, adObjectProps("0.1 (8.0.535.0)", []string{"top", "server", "msExchExchangeServer"},
		func(r *serverRec) string { return r.Name },
		func(r *serverRec) string { return r.dn },
		func(r *serverRec) string { return r.Name },
		func(r *serverRec) string { return nameGUID("server:" + strings.ToLower(r.dn)) },
		"msExchExchangeServer",
		func(*serverRec) time.Time { return time.Time{} },
		func(*serverRec) time.Time { return time.Time{} })...)...)

var casShape = newShape(typesOf("Microsoft.Exchange.Data.Directory.Management.ClientAccessServer", "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject"),
	func(r *serverRec) string { return r.Name },
	append([]psProp[serverRec]{
		psStr("Fqdn", func(r *serverRec) string { return r.Fqdn }),
		psNil[serverRec]("ClientAccessArray"),
		psStr("AutoDiscoverServiceInternalUri", func(r *serverRec) string {
			return "https://" + r.Fqdn + "/Autodiscover/Autodiscover.xml"
		}),
		psFixedBool[serverRec]("IsOutOfService", false),
	}, adObjectProps("0.1 (8.0.535.0)", []string{"top", "server", "msExchExchangeServer"},
		func(r *serverRec) string { return r.Name },
		func(r *serverRec) string { return r.dn },
		func(r *serverRec) string { return r.Name },
		func(r *serverRec) string { return nameGUID("server:" + strings.ToLower(r.dn)) },
		"msExchExchangeServer",
		func(*serverRec) time.Time { return time.Time{} },
		func(*serverRec) time.Time { return time.Time{} })...)...)

func init() {
	deviceSchema.shape = deviceShape
	mailboxSchema.shape = mailboxShape
	settingsSchema.shape = settingsShape
	ruleSchema.shape = ruleShape
	serverSchema.shape = serverShape
	casSchema.shape = casShape
}

package exsim

import (
	"crypto/sha1"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/runspace"
)

// DefaultDomain is the domain of an organization loaded without a population.
const DefaultDomain = "contoso.com"

// orgSettingsName is the name and identity of the ActiveSync organization
// settings object.
const orgSettingsName = "Mobile Mailbox Settings"

// Org is an in-memory Exchange organization: mailboxes with their ActiveSync
// lists, EAS device partnerships, the ActiveSync organization settings,
// device access rules and servers. All methods are safe for concurrent use.
// Identities are resolved as Exchange resolves them (Name, alias,
// SamAccountName, DOMAIN\sam, UPN, primary SMTP address, DN, canonical name,
// Guid; case-insensitive); a value matching several mailboxes is ambiguous.
type Org struct {
	mu       sync.RWMutex
	domain   string
	netbios  string
	dc       string
	orgName  string
	configDN string

	mailboxes []*mailbox
	mbIndex   map[string][]*mailbox // lower-cased identity forms
	devices   []*device             // every partnership, in creation order
	devIndex  map[string]*device    // lower-cased Identity, DN and Guid

	level           exchange.AccessLevel
	adminRecipients []string
	userMailInsert  string
	otaMailInsert   string
	settingsChanged time.Time

	rules   []*rule
	servers []exchange.ExchangeServer
}

type mailbox struct {
	guid, name, displayName, sam, smtp, upn, dn, canonical string
	easEnabled                                             bool
	allowed, blocked                                       []string
	devices                                                []*device
	whenChanged                                            time.Time
}

type device struct {
	mb                                              *mailbox
	guid, identity, dn                              string
	id, typ, model, os, ua, xmswl, friendly, client string
	firstSync                                       time.Time
	discovery                                       bool
	removed                                         bool
	// stored is the DeviceAccessState, reason and rule Exchange saved at
	// the device's last request (or that Set-CASMailbox wrote since);
	// Get-MobileDevice reports it, not a live evaluation.
	stored Verdict
}

type rule struct {
	guid, name, dn string
	ch             exchange.Characteristic
	query          string
	level          exchange.AccessLevel
	whenChanged    time.Time
}

// NewOrg returns an empty organization in domain ("" → DefaultDomain) with
// Exchange's out-of-the-box ActiveSync settings: DefaultAccessLevel Allow,
// no admin mail recipients, no mail insert, no device access rules.
func NewOrg(domain string) *Org {
	o := &Org{}
	o.reset(domain)
	return o
}

func (o *Org) reset(domain string) {
	if domain == "" {
		domain = DefaultDomain
	}
	labels := strings.Split(domain, ".")
	o.domain = domain
	o.netbios = strings.ToUpper(labels[0])
	o.dc = "dc01." + domain
	o.orgName = strings.ToUpper(labels[0][:1]) + labels[0][1:]
	o.configDN = fmt.Sprintf("CN=%s,CN=%s,CN=Microsoft Exchange,CN=Services,CN=Configuration,DC=%s",
		orgSettingsName, escapeRDN(o.orgName), strings.Join(labels, ",DC="))
	o.mailboxes = nil
	o.mbIndex = make(map[string][]*mailbox)
	o.devices = nil
	o.devIndex = make(map[string]*device)
	o.level = exchange.LevelAllow
	o.adminRecipients = nil
	o.userMailInsert = ""
	o.otaMailInsert = ""
	o.settingsChanged = time.Time{}
	o.rules = nil
}

// DomainController is the name Exchange's errors cite as the directory
// server that was asked ("dc01.<domain>").
func (o *Org) DomainController() string {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.dc
}

// Load replaces every mailbox, device, setting and rule with the ones of p
// (settings and rules return to Exchange's defaults); servers are kept.
func (o *Org) Load(p *population.Population) error {
	if p == nil {
		return errors.New("load population: nil population")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reset(p.Options.Domain)
	for i := range o.servers {
		o.servers[i].Site = siteName(o.domain)
	}
	for i, pm := range p.Mailboxes {
		if _, err := o.addMailboxLocked(MailboxSpec{
			Guid: pm.Guid, Name: pm.Name, DisplayName: pm.DisplayName, SamAccountName: pm.SamAccountName,
			PrimarySmtpAddress: pm.PrimarySmtp, UserPrincipalName: pm.UPN, DistinguishedName: pm.DistinguishedName,
			ActiveSyncAllowedDeviceIDs: pm.Allowed, ActiveSyncBlockedDeviceIDs: pm.Blocked,
		}); err != nil {
			return fmt.Errorf("load population: mailbox %d: %w", i, err)
		}
	}
	for i, pd := range p.Devices {
		if pd.Mailbox < 0 || pd.Mailbox >= len(o.mailboxes) {
			return fmt.Errorf("load population: device %d: mailbox index %d out of range", i, pd.Mailbox)
		}
		if _, err := o.addDeviceLocked(o.mailboxes[pd.Mailbox], deviceSpecOf(pd)); err != nil {
			return fmt.Errorf("load population: device %d: %w", i, err)
		}
	}
	return nil
}

func deviceSpecOf(pd population.Device) DeviceSpec {
	return DeviceSpec{DeviceId: pd.DeviceID, DeviceType: pd.Type, DeviceModel: pd.Model, DeviceOS: pd.OS,
		DeviceUserAgent: pd.UserAgent, FirstSyncTime: pd.FirstSync}
}

// ApplyChanges applies the Exchange side of changes made by p.Churn: a
// NewPhone change adds its partnership (unless it exists already, so
// applying twice is harmless). ComplianceFlip and Unenroll concern the MDM
// only and leave Exchange unchanged. It returns how many changes altered the
// organization.
func (o *Org) ApplyChanges(p *population.Population, changes []population.Change) (int, error) {
	if p == nil {
		return 0, errors.New("apply changes: nil population")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	applied := 0
	for i, c := range changes {
		switch c.Kind {
		case population.NewPhone:
			if c.Device < 0 || c.Device >= len(p.Devices) {
				return applied, fmt.Errorf("apply changes: change %d: device index %d out of range", i, c.Device)
			}
			pd := p.Devices[c.Device]
			if pd.Mailbox < 0 || pd.Mailbox >= len(p.Mailboxes) {
				return applied, fmt.Errorf("apply changes: change %d: mailbox index %d out of range", i, pd.Mailbox)
			}
			mb, err := o.resolveMailboxLocked(p.Mailboxes[pd.Mailbox].Guid)
			if err != nil {
				return applied, fmt.Errorf("apply changes: change %d: %w", i, err)
			}
			if _, err := o.addDeviceLocked(mb, deviceSpecOf(pd)); err != nil {
				var oe *orgError
				if errors.As(err, &oe) && oe.typ == typeADExists {
					continue
				}
				return applied, fmt.Errorf("apply changes: change %d: %w", i, err)
			}
			applied++
		case population.ComplianceFlip, population.Unenroll:
		default:
			return applied, fmt.Errorf("apply changes: change %d: unknown kind %q", i, c.Kind)
		}
	}
	return applied, nil
}

// MailboxSpec describes a mailbox to add. Empty fields are derived from Name
// and the organization's domain.
type MailboxSpec struct {
	Guid                       string   `json:"Guid,omitempty"`
	Name                       string   `json:"Name"`
	DisplayName                string   `json:"DisplayName,omitempty"`
	SamAccountName             string   `json:"SamAccountName,omitempty"`
	PrimarySmtpAddress         string   `json:"PrimarySmtpAddress,omitempty"`
	UserPrincipalName          string   `json:"UserPrincipalName,omitempty"`
	DistinguishedName          string   `json:"DistinguishedName,omitempty"`
	ActiveSyncDisabled         bool     `json:"ActiveSyncDisabled,omitempty"`
	ActiveSyncAllowedDeviceIDs []string `json:"ActiveSyncAllowedDeviceIDs,omitempty"`
	ActiveSyncBlockedDeviceIDs []string `json:"ActiveSyncBlockedDeviceIDs,omitempty"`
}

// AddMailbox adds a mailbox and returns it as Get-CASMailbox shows it.
func (o *Org) AddMailbox(s MailboxSpec) (exchange.CASMailbox, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	mb, err := o.addMailboxLocked(s)
	if err != nil {
		return exchange.CASMailbox{}, fmt.Errorf("add mailbox %q: %w", s.Name, err)
	}
	return mb.cas(), nil
}

func (o *Org) addMailboxLocked(s MailboxSpec) (*mailbox, error) {
	if strings.TrimSpace(s.Name) == "" {
		return nil, invalidValue("Name", "must not be empty")
	}
	alias := s.SamAccountName
	if alias == "" {
		alias = strings.Map(func(r rune) rune {
			if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-') {
				return r
			}
			return -1
		}, strings.ReplaceAll(s.Name, " ", "."))
		if alias == "" {
			alias = fmt.Sprintf("user%d", len(o.mailboxes)+1)
		}
	}
	mb := &mailbox{
		guid: s.Guid, name: s.Name, displayName: s.DisplayName, sam: alias, smtp: s.PrimarySmtpAddress,
		upn: s.UserPrincipalName, dn: s.DistinguishedName, easEnabled: !s.ActiveSyncDisabled,
	}
	if mb.displayName == "" {
		mb.displayName = s.Name
	}
	if mb.smtp == "" {
		mb.smtp = alias + "@" + o.domain
	}
	if _, err := mail.ParseAddress(mb.smtp); err != nil {
		return nil, invalidSMTP(mb.smtp)
	}
	if mb.upn == "" {
		mb.upn = mb.smtp
	}
	if mb.dn == "" {
		mb.dn = fmt.Sprintf("CN=%s,OU=Users,DC=%s", escapeRDN(s.Name), strings.ReplaceAll(o.domain, ".", ",DC="))
	}
	if mb.guid == "" {
		mb.guid = nameGUID("mailbox:" + strings.ToLower(mb.dn))
	}
	mb.canonical = canonicalName(mb.dn)
	for _, k := range mb.keys(o.netbios) {
		for _, other := range o.mbIndex[k] {
			if strings.EqualFold(other.dn, mb.dn) || strings.EqualFold(other.guid, mb.guid) {
				return nil, alreadyExists(o.dc, mb.dn)
			}
		}
	}
	mb.allowed = dedupe(s.ActiveSyncAllowedDeviceIDs)
	mb.blocked = dedupe(s.ActiveSyncBlockedDeviceIDs)
	for _, k := range mb.keys(o.netbios) {
		o.mbIndex[k] = append(o.mbIndex[k], mb)
	}
	o.mailboxes = append(o.mailboxes, mb)
	return mb, nil
}

// keys are the lower-cased identity forms Exchange's MailboxIdParameter
// accepts for mb.
func (mb *mailbox) keys(netbios string) []string {
	ks := []string{mb.name, mb.sam, netbios + `\` + mb.sam, mb.smtp, mb.upn, mb.dn, mb.canonical, mb.guid}
	out := ks[:0]
	for _, k := range ks {
		k = strings.ToLower(k)
		if k != "" && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

func (mb *mailbox) cas() exchange.CASMailbox {
	return exchange.CASMailbox{
		Identity: mb.name, Guid: mb.guid, DistinguishedName: mb.dn, Name: mb.name, DisplayName: mb.displayName,
		PrimarySmtpAddress: mb.smtp, SamAccountName: mb.sam, ActiveSyncEnabled: mb.easEnabled,
		HasActiveSyncDevicePartnership: mb.hasPartnership(),
		ActiveSyncAllowedDeviceIDs:     slices.Clone(mb.allowed), ActiveSyncBlockedDeviceIDs: slices.Clone(mb.blocked),
	}
}

func (mb *mailbox) hasPartnership() bool {
	for _, d := range mb.devices {
		if strings.EqualFold(d.client, "EAS") {
			return true
		}
	}
	return false
}

// resolveMailboxLocked finds one mailbox by any identity form.
func (o *Org) resolveMailboxLocked(identity string) (*mailbox, error) {
	ms := o.mbIndex[strings.ToLower(strings.TrimSpace(identity))]
	switch len(ms) {
	case 0:
		return nil, notFound(identity, o.dc)
	case 1:
		return ms[0], nil
	}
	// Several forms of different mailboxes collide (say one's Name is
	// another's alias); an exact-case match on one form does not help
	// Exchange either: it is ambiguous.
	return nil, ambiguous(identity)
}

// DeviceSpec describes a device partnership to add. Every string except
// Mailbox is what a phone reports and is stored verbatim, however hostile.
type DeviceSpec struct {
	Mailbox         string    `json:"Mailbox"` // identity of the owning mailbox
	DeviceId        string    `json:"DeviceId"`
	DeviceType      string    `json:"DeviceType"`
	DeviceModel     string    `json:"DeviceModel,omitempty"`
	DeviceOS        string    `json:"DeviceOS,omitempty"`
	DeviceUserAgent string    `json:"DeviceUserAgent,omitempty"`
	XMSWLHeader     string    `json:"XMSWLHeader,omitempty"`
	FriendlyName    string    `json:"FriendlyName,omitempty"`
	ClientType      string    `json:"ClientType,omitempty"`   // EAS (default) or Outlook
	FirstSyncTime   time.Time `json:"FirstSyncTime,omitzero"` // zero → now
	Discovery       bool      `json:"Discovery,omitempty"`    // has not yet reported its characteristics (DeviceDiscovery)
}

// AddDevice adds a partnership to s.Mailbox and returns it as
// Get-MobileDevice shows it now.
func (o *Org) AddDevice(s DeviceSpec) (exchange.MobileDevice, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	mb, err := o.resolveMailboxLocked(s.Mailbox)
	if err != nil {
		return exchange.MobileDevice{}, fmt.Errorf("add device %q: %w", s.DeviceId, err)
	}
	d, err := o.addDeviceLocked(mb, s)
	if err != nil {
		return exchange.MobileDevice{}, fmt.Errorf("add device %q: %w", s.DeviceId, err)
	}
	return o.mobileDeviceLocked(d), nil
}

func (o *Org) addDeviceLocked(mb *mailbox, s DeviceSpec) (*device, error) {
	if s.DeviceId == "" {
		return nil, invalidValue("DeviceId", "must not be empty")
	}
	if s.DeviceType == "" {
		return nil, invalidValue("DeviceType", "must not be empty")
	}
	client := "EAS"
	switch {
	case s.ClientType == "" || strings.EqualFold(s.ClientType, "EAS"):
	case strings.EqualFold(s.ClientType, "Outlook"):
		client = "Outlook"
	default:
		return nil, invalidValue("ClientType", fmt.Sprintf("want EAS or Outlook, got %q", s.ClientType))
	}
	cn := s.DeviceType + "§" + s.DeviceId
	for _, d := range mb.devices {
		if strings.EqualFold(d.typ+"§"+d.id, cn) {
			return nil, alreadyExists(o.dc, d.dn)
		}
	}
	first := s.FirstSyncTime
	if first.IsZero() {
		first = time.Now()
	}
	d := &device{
		mb: mb, id: s.DeviceId, typ: s.DeviceType, model: s.DeviceModel, os: s.DeviceOS, ua: s.DeviceUserAgent,
		xmswl: s.XMSWLHeader, friendly: s.FriendlyName, client: client, firstSync: first.UTC(), discovery: s.Discovery,
		identity: mb.name + `\ExchangeActiveSyncDevices\` + cn,
		dn:       "CN=" + escapeRDN(cn) + ",CN=ExchangeActiveSyncDevices," + mb.dn,
	}
	d.guid = nameGUID("device:" + strings.ToLower(d.dn))
	d.stored = Verdict{State: exchange.AccessUnknown, Reason: exchange.ReasonUnknown, Partnership: true}
	o.contactLocked(d) // the request that created the partnership
	mb.devices = append(mb.devices, d)
	o.devices = append(o.devices, d)
	for _, k := range []string{d.identity, d.dn, d.guid} {
		o.devIndex[strings.ToLower(k)] = d
	}
	return d, nil
}

// DevicePatch changes what a phone reports about itself; nil fields stay.
type DevicePatch struct {
	DeviceModel     *string `json:"DeviceModel,omitempty"`
	DeviceOS        *string `json:"DeviceOS,omitempty"`
	DeviceUserAgent *string `json:"DeviceUserAgent,omitempty"`
	XMSWLHeader     *string `json:"XMSWLHeader,omitempty"`
	FriendlyName    *string `json:"FriendlyName,omitempty"`
	Discovery       *bool   `json:"Discovery,omitempty"`
}

// UpdateDevice applies p to the device with the given identity (Identity,
// DistinguishedName or Guid).
func (o *Org) UpdateDevice(identity string, p DevicePatch) (exchange.MobileDevice, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	d, err := o.resolveDeviceLocked(identity)
	if err != nil {
		return exchange.MobileDevice{}, fmt.Errorf("update device %s: %w", identity, err)
	}
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&d.model, p.DeviceModel)
	set(&d.os, p.DeviceOS)
	set(&d.ua, p.DeviceUserAgent)
	set(&d.xmswl, p.XMSWLHeader)
	set(&d.friendly, p.FriendlyName)
	if p.Discovery != nil {
		d.discovery = *p.Discovery
	}
	o.contactLocked(d) // the phone reported the change in a request
	return o.mobileDeviceLocked(d), nil
}

// contactLocked is one request of the phone: Exchange evaluates ABQ and
// stores the outcome on the device (Get-MobileDevice shows it until the next
// request). A mailbox with ActiveSync disabled is refused before ABQ is
// evaluated, so nothing is stored (Exchange's AirSync checks the user's
// ActiveSyncEnabled when it authorizes the request, before
// Command.IsDeviceAccessAllowed; Set-CASMailbox's ActiveSyncEnabled
// description in office-docs-powershell).
func (o *Org) contactLocked(d *device) {
	if !d.mb.easEnabled {
		return
	}
	d.stored = o.evaluateLocked(d.mb, d.id, d)
}

// Contact models the next request of one phone (Identity, DistinguishedName
// or Guid): its access state is evaluated and stored, as on a real Client
// Access server. It returns the device as Get-MobileDevice then shows it.
func (o *Org) Contact(identity string) (exchange.MobileDevice, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	d, err := o.resolveDeviceLocked(identity)
	if err != nil {
		return exchange.MobileDevice{}, fmt.Errorf("contact device %s: %w", identity, err)
	}
	o.contactLocked(d)
	return o.mobileDeviceLocked(d), nil
}

// ContactAll models every phone making a request (a heartbeat interval
// passing: Ping and Sync requests arrive at least every few minutes from an
// active phone). It returns the number of devices evaluated.
func (o *Org) ContactAll() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, d := range o.devices {
		o.contactLocked(d)
	}
	return len(o.devices)
}

// RemoveDevice deletes a partnership (as Remove-MobileDevice would).
func (o *Org) RemoveDevice(identity string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	d, err := o.resolveDeviceLocked(identity)
	if err != nil {
		return fmt.Errorf("remove device %s: %w", identity, err)
	}
	d.removed = true
	d.mb.devices = slices.DeleteFunc(d.mb.devices, func(x *device) bool { return x == d })
	o.devices = slices.DeleteFunc(o.devices, func(x *device) bool { return x == d })
	for _, k := range []string{d.identity, d.dn, d.guid} {
		delete(o.devIndex, strings.ToLower(k))
	}
	return nil
}

func (o *Org) resolveDeviceLocked(identity string) (*device, error) {
	if d, ok := o.devIndex[strings.ToLower(strings.TrimSpace(identity))]; ok {
		return d, nil
	}
	return nil, notFound(identity, o.dc)
}

// Mailbox returns the mailbox with the given identity as Get-CASMailbox
// shows it.
func (o *Org) Mailbox(identity string) (exchange.CASMailbox, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	mb, err := o.resolveMailboxLocked(identity)
	if err != nil {
		return exchange.CASMailbox{}, fmt.Errorf("get mailbox %s: %w", identity, err)
	}
	return mb.cas(), nil
}

// Mailboxes returns up to limit mailboxes (limit ≤ 0: all) from offset, in
// creation order, and the total count.
func (o *Org) Mailboxes(offset, limit int) ([]exchange.CASMailbox, int) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	page := window(o.mailboxes, offset, limit)
	out := make([]exchange.CASMailbox, len(page))
	for i, mb := range page {
		out[i] = mb.cas()
	}
	return out, len(o.mailboxes)
}

// Device returns one partnership by Identity, DistinguishedName or Guid.
func (o *Org) Device(identity string) (exchange.MobileDevice, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	d, err := o.resolveDeviceLocked(identity)
	if err != nil {
		return exchange.MobileDevice{}, fmt.Errorf("get device %s: %w", identity, err)
	}
	return o.mobileDeviceLocked(d), nil
}

// Devices returns up to limit partnerships (limit ≤ 0: all) from offset, of
// one mailbox (mailbox != "") or of the whole organization, with their
// access state evaluated now, and the total count.
func (o *Org) Devices(mailbox string, offset, limit int) ([]exchange.MobileDevice, int, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	all := o.devices
	if mailbox != "" {
		mb, err := o.resolveMailboxLocked(mailbox)
		if err != nil {
			return nil, 0, fmt.Errorf("get devices of %s: %w", mailbox, err)
		}
		all = mb.devices
	}
	page := window(all, offset, limit)
	out := make([]exchange.MobileDevice, len(page))
	for i, d := range page {
		out[i] = o.mobileDeviceLocked(d)
	}
	return out, len(all), nil
}

// DeviceCount returns the number of partnerships.
func (o *Org) DeviceCount() int {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return len(o.devices)
}

func window[T any](s []T, offset, limit int) []T {
	offset = max(offset, 0)
	if offset >= len(s) {
		return nil
	}
	s = s[offset:]
	if limit > 0 && limit < len(s) {
		s = s[:limit]
	}
	return s
}

func (o *Org) mobileDeviceLocked(d *device) exchange.MobileDevice {
	v := d.stored
	return exchange.MobileDevice{
		Identity: d.identity, DistinguishedName: d.dn, DeviceId: d.id, DeviceType: d.typ, DeviceModel: d.model,
		DeviceOS: d.os, DeviceUserAgent: d.ua, UserDisplayName: d.mb.name, FirstSyncTime: d.firstSync,
		DeviceAccessState: v.State, DeviceAccessStateReason: v.Reason, ClientType: d.client,
	}
}

// SetLists replaces both ActiveSync lists of a mailbox (nil clears a list),
// as Set-CASMailbox with arrays does.
func (o *Org) SetLists(mailbox string, allowed, blocked []string) error {
	return o.EditLists(mailbox, ListChange{Set: true, Values: allowed}, ListChange{Set: true, Values: blocked})
}

// ListChange is one edit of a multi-valued property, with Exchange's
// semantics: Set replaces the list with Values (empty Values clears it);
// otherwise Add then Remove, each value compared case-insensitively, adding
// a present value or removing an absent one being no change. A zero
// ListChange changes nothing.
type ListChange struct {
	Set    bool
	Values []string
	Add    []string
	Remove []string
}

// FromListEdit converts the wire form @{Add=…;Remove=…}.
func FromListEdit(e runspace.ListEdit) ListChange { return ListChange{Add: e.Add, Remove: e.Remove} }

func (c ListChange) apply(cur []string) []string {
	if c.Set {
		return dedupe(c.Values)
	}
	out := slices.Clone(cur)
	for _, v := range c.Add {
		if !containsFold(out, v) {
			out = append(out, v)
		}
	}
	for _, v := range c.Remove {
		out = slices.DeleteFunc(out, func(x string) bool { return strings.EqualFold(x, v) })
	}
	return out
}

func (c ListChange) isZero() bool { return !c.Set && len(c.Add) == 0 && len(c.Remove) == 0 }

// EditLists edits the ActiveSync allowed and blocked lists of a mailbox with
// Set-CASMailbox's semantics (editMailboxLocked).
func (o *Org) EditLists(mailbox string, allowed, blocked ListChange) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	mb, err := o.resolveMailboxLocked(mailbox)
	if err != nil {
		return fmt.Errorf("set lists of %s: %w", mailbox, err)
	}
	if _, err := o.editMailboxLocked(mb, allowed, blocked, nil); err != nil {
		return fmt.Errorf("set lists of %s: %w", mailbox, err)
	}
	return nil
}

// SetActiveSyncEnabled turns EAS on or off for a mailbox. The devices'
// stored states stay as they are: Exchange changes them only at a request.
func (o *Org) SetActiveSyncEnabled(mailbox string, enabled bool) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	mb, err := o.resolveMailboxLocked(mailbox)
	if err != nil {
		return fmt.Errorf("set activesync of %s: %w", mailbox, err)
	}
	_, err = o.editMailboxLocked(mb, ListChange{}, ListChange{}, &enabled)
	return err
}

// editMailboxLocked applies the edits as Set-CASMailbox does and reports
// whether anything changed. Exchange keeps the two lists disjoint: when one
// call changes only one list, an id it leaves in that list is dropped from
// the other; when a call changes both and an id ends up in both, the call is
// refused with ErrorDeviceIdInBothLists (InvalidData) and nothing changes.
// When a list changed, the stored state of the mailbox's devices follows at
// once: a blocked id → Blocked/Individual, an allowed id → Allowed/
// Individual, and a device whose Individual state no longer has an entry →
// Unknown/Unknown until the phone's next request. (Set-CASMailbox.md in
// office-docs-powershell documents the lists; the reconciliation and the
// state update are those of Exchange 2016's SetCASMailboxBase, seen in the
// decompiled build 15.1.2106 of evilashz/exchange-server-27065.)
func (o *Org) editMailboxLocked(mb *mailbox, allowed, blocked ListChange, enabled *bool) (bool, error) {
	nextAllowed, nextBlocked := mb.allowed, mb.blocked
	allowedChanged, blockedChanged := false, false
	if !allowed.isZero() {
		nextAllowed = allowed.apply(mb.allowed)
		allowedChanged = !slices.Equal(nextAllowed, mb.allowed)
	}
	if !blocked.isZero() {
		nextBlocked = blocked.apply(mb.blocked)
		blockedChanged = !slices.Equal(nextBlocked, mb.blocked)
	}
	if allowedChanged || blockedChanged {
		var both []string
		for _, id := range nextAllowed {
			if containsFold(nextBlocked, id) {
				both = append(both, id)
			}
		}
		switch {
		case len(both) > 0 && allowedChanged && blockedChanged:
			return false, deviceIDInBothLists(both[0])
		case allowedChanged:
			nextBlocked = slices.DeleteFunc(slices.Clone(nextBlocked), func(x string) bool { return containsFold(both, x) })
			blockedChanged = len(both) > 0
		case blockedChanged:
			nextAllowed = slices.DeleteFunc(slices.Clone(nextAllowed), func(x string) bool { return containsFold(both, x) })
			allowedChanged = len(both) > 0
		}
	}
	changed := allowedChanged || blockedChanged
	mb.allowed, mb.blocked = nextAllowed, nextBlocked
	if changed {
		for _, d := range mb.devices {
			switch {
			case containsFold(mb.blocked, d.id):
				d.stored = Verdict{State: exchange.AccessBlocked, Reason: exchange.ReasonIndividual, Partnership: true}
			case containsFold(mb.allowed, d.id):
				d.stored = Verdict{State: exchange.AccessAllowed, Reason: exchange.ReasonIndividual, Partnership: true}
			case d.stored.Reason == exchange.ReasonIndividual &&
				(d.stored.State == exchange.AccessAllowed || d.stored.State == exchange.AccessBlocked):
				d.stored = Verdict{State: exchange.AccessUnknown, Reason: exchange.ReasonUnknown, Partnership: true}
			}
		}
	}
	if enabled != nil && *enabled != mb.easEnabled {
		mb.easEnabled = *enabled
		changed = true
	}
	if changed {
		mb.whenChanged = time.Now().UTC()
	}
	return changed, nil
}

func dedupe(vs []string) []string {
	var out []string
	for _, v := range vs {
		if !containsFold(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func containsFold(list []string, v string) bool {
	for _, x := range list {
		if strings.EqualFold(x, v) {
			return true
		}
	}
	return false
}

// Settings returns the ActiveSync organization settings.
func (o *Org) Settings() exchange.OrgSettings {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.settingsLocked()
}

func (o *Org) settingsLocked() exchange.OrgSettings {
	return exchange.OrgSettings{Identity: orgSettingsName, DefaultAccessLevel: o.level,
		AdminMailRecipients: slices.Clone(o.adminRecipients), UserMailInsert: o.userMailInsert}
}

// SetOrg replaces the ActiveSync organization settings (Identity is
// ignored). It refuses an unknown level, an invalid recipient address and a
// mail insert longer than exchange.MaxUserMailInsert, changing nothing.
func (o *Org) SetOrg(s exchange.OrgSettings) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.setOrgLocked(&s.DefaultAccessLevel, &ListChange{Set: true, Values: s.AdminMailRecipients}, &s.UserMailInsert, nil)
}

func (o *Org) setOrgLocked(level *exchange.AccessLevel, recipients *ListChange, userInsert, otaInsert *string) error {
	var lv exchange.AccessLevel
	if level != nil {
		var err error
		if lv, err = exchange.ParseAccessLevel(string(*level)); err != nil {
			return fmt.Errorf("set organization settings: %w", invalidValue("DefaultAccessLevel", err.Error()))
		}
	}
	var rcpt []string
	if recipients != nil {
		rcpt = recipients.apply(o.adminRecipients)
		for _, a := range rcpt {
			if !validSMTP(a) {
				return fmt.Errorf("set organization settings: %w", invalidSMTP(a))
			}
		}
	}
	for _, s := range []*string{userInsert, otaInsert} {
		if s != nil && len([]rune(*s)) > exchange.MaxUserMailInsert {
			return fmt.Errorf("set organization settings: %w", tooLong(exchange.MaxUserMailInsert, len([]rune(*s))))
		}
	}
	if level != nil {
		o.level = lv
	}
	if recipients != nil {
		o.adminRecipients = rcpt
	}
	if userInsert != nil {
		o.userMailInsert = *userInsert
	}
	if otaInsert != nil {
		o.otaMailInsert = *otaInsert
	}
	o.settingsChanged = time.Now().UTC()
	return nil
}

// validSMTP accepts a bare SMTP address (no display name, no brackets).
func validSMTP(a string) bool {
	addr, err := mail.ParseAddress(a)
	return err == nil && addr.Name == "" && addr.Address == a
}

// Rules returns the device access rules in creation order.
func (o *Org) Rules() []exchange.DeviceAccessRule {
	o.mu.RLock()
	defer o.mu.RUnlock()
	out := make([]exchange.DeviceAccessRule, len(o.rules))
	for i, r := range o.rules {
		out[i] = r.public()
	}
	return out
}

func (r *rule) public() exchange.DeviceAccessRule {
	return exchange.DeviceAccessRule{Identity: r.name, Name: r.name, Characteristic: r.ch, QueryString: r.query, AccessLevel: r.level}
}

// characteristics lists Exchange's DeviceAccessCharacteristic values.
var characteristics = []exchange.Characteristic{exchange.CharDeviceType, exchange.CharDeviceModel,
	exchange.CharDeviceOS, exchange.CharUserAgent, exchange.CharXMSWLHeader}

func parseCharacteristic(s string) (exchange.Characteristic, bool) {
	for _, c := range characteristics {
		if strings.EqualFold(s, string(c)) {
			return c, true
		}
	}
	return "", false
}

// AddRule creates a device access rule named "<QueryString> (<Characteristic>)".
func (o *Org) AddRule(ch exchange.Characteristic, query string, level exchange.AccessLevel) (exchange.DeviceAccessRule, error) {
	c, ok := parseCharacteristic(string(ch))
	if !ok {
		return exchange.DeviceAccessRule{}, fmt.Errorf("new device access rule: %w", invalidValue("Characteristic", fmt.Sprintf("unknown characteristic %q", ch)))
	}
	lv, err := exchange.ParseAccessLevel(string(level))
	if err != nil {
		return exchange.DeviceAccessRule{}, fmt.Errorf("new device access rule: %w", invalidValue("AccessLevel", err.Error()))
	}
	if query == "" {
		return exchange.DeviceAccessRule{}, fmt.Errorf("new device access rule: %w", invalidValue("QueryString", "must not be empty"))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	r, err := o.addRuleLocked(c, query, lv)
	if err != nil {
		return exchange.DeviceAccessRule{}, fmt.Errorf("new device access rule: %w", err)
	}
	return r.public(), nil
}

func (o *Org) addRuleLocked(ch exchange.Characteristic, query string, level exchange.AccessLevel) (*rule, error) {
	name := query + " (" + string(ch) + ")"
	dn := "CN=" + escapeRDN(name) + "," + o.configDN
	for _, r := range o.rules {
		if strings.EqualFold(r.name, name) {
			return nil, alreadyExists(o.dc, dn)
		}
	}
	r := &rule{guid: nameGUID("rule:" + strings.ToLower(dn)), name: name, dn: dn, ch: ch, query: query, level: level,
		whenChanged: time.Now().UTC()}
	o.rules = append(o.rules, r)
	return r, nil
}

func (o *Org) resolveRuleLocked(identity string) (*rule, error) {
	id := strings.TrimSpace(identity)
	for _, r := range o.rules {
		if strings.EqualFold(r.name, id) || strings.EqualFold(r.dn, id) || strings.EqualFold(r.guid, id) {
			return r, nil
		}
	}
	return nil, notFound(identity, o.dc)
}

// Rule returns one rule by Name, DistinguishedName or Guid.
func (o *Org) Rule(identity string) (exchange.DeviceAccessRule, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	r, err := o.resolveRuleLocked(identity)
	if err != nil {
		return exchange.DeviceAccessRule{}, fmt.Errorf("get device access rule %s: %w", identity, err)
	}
	return r.public(), nil
}

// SetRule changes the access level of a rule.
func (o *Org) SetRule(identity string, level exchange.AccessLevel) error {
	lv, err := exchange.ParseAccessLevel(string(level))
	if err != nil {
		return fmt.Errorf("set device access rule %s: %w", identity, invalidValue("AccessLevel", err.Error()))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	r, err := o.resolveRuleLocked(identity)
	if err != nil {
		return fmt.Errorf("set device access rule %s: %w", identity, err)
	}
	r.level, r.whenChanged = lv, time.Now().UTC()
	return nil
}

// RemoveRule deletes a rule.
func (o *Org) RemoveRule(identity string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	r, err := o.resolveRuleLocked(identity)
	if err != nil {
		return fmt.Errorf("remove device access rule %s: %w", identity, err)
	}
	o.rules = slices.DeleteFunc(o.rules, func(x *rule) bool { return x == r })
	return nil
}

// Servers returns the organization's Exchange servers.
func (o *Org) Servers() []exchange.ExchangeServer {
	o.mu.RLock()
	defer o.mu.RUnlock()
	out := make([]exchange.ExchangeServer, len(o.servers))
	for i, s := range o.servers {
		s.ServerRole = slices.Clone(s.ServerRole)
		out[i] = s
	}
	return out
}

// siteName is the AD site every simulated server is in.
func siteName(domain string) string { return domain + "/Configuration/Sites/Default-First-Site-Name" }

func (o *Org) setServers(s []exchange.ExchangeServer) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.servers = s
}

// Verdict is the outcome of Exchange's ABQ evaluation for one device.
type Verdict struct {
	State  exchange.AccessState  `json:"DeviceAccessState"`
	Reason exchange.AccessReason `json:"DeviceAccessStateReason"`
	// Rule names the device access rule that decided, when Reason is DeviceRule.
	Rule string `json:"DeviceAccessControlRule,omitempty"`
	// Partnership reports whether the mailbox has a partnership with this
	// DeviceId; without one, device access rules cannot match (Exchange
	// knows nothing of the phone's characteristics yet).
	Partnership bool `json:"Partnership"`
}

// Access answers "would this device get mail now?" for a DeviceId on a
// mailbox (any identity form, including its DN), evaluating ABQ exactly in
// Exchange's order. An unknown or ambiguous mailbox yields Unknown/Unknown.
func (o *Org) Access(mailbox, deviceID string) (exchange.AccessState, exchange.AccessReason) {
	v, err := o.Evaluate(mailbox, deviceID)
	if err != nil {
		return exchange.AccessUnknown, exchange.ReasonUnknown
	}
	return v.State, v.Reason
}

// Evaluate is Access with the deciding rule and the error that made a
// mailbox unresolvable.
func (o *Org) Evaluate(mailbox, deviceID string) (Verdict, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	mb, err := o.resolveMailboxLocked(mailbox)
	if err != nil {
		return Verdict{}, fmt.Errorf("evaluate access of %s on %s: %w", deviceID, mailbox, err)
	}
	var d *device
	for _, x := range mb.devices {
		if strings.EqualFold(x.id, deviceID) {
			d = x
			break
		}
	}
	return o.evaluateLocked(mb, deviceID, d), nil
}

// evaluateLocked is Exchange's ABQ evaluation of one request (the live
// answer to "would this phone get mail now?"; reference/exchange.md §3.1):
//
//  1. ActiveSync disabled for the mailbox → Blocked (Policy). On a real
//     server the request is refused before ABQ and nothing is stored
//     (contactLocked); this answer exists for the live query only.
//  2. DeviceId in ActiveSyncBlockedDeviceIDs → Blocked (Individual).
//  3. DeviceId in ActiveSyncAllowedDeviceIDs → Allowed (Individual).
//  4. When device access rules exist and the device has not reported its
//     characteristics yet (discovery) → DeviceDiscovery (DeviceRule). With
//     no rules there is nothing to discover and the default applies.
//  5. Device access rules by characteristic, in the fixed order UserAgent,
//     DeviceOS, DeviceModel, DeviceType; the first characteristic with a
//     matching rule decides, whatever its access level → DeviceRule. A rule
//     matches the whole value, case-insensitively ("Wildcards or partial
//     matches aren't allowed", New-ActiveSyncDeviceAccessRule.md); rule
//     names are unique, so at most one rule per characteristic matches.
//     XMSWLHeader rules take no part in this evaluation.
//  6. Otherwise the organization's DefaultAccessLevel → Global.
//
// Microsoft's documentation lists the access levels but not the precedence
// between rules; steps 4 and 5 follow Exchange 2016's AirSync
// (Command.DetermineDeviceAccessState and IsDeviceAccessAllowed, build
// 15.1.2106 as decompiled in evilashz/exchange-server-27065): user agent,
// then device OS, then device model, then device type, first match wins.
//
// DeviceIds compare case-insensitively throughout. d is the partnership (nil
// when the mailbox has none with this DeviceId: rules then cannot match).
func (o *Org) evaluateLocked(mb *mailbox, deviceID string, d *device) Verdict {
	known := d != nil
	switch {
	case !mb.easEnabled:
		return Verdict{State: exchange.AccessBlocked, Reason: exchange.ReasonPolicy, Partnership: known}
	case containsFold(mb.blocked, deviceID):
		return Verdict{State: exchange.AccessBlocked, Reason: exchange.ReasonIndividual, Partnership: known}
	case containsFold(mb.allowed, deviceID):
		return Verdict{State: exchange.AccessAllowed, Reason: exchange.ReasonIndividual, Partnership: known}
	case known && d.discovery && len(o.rules) > 0:
		return Verdict{State: exchange.AccessDeviceDiscovery, Reason: exchange.ReasonDeviceRule, Partnership: known}
	}
	if known {
		if r := o.matchRuleLocked(d); r != nil {
			return Verdict{State: stateOf(r.level), Reason: exchange.ReasonDeviceRule, Rule: r.name, Partnership: true}
		}
	}
	return Verdict{State: stateOf(o.level), Reason: exchange.ReasonGlobal, Partnership: known}
}

// RuleOrder is the order in which Exchange tries device access rules by
// characteristic (evaluateLocked, step 5).
var RuleOrder = []exchange.Characteristic{exchange.CharUserAgent, exchange.CharDeviceOS, exchange.CharDeviceModel, exchange.CharDeviceType}

// matchRuleLocked returns the rule that decides for d, or nil.
func (o *Org) matchRuleLocked(d *device) *rule {
	for _, ch := range RuleOrder {
		v := d.characteristic(ch)
		if v == "" {
			continue // Exchange skips an absent user agent or OS
		}
		for _, r := range o.rules {
			if r.ch == ch && strings.EqualFold(v, r.query) {
				return r
			}
		}
	}
	return nil
}

func (d *device) characteristic(c exchange.Characteristic) string {
	switch c {
	case exchange.CharDeviceType:
		return d.typ
	case exchange.CharDeviceModel:
		return d.model
	case exchange.CharDeviceOS:
		return d.os
	case exchange.CharUserAgent:
		return d.ua
	case exchange.CharXMSWLHeader:
		return d.xmswl
	}
	return ""
}

func stateOf(l exchange.AccessLevel) exchange.AccessState {
	switch l {
	case exchange.LevelBlock:
		return exchange.AccessBlocked
	case exchange.LevelQuarantine:
		return exchange.AccessQuarantined
	}
	return exchange.AccessAllowed
}

// escapeRDN escapes an AD relative distinguished name value (RFC 4514), as
// population does, so DNs of hostile device ids stay parseable.
func escapeRDN(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case strings.ContainsRune(`,+"\<>;=`, r), r == '#' && i == 0, r == ' ' && (i == 0 || i == len(s)-1):
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// canonicalName turns "CN=Alice,OU=Users,DC=contoso,DC=com" into
// "contoso.com/Users/Alice", the form Exchange also accepts as identity.
func canonicalName(dn string) string {
	var dcs, path []string
	for _, rdn := range splitDN(dn) {
		k, v, ok := strings.Cut(rdn, "=")
		if !ok {
			return ""
		}
		if strings.EqualFold(k, "DC") {
			dcs = append(dcs, v)
		} else {
			path = append(path, v)
		}
	}
	slices.Reverse(path)
	return strings.Join(append([]string{strings.Join(dcs, ".")}, path...), "/")
}

// splitDN splits a DN at unescaped commas and unescapes each value.
func splitDN(dn string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(dn); i++ {
		switch c := dn[i]; {
		case c == '\\' && i+1 < len(dn):
			i++
			cur.WriteByte(dn[i])
		case c == ',':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(out, cur.String())
}

// nameGUID derives a stable version-5-style GUID from a name, so the same
// population always yields the same device and rule Guids.
func nameGUID(name string) string {
	h := sha1.Sum([]byte(name))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

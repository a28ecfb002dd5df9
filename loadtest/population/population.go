// Package population generates a seeded, reproducible fleet of mailboxes,
// EAS devices and MDM records. The Exchange simulator (exsim) and the Graph
// simulator (graphsim) load the same Population so that both sides describe
// the same organization; Churn mutates it the way a real fleet changes.
package population

import (
	"crypto/sha1"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Options shape a generated population. The zero value of each field takes
// the default noted beside it.
type Options struct {
	Seed    uint64    // 0 → 1
	Devices int       // EAS devices in Exchange; 0 → 5000
	Domain  string    // "" → "contoso.com"
	Now     time.Time // reference time; zero → time.Now() truncated to the minute
	// Rates in [0,1]; negative means 0.
	EnrolledRate   float64 // devices known to the MDM; 0 → 0.85
	CompliantRate  float64 // of enrolled; 0 → 0.88
	ExemptRate     float64 // mailboxes in the excluded group; 0 → 0.01
	UntargetedRate float64 // mailboxes in no included group; 0 → 0.02
	AdminEntryRate float64 // mailboxes with an admin-made allow/block entry; 0 → 0.01
	ExtraMDMRate   float64 // MDM records with no EAS partnership, per device; 0 → 0.05
}

func (o Options) withDefaults() Options {
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Devices == 0 {
		o.Devices = 5000
	}
	if o.Domain == "" {
		o.Domain = "contoso.com"
	}
	if o.Now.IsZero() {
		o.Now = time.Now().UTC().Truncate(time.Minute)
	}
	def := func(p *float64, d float64) {
		if *p == 0 {
			*p = d
		}
		if *p < 0 {
			*p = 0
		}
	}
	def(&o.EnrolledRate, 0.85)
	def(&o.CompliantRate, 0.88)
	def(&o.ExemptRate, 0.01)
	def(&o.UntargetedRate, 0.02)
	def(&o.AdminEntryRate, 0.01)
	def(&o.ExtraMDMRate, 0.05)
	return o
}

// Mailbox is one user with an EAS partnership.
type Mailbox struct {
	Guid string // the Exchange/AD object guid (CASMailbox Guid)
	// EntraID is the user's Entra ID object id, as Graph names the user
	// (managedDevice userId, a group member's id). It is not the AD
	// guid: Entra Connect gives a synced user a new object id and keeps
	// the AD guid only as onPremisesImmutableId, so nothing may join the
	// two sides on it. Derived from Guid, so it costs no random draw.
	EntraID           string
	Name              string // also the AD CN
	DisplayName       string
	SamAccountName    string
	PrimarySmtp       string
	UPN               string
	DistinguishedName string
	Allowed           []string // ActiveSyncAllowedDeviceIDs (admin-made entries)
	Blocked           []string // ActiveSyncBlockedDeviceIDs (admin-made entries)
}

// Device is one EAS partnership.
type Device struct {
	Mailbox   int // index into Population.Mailboxes
	DeviceID  string
	Type      string
	Model     string
	OS        string
	UserAgent string
	Platform  string // iOS, Android, Windows, Other
	FirstSync time.Time
}

// DistinguishedName is the device's AD object under its mailbox user.
func (p *Population) DeviceDN(d Device) string {
	mb := p.Mailboxes[d.Mailbox]
	return fmt.Sprintf("CN=%s§%s,CN=ExchangeActiveSyncDevices,%s", d.Type, d.DeviceID, mb.DistinguishedName)
}

// MDMRecord is one device as the MDM (Intune) knows it; field names follow
// Graph's managedDevice.
type MDMRecord struct {
	ID                string
	UserID            string // the owner's Entra object id (Mailbox.EntraID)
	EASDeviceID       string
	UserPrincipalName string
	Email             string
	ComplianceState   string // Graph complianceState
	EnrolledAt        time.Time
	LastSyncAt        time.Time
	OperatingSystem   string
	OSVersion         string
	Model             string
}

// Group is a directory group; Members are indexes into Mailboxes.
type Group struct {
	ID      string
	Name    string
	Members []int
}

// Population is the whole generated fleet.
type Population struct {
	Options   Options
	Mailboxes []Mailbox
	Devices   []Device
	MDM       []MDMRecord
	Included  Group // the policy's targeted group
	Excluded  Group // the policy's exempt group
	rng       *rand.Rand
	serial    int
}

type platform struct {
	name, typ, model, os, agent string
	weight                      float64
}

var platforms = []platform{
	{"iOS", "iPhone", "iPhone15C2", "iOS 17.5.1 21F90", "Apple-iPhone15C2/2105.90", 0.50},
	{"iOS", "iPad", "iPad13C1", "iOS 17.4 21E219", "Apple-iPad13C1/2104.219", 0.05},
	{"Android", "Android", "SM-S918B", "Android 14.0.0", "Android-SAMSUNG-SM-S918B/101.140000", 0.25},
	{"Android", "Android", "Pixel 8", "Android 14.0.0", "Android/14-EAS-2.0", 0.12},
	{"Windows", "WindowsMail", "Surface Pro", "Windows 11", "MSFT-WIN-3/10.0.22631", 0.03},
	{"Other", "Nine", "Nine Work", "Android 13", "Nine/4.9.4", 0.05},
}

var firstNames = []string{"Alice", "Bob", "Carol", "Dan", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Zoe"}
var lastNames = []string{"Anderson", "Baker", "Chen", "Dubois", "Evans", "Fischer", "García", "Hansen", "Ivanova", "Jones", "Kowalski", "Larsen", "Müller", "Nakamura", "O'Brien", "Patel", "Quinn", "Rossi", "Schmidt", "Tanaka"}

// Generate builds a population. The same Options give the same population.
func Generate(opts Options) *Population {
	o := opts.withDefaults()
	p := &Population{Options: o, rng: rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))}
	p.Included = Group{ID: p.guid(), Name: "EAS Conditional Access"}
	p.Excluded = Group{ID: p.guid(), Name: "EAS Exempt"}
	for len(p.Devices) < o.Devices {
		mi := p.addMailbox()
		n := 1
		switch r := p.rng.Float64(); {
		case r < 0.10:
			n = 3
		case r < 0.40:
			n = 2
		}
		for j := 0; j < n && len(p.Devices) < o.Devices; j++ {
			p.AddDevice(mi, true)
		}
	}
	for i := range p.Mailboxes {
		r := p.rng.Float64()
		switch {
		case r < o.ExemptRate:
			p.Excluded.Members = append(p.Excluded.Members, i)
			p.Included.Members = append(p.Included.Members, i) // exclusion wins
		case r < o.ExemptRate+o.UntargetedRate:
		default:
			p.Included.Members = append(p.Included.Members, i)
		}
	}
	// Admin-made entries: an admin allowed or blocked one of the user's phones.
	for _, d := range p.Devices {
		if p.rng.Float64() < o.AdminEntryRate/1.5 {
			mb := &p.Mailboxes[d.Mailbox]
			if p.rng.Float64() < 0.7 {
				mb.Allowed = append(mb.Allowed, d.DeviceID)
			} else {
				mb.Blocked = append(mb.Blocked, d.DeviceID)
			}
		}
	}
	extra := int(float64(o.Devices) * o.ExtraMDMRate)
	for range extra {
		mi := p.rng.IntN(len(p.Mailboxes))
		pl := p.pickPlatform()
		p.MDM = append(p.MDM, p.newRecord(mi, p.deviceID(pl), pl))
	}
	return p
}

func (p *Population) guid() string {
	b := make([]byte, 16)
	for i := range b {
		b[i] = byte(p.rng.UintN(256))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// entraID derives a user's Entra object id from its AD guid: a name-based
// (version 5 style) UUID, stable and distinct from the guid.
func entraID(guid string) string {
	h := sha1.Sum([]byte("entra-object-id:" + guid))
	b := h[:16]
	b[6] = b[6]&0x0f | 0x50
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (p *Population) addMailbox() int {
	p.serial++
	fn := firstNames[p.rng.IntN(len(firstNames))]
	ln := lastNames[p.rng.IntN(len(lastNames))]
	alias := fmt.Sprintf("%s.%s%d", strings.ToLower(fn), asciiFold(strings.ToLower(ln)), p.serial)
	name := fmt.Sprintf("%s %s %d", fn, ln, p.serial)
	smtp := alias + "@" + p.Options.Domain
	guid := p.guid()
	mb := Mailbox{
		Guid:              guid,
		EntraID:           entraID(guid),
		Name:              name,
		DisplayName:       fmt.Sprintf("%s %s", fn, ln),
		SamAccountName:    alias,
		PrimarySmtp:       smtp,
		UPN:               smtp,
		DistinguishedName: fmt.Sprintf("CN=%s,OU=Users,DC=%s", escapeRDN(name), strings.ReplaceAll(p.Options.Domain, ".", ",DC=")),
	}
	p.Mailboxes = append(p.Mailboxes, mb)
	return len(p.Mailboxes) - 1
}

// escapeRDN escapes an AD relative distinguished name value (RFC 4514).
func escapeRDN(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case strings.ContainsRune(`,+"\<>;=`, r), r == '#' && i == 0:
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func asciiFold(s string) string {
	return strings.NewReplacer("í", "i", "ü", "u", "'", "", "ó", "o", "é", "e").Replace(s)
}

func (p *Population) pickPlatform() platform {
	r := p.rng.Float64()
	for _, pl := range platforms {
		if r < pl.weight {
			return pl
		}
		r -= pl.weight
	}
	return platforms[0]
}

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func (p *Population) deviceID(pl platform) string {
	prefix := map[string]string{"iOS": "Appl", "Android": "androidc", "Windows": "WP", "Other": "NINE"}[pl.name]
	n := 20
	if pl.name == "Android" {
		n = 16
	}
	b := []byte(prefix)
	for range n {
		b = append(b, idAlphabet[p.rng.IntN(len(idAlphabet))])
	}
	return string(b)
}

// AddDevice adds a new EAS partnership to mailbox mi, with an MDM record if
// enroll is true and the enrolment rate says so. It returns the device index.
func (p *Population) AddDevice(mi int, enroll bool) int {
	pl := p.pickPlatform()
	age := time.Duration(p.rng.IntN(400*24)) * time.Hour
	d := Device{
		Mailbox: mi, DeviceID: p.deviceID(pl), Type: pl.typ, Model: pl.model, OS: pl.os,
		UserAgent: pl.agent, Platform: pl.name, FirstSync: p.Options.Now.Add(-age),
	}
	p.Devices = append(p.Devices, d)
	if enroll && p.rng.Float64() < p.Options.EnrolledRate {
		rec := p.newRecord(mi, d.DeviceID, pl)
		if p.rng.Float64() < 0.05 { // Graph may report the EAS id in another case
			rec.EASDeviceID = strings.ToLower(rec.EASDeviceID)
		}
		if rec.EnrolledAt.Before(d.FirstSync) {
			rec.EnrolledAt = d.FirstSync.Add(time.Hour)
		}
		if rec.EnrolledAt.After(p.Options.Now) {
			rec.EnrolledAt = p.Options.Now
		}
		p.MDM = append(p.MDM, rec)
	}
	return len(p.Devices) - 1
}

func (p *Population) newRecord(mi int, easID string, pl platform) MDMRecord {
	mb := p.Mailboxes[mi]
	state := "compliant"
	if p.rng.Float64() >= p.Options.CompliantRate {
		switch r := p.rng.Float64(); {
		case r < 0.60:
			state = "noncompliant"
		case r < 0.75:
			state = "inGracePeriod"
		case r < 0.90:
			state = "unknown"
		case r < 0.95:
			state = "error"
		default:
			state = "conflict"
		}
	}
	enrolled := p.Options.Now.Add(-time.Duration(1+p.rng.IntN(300*24)) * time.Hour)
	last := p.Options.Now.Add(-time.Duration(p.rng.IntN(48*60)) * time.Minute)
	if p.rng.Float64() < 0.02 {
		last = p.Options.Now.Add(-time.Duration(40+p.rng.IntN(100)) * 24 * time.Hour)
	}
	return MDMRecord{
		ID: p.guid(), UserID: mb.EntraID, EASDeviceID: easID, UserPrincipalName: mb.UPN, Email: mb.PrimarySmtp,
		ComplianceState: state, EnrolledAt: enrolled, LastSyncAt: last,
		OperatingSystem: pl.name, OSVersion: pl.os, Model: pl.model,
	}
}

// ChangeKind names one kind of fleet activity.
type ChangeKind string

// Kinds of change Churn makes.
const (
	NewPhone       ChangeKind = "new-phone"       // a new EAS partnership (maybe enrolled)
	ComplianceFlip ChangeKind = "compliance-flip" // an MDM record changes compliance
	Unenroll       ChangeKind = "unenroll"        // an MDM record disappears
)

// Change is one mutation made by Churn, for simulators to apply.
type Change struct {
	Kind   ChangeKind
	Device int    // index into Devices (NewPhone)
	Record string // MDM record id (ComplianceFlip, Unenroll; NewPhone when enrolled)
	State  string // new compliance state (ComplianceFlip)
}

// Churn mutates about fraction × devices of the fleet, one third each new
// phones, compliance flips and unenrolments, advancing Now by step. It
// returns the changes in the order they were made.
func (p *Population) Churn(fraction float64, step time.Duration) []Change {
	p.Options.Now = p.Options.Now.Add(step)
	n := int(float64(len(p.Devices))*fraction + 0.5)
	if n < 1 {
		n = 1
	}
	var out []Change
	for i := range n {
		switch i % 3 {
		case 0:
			mi := p.rng.IntN(len(p.Mailboxes))
			before := len(p.MDM)
			di := p.AddDevice(mi, true)
			p.Devices[di].FirstSync = p.Options.Now
			c := Change{Kind: NewPhone, Device: di}
			if len(p.MDM) > before {
				p.MDM[len(p.MDM)-1].EnrolledAt = p.Options.Now
				p.MDM[len(p.MDM)-1].LastSyncAt = p.Options.Now
				c.Record = p.MDM[len(p.MDM)-1].ID
			}
			out = append(out, c)
		case 1:
			if len(p.MDM) == 0 {
				continue
			}
			r := &p.MDM[p.rng.IntN(len(p.MDM))]
			if r.ComplianceState == "compliant" {
				r.ComplianceState = "noncompliant"
			} else {
				r.ComplianceState = "compliant"
			}
			r.LastSyncAt = p.Options.Now
			out = append(out, Change{Kind: ComplianceFlip, Record: r.ID, State: r.ComplianceState})
		case 2:
			if len(p.MDM) == 0 {
				continue
			}
			k := p.rng.IntN(len(p.MDM))
			id := p.MDM[k].ID
			p.MDM = append(p.MDM[:k], p.MDM[k+1:]...)
			out = append(out, Change{Kind: Unenroll, Record: id})
		}
	}
	return out
}

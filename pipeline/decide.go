package pipeline

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/mdm"
)

// maxDeviceString bounds the phone-chosen strings (type, model) a row
// keeps: they are shown, never acted on.
const maxDeviceString = 256

// mbox is one mailbox as a sync sees it: who it belongs to, its lists and
// its partnerships with their decisions. Once published in a baseline it
// is never changed again (Devices reads it without a lock).
type mbox struct {
	dn, guid, smtp, name string
	upn                  string // from an MDM record of the mailbox's own user
	uid                  string // the user's Entra object id, from the MDM snapshot (Scope.UserID)
	sealed               bool   // published in a baseline: read-only
	// allowed and blocked are the lists the plan is made against (nil in a
	// published baseline); fresh reports whether they were read from
	// Exchange in this sync rather than taken from the cache.
	allowed, blocked []string
	fresh            bool
	devs             []row
	scope            Membership
	scoped           bool

	// The sync's work on the mailbox: plan is nil when it is not planned
	// or writes nothing (once its ownership is recorded).
	plan      *MailboxPlan
	conflicts int // of the plan, kept when the plan is dropped
	planned   bool
	written   bool // the write succeeded
	failed    bool // the write failed or its outcome is unknown
	attempts  int
}

// identity is how the mailbox is written and keyed in the state: its Guid,
// which survives renames, else its DN.
func (mb *mbox) identity() string {
	if mb.guid != "" {
		return mb.guid
	}
	return mb.dn
}

func (mb *mbox) user() User { return User{PrimarySmtp: mb.smtp, UPN: mb.upn, ID: mb.uid} }

// compareMailboxes orders mailboxes by primary SMTP address (ASCII case
// folded, without allocating), then by DN.
func compareMailboxes(x, y *mbox) int {
	a, b := x.smtp, y.smtp
	for i := 0; i < len(a) && i < len(b); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return int(ca) - int(cb)
		}
	}
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(x.dn, y.dn)
}

func newMbox(c *exchange.CASMailbox) *mbox {
	return &mbox{
		dn: c.DistinguishedName, guid: c.Guid, smtp: c.PrimarySmtpAddress, name: c.DisplayName, allowed: c.ActiveSyncAllowedDeviceIDs, blocked: c.ActiveSyncBlockedDeviceIDs, fresh: true,
	}
}

// row is one partnership and its decision, packed: a fleet's rows are
// kept from one sync to the next, so the enumerations are indexes into
// their value lists (88 bytes a row instead of 160).
type row struct {
	id, typ, model string
	firstSync      time.Time
	d, r           uint8 // indexes into decisionList, reasonList
	st, sr, c      uint8 // indexes into accessStates, accessReasons, compliances
	// after indexes accessStates: what the mailbox's own lists give the
	// device once the sync wrote (set when the mailbox is sealed).
	after    uint8
	enrolled bool // an MDM record joined
	// mdmSync is the joined record's last check-in (Graph
	// lastSyncDateTime) in Unix seconds, 0 when unknown: the status page
	// measures the change-to-enforcement lag from it.
	mdmSync int64
}

// The value lists of the packed fields; index 0 is the unknown value.
var (
	accessStates = []exchange.AccessState{exchange.AccessUnknown, exchange.AccessAllowed, exchange.AccessBlocked,
		exchange.AccessQuarantined, exchange.AccessDeviceDiscovery}
	accessReasons = []exchange.AccessReason{exchange.ReasonUnknown, exchange.ReasonGlobal, exchange.ReasonIndividual,
		exchange.ReasonDeviceRule, exchange.ReasonPolicy, exchange.ReasonUpgrade}
	compliances = []mdm.Compliance{"", mdm.ComplianceUnknown, mdm.ComplianceCompliant, mdm.ComplianceNoncompliant,
		mdm.ComplianceConflict, mdm.ComplianceError, mdm.ComplianceInGracePeriod, mdm.ComplianceConfigManager}
)

// pack returns v's index in list, 0 (the unknown value) if absent.
func pack[T ~string](list []T, v T) uint8 {
	for i, x := range list {
		if x == v {
			return uint8(i)
		}
	}
	return 0
}

// index packs i, or def when i is -1 (a value Decide never returns).
func index(i, def int) uint8 {
	if i < 0 {
		return uint8(def)
	}
	return uint8(i)
}

func (rw *row) decision() Decision                  { return decisionList[rw.d] }
func (rw *row) reason() Reason                      { return reasonList[rw.r] }
func (rw *row) accessState() exchange.AccessState   { return accessStates[rw.st] }
func (rw *row) accessReason() exchange.AccessReason { return accessReasons[rw.sr] }
func (rw *row) complianceState() mdm.Compliance     { return compliances[rw.c] }

func (rw *row) export(mb *mbox) DeviceRow {
	out := DeviceRow{
		Mailbox: mb.smtp, User: mb.name, UPN: mb.upn, DeviceID: rw.id, DeviceType: rw.typ, DeviceModel: rw.model,
		Decision: rw.decision(), Reason: rw.reason(), ExchangeState: rw.accessState(), Compliance: rw.complianceState(),
	}
	if rw.after != 0 {
		out.ExchangeAfter = accessStates[rw.after]
	}
	if rw.mdmSync != 0 {
		out.MDMLastSync = time.Unix(rw.mdmSync, 0).UTC()
	}
	return out
}

// sealAfter records in each row the access the mailbox's personal lists
// give the device after this sync: the lists as read, with the plan's
// changes when the write succeeded. Exchange tries the personal blocked
// list, then the personal allowed list, before device access rules and the
// org DefaultAccessLevel (Exchange 2010 help, "Understanding Exchange
// ActiveSync device access"; the Exchange team blog "Controlling Exchange
// ActiveSync device access using the Allow/Block/Quarantine list"), so a
// device in neither list is left unknown: rules or the default decide. It
// is what the connector's writes leave, not a state Exchange reported:
// Exchange applies it at the device's next request.
func (mb *mbox) sealAfter() {
	for i := range mb.devs {
		rw := &mb.devs[i]
		k := foldID(rw.id)
		inAllowed := slices.ContainsFunc(mb.allowed, func(s string) bool { return foldID(s) == k })
		inBlocked := slices.ContainsFunc(mb.blocked, func(s string) bool { return foldID(s) == k })
		if mb.written && mb.plan != nil {
			for _, c := range mb.plan.Changes {
				if foldID(c.DeviceID) != k {
					continue
				}
				in := &inAllowed
				if c.List == ListBlocked {
					in = &inBlocked
				}
				*in = c.Op == OpAdd
			}
		}
		switch {
		case inBlocked:
			rw.after = pack(accessStates, exchange.AccessBlocked)
		case inAllowed:
			rw.after = pack(accessStates, exchange.AccessAllowed)
		default:
			rw.after = 0
		}
	}
}

// dnKey is the case-insensitive key of a distinguished name.
func dnKey(dn string) string { return strings.ToLower(dn) }

// baseline is what the last sync knew: every mailbox read with its
// partnerships and decisions. A quick sync compares against it to find
// what can have changed. It is immutable once built.
type baseline struct {
	byDN   map[string]*mbox   // dnKey
	byGUID map[string]*mbox   // mailboxKey(identity)
	byEAS  map[string][]*mbox // foldID(device id) → mailboxes with that partnership
	order  []*mbox            // by primary SMTP address, then DN
	// devices is the fleet size the blast radius of a quick sync is
	// measured against.
	devices int
	// skipped holds the lower-cased Identity of partnerships skipped for
	// an invalid DeviceId: a quick sync does not read their mailbox again
	// just because Exchange keeps them in quarantine.
	skipped map[string]bool
}

// newBaseline indexes mbs. Mailboxes not yet sealed are taken over and
// sealed (their lists and per-sync work dropped, devices sorted); sealed
// ones come from an earlier baseline and are shared as they are.
func newBaseline(mbs map[string]*mbox) *baseline {
	b := &baseline{
		byDN:   make(map[string]*mbox, len(mbs)),
		byGUID: make(map[string]*mbox, len(mbs)),
		order:  make([]*mbox, 0, len(mbs)),
	}
	n := 0
	for k, mb := range mbs {
		if !mb.sealed {
			mb.sealAfter()
			mb.allowed, mb.blocked = nil, nil
			mb.plan = nil
			slices.SortFunc(mb.devs, func(x, y row) int { return strings.Compare(x.id, y.id) })
			mb.sealed = true
		}
		b.byDN[k] = mb
		b.byGUID[mailboxKey(mb.identity())] = mb
		b.order = append(b.order, mb)
		n += len(mb.devs)
	}
	b.devices = n
	b.byEAS = make(map[string][]*mbox, n)
	for _, mb := range b.order {
		for i := range mb.devs {
			k := foldID(mb.devs[i].id)
			if l := b.byEAS[k]; len(l) == 0 || l[len(l)-1] != mb {
				b.byEAS[k] = append(l, mb)
			}
		}
	}
	slices.SortFunc(b.order, compareMailboxes)
	return b
}

// row finds the partnership id on the mailbox dn.
func (b *baseline) row(dn, id string) *row {
	mb := b.byDN[dnKey(dn)]
	if mb == nil {
		return nil
	}
	return mb.row(id)
}

// row returns the mailbox's row for device id, nil if it has none.
func (mb *mbox) row(id string) *row {
	k := foldID(id)
	for i := range mb.devs {
		if foldID(mb.devs[i].id) == k {
			return &mb.devs[i]
		}
	}
	return nil
}

// decider applies the policy to devices with one MDM snapshot.
type decider struct {
	p      *Policy
	scope  *Scope
	ix     *Index
	now    time.Time
	tally  *Tally
	intern map[string]string
	// platform tallies the devices platform exceptions concern, for the
	// report of shadowed exceptions (platform.go).
	platform platformTally
}

func newDecider(p *Policy, snap *mdm.Snapshot, now time.Time, tally *Tally) (*decider, error) {
	scope, err := NewScope(p, snap)
	if err != nil {
		return nil, err
	}
	return &decider{p: p, scope: scope, ix: Join(snap.Records), now: now, tally: tally, intern: map[string]string{}}, nil
}

// str keeps one copy of the few distinct device types and models.
func (d *decider) str(s string) string {
	if len(s) > maxDeviceString {
		s = s[:maxDeviceString]
	}
	if v, ok := d.intern[s]; ok {
		return v
	}
	if len(d.intern) < 4096 {
		d.intern[s] = s
	}
	return s
}

// decide decides dev, a partnership of mb with a valid DeviceId, and
// appends its row to mb.
func (d *decider) decide(mb *mbox, dev *exchange.MobileDevice) {
	u := mb.user()
	if !mb.scoped {
		if u.ID == "" {
			mb.uid = d.scope.UserID(u)
			u.ID = mb.uid
		}
		mb.scope, mb.scoped = d.scope.Of(u), true
	}
	rec, same := d.ix.Lookup(dev.DeviceId, u)
	dec, why := Decide(d.p, Input{Device: *dev, User: u, Scope: mb.scope, Record: rec, SameUser: same}, d.now)
	d.tally.Add(dec, why)
	d.platform.note(d.p, dev, mb.smtp, dec, why)
	rw := row{
		id: dev.DeviceId, typ: d.str(dev.DeviceType), model: d.str(dev.DeviceModel), firstSync: dev.FirstSyncTime,
		d: index(decisionIndex(dec), decisionIndex(NoChange)), r: index(reasonIndex(why), reasonIndex(ReasonDisabled)),
		st: pack(accessStates, dev.DeviceAccessState), sr: pack(accessReasons, dev.DeviceAccessStateReason),
	}
	if rec != nil {
		rw.enrolled, rw.c = true, pack(compliances, rec.Compliance)
		if !rec.LastSyncAt.IsZero() {
			rw.mdmSync = rec.LastSyncAt.Unix()
		}
		if same && mb.upn == "" {
			mb.upn = rec.UserPrincipalName
		}
	}
	mb.devs = append(mb.devs, rw)
}

// discovered is one device as Get-MobileDevice streamed it, with the error
// that makes it unusable.
type discovered struct {
	dev exchange.MobileDevice
	err error
}

// pendingDevice waits for its mailbox.
type pendingDevice struct {
	dev exchange.MobileDevice
	dn  string
}

// joiner joins streamed devices with their mailboxes and decides them as
// soon as the MDM snapshot and the mailbox map are there; until then it
// groups them undecided, so that the device stream never waits for
// Get-CASMailbox.
type joiner struct {
	r       *run
	p       *Policy
	now     time.Time
	snap    **mdm.Snapshot // set before snapReady is closed
	mbs     map[string]*mbox
	d       *decider
	backlog []pendingDevice // before both inputs were ready
	pending []pendingDevice // mailbox not in the map
	seen    int
	latest  time.Time       // latest FirstSyncTime seen
	invalid map[string]bool // lower-cased Identity of devices with an invalid DeviceId
}

// accept checks one streamed device and returns it with its mailbox DN,
// or records why it is skipped.
func (j *joiner) accept(d *discovered) (string, bool) {
	j.seen++
	if d.dev.FirstSyncTime.After(j.latest) {
		j.latest = d.dev.FirstSyncTime
	}
	if d.err != nil {
		reason := SkipUndecodable
		if errors.Is(d.err, exchange.ErrInvalidDeviceID) {
			reason = SkipInvalidDeviceID
			if j.invalid == nil {
				j.invalid = map[string]bool{}
			}
			j.invalid[strings.ToLower(d.dev.Identity)] = true
		}
		j.r.rep.skip(reason, d.dev.Identity, d.dev.DeviceId, d.err)
		return "", false
	}
	dn, err := d.dev.MailboxDN()
	if err != nil {
		j.r.rep.skip(SkipBadDN, d.dev.Identity, d.dev.DeviceId, err)
		return "", false
	}
	return dn, true
}

func (j *joiner) place(pd pendingDevice) {
	mb := j.mbs[dnKey(pd.dn)]
	if mb == nil {
		j.pending = append(j.pending, pd)
		return
	}
	j.d.decide(mb, &pd.dev)
}

// run consumes devCh until it is closed and both inputs were ready.
func (j *joiner) run(ctx context.Context, devCh <-chan discovered, snapReady, mbReady <-chan struct{}) error {
	ready := false
	start := func() error {
		d, err := newDecider(j.p, *j.snap, j.now, &j.r.tally)
		if err != nil {
			return mdmError(ctx, err)
		}
		j.d, ready = d, true
		for _, pd := range j.backlog {
			j.place(pd)
		}
		j.backlog = nil
		return nil
	}
	for devCh != nil || !ready {
		select {
		case <-snapReady:
			snapReady = nil
			if mbReady == nil {
				if err := start(); err != nil {
					return err
				}
			}
		case <-mbReady:
			mbReady = nil
			if snapReady == nil {
				if err := start(); err != nil {
					return err
				}
			}
		case d, ok := <-devCh:
			if !ok {
				devCh = nil
				continue
			}
			dn, ok := j.accept(&d)
			if !ok {
				continue
			}
			pd := pendingDevice{dev: d.dev, dn: dn}
			if !ready {
				j.backlog = append(j.backlog, pd)
				continue
			}
			j.place(pd)
			if j.seen%1000 == 0 {
				j.r.progress(StageDecide, j.seen, 0)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	j.r.progress(StageDecide, j.seen, j.seen)
	return nil
}

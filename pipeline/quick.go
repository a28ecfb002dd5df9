package pipeline

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/easconnector/easconnector/cache"
	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/mdm"
)

// attentionStates are the access states a quick sync always looks at: a
// device Exchange holds in quarantine or discovery may be one the policy
// would allow, and one in Unknown lost its list entry since the phone's
// last request (Set-CASMailbox stores Unknown for an id it takes out of
// both lists; exsim's doc), which, if the entry was ours, must come back
// before the phone's next request meets the organization default.
//
// These are stored states (Get-MobileDevice reports what Exchange saved at
// the phone's last request, or what Set-CASMailbox wrote since), not live
// ones, so the filter only nominates: the device's mailbox is read and
// planned like any other, and a device the baseline left to Exchange on
// purpose (Default) is not nominated however it shows.
var attentionStates = []exchange.AccessState{exchange.AccessQuarantined, exchange.AccessDeviceDiscovery, exchange.AccessUnknown}

// recordKey is an MDM record's key in the fingerprint cache: its MDM id,
// else its EAS id and owner.
func recordKey(rec *mdm.Record) string {
	if rec.ID != "" {
		return "id:" + rec.ID
	}
	return "eas:" + foldID(rec.EASDeviceID) + "/" + strings.ToLower(rec.UserPrincipalName)
}

// fingerprint is a record's fingerprint with the policy's clock-driven
// facts folded in: a record crossing its staleness or grace line counts as
// changed.
func (p *Policy) fingerprint(rec *mdm.Record, now time.Time) uint64 {
	stale := p.StaleAfter > 0 && !rec.LastSyncAt.IsZero() && now.Sub(rec.LastSyncAt) > p.StaleAfter
	grace := p.Grace > 0 && (rec.EnrolledAt.IsZero() || now.Before(rec.EnrolledAt.Add(p.Grace)))
	return cache.WithTimeState(cache.Fingerprint(*rec), stale, grace)
}

// rememberFingerprints caches the fingerprints of the snapshot's records
// (of those in only, when only is not nil), except records joined to a
// mailbox in skip (whose write failed or that could not be read): they
// must look changed to the next quick sync.
func (e *Engine) rememberFingerprints(snap *mdm.Snapshot, b *baseline, only map[string]bool, skip map[string]string, now time.Time) {
	fc := e.opts.Caches.Fingerprints
	if fc == nil {
		return
	}
	p := &e.opts.Policy
next:
	for i := range snap.Records {
		rec := &snap.Records[i]
		k := recordKey(rec)
		if only != nil && !only[k] {
			continue
		}
		if len(skip) > 0 {
			for _, mb := range b.byEAS[foldID(rec.EASDeviceID)] {
				if _, bad := skip[dnKey(mb.dn)]; bad {
					continue next
				}
			}
		}
		fc.Set(k, p.fingerprint(rec, now))
	}
	fc.Wait()
}

// quick runs a quick sync (DESIGN.md §2): the MDM snapshot in full (Graph
// has no delta), but from Exchange only what can have changed since the
// baseline: new partnerships (FirstSyncTime after the watermark), devices
// in quarantine or discovery that the baseline did not leave there, the
// mailboxes of MDM records whose fingerprint changed or that vanished,
// and the mailboxes whose write failed last time. Each affected mailbox
// is read whole (all its partnerships) and planned with Complete unset.
func (e *Engine) quick(ctx context.Context, r *run) error {
	base, retry := e.snapshotBase()
	marks := e.st.Marks()
	switch {
	case base == nil:
		r.rep.Escalated = "no earlier sync in this process to compare with"
		return e.full(ctx, r)
	case marks.LastDeviceFirstSync.IsZero():
		r.rep.Escalated = "no partnership watermark in the state"
		return e.full(ctx, r)
	}
	r.rep.Kind = SyncQuick
	p := &e.opts.Policy
	now := e.now()

	var (
		snap              *mdm.Snapshot
		fresh, attention  []exchange.MobileDevice
		freshMu, attendMu sync.Mutex
	)
	collect := func(mu *sync.Mutex, into *[]exchange.MobileDevice) func(exchange.MobileDevice, error) error {
		return func(d exchange.MobileDevice, derr error) error {
			mu.Lock()
			defer mu.Unlock()
			if derr != nil {
				// Reported when its mailbox is read; the mailbox still is.
				d.DeviceId = ""
			}
			if d.DeviceId == "" && base.skipped[strings.ToLower(d.Identity)] {
				return nil // known to be skipped: nothing new
			}
			*into = append(*into, d)
			return nil
		}
	}
	err := e.stages.Run(StageDiscover, func() (map[string]int, error) {
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error {
			s, err := e.opts.MDM.Snapshot(gctx, p.groups())
			if err != nil {
				return mdmError(gctx, fmt.Errorf("mdm snapshot: %w", err))
			}
			if err := CheckSnapshot(s, marks.LastGoodMDMCount, e.opts.Guard); err != nil {
				return mdmError(gctx, err)
			}
			snap = s
			return nil
		})
		g.Go(func() error {
			return e.ex.MobileDevices(gctx, exchange.DeviceFilter{FirstSyncAfter: marks.LastDeviceFirstSync}, collect(&freshMu, &fresh))
		})
		g.Go(func() error {
			return e.ex.MobileDevices(gctx, exchange.DeviceFilter{States: attentionStates}, collect(&attendMu, &attention))
		})
		err := g.Wait()
		return map[string]int{"new": len(fresh), "attention": len(attention)}, err
	})
	if err != nil {
		return err
	}
	r.rep.MDMRecords = len(snap.Records)
	d, err := newDecider(p, snap, now, &r.tally)
	if err != nil {
		return mdmError(ctx, err)
	}
	r.rep.Collisions = d.ix.Collisions

	// Which mailboxes can have changed.
	affected := map[string]string{}
	causes := map[string]int{}
	add := func(dn, cause string) {
		k := dnKey(dn)
		if _, ok := affected[k]; !ok {
			affected[k] = dn
			causes[cause]++
		}
	}
	changed := map[string]bool{}
	_ = e.stages.Run(StageJoin, func() (map[string]int, error) {
		fc := e.opts.Caches.Fingerprints
		for i := range snap.Records {
			rec := &snap.Records[i]
			k := recordKey(rec)
			if old, ok := fc.Get(k); ok && old == p.fingerprint(rec, now) {
				continue
			}
			changed[k] = true
			for _, mb := range base.byEAS[foldID(rec.EASDeviceID)] {
				add(mb.dn, "mdm_changed")
			}
		}
		// Users who entered or left the policy's groups, and records that
		// vanished (unenrolled): rows that had one and have none now. This
		// covers every owned entry whose record vanished.
		for _, mb := range base.order {
			if mb.scoped && d.scope.Of(mb.user()) != mb.scope {
				add(mb.dn, "scope_changed")
				continue
			}
			for i := range mb.devs {
				if rw := &mb.devs[i]; rw.enrolled {
					if rec, _ := d.ix.Lookup(rw.id, mb.user()); rec == nil {
						add(mb.dn, "mdm_vanished")
						break
					}
				}
			}
		}
		for i := range fresh {
			if dn, err := fresh[i].MailboxDN(); err == nil {
				add(dn, "new_partnership")
			}
		}
		for i := range attention {
			dn, err := attention[i].MailboxDN()
			if err != nil {
				continue
			}
			if rw := base.row(dn, attention[i].DeviceId); rw != nil && attention[i].DeviceId != "" && (rw.decision() == Default || rw.decision() == NoChange) {
				continue // left to Exchange on purpose
			}
			add(dn, "attention")
			// Its stored state may say the lists changed behind the cache
			// (Unknown: an entry was taken out): read them afresh.
			if prev := base.byDN[dnKey(dn)]; prev != nil {
				e.opts.Caches.Mailboxes.Del(prev.identity())
			}
		}
		for _, dn := range retry {
			add(dn, "retry")
		}
		causes["changed_records"] = len(changed)
		return causes, nil
	})

	dns := slices.Sorted(maps.Values(affected))
	r.rep.ReadMailboxes = len(dns)
	work, err := e.readMailboxes(ctx, r, base, dns, d)
	if err != nil {
		return err
	}
	latest := marks.LastDeviceFirstSync
	for i := range fresh {
		if fresh[i].FirstSyncTime.After(latest) {
			latest = fresh[i].FirstSyncTime
		}
	}
	var planned []*mbox
	for _, mb := range work.ok {
		r.rep.Devices += len(mb.devs)
		for i := range mb.devs {
			if mb.devs[i].firstSync.After(latest) {
				latest = mb.devs[i].firstSync
			}
		}
	}
	var writes []*mbox
	err = e.stages.Run(StagePlan, func() (map[string]int, error) {
		var stale []*mbox
		for _, mb := range work.ok {
			if e.planOne(mb, false, false) {
				planned = append(planned, mb)
				if !mb.fresh && mb.plan != nil && !mb.plan.Empty() {
					stale = append(stale, mb)
				}
			}
		}
		// A plan made against cached lists is only trusted to be empty:
		// read the lists of mailboxes that write, and plan them again.
		missing, err := e.refreshLists(ctx, stale)
		if err != nil {
			return nil, err
		}
		for _, mb := range stale {
			if mb.fresh {
				e.planOne(mb, false, false)
			}
		}
		for _, mb := range missing {
			planned = slices.DeleteFunc(planned, func(x *mbox) bool { return x == mb })
			work.ok = slices.DeleteFunc(work.ok, func(x *mbox) bool { return x == mb })
			work.unreadable[dnKey(mb.dn)] = mb.dn
			r.rep.skip(SkipMailboxNotFound, mb.dn, "", errors.New("mailbox not returned when read before writing"))
		}
		writes = e.summarise(r, planned)
		return map[string]int{"mailboxes": len(planned), "writes": len(writes), "refreshed": len(stale)}, nil
	})
	if err != nil {
		return err
	}
	if err := e.guard(r, writes, max(base.devices, r.rep.Devices), nil); err != nil {
		return err
	}
	if r.dry {
		return nil
	}
	e.settleUnwritten(r, planned)
	e.applyPlans(ctx, r, writes)
	mbs := make(map[string]*mbox, len(work.ok))
	for _, mb := range work.ok {
		mbs[dnKey(mb.dn)] = mb
	}
	e.notifyDevices(r, mbs)
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.applyErr != nil {
		return r.applyErr
	}
	return e.stages.Run(StageReport, func() (map[string]int, error) {
		e.st.UpdateMarks(func(w *Watermarks) {
			w.LastQuick = e.now()
			w.LastGoodMDMCount = len(snap.Records)
			if latest.After(w.LastDeviceFirstSync) {
				w.LastDeviceFirstSync = latest
			}
		})
		r.dirty = true
		next := maps.Clone(work.unreadable)
		for k, mb := range mbs {
			if mb.failed {
				next[k] = mb.dn
			}
		}
		e.cacheLists(mbs, now)
		all := maps.Clone(base.byDN)
		for k, mb := range mbs {
			if len(mb.devs) == 0 {
				delete(all, k)
				continue
			}
			all[k] = mb
		}
		b := newBaseline(all)
		b.skipped = base.skipped
		if len(work.invalid) > 0 {
			b.skipped = maps.Clone(base.skipped)
			if b.skipped == nil {
				b.skipped = map[string]bool{}
			}
			maps.Copy(b.skipped, work.invalid)
		}
		e.rememberFingerprints(snap, b, changed, next, now)
		e.publish(b, next)
		return map[string]int{"mailboxes": len(mbs), "retry": len(next)}, nil
	})
}

// readResult is what readMailboxes could read.
type readResult struct {
	ok         []*mbox           // read whole and decided
	unreadable map[string]string // dnKey → DN: read again next sync
	invalid    map[string]bool   // lower-cased Identity of devices with an invalid DeviceId
}

// readMailboxes reads the affected mailboxes whole: every partnership
// (Get-MobileDevice -Mailbox, Workers at a time) and, unless the cache
// has them, the lists (Get-CASMailbox by DN, batched), then decides their
// devices. A mailbox whose devices cannot be read, or that Exchange does
// not return, is skipped and read again next sync: a plan without all
// its partnerships or its lists would be blind.
func (e *Engine) readMailboxes(ctx context.Context, r *run, base *baseline, dns []string, d *decider) (readResult, error) {
	res := readResult{unreadable: map[string]string{}}
	if len(dns) == 0 {
		return res, nil
	}
	now := e.now()
	work := make([]*mbox, len(dns))
	var needLists []string
	for i, dn := range dns {
		mb := &mbox{dn: dn}
		work[i] = mb
		if prev := base.byDN[dnKey(dn)]; prev != nil {
			mb.guid, mb.smtp, mb.name, mb.upn = prev.guid, prev.smtp, prev.name, prev.upn
			if snap, ok := e.opts.Caches.Mailboxes.Get(mb.identity(), now); ok {
				mb.allowed, mb.blocked = snap.Allowed, snap.Blocked
				continue
			}
		}
		mb.fresh = true // its lists come from the read below
		needLists = append(needLists, dn)
	}
	devices := make([][]discovered, len(dns))
	readErr := make([]error, len(dns))
	listed := map[string]*exchange.CASMailbox{}
	err := e.stages.Run(StageDiscover, func() (map[string]int, error) {
		g, gctx := errgroup.WithContext(ctx)
		if len(needLists) > 0 {
			g.Go(func() error {
				return e.ex.CASMailboxes(gctx, needLists, func(c exchange.CASMailbox) error {
					listed[dnKey(c.DistinguishedName)] = &c
					return nil
				})
			})
		}
		g.Go(func() error {
			_, err := forEach(gctx, e.opts.Workers, len(dns), e.log, func(i int) {
				readErr[i] = e.ex.MobileDevices(gctx, exchange.DeviceFilter{Mailbox: dns[i]}, func(dev exchange.MobileDevice, derr error) error {
					devices[i] = append(devices[i], discovered{dev: dev, err: derr})
					return nil
				})
			})
			return err
		})
		err := g.Wait()
		return map[string]int{"mailboxes": len(dns), "lists": len(needLists)}, err
	})
	if err != nil {
		return res, err
	}
	failed := 0
	for i, mb := range work {
		k := dnKey(mb.dn)
		if readErr[i] != nil {
			failed++
			res.unreadable[k] = mb.dn
			r.rep.skip(SkipMailboxUnreadable, mb.dn, "", readErr[i])
			continue
		}
		if mb.fresh {
			c := listed[k]
			if c == nil {
				for _, got := range devices[i] {
					r.rep.skip(SkipMailboxNotFound, got.dev.Identity, got.dev.DeviceId, fmt.Errorf("mailbox %s not found", clip(mb.dn)))
				}
				continue
			}
			upn := mb.upn
			mb = newMbox(c)
			mb.upn = upn
		}
		for j := range devices[i] {
			got := &devices[i][j]
			if got.err != nil {
				reason := SkipUndecodable
				if errors.Is(got.err, exchange.ErrInvalidDeviceID) {
					reason = SkipInvalidDeviceID
					if res.invalid == nil {
						res.invalid = map[string]bool{}
					}
					res.invalid[strings.ToLower(got.dev.Identity)] = true
				}
				r.rep.skip(reason, got.dev.Identity, got.dev.DeviceId, got.err)
				continue
			}
			d.decide(mb, &got.dev)
		}
		res.ok = append(res.ok, mb)
	}
	if failed > 0 && failed == len(dns) {
		return res, fmt.Errorf("read the devices of %d mailboxes: every read failed, the first: %w", len(dns), readErr[0])
	}
	return res, nil
}

// refreshLists reads the current lists of mailboxes planned against cached
// ones and returns those Exchange did not return (they are not written).
func (e *Engine) refreshLists(ctx context.Context, mbs []*mbox) ([]*mbox, error) {
	if len(mbs) == 0 {
		return nil, nil
	}
	byDN := make(map[string]*mbox, len(mbs))
	dns := make([]string, len(mbs))
	for i, mb := range mbs {
		byDN[dnKey(mb.dn)] = mb
		dns[i] = mb.dn
	}
	err := e.ex.CASMailboxes(ctx, dns, func(c exchange.CASMailbox) error {
		if mb := byDN[dnKey(c.DistinguishedName)]; mb != nil {
			mb.allowed, mb.blocked, mb.fresh = c.ActiveSyncAllowedDeviceIDs, c.ActiveSyncBlockedDeviceIDs, true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the lists of %d mailboxes before writing: %w", len(mbs), err)
	}
	var missing []*mbox
	for _, mb := range mbs {
		if !mb.fresh {
			missing = append(missing, mb)
		}
	}
	return missing, nil
}

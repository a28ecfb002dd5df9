package pipeline

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/easconnector/easconnector/cache"
	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/mdm"
)

// deviceBuffer is the bounded channel between Get-MobileDevice and the
// joiner: enough to ride out a pause of the joiner, small enough to apply
// backpressure to the read.
const deviceBuffer = 1024

// groups are the MDM groups a snapshot must carry.
func (p *Policy) groups() []string {
	return slices.Concat(p.IncludedGroups, p.ExcludedGroups)
}

// orgView is the organization configuration as read.
type orgView struct {
	settings exchange.OrgSettings
	rules    []exchange.DeviceAccessRule
}

// full runs a full sync: everything is read, every mailbox with a
// partnership is planned (Complete), and the org configuration is
// re-asserted.
func (e *Engine) full(ctx context.Context, r *run) error {
	r.rep.Kind = SyncFull
	p := &e.opts.Policy
	marks := e.st.Marks()
	now := e.now()

	var (
		snap *mdm.Snapshot
		org  orgView
		mbs  map[string]*mbox
	)
	snapReady, mbReady := make(chan struct{}), make(chan struct{})
	devCh := make(chan discovered, deviceBuffer)
	j := &joiner{r: r, p: p, now: now, snap: &snap}

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
			close(snapReady)
			return nil
		})
		g.Go(func() error {
			var err error
			if org.settings, err = e.ex.OrgSettings(gctx); err != nil {
				return err
			}
			org.rules, err = e.ex.DeviceAccessRules(gctx)
			return err
		})
		g.Go(func() error {
			m := map[string]*mbox{}
			err := e.ex.CASMailboxes(gctx, nil, func(c exchange.CASMailbox) error {
				m[dnKey(c.DistinguishedName)] = newMbox(&c)
				return nil
			})
			if err != nil {
				return err
			}
			mbs, j.mbs = m, m
			close(mbReady)
			return nil
		})
		g.Go(func() error {
			defer close(devCh)
			return e.ex.MobileDevices(gctx, exchange.DeviceFilter{}, func(d exchange.MobileDevice, derr error) error {
				select {
				case devCh <- discovered{dev: d, err: derr}:
					return nil
				case <-gctx.Done():
					return gctx.Err()
				}
			})
		})
		g.Go(func() error {
			return e.stages.Run(StageDecide, func() (map[string]int, error) {
				err := j.run(gctx, devCh, snapReady, mbReady)
				return map[string]int{"devices": j.seen}, err
			})
		})
		err := g.Wait()
		items := map[string]int{"devices": j.seen, "mailboxes": len(mbs)}
		if snap != nil {
			items["mdm_records"] = len(snap.Records)
		}
		return items, err
	})
	if err != nil {
		return err
	}
	r.rep.MDMRecords = len(snap.Records)
	r.rep.Collisions = j.d.ix.Collisions

	// Join what the stream could not: devices whose mailbox Get-CASMailbox
	// did not return, and mailboxes we own entries on that have no
	// partnership any more (their orphans are ours to remove).
	base, _ := e.snapshotBase()
	err = e.stages.Run(StageJoin, func() (map[string]int, error) {
		return e.joinMissing(ctx, r, j, base)
	})
	if err != nil {
		return err
	}
	r.rep.ReadMailboxes = len(mbs)

	adopt := e.st.MayAdopt(e.opts.AdoptExisting)
	writes := e.planAll(r, mbs, p.Enabled, adopt)

	devices := 0
	for _, mb := range mbs {
		devices += len(mb.devs)
	}
	r.rep.Devices = devices
	var op *orgPlan
	if p.Enabled {
		op = planOrg(p, e.opts.Org, org, e.st.OwnedRules())
		after := rulesAfter(org.rules, op)
		op.countShutOut(mbs, after)
		r.rep.Org = op.report()
		r.rep.OrgConflicts = op.conflicts
		e.reportPlatform(r, &j.d.platform, after, org.settings.DefaultAccessLevel, op)
	}
	if err := e.guard(r, writes, devices, op); err != nil {
		if base == nil && r.rep.Held != nil {
			// Nothing to show yet but this sync's decisions, which the
			// devices list then shows (and an approval completes) while
			// the plan waits for review; never planned against.
			e.publishView(newBaseline(mbs))
		}
		return err
	}
	if r.dry {
		return nil
	}
	e.settleUnwritten(r, slices.Collect(maps.Values(mbs)))
	e.applyPlans(ctx, r, writes)
	if op != nil && ctx.Err() == nil && r.applyErr == nil {
		e.applyOrg(ctx, r, op, r.rep.Failures == 0)
	}
	e.notifyDevices(r, mbs)
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.applyErr != nil {
		return r.applyErr
	}
	return e.stages.Run(StageReport, func() (map[string]int, error) {
		if p.Enabled {
			e.st.CloseAdoption()
		}
		e.st.UpdateMarks(func(w *Watermarks) {
			w.LastFull = e.now()
			w.LastGoodMDMCount = len(snap.Records)
			if j.latest.After(w.LastDeviceFirstSync) {
				w.LastDeviceFirstSync = j.latest
			}
		})
		r.dirty = true
		retry := map[string]string{}
		for k, mb := range mbs {
			if mb.failed {
				retry[k] = mb.dn
			}
		}
		e.cacheLists(mbs, now)
		b := newBaseline(mbs)
		b.skipped = j.invalid
		e.rememberFingerprints(snap, b, nil, retry, now)
		e.publish(b, retry)
		return map[string]int{"mailboxes": len(b.byDN), "retry": len(retry)}, nil
	})
}

// joinMissing reads the mailboxes the stream referred to but Get-CASMailbox
// did not return, and the mailboxes we own entries on that it did not
// return either, then decides the devices waiting for them. A device whose
// mailbox still cannot be read is skipped: writing without its lists would
// be writing blind.
func (e *Engine) joinMissing(ctx context.Context, r *run, j *joiner, base *baseline) (map[string]int, error) {
	want := map[string]string{}
	for _, pd := range j.pending {
		want[dnKey(pd.dn)] = pd.dn
	}
	seenGUID := make(map[string]bool, len(j.mbs))
	for _, mb := range j.mbs {
		seenGUID[mailboxKey(mb.identity())] = true
	}
	orphaned := 0
	if base != nil {
		for _, k := range e.st.OwnedMailboxes() {
			if seenGUID[k] {
				continue
			}
			if mb := base.byGUID[k]; mb != nil {
				want[dnKey(mb.dn)] = mb.dn
				orphaned++
			}
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	dns := slices.Sorted(maps.Values(want))
	found := 0
	err := e.ex.CASMailboxes(ctx, dns, func(c exchange.CASMailbox) error {
		k := dnKey(c.DistinguishedName)
		if _, ok := j.mbs[k]; !ok {
			j.mbs[k] = newMbox(&c)
			found++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %d mailboxes missing from the partnership read: %w", len(dns), err)
	}
	pending := j.pending
	j.pending = nil
	for _, pd := range pending {
		j.place(pd)
	}
	for _, pd := range j.pending {
		r.rep.skip(SkipMailboxNotFound, pd.dev.Identity, pd.dev.DeviceId, fmt.Errorf("mailbox %s not found", clip(pd.dn)))
	}
	return map[string]int{"asked": len(dns), "found": found, "orphaned": orphaned, "not_found": len(j.pending)}, nil
}

// planAll plans every mailbox of mbs (in a full sync) and returns those
// that write, sorted by mailbox.
func (e *Engine) planAll(r *run, mbs map[string]*mbox, complete, adopt bool) []*mbox {
	var writes []*mbox
	_ = e.stages.Run(StagePlan, func() (map[string]int, error) {
		list := slices.Collect(maps.Values(mbs))
		var planned []*mbox
		for i, mb := range list {
			if e.planOne(mb, complete, adopt) {
				planned = append(planned, mb)
			}
			if i%1000 == 999 {
				r.progress(StagePlan, i+1, len(list))
			}
		}
		writes = e.summarise(r, planned)
		r.progress(StagePlan, len(list), len(list))
		return map[string]int{"mailboxes": len(planned), "writes": len(writes)}, nil
	})
	return writes
}

// planOne plans one mailbox against its lists and the state, and reports
// whether it was planned: a mailbox with no partnership decided and
// nothing of ours has nothing to plan.
func (e *Engine) planOne(mb *mbox, complete, adopt bool) bool {
	owned := e.st.OwnedOf(mb.identity())
	if len(mb.devs) == 0 && owned.IsZero() && !adopt {
		mb.planned, mb.plan = false, nil
		return false
	}
	decisions := make([]DeviceDecision, len(mb.devs))
	for k := range mb.devs {
		decisions[k] = DeviceDecision{DeviceID: mb.devs[k].id, Decision: mb.devs[k].decision(), Reason: mb.devs[k].reason()}
	}
	plan := PlanMailbox(MailboxInput{
		Identity: mb.identity(), Allowed: mb.allowed, Blocked: mb.blocked, Owned: owned,
		Devices: decisions, Complete: complete, Adopt: adopt,
	})
	mb.planned, mb.conflicts = true, len(plan.Conflicts)
	if plan.Empty() && sameOwned(owned, plan.NewOwned) {
		// Nothing to write, nothing to record: most mailboxes of a
		// settled organization. Keeping no plan keeps a full sync small.
		mb.plan = nil
		return true
	}
	mb.plan = &plan
	return true
}

// summarise fills the report's plan figures from the planned mailboxes
// and returns those that write, sorted by mailbox.
func (e *Engine) summarise(r *run, planned []*mbox) []*mbox {
	var writes []*mbox
	r.rep.Mailboxes, r.rep.Conflicts = len(planned), 0
	for _, mb := range planned {
		r.rep.Conflicts += mb.conflicts
		if mb.plan != nil && !mb.plan.Empty() {
			writes = append(writes, mb)
		}
	}
	slices.SortFunc(writes, compareMailboxes)
	plans := make([]MailboxPlan, len(writes))
	r.rep.Plans = make([]PlannedMailbox, len(writes))
	for i, mb := range writes {
		plans[i] = *mb.plan
		r.rep.Plans[i] = PlannedMailbox{MailboxPlan: *mb.plan, Mailbox: mb.smtp, Name: mb.name}
	}
	r.rep.Counts = CountPlans(plans)
	r.rep.Counts.Mailboxes = r.rep.Mailboxes
	r.rep.Counts.Conflicts = r.rep.Conflicts
	return writes
}

// guard checks the blast radius of the writes (and of an org default that
// tightens) against the limit for devices, before any write. A held plan
// is saved for approval (not on a dry run, which only reports).
func (e *Engine) guard(r *run, writes []*mbox, devices int, op *orgPlan) error {
	return e.stages.Run(StageGuard, func() (map[string]int, error) {
		counts := r.rep.Counts
		got := counts.Revocations
		if op != nil {
			got += op.shutOut
		}
		limit := e.opts.Guard.BlastLimit(devices)
		if got <= limit {
			r.rep.Guard = GuardOutcome{Result: GuardPassed}
			return map[string]int{"passed": 1}, nil
		}
		ge := &GuardError{Kind: GuardBlastRadius, Got: got, Limit: limit, Devices: devices, Counts: counts}
		var err error = ge
		if op != nil && op.shutOut > 0 {
			err = fmt.Errorf("%w, of them %d by changing DefaultAccessLevel from %s to %s", ge, op.shutOut, op.levelFrom, op.levelTo)
		}
		r.rep.Guard = GuardOutcomeOf(ge, "")
		r.rep.Guard.Message = err.Error()
		if r.dry {
			return map[string]int{"held": 1}, err
		}
		plans := make([]PlannedMailbox, len(writes))
		for i, mb := range writes {
			plans[i] = PlannedMailbox{MailboxPlan: *mb.plan, Mailbox: mb.smtp, Name: mb.name}
		}
		hp, herr := NewHeldPlan(r.rep.ID, r.rep.Kind, HeldByGuard, plans, devices, err, e.now())
		if herr == nil {
			herr = SaveHeldPlan(e.opts.StateDir, hp)
		}
		if herr != nil {
			return nil, errors.Join(err, fmt.Errorf("keep held plan: %w", herr))
		}
		hp.Plans = nil
		r.rep.Held = hp
		r.rep.Guard.HeldPlanID = hp.ID
		e.log.Warn("pipeline: blast-radius guard held the plan", "sync", r.rep.ID, "held_plan", hp.ID, "err", err)
		return map[string]int{"held": 1}, fmt.Errorf("%w; nothing was written, the plan is held as %s (review it with `plan --show %s`, apply it with `sync --approve %s`)",
			err, hp.ID, hp.ID, hp.ID)
	})
}

// cacheLists keeps the lists of the mailboxes read in this sync and not
// written (written ones were cached with their new lists): a quick sync
// plans against them and reads a mailbox again only when it writes.
func (e *Engine) cacheLists(mbs map[string]*mbox, now time.Time) {
	mc := e.opts.Caches.Mailboxes
	if mc == nil {
		return
	}
	for _, mb := range mbs {
		if mb.fresh && !mb.written && !mb.failed {
			mc.Set(mb.identity(), cache.MailboxSnapshot{Allowed: mb.allowed, Blocked: mb.blocked, FetchedAt: now})
		}
	}
}

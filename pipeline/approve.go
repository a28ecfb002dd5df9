package pipeline

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/mdm"
)

// approve applies a held plan (sync --approve ID): its changes that still
// hold now, never more. The MDM is read again and the plan's mailboxes are
// read whole and decided afresh, as a quick sync would; a held change is
// applied only when today's plan for the mailbox makes the same change (a
// phone that became compliant again after the plan was held is not
// blocked), and only when the lists and the state allow it (reconcile). A
// dropped change is reported in Report.Refused with the reason. Changes
// today's plan makes that the held plan does not are not applied: they were
// not approved, and the next sync plans (and guards) them. A full sync then
// re-asserts the org configuration the policy declares, which is how a held
// change of DefaultAccessLevel goes through. The held plan is removed once
// applied.
func (e *Engine) approve(ctx context.Context, r *run, id string) error {
	hp, err := LoadHeldPlan(e.opts.StateDir, id)
	if err != nil {
		return err
	}
	if err := hp.CheckApprovable(e.now(), e.opts.HeldPlanMaxAge); err != nil {
		return err
	}
	r.rep.Kind = hp.Kind
	r.rep.Guard = GuardOutcome{Result: GuardApproved, HeldPlanID: hp.ID, Message: hp.Reason}
	p := &e.opts.Policy
	marks := e.st.Marks()

	want := make(map[string]bool, len(hp.Plans))
	for i := range hp.Plans {
		want[mailboxKey(hp.Plans[i].Identity)] = true
	}
	// The MDM as it is now, and the DNs of the plan's mailboxes: from the
	// baseline when it knows them all, else from one streamed read of every
	// mailbox with a partnership.
	base, retry := e.snapshotBase()
	dns := map[string]string{} // mailboxKey → DN
	if base != nil {
		for k := range want {
			if mb := base.byGUID[k]; mb != nil {
				dns[k] = mb.dn
			}
		}
	}
	var snap *mdm.Snapshot
	err = e.stages.Run(StageDiscover, func() (map[string]int, error) {
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
		if len(dns) < len(want) {
			g.Go(func() error {
				return e.ex.CASMailboxes(gctx, nil, func(c exchange.CASMailbox) error {
					mb := newMbox(&c)
					if k := mailboxKey(mb.identity()); want[k] {
						dns[k] = c.DistinguishedName
					}
					return nil
				})
			})
		}
		err := g.Wait()
		return map[string]int{"mailboxes": len(dns)}, err
	})
	if err != nil {
		return fmt.Errorf("approve held plan %s: %w", hp.ID, err)
	}
	r.rep.MDMRecords = len(snap.Records)
	d, err := newDecider(p, snap, e.now(), &r.tally)
	if err != nil {
		return mdmError(ctx, fmt.Errorf("approve held plan %s: %w", hp.ID, err))
	}
	// Read the mailboxes whole (every partnership, fresh lists) and decide
	// their devices now.
	res, err := e.readMailboxes(ctx, r, &baseline{}, slices.Sorted(maps.Values(dns)), d)
	if err != nil {
		return fmt.Errorf("approve held plan %s: %w", hp.ID, err)
	}
	cur := make(map[string]*mbox, len(res.ok))
	for _, mb := range res.ok {
		cur[mailboxKey(mb.identity())] = mb
	}
	r.rep.ReadMailboxes = len(cur)

	var planned []*mbox
	for i := range hp.Plans {
		held := &hp.Plans[i]
		mb := cur[mailboxKey(held.Identity)]
		if mb == nil {
			name := held.Mailbox
			if name == "" {
				name = held.Identity
			}
			for _, c := range held.Changes {
				r.rep.Refused = append(r.rep.Refused, RefusedEntry{Mailbox: name, DeviceID: c.DeviceID, List: c.List, Op: c.Op,
					Why: "the mailbox has no partnership any more, was not found or could not be read"})
			}
			continue
		}
		e.planOne(mb, true, false)
		still, dropped := stillPlanned(&held.MailboxPlan, mb)
		r.rep.Refused = append(r.rep.Refused, dropped...)
		plan, refused := reconcile(&still, mb, e.st.OwnedOf(held.Identity))
		mb.plan, mb.conflicts = &plan, len(plan.Conflicts)
		mb.planned = true
		r.rep.Refused = append(r.rep.Refused, refused...)
		planned = append(planned, mb)
	}
	writes := e.summarise(r, planned)
	if !r.dry {
		e.settleUnwritten(r, planned)
	}
	if len(r.rep.Refused) > 0 {
		e.log.Warn("pipeline: approval dropped entries that no longer hold", "sync", r.rep.ID,
			"held_plan", hp.ID, "dropped", len(r.rep.Refused))
	}
	if r.dry {
		return nil
	}
	e.applyPlans(ctx, r, writes)
	approved := make(map[string]*mbox, len(res.ok))
	for _, mb := range res.ok {
		approved[dnKey(mb.dn)] = mb
	}
	e.notifyDevices(r, approved)
	if p.Enabled && ctx.Err() == nil {
		var org orgView
		var err error
		if org.settings, err = e.ex.OrgSettings(ctx); err == nil {
			org.rules, err = e.ex.DeviceAccessRules(ctx)
		}
		if err != nil {
			return fmt.Errorf("approve held plan %s: read org configuration: %w", hp.ID, err)
		}
		op := planOrg(p, e.opts.Org, org, e.st.OwnedRules())
		r.rep.Org = op.report()
		r.rep.OrgConflicts = op.conflicts
		e.applyOrg(ctx, r, op, r.rep.Failures == 0)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := RemoveHeldPlan(e.opts.StateDir, hp.ID); err != nil && !errors.Is(err, ErrHeldPlanNotFound) {
		return err
	}
	// The devices list shows the approved mailboxes as this approval
	// decided and wrote them; a failed write is read again next sync.
	// Without a baseline (the sync that held the plan published none) the
	// approved mailboxes go into the view Devices shows instead, over the
	// rows of the last sync that saw the others; a quick sync never plans
	// against that view.
	merge := func(byDN map[string]*mbox) *baseline {
		all := maps.Clone(byDN)
		if all == nil {
			all = map[string]*mbox{}
		}
		for k, mb := range approved {
			if len(mb.devs) == 0 {
				delete(all, k)
				continue
			}
			all[k] = mb
		}
		return newBaseline(all)
	}
	var nb *baseline
	if base != nil {
		nb = merge(base.byDN)
		nb.skipped = base.skipped
	} else {
		var byDN map[string]*mbox
		if v := e.snapshotView(); v != nil {
			byDN = v.byDN
		}
		e.publishView(merge(byDN))
	}
	for _, mb := range planned {
		if mb.failed {
			retry[dnKey(mb.dn)] = mb.dn
		}
	}
	e.publish(nb, retry)
	r.dirty = true
	return nil
}

// stillPlanned keeps the held changes that today's plan for mb (planOne,
// just run) makes too, and reports the others as dropped, with today's
// decision for the device as the reason.
func stillPlanned(held *MailboxPlan, mb *mbox) (MailboxPlan, []RefusedEntry) {
	out := *held
	out.Changes = nil
	var dropped []RefusedEntry
	for _, c := range held.Changes {
		if mb.plan != nil && slices.ContainsFunc(mb.plan.Changes, func(n Change) bool {
			return n.List == c.List && n.Op == c.Op && strings.EqualFold(n.DeviceID, c.DeviceID)
		}) {
			out.Changes = append(out.Changes, c)
			continue
		}
		why := "no longer needed: the device has no partnership on this mailbox any more"
		if rw := mb.row(c.DeviceID); rw != nil {
			why = fmt.Sprintf("no longer holds: the device is now decided %s (%s)", rw.decision(), rw.reason())
		}
		dropped = append(dropped, RefusedEntry{Mailbox: mb.smtp, DeviceID: c.DeviceID, List: c.List, Op: c.Op, Why: why})
	}
	return out, dropped
}

// reconcile keeps the changes of a held plan that still make sense
// against the mailbox's lists now and the entries we own now, and
// recomputes the ownership after the write.
func reconcile(held *MailboxPlan, mb *mbox, owned Owned) (MailboxPlan, []RefusedEntry) {
	out := MailboxPlan{Identity: held.Identity, Conflicts: held.Conflicts, Invalid: held.Invalid}
	newA, newB := slices.Clone(owned.Allowed), slices.Clone(owned.Blocked)
	var refused []RefusedEntry
	refuse := func(c Change, why string) {
		refused = append(refused, RefusedEntry{Mailbox: mb.smtp, DeviceID: c.DeviceID, List: c.List, Op: c.Op, Why: why})
	}
	for _, c := range held.Changes {
		this, other := mb.allowed, mb.blocked
		ownThis, wasOurs := &newA, owned.Blocked
		edit := &out.Allowed
		otherName := "blocked"
		if c.List == ListBlocked {
			this, other = mb.blocked, mb.allowed
			ownThis, wasOurs = &newB, owned.Allowed
			edit = &out.Blocked
			otherName = "allowed"
		}
		switch c.Op {
		case OpAdd:
			switch {
			case !exchange.ValidDeviceID(c.DeviceID):
				refuse(c, "invalid device id")
			case containsFold(this, c.DeviceID):
				// In place already.
			case containsFold(other, c.DeviceID) && !containsFold(wasOurs, c.DeviceID):
				// In the other list and not ours: an administrator's entry
				// (ours there is removed by the plan's own change).
				refuse(c, "an administrator put the device in the "+otherName+" list since")
			default:
				edit.Add = append(edit.Add, c.DeviceID)
				*ownThis = append(*ownThis, c.DeviceID)
				out.Changes = append(out.Changes, c)
			}
		case OpRemove:
			i := indexFold(this, c.DeviceID)
			switch {
			case i < 0:
				// Gone already.
			case !containsFold(*ownThis, c.DeviceID):
				refuse(c, "the entry is no longer ours")
			default:
				edit.Remove = append(edit.Remove, this[i])
				*ownThis = deleteFold(*ownThis, c.DeviceID)
				c.DeviceID = this[i]
				out.Changes = append(out.Changes, c)
			}
		}
	}
	out.NewOwned = Owned{Allowed: newA, Blocked: newB}
	return out, refused
}

func indexFold(list []string, id string) int {
	for i, s := range list {
		if strings.EqualFold(s, id) {
			return i
		}
	}
	return -1
}

func deleteFold(list []string, id string) []string {
	out := make([]string, 0, len(list))
	for _, s := range list {
		if !strings.EqualFold(s, id) {
			out = append(out, s)
		}
	}
	return out
}

package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/easconnector/easconnector/exchange"
)

// approve applies a held plan (sync --approve ID): exactly its changes,
// minus those that Exchange or the state contradict now. The mailboxes
// are read again first; an entry is refused when an administrator put a
// contradicting entry in since (adding to one list what the admin put in
// the other), or when an entry to remove is no longer ours. Entries
// already in place are dropped silently. A full sync then re-asserts the
// org configuration the policy declares, which is how a held change of
// DefaultAccessLevel goes through. The held plan is removed once applied.
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

	want := make(map[string]bool, len(hp.Plans))
	for i := range hp.Plans {
		want[mailboxKey(hp.Plans[i].Identity)] = true
	}
	// Read the mailboxes: by DN when the baseline knows them all, else
	// every mailbox with a partnership (one streamed read).
	base, retry := e.snapshotBase()
	var dns []string
	if base != nil {
		for k := range want {
			mb := base.byGUID[k]
			if mb == nil {
				dns = nil
				break
			}
			dns = append(dns, mb.dn)
		}
	}
	cur := make(map[string]*mbox, len(want))
	err = e.stages.Run(StageDiscover, func() (map[string]int, error) {
		err := e.ex.CASMailboxes(ctx, dns, func(c exchange.CASMailbox) error {
			mb := newMbox(&c)
			if k := mailboxKey(mb.identity()); want[k] {
				cur[k] = mb
			}
			return nil
		})
		return map[string]int{"mailboxes": len(cur)}, err
	})
	if err != nil {
		return fmt.Errorf("approve held plan %s: %w", hp.ID, err)
	}
	r.rep.ReadMailboxes = len(cur)

	var planned []*mbox
	for i := range hp.Plans {
		held := &hp.Plans[i]
		mb := cur[mailboxKey(held.Identity)]
		if mb == nil {
			for _, c := range held.Changes {
				r.rep.Refused = append(r.rep.Refused, RefusedEntry{Mailbox: held.Identity, DeviceID: c.DeviceID, List: c.List, Op: c.Op,
					Why: "the mailbox has no partnership any more or was not found"})
			}
			continue
		}
		plan, refused := reconcile(held, mb, e.st.OwnedOf(held.Identity))
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
		e.log.Warn("pipeline: approval refused entries that changed since the plan was held", "sync", r.rep.ID,
			"held_plan", hp.ID, "refused", len(r.rep.Refused))
	}
	if r.dry {
		return nil
	}
	e.applyPlans(ctx, r, writes)
	if p := &e.opts.Policy; p.Enabled && ctx.Err() == nil {
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
	// The baseline's decisions for these mailboxes predate the plan: the
	// next quick sync reads them again.
	for _, mb := range planned {
		retry[dnKey(mb.dn)] = mb.dn
	}
	e.publish(nil, retry)
	r.dirty = true
	return nil
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

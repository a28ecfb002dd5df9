package pipeline

import (
	"errors"
	"slices"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/pipeline/notify"
)

// isTargeted reports whether a reason concerns a user the policy targets:
// exempt and untargeted users are never told about their devices.
func isTargeted(r Reason) bool {
	return r != ReasonExempt && r != ReasonNotTargeted && r != ReasonDisabled && r != ReasonInvalidDeviceID
}

// notifyDevices tells targeted users about devices the sync left blocked
// by us (Block, our entry in the blocked list) or in quarantine (Default
// with an org default of Quarantine, in neither list and no device access
// rule deciding), once per device and state: the notifier's store (the
// State) remembers what was sent. A device that is allowed again has its
// notices forgotten, so that a relapse is told again. Mailboxes whose write
// failed are skipped: what Exchange holds is unknown until the next sync.
func (e *Engine) notifyDevices(r *run, mbs map[string]*mbox) {
	n := e.opts.Notifier
	p := &e.opts.Policy
	if n == nil || r.dry || !p.Enabled {
		return
	}
	queued, full := 0, false
	_ = e.stages.Run(StageNotify, func() (map[string]int, error) {
		resolved := 0
		for _, mb := range mbs {
			if mb.failed || !mb.planned || mb.smtp == "" {
				continue
			}
			allowed, blocked := mb.allowed, mb.blocked
			var ours []string // our blocked entries after the sync
			if mb.written {
				allowed, blocked = editList(allowed, mb.plan.Allowed), editList(blocked, mb.plan.Blocked)
				ours = mb.plan.NewOwned.Blocked
			} else if slices.ContainsFunc(mb.devs, func(rw row) bool { return rw.decision() == Block }) {
				ours = e.st.OwnedOf(mb.identity()).Blocked
			}
			for i := range mb.devs {
				rw := &mb.devs[i]
				var state notify.State
				switch {
				case rw.decision() == Allow && containsFold(allowed, rw.id):
					if e.st.Sent(notify.Key(mb.smtp, rw.id, notify.StateBlocked)) || e.st.Sent(notify.Key(mb.smtp, rw.id, notify.StateQuarantined)) {
						if err := n.Resolved(mb.smtp, rw.id); err == nil {
							resolved++
						}
					}
					continue
				case !isTargeted(rw.reason()) || full:
					continue
				case rw.decision() == Block && containsFold(blocked, rw.id) && containsFold(ours, rw.id):
					state = notify.StateBlocked
				case rw.decision() == Default && p.OrgDefault == exchange.LevelQuarantine &&
					!containsFold(allowed, rw.id) && !containsFold(blocked, rw.id) && rw.accessReason() != exchange.ReasonDeviceRule:
					state = notify.StateQuarantined
				default:
					continue
				}
				if e.st.Sent(notify.Key(mb.smtp, rw.id, state)) {
					continue
				}
				ok, err := n.Enqueue(notify.Notice{
					To: mb.smtp, UserName: mb.name, DeviceID: rw.id, DeviceType: rw.typ, DeviceModel: rw.model,
					State: state, Reason: string(rw.reason()), SyncID: r.rep.ID, Time: e.now(),
				})
				switch {
				case errors.Is(err, notify.ErrQueueFull):
					full = true
					e.log.Warn("pipeline: notification queue full; the rest are sent after a later sync", "sync", r.rep.ID, "queued", queued)
				case err != nil:
					e.log.Warn("pipeline: notice refused", "sync", r.rep.ID, "mailbox", mb.smtp, "err", err)
				case ok:
					queued++
				}
			}
		}
		return map[string]int{"queued": queued, "resolved": resolved}, nil
	})
	r.rep.Notices = queued
}

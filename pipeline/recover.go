package pipeline

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/easconnector/easconnector/exchange"
)

// recoverPending reconciles the writes the state records as pending
// (recorded before they were sent, never confirmed: the process was
// killed, or the write's outcome was unknown) against what Exchange
// holds, before the sync plans anything:
//
//   - a mailbox's pending entries are looked up in its lists as
//     Get-CASMailbox reports them: an entry present is ours (an add that
//     took effect, or a remove that did not), an entry absent is not;
//   - a pending device access rule is ours when a rule of that name
//     exists, and dropped when none does;
//   - a pending organization settings write is read back.
//
// Each entry gets an audit line in phase recovered, whose To is what
// Exchange holds. Then the pending records are cleared, and the audit log
// and the state are made durable. A read that fails stops the sync before
// any write, the pending records kept for the next try.
func (e *Engine) recoverPending(ctx context.Context, r *run) error {
	if !e.st.HasPending() {
		return nil
	}
	pend := e.st.PendingWrites()
	rules := e.st.pendingRules()
	org := e.st.pendingOrg()
	now := e.now()
	var lines []AuditEntry
	if len(pend) > 0 {
		byDN := make(map[string]exchange.CASMailbox, len(pend))
		dns := make([]string, 0, len(pend))
		for _, p := range pend {
			dns = append(dns, p.DN)
		}
		slices.Sort(dns)
		dns = slices.CompactFunc(dns, strings.EqualFold)
		err := e.ex.CASMailboxes(ctx, dns, func(c exchange.CASMailbox) error {
			byDN[dnKey(c.DistinguishedName)] = c
			return nil
		})
		if err != nil {
			return fmt.Errorf("recover %d pending mailbox writes: %w", len(pend), err)
		}
		for _, key := range slices.Sorted(maps.Keys(pend)) {
			p := pend[key]
			mbName := p.Mailbox
			if mbName == "" {
				mbName = key
			}
			c, ok := byDN[dnKey(p.DN)]
			if !ok {
				// Gone, or renamed since: keep every claim, which the next
				// plan of the mailbox drops where the entry is absent.
				e.st.SettlePending(key, e.st.OwnedOf(key))
				for _, l := range changeEntries(p.Changes, p.SyncID, mbName, PhaseRecovered, now) {
					l.To = Absent
					lines = append(lines, l)
				}
				e.log.Warn("pipeline: mailbox of a pending write not found; its entries stay claimed", "mailbox", mbName, "dn", clip(p.DN))
				continue
			}
			owned := e.st.recordedOwned(key)
			for i, l := range changeEntries(p.Changes, p.SyncID, mbName, PhaseRecovered, now) {
				ch := p.Changes[i]
				list := c.ActiveSyncAllowedDeviceIDs
				own := &owned.Allowed
				if ch.List == ListBlocked {
					list, own = c.ActiveSyncBlockedDeviceIDs, &owned.Blocked
				}
				*own = deleteFold(*own, ch.DeviceID)
				if i := indexFold(list, ch.DeviceID); i >= 0 {
					// Ours, in the case the list holds it.
					*own = append(*own, list[i])
					l.To = Present
				} else {
					l.To = Absent
				}
				lines = append(lines, l)
			}
			e.st.SettlePending(key, owned)
			e.opts.Caches.Mailboxes.Del(key)
			e.m.recovered.Inc()
		}
	}
	if len(rules) > 0 {
		cur, err := e.ex.DeviceAccessRules(ctx)
		if err != nil {
			return fmt.Errorf("recover %d pending device access rule writes: %w", len(rules), err)
		}
		owned := e.st.recordedRules()
		for _, pr := range rules {
			l := AuditEntry{Time: now, SyncID: pr.SyncID, Setting: "Rule", Target: pr.Name, From: pr.From, To: pr.To, Phase: PhaseRecovered}
			owned = slices.DeleteFunc(owned, func(n string) bool { return strings.EqualFold(n, pr.Name) })
			if i := slices.IndexFunc(cur, func(x exchange.DeviceAccessRule) bool { return strings.EqualFold(x.Name, pr.Name) }); i >= 0 {
				owned = append(owned, cur[i].Name)
				l.To = string(cur[i].AccessLevel)
			} else {
				l.To = Absent
			}
			lines = append(lines, l)
		}
		e.st.settleRules(owned)
	}
	if org != nil {
		s, err := e.ex.OrgSettings(ctx)
		if err != nil {
			return fmt.Errorf("recover a pending organization settings write: %w", err)
		}
		for _, c := range org.Changes {
			l := AuditEntry{Time: now, SyncID: org.SyncID, Setting: c.Setting, From: c.From, Phase: PhaseRecovered}
			switch c.Setting {
			case "DefaultAccessLevel":
				l.To = string(s.DefaultAccessLevel)
			case "AdminMailRecipients":
				l.To = strings.Join(s.AdminMailRecipients, ", ")
			case "UserMailInsert":
				l.To = s.UserMailInsert
			}
			lines = append(lines, l)
		}
		e.st.setPendingOrg(nil)
	}
	if err := e.audit.Write(lines...); err != nil {
		return fmt.Errorf("recover pending writes: %w", err)
	}
	if err := e.audit.Flush(); err != nil {
		return fmt.Errorf("recover pending writes: %w", err)
	}
	if err := SaveState(e.opts.StateDir, e.st); err != nil {
		return fmt.Errorf("recover pending writes: %w", err)
	}
	r.rep.Recovered = len(lines)
	e.log.Warn("pipeline: reconciled writes left pending by an earlier run", "sync", r.rep.ID,
		"mailboxes", len(pend), "rules", len(rules), "org", org != nil, "entries", len(lines))
	return nil
}

package pipeline

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/easconnector/easconnector/exchange"
)

// Rule operations (ruleOp.op, PendingRule.Op).
const (
	ruleNew    = "new"
	ruleSet    = "set"
	ruleRemove = "remove"
)

// OwnedRules returns the names of the device access rules we created and,
// until reconciled, those a pending creation names.
func (s *State) OwnedRules() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.Rules)
	for _, pr := range s.PendingRules {
		if !slices.ContainsFunc(out, func(n string) bool { return strings.EqualFold(n, pr.Name) }) {
			out = append(out, pr.Name)
		}
	}
	return out
}

// recordedRules is OwnedRules without the pending claims.
func (s *State) recordedRules() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.Rules)
}

func (s *State) pendingRules() []PendingRule {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.PendingRules)
}

func (s *State) addPendingRules(prs []PendingRule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.PendingRules = append(s.PendingRules, prs...)
}

// settleRule clears the pending record of the rule named name.
func (s *State) settleRule(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.PendingRules = slices.DeleteFunc(s.PendingRules, func(pr PendingRule) bool { return strings.EqualFold(pr.Name, name) })
	if len(s.PendingRules) == 0 {
		s.PendingRules = nil
	}
}

// settleRules records the rules owned after reconciliation and clears
// every pending rule record.
func (s *State) settleRules(owned []string) {
	s.SetOwnedRules(owned)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.PendingRules = nil
}

func (s *State) pendingOrg() *PendingOrg {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.PendingOrg == nil {
		return nil
	}
	p := *s.PendingOrg
	p.Changes = slices.Clone(p.Changes)
	return &p
}

func (s *State) setPendingOrg(p *PendingOrg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.PendingOrg = p
}

// SetOwnedRules records the names of the device access rules we created,
// sorted and without duplicates (case-insensitively).
func (s *State) SetOwnedRules(names []string) {
	out := slices.Clone(names)
	slices.SortFunc(out, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
	out = slices.CompactFunc(out, strings.EqualFold)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Rules = out
}

// ruleName is the name Exchange gives a device access rule.
func ruleName(ch exchange.Characteristic, query string) string {
	return query + " (" + string(ch) + ")"
}

// severity orders access levels by how much they shut out.
func severity(l exchange.AccessLevel) int {
	switch l {
	case exchange.LevelAllow:
		return 1
	case exchange.LevelQuarantine:
		return 2
	case exchange.LevelBlock:
		return 3
	}
	return 0
}

// ruleOp is one device access rule change.
type ruleOp struct {
	op    string // "new", "set", "remove"
	name  string
	ch    exchange.Characteristic
	query string
	from  exchange.AccessLevel
	to    exchange.AccessLevel
}

// orgPlan is the difference between the org configuration the policy
// declares and what Exchange has.
type orgPlan struct {
	update   exchange.OrgSettingsUpdate
	settings []OrgChange
	// levelFrom/levelTo: the DefaultAccessLevel change, if any; tighten
	// when it shuts out more; shutOut counts the devices it would shut
	// out (they are left to the default and the default allows them now).
	levelFrom, levelTo exchange.AccessLevel
	tighten            bool
	shutOut            int
	rules              []ruleOp
	conflicts          []string
	owned              []string // rule names owned once every rule op succeeds
}

// planOrg compares the declared org configuration with what Exchange has.
func planOrg(p *Policy, cfg OrgConfig, cur orgView, owned []string) *orgPlan {
	op := &orgPlan{owned: slices.Clone(owned)}
	s := cur.settings
	if cfg.DefaultAccessLevel && p.OrgDefault != "" && s.DefaultAccessLevel != p.OrgDefault {
		lv := p.OrgDefault
		op.update.DefaultAccessLevel = &lv
		op.levelFrom, op.levelTo = s.DefaultAccessLevel, lv
		op.tighten = severity(lv) > severity(s.DefaultAccessLevel)
		op.settings = append(op.settings, OrgChange{Setting: "DefaultAccessLevel", From: string(s.DefaultAccessLevel), To: string(lv)})
	}
	if cfg.AdminMailRecipients != nil && !sameAddresses(cfg.AdminMailRecipients, s.AdminMailRecipients) {
		op.update.AdminMailRecipients = slices.Clone(cfg.AdminMailRecipients)
		if op.update.AdminMailRecipients == nil {
			op.update.AdminMailRecipients = []string{}
		}
		op.settings = append(op.settings, OrgChange{Setting: "AdminMailRecipients",
			From: strings.Join(s.AdminMailRecipients, ", "), To: strings.Join(cfg.AdminMailRecipients, ", ")})
	}
	if cfg.UserMailInsert != nil && *cfg.UserMailInsert != s.UserMailInsert {
		v := *cfg.UserMailInsert
		op.update.UserMailInsert = &v
		op.settings = append(op.settings, OrgChange{Setting: "UserMailInsert", From: s.UserMailInsert, To: v})
	}
	if cfg.DeviceAccessRules {
		op.planRules(p, cur.rules)
	}
	return op
}

func sameAddresses(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.ContainsFunc(b, func(y string) bool { return strings.EqualFold(x, y) }) {
			return false
		}
	}
	return true
}

// actionLevel maps a platform exception's action onto a rule's level;
// ActionDefault makes no rule.
func actionLevel(a Action) (exchange.AccessLevel, bool) {
	switch a {
	case ActionAllow:
		return exchange.LevelAllow, true
	case ActionBlock:
		return exchange.LevelBlock, true
	case ActionQuarantine:
		return exchange.LevelQuarantine, true
	}
	return "", false
}

// planRules makes the rules we own match the policy's platform exceptions:
// one rule per (characteristic, value), the first exception winning as in
// Decide; an administrator's rule for the same value is never touched.
func (op *orgPlan) planRules(p *Policy, rules []exchange.DeviceAccessRule) {
	ours := func(name string) bool {
		return slices.ContainsFunc(op.owned, func(o string) bool { return strings.EqualFold(o, name) })
	}
	find := func(ch exchange.Characteristic, q string) *exchange.DeviceAccessRule {
		for i := range rules {
			if strings.EqualFold(string(rules[i].Characteristic), string(ch)) && strings.EqualFold(rules[i].QueryString, q) {
				return &rules[i]
			}
		}
		return nil
	}
	wanted := map[string]bool{}
	for _, ex := range p.PlatformExceptions {
		lv, ok := actionLevel(ex.Action)
		if !ok {
			continue
		}
		name := ruleName(ex.Characteristic, ex.Value)
		k := strings.ToLower(name)
		if wanted[k] {
			continue
		}
		wanted[k] = true
		cur := find(ex.Characteristic, ex.Value)
		switch {
		case cur == nil:
			op.rules = append(op.rules, ruleOp{op: ruleNew, name: name, ch: ex.Characteristic, query: ex.Value, to: lv})
		case cur.AccessLevel == lv:
			// Already as declared, ours or an administrator's that agrees.
		case ours(cur.Name):
			op.rules = append(op.rules, ruleOp{op: ruleSet, name: cur.Name, ch: ex.Characteristic, query: ex.Value, from: cur.AccessLevel, to: lv})
		default:
			op.conflicts = append(op.conflicts, fmt.Sprintf("device access rule %q is %s, the policy's platform exception says %s: the administrator's rule is left alone",
				cur.Name, cur.AccessLevel, lv))
		}
	}
	for _, name := range slices.Clone(op.owned) {
		if wanted[strings.ToLower(name)] {
			continue
		}
		i := slices.IndexFunc(rules, func(r exchange.DeviceAccessRule) bool { return strings.EqualFold(r.Name, name) })
		if i < 0 {
			op.dropOwned(name) // gone already
			continue
		}
		op.rules = append(op.rules, ruleOp{op: ruleRemove, name: rules[i].Name, ch: rules[i].Characteristic, query: rules[i].QueryString, from: rules[i].AccessLevel})
	}
}

func (op *orgPlan) dropOwned(name string) {
	op.owned = slices.DeleteFunc(op.owned, func(o string) bool { return strings.EqualFold(o, name) })
}

// countShutOut counts the devices a tightening DefaultAccessLevel would
// shut out: left to Exchange (Default, in neither list after the plan) and
// allowed by the organization default now (allowedByDefault, which does
// not trust the stored DeviceAccessState alone). rules are the device
// access rules as they will be after the sync.
func (op *orgPlan) countShutOut(mbs map[string]*mbox, rules []exchange.DeviceAccessRule) {
	if !op.tighten {
		return
	}
	for _, mb := range mbs {
		for i := range mb.devs {
			rw := &mb.devs[i]
			if rw.decision() == Default && allowedByDefault(mb, rw, rules, op.levelFrom) {
				op.shutOut++
			}
		}
	}
}

// report lists the changes for the Report (none applied yet).
func (op *orgPlan) report() []OrgChange {
	out := slices.Clone(op.settings)
	for _, ro := range op.rules {
		out = append(out, OrgChange{Setting: "Rule", Target: ro.name, From: string(ro.from), To: string(ro.to)})
	}
	return out
}

// empty reports whether nothing differs.
func (op *orgPlan) empty() bool { return len(op.settings) == 0 && len(op.rules) == 0 }

// applyOrg writes the org changes. A tightening DefaultAccessLevel is
// written only when allowTighten (every mailbox write succeeded): it would
// otherwise shut out compliant devices whose allow entry failed.
//
// Intent is recorded before acting, as for mailbox writes: the settings
// write and every rule operation are recorded as pending in the state,
// with audit intent lines, and made durable in one commit before the
// first cmdlet; each confirmed operation is audited as done and its
// pending record cleared. A rule whose creation failed stays claimed and
// pending (it may exist): the next sync's start keeps it if it exists and
// drops it if not.
func (e *Engine) applyOrg(ctx context.Context, r *run, op *orgPlan, allowTighten bool) {
	if op.empty() {
		return
	}
	r.dirty = true
	r.rep.Org = r.rep.Org[:0]
	u := op.update
	var sent []OrgChange // the settings the write carries
	for _, c := range op.settings {
		if c.Setting == "DefaultAccessLevel" && op.tighten && !allowTighten {
			u.DefaultAccessLevel = nil
			c.Error = fmt.Sprintf("deferred: %d mailbox writes failed; the default tightens once every allow entry is in place", r.rep.Failures)
			r.rep.Org = append(r.rep.Org, c)
			continue
		}
		sent = append(sent, c)
	}
	if err := e.commitOrgIntent(r, sent, op.rules); err != nil {
		r.applyErr = err
		e.log.Error("pipeline: record intent of organization writes; nothing written", "sync", r.rep.ID, "err", err)
		for _, c := range op.report() {
			c.Error = err.Error()
			r.rep.Org = append(r.rep.Org, c)
		}
		return
	}
	done := func(l AuditEntry) {
		l.Time, l.SyncID, l.Phase = e.now(), r.rep.ID, PhaseDone
		if err := e.audit.Write(l); err != nil {
			e.log.Error("pipeline: audit log", "sync", r.rep.ID, "err", err)
		}
	}
	if len(sent) > 0 {
		err := e.ex.SetOrgSettings(ctx, u)
		for _, c := range sent {
			c.Applied = err == nil
			if err != nil {
				c.Error = err.Error()
			} else {
				done(AuditEntry{Setting: c.Setting, From: c.From, To: c.To})
			}
			r.rep.Org = append(r.rep.Org, c)
		}
		if err != nil {
			// Unknown whether it took effect: the pending record stays, and
			// the next start reads the settings back.
			e.log.Warn("pipeline: org settings", "sync", r.rep.ID, "err", err)
		} else {
			e.st.setPendingOrg(nil)
		}
	}
	for _, ro := range op.rules {
		var err error
		switch ro.op {
		case ruleNew:
			err = e.ex.NewDeviceAccessRule(ctx, ro.ch, ro.query, ro.to)
			op.owned = append(op.owned, ro.name)
		case ruleSet:
			err = e.ex.SetDeviceAccessRule(ctx, ro.name, ro.to)
		case ruleRemove:
			if err = e.ex.RemoveDeviceAccessRule(ctx, ro.name); err == nil {
				op.dropOwned(ro.name)
			}
		}
		c := OrgChange{Setting: "Rule", Target: ro.name, From: string(ro.from), To: string(ro.to), Applied: err == nil}
		if err != nil {
			c.Error = err.Error()
			e.log.Warn("pipeline: device access rule", "sync", r.rep.ID, "rule", ro.name, "op", ro.op, "err", err)
		} else {
			done(ruleEntry(ro))
			e.st.settleRule(ro.name)
		}
		r.rep.Org = append(r.rep.Org, c)
	}
	e.st.SetOwnedRules(op.owned)
}

// ruleEntry is the audit line of a rule operation; To is Absent for a
// removal.
func ruleEntry(ro ruleOp) AuditEntry {
	l := AuditEntry{Setting: "Rule", Target: ro.name, From: string(ro.from), To: string(ro.to)}
	if ro.op == ruleNew {
		l.From = Absent
	}
	if ro.op == ruleRemove {
		l.To = Absent
	}
	return l
}

// commitOrgIntent records the organization writes about to be made as
// pending, with their intent lines, and makes both durable in one commit.
func (e *Engine) commitOrgIntent(r *run, settings []OrgChange, rules []ruleOp) error {
	if len(settings) == 0 && len(rules) == 0 {
		return nil
	}
	now := e.now()
	var lines []AuditEntry
	if len(settings) > 0 {
		e.st.setPendingOrg(&PendingOrg{SyncID: r.rep.ID, Changes: slices.Clone(settings)})
		for _, c := range settings {
			lines = append(lines, AuditEntry{Time: now, SyncID: r.rep.ID, Setting: c.Setting, From: c.From, To: c.To, Phase: PhaseIntent})
		}
	}
	prs := make([]PendingRule, 0, len(rules))
	for _, ro := range rules {
		l := ruleEntry(ro)
		l.Time, l.SyncID, l.Phase = now, r.rep.ID, PhaseIntent
		lines = append(lines, l)
		prs = append(prs, PendingRule{Op: ro.op, Name: ro.name, SyncID: r.rep.ID, From: l.From, To: l.To})
	}
	e.st.addPendingRules(prs)
	if err := e.audit.Write(lines...); err != nil {
		return fmt.Errorf("record intent of organization writes: %w", err)
	}
	if err := e.commit(); err != nil {
		return fmt.Errorf("record intent of organization writes: %w", err)
	}
	e.m.intentCommits.Inc()
	return nil
}

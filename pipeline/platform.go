package pipeline

import (
	"fmt"
	"slices"
	"strings"

	"github.com/easconnector/easconnector/exchange"
)

// Platform exceptions under Exchange's own rule order.
//
// The policy's platform exceptions are tried in the order the policy lists
// them (Decide, row 6), and those with an allow, block or quarantine action
// also become organization-wide device access rules (OrgConfig.
// DeviceAccessRules). Exchange does not try rules in any order an
// administrator chooses: it tries them by characteristic, the device's user
// agent first, then its OS, then its model, then its type, and the first
// characteristic with a matching rule decides, whatever its access level
// (Exchange 2016's AirSync, Command.DetermineDeviceAccessState; the cmdlet
// reference, New-ActiveSyncDeviceAccessRule.md in office-docs-powershell,
// states that a rule matches the whole value only). Two things follow:
//
//   - An exception can be shadowed: a rule on an earlier characteristic (an
//     administrator's, or the rule of another exception) decides first for
//     some of the devices the exception matches, at another level. Devices
//     the connector decides Allow or Block carry a list entry, which wins
//     over every rule, so they are shadowed only between the partnership's
//     first request and the connector's write; devices left to Exchange
//     (a quarantine or default exception) are shadowed for good.
//   - The rules reach every mailbox, the users the policy does not target
//     too: where the connector leaves such a user's device to Exchange
//     (no list entry), the policy's rule decides for it. The connector
//     does not write list entries into mailboxes the policy does not
//     target to undo that (it would then own entries for users it is told
//     to leave alone, and a list cannot say "quarantine"); it reports the
//     devices reached in the sync's report and `plan` output, and
//     docs/operations.md says so. An administrator who wants those users
//     untouched sets untargeted = "allow" (or "auto" under a blocking
//     default), whose list entries win over any rule.

// exchangeRuleOrder is the order in which Exchange tries device access
// rules by characteristic.
var exchangeRuleOrder = []exchange.Characteristic{exchange.CharUserAgent, exchange.CharDeviceOS, exchange.CharDeviceModel, exchange.CharDeviceType}

// deviceClass is what Exchange's rules look at on a device.
type deviceClass struct {
	ua, os, model, typ string
}

func classOf(d *exchange.MobileDevice) deviceClass {
	return deviceClass{ua: d.DeviceUserAgent, os: d.DeviceOS, model: d.DeviceModel, typ: d.DeviceType}
}

func (c deviceClass) value(ch exchange.Characteristic) string {
	switch ch {
	case exchange.CharUserAgent:
		return c.ua
	case exchange.CharDeviceOS:
		return c.os
	case exchange.CharDeviceModel:
		return c.model
	case exchange.CharDeviceType:
		return c.typ
	}
	return ""
}

func (c deviceClass) String() string {
	return fmt.Sprintf("type %q, model %q, OS %q, user agent %q", c.typ, c.model, c.os, c.ua)
}

// exchangeRule returns the device access rule Exchange applies to a device
// of class c, or nil when none matches (the organization default applies).
func exchangeRule(rules []exchange.DeviceAccessRule, c deviceClass) *exchange.DeviceAccessRule {
	for _, ch := range exchangeRuleOrder {
		v := c.value(ch)
		if v == "" {
			continue // Exchange skips an absent user agent or OS
		}
		for i := range rules {
			if strings.EqualFold(string(rules[i].Characteristic), string(ch)) && strings.EqualFold(rules[i].QueryString, v) {
				return &rules[i]
			}
		}
	}
	return nil
}

// exceptionIndex is the index of the exception Decide applies to d (the
// first that matches), or -1.
func (p *Policy) exceptionIndex(d *exchange.MobileDevice) int {
	for i := range p.PlatformExceptions {
		if p.PlatformExceptions[i].matches(d) {
			return i
		}
	}
	return -1
}

// ShadowedException is a platform exception that Exchange's rule order
// overrides for some of the devices it matches.
type ShadowedException struct {
	// Exception names the exception as its rule is named, "<value>
	// (<characteristic>)", and Action is its action.
	Exception string `json:"exception"`
	Action    Action `json:"action"`
	// Rule is the device access rule Exchange applies first instead, at
	// Level.
	Rule  string               `json:"rule"`
	Level exchange.AccessLevel `json:"level"`
	// Devices is how many of the devices the exception decides are left to
	// Exchange and so get Level for good; UntilListed how many carry the
	// connector's list entry, which wins once written (until then, a new
	// partnership gets Level).
	Devices     int `json:"devices"`
	UntilListed int `json:"until_listed"`
	// Example is one such device's class.
	Example string `json:"example"`
}

func (s ShadowedException) String() string {
	return fmt.Sprintf("platform exception %q (%s) is shadowed: Exchange tries device access rule %q first (%s), for %d device(s) left to Exchange and %d until their list entry is written, e.g. %s",
		s.Exception, s.Action, s.Rule, s.Level, s.Devices, s.UntilListed, s.Example)
}

// UntargetedReach is a device access rule of the policy's platform
// exceptions that decides for devices of users the policy does not target.
type UntargetedReach struct {
	Rule    string               `json:"rule"`
	Level   exchange.AccessLevel `json:"level"`
	Devices int                  `json:"devices"`
	Example string               `json:"example"` // one such device: mailbox and class
}

func (u UntargetedReach) String() string {
	return fmt.Sprintf("device access rule %q (%s) of the policy's platform exceptions decides for %d device(s) of users the policy does not target, e.g. %s",
		u.Rule, u.Level, u.Devices, u.Example)
}

// platformTally collects, during the decide stage, the classes of the
// devices that platform exceptions concern: those an exception decided
// and those of untargeted users left to Exchange. Distinct classes are few
// (a fleet has hundreds of models), so this stays small. Not safe for
// concurrent use (the decider is used by one goroutine).
type platformTally struct {
	hits map[platformKey]*platformHit
}

type platformKey struct {
	class      deviceClass
	exc        int // index of the exception that decided, -1 for untargeted
	listed     bool
	untargeted bool
}

type platformHit struct {
	n       int
	example string // mailbox of the first device (untargeted only)
}

// maxPlatformClasses bounds the tally: beyond it new classes are not
// recorded (a report, not a decision, depends on it).
const maxPlatformClasses = 20000

func (t *platformTally) add(k platformKey, mailbox string) {
	if t.hits == nil {
		t.hits = map[platformKey]*platformHit{}
	}
	h := t.hits[k]
	if h == nil {
		if len(t.hits) >= maxPlatformClasses {
			return
		}
		h = &platformHit{example: mailbox}
		t.hits[k] = h
	}
	h.n++
}

// note records dev, decided dec for reason why, when platform exceptions
// can concern it.
func (t *platformTally) note(p *Policy, dev *exchange.MobileDevice, mailbox string, dec Decision, why Reason) {
	if len(p.PlatformExceptions) == 0 {
		return
	}
	switch {
	case why == ReasonPlatformRule:
		t.add(platformKey{class: classOf(dev), exc: p.exceptionIndex(dev), listed: dec != Default}, "")
	case (why == ReasonNotTargeted || why == ReasonExempt) && dec == Default:
		t.add(platformKey{class: classOf(dev), exc: -1, untargeted: true}, mailbox)
	}
}

// report evaluates the tallied classes against rules, the device access
// rules as they will be once the sync's rule changes are made, and the
// organization default orgLevel. Results are sorted for stable output.
func (t *platformTally) report(p *Policy, rules []exchange.DeviceAccessRule, orgLevel exchange.AccessLevel) ([]ShadowedException, []UntargetedReach) {
	ours := map[string]bool{}
	for _, e := range p.PlatformExceptions {
		if _, ok := actionLevel(e.Action); ok {
			ours[strings.ToLower(ruleName(e.Characteristic, e.Value))] = true
		}
	}
	type shadowKey struct {
		exc  int
		rule string
	}
	shadows := map[shadowKey]*ShadowedException{}
	reach := map[string]*UntargetedReach{}
	for k, h := range t.hits {
		r := exchangeRule(rules, k.class)
		if k.untargeted {
			if r == nil || !ours[strings.ToLower(r.Name)] {
				continue
			}
			u := reach[r.Name]
			if u == nil {
				u = &UntargetedReach{Rule: r.Name, Level: r.AccessLevel, Example: h.example + ": " + k.class.String()}
				reach[r.Name] = u
			}
			u.Devices += h.n
			continue
		}
		if k.exc < 0 || r == nil {
			continue
		}
		e := p.PlatformExceptions[k.exc]
		if strings.EqualFold(r.Name, ruleName(e.Characteristic, e.Value)) {
			continue
		}
		want, ok := actionLevel(e.Action)
		if !ok {
			want = orgLevel // a default exception leaves the device to the org default
		}
		if r.AccessLevel == want {
			continue // another rule decides, with the same outcome
		}
		sk := shadowKey{k.exc, r.Name}
		s := shadows[sk]
		if s == nil {
			s = &ShadowedException{Exception: ruleName(e.Characteristic, e.Value), Action: e.Action, Rule: r.Name, Level: r.AccessLevel, Example: k.class.String()}
			shadows[sk] = s
		}
		if k.listed {
			s.UntilListed += h.n
		} else {
			s.Devices += h.n
		}
	}
	var outS []ShadowedException
	for _, s := range shadows {
		outS = append(outS, *s)
	}
	slices.SortFunc(outS, func(a, b ShadowedException) int {
		return strings.Compare(a.Exception+"\x00"+a.Rule, b.Exception+"\x00"+b.Rule)
	})
	var outU []UntargetedReach
	for _, u := range reach {
		outU = append(outU, *u)
	}
	slices.SortFunc(outU, func(a, b UntargetedReach) int { return strings.Compare(a.Rule, b.Rule) })
	return outS, outU
}

// reportPlatform puts the shadowed exceptions and the untargeted devices
// the policy's rules reach into the report, and logs each once per sync.
func (e *Engine) reportPlatform(r *run, t *platformTally, rules []exchange.DeviceAccessRule, orgLevel exchange.AccessLevel, op *orgPlan) {
	if op != nil && op.update.DefaultAccessLevel != nil {
		orgLevel = *op.update.DefaultAccessLevel
	}
	p := &e.opts.Policy
	r.rep.ShadowedExceptions, r.rep.UntargetedReached = t.report(p, rules, orgLevel)
	for _, s := range r.rep.ShadowedExceptions {
		e.log.Warn("pipeline: "+s.String(), "sync", r.rep.ID)
	}
	for _, u := range r.rep.UntargetedReached {
		e.log.Info("pipeline: "+u.String(), "sync", r.rep.ID)
	}
}

// allowedByDefault reports whether Exchange lets rw in by the organization
// default level (before the sync changes it) once mb's plan is written: the
// device is in neither list, no device access rule decides for it, and
// level is Allow.
//
// Get-MobileDevice's DeviceAccessState is the state stored at the phone's
// last request (Set-CASMailbox rewrites it for listed ids, and sets
// Unknown when it removes an id), so it is read for what it proves: Global
// means no rule matched at that request; DeviceRule that one did. Any other
// stored state (Individual: an entry the plan removes or removed; Unknown:
// not evaluated since) is judged from the rules on the characteristics a
// row keeps (type and model); a user agent or OS rule the row cannot see is
// assumed not to match, which counts the device as shut out: the count
// guards against locking phones out, so it errs on the high side.
//
// A device whose allow entry the plan removes is not counted here: the plan
// counts it as a revocation already.
func allowedByDefault(mb *mbox, rw *row, rules []exchange.DeviceAccessRule, level exchange.AccessLevel) bool {
	if level != exchange.LevelAllow || listedAfterPlan(mb, rw.id) {
		return false
	}
	if mb.plan != nil && slices.ContainsFunc(mb.plan.Allowed.Remove, func(x string) bool { return strings.EqualFold(x, rw.id) }) {
		return false
	}
	switch rw.accessReason() {
	case exchange.ReasonGlobal:
		return true
	case exchange.ReasonDeviceRule:
		return false
	}
	return exchangeRule(rules, deviceClass{typ: rw.typ, model: rw.model}) == nil
}

// listedAfterPlan reports whether id stays in one of mb's lists after its
// plan is written (a Default decision never adds an entry).
func listedAfterPlan(mb *mbox, id string) bool {
	in := func(list, removed []string) bool {
		return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(x, id) }) &&
			!slices.ContainsFunc(removed, func(x string) bool { return strings.EqualFold(x, id) })
	}
	var ra, rb []string
	if mb.plan != nil {
		ra, rb = mb.plan.Allowed.Remove, mb.plan.Blocked.Remove
	}
	return in(mb.allowed, ra) || in(mb.blocked, rb)
}

// rulesAfter returns rules with the sync's rule operations applied: what
// Exchange will evaluate once the org changes are made.
func rulesAfter(rules []exchange.DeviceAccessRule, op *orgPlan) []exchange.DeviceAccessRule {
	out := slices.Clone(rules)
	if op == nil {
		return out
	}
	for _, ro := range op.rules {
		i := slices.IndexFunc(out, func(r exchange.DeviceAccessRule) bool { return strings.EqualFold(r.Name, ro.name) })
		switch ro.op {
		case ruleNew:
			if i < 0 {
				out = append(out, exchange.DeviceAccessRule{Identity: ro.name, Name: ro.name, Characteristic: ro.ch, QueryString: ro.query, AccessLevel: ro.to})
			}
		case ruleSet:
			if i >= 0 {
				out[i].AccessLevel = ro.to
			}
		case ruleRemove:
			if i >= 0 {
				out = slices.Delete(out, i, i+1)
			}
		}
	}
	return out
}

// ShadowedByRules evaluates the platform exceptions of p against rules for
// devices as Exchange lists them, whoever their user: the devices an
// exception matches (Decide's first match) that Exchange gives another
// rule's level first. It serves `easconnector check`, which reads devices
// but not the MDM: every matched device counts in UntilListed when the
// exception's action writes a list entry, else in Devices.
//
// The rules of the policy's own exceptions that Exchange does not have yet
// are counted as present, as a full sync creates them.
func ShadowedByRules(p *Policy, rules []exchange.DeviceAccessRule, orgLevel exchange.AccessLevel, devices []exchange.MobileDevice) []ShadowedException {
	rules = slices.Clone(rules)
	for _, e := range p.PlatformExceptions {
		lv, ok := actionLevel(e.Action)
		name := ruleName(e.Characteristic, e.Value)
		if ok && !slices.ContainsFunc(rules, func(r exchange.DeviceAccessRule) bool { return strings.EqualFold(r.Name, name) }) {
			rules = append(rules, exchange.DeviceAccessRule{Identity: name, Name: name, Characteristic: e.Characteristic, QueryString: e.Value, AccessLevel: lv})
		}
	}
	var t platformTally
	for i := range devices {
		d := &devices[i]
		if exc := p.exceptionIndex(d); exc >= 0 {
			t.add(platformKey{class: classOf(d), exc: exc, listed: p.PlatformExceptions[exc].Action.decision() != Default}, "")
		}
	}
	s, _ := t.report(p, rules, orgLevel)
	return s
}

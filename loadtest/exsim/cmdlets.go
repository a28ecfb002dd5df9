package exsim

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/runspace"
)

// cmdlet is one simulated Exchange cmdlet.
type cmdlet struct {
	name   string
	write  bool
	params []param
	run    func(c *call) error
	all    []param // params, then the common and ShouldProcess parameters
}

func (c *cmdlet) allParams() []param { return c.all }

// .NET type names used in binding errors.
const (
	netMailboxID = "Microsoft.Exchange.Configuration.Tasks.MailboxIdParameter"
	netDeviceID  = "Microsoft.Exchange.Configuration.Tasks.MobileDeviceIdParameter"
	netRuleID    = "Microsoft.Exchange.Configuration.Tasks.ActiveSyncDeviceAccessRuleIdParameter"
	netOrgID     = "Microsoft.Exchange.Configuration.Tasks.ActiveSyncOrganizationSettingsIdParameter"
	netServerID  = "Microsoft.Exchange.Configuration.Tasks.ServerIdParameter"
	netLevel     = "Microsoft.Exchange.Data.Directory.SystemConfiguration.DeviceAccessLevel"
	netChar      = "Microsoft.Exchange.Data.Directory.SystemConfiguration.DeviceAccessCharacteristic"
	netSMTPMulti = "Microsoft.Exchange.Data.MultiValuedProperty`1[Microsoft.Exchange.Data.SmtpAddress]"
)

// cmdletTable holds every cmdlet of runspace.Allowlist; a test checks the
// two agree.
var cmdletTable = buildCmdlets(
	&cmdlet{name: "Get-MobileDevice", run: runGetMobileDevice, params: []param{
		{name: "Identity", ty: tyIdentity, set: "Identity", netType: netDeviceID},
		{name: "Mailbox", ty: tyIdentity, set: "Mailbox", netType: netMailboxID},
		{name: "Filter", ty: tyFilter},
		{name: "ResultSize", ty: tyResultSize},
		{name: "ActiveSync", ty: tySwitch},
		{name: "OWAforDevices", ty: tySwitch},
	}},
	&cmdlet{name: "Get-CASMailbox", run: runGetCASMailbox, params: []param{
		{name: "Identity", ty: tyIdentity, netType: netMailboxID},
		{name: "Filter", ty: tyFilter},
		{name: "ResultSize", ty: tyResultSize},
	}},
	&cmdlet{name: "Set-CASMailbox", write: true, run: runSetCASMailbox, params: []param{
		{name: "Identity", ty: tyIdentity, mandatory: true, netType: netMailboxID},
		{name: "ActiveSyncAllowedDeviceIDs", ty: tyMulti},
		{name: "ActiveSyncBlockedDeviceIDs", ty: tyMulti},
		{name: "ActiveSyncEnabled", ty: tyBool},
	}},
	&cmdlet{name: "Get-ActiveSyncOrganizationSettings", run: runGetOrgSettings, params: []param{
		{name: "Identity", ty: tyIdentity, netType: netOrgID},
	}},
	&cmdlet{name: "Set-ActiveSyncOrganizationSettings", write: true, run: runSetOrgSettings, params: []param{
		{name: "Identity", ty: tyIdentity, netType: netOrgID},
		{name: "DefaultAccessLevel", ty: tyEnum, enum: enumAccessLevel, netType: netLevel},
		{name: "AdminMailRecipients", ty: tySMTPMulti, netType: netSMTPMulti},
		{name: "UserMailInsert", ty: tyString},
		{name: "OtaNotificationMailInsert", ty: tyString},
	}},
	&cmdlet{name: "Get-ActiveSyncDeviceAccessRule", run: runGetRules, params: []param{
		{name: "Identity", ty: tyIdentity, netType: netRuleID},
	}},
	&cmdlet{name: "New-ActiveSyncDeviceAccessRule", write: true, run: runNewRule, params: []param{
		{name: "Characteristic", ty: tyEnum, mandatory: true, enum: enumCharacteristic, netType: netChar},
		{name: "QueryString", ty: tyIdentity, mandatory: true, netType: "System.String"},
		{name: "AccessLevel", ty: tyEnum, mandatory: true, enum: enumAccessLevel, netType: netLevel},
	}},
	&cmdlet{name: "Set-ActiveSyncDeviceAccessRule", write: true, run: runSetRule, params: []param{
		{name: "Identity", ty: tyIdentity, mandatory: true, netType: netRuleID},
		{name: "AccessLevel", ty: tyEnum, enum: enumAccessLevel, netType: netLevel},
	}},
	&cmdlet{name: "Remove-ActiveSyncDeviceAccessRule", write: true, run: runRemoveRule, params: []param{
		{name: "Identity", ty: tyIdentity, mandatory: true, netType: netRuleID},
	}},
	&cmdlet{name: "Get-ExchangeServer", run: runGetServers(serverSchema), params: []param{
		{name: "Identity", ty: tyIdentity, netType: netServerID},
	}},
	&cmdlet{name: "Get-ClientAccessService", run: runGetServers(casSchema), params: []param{
		{name: "Identity", ty: tyIdentity, netType: "Microsoft.Exchange.Configuration.Tasks.ClientAccessServerIdParameter"},
	}},
)

func buildCmdlets(cs ...*cmdlet) map[string]*cmdlet {
	m := make(map[string]*cmdlet, len(cs))
	for _, c := range cs {
		c.all = slices.Concat(c.params, commonParams)
		if c.write {
			c.all = append(c.all, shouldProcessParams...)
		}
		m[strings.ToLower(c.name)] = c
	}
	return m
}

// lookupCmdlet finds a cmdlet the way the bootstrap's allowlist hashtable
// does: case-insensitively.
func lookupCmdlet(name string) *cmdlet {
	c := cmdletTable[strings.ToLower(name)]
	if c == nil || !slices.Contains(runspace.Allowlist, c.name) {
		return nil
	}
	return c
}

// orgErr reports an organization error as the task error of the cmdlet.
// Identity errors (not found, ambiguous) are non-terminating in Exchange
// and so honour -ErrorAction; the others are terminating.
func (c *call) orgErr(err error) error {
	var oe *orgError
	if !errors.As(err, &oe) {
		return err
	}
	re := c.w.taskErr(c.cmd.name, oe.typ, oe.category, oe.msg)
	if oe.typ == typeNotFound || oe.typ == typeAmbiguous || oe.typ == typeIDInBothLists {
		return c.writeError(re)
	}
	return re
}

// resultSize is the -ResultSize limit: 1000 by default, -1 for Unlimited.
func (c *call) resultSize() int64 {
	if n, ok := c.args["ResultSize"].(int64); ok {
		return n
	}
	return 1000
}

// warnMore is the warning Exchange writes when ResultSize cut the output.
func (c *call) warnMore() {
	if c.args.has("ResultSize") {
		c.warn("There are more results available than are currently displayed. To view them, increase the value for the ResultSize parameter.")
		return
	}
	c.warn(`By default, only the first 1000 items are returned. Use the ResultSize parameter to specify the number of items returned. To return all items, specify "-ResultSize Unlimited". Be aware that, depending upon the actual number of items, returning all items can take a long time and consume a large amount of memory. Also, we don't recommend storing the results in a variable. Instead, pipe the results to another task or script to perform batch changes.`)
}

func compileArg[T any](c *call, s *schema[T]) (func(*T) bool, error) {
	f, ok := c.args["Filter"].(*Filter)
	if !ok {
		return nil, nil
	}
	pred, ferr := compileFilter(f, s)
	if ferr != nil {
		return nil, errFilter(c.cmd.name, ferr)
	}
	return pred, nil
}

// scanChunk is how many objects a Get- cmdlet copies out under one read
// lock: large enough to be cheap, small enough that writers never wait long
// behind a reader streaming 100,000 devices to a slow client.
const scanChunk = 256

func runGetMobileDevice(c *call) error {
	pred, err := compileArg(c, deviceSchema)
	if err != nil {
		return err
	}
	o := c.org()
	var cands []*device
	o.mu.RLock()
	switch {
	case c.args.has("Identity"):
		id, _ := c.args.str("Identity")
		d, err := o.resolveDeviceLocked(id)
		if err != nil {
			o.mu.RUnlock()
			return c.orgErr(err)
		}
		cands = []*device{d}
	case c.args.has("Mailbox"):
		id, _ := c.args.str("Mailbox")
		mb, err := o.resolveMailboxLocked(id)
		if err != nil {
			o.mu.RUnlock()
			return c.orgErr(err)
		}
		cands = slices.Clone(mb.devices)
	default:
		cands = slices.Clone(o.devices)
	}
	o.mu.RUnlock()

	onlyEAS, onlyOWA := c.args.flag("ActiveSync"), c.args.flag("OWAforDevices")
	return scan(c, cands, deviceSchema.selection(c.req.Select),
		func(d *device) (deviceRec, bool) {
			if d.removed {
				return deviceRec{}, false
			}
			return deviceRec{d: d, verdict: d.stored,
				model: d.model, os: d.os, ua: d.ua, friendly: d.friendly}, true
		},
		func(r *deviceRec) bool {
			return !(onlyEAS && r.d.client != "EAS" || onlyOWA && r.d.client != "MOWA" || pred != nil && !pred(r))
		})
}

// scan streams the candidates' records to the client as a Get- cmdlet does:
// snap copies a record out under the organization's read lock, scanChunk
// candidates per lock so that writers never wait long behind a reader
// streaming 100,000 objects to a slow client; keep filters the records;
// -ResultSize bounds how many are sent (with Exchange's warning when more
// exist).
func scan[O, R any](c *call, cands []O, sel selection[R], snap func(O) (R, bool), keep func(*R) bool) error {
	o := c.org()
	limit := c.resultSize()
	recs := make([]R, 0, scanChunk)
	var n int64
	for start := 0; start < len(cands); start += scanChunk {
		recs = recs[:0]
		o.mu.RLock()
		for _, cand := range cands[start:min(start+scanChunk, len(cands))] {
			if r, ok := snap(cand); ok {
				recs = append(recs, r)
			}
		}
		o.mu.RUnlock()
		for i := range recs {
			r := &recs[i]
			if !keep(r) {
				continue
			}
			if limit >= 0 && n == limit {
				c.warnMore()
				return nil
			}
			if err := emit(c, sel, r); err != nil {
				return err
			}
			n++
		}
	}
	return nil
}

func runGetCASMailbox(c *call) error {
	pred, err := compileArg(c, mailboxSchema)
	if err != nil {
		return err
	}
	o := c.org()
	var cands []*mailbox
	o.mu.RLock()
	if id, ok := c.args.str("Identity"); ok {
		mb, err := o.resolveMailboxLocked(id)
		if err != nil {
			o.mu.RUnlock()
			return c.orgErr(err)
		}
		cands = []*mailbox{mb}
	} else {
		cands = slices.Clone(o.mailboxes)
	}
	o.mu.RUnlock()

	// The lists are replaced, never modified in place, so the record may
	// share them.
	return scan(c, cands, mailboxSchema.selection(c.req.Select),
		func(mb *mailbox) (mailboxRec, bool) {
			return mailboxRec{mb: mb, allowed: mb.allowed, blocked: mb.blocked,
				enabled: mb.easEnabled, partner: mb.hasPartnership(), whenChanged: mb.whenChanged}, true
		},
		func(r *mailboxRec) bool { return pred == nil || pred(r) })
}

// confirm refuses -Confirm:$true: it would prompt, and the session is
// non-interactive.
func (c *call) confirm() error {
	if c.args.flag("Confirm") {
		return errNonInteractive(c.cmd.name)
	}
	return nil
}

func (c *call) noChange(identity string) {
	c.warn(fmt.Sprintf("The command completed successfully but no settings of '%s' have been modified.", identity))
}

func runSetCASMailbox(c *call) error {
	if err := c.confirm(); err != nil {
		return err
	}
	id, _ := c.args.str("Identity")
	allowed, _ := c.args["ActiveSyncAllowedDeviceIDs"].(ListChange)
	blocked, _ := c.args["ActiveSyncBlockedDeviceIDs"].(ListChange)
	var enabled *bool
	if c.args.has("ActiveSyncEnabled") {
		v := c.args.flag("ActiveSyncEnabled")
		enabled = &v
	}
	o := c.org()
	o.mu.Lock()
	mb, err := o.resolveMailboxLocked(id)
	if err != nil {
		o.mu.Unlock()
		return c.orgErr(err)
	}
	if c.args.flag("WhatIf") {
		o.mu.Unlock()
		c.whatIf(fmt.Sprintf("Setting mailbox %q.", mb.name))
		return nil
	}
	changed, err := o.editMailboxLocked(mb, allowed, blocked, enabled)
	o.mu.Unlock()
	if err != nil {
		return c.orgErr(err)
	}
	if !changed {
		c.noChange(mb.name)
	}
	return nil
}

// checkOrgIdentity accepts the settings object's only identities.
func (c *call) checkOrgIdentity(o *Org) error {
	id, ok := c.args.str("Identity")
	if ok && !strings.EqualFold(strings.TrimSpace(id), orgSettingsName) && !strings.EqualFold(strings.TrimSpace(id), o.configDN) {
		return c.orgErr(notFound(id, o.dc))
	}
	return nil
}

func (o *Org) settingsRecLocked() settingsRec {
	return settingsRec{OrgSettings: o.settingsLocked(), dn: o.configDN, ota: o.otaMailInsert, whenChanged: o.settingsChanged}
}

func runGetOrgSettings(c *call) error {
	o := c.org()
	o.mu.RLock()
	if err := c.checkOrgIdentity(o); err != nil {
		o.mu.RUnlock()
		return err
	}
	rec := o.settingsRecLocked()
	o.mu.RUnlock()
	return emit(c, settingsSchema.selection(c.req.Select), &rec)
}

func runSetOrgSettings(c *call) error {
	if err := c.confirm(); err != nil {
		return err
	}
	var level *exchange.AccessLevel
	if v, ok := c.args.str("DefaultAccessLevel"); ok {
		l := exchange.AccessLevel(v)
		level = &l
	}
	var rcpt *ListChange
	if v, ok := c.args["AdminMailRecipients"].(ListChange); ok {
		rcpt = &v
	}
	strArg := func(name string) *string {
		if v, ok := c.args.str(name); ok {
			return &v
		}
		return nil
	}
	o := c.org()
	o.mu.Lock()
	if err := c.checkOrgIdentity(o); err != nil {
		o.mu.Unlock()
		return err
	}
	if c.args.flag("WhatIf") {
		o.mu.Unlock()
		c.whatIf(fmt.Sprintf("Setting ActiveSync organization settings %q.", orgSettingsName))
		return nil
	}
	before := o.settingsRecLocked()
	err := o.setOrgLocked(level, rcpt, strArg("UserMailInsert"), strArg("OtaNotificationMailInsert"))
	after := o.settingsRecLocked()
	o.mu.Unlock()
	if err != nil {
		return c.orgErr(err)
	}
	if before.DefaultAccessLevel == after.DefaultAccessLevel && slices.Equal(before.AdminMailRecipients, after.AdminMailRecipients) &&
		before.UserMailInsert == after.UserMailInsert && before.ota == after.ota {
		c.noChange(orgSettingsName)
	}
	return nil
}

func runGetRules(c *call) error {
	o := c.org()
	var recs []ruleRec
	o.mu.RLock()
	if id, ok := c.args.str("Identity"); ok {
		r, err := o.resolveRuleLocked(id)
		if err != nil {
			o.mu.RUnlock()
			return c.orgErr(err)
		}
		recs = append(recs, ruleRec{*r})
	} else {
		for _, r := range o.rules {
			recs = append(recs, ruleRec{*r})
		}
	}
	o.mu.RUnlock()
	sel := ruleSchema.selection(c.req.Select)
	for i := range recs {
		if err := emit(c, sel, &recs[i]); err != nil {
			return err
		}
	}
	return nil
}

func runNewRule(c *call) error {
	if err := c.confirm(); err != nil {
		return err
	}
	ch, _ := c.args.str("Characteristic")
	query, _ := c.args.str("QueryString")
	level, _ := c.args.str("AccessLevel")
	if c.args.flag("WhatIf") {
		c.whatIf(fmt.Sprintf("Creating ActiveSync device access rule %q.", query+" ("+ch+")"))
		return nil
	}
	o := c.org()
	o.mu.Lock()
	r, err := o.addRuleLocked(exchange.Characteristic(ch), query, exchange.AccessLevel(level))
	var rec ruleRec
	if err == nil {
		rec = ruleRec{*r}
	}
	o.mu.Unlock()
	if err != nil {
		return c.orgErr(err)
	}
	return emit(c, ruleSchema.selection(c.req.Select), &rec)
}

func runSetRule(c *call) error {
	if err := c.confirm(); err != nil {
		return err
	}
	id, _ := c.args.str("Identity")
	o := c.org()
	o.mu.Lock()
	r, err := o.resolveRuleLocked(id)
	if err != nil {
		o.mu.Unlock()
		return c.orgErr(err)
	}
	name := r.name
	if c.args.flag("WhatIf") {
		o.mu.Unlock()
		c.whatIf(fmt.Sprintf("Setting ActiveSync device access rule %q.", name))
		return nil
	}
	changed := false
	if v, ok := c.args.str("AccessLevel"); ok && exchange.AccessLevel(v) != r.level {
		r.level = exchange.AccessLevel(v)
		changed = true
	}
	o.mu.Unlock()
	if !changed {
		c.noChange(name)
	}
	return nil
}

func runRemoveRule(c *call) error {
	if err := c.confirm(); err != nil {
		return err
	}
	id, _ := c.args.str("Identity")
	o := c.org()
	o.mu.Lock()
	r, err := o.resolveRuleLocked(id)
	if err != nil {
		o.mu.Unlock()
		return c.orgErr(err)
	}
	if c.args.flag("WhatIf") {
		o.mu.Unlock()
		c.whatIf(fmt.Sprintf("Removing ActiveSync device access rule %q.", r.name))
		return nil
	}
	o.rules = slices.DeleteFunc(o.rules, func(x *rule) bool { return x == r })
	o.mu.Unlock()
	return nil
}

func runGetServers(s *schema[serverRec]) func(c *call) error {
	return func(c *call) error {
		o := c.org()
		o.mu.RLock()
		admin := fmt.Sprintf("CN=Servers,CN=Exchange Administrative Group (FYDIBOHF23SPDLT),CN=Administrative Groups,CN=%s,CN=Microsoft Exchange,CN=Services,CN=Configuration,DC=%s",
			escapeRDN(o.orgName), strings.ReplaceAll(o.domain, ".", ",DC="))
		var recs []serverRec
		id, filtered := c.args.str("Identity")
		for _, sv := range o.servers {
			if filtered && !strings.EqualFold(id, sv.Name) && !strings.EqualFold(id, sv.Fqdn) {
				continue
			}
			sv.ServerRole = slices.Clone(sv.ServerRole)
			recs = append(recs, serverRec{ExchangeServer: sv, dn: "CN=" + escapeRDN(sv.Name) + "," + admin})
		}
		dc := o.dc
		o.mu.RUnlock()
		if filtered && len(recs) == 0 {
			return c.orgErr(notFound(id, dc))
		}
		sel := s.selection(c.req.Select)
		for i := range recs {
			if err := emit(c, sel, &recs[i]); err != nil {
				return err
			}
		}
		return nil
	}
}

package pipeline

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/mdm"
)

// Action is what the policy does with a class of devices (unmanaged ones,
// a platform exception).
//
// The per-mailbox lists can only allow or block, so Quarantine is not a
// list entry: it means "leave the device in neither list, so that the
// organization's DefaultAccessLevel applies", and it is valid only when the
// policy's OrgDefault is Quarantine (the full sync asserts it). Block, in
// contrast, writes the device into ActiveSyncBlockedDeviceIDs: it wins over
// device access rules and the org default, the phone gets HTTP 403 and the
// user no quarantine mail. Default leaves the device to Exchange whatever
// the org default is.
type Action string

// Actions.
const (
	ActionDefault    Action = "default"
	ActionAllow      Action = "allow"
	ActionBlock      Action = "block"
	ActionQuarantine Action = "quarantine"
)

// ParseAction accepts an action case-insensitively.
func ParseAction(s string) (Action, error) {
	for _, a := range []Action{ActionDefault, ActionAllow, ActionBlock, ActionQuarantine} {
		if strings.EqualFold(s, string(a)) {
			return a, nil
		}
	}
	return "", fmt.Errorf("action %q: want default, allow, block or quarantine", s)
}

// decision maps an action onto the lists. Quarantine and Default both leave
// the device in neither list; Validate makes sure Quarantine is what the
// org default then does.
func (a Action) decision() Decision {
	switch a {
	case ActionAllow:
		return Allow
	case ActionBlock:
		return Block
	default:
		return Default
	}
}

// Untargeted is what the policy does with the devices of users it does not
// target (excluded, or in no included group).
type Untargeted string

// Untargeted actions. There is deliberately no Block: a user the policy
// exempts is never blocked by it.
const (
	// UntargetedAuto allows the devices when the org default would keep
	// them out (Block or Quarantine) and leaves them to Exchange otherwise.
	UntargetedAuto    Untargeted = "auto"
	UntargetedAllow   Untargeted = "allow"
	UntargetedDefault Untargeted = "default"
)

// ParseUntargeted accepts an untargeted action case-insensitively.
func ParseUntargeted(s string) (Untargeted, error) {
	for _, u := range []Untargeted{UntargetedAuto, UntargetedAllow, UntargetedDefault} {
		if strings.EqualFold(s, string(u)) {
			return u, nil
		}
	}
	return "", fmt.Errorf("untargeted action %q: want auto, allow or default", s)
}

// PlatformException is one device platform rule of the policy, matched
// exactly (case-insensitively) on one characteristic of the Exchange
// device, like an Exchange device access rule. The first matching exception
// wins.
type PlatformException struct {
	Characteristic exchange.Characteristic
	Value          string
	Action         Action
}

// matches reports whether the exception applies to d. XMSWLHeader is not a
// property of Get-MobileDevice, so Validate rejects it and it never matches.
func (e *PlatformException) matches(d *exchange.MobileDevice) bool {
	var v string
	switch e.Characteristic {
	case exchange.CharDeviceType:
		v = d.DeviceType
	case exchange.CharDeviceModel:
		v = d.DeviceModel
	case exchange.CharDeviceOS:
		v = d.DeviceOS
	case exchange.CharUserAgent:
		v = d.DeviceUserAgent
	default:
		return false
	}
	return v != "" && strings.EqualFold(v, e.Value)
}

// Policy defaults.
const (
	// DefaultGrace is how long after enrolment a device whose compliance is
	// still unknown is never blocked: Intune usually evaluates a new device
	// within minutes to hours.
	DefaultGrace = 24 * time.Hour
	// DefaultStaleAfter matches Intune's default compliance status validity
	// period (30 days).
	DefaultStaleAfter = 30 * 24 * time.Hour
)

// Policy is the access policy, the on-premises analogue of Intune's
// "Exchange on-premises access" settings. The zero value is a disabled
// policy, which changes nothing.
type Policy struct {
	// Enabled off means no change at all (row 1).
	Enabled bool
	// IncludedGroups are the MDM group ids whose members are targeted. A
	// user in no included group is not targeted: no group targets nobody.
	IncludedGroups []string
	// ExcludedGroups are exempt, even when also included.
	ExcludedGroups []string
	// OverrideDefaultRule always allows enrolled and compliant devices of
	// the device's own user, even when a platform exception says otherwise
	// (Intune's "default rule override").
	OverrideDefaultRule bool
	// Unmanaged is the action for devices the MDM cannot vouch for: not
	// enrolled, compliance not yet known, record stale, or enrolled by
	// another user. Empty means ActionDefault.
	Unmanaged Action
	// Untargeted is the action for the devices of exempt and untargeted
	// users. Empty means UntargetedAuto.
	Untargeted Untargeted
	// Grace after enrolment during which a device with unknown compliance
	// is never blocked. Zero disables the grace period.
	Grace time.Duration
	// StaleAfter is the age of an MDM record's last check-in after which
	// the record no longer counts as enrolment. Zero never treats a record
	// as stale.
	StaleAfter time.Duration
	// OrgDefault is the DefaultAccessLevel the policy declares for the
	// organization (and the full sync asserts).
	OrgDefault exchange.AccessLevel
	// PlatformExceptions, first match wins.
	PlatformExceptions []PlatformException
}

// DefaultPolicy returns a disabled policy with the documented defaults: it
// leaves unmanaged devices to an org default of Quarantine and allows the
// devices of exempt users.
func DefaultPolicy() Policy {
	return Policy{
		Unmanaged:  ActionDefault,
		Untargeted: UntargetedAuto,
		Grace:      DefaultGrace,
		StaleAfter: DefaultStaleAfter,
		OrgDefault: exchange.LevelQuarantine,
	}
}

// Validate checks the policy and names the first bad field, relative to the
// policy (a config loader prefixes its own path).
func (p *Policy) Validate() error {
	if p.Enabled && len(p.IncludedGroups) == 0 {
		return errors.New("included_groups: at least one group is required when the policy is enabled (no group targets nobody)")
	}
	for i, g := range p.IncludedGroups {
		if strings.TrimSpace(g) == "" {
			return fmt.Errorf("included_groups[%d]: empty group id", i)
		}
	}
	for i, g := range p.ExcludedGroups {
		if strings.TrimSpace(g) == "" {
			return fmt.Errorf("excluded_groups[%d]: empty group id", i)
		}
	}
	if _, err := exchange.ParseAccessLevel(string(p.OrgDefault)); err != nil {
		return fmt.Errorf("org_default: %w", err)
	}
	if err := p.checkAction(p.Unmanaged, true); err != nil {
		return fmt.Errorf("unmanaged: %w", err)
	}
	switch p.Untargeted {
	case "", UntargetedAuto, UntargetedAllow, UntargetedDefault:
	default:
		return fmt.Errorf("untargeted: %q: want auto, allow or default", p.Untargeted)
	}
	if p.Grace < 0 {
		return fmt.Errorf("grace: must not be negative, got %s", p.Grace)
	}
	if p.StaleAfter < 0 {
		return fmt.Errorf("stale_after: must not be negative, got %s", p.StaleAfter)
	}
	for i := range p.PlatformExceptions {
		e := &p.PlatformExceptions[i]
		switch e.Characteristic {
		case exchange.CharDeviceType, exchange.CharDeviceModel, exchange.CharDeviceOS, exchange.CharUserAgent:
		default:
			return fmt.Errorf("platform_exceptions[%d].characteristic: %q: want DeviceType, DeviceModel, DeviceOS or UserAgent", i, e.Characteristic)
		}
		if strings.TrimSpace(e.Value) == "" {
			return fmt.Errorf("platform_exceptions[%d].value: empty", i)
		}
		if err := p.checkAction(e.Action, false); err != nil {
			return fmt.Errorf("platform_exceptions[%d].action: %w", i, err)
		}
	}
	return nil
}

func (p *Policy) checkAction(a Action, emptyOK bool) error {
	switch a {
	case ActionDefault, ActionAllow, ActionBlock:
		return nil
	case "":
		if emptyOK {
			return nil
		}
		return errors.New("empty: want default, allow, block or quarantine")
	case ActionQuarantine:
		if p.OrgDefault != exchange.LevelQuarantine {
			return fmt.Errorf("quarantine leaves the device to the org default, which is %s here: set org_default = Quarantine, or use block or default", p.OrgDefault)
		}
		return nil
	default:
		return fmt.Errorf("%q: want default, allow, block or quarantine", a)
	}
}

// untargeted resolves the untargeted action to a decision.
func (p *Policy) untargeted() Decision {
	switch p.Untargeted {
	case UntargetedAllow:
		return Allow
	case UntargetedDefault:
		return Default
	default: // auto
		if p.OrgDefault == exchange.LevelBlock || p.OrgDefault == exchange.LevelQuarantine {
			return Allow
		}
		return Default
	}
}

// Decision is where a device belongs in its mailbox's lists.
type Decision string

// Decisions.
const (
	// Allow: in ActiveSyncAllowedDeviceIDs, not in ActiveSyncBlockedDeviceIDs.
	Allow Decision = "Allow"
	// Block: in ActiveSyncBlockedDeviceIDs, not in ActiveSyncAllowedDeviceIDs.
	Block Decision = "Block"
	// Default: in neither list; device access rules and the org default decide.
	Default Decision = "Default"
	// NoChange: leave the device's entries exactly as they are.
	NoChange Decision = "NoChange"
)

// Reason says which row of the decision table (or which conflict) decided.
// Reasons are bounded and serve as metric labels.
type Reason string

// Reasons, in the order of the decision table.
const (
	ReasonDisabled    Reason = "Disabled"    // row 1
	ReasonExempt      Reason = "Exempt"      // row 2
	ReasonNotTargeted Reason = "NotTargeted" // row 3
	// ReasonScopeUnknown: whether the user is targeted cannot be told
	// (row 3a): the directory withheld the group members' UPN and mail
	// and no device record of the user carries the id to join on.
	ReasonScopeUnknown      Reason = "ScopeUnknown"
	ReasonInvalidDeviceID   Reason = "InvalidDeviceId"   // row 4
	ReasonCompliant         Reason = "Compliant"         // rows 5 and 7
	ReasonPlatformRule      Reason = "PlatformRule"      // row 6
	ReasonNotCompliant      Reason = "NotCompliant"      // row 8
	ReasonPendingEvaluation Reason = "PendingEvaluation" // row 9
	ReasonStale             Reason = "Stale"             // row 10
	ReasonUserMismatch      Reason = "UserMismatch"      // row 11
	ReasonNotEnrolled       Reason = "NotEnrolled"       // row 12
	// ReasonAdminOverride: an administrator's list entry contradicts the
	// decision; the plan yields to it (see Conflict).
	ReasonAdminOverride Reason = "AdminOverride"
	// ReasonPartnershipGone: an entry we wrote for a device id that no
	// longer has a partnership on the mailbox; a complete plan removes it.
	ReasonPartnershipGone Reason = "PartnershipGone"
)

// Reasons lists every Reason, for metrics and status pages.
var Reasons = reasonList[:]

var reasonList = [...]Reason{
	ReasonDisabled, ReasonExempt, ReasonNotTargeted, ReasonScopeUnknown, ReasonInvalidDeviceID,
	ReasonCompliant, ReasonPlatformRule, ReasonNotCompliant, ReasonPendingEvaluation,
	ReasonStale, ReasonUserMismatch, ReasonNotEnrolled, ReasonAdminOverride, ReasonPartnershipGone,
}

// Decisions lists every Decision.
var Decisions = decisionList[:]

var decisionList = [...]Decision{Allow, Block, Default, NoChange}

// User identifies the owner of a mailbox.
type User struct {
	PrimarySmtp string // CASMailbox.PrimarySmtpAddress
	UPN         string // user principal name, if known
	// ID is the user's Entra object id when the MDM snapshot ties one to
	// the addresses above (Scope.UserID), else "".
	ID string
}

// Membership is a user's place in the policy's scope.
type Membership struct {
	Excluded bool // member of an excluded group (wins over Included)
	Included bool // member of an included group
	// Unknown: whether the user is targeted cannot be told (a group has
	// members that match no mailbox, and the user matches no member); see
	// Scope and ReasonScopeUnknown.
	Unknown bool
}

// Input is everything Decide needs to know about one device partnership.
type Input struct {
	Device exchange.MobileDevice
	User   User
	Scope  Membership
	// Record is the MDM record joined on the EAS device id, nil if none.
	Record *mdm.Record
	// SameUser reports whether Record belongs to the mailbox's user (see
	// MatchUser). A record that names no user is not the same user.
	SameUser bool
}

// Compliance classes of mdm.Compliance.
func compliant(c mdm.Compliance) bool {
	return c == mdm.ComplianceCompliant || c == mdm.ComplianceInGracePeriod
}

func notCompliant(c mdm.Compliance) bool {
	return c == mdm.ComplianceNoncompliant || c == mdm.ComplianceConflict || c == mdm.ComplianceError
}

// Decide applies the decision table of DESIGN.md §4 to one device; the first
// matching row wins:
//
//	 1 policy disabled                                   → NoChange         Disabled
//	 2 user in an excluded group                         → untargeted       Exempt
//	 3 user not in an included group                     → untargeted       NotTargeted
//	3a scope unknown                                     → the targeted and
//	                                                       untargeted outcome
//	                                                       if they agree,
//	                                                       else Default     ScopeUnknown
//	 4 DeviceId fails exchange.ValidDeviceID             → NoChange         InvalidDeviceId
//	 5 enrolled, compliant, same user, override on       → Allow            Compliant
//	 6 a platform exception matches                      → its action       PlatformRule
//	 7 enrolled, compliant, same user                    → Allow            Compliant
//	 8 enrolled, not compliant                           → Block            NotCompliant
//	 9 enrolled, compliance unknown                      → unmanaged, never
//	                                                       Block in grace   PendingEvaluation
//	10 record older than StaleAfter                      → unmanaged        Stale
//	11 record of another user                            → unmanaged        UserMismatch
//	12 no record                                         → unmanaged        NotEnrolled
//
// "Enrolled" means a record exists and is not stale: a record whose last
// check-in is older than StaleAfter (a zero LastSyncAt is unknown, not
// stale) is no evidence of anything, which is
// what makes row 10 reachable at all (a stale compliant record would
// otherwise be allowed forever by row 7). Compliant is compliant or
// inGracePeriod; not compliant is noncompliant, conflict or error; every
// other state (unknown, configManager, anything new) counts as unknown.
// Within Grace of enrolment, or when the enrolment time is unknown, row 9
// turns Block into Default: a device is never blocked on a guess. Row 8
// does not ask whose record it is: a device id the MDM reports as
// noncompliant is blocked on any mailbox.
//
// Row 3a is the conservative answer for a user whose scope cannot be told:
// Decide works out what the policy would do with the device of a targeted
// user and what it does with an untargeted one; when both agree that is
// the decision, otherwise Default, so that Exchange's own rules and org
// default decide. A guess never opens mail access (the untargeted Allow)
// and never blocks (untargeted users are never blocked), in the same way
// row 9 never blocks on a guess.
//
// Decide is pure, safe for concurrent use and does not allocate. A nil
// policy is a disabled one.
func Decide(p *Policy, in Input, now time.Time) (Decision, Reason) {
	switch {
	case p == nil || !p.Enabled: // 1
		return NoChange, ReasonDisabled
	case in.Scope.Excluded: // 2
		return p.untargeted(), ReasonExempt
	case in.Scope.Unknown: // 3a
		known := in
		known.Scope = Membership{Included: true}
		t, why := Decide(p, known, now)
		switch u := p.untargeted(); {
		case t == NoChange:
			return t, why // an invalid DeviceId
		case t == u:
			return t, ReasonScopeUnknown
		default:
			return Default, ReasonScopeUnknown
		}
	case !in.Scope.Included: // 3
		return p.untargeted(), ReasonNotTargeted
	case !exchange.ValidDeviceID(in.Device.DeviceId): // 4
		return NoChange, ReasonInvalidDeviceID
	}
	rec := in.Record
	// A zero LastSyncAt is unknown (an export without the column), not stale.
	stale := rec != nil && p.StaleAfter > 0 && !rec.LastSyncAt.IsZero() && now.Sub(rec.LastSyncAt) > p.StaleAfter
	enrolled := rec != nil && !stale
	good := enrolled && compliant(rec.Compliance) && in.SameUser
	if good && p.OverrideDefaultRule { // 5
		return Allow, ReasonCompliant
	}
	for i := range p.PlatformExceptions { // 6
		if e := &p.PlatformExceptions[i]; e.matches(&in.Device) {
			return e.Action.decision(), ReasonPlatformRule
		}
	}
	unmanaged := p.Unmanaged.decision()
	switch {
	case good: // 7
		return Allow, ReasonCompliant
	case enrolled && notCompliant(rec.Compliance): // 8
		return Block, ReasonNotCompliant
	case enrolled && !compliant(rec.Compliance): // 9
		if unmanaged == Block && p.Grace > 0 && (rec.EnrolledAt.IsZero() || now.Before(rec.EnrolledAt.Add(p.Grace))) {
			return Default, ReasonPendingEvaluation
		}
		return unmanaged, ReasonPendingEvaluation
	case stale: // 10
		return unmanaged, ReasonStale
	case rec != nil: // 11: enrolled and compliant, but another user's
		return unmanaged, ReasonUserMismatch
	default: // 12
		return unmanaged, ReasonNotEnrolled
	}
}

// MatchUser reports whether the MDM record belongs to u: its userId is
// u's object id, or its UPN equals the user's UPN or primary SMTP address,
// or one of its e-mail addresses equals the primary SMTP address
// (case-insensitively). The id catches a record whose UPN is older than a
// rename. A record or user without any of these never matches.
func MatchUser(rec *mdm.Record, u User) bool {
	if rec == nil {
		return false
	}
	if u.ID != "" && rec.UserID != "" && strings.EqualFold(u.ID, rec.UserID) {
		return true
	}
	if rec.UserPrincipalName != "" {
		if u.UPN != "" && strings.EqualFold(rec.UserPrincipalName, u.UPN) {
			return true
		}
		if u.PrimarySmtp != "" && strings.EqualFold(rec.UserPrincipalName, u.PrimarySmtp) {
			return true
		}
	}
	if u.PrimarySmtp == "" {
		return false
	}
	for addr := range strings.FieldsFuncSeq(rec.Email, func(r rune) bool { return r == ';' || r == ',' || r == ' ' }) {
		if strings.EqualFold(strings.TrimPrefix(strings.TrimPrefix(addr, "SMTP:"), "smtp:"), u.PrimarySmtp) {
			return true
		}
	}
	return false
}

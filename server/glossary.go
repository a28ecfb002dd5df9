package server

import (
	"bytes"
	"fmt"
	"strings"
)

// Term is one word of the glossary the status page links to (/glossary)
// and the README's "Glossary" section is generated from
// (TestReadmeGlossary).
type Term struct {
	Name string
	Text string // plain text; {default} is replaced by what Default means now
}

// TermGroup is one kind of word: decisions, reasons, …
type TermGroup struct {
	ID, Title, Intro string
	Terms            []Term
}

// Glossary explains every decision, reason (the policy table of DESIGN §4,
// pipeline.Reasons), MDM compliance value (Graph complianceState) and
// Exchange access state (DeviceAccessState) the page and the API show.
var Glossary = []TermGroup{
	{ID: "decisions", Title: "Decisions", Intro: "Where the connector keeps a device id in its mailbox's ActiveSyncAllowedDeviceIDs and ActiveSyncBlockedDeviceIDs. The lists win over device access rules, which win over the organization's DefaultAccessLevel.", Terms: []Term{
		{"Allow", "In the allowed list, not in the blocked list: the phone syncs mail."},
		{"Block", "In the blocked list, not in the allowed list: Exchange refuses the phone."},
		{"Default", "In neither list: left to Exchange's own rules. A device access rule that matches the phone decides; otherwise the organization's DefaultAccessLevel does{default}. The page and the API show it as \"Default (Quarantine)\" and so on."},
		{"NoChange", "The connector leaves the device's entries exactly as they are (the policy is disabled, or the DeviceId is invalid)."},
	}},
	{ID: "reasons", Title: "Reasons", Intro: "Which row of the decision table decided (the first that matches wins), or which conflict.", Terms: []Term{
		{"Disabled", "The policy is disabled: nothing is changed."},
		{"Exempt", "The user is in an excluded group: the untargeted action applies (Allow when the organization's default would keep the phone out, else Default)."},
		{"NotTargeted", "The user is in no included group: the untargeted action applies."},
		{"ScopeUnknown", "Whether the user is targeted cannot be told: the directory withheld the group members' UPN and mail, and no MDM record of the user carries the id to join on. The device is left to Default (or the untargeted action when that is the same)."},
		{"InvalidDeviceId", "The DeviceId Exchange reports is not 1 to 64 letters and digits: it is never written to a list; the device is reported and left alone."},
		{"Compliant", "Enrolled in the MDM, compliant (or in its grace period) and registered to the same user: Allow."},
		{"PlatformRule", "The device's type, model or OS matches a platform exception of the policy: the exception's action."},
		{"NotCompliant", "Enrolled, and the MDM reports it noncompliant, in conflict or in error: Block."},
		{"PendingEvaluation", "Enrolled, but the MDM has not evaluated it yet (compliance unknown): the unmanaged action, but never Block within the grace period after enrolment."},
		{"Stale", "The MDM record's last check-in is older than stale_after: the unmanaged action."},
		{"UserMismatch", "The MDM registers the EAS id to another user (a cloned id, or a phone that changed hands): the unmanaged action."},
		{"NotEnrolled", "No MDM record carries the device's EAS id: the unmanaged action (by default Default, so Exchange's default applies)."},
		{"AdminOverride", "An administrator's own list entry contradicts the decision: the connector yields and reports it."},
		{"PartnershipGone", "An entry the connector wrote for a device that no longer has a partnership on the mailbox: a full sync removes it."},
	}},
	{ID: "compliance", Title: "MDM compliance", Intro: "The MDM record's complianceState (Microsoft Graph managedDevice); empty when the device is not enrolled.", Terms: []Term{
		{"compliant", "Meets every compliance policy: counts as compliant."},
		{"inGracePeriod", "Noncompliant but inside the policy's grace period: counts as compliant."},
		{"noncompliant", "Fails a compliance policy: counts as not compliant (Block)."},
		{"conflict", "Compliance policies conflict: counts as not compliant."},
		{"error", "The evaluation failed: counts as not compliant."},
		{"unknown", "Not evaluated yet: PendingEvaluation."},
		{"configManager", "Managed by Configuration Manager (co-management): neither compliant nor not compliant, so PendingEvaluation."},
	}},
	{ID: "exchange", Title: "Exchange access states", Intro: "DeviceAccessState as Get-MobileDevice reports it: the state Exchange stored at the phone's last request. The API's exchangeStateBefore is this value as the sync read it, before its own write; the phone gets the new state at its next request.", Terms: []Term{
		{"Allowed", "Exchange lets the phone sync."},
		{"Blocked", "Exchange refuses the phone."},
		{"Quarantined", "Exchange holds the phone in quarantine: it syncs nothing until it is allowed (by a list entry, a rule or an administrator)."},
		{"DeviceDiscovery", "Exchange is still identifying the phone (the first minutes of a partnership)."},
		{"Unknown", "Exchange reports no state, or one the connector does not know."},
	}},
}

// glossaryText fills {default} in a term's text.
func glossaryText(text, defaultMeans string) string {
	d := ""
	if defaultMeans != "" {
		d = " (here: " + defaultMeans + ")"
	}
	return strings.ReplaceAll(text, "{default}", d)
}

// GlossaryMarkdown is the README's glossary section.
func GlossaryMarkdown() []byte {
	var b bytes.Buffer
	for _, g := range Glossary {
		fmt.Fprintf(&b, "\n**%s.** %s\n\n", g.Title, g.Intro)
		for _, t := range g.Terms {
			fmt.Fprintf(&b, "- `%s`: %s\n", t.Name, glossaryText(t.Text, ""))
		}
	}
	return b.Bytes()
}

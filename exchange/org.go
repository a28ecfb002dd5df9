package exchange

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"unicode/utf16"

	"github.com/easconnector/easconnector/runspace"
)

// OrgSettings reads the organization's ActiveSync settings
// (Get-ActiveSyncOrganizationSettings), which must be exactly one object.
func (c *Client) OrgSettings(ctx context.Context) (OrgSettings, error) {
	call := runspace.Call{Cmd: cmdGetOrgSettings, Select: orgSettingsProps}
	all, err := readAll[OrgSettings](ctx, c, call)
	if err != nil {
		return OrgSettings{}, fmt.Errorf("get activesync organization settings: %w", err)
	}
	if len(all) != 1 {
		return OrgSettings{}, fmt.Errorf("get activesync organization settings: got %d objects, want 1", len(all))
	}
	return all[0], nil
}

// OrgSettingsUpdate is a change to the organization's ActiveSync settings.
// A nil field is left unchanged.
type OrgSettingsUpdate struct {
	DefaultAccessLevel *AccessLevel
	// AdminMailRecipients replaces the list; an empty, non-nil slice clears it.
	AdminMailRecipients []string
	// UserMailInsert replaces the quarantine mail footer (at most
	// MaxUserMailInsert UTF-16 code units, as .NET counts); "" clears it.
	UserMailInsert *string
}

// SetOrgSettings applies u (Set-ActiveSyncOrganizationSettings) in one call.
// It sends nothing and returns an error if u changes nothing or holds a
// value Exchange would refuse.
func (c *Client) SetOrgSettings(ctx context.Context, u OrgSettingsUpdate) error {
	args := map[string]any{}
	if u.DefaultAccessLevel != nil {
		if !validLevel(*u.DefaultAccessLevel) {
			return fmt.Errorf("set activesync organization settings: DefaultAccessLevel %s: want Allow, Block or Quarantine", quote(string(*u.DefaultAccessLevel)))
		}
		args["DefaultAccessLevel"] = string(*u.DefaultAccessLevel)
	}
	if u.AdminMailRecipients != nil {
		for _, a := range u.AdminMailRecipients {
			if err := checkSMTPAddress(a); err != nil {
				return fmt.Errorf("set activesync organization settings: AdminMailRecipients: %w", err)
			}
		}
		if len(u.AdminMailRecipients) == 0 {
			args["AdminMailRecipients"] = runspace.ClearList{} // binds $null, which clears a multi-valued property
		} else {
			args["AdminMailRecipients"] = slices.Clone(u.AdminMailRecipients)
		}
	}
	if u.UserMailInsert != nil {
		s := *u.UserMailInsert
		if n := len(utf16.Encode([]rune(s))); n > MaxUserMailInsert {
			return fmt.Errorf("set activesync organization settings: UserMailInsert is %d characters, Exchange allows %d", n, MaxUserMailInsert)
		}
		if strings.ContainsRune(s, 0) {
			return errors.New("set activesync organization settings: UserMailInsert contains a NUL character")
		}
		if s == "" {
			args["UserMailInsert"] = nil
		} else {
			args["UserMailInsert"] = s
		}
	}
	if len(args) == 0 {
		return errors.New("set activesync organization settings: empty update")
	}
	call := runspace.Call{Cmd: cmdSetOrgSettings, Args: args, Idempotent: true}
	if err := c.write(ctx, call); err != nil {
		return fmt.Errorf("set activesync organization settings: %w", err)
	}
	return nil
}

// checkSMTPAddress accepts a bare address (local@domain), nothing else.
func checkSMTPAddress(s string) error {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return fmt.Errorf("%s is not a bare SMTP address", quote(s))
	}
	return nil
}

func validLevel(l AccessLevel) bool {
	return l == LevelAllow || l == LevelBlock || l == LevelQuarantine
}

var knownCharacteristics = []Characteristic{CharDeviceType, CharDeviceModel, CharDeviceOS, CharUserAgent, CharXMSWLHeader}

// DeviceAccessRules reads every ActiveSync device access rule.
func (c *Client) DeviceAccessRules(ctx context.Context) ([]DeviceAccessRule, error) {
	call := runspace.Call{Cmd: cmdGetDeviceAccessRule, Select: ruleProps}
	rules, err := readAll[DeviceAccessRule](ctx, c, call)
	if err != nil {
		return nil, fmt.Errorf("get activesync device access rules: %w", err)
	}
	return rules, nil
}

// NewDeviceAccessRule creates a rule that gives devices whose characteristic
// ch equals query (exactly; Exchange has no wildcards) the access level. It is
// not idempotent: Exchange refuses a second rule for the same ch and query.
func (c *Client) NewDeviceAccessRule(ctx context.Context, ch Characteristic, query string, level AccessLevel) error {
	if !slices.Contains(knownCharacteristics, ch) {
		return fmt.Errorf("new activesync device access rule: unknown characteristic %s", quote(string(ch)))
	}
	if !validLevel(level) {
		return fmt.Errorf("new activesync device access rule %s %s: access level %s: want Allow, Block or Quarantine", ch, quote(query), quote(string(level)))
	}
	if strings.TrimSpace(query) == "" || strings.ContainsFunc(query, isControl) {
		return fmt.Errorf("new activesync device access rule %s: query string %s is empty or holds control characters", ch, quote(query))
	}
	call := runspace.Call{
		Cmd:  cmdNewDeviceAccessRule,
		Args: map[string]any{"Characteristic": string(ch), "QueryString": query, "AccessLevel": string(level)},
	}
	if err := c.write(ctx, call); err != nil {
		return fmt.Errorf("new activesync device access rule %s %s: %w", ch, quote(query), err)
	}
	return nil
}

// SetDeviceAccessRule changes the access level of the rule identity.
func (c *Client) SetDeviceAccessRule(ctx context.Context, identity string, level AccessLevel) error {
	if err := checkRuleIdentity(identity); err != nil {
		return fmt.Errorf("set activesync device access rule: %w", err)
	}
	if !validLevel(level) {
		return fmt.Errorf("set activesync device access rule %s: access level %s: want Allow, Block or Quarantine", quote(identity), quote(string(level)))
	}
	call := runspace.Call{
		Cmd:        cmdSetDeviceAccessRule,
		Args:       map[string]any{"Identity": identity, "AccessLevel": string(level)},
		Idempotent: true,
	}
	if err := c.write(ctx, call); err != nil {
		return fmt.Errorf("set activesync device access rule %s: %w", quote(identity), err)
	}
	return nil
}

// RemoveDeviceAccessRule deletes the rule identity. -Confirm:$false is sent
// because a non-interactive session cannot answer Exchange's prompt. It is
// not idempotent: a repeat fails because the rule is gone.
func (c *Client) RemoveDeviceAccessRule(ctx context.Context, identity string) error {
	if err := checkRuleIdentity(identity); err != nil {
		return fmt.Errorf("remove activesync device access rule: %w", err)
	}
	call := runspace.Call{
		Cmd:  cmdRemoveDeviceAccessRule,
		Args: map[string]any{"Identity": identity, "Confirm": false},
	}
	if err := c.write(ctx, call); err != nil {
		return fmt.Errorf("remove activesync device access rule %s: %w", quote(identity), err)
	}
	return nil
}

func checkRuleIdentity(id string) error {
	if strings.TrimSpace(id) == "" {
		return errors.New("empty rule identity")
	}
	if strings.ContainsFunc(id, isControl) {
		return fmt.Errorf("rule identity %s contains control characters", quote(id))
	}
	return nil
}

// ExchangeServers reads the organization's Exchange servers
// (Get-ExchangeServer).
func (c *Client) ExchangeServers(ctx context.Context) ([]ExchangeServer, error) {
	call := runspace.Call{Cmd: cmdGetExchangeServer, Select: serverProps}
	servers, err := readAll[ExchangeServer](ctx, c, call)
	if err != nil {
		return nil, fmt.Errorf("get exchange servers: %w", err)
	}
	return servers, nil
}

// ClientAccessServers reads the organization's Client Access services
// (Get-ClientAccessService). Only Name and Fqdn are set: the service objects
// carry no role, version or site.
func (c *Client) ClientAccessServers(ctx context.Context) ([]ExchangeServer, error) {
	call := runspace.Call{Cmd: cmdGetClientAccessService, Select: casServiceProps}
	servers, err := readAll[ExchangeServer](ctx, c, call)
	if err != nil {
		return nil, fmt.Errorf("get client access services: %w", err)
	}
	return servers, nil
}

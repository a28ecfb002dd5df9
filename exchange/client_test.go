package exchange

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/runspace"
)

func ptr[T any](v T) *T { return &v }

var (
	wantDeviceSelect = []string{"Identity", "DistinguishedName", "DeviceId", "DeviceType", "DeviceModel", "DeviceOS",
		"DeviceUserAgent", "UserDisplayName", "FirstSyncTime", "DeviceAccessState", "DeviceAccessStateReason", "ClientType"}
	wantCASSelect = []string{"Identity", "Guid", "DistinguishedName", "Name", "DisplayName", "PrimarySmtpAddress",
		"SamAccountName", "ActiveSyncEnabled", "HasActiveSyncDevicePartnership", "ActiveSyncAllowedDeviceIDs", "ActiveSyncBlockedDeviceIDs"}
)

// TestCallsSent pins the exact call (cmdlet, arguments, properties,
// idempotency) of every method.
func TestCallsSent(t *testing.T) {
	noDevice := func(MobileDevice, error) error { return nil }
	noMailbox := func(CASMailbox) error { return nil }
	after := time.Date(2024, 3, 9, 20, 5, 7, 999, time.FixedZone("CET", 3600))
	tests := []struct {
		name string
		run  func(context.Context, *Client) error
		want runspace.Call
	}{
		{"MobileDevices/all",
			func(ctx context.Context, c *Client) error { return c.MobileDevices(ctx, DeviceFilter{}, noDevice) },
			runspace.Call{Cmd: "Get-MobileDevice", Args: map[string]any{"ResultSize": "Unlimited"}, Select: wantDeviceSelect, Idempotent: true}},
		{"MobileDevices/mailbox",
			func(ctx context.Context, c *Client) error {
				return c.MobileDevices(ctx, DeviceFilter{Mailbox: "CN=O'Brien\\, Pat,OU=Users,DC=contoso,DC=com"}, noDevice)
			},
			runspace.Call{Cmd: "Get-MobileDevice", Args: map[string]any{"ResultSize": "Unlimited",
				"Mailbox": "CN=O'Brien\\, Pat,OU=Users,DC=contoso,DC=com"}, Select: wantDeviceSelect, Idempotent: true}},
		{"MobileDevices/quick",
			func(ctx context.Context, c *Client) error {
				f := DeviceFilter{FirstSyncAfter: after, States: []AccessState{AccessQuarantined, AccessDeviceDiscovery, AccessQuarantined}}
				return c.MobileDevices(ctx, f, noDevice)
			},
			runspace.Call{Cmd: "Get-MobileDevice", Args: map[string]any{"ResultSize": "Unlimited",
				// 19:05:07 UTC minus the 14h margin, truncated to the second.
				"Filter": "FirstSyncTime -gt '03/09/2024 05:05:07' -and (DeviceAccessState -eq 'Quarantined' -or DeviceAccessState -eq 'DeviceDiscovery')"},
				Select: wantDeviceSelect, Idempotent: true}},
		{"MobileDevices/one state",
			func(ctx context.Context, c *Client) error {
				return c.MobileDevices(ctx, DeviceFilter{States: []AccessState{AccessBlocked}}, noDevice)
			},
			runspace.Call{Cmd: "Get-MobileDevice", Args: map[string]any{"ResultSize": "Unlimited", "Filter": "DeviceAccessState -eq 'Blocked'"},
				Select: wantDeviceSelect, Idempotent: true}},
		{"CountMobileDevices/limit",
			func(ctx context.Context, c *Client) error { _, err := c.CountMobileDevices(ctx, 1000); return err },
			runspace.Call{Cmd: "Get-MobileDevice", Args: map[string]any{"ResultSize": 1000}, Select: []string{"DeviceId"}, Idempotent: true}},
		{"CountMobileDevices/all",
			func(ctx context.Context, c *Client) error { _, err := c.CountMobileDevices(ctx, 0); return err },
			runspace.Call{Cmd: "Get-MobileDevice", Args: map[string]any{"ResultSize": "Unlimited"}, Select: []string{"DeviceId"}, Idempotent: true}},
		{"CASMailboxes/all",
			func(ctx context.Context, c *Client) error { return c.CASMailboxes(ctx, nil, noMailbox) },
			runspace.Call{Cmd: "Get-CASMailbox", Args: map[string]any{"ResultSize": "Unlimited", "Filter": "HasActiveSyncDevicePartnership -eq $true"},
				Select: wantCASSelect, Idempotent: true}},
		{"CASMailboxes/some",
			func(ctx context.Context, c *Client) error {
				return c.CASMailboxes(ctx, []string{"CN=O'Brien,DC=x", "CN=Zoë $(x),DC=x", "cn=o'brien,dc=x"}, noMailbox)
			},
			runspace.Call{Cmd: "Get-CASMailbox", Args: map[string]any{"ResultSize": "Unlimited",
				"Filter": "DistinguishedName -eq 'CN=O''Brien,DC=x' -or DistinguishedName -eq 'CN=Zoë $(x),DC=x'"},
				Select: wantCASSelect, Idempotent: true}},
		{"CASMailboxes/typographic quote",
			func(ctx context.Context, c *Client) error {
				return c.CASMailboxes(ctx, []string{"CN=O’Brien,DC=x"}, noMailbox)
			},
			runspace.Call{Cmd: "Get-CASMailbox", Args: map[string]any{"Identity": "CN=O’Brien,DC=x"},
				Select: wantCASSelect, Idempotent: true}},
		{"SetCASMailbox/both",
			func(ctx context.Context, c *Client) error {
				return c.SetCASMailbox(ctx, "CN=Pat,DC=x",
					runspace.ListEdit{Add: []string{"ApplA1", "ApplA1"}, Remove: []string{"B2"}},
					runspace.ListEdit{Add: []string{"C3"}})
			},
			runspace.Call{Cmd: "Set-CASMailbox", Args: map[string]any{"Identity": "CN=Pat,DC=x",
				"ActiveSyncAllowedDeviceIDs": runspace.ListEdit{Add: []string{"ApplA1"}, Remove: []string{"B2"}},
				"ActiveSyncBlockedDeviceIDs": runspace.ListEdit{Add: []string{"C3"}}}, Idempotent: true}},
		{"SetCASMailbox/blocked only",
			func(ctx context.Context, c *Client) error {
				return c.SetCASMailbox(ctx, "pat@contoso.com", runspace.ListEdit{}, runspace.ListEdit{Remove: []string{"C3"}})
			},
			runspace.Call{Cmd: "Set-CASMailbox", Args: map[string]any{"Identity": "pat@contoso.com",
				"ActiveSyncBlockedDeviceIDs": runspace.ListEdit{Remove: []string{"C3"}}}, Idempotent: true}},
		{"OrgSettings",
			func(ctx context.Context, c *Client) error { _, err := c.OrgSettings(ctx); return err },
			runspace.Call{Cmd: "Get-ActiveSyncOrganizationSettings",
				Select: []string{"Identity", "DefaultAccessLevel", "AdminMailRecipients", "UserMailInsert"}, Idempotent: true}},
		{"SetOrgSettings/all",
			func(ctx context.Context, c *Client) error {
				return c.SetOrgSettings(ctx, OrgSettingsUpdate{DefaultAccessLevel: ptr(LevelQuarantine),
					AdminMailRecipients: []string{"eas-admins@contoso.com"}, UserMailInsert: ptr("Enroll at https://portal.manage.microsoft.com")})
			},
			runspace.Call{Cmd: "Set-ActiveSyncOrganizationSettings", Args: map[string]any{"DefaultAccessLevel": "Quarantine",
				"AdminMailRecipients": []string{"eas-admins@contoso.com"}, "UserMailInsert": "Enroll at https://portal.manage.microsoft.com"},
				Idempotent: true}},
		{"SetOrgSettings/clear",
			func(ctx context.Context, c *Client) error {
				return c.SetOrgSettings(ctx, OrgSettingsUpdate{AdminMailRecipients: []string{}, UserMailInsert: ptr("")})
			},
			runspace.Call{Cmd: "Set-ActiveSyncOrganizationSettings", Args: map[string]any{"AdminMailRecipients": runspace.ClearList{}, "UserMailInsert": nil},
				Idempotent: true}},
		{"DeviceAccessRules",
			func(ctx context.Context, c *Client) error { _, err := c.DeviceAccessRules(ctx); return err },
			runspace.Call{Cmd: "Get-ActiveSyncDeviceAccessRule",
				Select: []string{"Identity", "Name", "Characteristic", "QueryString", "AccessLevel"}, Idempotent: true}},
		{"NewDeviceAccessRule",
			func(ctx context.Context, c *Client) error {
				return c.NewDeviceAccessRule(ctx, CharDeviceType, "WindowsMail", LevelBlock)
			},
			runspace.Call{Cmd: "New-ActiveSyncDeviceAccessRule",
				Args: map[string]any{"Characteristic": "DeviceType", "QueryString": "WindowsMail", "AccessLevel": "Block"}}},
		{"SetDeviceAccessRule",
			func(ctx context.Context, c *Client) error {
				return c.SetDeviceAccessRule(ctx, "WindowsMail (DeviceType)", LevelAllow)
			},
			runspace.Call{Cmd: "Set-ActiveSyncDeviceAccessRule",
				Args: map[string]any{"Identity": "WindowsMail (DeviceType)", "AccessLevel": "Allow"}, Idempotent: true}},
		{"RemoveDeviceAccessRule",
			func(ctx context.Context, c *Client) error {
				return c.RemoveDeviceAccessRule(ctx, "WindowsMail (DeviceType)")
			},
			runspace.Call{Cmd: "Remove-ActiveSyncDeviceAccessRule",
				Args: map[string]any{"Identity": "WindowsMail (DeviceType)", "Confirm": false}}},
		{"ExchangeServers",
			func(ctx context.Context, c *Client) error { _, err := c.ExchangeServers(ctx); return err },
			runspace.Call{Cmd: "Get-ExchangeServer",
				Select: []string{"Name", "Fqdn", "ServerRole", "AdminDisplayVersion", "Site"}, Idempotent: true}},
		{"ClientAccessServers",
			func(ctx context.Context, c *Client) error { _, err := c.ClientAccessServers(ctx); return err },
			runspace.Call{Cmd: "Get-ClientAccessService", Select: []string{"Name", "Fqdn"}, Idempotent: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// OrgSettings needs its one object; the others accept none.
			f := &fake{respond: objects(map[string][]string{"OrgSettings": {`{"Identity":"Mobile Mailbox Settings"}`}}[tt.name]...)}
			if err := tt.run(t.Context(), New(f)); err != nil {
				t.Fatalf("call: %v", err)
			}
			got := f.sent()
			if len(got) != 1 || !reflect.DeepEqual(got[0], tt.want) {
				t.Errorf("sent %#v\nwant %#v", got, tt.want)
			}
			if !runspace.Allowed(got[0].Cmd) {
				t.Errorf("cmdlet %s is not in runspace.Allowlist", got[0].Cmd)
			}
		})
	}
}

// TestEveryCmdletAllowlisted keeps the package's cmdlets inside the
// bootstrap's allowlist.
func TestEveryCmdletAllowlisted(t *testing.T) {
	for _, cmd := range []string{cmdGetMobileDevice, cmdGetCASMailbox, cmdSetCASMailbox, cmdGetOrgSettings, cmdSetOrgSettings,
		cmdGetDeviceAccessRule, cmdNewDeviceAccessRule, cmdSetDeviceAccessRule, cmdRemoveDeviceAccessRule,
		cmdGetExchangeServer, cmdGetClientAccessService, cmdGetCommand} {
		if !runspace.Allowed(cmd) {
			t.Errorf("%s is not in runspace.Allowlist %v", cmd, runspace.Allowlist)
		}
	}
}

// TestRefusedSendsNothing: invalid input is an error naming the problem,
// and no call reaches the runner.
func TestRefusedSendsNothing(t *testing.T) {
	f := func(name string, run func(context.Context, *Client) error, wantErr string) {
		t.Helper()
		fk := &fake{}
		err := run(t.Context(), New(fk))
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: error %v, want one containing %q", name, err, wantErr)
		}
		if n := len(fk.sent()); n != 0 {
			t.Errorf("%s: %d calls sent, want 0", name, n)
		}
	}
	hostile := "'; Remove-Mailbox x -Confirm:$false; '"
	set := func(id string, a, b runspace.ListEdit) func(context.Context, *Client) error {
		return func(ctx context.Context, c *Client) error { return c.SetCASMailbox(ctx, id, a, b) }
	}
	f("set/hostile add", set("pat", runspace.ListEdit{Add: []string{hostile}}, runspace.ListEdit{}), "ActiveSyncAllowedDeviceIDs add: invalid DeviceId")
	f("set/hostile remove", set("pat", runspace.ListEdit{}, runspace.ListEdit{Remove: []string{"ok1", "$(calc)"}}), `ActiveSyncBlockedDeviceIDs remove: invalid DeviceId "$(calc)"`)
	f("set/empty id", set("pat", runspace.ListEdit{Add: []string{""}}, runspace.ListEdit{}), "invalid DeviceId")
	f("set/65 chars", set("pat", runspace.ListEdit{Add: []string{strings.Repeat("A", 65)}}, runspace.ListEdit{}), "invalid DeviceId")
	f("set/unicode", set("pat", runspace.ListEdit{Add: []string{"Appl\u2019x"}}, runspace.ListEdit{}), "invalid DeviceId")
	f("set/empty edit", set("pat", runspace.ListEdit{}, runspace.ListEdit{Add: []string{}}), "empty edit")
	f("set/empty identity", set(" ", runspace.ListEdit{Add: []string{"A1"}}, runspace.ListEdit{}), "empty mailbox identity")
	f("set/newline identity", set("pat\nx", runspace.ListEdit{Add: []string{"A1"}}, runspace.ListEdit{}), "control characters")
	f("set/add and remove", set("pat", runspace.ListEdit{Add: []string{"A1"}, Remove: []string{"a1"}}, runspace.ListEdit{}), "both added and removed")
	f("set/both lists", set("pat", runspace.ListEdit{Add: []string{"A1"}}, runspace.ListEdit{Add: []string{"A1"}}), "added to both")
	f("devices/unknown state", func(ctx context.Context, c *Client) error {
		return c.MobileDevices(ctx, DeviceFilter{States: []AccessState{"Allowed' -or 1 -eq 1 -or '"}}, nil)
	}, "unknown access state")
	f("devices/mailbox NUL", func(ctx context.Context, c *Client) error {
		return c.MobileDevices(ctx, DeviceFilter{Mailbox: "pat\x00"}, nil)
	}, "control characters")
	f("cas/empty identity", func(ctx context.Context, c *Client) error {
		return c.CASMailboxes(ctx, []string{"CN=a", ""}, nil)
	}, "empty mailbox identity")
	f("cas/smtp identity", func(ctx context.Context, c *Client) error {
		return c.CASMailboxes(ctx, []string{"pat@contoso.com"}, nil)
	}, `mailbox identity "pat@contoso.com" is not a distinguished name`)
	f("cas/dangling escape", func(ctx context.Context, c *Client) error {
		return c.CASMailboxes(ctx, []string{`CN=Pat\`}, nil)
	}, "dangling escape")
	f("org/empty", func(ctx context.Context, c *Client) error { return c.SetOrgSettings(ctx, OrgSettingsUpdate{}) }, "empty update")
	f("org/level", func(ctx context.Context, c *Client) error {
		return c.SetOrgSettings(ctx, OrgSettingsUpdate{DefaultAccessLevel: ptr(AccessLevel("allow"))})
	}, "DefaultAccessLevel")
	f("org/257", func(ctx context.Context, c *Client) error {
		return c.SetOrgSettings(ctx, OrgSettingsUpdate{UserMailInsert: ptr(strings.Repeat("x", 257))})
	}, "UserMailInsert is 257 characters, Exchange allows 256")
	f("org/129 emoji = 258 UTF-16 units", func(ctx context.Context, c *Client) error {
		return c.SetOrgSettings(ctx, OrgSettingsUpdate{UserMailInsert: ptr(strings.Repeat("📱", 129))})
	}, "UserMailInsert is 258 characters")
	f("org/recipient", func(ctx context.Context, c *Client) error {
		return c.SetOrgSettings(ctx, OrgSettingsUpdate{AdminMailRecipients: []string{"Admins <a@contoso.com>"}})
	}, "not a bare SMTP address")
	f("rule/characteristic", func(ctx context.Context, c *Client) error {
		return c.NewDeviceAccessRule(ctx, "Imei", "x", LevelBlock)
	}, "unknown characteristic")
	f("rule/level", func(ctx context.Context, c *Client) error {
		return c.NewDeviceAccessRule(ctx, CharDeviceModel, "x", "Deny")
	}, "access level")
	f("rule/query", func(ctx context.Context, c *Client) error {
		return c.NewDeviceAccessRule(ctx, CharDeviceModel, "a\nb", LevelBlock)
	}, "control characters")
	f("rule/set identity", func(ctx context.Context, c *Client) error { return c.SetDeviceAccessRule(ctx, "", LevelBlock) }, "empty rule identity")
	f("rule/remove identity", func(ctx context.Context, c *Client) error { return c.RemoveDeviceAccessRule(ctx, "\x00") }, "control characters")
}

func TestUserMailInsertLimit(t *testing.T) {
	for _, s := range []string{strings.Repeat("x", 256), strings.Repeat("📱", 128), strings.Repeat("é", 256)} {
		fk := &fake{}
		if err := New(fk).SetOrgSettings(t.Context(), OrgSettingsUpdate{UserMailInsert: &s}); err != nil {
			t.Errorf("SetOrgSettings(%d bytes) = %v, want nil", len(s), err)
		}
	}
}

// TestRunnerErrors: runner failures are wrapped with the operation and stay
// matchable; a count that disagrees with the objects is ErrIncomplete.
func TestRunnerErrors(t *testing.T) {
	remote := &runspace.RemoteError{Type: "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException", Msg: "couldn't be found"}
	fk := &fake{respond: func(runspace.Call) response { return response{err: fmt.Errorf("run: %w", remote), count: -1} }}
	c := New(fk)
	err := c.SetCASMailbox(t.Context(), "pat", runspace.ListEdit{Add: []string{"A1"}}, runspace.ListEdit{})
	if _, ok := errors.AsType[*runspace.RemoteError](err); !ok || !strings.HasPrefix(err.Error(), `set cas mailbox "pat": `) {
		t.Errorf("SetCASMailbox error = %v, want wrapped RemoteError", err)
	}
	if _, err := c.ExchangeServers(t.Context()); !errors.Is(err, remote) {
		t.Errorf("ExchangeServers error = %v, want RemoteError", err)
	}

	fk.respond = func(runspace.Call) response {
		return response{objs: []string{`{"Name":"EX1","Fqdn":"ex1.contoso.com"}`}, count: 2}
	}
	if _, err := c.ExchangeServers(t.Context()); !errors.Is(err, ErrIncomplete) {
		t.Errorf("ExchangeServers with short stream = %v, want ErrIncomplete", err)
	}
	if err := c.MobileDevices(t.Context(), DeviceFilter{}, func(MobileDevice, error) error { return nil }); !errors.Is(err, ErrIncomplete) {
		t.Errorf("MobileDevices with short stream = %v, want ErrIncomplete", err)
	}

	fk.respond = objects(`{"Name":"EX1"}`)
	if err := c.SetCASMailbox(t.Context(), "pat", runspace.ListEdit{Add: []string{"A1"}}, runspace.ListEdit{}); err == nil {
		t.Error("SetCASMailbox with output objects = nil, want an error")
	}

	fk.respond = objects()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.DeviceAccessRules(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("DeviceAccessRules(cancelled) = %v, want context.Canceled", err)
	}
}

func TestOrgSettingsDecode(t *testing.T) {
	fk := &fake{respond: objects(`{"Identity":"Mobile Mailbox Settings","DefaultAccessLevel":"Quarantine",` +
		`"AdminMailRecipients":["a@contoso.com","b@contoso.com"],"UserMailInsert":null}`)}
	got, err := New(fk).OrgSettings(t.Context())
	want := OrgSettings{Identity: "Mobile Mailbox Settings", DefaultAccessLevel: LevelQuarantine,
		AdminMailRecipients: []string{"a@contoso.com", "b@contoso.com"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("OrgSettings() = %+v, %v, want %+v", got, err, want)
	}
	fk.respond = objects(`{"Identity":"a"}`, `{"Identity":"b"}`)
	if _, err := New(fk).OrgSettings(t.Context()); err == nil || !strings.Contains(err.Error(), "got 2 objects, want 1") {
		t.Errorf("OrgSettings(two objects) error = %v", err)
	}
	fk.respond = objects(`{"Identity":"a","AdminMailRecipients":"not a list"}`)
	if _, err := New(fk).OrgSettings(t.Context()); err == nil || !strings.Contains(err.Error(), "decode object 1") {
		t.Errorf("OrgSettings(bad shape) error = %v", err)
	}
}

func TestServersDecode(t *testing.T) {
	fk := &fake{respond: objects(
		// As the bootstrap writes it: the flags enum becomes one string.
		`{"Name":"EX1","Fqdn":"ex1.contoso.com","ServerRole":"Mailbox, ClientAccess","AdminDisplayVersion":"Version 15.2 (Build 1544.4)","Site":"contoso.com/Configuration/Sites/HQ"}`,
		`{"Name":"EX2","Fqdn":"ex2.contoso.com","ServerRole":["Mailbox","ClientAccess"],"AdminDisplayVersion":"Version 15.2 (Build 1544.4)","Site":null}`,
		`{"Name":"EDGE","Fqdn":"edge.contoso.com","ServerRole":null,"AdminDisplayVersion":null,"Site":null}`,
	)}
	got, err := New(fk).ExchangeServers(t.Context())
	want := []ExchangeServer{
		{Name: "EX1", Fqdn: "ex1.contoso.com", ServerRole: []string{"Mailbox", "ClientAccess"}, AdminDisplayVersion: "Version 15.2 (Build 1544.4)", Site: "contoso.com/Configuration/Sites/HQ"},
		{Name: "EX2", Fqdn: "ex2.contoso.com", ServerRole: []string{"Mailbox", "ClientAccess"}, AdminDisplayVersion: "Version 15.2 (Build 1544.4)"},
		{Name: "EDGE", Fqdn: "edge.contoso.com"},
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ExchangeServers() = %+v, %v\nwant %+v", got, err, want)
	}
	fk.respond = objects(`{"Name":"EX1","ServerRole":7}`)
	if _, err := New(fk).ExchangeServers(t.Context()); err == nil || !strings.Contains(err.Error(), "ServerRole") {
		t.Errorf("ExchangeServers(numeric role) error = %v, want ServerRole error", err)
	}
}

func TestRulesDecode(t *testing.T) {
	fk := &fake{respond: objects(
		`{"Identity":"WindowsMail (DeviceType)","Name":"WindowsMail (DeviceType)","Characteristic":"DeviceType","QueryString":"WindowsMail","AccessLevel":"Block"}`)}
	got, err := New(fk).DeviceAccessRules(t.Context())
	want := []DeviceAccessRule{{Identity: "WindowsMail (DeviceType)", Name: "WindowsMail (DeviceType)",
		Characteristic: CharDeviceType, QueryString: "WindowsMail", AccessLevel: LevelBlock}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("DeviceAccessRules() = %+v, %v, want %+v", got, err, want)
	}
}

func TestSelectListsMatchTypes(t *testing.T) {
	if !slices.Equal(mobileDeviceProps, wantDeviceSelect) {
		t.Errorf("MobileDevice select = %v, want %v", mobileDeviceProps, wantDeviceSelect)
	}
	if !slices.Equal(casMailboxProps, wantCASSelect) {
		t.Errorf("CASMailbox select = %v, want %v", casMailboxProps, wantCASSelect)
	}
}

func TestQuote(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
	f("ApplF17X", `"ApplF17X"`)
	f("a\nb\x00", `"a\nb\x00"`)
	f(strings.Repeat("é", 60), `"`+strings.Repeat("é", 48)+`"…(120 bytes)`)
}

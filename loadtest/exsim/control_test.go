package exsim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/easconnector/easconnector/exchange"
)

type ctl struct {
	t   *testing.T
	srv *httptest.Server
}

// call sends a request and decodes the JSON answer into out (if not nil),
// failing unless the status is want.
func (c ctl) call(method, path string, body any, want int, out any) {
	c.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		r = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, c.srv.URL+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := c.srv.Client().Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			c.t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
}

func newCtl(t *testing.T, s *Sim) ctl {
	srv := httptest.NewServer(s.ControlHandler())
	t.Cleanup(srv.Close)
	return ctl{t, srv}
}

func TestControlAPI(t *testing.T) {
	s := newSim(t, Options{Quiet: true})
	c := newCtl(t, s)

	var loaded map[string]int
	c.call("POST", "/v1/population", map[string]any{"seed": 3, "devices": 250}, 200, &loaded)
	if loaded["devices"] != 250 || loaded["mailboxes"] == 0 {
		t.Fatalf("population = %v", loaded)
	}
	c.call("POST", "/v1/population", `{"seed": 3, "devices": 250, "colour": "red"}`, 400, nil)
	c.call("POST", "/v1/population", map[string]any{"devices": -1}, 400, nil)

	var mbs page[exchange.CASMailbox]
	c.call("GET", "/v1/mailboxes?offset=2&limit=3", nil, 200, &mbs)
	if mbs.Total != loaded["mailboxes"] || len(mbs.Items) != 3 {
		t.Fatalf("mailboxes page = %d/%d", len(mbs.Items), mbs.Total)
	}
	c.call("GET", "/v1/mailboxes?limit=x", nil, 400, nil)
	mb := mbs.Items[0]

	// Add a device with hostile strings and read it back verbatim.
	hostile := "'; Remove-Mailbox x -Confirm:$false; '"
	var dev exchange.MobileDevice
	c.call("POST", "/v1/devices", DeviceSpec{Mailbox: mb.PrimarySmtpAddress, DeviceId: hostile, DeviceType: "iPhone",
		DeviceUserAgent: "<script>alert(1)</script>"}, 201, &dev)
	if dev.DeviceId != hostile || dev.DeviceAccessState != exchange.AccessAllowed {
		t.Fatalf("added device = %+v", dev)
	}
	var got exchange.MobileDevice
	c.call("GET", "/v1/device?identity="+url.QueryEscape(dev.Identity), nil, 200, &got)
	if got.DeviceUserAgent != "<script>alert(1)</script>" || got.DistinguishedName != dev.DistinguishedName {
		t.Fatalf("device = %+v", got)
	}
	c.call("POST", "/v1/devices", DeviceSpec{Mailbox: mb.Guid, DeviceId: hostile, DeviceType: "iPhone"}, 409, nil)
	c.call("POST", "/v1/devices", DeviceSpec{Mailbox: "nobody", DeviceId: "X", DeviceType: "iPhone"}, 404, nil)
	c.call("POST", "/v1/devices", DeviceSpec{Mailbox: mb.Guid, DeviceType: "iPhone"}, 400, nil)

	// "Would this phone get mail now?"
	var acc accessAnswer
	c.call("GET", "/v1/access?mailbox="+url.QueryEscape(mb.DistinguishedName)+"&deviceId="+url.QueryEscape(hostile), nil, 200, &acc)
	if !acc.GetsMail || acc.Reason != exchange.ReasonGlobal || !acc.Partnership {
		t.Fatalf("access = %+v", acc)
	}
	c.call("PUT", "/v1/org", exchange.OrgSettings{DefaultAccessLevel: exchange.LevelQuarantine, AdminMailRecipients: []string{"a@contoso.com"}}, 200, nil)
	c.call("GET", "/v1/access?mailbox="+url.QueryEscape(mb.Guid)+"&deviceId="+url.QueryEscape(hostile), nil, 200, &acc)
	if acc.GetsMail || acc.State != exchange.AccessQuarantined {
		t.Fatalf("access after quarantine default = %+v", acc)
	}
	// Get-MobileDevice still shows the state stored at the phone's last
	// request, until the phone connects.
	var stored exchange.MobileDevice
	c.call("GET", "/v1/device?identity="+url.QueryEscape(dev.Identity), nil, 200, &stored)
	if stored.DeviceAccessState != exchange.AccessAllowed {
		t.Fatalf("stored state before the phone connects = %s, want Allowed", stored.DeviceAccessState)
	}
	c.call("POST", "/v1/device/contact?identity="+url.QueryEscape(dev.Identity), nil, 200, &stored)
	if stored.DeviceAccessState != exchange.AccessQuarantined || stored.DeviceAccessStateReason != exchange.ReasonGlobal {
		t.Fatalf("stored state after the phone connects = %s/%s", stored.DeviceAccessState, stored.DeviceAccessStateReason)
	}
	var contacted map[string]int
	c.call("POST", "/v1/devices/contact", nil, 200, &contacted)
	if contacted["contacted"] == 0 {
		t.Fatalf("contact all = %v", contacted)
	}
	c.call("POST", "/v1/device/contact?identity=nothing", nil, 404, nil)
	c.call("PATCH", "/v1/mailbox?identity="+url.QueryEscape(mb.Guid),
		map[string]any{"ActiveSyncAllowedDeviceIDs": map[string]any{"add": []string{hostile}}}, 200, nil)
	c.call("GET", "/v1/access?mailbox="+url.QueryEscape(mb.Guid)+"&deviceId="+url.QueryEscape(strings.ToUpper(hostile)), nil, 200, &acc)
	if !acc.GetsMail || acc.Reason != exchange.ReasonIndividual {
		t.Fatalf("access after allow entry = %+v", acc)
	}
	var after exchange.CASMailbox
	c.call("PATCH", "/v1/mailbox?identity="+url.QueryEscape(mb.Guid),
		map[string]any{"ActiveSyncAllowedDeviceIDs": nil, "ActiveSyncBlockedDeviceIDs": []string{"B1", "b1"}, "ActiveSyncEnabled": false}, 200, &after)
	if len(after.ActiveSyncAllowedDeviceIDs) != 0 || len(after.ActiveSyncBlockedDeviceIDs) != 1 || after.ActiveSyncEnabled {
		t.Fatalf("mailbox after patch = %+v", after)
	}
	c.call("PATCH", "/v1/mailbox?identity="+url.QueryEscape(mb.Guid), map[string]any{"ActiveSyncAllowedDeviceIDs": map[string]any{"put": []string{"x"}}}, 400, nil)
	c.call("GET", "/v1/access?mailbox=&deviceId=x", nil, 400, nil)
	c.call("PUT", "/v1/org", map[string]any{"DefaultAccessLevel": "Allow", "UserMailInsert": strings.Repeat("y", 257)}, 400, nil)

	var upd exchange.MobileDevice
	model := "Hostile\nModel"
	c.call("PATCH", "/v1/device?identity=nothing", DevicePatch{DeviceModel: &model}, 404, nil)
	c.call("PATCH", "/v1/device?identity="+url.QueryEscape(dev.DistinguishedName), DevicePatch{DeviceModel: &model}, 200, &upd)
	if upd.DeviceModel != model {
		t.Fatalf("patched model = %q", upd.DeviceModel)
	}
	var devs page[exchange.MobileDevice]
	c.call("GET", "/v1/devices?mailbox="+url.QueryEscape(mb.Guid), nil, 200, &devs)
	n := devs.Total
	c.call("DELETE", "/v1/device?identity="+url.QueryEscape(dev.Identity), nil, 204, nil)
	c.call("GET", "/v1/devices?mailbox="+url.QueryEscape(mb.Guid), nil, 200, &devs)
	if devs.Total != n-1 {
		t.Fatalf("devices after delete = %d, want %d", devs.Total, n-1)
	}

	var rule exchange.DeviceAccessRule
	c.call("POST", "/v1/rules", map[string]any{"Characteristic": "DeviceType", "QueryString": "Android", "AccessLevel": "Block"}, 201, &rule)
	if rule.Name != "Android (DeviceType)" {
		t.Fatalf("rule = %+v", rule)
	}
	c.call("PATCH", "/v1/rule?identity="+url.QueryEscape(rule.Name), map[string]any{"AccessLevel": "Allow"}, 200, &rule)
	if rule.AccessLevel != exchange.LevelAllow {
		t.Fatalf("patched rule = %+v", rule)
	}
	c.call("POST", "/v1/rules", map[string]any{"Characteristic": "Colour", "QueryString": "x", "AccessLevel": "Block"}, 400, nil)
	c.call("DELETE", "/v1/rule?identity="+url.QueryEscape(rule.Name), nil, 204, nil)
	c.call("DELETE", "/v1/rule?identity="+url.QueryEscape(rule.Name), nil, 404, nil)

	var servers []exchange.ExchangeServer
	c.call("GET", "/v1/servers", nil, 200, &servers)
	if len(servers) != 1 || servers[0].Name != "CAS01" {
		t.Fatalf("servers = %+v", servers)
	}

	var fw faultsWire
	c.call("PUT", "/v1/faults", map[string]any{"errorRate": 0.5, "slowdown": "250ms", "cmdlets": []string{"Set-CASMailbox"}}, 200, &fw)
	if f := s.Faults(); f.ErrorRate != 0.5 || f.Slowdown.Milliseconds() != 250 || len(f.Cmdlets) != 1 {
		t.Fatalf("faults = %+v", f)
	}
	c.call("PUT", "/v1/faults", map[string]any{"errorRate": 1.5}, 400, nil)
	c.call("PUT", "/v1/faults", map[string]any{}, 200, nil)
	var qw quotasWire
	c.call("PUT", "/v1/quotas", map[string]any{"powerShellMaxConcurrency": 5, "powerShellMaxCmdlets": 100, "powerShellMaxCmdletsTimePeriod": 60}, 200, &qw)
	if q := s.Quotas(); q.PowerShellMaxConcurrency != 5 || q.PowerShellMaxCmdlets != 100 || q.PowerShellMaxCmdletsTimePeriod.Seconds() != 60 {
		t.Fatalf("quotas = %+v", q)
	}

	// Counters and the call log see cmdlets run through a session.
	p := openSession(t, s)
	p.mustOK("Get-ExchangeServer", nil, "Name")
	var cnt Counters
	c.call("GET", "/v1/counters", nil, 200, &cnt)
	if cnt.Cmdlets["Get-ExchangeServer"] != 1 || cnt.Sessions != 1 {
		t.Fatalf("counters = %+v", cnt)
	}
	var calls []Call
	c.call("GET", "/v1/calls?since=0&limit=10", nil, 200, &calls)
	if len(calls) != 1 || calls[0].Cmd != "Get-ExchangeServer" || calls[0].Result != "ok" {
		t.Fatalf("calls = %+v", calls)
	}
	c.call("POST", "/v1/counters/reset", nil, 204, nil)
	c.call("GET", "/v1/calls", nil, 200, &calls)
	if len(calls) != 0 {
		t.Fatalf("calls after reset = %d", len(calls))
	}

	var churn struct {
		Changes []json.RawMessage `json:"changes"`
	}
	c.call("POST", "/v1/churn", map[string]any{"fraction": 0.03, "step": "1h"}, 200, &churn)
	if len(churn.Changes) == 0 {
		t.Fatal("churn made no changes")
	}
	c.call("POST", "/v1/changes", `[{"Kind":"new-phone","Device":999999}]`, 400, nil)

	var st status
	c.call("GET", "/v1/status", nil, 200, &st)
	if len(st.Listeners) != 1 || st.Listeners[0].Up || st.Profile != ProfileZero || st.Devices != s.Org().DeviceCount() {
		t.Fatalf("status = %+v", st)
	}
	// Listener operations on a Sim without network answer with errors.
	c.call("POST", "/v1/listeners/0/kill", nil, 409, nil)
	c.call("POST", "/v1/listeners/7/kill", nil, 404, nil)
	c.call("POST", "/v1/listeners/0/explode", nil, 404, nil)
	c.call("GET", "/v1/ca.pem", nil, 404, nil)

	resp, err := c.srv.Client().Get(c.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `easconnector_exsim_cmdlet_calls_total{cmdlet="Get-ExchangeServer",result="ok"} 1`) {
		t.Fatalf("metrics:\n%s", body)
	}
}

package exsim

import (
	"bytes"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
	"github.com/easconnector/easconnector/runspace/psrp"
)

func TestPSRPHandshake(t *testing.T) {
	s := startSim(t, Options{})
	c := newPSClient(t, s, 0)
	msgs := c.open()
	// Windows answers SESSION_CAPABILITY, APPLICATION_PRIVATE_DATA, then
	// RUNSPACEPOOL_STATE Opened (pypsrp test_psrp_open_runspace.yml).
	want := []psrp.MessageType{psrp.SessionCapability, psrp.ApplicationPrivateData, psrp.RunspacePoolState}
	if got := types(msgs); !slices.Equal(got, want) {
		t.Fatalf("handshake messages = %v, want %v", got, want)
	}
	st, err := psrp.ParsePoolState(msgs[2].Data)
	if err != nil || st.State != psrp.PoolOpened {
		t.Fatalf("pool state = %v, %v, want Opened", st.State, err)
	}
	pd, err := psrp.ParseApplicationPrivateData(msgs[1].Data)
	if err != nil {
		t.Fatalf("ParseApplicationPrivateData: %v", err)
	}
	if pd.PSVersion != PowerShellVersion {
		t.Errorf("PSVersion = %q, want %q", pd.PSVersion, PowerShellVersion)
	}
	if got := s.Counters().Sessions; got != 1 {
		t.Errorf("Sessions = %d, want 1", got)
	}
	// The session's first pipeline starts with Windows PowerShell's
	// "Preparing modules for first use." progress record, the next do not.
	for i, want := range []psrp.MessageType{psrp.ProgressRecord, psrp.PipelineOutput} {
		if got := c.run(psrp.Command{Name: "Get-ActiveSyncOrganizationSettings"}); got[0].Type != want {
			t.Errorf("pipeline %d starts with %v, want %v", i, got[0].Type, want)
		}
	}
	c.close()
	deadline := time.Now().Add(5 * time.Second)
	for s.Counters().Sessions != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := s.Counters().Sessions; got != 0 {
		t.Errorf("Sessions after Delete = %d, want 0", got)
	}
}

func TestPSRPGetMobileDevice(t *testing.T) {
	s := startSim(t, Options{})
	smallOrg(t, s)
	c := newPSClient(t, s, 0)
	c.open()
	defer c.close()

	msgs := c.run(psrp.Command{Name: "Get-MobileDevice", Params: []psrp.Param{{Name: "Mailbox", Value: "alice"}, {Name: "ActiveSync", Value: psrp.Switch{}}}})
	if st := finalState(t, msgs); st.State != psrp.PipeCompleted {
		t.Fatalf("state = %v (%v), want Completed", st.State, st.Err)
	}
	objs := outputs(t, msgs)
	if len(objs) != 2 {
		t.Fatalf("%d objects, want 2", len(objs))
	}
	o := objs[0]
	if want := "Microsoft.Exchange.Data.Directory.SystemConfiguration.MobileDevice"; o.TypeNames[0] != want {
		t.Errorf("type = %q, want %q", o.TypeNames[0], want)
	}
	get := func(name string) psrp.Value {
		t.Helper()
		v, ok := o.Prop(name)
		if !ok {
			t.Fatalf("no property %s", name)
		}
		return v
	}
	if v := get("DeviceId"); v.Text != "ApplAAAA1111" {
		t.Errorf("DeviceId = %q", v.Text)
	}
	if v := get("DeviceAccessState"); v.Kind != psrp.KindObject || v.Obj.ToString != "Allowed" ||
		v.Obj.TypeNames[0] != "Microsoft.Exchange.Data.Directory.SystemConfiguration.DeviceAccessState" {
		t.Errorf("DeviceAccessState = %+v", v)
	}
	if v := get("FirstSyncTime"); v.Kind != psrp.KindDateTime {
		t.Errorf("FirstSyncTime kind = %v, want DateTime", v.Kind)
	}
	if v := get("DeviceAccessControlRule"); v.Kind != psrp.KindNil {
		t.Errorf("DeviceAccessControlRule = %+v, want $null", v)
	}

	// The call log shows the parameters as received.
	calls := s.CallLog(0, 0)
	last := calls[len(calls)-1]
	if last.Protocol != "psrp" || last.Cmd != "Get-MobileDevice" || last.Args["Mailbox"] != "alice" || last.Args["ActiveSync"] != true || last.Objects != 2 || last.Result != "ok" {
		t.Errorf("call log = %+v", last)
	}
}

func TestPSRPSelectObject(t *testing.T) {
	s := startSim(t, Options{})
	smallOrg(t, s)
	c := newPSClient(t, s, 0)
	c.open()
	defer c.close()
	msgs := c.run(
		psrp.Command{Name: "Get-CASMailbox", Params: []psrp.Param{{Name: "Identity", Value: "alice"}}},
		psrp.Command{Name: "Select-Object", Params: []psrp.Param{{Name: "Property", Value: []string{"Identity", "ActiveSyncAllowedDeviceIDs", "NoSuchProperty"}}}},
	)
	objs := outputs(t, msgs)
	if len(objs) != 1 {
		t.Fatalf("%d objects, want 1", len(objs))
	}
	o := objs[0]
	if want := "Selected.Microsoft.Exchange.Data.Directory.Management.CASMailbox"; o.TypeNames[0] != want {
		t.Errorf("type = %q, want %q", o.TypeNames[0], want)
	}
	if len(o.MS) != 3 || len(o.Props) != 0 {
		t.Fatalf("MS %d, Props %d: want exactly the 3 selected properties", len(o.MS), len(o.Props))
	}
	if v, _ := o.Prop("ActiveSyncAllowedDeviceIDs"); v.Kind != psrp.KindObject || len(v.Obj.List) != 0 ||
		!strings.HasPrefix(v.Obj.TypeNames[0], "Microsoft.Exchange.Data.MultiValuedProperty`1") {
		t.Errorf("ActiveSyncAllowedDeviceIDs = %+v, want an empty list", v)
	}
	if v, _ := o.Prop("NoSuchProperty"); v.Kind != psrp.KindNil {
		t.Errorf("NoSuchProperty = %+v, want $null", v)
	}
	if last := s.CallLog(0, 0); !slices.Equal(last[len(last)-1].Select, []string{"Identity", "ActiveSyncAllowedDeviceIDs", "NoSuchProperty"}) {
		t.Errorf("logged Select = %v", last[len(last)-1].Select)
	}
}

func TestPSRPSetCASMailboxHostileValues(t *testing.T) {
	s := startSim(t, Options{})
	smallOrg(t, s)
	c := newPSClient(t, s, 0)
	c.open()
	defer c.close()
	hostile := []string{`a'b"c`, "$(Remove-Item C:\\)", "`n`0", "line\r\nbreak", "nul\x00char", "_x000A_ literal", "tab\there", strings.Repeat("é", 1000)}
	msgs := c.run(psrp.Command{Name: "Set-CASMailbox", Params: []psrp.Param{
		{Name: "Identity", Value: "bob"},
		{Name: "ActiveSyncAllowedDeviceIDs", Value: psrp.Hashtable{{Key: "Add", Value: hostile}}},
	}})
	if st := finalState(t, msgs); st.State != psrp.PipeCompleted {
		t.Fatalf("state = %v (%v), want Completed", st.State, st.Err)
	}
	calls := s.CallLog(0, 0)
	got := calls[len(calls)-1].Args["ActiveSyncAllowedDeviceIDs"].(map[string]any)["Add"].([]any)
	for i, h := range hostile {
		if got[i] != h {
			t.Errorf("logged value %d = %q, want %q", i, got[i], h)
		}
	}
	mb, err := s.Org().Mailbox("bob")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(mb.ActiveSyncAllowedDeviceIDs, hostile) {
		t.Errorf("allowed list = %q, want %q", mb.ActiveSyncAllowedDeviceIDs, hostile)
	}
	// And back out through the encoder.
	msgs = c.run(psrp.Command{Name: "Get-CASMailbox", Params: []psrp.Param{{Name: "Identity", Value: "bob"}}},
		psrp.Command{Name: "Select-Object", Params: []psrp.Param{{Name: "Property", Value: []string{"ActiveSyncAllowedDeviceIDs"}}}})
	v, _ := outputs(t, msgs)[0].Prop("ActiveSyncAllowedDeviceIDs")
	for i, item := range v.Obj.List {
		if item.Text != hostile[i] {
			t.Errorf("returned value %d = %q, want %q", i, item.Text, hostile[i])
		}
	}
}

func TestPSRPErrors(t *testing.T) {
	s := startSim(t, Options{Quiet: true})
	smallOrg(t, s)
	c := newPSClient(t, s, 0)
	c.open()
	defer c.close()

	// Not found is non-terminating in Exchange: an ERROR_RECORD, then
	// Completed, since a remote session's $ErrorActionPreference is Continue.
	msgs := c.run(psrp.Command{Name: "Get-CASMailbox", Params: []psrp.Param{{Name: "Identity", Value: "nobody"}}})
	if got := types(msgs); !slices.Equal(got, []psrp.MessageType{psrp.ErrorRecord, psrp.PipelineState}) {
		t.Fatalf("messages = %v", got)
	}
	rec, err := psrp.ParseErrorRecord(msgs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(rec.FullyQualifiedErrorID, ",Microsoft.Exchange.Management.RecipientTasks.GetCASMailbox") ||
		rec.ExceptionType != typeNotFound || rec.Activity != "Get-CASMailbox" {
		t.Errorf("not found record = %+v", rec)
	}
	if st := finalState(t, msgs); st.State != psrp.PipeCompleted {
		t.Errorf("state = %v, want Completed", st.State)
	}

	// With -ErrorAction Stop the pipeline fails with the record.
	msgs = c.run(psrp.Command{Name: "Get-CASMailbox", Params: []psrp.Param{{Name: "Identity", Value: "nobody"}, {Name: "ErrorAction", Value: "Stop"}}})
	if st := finalState(t, msgs); st.State != psrp.PipeFailed || st.Err == nil || st.Err.ExceptionType != typeNotFound {
		t.Errorf("state = %v, %+v, want Failed with %s", st.State, st.Err, typeNotFound)
	}

	// A binding error is terminating.
	msgs = c.run(psrp.Command{Name: "Get-MobileDevice", Params: []psrp.Param{{Name: "NoSuchParameter", Value: "x"}}})
	if st := finalState(t, msgs); st.State != psrp.PipeFailed || st.Err.FullyQualifiedErrorID != "NamedParameterNotFound,Get-MobileDevice" || st.Err.CategoryName != "InvalidArgument" {
		t.Errorf("state = %v, %+v", st.State, st.Err)
	}

	// Commands outside the allowlist do not exist in the session.
	msgs = c.run(psrp.Command{Name: "Remove-Mailbox", Params: []psrp.Param{{Name: "Identity", Value: "bob"}}})
	if st := finalState(t, msgs); st.State != psrp.PipeFailed || st.Err.FullyQualifiedErrorID != "CommandNotFoundException" || st.Err.CategoryName != "ObjectNotFound" {
		t.Errorf("state = %v, %+v", st.State, st.Err)
	}
}

func TestPSRPRoles(t *testing.T) {
	s := startSim(t, Options{Roles: map[string][]string{DefaultUser: {"Get-MobileDevice", "Get-CASMailbox"}}})
	smallOrg(t, s)
	c := newPSClient(t, s, 0)
	c.open()
	defer c.close()
	msgs := c.run(psrp.Command{Name: "Set-CASMailbox", Params: []psrp.Param{{Name: "Identity", Value: "bob"}, {Name: "ActiveSyncEnabled", Value: false}}})
	st := finalState(t, msgs)
	if st.State != psrp.PipeFailed || st.Err.FullyQualifiedErrorID != "CommandNotFoundException" ||
		!strings.Contains(st.Err.Message, "The term 'Set-CASMailbox' is not recognized") {
		t.Fatalf("state = %v, %+v, want CommandNotFoundException", st.State, st.Err)
	}
	if mb, _ := s.Org().Mailbox("bob"); !mb.ActiveSyncEnabled {
		t.Error("a cmdlet outside the roles changed the mailbox")
	}
	if err := s.SetRoles(DefaultUser, nil); err != nil {
		t.Fatal(err)
	}
	if st := finalState(t, c.run(psrp.Command{Name: "Set-CASMailbox", Params: []psrp.Param{{Name: "Identity", Value: "bob"}, {Name: "ActiveSyncEnabled", Value: false}}})); st.State != psrp.PipeCompleted {
		t.Errorf("after SetRoles(nil): state = %v (%v), want Completed", st.State, st.Err)
	}
}

func TestPSRPMaxConcurrencyOnCreate(t *testing.T) {
	s := startSim(t, Options{PowerShellMaxConcurrency: 1})
	a := newPSClient(t, s, 0)
	a.open()
	defer a.close()
	b := newPSClient(t, s, 0)
	status, env := b.create()
	if status != http.StatusInternalServerError || env.FaultCode != "2150859173" {
		t.Fatalf("second Create: HTTP %d, fault %q, want 500 with 2150859173", status, env.FaultCode)
	}
	if got := s.Counters().SessionsRefused; got != 1 {
		t.Errorf("SessionsRefused = %d, want 1", got)
	}
}

func TestPSRPStopByCtrlC(t *testing.T) {
	s := startSim(t, Options{})
	smallOrg(t, s)
	if err := s.SetFaults(Faults{Hang: true, Cmdlets: []string{"Get-MobileDevice"}}); err != nil {
		t.Fatal(err)
	}
	c := newPSClient(t, s, 0)
	c.open()
	defer c.close()
	pid, _, _ := c.start([]psrp.Command{{Name: "Get-MobileDevice"}})
	id := strings.ToUpper(pid.String())
	if status, env := c.signal(id, "http://schemas.microsoft.com/powershell/signal/crtl_c"); status != http.StatusOK || env.Body != "SignalResponse" {
		t.Fatalf("ctrl_c: HTTP %d %s", status, env.Body)
	}
	msgs := c.drain(pid)
	if st := finalState(t, msgs); st.State != psrp.PipeStopped || st.Err.FullyQualifiedErrorID != "PipelineStopped" {
		t.Fatalf("state = %v, %+v, want Stopped", st.State, st.Err)
	}
	// The session survives.
	if err := s.SetFaults(Faults{}); err != nil {
		t.Fatal(err)
	}
	if st := finalState(t, c.run(psrp.Command{Name: "Get-ExchangeServer"})); st.State != psrp.PipeCompleted {
		t.Errorf("after stop: state = %v, want Completed", st.State)
	}
}

func TestPSRPMicroDelayWarning(t *testing.T) {
	s := startSim(t, Options{Quiet: true})
	if err := s.SetQuotas(Quotas{MicroDelay: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	c := newPSClient(t, s, 0)
	c.open()
	defer c.close()
	msgs := c.run(psrp.Command{Name: "Get-ActiveSyncOrganizationSettings"})
	if got := types(msgs); !slices.Equal(got, []psrp.MessageType{psrp.WarningRecord, psrp.PipelineOutput, psrp.PipelineState}) {
		t.Fatalf("messages = %v", got)
	}
	w, err := psrp.ParseInformational(msgs[0].Data)
	if err != nil || !strings.HasPrefix(w, "Micro delay applied.") {
		t.Errorf("warning = %q, %v", w, err)
	}
}

func TestPSRPScriptRefused(t *testing.T) {
	s := startSim(t, Options{})
	c := newPSClient(t, s, 0)
	c.open()
	defer c.close()
	// The codec never builds scripts, so flip IsScript in its output.
	data, _ := psrp.BuildCreatePipeline([]psrp.Command{{Name: "Get-Process"}})
	data = []byte(strings.Replace(string(data), `<B N="IsScript">false</B>`, `<B N="IsScript">true</B>`, 1))
	def, err := parseCreatePipeline(data)
	if err != nil || !def.statements[0][0].isScript {
		t.Fatalf("parse = %+v, %v", def, err)
	}
	var pl pipeline
	pl.pool = &psPool{w: s.listeners[0].worker}
	var entry Call
	if _, err := pl.prepare(t.Context(), def, &entry); err == nil || !strings.Contains(err.Error(), "no-language") {
		t.Errorf("prepare(script) = %v, want ScriptsNotAllowed", err)
	}
}

func TestPSRPGetCommandShowsGrants(t *testing.T) {
	s := startSim(t, Options{Quiet: true, Roles: map[string][]string{DefaultUser: {"Get-MobileDevice"}}})
	c := newPSClient(t, s, 0)
	c.open()
	defer c.close()
	msgs := c.run(psrp.Command{Name: "Get-Command", Params: []psrp.Param{{Name: "Name", Value: []string{"get-mobiledevice", "Set-CASMailbox"}}}})
	if got := types(msgs); !slices.Equal(got, []psrp.MessageType{psrp.PipelineOutput, psrp.ErrorRecord, psrp.PipelineState}) {
		t.Fatalf("messages = %v", got)
	}
	o := outputs(t, msgs)[0]
	if v, _ := o.Prop("Name"); v.Text != "Get-MobileDevice" || o.TypeNames[0] != "System.Management.Automation.CmdletInfo" {
		t.Errorf("Get-Command output = %v %q", o.TypeNames, v.Text)
	}
	rec, err := psrp.ParseErrorRecord(msgs[1].Data)
	if err != nil || rec.FullyQualifiedErrorID != "CommandNotFoundException,Microsoft.PowerShell.Commands.GetCommandCommand" {
		t.Errorf("missing command record = %+v, %v", rec, err)
	}
}

// A parameter far larger than one envelope arrives over several Sends and
// is logged intact.
func TestPSRPMegabyteParameter(t *testing.T) {
	s := startSim(t, Options{Quiet: true})
	c := newPSClient(t, s, 0)
	c.open()
	defer c.close()
	big := strings.Repeat("ü$(x)`'\"\r\n_x000A_", 1<<20/16)
	msgs := c.run(psrp.Command{Name: "Get-CASMailbox", Params: []psrp.Param{{Name: "Identity", Value: big}}})
	if got := types(msgs); !slices.Equal(got, []psrp.MessageType{psrp.ErrorRecord, psrp.PipelineState}) {
		t.Fatalf("messages = %v", got)
	}
	calls := s.CallLog(0, 0)
	if got := calls[len(calls)-1].Args["Identity"]; got != big {
		t.Errorf("logged Identity differs from the %d-byte value sent (got %d bytes)", len(big), len(got.(string)))
	}
}

// The bootstrap's remoting mode imports only the granted cmdlets too.
func TestRolesInRemotingMode(t *testing.T) {
	s := newSim(t, Options{Quiet: true, Roles: map[string][]string{DefaultUser: {"Get-CASMailbox"}}})
	smallOrg(t, s)
	p, f := openPipe(t, s, 0, DefaultUser, remoting("127.0.0.1"))
	if !f.Ready {
		t.Fatalf("open: %+v", f)
	}
	defer p.close()
	r := p.do("Set-CASMailbox", map[string]any{"Identity": "bob", "ActiveSyncBlockedDeviceIDs": []any{"ApplX"}})
	if r.err == nil || r.err.FQID != "CommandNotFoundException" || !strings.Contains(r.err.Msg, "'Set-CASMailbox' is not recognized") {
		t.Fatalf("Set-CASMailbox without the role = %+v", r.err)
	}
	if r := p.do("Get-CASMailbox", map[string]any{"Identity": "bob"}); r.err != nil {
		t.Fatalf("granted cmdlet: %v", r.err)
	}
}

func TestPSRPFaults(t *testing.T) {
	s := startSim(t, Options{})
	smallOrg(t, s)
	c := newPSClient(t, s, 0)
	c.open()
	defer c.close()

	// An injected AD error fails the pipeline with Exchange's transient error.
	if err := s.SetFaults(Faults{ErrorRate: 1, Cmdlets: []string{"Get-CASMailbox"}}); err != nil {
		t.Fatal(err)
	}
	st := finalState(t, c.run(psrp.Command{Name: "Get-CASMailbox"}))
	if st.State != psrp.PipeFailed || st.Err.ExceptionType != typeADTransient || !strings.Contains(st.Err.FullyQualifiedErrorID, "[FailureCategory=Cmdlet-ADTransientException]") {
		t.Errorf("injected error: state %v, %+v", st.State, st.Err)
	}

	// A truncated response ends the pipeline after TruncateAfter objects
	// without a PIPELINE_STATE.
	if err := s.SetFaults(Faults{Truncate: true, TruncateAfter: 1}); err != nil {
		t.Fatal(err)
	}
	msgs := c.run(psrp.Command{Name: "Get-MobileDevice"})
	if got := types(msgs); !slices.Equal(got, []psrp.MessageType{psrp.PipelineOutput}) {
		t.Errorf("truncated: messages %v, want one PIPELINE_OUTPUT and no state", got)
	}
	if got := s.Counters().Truncated; got != 1 {
		t.Errorf("Truncated = %d, want 1", got)
	}
	calls := s.CallLog(0, 0)
	if r := calls[len(calls)-1].Result; r != "truncated" {
		t.Errorf("logged result %q, want truncated", r)
	}
}

// A dropped shell gives its PowerShellMaxConcurrency slot back, as a
// WinRM restart frees the session on Exchange.
func TestPSRPDroppedShellFreesSlot(t *testing.T) {
	s := startSim(t, Options{PowerShellMaxConcurrency: 1})
	a := newPSClient(t, s, 0)
	a.open()
	if !s.DropShell(a.shellID) {
		t.Fatal("DropShell found no shell")
	}
	// Requests for the dropped shell fail as for a vanished shell.
	if env, _ := a.receive(""); env.FaultCode != "2150858843" {
		t.Errorf("Receive on a dropped shell: fault %q, want 2150858843", env.FaultCode)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Counters().Sessions != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	b := newPSClient(t, s, 0)
	b.open()
	b.close()
}

// Pipeline input that reaches the server in the same Send as the last
// fragments of CREATE_PIPELINE does not break the pipeline (pypsrp's
// test_psrp_small_msg_size.yml sends both back to back).
func TestReadCreatePipelineWithInputBehind(t *testing.T) {
	data, err := psrp.BuildCreatePipeline([]psrp.Command{{Name: "Get-ExchangeServer"}})
	if err != nil {
		t.Fatal(err)
	}
	var pid [16]byte
	pid[0] = 7
	fr := fragmenter{max: 64}
	create := fr.fragment(nil, appendMessage(nil, psMessage{dest: destServer, typ: msgCreatePipeline, pid: pid, data: data}))
	input := fr.fragment(nil, appendMessage(nil, psMessage{dest: destServer, typ: msgPipelineInput, pid: pid, data: []byte("<S>x</S>")}))
	// The first fragment in Arguments, everything else in one read.
	first := fragHeader + 64
	m, err := readCreatePipeline(create[:first], bytes.NewReader(append(create[first:], input...)))
	if err != nil || m.typ != msgCreatePipeline || m.pid != pid {
		t.Fatalf("readCreatePipeline = %x %v, %v", m.typ, m.pid, err)
	}
}

// With Options.Kerberos the endpoint offers Negotiate beside Basic, as the
// /PowerShell virtual directory does.
func TestPSRPOffersNegotiate(t *testing.T) {
	s := startSim(t, Options{Kerberos: &wsman.Kerberos{Keytab: keytab.New()}})
	resp, err := http.Post(s.PowerShellURL(0), "application/soap+xml;charset=UTF-8", strings.NewReader("<x/>"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Values("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized || !slices.Contains(got, "Negotiate") {
		t.Errorf("unauthenticated POST: %d %v, want 401 offering Negotiate", resp.StatusCode, got)
	}
}

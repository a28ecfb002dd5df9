package exsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/easconnector/easconnector/runspace"
)

// pipelineDef is a decoded CREATE_PIPELINE (MS-PSRP 2.2.2.10): its
// statements (PowerShell.Cmds, then each of ExtraCmds), each a list of
// commands piped into each other.
type pipelineDef struct {
	statements [][]cmdDef
	refs       map[string]*xnode // every Obj by RefId, for <Ref>
}

type cmdDef struct {
	name     string
	isScript bool
	args     []argDef
}

// argDef is one CommandParameter: name is nil for a positional argument.
// The value stays undecoded until the command is known to exist, as the
// server binds only what it runs (a recorded Set-Variable carries a
// SecureString that Exchange never reads).
type argDef struct {
	name  *string
	value *xnode
}

// readCreatePipeline reassembles the CREATE_PIPELINE message from the
// Command's Arguments and, when it is longer, the Sends that follow
// (pypsrp src/pypsrp/powershell.py _invoke: first fragment in Arguments, the
// rest on stdin).
func readCreatePipeline(args []byte, in io.Reader) (psMessage, error) {
	var asm assembler
	var got *psMessage
	emit := func(b []byte) error {
		if got != nil {
			// PIPELINE_INPUT that arrived with the last fragments; the
			// simulated cmdlets take no pipeline input.
			return nil
		}
		m, err := parseMessage(b)
		if err != nil {
			return err
		}
		if m.typ != msgCreatePipeline {
			return fmt.Errorf("psrp: pipeline message 0x%08X before CREATE_PIPELINE", m.typ)
		}
		got = &m
		return nil
	}
	if err := asm.write(args, emit); err != nil {
		return psMessage{}, err
	}
	buf := make([]byte, 32<<10)
	for got == nil {
		n, err := in.Read(buf)
		if n > 0 {
			if werr := asm.write(buf[:n], emit); werr != nil {
				return psMessage{}, werr
			}
		}
		if got == nil && err != nil {
			return psMessage{}, err
		}
	}
	return *got, nil
}

// parseCreatePipelineBytes decodes a CREATE_PIPELINE carried whole by args.
func parseCreatePipelineBytes(args []byte) (*pipelineDef, error) {
	var asm assembler
	var def *pipelineDef
	err := asm.write(args, func(b []byte) error {
		m, err := parseMessage(b)
		if err != nil {
			return err
		}
		def, err = parseCreatePipeline(m.data)
		return err
	})
	if err == nil && def == nil {
		err = errors.New("psrp: CREATE_PIPELINE continues beyond the Arguments")
	}
	return def, err
}

// errPipelineShape reports a CREATE_PIPELINE the endpoint cannot read.
func errPipelineShape(detail string) *runspace.RemoteError {
	return &runspace.RemoteError{Type: "System.Management.Automation.Remoting.PSRemotingDataStructureException",
		Category: "InvalidData", FQID: "PSRemotingDataStructureException", Msg: "CREATE_PIPELINE: " + detail}
}

// parseCreatePipeline reads the statements of a CREATE_PIPELINE:
// PowerShell.Cmds is a list of Cmd (name), IsScript and Args (each N, V),
// and ExtraCmds a list of further statements of the same shape (pypsrp
// test_psrp_error_failed.yml and test_psrp_multiple_commands.yml show both).
func parseCreatePipeline(data []byte) (*pipelineDef, error) {
	root, err := parseCLIXML(data)
	if err != nil {
		return nil, errPipelineShape(err.Error())
	}
	ps := root.prop("PowerShell")
	if ps == nil {
		return nil, errPipelineShape("no PowerShell object")
	}
	def := &pipelineDef{refs: map[string]*xnode{}}
	indexRefs(root, def.refs, 0)
	first, err := parseCmds(ps.prop("Cmds"))
	if err != nil {
		return nil, err
	}
	def.statements = append(def.statements, first)
	if extra := ps.prop("ExtraCmds"); extra != nil && extra.name == "Obj" {
		lst := extra.child("LST", "")
		if lst == nil {
			return nil, errPipelineShape("PowerShell.ExtraCmds is not a list")
		}
		for _, st := range lst.kids {
			cmds, err := parseCmds(st.prop("Cmds"))
			if err != nil {
				return nil, err
			}
			def.statements = append(def.statements, cmds)
		}
	}
	return def, nil
}

func indexRefs(n *xnode, refs map[string]*xnode, depth int) {
	if depth > maxCLIXMLDepth {
		return
	}
	if n.name == "Obj" && n.refID != "" {
		refs[n.refID] = n
	}
	for _, k := range n.kids {
		indexRefs(k, refs, depth+1)
	}
}

func parseCmds(cmds *xnode) ([]cmdDef, error) {
	lst := cmds.child("LST", "")
	if lst == nil {
		return nil, errPipelineShape("Cmds is not a list")
	}
	var out []cmdDef
	for i, c := range lst.kids {
		name := c.prop("Cmd")
		if name == nil || name.name != "S" {
			return nil, errPipelineShape(fmt.Sprintf("command %d has no Cmd string", i))
		}
		cd := cmdDef{name: decodeCLIXMLString(name.text)}
		if s := c.prop("IsScript"); s != nil && strings.TrimSpace(s.text) == "true" {
			cd.isScript = true
		}
		if a := c.prop("Args"); a != nil && a.name == "Obj" {
			al := a.child("LST", "")
			if al == nil {
				return nil, errPipelineShape(fmt.Sprintf("command %s: Args is not a list", cd.name))
			}
			for _, arg := range al.kids {
				n, v := arg.prop("N"), arg.prop("V")
				if v == nil {
					return nil, errPipelineShape(fmt.Sprintf("command %s: an argument has no V", cd.name))
				}
				ad := argDef{value: v}
				if n != nil && n.name == "S" {
					s := decodeCLIXMLString(n.text)
					ad.name = &s
				}
				cd.args = append(cd.args, ad)
			}
		}
		out = append(out, cd)
	}
	return out, nil
}

// pipeline is one running PSRP pipeline.
type pipeline struct {
	pool    *psPool
	pid     [16]byte
	out     io.Writer
	w       clixmlWriter
	stopped atomic.Bool // ctrl_c arrived
}

// Errors of the restricted runspace. The CommandNotFoundException text is
// PowerShell's own (CommandDiscovery's CommandNotFoundException); that an
// Exchange session shows only the cmdlets the account's roles grant is
// Exchange's RBAC model (Learn: "Understanding management role
// assignments"; issue 8 §5). ScriptsNotAllowed is what a no-language
// runspace answers a script (Learn about_Language_Modes, NoLanguage: "you
// can run commands, but you can't use script blocks"); its text is exsim
// wording.
func errCommandNotFound(name string) *runspace.RemoteError {
	return &runspace.RemoteError{Type: "System.Management.Automation.CommandNotFoundException", Category: "ObjectNotFound",
		FQID: "CommandNotFoundException",
		Msg:  fmt.Sprintf("The term '%s' is not recognized as the name of a cmdlet, function, script file, or operable program. Check the spelling of the name, or if a path was included, verify that the path is correct and try again.", name)}
}

func errScriptsNotAllowed() *runspace.RemoteError {
	return &runspace.RemoteError{Type: "System.Management.Automation.ParseException", Category: "ParserError",
		FQID: "ScriptsNotAllowed", Msg: "The syntax is not supported by this runspace. This can occur if the runspace is in no-language mode."}
}

// selectObject is the one non-Exchange cmdlet of the session: an Exchange
// remote session exposes Select-Object beside the Exchange cmdlets, so a
// pipeline may end in Select-Object -Property to cut the output (Learn,
// "Connect to Exchange servers using remote PowerShell": the implicit
// session's core commands; issue 8 §1).
const selectObject = "Select-Object"

// prepare resolves the pipeline into one call: the Exchange cmdlet, its
// parameters as received, and the Select-Object property list. Scripts and
// commands the session does not have are refused first, in every
// statement, as the runspace refuses them before running anything.
func (pl *pipeline) prepare(ctx context.Context, def *pipelineDef, entry *Call) (*call, error) {
	w := pl.pool.w
	if len(def.statements) == 0 || len(def.statements[0]) == 0 {
		return nil, errPipelineShape("no command")
	}
	first := def.statements[0][0]
	entry.Cmd = first.name
	for _, st := range def.statements {
		for _, c := range st {
			if c.isScript {
				return nil, errScriptsNotAllowed()
			}
			if strings.EqualFold(c.name, selectObject) || strings.EqualFold(c.name, getCommand.name) {
				continue
			}
			if cmd := lookupCmdlet(c.name); cmd == nil || !w.sim.granted(pl.pool.info.User, cmd.name) {
				return nil, errCommandNotFound(c.name)
			}
		}
	}
	if len(def.statements) > 1 {
		return nil, errPipelineShape("exsim simulates one statement per pipeline")
	}
	cmd := lookupCmdlet(first.name)
	if strings.EqualFold(first.name, getCommand.name) {
		cmd = getCommand
	}
	if cmd == nil {
		return nil, errCommandNotFound(first.name)
	}
	entry.Cmd = cmd.name
	var sel []string
	for _, c := range def.statements[0][1:] {
		if !strings.EqualFold(c.name, selectObject) || sel != nil {
			return nil, errPipelineShape("exsim simulates one Exchange cmdlet per pipeline, optionally followed by Select-Object")
		}
		props, err := selectProperties(c, def.refs)
		if err != nil {
			return nil, err
		}
		sel = props
	}
	args, err := bindPSArgs(cmd, first.args, def.refs)
	if err != nil {
		return nil, err
	}
	entry.Args, entry.Select = args, sel
	org := w.sim.org
	org.mu.RLock()
	env := psEnv{dc: org.dc}
	org.mu.RUnlock()
	return &call{ctx: ctx, ps: pl, w: w, cmd: cmd, env: env, defaultEA: "Continue",
		req: runspace.Request{ID: entry.ID, Cmd: cmd.name, Args: args, Select: sel}}, nil
}

// argValue decodes a parameter value, reporting an undecodable one as
// PowerShell reports an argument it cannot bind.
func argValue(cmd, name string, n *xnode, refs map[string]*xnode) (any, error) {
	v, err := clixmlValue(n, refs, 0)
	if err != nil {
		return nil, &runspace.RemoteError{Type: typeParamBinding, Category: "InvalidArgument", FQID: "CannotConvertArgument," + cmd,
			Msg: fmt.Sprintf("Cannot bind parameter '%s': %v", name, err)}
	}
	return v, nil
}

// selectProperties reads Select-Object's -Property (named, by a unique
// prefix, or positional) as a list of names.
func selectProperties(c cmdDef, refs map[string]*xnode) ([]string, error) {
	var props []string
	for _, a := range c.args {
		v, err := argValue(selectObject, "Property", a.value, refs)
		if err != nil {
			return nil, err
		}
		if a.name != nil {
			n := strings.TrimPrefix(*a.name, "-")
			if len(n) < 2 || !strings.HasPrefix("property", strings.ToLower(n)) {
				return nil, errParamNotFound(selectObject, n)
			}
		} else if props != nil {
			return nil, &runspace.RemoteError{Type: typeParamBinding, Category: "InvalidArgument", FQID: "PositionalParameterNotFound,Microsoft.PowerShell.Commands.SelectObjectCommand",
				Msg: fmt.Sprintf("A positional parameter cannot be found that accepts argument '%s'.", psString(v))}
		}
		props = append(props, wireStrings(v)...)
	}
	if props == nil {
		props = []string{}
	}
	return props, nil
}

// bindPSArgs turns CommandParameters into the cmdlet layer's arguments,
// keeping every name and value exactly as received (the call log shows
// them). A positional argument binds to Identity (position 0 of the Exchange
// cmdlets that have one, office-docs-powershell exchange-ps/…/Get-MobileDevice.md
// "Position: 1"); a parameter without a value is a switch that is present,
// as PowerShell.AddParameter(name) makes it.
func bindPSArgs(cmd *cmdlet, args []argDef, refs map[string]*xnode) (map[string]any, error) {
	out := make(map[string]any, len(args))
	for _, a := range args {
		if a.name == nil {
			v, err := argValue(cmd.name, "Identity", a.value, refs)
			if err != nil {
				return nil, err
			}
			if cmd.lookup("Identity") == nil || out["Identity"] != nil {
				return nil, &runspace.RemoteError{Type: typeParamBinding, Category: "InvalidArgument", FQID: "PositionalParameterNotFound," + cmd.name,
					Msg: fmt.Sprintf("A positional parameter cannot be found that accepts argument '%s'.", psString(v))}
			}
			out["Identity"] = v
			continue
		}
		name := strings.TrimPrefix(*a.name, "-")
		if !paramNameRe.MatchString(name) {
			return nil, errParamNotFound(cmd.name, name)
		}
		if _, dup := out[name]; dup {
			return nil, errParamTwice(cmd.name, name)
		}
		v, err := argValue(cmd.name, name, a.value, refs)
		if err != nil {
			return nil, err
		}
		if v == nil {
			if p, re := cmd.resolveParam(name); re == nil && p.ty == tySwitch {
				v = true
			}
		}
		out[name] = v
	}
	return out, nil
}

// lookup finds a parameter by exact name.
func (c *cmdlet) lookup(name string) *param {
	for i := range c.all {
		if strings.EqualFold(c.all[i].name, name) {
			return &c.all[i]
		}
	}
	return nil
}

// send writes one message of this pipeline.
func (pl *pipeline) send(typ uint32, xml []byte) error {
	return pl.pool.send(pl.out, typ, pl.pid, xml)
}

// psEmit writes one output object as PIPELINE_OUTPUT after paying its
// per-object latency.
func psEmit[T any](c *call, sel selection[T], rec *T) error {
	c.debt += c.lat.PerObject
	if c.debt >= time.Millisecond {
		if err := sleepCtx(c.ctx, c.debt); err != nil {
			return err
		}
		c.debt = 0
	} else if err := c.ctx.Err(); err != nil {
		return err
	}
	if c.faults.Truncate && c.count >= c.faults.TruncateAfter {
		c.w.sim.counters.add(func(c *Counters) { c.Truncated++ })
		return errTruncated
	}
	pl := c.ps
	pl.w.reset()
	shape := sel.schema.shape
	if c.req.Select != nil {
		shape.writeSelected(&pl.w, rec, &c.env, c.req.Select)
	} else {
		shape.writeFull(&pl.w, rec, &c.env)
	}
	if err := pl.send(msgPipelineOutput, pl.w.b); err != nil {
		return err
	}
	c.count++
	return nil
}

// warning writes a WARNING_RECORD (MS-PSRP 2.2.2: an InformationalRecord,
// the shape of the DEBUG_RECORD in pypsrp test_psrp_with_input.yml).
func (pl *pipeline) warning(msg string) {
	var w clixmlWriter
	w.openObj("", []string{"System.Management.Automation.WarningRecord", "System.Management.Automation.InformationalRecord", "System.Object"})
	w.raw(`<ToString>`)
	w.b = appendCLIXMLText(w.b, msg, false)
	w.raw(`</ToString><MS>`)
	w.str("InformationalRecord_Message", msg)
	w.boolean("InformationalRecord_SerializeInvocationInfo", false)
	w.raw(`</MS></Obj>`)
	_ = pl.send(msgWarningRecord, w.b)
}

// errorRecord writes a non-terminating error as ERROR_RECORD.
func (pl *pipeline) errorRecord(c *call, re *runspace.RemoteError) error {
	var w clixmlWriter
	writeErrorRecord(&w, "", re, c.cmd.name)
	return pl.send(msgErrorRecord, w.b)
}

// state writes PIPELINE_STATE, with the error record of a failure.
func (pl *pipeline) state(state int64, re *runspace.RemoteError, activity ...string) {
	var w clixmlWriter
	w.raw(`<Obj RefId="0"><MS>`)
	w.i32("PipelineState", state)
	if re != nil {
		a := ""
		if len(activity) > 0 {
			a = activity[0]
		}
		writeErrorRecord(&w, "ExceptionAsErrorRecord", re, a)
	}
	w.raw(`</MS></Obj>`)
	_ = pl.send(msgPipelineState, w.b)
}

// stoppedRecord is what PowerShell reports for a stopped pipeline.
func stoppedRecord() *runspace.RemoteError {
	return &runspace.RemoteError{Type: "System.Management.Automation.PipelineStoppedException", Category: "OperationStopped",
		FQID: "PipelineStopped", Msg: "The pipeline has been stopped."}
}

// finish logs the call and writes the pipeline's final state. c is nil
// for pipelines refused before they reached a cmdlet.
func (pl *pipeline) finish(entry *Call, started time.Time, c *call, err error) {
	sim := pl.pool.w.sim
	if c != nil {
		sim.counters.cmdletEnd(c.count)
		entry.Objects = c.count
	}
	var re *runspace.RemoteError
	var final func()
	switch {
	case pl.stopped.Load():
		entry.Result = "stopped"
		final = func() { pl.state(pipelineStopped, stoppedRecord()) }
	case err == nil:
		entry.Result = "ok"
		final = func() { pl.state(pipelineComplete, nil) }
	case errors.Is(err, errTruncated):
		// The output ends mid-stream without a PIPELINE_STATE, as when
		// the server process dies.
		entry.Result = "truncated"
	case errors.As(err, &re):
		entry.Result, entry.Error = "error", re.Msg
		sim.counters.add(func(c *Counters) { c.Errors++ })
		// Errors raised before a cmdlet ran (a script, a missing
		// command) have no activity, as PowerShell's CategoryInfo shows
		// "ObjectNotFound: (…) [], CommandNotFoundException".
		activity := ""
		if c != nil {
			activity = entry.Cmd
		}
		final = func() { pl.state(pipelineFailed, re, activity) }
	default: // terminated, deleted, or the output went away
		entry.Result, entry.Error = "aborted", err.Error()
	}
	entry.Duration = time.Since(started)
	sim.counters.logCall(*entry)
	if final != nil {
		final()
	}
}

// errorCategories numbers System.Management.Automation.ErrorCategory
// (Learn: ErrorCategory enum).
var errorCategories = map[string]int64{
	"NotSpecified": 0, "OpenError": 1, "CloseError": 2, "DeviceError": 3, "DeadlockDetected": 4, "InvalidArgument": 5,
	"InvalidData": 6, "InvalidOperation": 7, "InvalidResult": 8, "InvalidType": 9, "MetadataError": 10,
	"NotImplemented": 11, "NotInstalled": 12, "ObjectNotFound": 13, "OperationStopped": 14, "OperationTimeout": 15,
	"SyntaxError": 16, "ParserError": 17, "PermissionDenied": 18, "ResourceBusy": 19, "ResourceExists": 20,
	"ResourceUnavailable": 21, "ReadError": 22, "WriteError": 23, "FromStdErr": 24, "SecurityError": 25,
	"ProtocolError": 26, "ConnectionError": 27, "AuthenticationError": 28, "LimitsExceeded": 29,
	"QuotaExceeded": 30, "NotEnabled": 31,
}

// writeErrorRecord writes an ErrorRecord as PowerShell serializes one
// (MS-PSRP 2.2.3.15; the ExceptionAsErrorRecord of pypsrp
// test_psrp_error_failed.yml): the exception with its type names and
// Message, FullyQualifiedErrorId and the ErrorCategory_* properties. The
// exception's intermediate base classes are not modelled.
func writeErrorRecord(w *clixmlWriter, n string, re *runspace.RemoteError, activity string) {
	typ := re.Type
	if typ == "" {
		typ = typeRuntime
	}
	short := typ[strings.LastIndexByte(typ, '.')+1:]
	cat := re.Category
	if _, ok := errorCategories[cat]; !ok {
		cat = "NotSpecified"
	}
	w.openObj(n, []string{"System.Management.Automation.ErrorRecord", "System.Object"})
	w.raw(`<ToString>`)
	w.b = appendCLIXMLText(w.b, re.Msg, false)
	w.raw(`</ToString><MS>`)
	w.openObj("Exception", []string{typ, "System.Exception", "System.Object"})
	w.raw(`<ToString>`)
	w.b = appendCLIXMLText(w.b, typ+": "+re.Msg, false)
	w.raw(`</ToString><Props>`)
	w.str("Message", re.Msg)
	w.nilv("InnerException")
	w.nilv("TargetSite")
	w.nilv("StackTrace")
	w.nilv("HelpLink")
	w.nilv("Source")
	w.i32("HResult", -2146233087)
	w.raw(`</Props></Obj>`)
	w.nilv("TargetObject")
	w.str("FullyQualifiedErrorId", re.FQID)
	w.nilv("InvocationInfo")
	w.i32("ErrorCategory_Category", errorCategories[cat])
	w.str("ErrorCategory_Activity", activity)
	w.str("ErrorCategory_Reason", short)
	w.str("ErrorCategory_TargetName", "")
	w.str("ErrorCategory_TargetType", "")
	w.str("ErrorCategory_Message", fmt.Sprintf("%s: (:) [%s], %s", cat, activity, short))
	w.boolean("SerializeExtendedInfo", false)
	w.raw(`</MS></Obj>`)
}

// getCommand is Get-Command as an Exchange session offers it: implicit
// remoting needs it beside Select-Object, Measure-Object, Get-FormatData,
// Out-Default and Exit-PSSession (Learn, "JEA role capabilities": the
// commands a restricted endpoint exposes for Import-PSSession). It lists
// the Exchange cmdlets the account's roles grant, so a client can find the
// cmdlets it lacks before it needs them.
var getCommand = func() *cmdlet {
	c := &cmdlet{name: "Get-Command", run: runGetCommand, params: []param{
		{name: "Name", ty: tyMulti},
	}}
	c.all = append(append([]param{}, c.params...), commonParams...)
	return c
}()

// commandRec is one Get-Command result.
type commandRec struct{ name string }

var commandSchema = newSchema[commandRec]("CmdletInfo")

var commandShape = newShape([]string{"System.Management.Automation.CmdletInfo", "System.Management.Automation.CommandInfo", "System.Object"},
	func(r *commandRec) string { return r.name },
	psStr("Verb", func(r *commandRec) string { v, _, _ := strings.Cut(r.name, "-"); return v }),
	psStr("Noun", func(r *commandRec) string { _, n, _ := strings.Cut(r.name, "-"); return n }),
	psStr("Name", func(r *commandRec) string { return r.name }),
	psEnum("CommandType", "System.Management.Automation.CommandTypes", map[string]int64{"Cmdlet": 8}, func(*commandRec) string { return "Cmdlet" }),
)

func init() { commandSchema.shape = commandShape }

func runGetCommand(c *call) error {
	user := c.ps.pool.info.User
	var names []string
	if ch, ok := c.args["Name"].(ListChange); ok {
		names = ch.Values
	}
	var granted []string
	for _, n := range runspace.Allowlist {
		if cmd := lookupCmdlet(n); cmd != nil && c.w.sim.granted(user, cmd.name) {
			granted = append(granted, cmd.name)
		}
	}
	sel := commandSchema.selection(c.req.Select)
	if len(names) == 0 || len(names) == 1 && names[0] == "*" {
		for _, n := range granted {
			if err := emit(c, sel, &commandRec{n}); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range names {
		i := slices.IndexFunc(granted, func(g string) bool { return strings.EqualFold(g, n) })
		if i < 0 {
			re := errCommandNotFound(n)
			re.FQID = "CommandNotFoundException,Microsoft.PowerShell.Commands.GetCommandCommand"
			if err := c.writeError(re); err != nil {
				return err
			}
			continue
		}
		if err := emit(c, sel, &commandRec{granted[i]}); err != nil {
			return err
		}
	}
	return nil
}

// progressFirstUse is the PROGRESS_RECORD Windows PowerShell sends in a
// session's first pipeline (pypsrp test_psrp_error_failed.yml), which a
// client must tolerate; Options.Quiet leaves it out, as it leaves out the
// WinRS path's console noise.
func (pl *pipeline) progressFirstUse() {
	var w clixmlWriter
	w.raw(`<Obj RefId="0"><MS>`)
	w.str("Activity", "Preparing modules for first use.")
	w.i32("ActivityId", 0)
	w.str("StatusDescription", " ")
	w.nilv("CurrentOperation")
	w.i32("ParentActivityId", -1)
	w.i32("PercentComplete", -1)
	w.enum("Type", "System.Management.Automation.ProgressRecordType", "Completed", 1)
	w.i32("SecondsRemaining", -1)
	w.raw(`</MS></Obj>`)
	_ = pl.send(msgProgressRecord, w.b)
}

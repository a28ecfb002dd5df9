package exsim

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
	"github.com/easconnector/easconnector/runspace"
)

// Versions the simulated servers report.
const (
	ExchangeVersion   = "Version 15.2 (Build 1544.4)" // Exchange 2019 CU14
	PowerShellVersion = "5.1.17763.6414"              // Windows Server 2019
)

// Exit codes of the simulated powershell.exe.
const (
	exitOK        = 0
	exitScript    = 1           // an uncaught script error
	exitInitError = 2           // the bootstrap's `exit 2` after an initerr frame
	exitStage0    = 3           // stage 0's `exit 3` when the first line is not tagged
	exitNoConfig  = 3           // the bootstrap's `exit 3` when stdin ends before the config line
	exitBroken    = 4           // the bootstrap's `exit 4` after an error that broke the remoting session
	exitKilled    = -1073741510 // 0xC000013A, STATUS_CONTROL_C_EXIT: the process was stopped
)

// worker is the wsman.Runner of one listener: it plays powershell.exe
// running easconnector's bootstrap against the organization.
type worker struct {
	sim    *Sim
	index  int // listener index
	server exchange.ExchangeServer
}

var _ wsman.Runner = (*worker)(nil)

// Start refuses every command line but easconnector's stage 0.
func (w *worker) Start(cmd wsman.Command) error {
	if err := runspace.VerifyCommandLine(cmd.Name, cmd.Args); err != nil {
		return fmt.Errorf("exsim runs only easconnector's runspace bootstrap: %w", err)
	}
	return nil
}

// Run plays one session: stage 1, the session config line, the ready frame,
// then one response per request line until stdin ends or ctx is cancelled.
// Stdin is read on a helper goroutine so that Run returns promptly when ctx
// ends; that goroutine exits when stdin returns an error or EOF, which the
// WS-Man server guarantees once the command is gone.
func (w *worker) Run(ctx context.Context, cmd wsman.Command, stdin io.Reader, stdout, stderr io.Writer) int {
	s := &session{
		w: w, ctx: ctx, user: cmd.User, id: w.sim.sessionSeq.Add(1), targetListener: -1,
		out: bufio.NewWriterSize(stdout, 32<<10), stderr: stderr,
		lines: make(chan lineResult), done: make(chan struct{}),
	}
	defer close(s.done)
	go s.readLines(stdin)
	code := s.run()
	if err := s.out.Flush(); err != nil && code == exitOK {
		code = exitScript
	}
	return code
}

type lineResult struct {
	line []byte
	err  error
}

// session is one run of the bootstrap.
type session struct {
	w      *worker
	ctx    context.Context
	user   string
	id     uint64
	out    *bufio.Writer
	stderr io.Writer
	lines  chan lineResult
	done   chan struct{}

	remoting       bool
	target         string // host of the remoting connectionUri
	targetListener int    // listener the connectionUri names, or -1
	buf            []byte // scratch for encoding objects
}

// errLineTooLong ends a session whose client sent a runaway line.
var errLineTooLong = errors.New("stdin line exceeds runspace.MaxLineBytes")

func (s *session) readLines(stdin io.Reader) {
	r := bufio.NewReaderSize(stdin, 64<<10)
	for {
		line, err := readLine(r)
		select {
		case s.lines <- lineResult{line, err}:
		case <-s.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// readLine reads one "\n"-terminated line of at most runspace.MaxLineBytes.
// A last line without "\n" is returned with io.EOF's absence, as
// [Console]::In.ReadLine() returns it.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > runspace.MaxLineBytes {
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, nil
		default:
			return nil, err
		}
	}
}

// nextLine returns the next stdin line; io.EOF at the end of input, or
// the context's error once the session is cancelled.
func (s *session) nextLine() ([]byte, error) {
	select {
	case r := <-s.lines:
		return r.line, r.err
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}

// nextTagged skips untagged lines, as the bootstrap's Read-Frame does.
func (s *session) nextTagged() ([]byte, error) {
	for {
		line, err := s.nextLine()
		if err != nil {
			return nil, err
		}
		if bytes.HasPrefix(bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")), []byte(runspace.FrameTag)) {
			return line, nil
		}
	}
}

func (s *session) run() int {
	first, err := s.nextLine()
	if err != nil {
		if s.ctx.Err() != nil {
			return exitKilled
		}
		return exitStage0
	}
	if !bytes.HasPrefix(first, []byte(runspace.FrameTag)) {
		return exitStage0
	}
	if err := runspace.VerifyStage1Line(first); err != nil {
		s.scriptError(fmt.Sprintf("exsim cannot run this script: %v", err))
		return exitScript
	}

	cfgLine, err := s.nextTagged()
	var cfg runspace.SessionConfig
	switch {
	case s.ctx.Err() != nil:
		return exitKilled
	case errors.Is(err, io.EOF):
		return exitNoConfig // $cfg is $null: `exit 3`
	case err != nil:
		return exitScript
	}
	if cfg, err = runspace.DecodeSessionConfig(cfgLine); err != nil {
		// Read-Frame runs inside the bootstrap's try block.
		return s.initErr(errBootstrap(err.Error()))
	}
	if cfg.User != "" {
		// The password follows on its own line (runspace.SessionConfig).
		pwLine, err := s.nextLine()
		switch {
		case s.ctx.Err() != nil:
			return exitKilled
		case err != nil || !bytes.HasPrefix(pwLine, []byte(runspace.FrameTag)):
			return s.initErr(errBootstrap("the second-hop password line is missing"))
		}
		if cfg.Password, err = runspace.DecodePasswordLine(pwLine); err != nil {
			// .NET's FormatException text, as PowerShell wraps a method's exception.
			return s.initErr(errBootstrap(`Exception calling "FromBase64String" with "1" argument(s): "The input is not a valid Base-64 string as it contains a non-base 64 character, more than two padding characters, or an illegal character among the padding characters. "`))
		}
	}
	if code, ok := s.open(cfg); !ok {
		return code
	}
	defer s.close()
	return s.serve()
}

// open loads "Exchange" as the bootstrap would, checking the session
// config and the user's session quota, and writes the ready frame.
func (s *session) open(cfg runspace.SessionConfig) (int, bool) {
	sim := s.w.sim
	if cfg.Mode != "snapin" {
		s.remoting = true
		if re := s.checkURI(cfg.ConnectionURI); re != nil {
			return s.initErr(re), false
		}
		if re := s.checkCredential(cfg); re != nil {
			return s.initErr(re), false
		}
		q := sim.quotas()
		if !sim.counters.acquireRemoting(s.user, q.PowerShellMaxConcurrency) {
			s.remoting = false // holds no slot
			return s.initErr(&runspace.RemoteError{Type: typeRemoting, Category: "OpenError",
				FQID: "-2144108060,PSSessionOpenFailed", Msg: quotaShells(s.target, q.PowerShellMaxConcurrency)}), false
		}
	}
	start := sim.profile.SessionStart
	if err := sleepCtx(s.ctx, start.Fixed+start.jitter(sim.rand())); err != nil {
		s.releaseSlot()
		return exitKilled, false
	}
	if !sim.opts.Quiet {
		s.noise()
	}
	// Counted before the ready frame leaves, so that a client that saw it
	// also sees the session in the counters.
	sim.counters.sessionOpen()
	if err := s.frame(runspace.Frame{Ready: true, Host: s.w.server.Name, Exchange: ExchangeVersion, PS: PowerShellVersion}); err != nil {
		s.close()
		return exitScript, false
	}
	return 0, true
}

// checkCredential verifies a second-hop credential passed to New-PSSession
// (runspace.SessionConfig.User/Password) as the /PowerShell endpoint would:
// the listeners' accounts are the directory. Without a credential the
// session is accepted: exsim does not model Kerberos delegation.
func (s *session) checkCredential(cfg runspace.SessionConfig) *runspace.RemoteError {
	if cfg.User == "" && cfg.Password.IsZero() {
		return nil
	}
	s.w.sim.counters.add(func(c *Counters) { c.SecondHopCredentials++ })
	want, ok := s.w.sim.opts.Users[cfg.User]
	if ok && subtle.ConstantTimeCompare([]byte(want), []byte(cfg.Password.Reveal())) == 1 {
		return nil
	}
	return &runspace.RemoteError{Type: typeRemoting, Category: "OpenError", FQID: "AccessDenied,PSSessionOpenFailed",
		Msg: fmt.Sprintf("Connecting to remote server %s failed with the following error message : Access is denied. For more information, see the about_Remote_Troubleshooting Help topic.", s.target)}
}

func (s *session) releaseSlot() {
	if s.remoting {
		s.w.sim.counters.releaseRemoting(s.user)
		s.remoting = false
	}
}

func (s *session) close() {
	s.releaseSlot()
	s.w.sim.counters.sessionClose()
}

// checkURI validates the remoting connectionUri as New-PSSession and the
// /PowerShell virtual directory would. A host other than this listener's
// is accepted (a management host may remote into any CAS) and counted.
func (s *session) checkURI(raw string) *runspace.RemoteError {
	if strings.TrimSpace(raw) == "" {
		return &runspace.RemoteError{Type: typeParamValidation, Category: "InvalidData",
			FQID: "ParameterArgumentValidationError,Microsoft.PowerShell.Commands.NewPSSessionCommand",
			Msg:  "Cannot validate argument on parameter 'ConnectionUri'. The argument is null or empty. Provide an argument that is not null or empty, and then try the command again."}
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return &runspace.RemoteError{Type: typeRemoting, Category: "OpenError", FQID: "PSSessionOpenFailed",
			Msg: fmt.Sprintf("Connecting to remote server failed with the following error message : The WinRM client cannot process the request because the connection URI %q is not valid. For more information, see the about_Remote_Troubleshooting Help topic.", raw)}
	}
	s.target = u.Hostname()
	if !strings.EqualFold(strings.TrimSuffix(u.Path, "/"), "/PowerShell") {
		return &runspace.RemoteError{Type: typeRemoting, Category: "OpenError", FQID: "-2144108316,PSSessionOpenFailed",
			Msg: fmt.Sprintf("Connecting to remote server %s failed with the following error message : The WinRM client received an HTTP status code of 404 from the remote WS-Management service. For more information, see the about_Remote_Troubleshooting Help topic.", s.target)}
	}
	if !strings.EqualFold(s.target, s.w.server.Fqdn) && !strings.EqualFold(s.target, s.w.server.Name) {
		s.w.sim.counters.add(func(c *Counters) { c.HostMismatches++ })
	}
	s.targetListener = -1
	for i, l := range s.w.sim.listeners {
		if strings.EqualFold(s.target, l.host) || strings.EqualFold(s.target, l.worker.server.Name) {
			s.targetListener = i
		}
	}
	return nil
}

func (s *session) initErr(re *runspace.RemoteError) int {
	s.w.sim.counters.add(func(c *Counters) { c.InitErrors++ })
	if err := s.frame(runspace.Frame{InitErr: re}); err != nil {
		return exitScript
	}
	return exitInitError
}

// noise is what a real powershell.exe prints around the bootstrap: a BOM
// and a warning from Import-PSSession on stdout, the "Preparing modules
// for first use." progress record as CLIXML on stderr.
func (s *session) noise() {
	_, _ = s.stderr.Write(clixml(`<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj>`))
	s.out.WriteString("\xef\xbb\xbf")
	if s.remoting {
		s.out.WriteString("WARNING: The names of some imported commands from the module 'tmp_exsim.psm1' include unapproved verbs that might make them less discoverable. To find the commands with unapproved verbs, run the Import-Module command again with the Verbose parameter. For a list of approved verbs, type Get-Verb.\r\n")
	}
}

// clixml wraps serialized records the way powershell.exe writes them to a
// redirected stderr.
func clixml(objs string) []byte {
	return []byte("#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\">" + objs + "</Objs>\r\n")
}

// clixmlText escapes text for a CLIXML <S> element; line breaks become
// _x000D__x000A_ as PowerShell's serializer writes them.
func clixmlText(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "\r", "_x000D_", "\n", "_x000A_")
	return r.Replace(s)
}

// scriptError reports an uncaught script error on stderr.
func (s *session) scriptError(msg string) {
	_, _ = s.stderr.Write(clixml(`<S S="Error">` + clixmlText(msg) + "_x000D__x000A_</S>"))
}

func (s *session) frame(f runspace.Frame) error {
	line, err := runspace.EncodeLine(f)
	if err != nil {
		return err
	}
	if _, err := s.out.Write(line); err != nil {
		return err
	}
	return s.out.Flush()
}

// serve answers requests until EOF.
func (s *session) serve() int {
	for {
		line, err := s.nextTagged()
		switch {
		case s.ctx.Err() != nil:
			return exitKilled
		case errors.Is(err, io.EOF):
			return exitOK
		case err != nil:
			return exitScript
		}
		if code, stop := s.handle(line); stop {
			return code
		}
	}
}

// errTruncated ends a session cut by Faults.Truncate.
var errTruncated = errors.New("response truncated by fault injection")

// handle answers one request line. It reports stop when the session must
// end (stdout gone, cancelled, or truncated).
func (s *session) handle(line []byte) (int, bool) {
	sim := s.w.sim
	req, err := runspace.DecodeRequest(line)
	if err != nil {
		// The bootstrap's catch block answers with the id it had: 0.
		re := errBootstrap(err.Error())
		if err := s.frame(runspace.Frame{Err: re}); err != nil {
			return exitScript, true
		}
		return 0, false
	}
	started := time.Now()
	entry := Call{Time: started.UTC(), Listener: s.w.index, User: s.user, Session: s.id, ID: req.ID, Cmd: req.Cmd,
		Args: req.Args, Select: req.Select}
	cmd := lookupCmdlet(req.Cmd)
	if cmd == nil {
		entry.Result = "error"
		return s.finish(&entry, started, nil, errBootstrap("cmdlet is not in the easconnector allowlist: "+req.Cmd))
	}
	entry.Cmd = cmd.name
	// The bootstrap's own checks (its per-cmdlet parameter allowlist, no
	// null for a list) come before PowerShell binds anything.
	args, err := runspace.CheckWireArgs(cmd.name, req.Args)
	if err != nil {
		return s.finish(&entry, started, nil, errBootstrap(err.Error()))
	}
	req.Args = args
	// The remote end of an implicit-remoting session fails the call before
	// the cmdlet runs, and leaves the session Broken: the bootstrap then
	// exits 4 after the err frame.
	if s.remoting {
		// The implicit-remoting session imports only what the account's
		// roles grant (the PSRP endpoint's Roles), so the bootstrap's call
		// of any other cmdlet fails as an unknown command.
		if !sim.granted(s.user, cmd.name) {
			return s.finish(&entry, started, nil, errCommandNotFound(cmd.name))
		}
		if t := s.targetListener; t >= 0 && t != s.w.index && sim.killed(t) {
			entry.Result = "error"
			code, _ := s.finish(&entry, started, nil, &runspace.RemoteError{Type: typeRemoting, Category: "OperationStopped", FQID: "JobFailure",
				Msg: sessionBroken(s.target)})
			return s.broken(code)
		}
		if q := sim.quotas(); q.PowerShellMaxCmdlets > 0 {
			if wait := sim.counters.takeBudget(s.user, time.Now(), q.PowerShellMaxCmdlets, q.PowerShellMaxCmdletsTimePeriod); wait > 0 {
				entry.Result = "throttled"
				code, _ := s.finish(&entry, started, nil, &runspace.RemoteError{Type: typeRemoting, Category: "OperationStopped", FQID: "JobFailure",
					Msg: quotaCmdlets(s.target, q.PowerShellMaxCmdlets, int(q.PowerShellMaxCmdletsTimePeriod/time.Second), wait.Milliseconds())})
				return s.broken(code)
			}
		}
	}
	c := &call{ctx: s.ctx, s: s, w: s.w, cmd: cmd, req: req, defaultEA: "Stop"}
	err, hung := s.w.execute(c, &entry)
	if hung {
		return exitKilled, true
	}
	return s.finish(&entry, started, c, err)
}

// execute runs a call that passed its session's checks, for both session
// kinds: the cmdlet's faults, parameter binding, latency and the cmdlet
// itself. It starts the cmdlet in the counters; the caller's finish ends
// it. hung reports that Faults.Hang held the call until c.ctx ended (the
// call is then logged and ended here).
func (w *worker) execute(c *call, entry *Call) (err error, hung bool) {
	sim := w.sim
	cmd := c.cmd
	sim.counters.cmdletStart(cmd.name, cmd.write) // finish ends it
	f := sim.faults()
	if f.appliesTo(cmd.name) {
		c.faults = f
	}
	if c.faults.Hang {
		sim.counters.add(func(c *Counters) { c.Hung++ })
		entry.Result = "hang"
		sim.counters.logCall(*entry)
		<-c.ctx.Done()
		sim.counters.cmdletEnd(0)
		return c.ctx.Err(), true
	}
	args, re := bindArgs(cmd, c.req.Args)
	if re != nil {
		return re, false
	}
	c.args = args
	c.lat = sim.profile.Latency(cmd.name)
	if err := sleepCtx(c.ctx, c.lat.Fixed+c.lat.jitter(sim.rand())+c.faults.Slowdown); err != nil {
		return err, false
	}
	if d := sim.quotas().MicroDelay; d > 0 {
		if err := sleepCtx(c.ctx, d); err != nil {
			return err, false
		}
		c.warn(microDelay(d))
	}
	if c.faults.ErrorRate > 0 && sim.rand() < c.faults.ErrorRate {
		sim.counters.add(func(c *Counters) { c.InjectedErrors++ })
		return w.taskErr(cmd.name, typeADTransient, "NotSpecified", adTransient(sim.org.DomainController())), false
	}
	return cmd.run(c), false
}

// broken ends a session whose remoting session broke, unless writing the
// err frame already ended it.
func (s *session) broken(code int) (int, bool) {
	if code != 0 {
		return code, true
	}
	return exitBroken, true
}

// finish writes the end or err frame of a call, logs it and decides
// whether the session goes on. c is nil for calls refused before they
// reached a cmdlet (cmdletStart not called); err is then never nil.
func (s *session) finish(entry *Call, started time.Time, c *call, err error) (int, bool) {
	sim := s.w.sim
	if c != nil {
		// The call is over before its last frame leaves, so that a client
		// that saw the end frame also sees the counters and log settled.
		sim.counters.cmdletEnd(c.count)
		entry.Objects = c.count
	}
	var last *runspace.Frame // the frame to write after logging
	code, stop := 0, false
	var re *runspace.RemoteError
	switch {
	case err == nil && c != nil && c.faults.Truncate:
		entry.Result = "truncated"
		code, stop = exitScript, true
		defer s.truncate(runspace.Frame{ID: entry.ID, End: true, Count: c.count})
	case err == nil:
		if entry.Result == "" {
			entry.Result = "ok"
		}
		last = &runspace.Frame{ID: entry.ID, End: true, Count: c.count}
	case errors.As(err, &re):
		if entry.Result == "" {
			entry.Result = "error"
		}
		entry.Error = re.Msg
		sim.counters.add(func(c *Counters) { c.Errors++ })
		last = &runspace.Frame{ID: entry.ID, Err: re}
	case errors.Is(err, errTruncated):
		entry.Result = "truncated"
		code, stop = exitScript, true
	default: // cancelled or stdout gone
		entry.Result, entry.Error = "aborted", err.Error()
		code, stop = exitScript, true
		if s.ctx.Err() != nil {
			code = exitKilled
		}
	}
	entry.Duration = time.Since(started)
	sim.counters.logCall(*entry)
	if last != nil {
		if ferr := s.frame(*last); ferr != nil {
			return exitScript, true
		}
	}
	return code, stop
}

// truncate writes the first half of f without a line end, flushes, and
// counts the cut: the client sees a stream that stops mid-frame.
func (s *session) truncate(f runspace.Frame) {
	s.w.sim.counters.add(func(c *Counters) { c.Truncated++ })
	line, err := runspace.EncodeLine(f)
	if err != nil {
		return
	}
	_, _ = s.out.Write(line[:len(line)/2])
	_ = s.out.Flush()
}

// call is one cmdlet invocation in a session.
type call struct {
	ctx    context.Context
	s      *session  // WinRS sessions; nil for PSRP
	ps     *pipeline // PSRP pipelines; nil for WinRS
	w      *worker
	env    psEnv
	cmd    *cmdlet
	req    runspace.Request
	args   bound
	lat    Latency
	faults Faults
	debt   time.Duration // per-object latency not slept yet
	count  int           // obj frames written
	// defaultEA is $ErrorActionPreference: the bootstrap sets Stop, an
	// Exchange remote session keeps PowerShell's Continue.
	defaultEA string
}

func (c *call) org() *Org { return c.w.sim.org }

// emit writes one output object, as the bootstrap does only when the
// request has a Select list, after paying its per-object latency.
func emit[T any](c *call, sel selection[T], rec *T) error {
	if c.ps != nil {
		return psEmit(c, sel, rec)
	}
	c.debt += c.lat.PerObject
	if c.debt >= time.Millisecond {
		if err := c.s.out.Flush(); err != nil {
			return err
		}
		if err := sleepCtx(c.ctx, c.debt); err != nil {
			return err
		}
		c.debt = 0
	} else if err := c.ctx.Err(); err != nil {
		return err
	}
	if len(c.req.Select) == 0 {
		return nil
	}
	c.s.buf = sel.appendObject(c.s.buf[:0], rec)
	if c.faults.Truncate && c.count >= c.faults.TruncateAfter {
		c.s.truncate(runspace.Frame{ID: c.req.ID, Obj: c.s.buf})
		return errTruncated
	}
	line, err := runspace.EncodeLine(runspace.Frame{ID: c.req.ID, Obj: c.s.buf})
	if err != nil {
		return err
	}
	if _, err := c.s.out.Write(line); err != nil {
		return err
	}
	c.count++
	return nil
}

// preference returns the ActionPreference given by -<name>, or def.
func (c *call) preference(name, def string) string {
	if v, ok := c.args.str(name); ok {
		return v
	}
	return def
}

// writeError reports a non-terminating error. The bootstrap sets
// $ErrorActionPreference = 'Stop', so by default it terminates the call;
// -ErrorAction SilentlyContinue or Ignore drops it, and Continue writes it
// to stderr and lets the call end normally.
func (c *call) writeError(re *runspace.RemoteError) error {
	switch c.preference("ErrorAction", c.defaultEA) {
	case "SilentlyContinue", "Ignore":
		return nil
	case "Stop":
		return re
	}
	if c.ps != nil {
		return c.ps.errorRecord(c, re)
	}
	c.s.scriptError(re.Msg)
	return nil
}

// warn writes a warning record to stderr. The real bootstrap sets
// $WarningPreference = 'SilentlyContinue', which would hide it; the
// simulator shows it (unless -WarningAction says otherwise) so that the
// client's diagnostics can be tested.
func (c *call) warn(msg string) {
	switch c.preference("WarningAction", "Continue") {
	case "SilentlyContinue", "Ignore":
		return
	}
	if c.ps != nil {
		c.ps.warning(msg)
		return
	}
	_ = c.s.out.Flush()
	_, _ = c.s.stderr.Write(clixml(`<S S="warning">` + clixmlText(msg) + "</S>"))
}

// whatIf prints ShouldProcess' message on stdout, as the host does.
func (c *call) whatIf(msg string) {
	if c.ps != nil {
		// ShouldProcess writes this through the host's UI; the simulated
		// endpoint does not model host calls, so a PSRP client sees
		// nothing, as it would with a host that ignores WriteLine.
		return
	}
	c.s.out.WriteString("What if: " + msg + "\r\n")
}

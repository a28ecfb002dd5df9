package wsman

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// The WS-Management binding of the PowerShell Remoting Protocol (MS-PSRP
// 3.1.5.3): a shell whose ResourceURI is
// http://schemas.microsoft.com/powershell/<configuration> is a runspace pool.
// The client picks the ShellId and sends SESSION_CAPABILITY and
// INIT_RUNSPACEPOOL in creationXml; shell-level Send (stdin, pr) and Receive
// (stdout) carry the pool's messages; each Command is a pipeline whose
// CommandId the client picks and whose first fragments travel in
// rsp:Arguments; Signal ctrl_c stops a pipeline, terminate forgets it. The
// wire shapes follow the Windows recordings in jborean93/pypsrp
// tests/tests_pypsrp/responses/test_psrp_*.yml.

// PowerShellHost serves the PowerShell endpoints of a Server.
type PowerShellHost interface {
	// OpenPool accepts or refuses a Create. A *Fault error is answered as
	// is (a quota fault, say); any other error becomes an InternalError
	// fault carrying its text.
	OpenPool(info PoolInfo) (Pool, error)
}

// PoolInfo describes a Create of a PowerShell shell.
type PoolInfo struct {
	ShellID       string // upper-case GUID chosen by the client
	User          string // authenticated user
	ClientIP      string
	Configuration string            // the ResourceURI's last segment, e.g. "Microsoft.Exchange"
	Options       map[string]string // w:OptionSet of the Create (PROTOCOLVERSION, …), names upper-cased
	CreationXML   []byte            // decoded creationXml: PSRP fragments
	// MaxEnvelope is the largest response envelope the client accepts
	// (its w:MaxEnvelopeSize, bounded by the server's); a pool sizes its
	// fragments to fit, as Windows does.
	MaxEnvelope int
}

// Pool is one runspace pool. Its methods are called from the server's
// goroutines: Run once, StartPipeline and RunPipeline once per Command.
type Pool interface {
	// Run serves the pool's own messages until ctx ends (Delete, idle
	// reaping, DropShell, Close), and is called once for every pool
	// OpenPool returned, with ctx already ended when the shell vanished
	// before it started, so it is where a pool releases what OpenPool
	// took: in yields shell-level Send data in
	// arrival order, out feeds shell-level Receives. out must receive
	// whole PSRP fragments (one or more per Write): Receive hands each
	// fragment out in its own rsp:Stream, as Windows does.
	Run(ctx context.Context, in io.Reader, out io.Writer)
	// StartPipeline accepts or refuses a Command; args is its decoded
	// rsp:Arguments (the first fragments of CREATE_PIPELINE). An error is
	// answered as by OpenPool.
	StartPipeline(cmd Command, args []byte) error
	// RunPipeline runs an accepted pipeline: in yields the command's
	// stdin Sends (further CREATE_PIPELINE fragments, PIPELINE_INPUT), out
	// feeds its Receives (whole fragments). interrupt is closed when the
	// client signals ctrl_c: the pipeline then reports itself Stopped and
	// returns. ctx ends on terminate, Delete or Close.
	RunPipeline(ctx context.Context, cmd Command, args []byte, interrupt <-chan struct{}, in io.Reader, out io.Writer)
}

// fragmentHeader is the size of a PSRP fragment header: ObjectId (8),
// FragmentId (8), flags (1), BlobLength (4, big-endian) (MS-PSRP 2.2.4).
const fragmentHeader = 21

// guidRe is the form of a client-chosen ShellId or CommandId.
var guidRe = regexp.MustCompile(`^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$`)

// configuration returns the PowerShell configuration a ResourceURI names.
func configuration(uri string) string { return uri[len(nsPowerShell)+1:] }

// FaultShellQuota is the quota fault an endpoint answers on Create when the
// user has too many shells, with the endpoint's own text, e.g. Exchange's
// PowerShellMaxConcurrency: "The WS-Management service cannot process the
// request. This user is allowed a maximum of 18 concurrent shells, which has
// been exceeded. Close existing shells or raise the quota for this user."
// (reference/exchange.md §3.4 [E8]).
func FaultShellQuota(message string) *Fault {
	return &Fault{Sender: true, Subcode: "w:QuotaLimit", Code: CodeMaxShells, Reason: message}
}

func errorFault(err error) *Fault {
	var f *Fault
	if errors.As(err, &f) {
		return f
	}
	return &Fault{Subcode: "w:InternalError", Code: CodeStartFailed, Reason: err.Error()}
}

// createPS opens a runspace pool (Create on a PowerShell ResourceURI).
func (s *Server) createPS(r *http.Request, req *request, user string) ([]byte, error) {
	host := s.opts.PowerShell
	cfg := configuration(req.resourceURI)
	if host == nil || !s.hostsConfiguration(cfg) {
		return nil, faultResourceNotFound(req.resourceURI)
	}
	sb := req.shell
	if !containsAll(sb.inputs, "stdin", "pr") || !containsAll(sb.outputs, "stdout") {
		return nil, faultInvalidParameter("A PowerShell shell needs InputStreams \"stdin pr\" and OutputStreams \"stdout\".")
	}
	if sb.creationXML == nil {
		return nil, faultInvalidBody("A PowerShell shell needs creationXml.")
	}
	id := sb.id
	if id == "" {
		id = newGUID()
	}
	if !guidRe.MatchString(id) {
		return nil, faultInvalidParameter(fmt.Sprintf("ShellId %q is not a GUID.", sb.id))
	}
	userKey := strings.ToLower(user)
	now := time.Now()
	clientIP, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		clientIP = r.RemoteAddr
	}
	sh := &shell{
		id: id, user: user, userKey: userKey, clientIP: clientIP, created: now,
		options: maps.Clone(req.options), lastActivity: now, commands: map[string]*command{},
		resourceURI: req.resourceURI, ps: true,
		poolCmd: newCommand(Command{ShellID: id, User: user, Options: maps.Clone(req.options)}),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrServerClosed
	}
	if s.shells[id] != nil {
		s.mu.Unlock()
		return nil, faultInvalidParameter(fmt.Sprintf("A shell with ShellId %s already exists.", id))
	}
	q := s.quotaLocked(userKey)
	if q.shells >= s.opts.MaxShellsPerUser {
		s.mu.Unlock()
		return nil, FaultMaxShells(s.opts.MaxShellsPerUser)
	}
	q.shells++
	s.shells[id] = sh
	n := len(s.shells)
	s.mu.Unlock()

	pool, err := host.OpenPool(PoolInfo{
		ShellID: id, User: user, ClientIP: clientIP, Configuration: cfg,
		Options: maps.Clone(req.options), CreationXML: sb.creationXML, MaxEnvelope: s.maxEnvelope(req),
	})
	if err != nil {
		s.mu.Lock()
		if s.shells[id] == sh {
			s.removeShellLocked(sh, ErrShellDeleted, nil)
		}
		s.mu.Unlock()
		return nil, errorFault(err)
	}
	s.mu.Lock()
	if s.closed || s.shells[id] != sh {
		// The shell went away while the host opened the pool: Run still
		// runs, with its context ended, so the pool can release what
		// OpenPool took.
		s.mu.Unlock()
		sh.poolCmd.cancel(ErrShellDeleted)
		pool.Run(sh.poolCmd.ctx, stdinReader{sh.poolCmd}, outputWriter{c: sh.poolCmd})
		return nil, FaultInvalidSelectors(id)
	}
	sh.pool = pool
	s.procs.Add(1)
	s.mu.Unlock()
	s.stats.add(func(st *Stats) {
		st.ShellsCreated++
		st.CurrentShells = n
		st.MaxConcurrentShells = max(st.MaxConcurrentShells, n)
	})
	s.log.Debug("wsman runspace pool created", "shell", id, "user", user, "configuration", cfg)
	go func() {
		defer s.procs.Done()
		pc := sh.poolCmd
		func() {
			defer func() {
				if p := recover(); p != nil {
					s.log.Error("wsman: pool panicked", "shell", id, "panic", fmt.Sprint(p))
				}
			}()
			pool.Run(pc.ctx, stdinReader{pc}, outputWriter{c: pc})
		}()
		pc.exit(0)
	}()

	address := req.to
	if address == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		address = scheme + "://" + r.Host + r.URL.Path
	}
	return marshalPSCreateResponse(req.messageID, address, req.resourceURI, id, user, clientIP, max(s.opts.IdleTimeout, 0)), nil
}

func containsAll(have []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

func (s *Server) hostsConfiguration(name string) bool {
	for _, c := range s.opts.PowerShellConfigurations {
		if strings.EqualFold(c, name) {
			return true
		}
	}
	return false
}

// commandPS starts a pipeline (Command on a runspace pool's shell).
func (s *Server) commandPS(sh *shell, req *request) ([]byte, error) {
	var args []byte
	for i, a := range req.command.args {
		data, err := decodeBase64(a)
		if err != nil {
			return nil, faultInvalidBody(fmt.Sprintf("rsp:Arguments %d is not base64: %v.", i, err))
		}
		args = append(args, data...)
	}
	id := req.command.id
	if id == "" {
		id = newGUID()
	}
	if !guidRe.MatchString(id) {
		return nil, faultInvalidParameter(fmt.Sprintf("CommandId %q is not a GUID.", req.command.id))
	}
	s.mu.Lock()
	if s.shells[sh.id] != sh {
		s.mu.Unlock()
		return nil, FaultInvalidSelectors(sh.id)
	}
	if old := sh.commands[id]; old != nil {
		// A finished pipeline's id may be reused once it was terminated
		// (pypsrp test_psrp_multiple_invocations.yml); a live one may not.
		s.mu.Unlock()
		return nil, faultInvalidParameter(fmt.Sprintf("CommandId %s is already a command of shell %s.", id, sh.id))
	}
	running := 0
	for _, c := range sh.commands {
		if !c.exited.Load() {
			running++
		}
	}
	if running >= s.opts.MaxProcessesPerShell || s.opts.MaxCommandsPerShell > 0 && sh.started >= s.opts.MaxCommandsPerShell {
		s.mu.Unlock()
		return nil, FaultMaxCommandsPerShell()
	}
	q := s.quotaLocked(sh.userKey)
	if q.operations >= s.opts.MaxOperationsPerUser {
		s.mu.Unlock()
		return nil, FaultMaxOperations(s.opts.MaxOperationsPerUser)
	}
	sh.started++
	options := maps.Clone(sh.options)
	if options == nil {
		options = map[string]string{}
	}
	maps.Copy(options, req.options)
	c := newCommand(Command{ShellID: sh.id, CommandID: id, User: sh.user, Name: req.command.name, Options: options})
	c.ps = true
	c.interrupt = make(chan struct{})
	sh.commands[id] = c
	sh.untombstone(id)
	q.operations++
	pool := sh.pool
	s.mu.Unlock()

	if err := pool.StartPipeline(c.info, args); err != nil {
		s.forget(sh, c)
		c.cancel(ErrTerminated)
		return nil, errorFault(err)
	}
	if err := s.admitStarted(sh, c); err != nil {
		return nil, err
	}
	go func() {
		defer s.procs.Done()
		func() {
			defer func() {
				if p := recover(); p != nil {
					s.log.Error("wsman: pipeline panicked", "command", id, "panic", fmt.Sprint(p))
				}
			}()
			pool.RunPipeline(c.ctx, c.info, args, c.interrupt, stdinReader{c}, outputWriter{c: c})
		}()
		c.exit(0)
		s.stats.add(func(st *Stats) { st.CommandsRunning-- })
	}()
	return marshalCommandResponse(req.messageID, id), nil
}

// interruptOnce closes a pipeline's interrupt channel once.
func (c *command) interruptOnce() {
	c.stopOnce.Do(func() { close(c.interrupt) })
}

// takeFragments removes whole PSRP fragments from the stdout buffer, as many
// as fit budget bytes (at least one, so a fragment larger than the budget is
// still delivered rather than stalling the pool forever). It reports how
// many bytes of whole fragments were buffered. c.mu must be held.
func (c *command) takeFragments(budget int) [][]byte {
	var out [][]byte
	used := 0
	for {
		b := c.stdout.Bytes()
		n := wholeFragment(b)
		if n == 0 || (len(out) > 0 && used+n > budget) {
			break
		}
		out = append(out, bytes.Clone(b[:n]))
		c.stdout.Next(n)
		used += n
	}
	if len(out) > 0 {
		c.broadcast()
	}
	return out
}

// wholeFragment returns the length of the complete fragment at the start of
// b, or 0 when b does not hold one yet.
func wholeFragment(b []byte) int {
	if len(b) < fragmentHeader {
		return 0
	}
	n := fragmentHeader + int(binary.BigEndian.Uint32(b[17:21]))
	if n > len(b) {
		return 0
	}
	return n
}

// receivePS long-polls a runspace pool's or pipeline's output.
func (s *Server) receivePS(ctx context.Context, req *request, user string) ([]byte, error) {
	rb := req.receive
	var (
		sh  *shell
		c   *command
		err error
	)
	if rb.commandID == "" {
		sh, c, err = s.poolFor(user, req.shellID)
	} else {
		sh, c, err = s.commandFor(user, req.shellID, rb.commandID, true)
	}
	if err != nil {
		return nil, err
	}
	defer s.release(sh)
	room := s.maxEnvelope(req) - psReceiveOverhead(req.messageID, rb.commandID)
	// Each fragment is base64 in its own element of about 80 bytes.
	budget := room/4*3 - 64
	if budget < fragmentHeader {
		return nil, faultEnvelopeTooSmall(fmt.Sprintf("A ReceiveResponse needs more than w:MaxEnvelopeSize %d.", s.maxEnvelope(req)))
	}
	timer := time.NewTimer(s.operationTimeout(req))
	defer timer.Stop()
	coalesced := s.opts.Coalesce < 0
	c.mu.Lock()
	for {
		if c.failure != nil {
			f := c.failure
			c.mu.Unlock()
			return nil, f
		}
		select {
		case <-s.done:
			c.mu.Unlock()
			return nil, ErrServerClosed
		default:
		}
		ready := wholeFragment(c.stdout.Bytes()) > 0
		if ready || (c.done && rb.commandID != "") {
			if !coalesced && !c.done && c.stdout.Len() < budget {
				coalesced = true
				c.mu.Unlock()
				if err := s.sleep(ctx, s.opts.Coalesce); err != nil {
					return nil, err
				}
				c.mu.Lock()
				continue
			}
			frags := c.takeFragments(budget)
			done := c.done && wholeFragment(c.stdout.Bytes()) == 0 && rb.commandID != ""
			c.mu.Unlock()
			var total uint64
			for _, f := range frags {
				total += uint64(len(f))
			}
			s.stats.add(func(st *Stats) { st.StdoutBytes += total })
			return marshalPSReceiveResponse(req.messageID, rb.commandID, frags, done), nil
		}
		if c.done {
			// The pool ended without being deleted (it refused the
			// session): the shell is gone for the client.
			c.mu.Unlock()
			return nil, FaultInvalidSelectors(sh.id)
		}
		wake := c.wake
		c.mu.Unlock()
		select {
		case <-wake:
		case <-timer.C:
			return nil, FaultOperationTimeout()
		case <-ctx.Done():
			return nil, errClientGone
		case <-s.done:
			return nil, ErrServerClosed
		}
		c.mu.Lock()
	}
}

// poolFor finds a PowerShell shell for a shell-level request and counts the
// request as pending until release.
func (s *Server) poolFor(user, shellID string) (*shell, *command, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, ErrServerClosed
	}
	sh := s.lookupShellLocked(user, shellID)
	if sh == nil || !sh.ps || sh.poolCmd == nil {
		return nil, nil, FaultInvalidSelectors(shellID)
	}
	sh.lastActivity = time.Now()
	sh.pending++
	return sh, sh.poolCmd, nil
}

// sendPS delivers shell-level (pool) and pipeline input.
func (s *Server) sendPS(ctx context.Context, req *request, user string) ([]byte, error) {
	for _, st := range req.send {
		var (
			sh  *shell
			c   *command
			err error
		)
		if st.commandID == "" {
			sh, c, err = s.poolFor(user, req.shellID)
		} else {
			sh, c, err = s.commandFor(user, req.shellID, st.commandID, true)
		}
		if err != nil {
			return nil, err
		}
		if st.commandID != "" && c.exited.Load() {
			// A pipeline that already ended takes late input and drops
			// it, so a client streaming PIPELINE_INPUT into a pipeline the
			// server refused does not fail on the Send (exsim's choice; the
			// recordings show no Send after a pipeline ended).
			s.release(sh)
			continue
		}
		f := c.send(ctx, s.done, st.data, st.end && st.commandID != "")
		s.release(sh)
		if ctx.Err() != nil {
			return nil, errClientGone
		}
		if f != nil {
			return nil, f
		}
		n := uint64(len(st.data))
		s.stats.add(func(st *Stats) { st.StdinBytes += n })
	}
	return marshalEmptyResponse(actionSendResponse, req.messageID, `<rsp:SendResponse/>`), nil
}

func marshalPSCreateResponse(relatesTo, address, uri, shellID, owner, clientIP string, idle time.Duration) []byte {
	var b bytes.Buffer
	writeEnvelopeStart(&b, actionCreateResponse, relatesTo)
	b.WriteString(`<x:ResourceCreated><a:Address>`)
	escape(&b, address)
	b.WriteString(`</a:Address><a:ReferenceParameters><w:ResourceURI>`)
	escape(&b, uri)
	b.WriteString(`</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">` + shellID +
		`</w:Selector></w:SelectorSet></a:ReferenceParameters></x:ResourceCreated><rsp:Shell><rsp:ShellId>` + shellID +
		`</rsp:ShellId><rsp:ResourceUri>`)
	escape(&b, uri)
	b.WriteString(`</rsp:ResourceUri><rsp:Owner>`)
	escape(&b, owner)
	b.WriteString(`</rsp:Owner><rsp:ClientIP>`)
	escape(&b, clientIP)
	// The fields and their order are those of a Windows Server answer
	// (pypsrp test_psrp_open_runspace.yml).
	b.WriteString(`</rsp:ClientIP><rsp:ProcessId>` + fmt.Sprint(processID) + `</rsp:ProcessId><rsp:IdleTimeOut>` + xsDuration(idle) +
		`</rsp:IdleTimeOut><rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams>` +
		`<rsp:MaxIdleTimeOut>PT2147483.647S</rsp:MaxIdleTimeOut><rsp:Locale>en-US</rsp:Locale><rsp:DataLocale>en-US</rsp:DataLocale>` +
		`<rsp:CompressionMode>NoCompression</rsp:CompressionMode><rsp:ProfileLoaded>Yes</rsp:ProfileLoaded><rsp:Encoding>UTF8</rsp:Encoding>` +
		`<rsp:BufferMode>Block</rsp:BufferMode><rsp:State>Connected</rsp:State><rsp:ShellRunTime>` + xsDayTime(0) +
		`</rsp:ShellRunTime><rsp:ShellInactivity>` + xsDayTime(0) + `</rsp:ShellInactivity></rsp:Shell>`)
	writeEnvelopeEnd(&b)
	return b.Bytes()
}

// processID is the wsmprovhost.exe process id reported in Create responses.
const processID = 4242

// psReceiveOverhead is the size of a PowerShell ReceiveResponse without
// fragments.
func psReceiveOverhead(relatesTo, commandID string) int {
	return len(marshalPSReceiveResponse(relatesTo, commandID, nil, true))
}

// marshalPSReceiveResponse writes one rsp:Stream per fragment, with the
// CommandId of a pipeline and no End attribute, then, once the pipeline
// ended, its CommandState Done with ExitCode 0. While it runs, and for the
// pool, Windows sends no CommandState (pypsrp test_psrp_open_runspace.yml,
// test_psrp_multiple_commands.yml, test_psrp_small_msg_size.yml).
func marshalPSReceiveResponse(relatesTo, commandID string, frags [][]byte, done bool) []byte {
	var b bytes.Buffer
	writeEnvelopeStart(&b, actionReceiveResponse, relatesTo)
	b.WriteString(`<rsp:ReceiveResponse>`)
	for _, f := range frags {
		b.WriteString(`<rsp:Stream Name="stdout"`)
		if commandID != "" {
			b.WriteString(` CommandId="` + commandID + `"`)
		}
		b.WriteString(`>`)
		enc := base64.NewEncoder(base64.StdEncoding, &b)
		_, _ = enc.Write(f)
		_ = enc.Close()
		b.WriteString(`</rsp:Stream>`)
	}
	if commandID != "" && done {
		b.WriteString(`<rsp:CommandState CommandId="` + commandID + `" State="` + stateDone + `"><rsp:ExitCode>0</rsp:ExitCode></rsp:CommandState>`)
	}
	b.WriteString(`</rsp:ReceiveResponse>`)
	writeEnvelopeEnd(&b)
	return b.Bytes()
}

// dispatchPS serves a request on a PowerShell ResourceURI.
func (s *Server) dispatchPS(ctx context.Context, r *http.Request, req *request, user string) ([]byte, error) {
	if s.opts.PowerShell == nil || !s.hostsConfiguration(configuration(req.resourceURI)) {
		return nil, faultResourceNotFound(req.resourceURI)
	}
	switch req.action {
	case actionCreate:
		return s.createPS(r, req, user)
	case actionCommand:
		s.mu.Lock()
		sh := s.lookupShellLocked(user, req.shellID)
		ready := sh != nil && sh.pool != nil
		if sh != nil {
			sh.lastActivity = time.Now()
		}
		s.mu.Unlock()
		if !ready {
			return nil, FaultInvalidSelectors(req.shellID)
		}
		return s.commandPS(sh, req)
	case actionSend:
		if s.injectFault() {
			return nil, FaultProviderFailure()
		}
		return s.sendPS(ctx, req, user)
	case actionReceive:
		if s.injectFault() {
			return nil, FaultProviderFailure()
		}
		return s.receivePS(ctx, req, user)
	case actionSignal:
		return s.signal(req, user)
	case actionDelete:
		return s.deleteShell(req, user)
	}
	return nil, faultActionNotSupported(req.action)
}

// faultUnknownCommand is what Windows answers a request for a CommandId the
// shell does not know, in a cmd shell and a PowerShell shell alike (pypsrp
// tests/tests_pypsrp/responses/test_winrs_bad_cmd_id.yml, and
// test_psrp_receive_failure.yml; the trailing spaces are Windows'). A WinRS
// Receive without a CommandId addresses the cmd shell's own output, which
// winrscmd has none of; exsim answers it with the same fault (the command
// identifier it names does not exist), which is inferred, not recorded.
func faultUnknownCommand() *Fault {
	return &Fault{Sender: true, Subcode: "w:InvalidSelectors", Code: CodeInvalidSelectors,
		Reason:  textInvalidSelectors,
		Message: "The Windows Remote Shell received a request to perform an operation on a command identifier that does not exist. Either the command has completed execution or the client specified an invalid command identifier. ",
		Detail:  FaultDetailUnexpectedSelectors}
}

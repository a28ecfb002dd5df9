package runspace

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"regexp"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/masterzen/winrm"
)

// Call is one cmdlet invocation.
type Call struct {
	// Cmd must be in Allowlist.
	Cmd string
	// Args are bound as data by splatting. Names must be in Params(Cmd)
	// (bootstrap.ps1's per-cmdlet allowlist: PowerShell's common
	// parameters are not). A multi-valued parameter (Param.List) takes a
	// non-nil []string, a non-empty ListEdit or *ListEdit, or ClearList;
	// any other parameter a string, bool (true = switch), integer, float,
	// json.Number or nil ($null).
	Args map[string]any
	// Select lists the properties of each output object that are sent
	// back; without it the cmdlet's objects are not sent.
	Select []string
	// Idempotent calls may be run again on a fresh session when their
	// session broke: reads, and Set-CASMailbox with Add/Remove edits.
	Idempotent bool
}

// Result describes a finished call.
type Result struct {
	Count    int           // objects delivered to each
	Server   string        // endpoint of the session that ran the call
	Attempts int           // 1 unless the pool retried
	Elapsed  time.Duration // including retries and waits for a session
}

// SessionInfo describes a session.
type SessionInfo struct {
	Server   string    // WinRM endpoint the shell lives on
	Host     string    // computer name the bootstrap reported
	Exchange string    // Exchange version the bootstrap reported
	PS       string    // PowerShell version
	ShellID  string    // WinRM ShellId
	OpenedAt time.Time // when the Ready frame arrived
	Requests int       // requests sent so far
}

// Bounds of the close sequence: each WS-Man call gets closeStep, the
// graceful exit after stdin EOF gets exitGrace.
const (
	closeStep = 5 * time.Second
	exitGrace = 2 * time.Second
	// stderrLineMax bounds one stderr line read into the ring.
	stderrLineMax = 64 << 10
	// frameBuffer is how many decoded frames the reader may hold ahead of
	// the caller's callback.
	frameBuffer = 16
	// drainTimeout bounds how long Do keeps reading a request's output
	// after each returned an error, to keep the session usable.
	drainTimeout = 2 * time.Second
)

// errRequestTimeout is the cause of a session killed by RequestTimeout.
var errRequestTimeout = errors.New("request timed out")

// errSessionClosed is the cause of a session's Err after Close.
var errSessionClosed = errors.New("session closed")

// errStalled marks a psrp pipeline stopped after RequestTimeout without
// output: its session is kept, and an idempotent call may run again, as a
// WinRS request whose session was broken for the same reason.
var errStalled = errors.New("pipeline stalled and was stopped")

// errNotSent marks failures that happened before the request reached the
// session's process: a retry cannot apply the call twice.
var errNotSent = errors.New("request not sent")

// Session is one WinRM shell running the bootstrap in powershell.exe. It
// runs one request at a time (Do serializes). A Session is obtained from
// Pool.Acquire or Open; Close it when done (the pool closes its own).
type Session struct {
	opts   *Options
	f      *transportFactory
	ownF   bool // standalone (Open): the factory is closed with the session
	server string
	log    *slog.Logger
	tr     *transport
	client *winrm.Client
	shell  *winrm.Shell
	cmd    *winrm.Command

	frames     chan frameMsg
	quit       chan struct{} // closed by Close: readers stop delivering
	stdoutDone chan struct{} // the stdout reader ended (process gone)
	stderrDone chan struct{}
	diag       diagRing
	throttled  atomic.Bool // a diagnostics line carried a throttling text

	mu       sync.Mutex // held for a whole request: one in flight
	nextID   uint64
	info     SessionInfo
	requests atomic.Int64
	reqStart atomic.Int64 // UnixNano of the last request's start
	broken   atomic.Pointer[error]

	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup // goroutines started by the session

	// owned by the pool (under Pool.mu)
	ep *endpoint

	// kind runs requests and closes: WinRS (winrsKind, the fields above)
	// or PSRP (ps, psrpsession.go).
	kind sessionKind
	ps   *psrpState
}

type frameMsg struct {
	f   Frame
	err error
}

// Open starts one standalone session on server with opts (as NewPool
// validates them; Servers may be empty). It blocks until the Ready frame,
// ctx ends or opts.ConnectTimeout passes.
func Open(ctx context.Context, opts Options, server string) (*Session, error) {
	if len(opts.Servers) == 0 {
		opts.Servers = []string{server}
	}
	o, err := opts.resolve()
	if err != nil {
		return nil, err
	}
	if !validHost(server) {
		return nil, fmt.Errorf("runspace: server %q is not a host name or IP address", server)
	}
	o.logPlainHTTP()
	f, err := newTransportFactory(&o)
	if err != nil {
		return nil, err
	}
	s, err := openSession(ctx, &o, f, server)
	if err != nil {
		f.close()
		return nil, err
	}
	s.ownF = true
	return s, nil
}

// openSession opens a session of the kind o.Mode selects.
func openSession(ctx context.Context, o *Options, f *transportFactory, server string) (*Session, error) {
	if o.Mode == ModePSRP {
		return openPSRP(ctx, o, f, server)
	}
	return openWinRS(ctx, o, f, server)
}

// openWinRS creates the shell, starts powershell.exe with stage 0, sends
// stage 1 and the SessionConfig, and waits for the Ready frame.
func openWinRS(ctx context.Context, o *Options, f *transportFactory, server string) (_ *Session, err error) {
	ctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	s := &Session{
		opts:       o,
		f:          f,
		server:     server,
		log:        o.Logger.With("server", server),
		tr:         f.newTransport(server),
		frames:     make(chan frameMsg, frameBuffer),
		quit:       make(chan struct{}),
		stdoutDone: make(chan struct{}),
		stderrDone: make(chan struct{}),
	}
	s.kind = winrsKind{s}
	s.info.Server = server
	// The library's calls take no context: a deadline aborts the
	// transport, which ends whatever is in flight.
	stop := context.AfterFunc(ctx, s.tr.abort)
	defer func() {
		if !stop() && err == nil {
			err = fmt.Errorf("open session on %s: %w", server, context.Cause(ctx))
		}
		if err != nil {
			cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 2*closeStep)
			_ = s.Close(cctx)
			ccancel()
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
				err = fmt.Errorf("%w (connect timeout %s)%s", err, o.ConnectTimeout, s.diag.suffix())
			}
		}
	}()

	params := winrm.NewParameters(o.wsmanTimeout(), "en-US", envelopeSize)
	params.TransportDecorator = func() winrm.Transporter { return s.tr }
	ep := o.endpoint(server)
	s.client, err = winrm.NewClientWithParameters(ep, o.User, o.Password.Reveal(), params)
	if err != nil {
		return nil, fmt.Errorf("open session on %s: %w", server, err)
	}
	shell, err := s.client.CreateShell()
	if err != nil {
		return nil, fmt.Errorf("open session on %s: create shell: %w", server, ctxErr(ctx, err))
	}
	s.shell = shell
	s.info.ShellID = s.tr.shell()
	// context.Background: the library calls Command.Close itself when
	// this context ends, racing our own Close (double close of a
	// channel). Deadlines reach the command through the transport.
	cmd, err := shell.ExecuteWithContext(context.Background(), PowerShellExe, CommandArgs()...)
	if err != nil {
		return nil, fmt.Errorf("open session on %s: start powershell: %w", server, ctxErr(ctx, err))
	}
	s.cmd = cmd
	s.wg.Add(2)
	go s.readStdout()
	go s.readStderr()

	sc := SessionConfig{Mode: o.Mode, ConnectionURI: connectionURI(server)}
	if o.SecondHopCredential && o.Mode == ModeRemoting {
		sc.User, sc.Password = o.User, o.Password
	}
	cfg, err := sc.Encode()
	if err != nil {
		return nil, err
	}
	for _, line := range [][]byte{Stage1Line(), cfg} {
		if err := s.writeLine(line); err != nil {
			return nil, fmt.Errorf("open session on %s: send bootstrap: %w", server, ctxErr(ctx, err))
		}
	}
	select {
	case m, ok := <-s.frames:
		switch {
		case !ok:
			return nil, fmt.Errorf("open session on %s: %w: powershell ended before its ready frame: %w%s",
				server, ErrInitFailed, s.Err(), s.diag.suffix())
		case m.err != nil:
			return nil, fmt.Errorf("open session on %s: %w", server, m.err)
		case m.f.InitErr != nil:
			var werr error = m.f.InitErr
			if isThrottleText(m.f.InitErr.Msg) {
				werr = fmt.Errorf("%w: %w", ErrThrottled, m.f.InitErr)
			}
			return nil, fmt.Errorf("open session on %s: %w: %w", server, ErrInitFailed, werr)
		case !m.f.Ready:
			return nil, fmt.Errorf("open session on %s: %w: first frame is not ready (id %d)", server, ErrProtocol, m.f.ID)
		}
		s.info.Host, s.info.Exchange, s.info.PS = m.f.Host, m.f.Exchange, m.f.PS
	case <-ctx.Done():
		return nil, fmt.Errorf("open session on %s: waiting for ready frame: %w", server, context.Cause(ctx))
	}
	s.info.OpenedAt = time.Now()
	s.log.Debug("runspace session opened", "shell", s.info.ShellID, "host", s.info.Host,
		"exchange", s.info.Exchange, "ps", s.info.PS)
	return s, nil
}

// ctxErr prefers the context's error over the transport's "context
// canceled" that an abort produces.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", context.Cause(ctx), err)
	}
	return err
}

// writeLine sends one line with one Stdin.Write (one WS-Man Send for lines
// below the envelope size).
func (s *Session) writeLine(line []byte) error {
	if _, err := s.cmd.Stdin.Write(line); err != nil {
		if errors.Is(err, io.ErrShortWrite) {
			if cause := s.tr.lastSendError(); cause != nil {
				err = fmt.Errorf("%w: %w", err, cause)
			}
		}
		err = fmt.Errorf("stdin: %w", err)
		s.markBroken(err)
		var (
			fe *FaultError
			se *StatusError
		)
		if errors.As(err, &fe) || errors.As(err, &se) {
			// The server answered and refused the Send: the line was
			// not delivered, so the call may run elsewhere.
			err = fmt.Errorf("%w: %w", errNotSent, err)
		}
		return err
	}
	return nil
}

// markBroken records the first cause that made the session unusable.
func (s *Session) markBroken(err error) {
	if !errors.Is(err, ErrSessionBroken) {
		err = fmt.Errorf("%w: %w", ErrSessionBroken, err)
	}
	s.broken.CompareAndSwap(nil, &err)
}

// Err returns why the session is unusable, or nil while it is healthy.
func (s *Session) Err() error {
	if p := s.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// Info describes the session.
func (s *Session) Info() SessionInfo {
	info := s.info
	info.Requests = int(s.requests.Load())
	return info
}

// lastStart returns when the last request started (zero if none).
func (s *Session) lastStart() time.Time {
	if n := s.reqStart.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Server returns the endpoint the session runs on.
func (s *Session) Server() string { return s.server }

func (s *Session) deliver(m frameMsg) bool {
	select {
	case s.frames <- m:
		return true
	case <-s.quit:
		return false
	}
}

// readStdout splits stdout into lines (they may arrive split across
// Receives), decodes protocol frames and hands them to Do; other lines are
// diagnostics. It keeps draining until the command ends, so the library's
// Receive loop never blocks on an unread pipe.
func (s *Session) readStdout() {
	defer s.wg.Done()
	defer close(s.stdoutDone)
	defer close(s.frames)
	sc := bufio.NewScanner(s.cmd.Stdout)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLineBytes+2)
	deliver := true
	for sc.Scan() {
		line := sc.Bytes()
		f, err := DecodeFrame(line)
		if errors.Is(err, ErrUntagged) {
			s.noteDiag("stdout", string(line))
			continue
		}
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrProtocol, err)
			s.markBroken(err)
		}
		if deliver {
			deliver = s.deliver(frameMsg{f: f, err: err})
		}
	}
	err := sc.Err()
	if err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("%w: line longer than %d bytes", ErrProtocol, MaxLineBytes)
		}
		_, _ = io.Copy(io.Discard, s.cmd.Stdout)
		s.markBroken(fmt.Errorf("stdout: %w", err))
		return
	}
	s.cmd.Wait()
	s.markBroken(fmt.Errorf("powershell exited with code %d", s.cmd.ExitCode()))
}

// readStderr drains stderr into the diagnostics ring.
func (s *Session) readStderr() {
	defer s.wg.Done()
	defer close(s.stderrDone)
	r := bufio.NewReaderSize(s.cmd.Stderr, 4096)
	var line []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		if len(line) < stderrLineMax {
			line = append(line, chunk[:min(len(chunk), stderrLineMax-len(line))]...)
		}
		if err != nil {
			if len(line) > 0 {
				s.noteDiag("stderr", string(line))
			}
			_, _ = io.Copy(io.Discard, s.cmd.Stderr)
			return
		}
		if !isPrefix {
			s.noteDiag("stderr", string(line))
			line = line[:0]
		}
	}
}

func (s *Session) noteDiag(stream, line string) {
	kept, throttle := s.diag.add(stream, line)
	if throttle {
		s.throttled.Store(true)
	}
	for _, l := range kept {
		if l != "" {
			s.log.Debug("runspace diagnostics", "stream", stream, "line", l)
		}
	}
}

var selectNameRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,63}$`)

// checkCall refuses what the bootstrap would refuse, before anything is
// sent, with an error naming the offending part.
func checkCall(c Call) error {
	if !Allowed(c.Cmd) {
		return fmt.Errorf("%w: cmdlet %q is not in the allowlist", ErrInvalidCall, c.Cmd)
	}
	seen := make(map[string]bool, len(c.Args))
	for name, v := range c.Args {
		p, ok := lookupParam(c.Cmd, name)
		if !ok {
			return fmt.Errorf("%w: %s: parameter %q is not in the allowlist of %s (bootstrap.ps1)", ErrInvalidCall, c.Cmd, name, c.Cmd)
		}
		if seen[p.Name] {
			return fmt.Errorf("%w: %s: parameter %s given twice", ErrInvalidCall, c.Cmd, p.Name)
		}
		seen[p.Name] = true
		if err := checkValue(c.Cmd, p, v); err != nil {
			return err
		}
	}
	for _, p := range c.Select {
		if !selectNameRe.MatchString(p) {
			return fmt.Errorf("%w: %s: select property %q is not a property name", ErrInvalidCall, c.Cmd, p)
		}
	}
	return nil
}

// checkValue checks one argument against its parameter's kind: a
// multi-valued parameter takes a non-nil []string, a non-empty ListEdit or
// ClearList; any other parameter one scalar or nil.
func checkValue(cmd string, p Param, v any) error {
	name := p.Name
	if p.List {
		switch v := v.(type) {
		case []string:
			if v == nil {
				return fmt.Errorf("%w: %s -%s: nil list: it would bind as $null and empty the whole list (use ClearList to clear it)", ErrInvalidCall, cmd, name)
			}
			if !allValidUTF8(v) {
				return invalidUTF8(cmd, name)
			}
		case ListEdit:
			return checkEdit(cmd, name, &v)
		case *ListEdit:
			if v == nil {
				return fmt.Errorf("%w: %s -%s: nil *ListEdit", ErrInvalidCall, cmd, name)
			}
			return checkEdit(cmd, name, v)
		case ClearList:
		case nil:
			return fmt.Errorf("%w: %s -%s: nil for a list: it would bind as $null and empty the whole list (use ClearList to clear it)", ErrInvalidCall, cmd, name)
		default:
			return fmt.Errorf("%w: %s -%s: a list takes []string, ListEdit or ClearList, not %T", ErrInvalidCall, cmd, name, v)
		}
		return nil
	}
	switch v := v.(type) {
	case nil, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, json.Number:
	case string:
		if !utf8.ValidString(v) {
			return invalidUTF8(cmd, name)
		}
	case float32:
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%w: %s -%s: %v is not a JSON number", ErrInvalidCall, cmd, name, v)
		}
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%w: %s -%s: %v is not a JSON number", ErrInvalidCall, cmd, name, v)
		}
	case []string, ListEdit, *ListEdit, ClearList:
		return fmt.Errorf("%w: %s -%s: takes one value, not a list or an edit", ErrInvalidCall, cmd, name)
	default:
		return fmt.Errorf("%w: %s -%s: unsupported value type %T", ErrInvalidCall, cmd, name, v)
	}
	return nil
}

func checkEdit(cmd, name string, e *ListEdit) error {
	if len(e.Add) == 0 && len(e.Remove) == 0 {
		return fmt.Errorf("%w: %s -%s: empty edit", ErrInvalidCall, cmd, name)
	}
	if !allValidUTF8(e.Add) || !allValidUTF8(e.Remove) {
		return invalidUTF8(cmd, name)
	}
	return nil
}

// invalidUTF8: JSON would silently replace the bytes with U+FFFD, changing
// an identity or device id into another one.
func invalidUTF8(cmd, name string) error {
	return fmt.Errorf("%w: %s -%s: value is not valid UTF-8", ErrInvalidCall, cmd, name)
}

func allValidUTF8(ss []string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

// Do runs c on the session and streams each output object to each (which
// may be nil) as it arrives, on the calling goroutine. It returns when the
// cmdlet finished (Result), failed (*RemoteError, possibly wrapped with
// ErrThrottled) or the session broke (ErrSessionBroken). If each returns an
// error, the rest of the output is drained and discarded and that error is
// returned; the session stays usable when the drain completes in time.
//
// A request whose ctx ends, or that goes Options.RequestTimeout without any
// output (an object or its end), breaks the session: WinRS has no way to
// interrupt a cmdlet. A long stream that keeps producing objects is not
// cut; bound its total time with ctx.
func (s *Session) Do(ctx context.Context, c Call, each func(json.RawMessage) error) (Result, error) {
	return s.kind.do(ctx, c, each)
}

func (s *Session) doWinRS(ctx context.Context, c Call, each func(json.RawMessage) error) (Result, error) {
	start := time.Now()
	res := Result{Server: s.server, Attempts: 1}
	if err := checkCall(c); err != nil {
		return res, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.Err(); err != nil {
		return res, fmt.Errorf("%w: %w", errNotSent, err)
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("%w: %w", errNotSent, err)
	}
	s.nextID++
	id := s.nextID
	line, err := EncodeLine(Request{ID: id, Cmd: c.Cmd, Args: c.Args, Select: c.Select})
	if err != nil {
		return res, fmt.Errorf("%w: %s: %w", ErrInvalidCall, c.Cmd, err)
	}
	if len(line) > MaxLineBytes {
		return res, fmt.Errorf("%w: %s: request of %d bytes exceeds %d", ErrInvalidCall, c.Cmd, len(line), MaxLineBytes)
	}
	s.requests.Add(1)
	s.reqStart.Store(time.Now().UnixNano())

	// No interrupt exists for a cmdlet: a request that ends (ctx) or
	// stalls (no frame for RequestTimeout) costs the session. Aborting
	// the transport ends the blocking library calls and the output stream.
	idle := time.AfterFunc(s.opts.RequestTimeout, func() {
		s.markBroken(fmt.Errorf("%s (request %d): %w: no output for %s", c.Cmd, id, errRequestTimeout, s.opts.RequestTimeout))
		s.tr.abort()
	})
	defer idle.Stop()
	stop := context.AfterFunc(ctx, func() {
		s.markBroken(fmt.Errorf("%s (request %d): %w", c.Cmd, id, context.Cause(ctx)))
		s.tr.abort()
	})
	defer stop()

	if err := s.writeLine(line); err != nil {
		res.Elapsed = time.Since(start)
		return res, s.requestErr(ctx, c, id, err)
	}
	var (
		abortErr error            // each's error: drain the rest, then return it
		drain    <-chan time.Time // bounds the drain after abortErr
	)
	for {
		select {
		case <-drain:
			// The rest of the output would hold the caller too long:
			// discard the session instead.
			s.markBroken(fmt.Errorf("%s (request %d): output abandoned by the caller", c.Cmd, id))
			s.tr.abort()
			res.Elapsed = time.Since(start)
			return res, abortErr
		case m, ok := <-s.frames:
			if !ok {
				res.Elapsed = time.Since(start)
				return res, s.requestErr(ctx, c, id, s.Err())
			}
			if m.err != nil {
				res.Elapsed = time.Since(start)
				return res, s.requestErr(ctx, c, id, m.err)
			}
			idle.Reset(s.opts.RequestTimeout)
			f := m.f
			if f.ID != id {
				err := fmt.Errorf("%w: frame for request %d while waiting for %d", ErrProtocol, f.ID, id)
				s.markBroken(err)
				res.Elapsed = time.Since(start)
				return res, fmt.Errorf("%s: %w", c.Cmd, err)
			}
			switch {
			case f.Obj != nil:
				res.Count++
				if abortErr == nil && each != nil {
					if abortErr = each(f.Obj); abortErr != nil {
						t := time.NewTimer(drainTimeout)
						defer t.Stop()
						drain = t.C
					}
				}
			case f.End:
				res.Elapsed = time.Since(start)
				if f.Count != res.Count {
					err := fmt.Errorf("%w: %s reported %d objects, %d received", ErrProtocol, c.Cmd, f.Count, res.Count)
					s.markBroken(err)
					return res, err
				}
				if abortErr != nil {
					return res, abortErr
				}
				return res, nil
			case f.Err != nil:
				res.Elapsed = time.Since(start)
				if remoteSessionLost(f.Err) && !isThrottleText(f.Err.Msg) {
					s.markBroken(f.Err)
				}
				if abortErr != nil {
					return res, abortErr
				}
				return res, fmt.Errorf("%s: %w", c.Cmd, remoteError(f.Err))
			default:
				err := fmt.Errorf("%w: unexpected frame for request %d", ErrProtocol, id)
				s.markBroken(err)
				res.Elapsed = time.Since(start)
				return res, err
			}
		case <-ctx.Done():
			res.Elapsed = time.Since(start)
			return res, s.requestErr(ctx, c, id, nil)
		}
	}
}

// requestErr builds the error of a request whose session broke.
func (s *Session) requestErr(ctx context.Context, c Call, id uint64, err error) error {
	if ctx.Err() != nil {
		err = fmt.Errorf("%w: %w", ErrSessionBroken, context.Cause(ctx))
		s.markBroken(err)
	}
	switch {
	case err == nil:
		err = ErrSessionBroken
	case !errors.Is(err, ErrSessionBroken):
		err = fmt.Errorf("%w: %w", ErrSessionBroken, err)
	}
	return fmt.Errorf("%s (request %d on %s): %w%s", c.Cmd, id, s.server, err, s.diag.suffix())
}

// Close ends the session: EOF on stdin (the bootstrap leaves its loop),
// terminate signal, shell deletion, each bounded in time, then every
// request in flight is aborted and the session's goroutines are awaited
// within ctx. It is safe to call more than once.
func (s *Session) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { s.closeErr = s.kind.close(ctx) })
	return s.closeErr
}

func (s *Session) closeWinRS(ctx context.Context) error {
	close(s.quit)
	healthy := s.Err() == nil
	s.markBroken(errSessionClosed)
	var errs []error
	if s.shell != nil {
		aborted := s.tr.ctx.Err() != nil
		exited := false
		if s.cmd != nil && !aborted && healthy {
			// Graceful: the bootstrap exits at EOF.
			if err := s.bounded(ctx, closeStep, s.cmd.Stdin.Close); err == nil {
				exited = waitChan(ctx, s.stdoutDone, exitGrace)
			}
		}
		if s.cmd != nil && !aborted && !exited && !isClosed(s.stdoutDone) {
			if err := s.bounded(ctx, closeStep, s.cmd.Close); err != nil {
				errs = append(errs, fmt.Errorf("terminate: %w", err))
			}
		}
		if err := s.deleteShell(ctx, aborted); err != nil {
			errs = append(errs, fmt.Errorf("delete shell %s: %w", s.info.ShellID, err))
		}
	}
	return s.finishClose(ctx, errs)
}

// deleteShell deletes the WinRM shell (which also ends its process). After
// an abort the session's transport is dead, so a fresh one is used: a shell
// left behind counts against MaxShellsPerUser until WinRM's idle timeout.
func (s *Session) deleteShell(ctx context.Context, aborted bool) error {
	if !aborted {
		return s.bounded(ctx, closeStep, s.shell.Close)
	}
	id := s.tr.shell()
	if id == "" {
		return nil
	}
	tr := s.f.newTransport(s.server)
	defer tr.abort()
	params := winrm.NewParameters(s.opts.wsmanTimeout(), "en-US", envelopeSize)
	params.TransportDecorator = func() winrm.Transporter { return tr }
	ep := s.opts.endpoint(s.server)
	client, err := winrm.NewClientWithParameters(ep, s.opts.User, s.opts.Password.Reveal(), params)
	if err != nil {
		return err
	}
	return s.boundedAbort(ctx, closeStep, client.NewShell(id).Close, tr)
}

// bounded runs a blocking library call (they take no context) for at most d
// or until ctx ends. On expiry the call keeps running until the transport
// is aborted; the session's WaitGroup tracks it.
func (s *Session) bounded(ctx context.Context, d time.Duration, call func() error) error {
	return s.boundedAbort(ctx, d, call, nil)
}

func (s *Session) boundedAbort(ctx context.Context, d time.Duration, call func() error, tr *transport) error {
	done := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		done <- call()
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
	case <-ctx.Done():
	}
	if tr != nil {
		tr.abort()
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("no answer within %s", d)
}

func waitChan(ctx context.Context, ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// waitGroup waits for wg within ctx.
func waitGroup(ctx context.Context, wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// finishClose is the end of closing either session kind: the transport is
// aborted, the session's goroutines are waited for (within ctx) and a
// transport factory of its own is closed; errs are what the kind's own
// steps could not do.
func (s *Session) finishClose(ctx context.Context, errs []error) error {
	s.tr.abort()
	if !waitGroup(ctx, &s.wg) {
		errs = append(errs, fmt.Errorf("session goroutines: %w", ctx.Err()))
	}
	if s.ownF {
		s.f.close()
	}
	if len(errs) > 0 {
		return fmt.Errorf("close session on %s: %w", s.server, errors.Join(errs...))
	}
	return nil
}

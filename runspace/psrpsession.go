package runspace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/easconnector/easconnector/runspace/psrp"
)

// The psrp session kind: one Session is one runspace pool (of one
// runspace) on the server's /PowerShell/ endpoint, and each call is one
// pipeline of one cmdlet whose parameters travel as typed CLIXML values.
// No script text exists on this path: psrp.BuildCreatePipeline sends
// IsScript=false and accepts only cmdlet names, the cmdlet must be in
// Allowlist and each parameter in its bootstrap.ps1 allowlist entry before
// anything is sent. The pool (acquire/release, recycling, adaptive concurrency, CAS
// discovery and failover, deadlines, metrics) is the same for both kinds;
// a Session dispatches Do and Close on its kind (sessionKind).

const (
	// psrpDefaultEnvelope is the MaxEnvelopeSize used when the server does
	// not tell its own: WinRM's default MaxEnvelopeSizekb was 150 on
	// Windows Server 2008 R2 and is 500 since 2012, so 150 KB fits every
	// Exchange host.
	psrpDefaultEnvelope = 153600
	// psrpMaxEnvelope caps what a server's configuration may raise it to
	// (pypsrp's recordings show 512000 against a 500 KB server).
	psrpMaxEnvelope = 512000
	// psrpStopGrace bounds the wait for PIPELINE_STATE Stopped after the
	// stop signal; past it the session is given up.
	psrpStopGrace = 15 * time.Second
)

// psrpKeepAlive is the idle interval after which a session sends a short
// pool-level Receive, so that neither WinRM's IdleTimeout nor a load
// balancer drops an idle runspace pool (a variable for tests).
var psrpKeepAlive = 2 * time.Minute

// newGUID makes RunspacePool and pipeline ids; replay tests substitute
// the recorded ones.
var newGUID = psrp.NewGUID

// sessionKind is what distinguishes a WinRS session from a PSRP one; the
// pool only sees Session.
type sessionKind interface {
	do(ctx context.Context, c Call, each func(json.RawMessage) error) (Result, error)
	close(ctx context.Context) error
}

type winrsKind struct{ s *Session }

func (k winrsKind) do(ctx context.Context, c Call, each func(json.RawMessage) error) (Result, error) {
	return k.s.doWinRS(ctx, c, each)
}
func (k winrsKind) close(ctx context.Context) error { return k.s.closeWinRS(ctx) }

// psrpState is the PSRP side of a Session.
type psrpState struct {
	s           *Session
	rpid        psrp.GUID
	resourceURI string
	envelope    int
	frag        psrp.Fragmenter
	asm         psrp.Assembler
	created     bool // the server holds the shell: Delete it on close
	private     psrp.PrivateData
	projs       map[string]*psrp.Projection
	lastUse     atomic.Int64 // UnixNano of the last exchange with the server
	stopKeep    chan struct{}
}

var _ sessionKind = (*psrpState)(nil)

// envelopeFor returns the MaxEnvelopeSize to use with server, asking the
// server's WinRM configuration once per pool (a WS-Transfer Get of
// .../wsman/1/config, as pypsrp does; recorded in
// test_wsman_update_envelope_size_*.yml). Exchange's RBAC accounts may not
// read it; the default then applies.
func (f *transportFactory) envelopeFor(s *Session) int {
	f.envMu.Lock()
	if n, ok := f.envSize[s.server]; ok {
		f.envMu.Unlock()
		return n
	}
	f.envMu.Unlock()
	n := psrpDefaultEnvelope
	if body, err := s.tr.post("Get", s.configEnvelope()); err == nil {
		if kb, ok := parseMaxEnvelopeKB(body); ok {
			n = min(kb*1024, psrpMaxEnvelope)
		}
	} else {
		s.log.Debug("runspace: server configuration not readable, using the default envelope size", "err", err, "bytes", n)
	}
	f.envMu.Lock()
	if f.envSize == nil {
		f.envSize = map[string]int{}
	}
	f.envSize[s.server] = n
	f.envMu.Unlock()
	return n
}

// openPSRP creates the runspace pool and waits for RUNSPACEPOOL_STATE
// Opened (MS-PSRP 3.1.4.1: SESSION_CAPABILITY and INIT_RUNSPACEPOOL in
// creationXml; the server answers SESSION_CAPABILITY,
// APPLICATION_PRIVATE_DATA and RUNSPACEPOOL_STATE).
func openPSRP(ctx context.Context, o *Options, f *transportFactory, server string) (_ *Session, err error) {
	ctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	s := &Session{
		opts:   o,
		f:      f,
		server: server,
		log:    o.Logger.With("server", server, "mode", ModePSRP),
		tr:     f.newTransport(server),
		quit:   make(chan struct{}),
	}
	ps := &psrpState{s: s, rpid: newGUID(), resourceURI: psrpResourcePrefix + o.ConfigurationName, envelope: psrpDefaultEnvelope,
		projs: map[string]*psrp.Projection{}, stopKeep: make(chan struct{})}
	s.ps, s.kind = ps, ps
	s.info.Server = server
	s.info.ShellID = ps.rpid.String()
	stop := context.AfterFunc(ctx, s.tr.abort)
	defer func() {
		if !stop() && err == nil {
			err = fmt.Errorf("open session on %s: %w", server, context.Cause(ctx))
		}
		if err != nil {
			cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 2*closeStep)
			_ = s.Close(cctx)
			ccancel()
		}
	}()

	ps.envelope = f.envelopeFor(s)
	ps.frag.MaxFragment = fragmentSize(ps.envelope)
	var creation []byte
	for _, m := range []psrp.Message{
		{Destination: psrp.DestinationServer, Type: psrp.SessionCapability, RPID: ps.rpid, Data: psrp.BuildSessionCapability()},
		{Destination: psrp.DestinationServer, Type: psrp.InitRunspacePool, RPID: ps.rpid, Data: psrp.BuildInitRunspacePool()},
	} {
		frags, err := ps.frag.Split(psrp.AppendMessage(nil, m))
		if err != nil {
			return nil, fmt.Errorf("open session on %s: %w", server, err)
		}
		for _, fr := range frags {
			creation = append(creation, fr...)
		}
	}
	if _, err := s.tr.post("Create", s.createEnvelope(creation)); err != nil {
		return nil, fmt.Errorf("open session on %s: create runspace pool: %w", server, ctxErr(ctx, err))
	}
	ps.created = true
	ps.touch()

	opened := false
	for !opened {
		body, err := s.tr.post("Receive", s.receiveEnvelope("", s.opts.wsmanTimeout()))
		if err != nil {
			if fe, ok := errors.AsType[*FaultError](err); ok && fe.timedOut() {
				continue
			}
			return nil, fmt.Errorf("open session on %s: receive: %w", server, ctxErr(ctx, err))
		}
		ps.touch()
		rr, err := parseReceive(body)
		if err != nil {
			return nil, fmt.Errorf("open session on %s: %w", server, err)
		}
		for _, st := range rr.streams {
			err := ps.asm.Write(st, func(b []byte) error {
				m, err := psrp.ParseMessage(b)
				if err != nil {
					return fmt.Errorf("%w: %w", ErrProtocol, err)
				}
				switch m.Type {
				case psrp.SessionCapability:
					// The server's versions; ours are the lowest that Exchange
					// 2013+ hosts (PowerShell 4 and 5.1) speak.
				case psrp.ApplicationPrivateData:
					pd, err := psrp.ParseApplicationPrivateData(m.Data)
					if err != nil {
						return fmt.Errorf("%w: %w", ErrProtocol, err)
					}
					ps.private = pd
					s.info.PS = pd.PSVersion
				case psrp.RunspacePoolInitData, psrp.RunspaceAvailability:
				case psrp.RunspacePoolState:
					st, err := psrp.ParsePoolState(m.Data)
					if err != nil {
						return fmt.Errorf("%w: %w", ErrProtocol, err)
					}
					switch st.State {
					case psrp.PoolOpened:
						opened = true
					case psrp.PoolBroken, psrp.PoolClosed, psrp.PoolClosing:
						var cause error = errors.New("runspace pool " + st.State.String())
						if st.Err != nil {
							cause = psrpRemoteError(st.Err)
						}
						return fmt.Errorf("%w: %w", ErrInitFailed, cause)
					}
				case psrp.PublicKeyRequest:
					return fmt.Errorf("%w: the server asks for a session key exchange (SecureString), which easconnector never needs", ErrProtocol)
				case psrp.RunspacePoolHostCall:
					return fmt.Errorf("%w: the server calls a host method; easconnector has no host", ErrProtocol)
				default:
					return fmt.Errorf("%w: unexpected %s while opening the runspace pool", ErrProtocol, m.Type)
				}
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("open session on %s: %w", server, err)
			}
		}
	}
	s.info.OpenedAt = time.Now()
	s.wg.Add(1)
	go ps.keepAlive()
	s.log.Debug("runspace session opened", "shell", s.info.ShellID, "ps", s.info.PS, "envelope", ps.envelope)
	return s, nil
}

func (ps *psrpState) touch() { ps.lastUse.Store(time.Now().UnixNano()) }

// keepAlive sends a short pool-level Receive when the session has been
// idle for psrpKeepAlive. A request in flight is activity enough.
func (ps *psrpState) keepAlive() {
	s := ps.s
	defer s.wg.Done()
	t := time.NewTicker(psrpKeepAlive / 4)
	defer t.Stop()
	for {
		select {
		case <-ps.stopKeep:
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, ps.lastUse.Load())) < psrpKeepAlive || !s.mu.TryLock() {
			continue
		}
		if s.Err() == nil {
			body, err := s.tr.post("Receive", s.receiveEnvelope("", "PT1S"))
			fe, isFault := errors.AsType[*FaultError](err)
			switch {
			case err == nil:
				ps.touch()
				if rr, perr := parseReceive(body); perr == nil {
					for _, st := range rr.streams {
						if werr := ps.asm.Write(st, ps.poolMessage); werr != nil {
							s.markBroken(werr)
						}
					}
				}
			case isFault && fe.timedOut():
				ps.touch()
			default:
				s.markBroken(fmt.Errorf("keep-alive: %w", err))
			}
		}
		s.mu.Unlock()
	}
}

// poolMessage handles a runspace pool message that arrives outside the
// handshake: a pool that broke or closed ends the session.
func (ps *psrpState) poolMessage(b []byte) error {
	m, err := psrp.ParseMessage(b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if m.Type == psrp.RunspacePoolState {
		st, err := psrp.ParsePoolState(m.Data)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if st.State != psrp.PoolOpened {
			var cause error = errors.New("runspace pool " + st.State.String())
			if st.Err != nil {
				cause = psrpRemoteError(st.Err)
			}
			return fmt.Errorf("%w: %w", ErrSessionBroken, cause)
		}
	}
	return nil
}

// projection returns the session's Projection for a select list.
func (ps *psrpState) projection(sel []string) *psrp.Projection {
	if len(sel) == 0 {
		return nil
	}
	key := strings.Join(sel, ",")
	p, ok := ps.projs[key]
	if !ok {
		if len(ps.projs) > 64 {
			clear(ps.projs)
		}
		p = psrp.NewProjection(sel)
		ps.projs[key] = p
	}
	return p
}

// psrpCommand turns c's arguments into typed PSRP parameters, in name
// order, each under the canonical spelling of bootstrap.ps1's allowlist
// (the one per-cmdlet parameter allowlist of both kinds; checkCall has
// already refused anything outside it).
func psrpCommand(c Call) (psrp.Command, error) {
	cmd := psrp.Command{Name: c.Cmd}
	names := make([]string, 0, len(c.Args))
	for n := range c.Args {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		p, ok := lookupParam(c.Cmd, n)
		if !ok {
			return psrp.Command{}, fmt.Errorf("%w: %s: parameter %q is not in the allowlist of %s (bootstrap.ps1)", ErrInvalidCall, c.Cmd, n, c.Cmd)
		}
		v, err := psrpValue(c.Args[n])
		if err != nil {
			return psrp.Command{}, fmt.Errorf("%w: %s -%s: %w", ErrInvalidCall, c.Cmd, p.Name, err)
		}
		cmd.Params = append(cmd.Params, psrp.Param{Name: p.Name, Value: v})
	}
	return cmd, nil
}

// psrpValue maps a Call value to the value psrp.Encoder writes: the same
// PowerShell values the WinRS bootstrap binds (bootstrap.ps1 ConvertTo-Arg).
func psrpValue(v any) (any, error) {
	switch v := v.(type) {
	case nil, string, bool, []string:
		return v, nil
	case int:
		return v, nil
	case int8:
		return int32(v), nil
	case int16:
		return int32(v), nil
	case int32:
		return v, nil
	case int64:
		return v, nil
	case uint8:
		return int32(v), nil
	case uint16:
		return int32(v), nil
	case uint32:
		return int64(v), nil
	case uint:
		if uint64(v) > 1<<63-1 {
			return nil, fmt.Errorf("%d does not fit Int64", v)
		}
		return int64(v), nil
	case uint64:
		if v > 1<<63-1 {
			return nil, fmt.Errorf("%d does not fit Int64", v)
		}
		return int64(v), nil
	case json.Number:
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("number %s is not an integer", v)
		}
		return n, nil
	case ClearList:
		return nil, nil // $null empties a multi-valued property, as the bootstrap binds it
	case ListEdit:
		return listEditTable(v), nil
	case *ListEdit:
		return listEditTable(*v), nil
	}
	return nil, fmt.Errorf("value type %T is not supported in psrp mode", v)
}

// listEditTable is @{Add=…;Remove=…}, with only the keys that have values,
// as the bootstrap builds it.
func listEditTable(e ListEdit) psrp.Hashtable {
	var h psrp.Hashtable
	if len(e.Add) > 0 {
		h = append(h, psrp.Entry{Key: "Add", Value: slices.Clone(e.Add)})
	}
	if len(e.Remove) > 0 {
		h = append(h, psrp.Entry{Key: "Remove", Value: slices.Clone(e.Remove)})
	}
	return h
}

// pipelineStop stops a running pipeline once: the stop signal, then a
// bounded wait for its Stopped state before the session is given up.
type pipelineStop struct {
	once   sync.Once
	mu     sync.Mutex
	reason error
	grace  *time.Timer
}

func (p *pipelineStop) cause() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason
}

func (ps *psrpState) stop(p *pipelineStop, pid psrp.GUID, reason error) {
	p.once.Do(func() {
		s := ps.s
		p.mu.Lock()
		p.reason = reason
		p.grace = time.AfterFunc(psrpStopGrace, func() {
			s.markBroken(fmt.Errorf("pipeline %s did not stop within %s: %w", pid, psrpStopGrace, reason))
			s.tr.abort()
		})
		p.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if _, err := s.tr.post("Signal", s.signalEnvelope(pid.String(), signalStop)); err != nil {
				if _, ok := errors.AsType[*FaultError](err); !ok {
					s.markBroken(fmt.Errorf("stop signal: %w", err))
					s.tr.abort()
				}
			}
		}()
	})
}

func (p *pipelineStop) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.grace != nil {
		p.grace.Stop()
	}
}

func (ps *psrpState) do(ctx context.Context, c Call, each func(json.RawMessage) error) (Result, error) {
	s := ps.s
	start := time.Now()
	res := Result{Server: s.server, Attempts: 1}
	if err := checkCall(c); err != nil {
		return res, err
	}
	cmd, err := psrpCommand(c)
	if err != nil {
		return res, err
	}
	data, err := psrp.BuildCreatePipeline([]psrp.Command{cmd})
	if err != nil {
		return res, fmt.Errorf("%w: %s: %w", ErrInvalidCall, c.Cmd, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.Err(); err != nil {
		return res, fmt.Errorf("%w: %w", errNotSent, err)
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("%w: %w", errNotSent, err)
	}
	pid := newGUID()
	frags, err := ps.frag.Split(psrp.AppendMessage(nil, psrp.Message{
		Destination: psrp.DestinationServer, Type: psrp.CreatePipeline, RPID: ps.rpid, PID: pid, Data: data}))
	if err != nil {
		return res, fmt.Errorf("%w: %s: %w", ErrInvalidCall, c.Cmd, err)
	}
	s.requests.Add(1)
	s.reqStart.Store(time.Now().UnixNano())
	id := uint64(s.requests.Load())
	ps.touch()
	defer ps.touch()

	// The Command carries the first fragment, Sends the rest (pypsrp
	// src/pypsrp/powershell.py; test_psrp_small_msg_size.yml).
	if _, err := s.tr.post("Command", s.commandEnvelope(pid.String(), frags[0])); err != nil {
		res.Elapsed = time.Since(start)
		return res, ps.sendErr(ctx, c, id, err)
	}
	for _, fr := range frags[1:] {
		if _, err := s.tr.post("Send", s.sendEnvelope(pid.String(), fr)); err != nil {
			s.markBroken(err)
			res.Elapsed = time.Since(start)
			return res, s.requestErr(ctx, c, id, err)
		}
	}

	// A pipeline that goes RequestTimeout without output, or whose ctx
	// ends, is stopped with the PSRP stop signal; the session survives
	// (unlike WinRS, which has no interrupt).
	var stopper pipelineStop
	defer stopper.finish()
	idle := time.AfterFunc(s.opts.RequestTimeout, func() {
		ps.stop(&stopper, pid, fmt.Errorf("%s (request %d): %w: no output for %s", c.Cmd, id, errRequestTimeout, s.opts.RequestTimeout))
	})
	defer idle.Stop()
	stopCtx := context.AfterFunc(ctx, func() {
		ps.stop(&stopper, pid, fmt.Errorf("%s (request %d): %w", c.Cmd, id, context.Cause(ctx)))
	})
	defer stopCtx()

	proj := ps.projection(c.Select)
	var (
		state    psrp.PipelineStateInfo
		finished bool
		firstErr *psrp.ErrorInfo
		eachErr  error
		decoded  []byte
	)
	handle := func(b []byte) error {
		m, err := psrp.ParseMessage(b)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if m.PID != pid {
			if m.PID.IsZero() {
				return ps.poolMessage(b)
			}
			return fmt.Errorf("%w: %s for pipeline %s while running %s", ErrProtocol, m.Type, m.PID, pid)
		}
		switch m.Type {
		case psrp.PipelineOutput:
			res.Count++
			idle.Reset(s.opts.RequestTimeout)
			if proj == nil || each == nil || eachErr != nil {
				return nil
			}
			if decoded, err = proj.AppendJSON(decoded[:0], m.Data); err != nil {
				return fmt.Errorf("%w: %s output object %d: %w", ErrProtocol, c.Cmd, res.Count, err)
			}
			if eachErr = each(json.RawMessage(slices.Clone(decoded))); eachErr != nil {
				ps.stop(&stopper, pid, eachErr)
			}
		case psrp.ErrorRecord:
			idle.Reset(s.opts.RequestTimeout)
			if firstErr == nil {
				ei, err := psrp.ParseErrorRecord(m.Data)
				if err != nil {
					return fmt.Errorf("%w: %w", ErrProtocol, err)
				}
				firstErr = ei
			}
		case psrp.WarningRecord:
			idle.Reset(s.opts.RequestTimeout)
			text, err := psrp.ParseInformational(m.Data)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			// Exchange's budget warns before it delays ("Micro delay
			// applied. Actual delayed: N msecs"): the pool backs off.
			if isThrottleText(text) {
				s.throttled.Store(true)
			}
			s.log.Debug("runspace: warning", "cmdlet", c.Cmd, "text", text)
		case psrp.InformationRecord, psrp.VerboseRecord, psrp.DebugRecord, psrp.ProgressRecord:
			idle.Reset(s.opts.RequestTimeout)
		case psrp.PipelineState:
			st, err := psrp.ParsePipelineState(m.Data)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			if st.State.Terminal() {
				state, finished = st, true
			}
		case psrp.PipelineHostCall:
			return fmt.Errorf("%w: %s calls a host method; easconnector has no host", ErrProtocol, c.Cmd)
		default:
			return fmt.Errorf("%w: unexpected %s for pipeline %s", ErrProtocol, m.Type, pid)
		}
		return nil
	}
	for !finished {
		body, err := s.tr.post("Receive", s.receiveEnvelope(pid.String(), s.opts.wsmanTimeout()))
		if err != nil {
			if fe, ok := errors.AsType[*FaultError](err); ok && fe.timedOut() && s.Err() == nil {
				continue
			}
			if cause := stopper.cause(); cause != nil && s.Err() != nil {
				err = fmt.Errorf("%w: %w", cause, err)
			}
			s.markBroken(err)
			res.Elapsed = time.Since(start)
			return res, s.requestErr(ctx, c, id, err)
		}
		rr, err := parseReceive(body)
		if err == nil {
			for _, st := range rr.streams {
				if err = ps.asm.Write(st, handle); err != nil {
					break
				}
			}
		}
		if err == nil && rr.done && !finished {
			err = fmt.Errorf("%w: %s: command done without a final PIPELINE_STATE", ErrProtocol, c.Cmd)
		}
		if err != nil {
			s.markBroken(err)
			res.Elapsed = time.Since(start)
			return res, fmt.Errorf("%s (request %d on %s): %w", c.Cmd, id, s.server, err)
		}
	}
	stopper.finish()
	// Release the command on the server, as PowerShell and pypsrp do once
	// a pipeline is over (test_psrp_multiple_invocations.yml).
	if _, err := s.tr.post("Signal", s.signalEnvelope(pid.String(), signalTerminate)); err != nil {
		if _, ok := errors.AsType[*FaultError](err); !ok {
			s.markBroken(fmt.Errorf("terminate pipeline: %w", err))
		}
	}
	res.Elapsed = time.Since(start)
	switch {
	case eachErr != nil:
		return res, eachErr
	case state.State == psrp.PipeStopped && errors.Is(stopper.cause(), errRequestTimeout) && res.Count == 0:
		// A stalled pipeline that produced nothing is stopped and the
		// session kept; like the WinRS path, which breaks its session,
		// the pool may run an idempotent call again (errStalled).
		return res, fmt.Errorf("%w: %w", errStalled, stopper.cause())
	case state.State == psrp.PipeStopped && stopper.cause() != nil:
		return res, stopper.cause()
	case state.State == psrp.PipeFailed && state.Err != nil:
		return res, fmt.Errorf("%s: %w", c.Cmd, psrpRemoteError(state.Err))
	case firstErr != nil:
		return res, fmt.Errorf("%s: %w", c.Cmd, psrpRemoteError(firstErr))
	case state.State != psrp.PipeCompleted:
		return res, fmt.Errorf("%s: %w", c.Cmd, &RemoteError{Msg: "pipeline " + state.State.String()})
	}
	return res, nil
}

// sendErr classifies a failed Command: a server that answered with a fault
// did not start the pipeline, so the call may run elsewhere.
func (ps *psrpState) sendErr(ctx context.Context, c Call, id uint64, err error) error {
	s := ps.s
	var (
		fe *FaultError
		se *StatusError
	)
	if errors.As(err, &fe) || errors.As(err, &se) {
		if errors.Is(err, ErrSessionBroken) || errors.Is(err, ErrAuth) {
			s.markBroken(err)
		}
		return fmt.Errorf("%w: %s (request %d on %s): %w", errNotSent, c.Cmd, id, s.server, err)
	}
	s.markBroken(err)
	return s.requestErr(ctx, c, id, err)
}

// close deletes the runspace pool (its shell), bounded in time, on a fresh
// transport if the session's was aborted: a pool left behind holds one of
// the account's PowerShellMaxConcurrency slots.
func (ps *psrpState) close(ctx context.Context) error {
	s := ps.s
	close(s.quit)
	close(ps.stopKeep)
	s.markBroken(errSessionClosed)
	var errs []error
	if ps.created {
		tr := s.tr
		if tr.ctx.Err() != nil {
			tr = s.f.newTransport(s.server)
			defer tr.abort()
		}
		body := s.deleteEnvelope()
		if err := s.boundedAbort(ctx, closeStep, func() error { _, err := tr.post("Delete", body); return err }, tr); err != nil {
			errs = append(errs, fmt.Errorf("delete runspace pool %s: %w", s.info.ShellID, err))
		}
	}
	return s.finishClose(ctx, errs)
}

// ErrorCategory values that classify a PSRP error record (MS-PSRP
// 2.2.3.15; System.Management.Automation.ErrorCategory).
const (
	categoryLimitsExceeded = 29
	categoryQuotaExceeded  = 30
)

// psrpRemoteError turns an error record into a *RemoteError (the form the
// exchange package and Classify read) and classifies it by its
// language-independent parts: the category and FullyQualifiedErrorId
// decide throttling and a lost session; the English text is consulted only
// for Exchange's budget messages, which carry no distinct category.
func psrpRemoteError(ei *psrp.ErrorInfo) error {
	re := &RemoteError{Type: ei.ExceptionType, Category: ei.CategoryName, FQID: ei.FullyQualifiedErrorID, Msg: ei.Message}
	switch {
	case ei.Category == categoryLimitsExceeded || ei.Category == categoryQuotaExceeded || throttleFQID(ei.FullyQualifiedErrorID) || isThrottleText(ei.Message):
		return fmt.Errorf("%w: %w", ErrThrottled, re)
	case remoteSessionLost(re) || strings.Contains(ei.FullyQualifiedErrorID, "PSSessionStateBroken"):
		return fmt.Errorf("%w: %w", ErrSessionBroken, re)
	}
	return re
}

// throttleFQID recognizes the error ids of Exchange's and PowerShell's
// throttling: budget overbudget exceptions and the WS-Man quota errors.
func throttleFQID(id string) bool {
	l := strings.ToLower(id)
	for _, p := range []string{"overbudget", "throttl", "maxconcurrency", "quota"} {
		if strings.Contains(l, p) {
			return true
		}
	}
	return false
}

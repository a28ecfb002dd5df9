package wsman

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf16"
)

// create opens a shell (WS-Transfer Create).
func (s *Server) create(r *http.Request, req *request, user string) ([]byte, error) {
	userKey := strings.ToLower(user)
	now := time.Now()
	clientIP, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		clientIP = r.RemoteAddr
	}
	sh := &shell{
		id:           newGUID(),
		user:         user,
		userKey:      userKey,
		clientIP:     clientIP,
		created:      now,
		options:      maps.Clone(req.options),
		lastActivity: now,
		commands:     map[string]*command{},
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrServerClosed
	}
	q := s.quotaLocked(userKey)
	if q.shells >= s.opts.MaxShellsPerUser {
		s.mu.Unlock()
		return nil, FaultMaxShells(s.opts.MaxShellsPerUser)
	}
	q.shells++
	s.shells[sh.id] = sh
	n := len(s.shells)
	s.mu.Unlock()
	s.stats.add(func(st *Stats) {
		st.ShellsCreated++
		st.CurrentShells = n
		st.MaxConcurrentShells = max(st.MaxConcurrentShells, n)
	})
	s.log.Debug("wsman shell created", "shell", sh.id, "user", user, "client", clientIP)

	address := req.to
	if address == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		address = scheme + "://" + r.Host + "/wsman"
	}
	idle := s.opts.IdleTimeout
	if idle < 0 {
		idle = 0
	}
	return marshalCreateResponse(req.messageID, createResult{
		address:  address,
		shellID:  sh.id,
		owner:    user,
		clientIP: clientIP,
		idle:     idle,
	}), nil
}

// quotaLocked returns the quota counters of a user; s.mu must be held.
func (s *Server) quotaLocked(userKey string) *quota {
	q := s.perUser[userKey]
	if q == nil {
		q = &quota{}
		s.perUser[userKey] = q
	}
	return q
}

// lookupShellLocked finds a shell of user; s.mu must be held.
func (s *Server) lookupShellLocked(user, id string) *shell {
	sh := s.shells[id]
	if sh == nil || sh.userKey != strings.ToLower(user) {
		return nil
	}
	return sh
}

// commandLineLength is the length cmd.exe or CreateProcess sees, in UTF-16
// code units: the command and its arguments joined by spaces.
func commandLineLength(name string, args []string) int {
	n := len(utf16.Encode([]rune(name)))
	for _, a := range args {
		n += 1 + len(utf16.Encode([]rune(a)))
	}
	return n
}

// command starts a process in a shell (rsp:Command).
func (s *Server) command(req *request, user string) ([]byte, error) {
	options := make(map[string]string)
	s.mu.Lock()
	sh := s.lookupShellLocked(user, req.shellID)
	if sh == nil {
		s.mu.Unlock()
		return nil, FaultInvalidSelectors(req.shellID)
	}
	sh.lastActivity = time.Now()
	maps.Copy(options, sh.options)
	maps.Copy(options, req.options)
	running := 0
	for _, c := range sh.commands {
		if !c.exited.Load() {
			running++
		}
	}
	if running >= s.opts.MaxProcessesPerShell {
		s.mu.Unlock()
		return nil, FaultMaxCommandsPerShell()
	}
	q := s.quotaLocked(sh.userKey)
	if q.operations >= s.opts.MaxOperationsPerUser {
		s.mu.Unlock()
		return nil, FaultMaxOperations(s.opts.MaxOperationsPerUser)
	}
	limit := s.opts.MaxCommandLine
	if strings.EqualFold(options[OptionSkipCmdShell], "TRUE") {
		limit = maxCreateProcessLine
	}
	if commandLineLength(req.command.name, req.command.args) > limit {
		s.mu.Unlock()
		return nil, FaultCmdTooLong()
	}
	c := newCommand(Command{
		ShellID:   sh.id,
		CommandID: newGUID(),
		User:      sh.user,
		Name:      req.command.name,
		Args:      req.command.args,
		Options:   options,
	})
	sh.commands[c.info.CommandID] = c
	q.operations++
	s.mu.Unlock()

	if err := s.runner.Start(c.info); err != nil {
		s.forget(sh, c)
		c.cancel(ErrTerminated)
		return nil, FaultStartFailed(err.Error())
	}
	if err := s.admitStarted(sh, c); err != nil {
		return nil, err
	}
	s.log.Debug("wsman command started", "shell", sh.id, "command", c.info.CommandID, "name", c.info.Name)
	go s.run(c)
	return marshalCommandResponse(req.messageID, c.info.CommandID), nil
}

// forget removes a command that never ran from its shell's books.
func (s *Server) forget(sh *shell, c *command) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sh.commands[c.info.CommandID] != c {
		return // the shell was removed and accounted for it already
	}
	delete(sh.commands, c.info.CommandID)
	if q := s.perUser[sh.userKey]; q != nil {
		q.operations--
	}
}

func (s *Server) run(c *command) {
	defer s.procs.Done()
	c.exit(s.runSafely(c))
	s.stats.add(func(st *Stats) { st.CommandsRunning-- })
}

// runSafely runs the command; a panicking Runner ends the command as a
// crashed Windows process does, without taking the server down.
func (s *Server) runSafely(c *command) (code int) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("wsman: runner panicked", "command", c.info.CommandID, "name", c.info.Name,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			code = statusAccessViolation
		}
	}()
	return s.runner.Run(c.ctx, c.info, stdinReader{c}, outputWriter{c: c}, outputWriter{c: c, stderr: true})
}

// commandFor finds the command a request addresses and records activity on
// its shell; with hold, the shell counts the request as pending until
// release.
func (s *Server) commandFor(user, shellID, commandID string, hold bool) (*shell, *command, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, ErrServerClosed
	}
	sh := s.lookupShellLocked(user, shellID)
	if sh == nil {
		return nil, nil, FaultInvalidSelectors(shellID)
	}
	sh.lastActivity = time.Now()
	c := sh.commands[commandID]
	if c == nil {
		if sh.isTerminated(commandID) {
			return nil, nil, FaultCommandTerminated()
		}
		return nil, nil, faultUnknownCommand()
	}
	if hold {
		sh.pending++
	}
	return sh, c, nil
}

func (s *Server) release(sh *shell) {
	s.mu.Lock()
	sh.pending--
	sh.lastActivity = time.Now()
	s.mu.Unlock()
}

// sendInput delivers stdin (rsp:Send).
func (s *Server) sendInput(ctx context.Context, req *request, user string) ([]byte, error) {
	for _, st := range req.send {
		sh, c, err := s.commandFor(user, req.shellID, st.commandID, true)
		if err != nil {
			return nil, err
		}
		f := c.send(ctx, s.done, st.data, st.end)
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

// maxEnvelope is the response size limit for req.
func (s *Server) maxEnvelope(req *request) int {
	limit := s.opts.MaxEnvelopeKB * 1024
	if req.maxEnvelope > 0 {
		return min(req.maxEnvelope, limit)
	}
	return limit
}

// operationTimeout is the Receive long-poll duration for req.
func (s *Server) operationTimeout(req *request) time.Duration {
	if !req.hasTimeout {
		return s.opts.MaxTimeout
	}
	return min(req.timeout, s.opts.MaxTimeout)
}

// receive long-polls for output (rsp:Receive): it answers as soon as output
// is buffered (after Coalesce) or the process ended, and with the TimedOut
// fault when OperationTimeout passes first.
func (s *Server) receive(ctx context.Context, req *request, user string) ([]byte, error) {
	rb := req.receive
	sh, c, err := s.commandFor(user, req.shellID, rb.commandID, true)
	if err != nil {
		return nil, err
	}
	defer s.release(sh)

	// Raw bytes whose base64 fits the room even when split over two streams,
	// each padded to a multiple of 4: 4*ceil(a/3)+4*ceil(b/3) <= 4*(a+b+4)/3.
	room := s.maxEnvelope(req) - receiveOverhead(req.messageID, c.info.CommandID, rb.streams)
	budget := room/4*3 - 4
	if budget < 1 {
		return nil, faultEnvelopeTooSmall(fmt.Sprintf("A ReceiveResponse needs more than w:MaxEnvelopeSize %d.", s.maxEnvelope(req)))
	}
	if s.opts.MaxReceiveBytes > 0 {
		budget = min(budget, s.opts.MaxReceiveBytes)
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
		case <-s.done: // Close cancels Runners: their exit is not a result
			c.mu.Unlock()
			return nil, ErrServerClosed
		default:
		}
		avail := c.buffered(rb.streams)
		if avail > 0 || c.done {
			if !coalesced && !c.done && avail < budget {
				coalesced = true
				c.mu.Unlock()
				if err := s.sleep(ctx, s.opts.Coalesce); err != nil {
					return nil, err
				}
				c.mu.Lock()
				continue
			}
			chunk := c.take(rb.streams, budget)
			c.mu.Unlock()
			out, errOut := uint64(len(chunk.stdout)), uint64(len(chunk.stderr))
			s.stats.add(func(st *Stats) {
				st.StdoutBytes += out
				st.StderrBytes += errOut
			})
			return marshalReceiveResponse(req.messageID, chunk), nil
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

// sleep waits d unless the client goes away or the server closes.
func (s *Server) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return errClientGone
	case <-s.done:
		return ErrServerClosed
	}
}

// signal delivers rsp:Signal: terminate ends and forgets the command (also a
// finished one, as clients always send it); ctrl_c and ctrl_break cancel the
// Runner's context but keep the command so its exit code is delivered.
func (s *Server) signal(req *request, user string) ([]byte, error) {
	sb := req.signal
	code := canonicalSignal(sb.code)
	if code == "" {
		return nil, faultInvalidParameter(fmt.Sprintf("Signal code %q is not supported.", sb.code))
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrServerClosed
	}
	sh := s.lookupShellLocked(user, req.shellID)
	if sh == nil {
		s.mu.Unlock()
		return nil, FaultInvalidSelectors(req.shellID)
	}
	sh.lastActivity = time.Now()
	c := sh.commands[sb.commandID]
	if c == nil {
		terminated := sh.isTerminated(sb.commandID)
		s.mu.Unlock()
		switch {
		case terminated && code == signalTerminate:
			return marshalEmptyResponse(actionSignalResponse, req.messageID, `<rsp:SignalResponse/>`), nil
		case terminated:
			return nil, FaultCommandTerminated()
		}
		return nil, faultUnknownCommand()
	}
	if code == signalTerminate {
		delete(sh.commands, sb.commandID)
		sh.addTombstone(sb.commandID)
		if q := s.perUser[sh.userKey]; q != nil {
			q.operations--
		}
		s.mu.Unlock()
		c.terminate(ErrTerminated, FaultCommandTerminated())
	} else if c.ps {
		// A PowerShell pipeline is stopped, not killed: it reports
		// PIPELINE_STATE Stopped and the pool lives on (MS-PSRP 3.1.5.3.9).
		s.mu.Unlock()
		c.interruptOnce()
	} else {
		s.mu.Unlock()
		c.terminate(ErrInterrupted, nil)
	}
	return marshalEmptyResponse(actionSignalResponse, req.messageID, `<rsp:SignalResponse/>`), nil
}

// deleteShell closes a shell (WS-Transfer Delete): its commands are
// cancelled (ErrShellDeleted) and pending Receives answer 995.
func (s *Server) deleteShell(req *request, user string) ([]byte, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrServerClosed
	}
	sh := s.lookupShellLocked(user, req.shellID)
	if sh == nil {
		s.mu.Unlock()
		return nil, FaultInvalidSelectors(req.shellID)
	}
	s.removeShellLocked(sh, ErrShellDeleted, FaultOperationAborted())
	s.mu.Unlock()
	s.stats.add(func(st *Stats) { st.ShellsDeleted++ })
	s.log.Debug("wsman shell deleted", "shell", sh.id, "user", sh.user)
	return marshalEmptyResponse(actionDeleteResponse, req.messageID, ""), nil
}

// canonicalSignal maps a Signal code to its constant, matching it
// case-insensitively: pypsrp sends ".../signal/Terminate" and Windows takes
// it (pypsrp test_psrp_multiple_invocations.yml). Unknown codes give "".
func canonicalSignal(code string) string {
	switch {
	case strings.EqualFold(code, signalTerminate):
		return signalTerminate
	case strings.EqualFold(code, signalCtrlC):
		return signalCtrlC
	case strings.EqualFold(code, signalCtrlBreak):
		return signalCtrlBreak
	case strings.EqualFold(code, signalPSCtrlC), strings.EqualFold(code, signalPSCrtlC),
		strings.EqualFold(code, signalPSCtrlCRelative), strings.EqualFold(code, signalPSCrtlCRelative):
		return signalPSCtrlC
	}
	return ""
}

// admitStarted counts a command its Runner or PowerShell pool accepted as
// running, unless the server closed or the shell went away meanwhile (then
// the command is dropped and the caller answers with the returned error).
// s.mu must not be held.
func (s *Server) admitStarted(sh *shell, c *command) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	if s.shells[sh.id] != sh || c.ctx.Err() != nil {
		s.mu.Unlock()
		s.forget(sh, c)
		c.cancel(ErrShellDeleted)
		return FaultInvalidSelectors(sh.id)
	}
	s.procs.Add(1)
	s.mu.Unlock()
	s.stats.add(func(st *Stats) {
		st.CommandsStarted++
		st.CommandsRunning++
	})
	return nil
}

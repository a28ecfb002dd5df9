package runspace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/masterzen/winrm"
)

const (
	// maxRetries: an idempotent call runs at most 1+maxRetries times.
	maxRetries = 2
	// retryBackoff is the first pause before a retry (doubling, jittered).
	retryBackoff = 200 * time.Millisecond
	// closeSessionTimeout bounds the background close of a retired session.
	closeSessionTimeout = 3 * closeStep
	// forceGrace is how long Close waits for goroutines after aborting
	// everything once its ctx has ended.
	forceGrace = 2 * time.Second
)

// Pool is a bounded pool of sessions. Create it with NewPool, call Start,
// then Do (or Acquire/Release) from any number of goroutines, and Close.
// All methods are safe for concurrent use.
type Pool struct {
	opts Options
	log  *slog.Logger
	met  *poolMetrics

	// closing is cancelled when Close starts: it aborts session opens
	// and probes. bg is cancelled when Close gives up waiting: it aborts
	// the background closes of retired sessions.
	closing       context.Context
	closingCancel context.CancelFunc
	bg            context.Context
	bgCancel      context.CancelFunc
	wg            sync.WaitGroup // retiring sessions, prober

	mu        sync.Mutex
	started   bool
	closed    bool
	finished  bool // Close has returned: late releases are closed untracked
	f         *transportFactory
	idle      []*Session
	busy      map[*Session]struct{}
	opening   int
	lim       limiter
	eps       []*endpoint
	current   *endpoint     // where the last session opened
	changed   chan struct{} // closed and replaced on every state change
	stopProbe chan struct{}
	orphans   *orphanBook // shells asked for without an answer (orphans.go)
}

// NewPool validates opts and returns a pool that is not started. It does no
// I/O.
func NewPool(opts Options) (*Pool, error) {
	o, err := opts.resolve()
	if err != nil {
		return nil, err
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	o.logPlainHTTP()
	p := &Pool{
		opts:    o,
		log:     o.Logger,
		met:     newPoolMetrics(o.Metrics),
		busy:    make(map[*Session]struct{}),
		lim:     newLimiter(o.Size),
		changed: make(chan struct{}),
	}
	p.bg, p.bgCancel = context.WithCancel(context.Background())
	p.closing, p.closingCancel = context.WithCancel(context.Background())
	p.met.limit.Store(int64(o.Size))
	p.orphans = newOrphanBook(&p.opts)
	for _, s := range o.Servers {
		p.eps = append(p.eps, p.newEndpoint(s, false))
	}
	return p, nil
}

func (p *Pool) newEndpoint(server string, discovered bool) *endpoint {
	e := &endpoint{server: server, discovered: discovered, state: StateUp, up: p.met.endpointUp(server)}
	e.up.Store(1)
	return e
}

// Metrics returns the pool's metric set.
func (p *Pool) Metrics() *metrics.Set { return p.opts.Metrics }

// Limit returns the current adaptive concurrency limit (1..Size).
func (p *Pool) Limit() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lim.limit
}

// Endpoints returns the state of every server, in preference order.
func (p *Pool) Endpoints() []EndpointStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]EndpointStatus, len(p.eps))
	for i, e := range p.eps {
		out[i] = e.status()
	}
	return out
}

// notifyLocked wakes everyone waiting for a state change.
func (p *Pool) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
	p.met.busy.Store(int64(len(p.busy)))
	p.met.idle.Store(int64(len(p.idle)))
	p.met.limit.Store(int64(p.lim.limit))
}

// Start opens the first session on the first reachable server and, with
// CASFailover, discovers the organization's other Client Access servers.
// It returns ErrAuth, ErrAllServersDown (wrapping each server's failure) or
// another session-start error; Start may then be called again.
func (p *Pool) Start(ctx context.Context) error {
	p.mu.Lock()
	switch {
	case p.closed:
		p.mu.Unlock()
		return ErrPoolClosed
	case p.started || p.f != nil:
		p.mu.Unlock()
		return errors.New("runspace: pool already started")
	}
	p.mu.Unlock()
	f, err := newTransportFactory(&p.opts)
	if err != nil {
		return fmt.Errorf("start runspace pool: %w", err)
	}
	p.orphans.attach(f)
	p.mu.Lock()
	p.f = f
	p.opening++
	p.mu.Unlock()

	s, err := p.open(ctx, time.Now())

	p.mu.Lock()
	p.opening--
	if err != nil {
		p.f = nil
		for _, e := range p.eps {
			e.markUp() // a later Start tries every server again
		}
		p.mu.Unlock()
		f.close()
		return fmt.Errorf("start runspace pool: %w", err)
	}
	p.mu.Unlock()

	if p.opts.CASFailover {
		if err := p.discover(ctx, s); err != nil {
			p.log.Warn("runspace: client access server discovery failed; failover limited to the configured servers",
				"server", s.server, "err", err)
		}
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		p.retireLocked(s)
		return ErrPoolClosed
	}
	p.started = true
	p.idle = append(p.idle, s)
	p.stopProbe = make(chan struct{})
	p.wg.Add(1)
	go p.probeLoop(p.stopProbe)
	p.notifyLocked()
	p.log.Info("runspace pool started", "server", s.server, "host", s.info.Host, "exchange", s.info.Exchange,
		"size", p.opts.Size, "servers", len(p.eps))
	return nil
}

// discover adds the organization's Client Access servers after the
// configured ones: Get-ClientAccessService (Exchange 2016+), else the
// Mailbox/ClientAccess servers of Get-ExchangeServer.
func (p *Pool) discover(ctx context.Context, s *Session) error {
	type server struct {
		Name       string          `json:"Name"`
		Fqdn       string          `json:"Fqdn"`
		ServerRole json.RawMessage `json:"ServerRole"`
	}
	var found []server
	collect := func(raw json.RawMessage) error {
		var v server
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("decode server: %w", err)
		}
		found = append(found, v)
		return nil
	}
	_, err := s.Do(ctx, Call{Cmd: "Get-ClientAccessService", Select: []string{"Name", "Fqdn"}, Idempotent: true}, collect)
	if err != nil {
		var re *RemoteError
		if !errors.As(err, &re) {
			return fmt.Errorf("get client access service: %w", err)
		}
		found = found[:0]
		_, err = s.Do(ctx, Call{Cmd: "Get-ExchangeServer", Select: []string{"Name", "Fqdn", "ServerRole"}, Idempotent: true},
			func(raw json.RawMessage) error {
				if err := collect(raw); err != nil {
					return err
				}
				roles := strings.ToLower(string(found[len(found)-1].ServerRole))
				if !strings.Contains(roles, "clientaccess") && !strings.Contains(roles, "mailbox") {
					found = found[:len(found)-1] // Edge Transport and others
				}
				return nil
			})
		if err != nil {
			return fmt.Errorf("get exchange server: %w", err)
		}
	}
	slices.SortFunc(found, func(a, b server) int { return strings.Compare(strings.ToLower(a.Fqdn), strings.ToLower(b.Fqdn)) })

	p.mu.Lock()
	defer p.mu.Unlock()
	var added []string
	for _, v := range found {
		fqdn := strings.TrimSuffix(strings.TrimSpace(v.Fqdn), ".")
		if fqdn == "" || !validHost(fqdn) {
			if fqdn != "" {
				p.log.Warn("runspace: ignoring discovered server with an invalid name", "fqdn", sanitizeLine(fqdn))
			}
			continue
		}
		if p.knownLocked(fqdn, v.Name, s) {
			continue
		}
		p.eps = append(p.eps, p.newEndpoint(fqdn, true))
		added = append(added, fqdn)
	}
	if len(added) > 0 {
		p.log.Info("runspace: discovered client access servers", "servers", added)
	}
	return nil
}

// knownLocked reports whether a discovered server is one of the endpoints
// already known: same name, its short name, or the host the first session
// reported for the server it was opened on.
func (p *Pool) knownLocked(fqdn, name string, s *Session) bool {
	short, _, _ := strings.Cut(fqdn, ".")
	for _, e := range p.eps {
		switch {
		case strings.EqualFold(e.server, fqdn), strings.EqualFold(e.server, short),
			name != "" && strings.EqualFold(e.server, name):
			return true
		case e.server == s.server && s.info.Host != "" &&
			(strings.EqualFold(s.info.Host, name) || strings.EqualFold(s.info.Host, short)):
			return true
		}
	}
	return false
}

// open opens a session on the first usable endpoint in preference order,
// marking those that fail down. started is when the caller began waiting
// (for the limiter).
func (p *Pool) open(ctx context.Context, started time.Time) (*Session, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(p.closing, cancel)
	defer stop()
	var errs []error
	tried := make(map[*endpoint]bool)
	for {
		p.mu.Lock()
		ep := p.pickLocked(time.Now(), tried)
		if ep == nil {
			err := p.allDownLocked(errs)
			p.mu.Unlock()
			return nil, err
		}
		tried[ep] = true
		wasDown := ep.state == StateDown
		if wasDown {
			ep.state = StateProbing
		}
		f := p.f
		p.mu.Unlock()

		s, err := openSession(ctx, &p.opts, f, ep.server)
		p.mu.Lock()
		if err == nil {
			p.openedLocked(ep, s)
			p.mu.Unlock()
			return s, nil
		}
		class := Classify(err)
		p.met.sessionFailure(class)
		probed := wasDown && ep.state == StateProbing
		if probed {
			ep.state = StateDown
		}
		switch {
		case p.closing.Err() != nil:
			p.mu.Unlock()
			return nil, fmt.Errorf("%w: %w", ErrPoolClosed, err)
		case ctx.Err() != nil, class == ClassCanceled, class == ClassInvalid, class == ClassClosed:
			p.mu.Unlock()
			return nil, err
		case class == ClassThrottle, class == ClassAuth:
			// The server answered: it is up, the account is the problem.
			if probed {
				ep.markUp()
			}
			if class == ClassThrottle {
				p.throttleLocked(started, err)
			}
			p.mu.Unlock()
			return nil, err
		}
		ep.markDown(time.Now(), p.opts.FailoverBackoff, err)
		p.log.Warn("runspace: server marked down", "server", ep.server, "class", class,
			"until", ep.downUntil.Format(time.RFC3339), "err", err)
		p.notifyLocked()
		p.mu.Unlock()
		errs = append(errs, err)
	}
}

// pickLocked returns the first up endpoint not yet tried, else the first
// down one whose backoff has expired, else nil.
func (p *Pool) pickLocked(now time.Time, tried map[*endpoint]bool) *endpoint {
	for _, e := range p.eps {
		if e.state == StateUp && !tried[e] {
			return e
		}
	}
	for _, e := range p.eps {
		if e.due(now) && !tried[e] {
			return e
		}
	}
	return nil
}

func (p *Pool) allDownLocked(errs []error) error {
	if len(errs) == 0 {
		for _, e := range p.eps {
			errs = append(errs, fmt.Errorf("%s down until %s: %s", e.server, e.downUntil.Format(time.RFC3339), e.lastErr))
		}
	}
	return fmt.Errorf("%w: %w", ErrAllServersDown, errors.Join(errs...))
}

// openedLocked books a new session on ep and accounts failover.
func (p *Pool) openedLocked(ep *endpoint, s *Session) {
	s.ep = ep
	ep.sessions++
	if ep.state != StateUp {
		ep.markUp()
	}
	p.met.opens.Inc()
	if prev := p.current; prev != nil && prev != ep {
		pi, ei := slices.Index(p.eps, prev), slices.Index(p.eps, ep)
		if ei > pi {
			p.met.failovers.Inc()
			p.log.Warn("runspace: failed over", "from", prev.server, "to", ep.server, "reason", prev.lastErr)
		} else {
			p.log.Info("runspace: back on preferred server", "server", ep.server, "from", prev.server)
		}
	}
	p.current = ep
}

// throttleLocked applies a quota error to the limiter.
func (p *Pool) throttleLocked(started time.Time, err error) {
	p.met.throttles.Inc()
	hint := time.Duration(0)
	if err != nil {
		hint = throttleHint(err.Error())
	}
	before := p.lim.limit
	if p.lim.throttled(time.Now(), started, hint) {
		p.log.Warn("runspace: throttled, lowering concurrency", "from", before, "to", p.lim.limit,
			"pause_until", p.lim.holdUntil.Format(time.RFC3339Nano), "err", err)
		p.trimLocked()
	}
	p.notifyLocked()
}

// trimLocked closes idle sessions while more sessions are open than the
// limit allows (each holds one of the account's PowerShellMaxConcurrency).
func (p *Pool) trimLocked() {
	for len(p.idle) > 0 && len(p.idle)+len(p.busy)+p.opening > p.lim.limit {
		s := p.idle[0]
		p.idle = p.idle[1:]
		p.retireLocked(s)
	}
}

// retireLocked removes s from the books and closes it in the background.
func (p *Pool) retireLocked(s *Session) {
	if s.ep != nil {
		s.ep.sessions--
		s.ep = nil
	}
	closeSession := func() {
		ctx, cancel := context.WithTimeout(p.bg, closeSessionTimeout)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			p.log.Debug("runspace: session close", "server", s.server, "err", err)
		}
	}
	if p.finished {
		// A session released after Close returned (its call outlived
		// Close's deadline); its transport is already aborted.
		go closeSession()
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		closeSession()
	}()
}

// recycleReason says why an idle or released session should be replaced.
func (p *Pool) recycleReason(s *Session, now time.Time) string {
	switch {
	case s.Err() != nil:
		return "broken"
	case int(s.requests.Load()) >= p.opts.MaxRequestsPerSession:
		return "max requests"
	case now.Sub(s.info.OpenedAt) >= p.opts.MaxSessionAge:
		return "max age"
	}
	return ""
}

// Acquire returns a session for the caller's exclusive use; pass it back
// with Release. It blocks until a session is free (or may be opened within
// the adaptive limit) or ctx ends; in the latter case the pool is left as
// it was. New sessions open on the first up server in preference order.
func (p *Pool) Acquire(ctx context.Context) (*Session, error) {
	started := time.Now()
	var hold *time.Timer
	defer func() {
		if hold != nil {
			hold.Stop()
		}
	}()
	for {
		p.mu.Lock()
		switch {
		case p.closed:
			p.mu.Unlock()
			return nil, ErrPoolClosed
		case !p.started:
			p.mu.Unlock()
			return nil, ErrNotStarted
		}
		now := time.Now()
		changed := p.changed
		var wake <-chan time.Time
		if wait := p.lim.holdUntil.Sub(now); wait > 0 {
			// Throttled: no new work until the pause ends.
			if hold == nil {
				hold = time.NewTimer(wait)
			} else {
				hold.Reset(wait)
			}
			wake = hold.C
		} else if len(p.busy)+p.opening < p.lim.limit {
			for len(p.idle) > 0 {
				s := p.idle[len(p.idle)-1]
				p.idle = p.idle[:len(p.idle)-1]
				if reason := p.recycleReason(s, now); reason != "" {
					if reason == "broken" {
						p.met.sessionFailure(Classify(s.Err()))
						p.brokenLocked(s)
					}
					p.retireLocked(s)
					continue
				}
				p.busy[s] = struct{}{}
				p.notifyLocked()
				p.mu.Unlock()
				return s, nil
			}
			// No idle session: open one (the count is below the limit).
			p.opening++
			p.notifyLocked()
			p.mu.Unlock()
			s, err := p.open(ctx, started)
			p.mu.Lock()
			p.opening--
			if err == nil && p.closed {
				p.retireLocked(s)
				err = ErrPoolClosed
			}
			if err == nil {
				p.busy[s] = struct{}{}
			}
			p.notifyLocked()
			p.mu.Unlock()
			return s, err
		}
		p.mu.Unlock()
		select {
		case <-changed:
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// serverFailure reports errors that say the server is gone or unwell: no
// connection, a reset, no answer in time, or a 5xx without a WS-Man fault
// (IIS or a load balancer answering for a dead WinRM service).
func serverFailure(err error) bool {
	var (
		te *TransportError
		se *StatusError
	)
	switch {
	case errors.As(err, &te):
		return !errors.Is(te.Err, errAborted)
	case errors.As(err, &se):
		return se.StatusCode >= 500
	}
	return false
}

// brokenLocked marks the endpoint of a session broken by the server's
// failure (not by a cmdlet overrunning its deadline) down, so that new
// sessions go elsewhere at once.
func (p *Pool) brokenLocked(s *Session) {
	if s.ep == nil || s.ep.state != StateUp || !serverFailure(s.Err()) {
		return
	}
	s.ep.markDown(time.Now(), p.opts.FailoverBackoff, s.Err())
	p.log.Warn("runspace: server marked down", "server", s.ep.server, "until", s.ep.downUntil.Format(time.RFC3339),
		"err", s.Err())
}

// Release returns a session obtained from Acquire, with the error of its
// last use (nil if none). Broken, worn-out and surplus sessions are closed
// in the background; quota errors lower the limit, successes raise it.
func (p *Pool) Release(s *Session, err error) {
	if s == nil {
		return
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.busy[s]; !ok {
		return // not ours, or released twice
	}
	delete(p.busy, s)
	switch {
	case errors.Is(err, ErrThrottled), s.throttled.Swap(false):
		p.throttleLocked(s.lastStart(), err)
	case err == nil, Classify(err) == ClassRemote:
		if p.lim.success(now) {
			p.log.Debug("runspace: concurrency raised", "limit", p.lim.limit)
		}
	}
	reason := p.recycleReason(s, now)
	switch {
	case reason == "broken":
		p.met.sessionFailure(Classify(s.Err()))
		p.brokenLocked(s)
		p.log.Info("runspace: replacing broken session", "server", s.server, "err", s.Err())
		p.retireLocked(s)
	case reason != "":
		p.log.Debug("runspace: recycling session", "server", s.server, "reason", reason)
		p.retireLocked(s)
	case p.closed, len(p.idle)+len(p.busy)+p.opening >= p.lim.limit:
		p.retireLocked(s)
	default:
		p.idle = append(p.idle, s)
	}
	p.notifyLocked()
}

// Do runs c on a pooled session and streams each output object to each as
// it arrives (on the calling goroutine). A call that failed because its
// session broke, Exchange throttled it, or (psrp) its pipeline stalled
// without output and was stopped is run again on another session,
// at most twice with a jittered backoff, when c.Idempotent is set and no
// object of the failed attempt reached each; a call that never reached a
// session is retried whatever Idempotent says. An error returned by each
// stops the call and is returned as is.
func (p *Pool) Do(ctx context.Context, c Call, each func(obj json.RawMessage) error) (Result, error) {
	start := time.Now()
	if err := checkCall(c); err != nil {
		p.met.requestError(c.Cmd, ClassInvalid)
		return Result{}, err
	}
	var (
		res     Result
		lastErr error
	)
	for attempt := 1; attempt <= 1+maxRetries; attempt++ {
		if attempt > 1 {
			if err := sleepCtx(ctx, jitter(retryBackoff<<(attempt-2))); err != nil {
				break
			}
		}
		s, err := p.Acquire(ctx)
		if err != nil {
			lastErr = err
			if errors.Is(err, ErrThrottled) && ctx.Err() == nil {
				continue // nothing ran: safe to retry any call
			}
			break
		}
		var (
			delivered bool
			eachErr   error
		)
		sent := time.Now()
		res, err = s.Do(ctx, c, func(obj json.RawMessage) error {
			if each == nil {
				return nil
			}
			delivered = true // the caller has seen output: no transparent retry
			eachErr = each(obj)
			return eachErr
		})
		if !errors.Is(err, errNotSent) {
			p.met.duration(c.Cmd).UpdateDuration(sent)
		}
		p.Release(s, err)
		res.Attempts = attempt
		if err == nil {
			res.Elapsed = time.Since(start)
			return res, nil
		}
		if eachErr != nil && errors.Is(err, eachErr) {
			res.Elapsed = time.Since(start)
			return res, err // the caller's own error, not the runspace's
		}
		lastErr = err
		if !retryable(ctx, c, err, delivered) {
			break
		}
		p.log.Debug("runspace: retrying call", "cmdlet", c.Cmd, "attempt", attempt, "err", err)
	}
	res.Elapsed = time.Since(start)
	p.met.requestError(c.Cmd, Classify(lastErr))
	return res, lastErr
}

func retryable(ctx context.Context, c Call, err error, delivered bool) bool {
	switch {
	case ctx.Err() != nil, delivered, errors.Is(err, ErrInvalidCall):
		return false
	case errors.Is(err, errNotSent):
		return true
	case !c.Idempotent:
		return false
	}
	return errors.Is(err, ErrSessionBroken) || errors.Is(err, ErrThrottled) || errors.Is(err, errStalled)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// probeLoop probes every down server once its backoff has expired, so
// that the preferred server is taken back when it recovers and a failover
// server that was down for a moment is up again (its endpoint_up gauge and
// any alert on it clear) while the preferred one serves: pickLocked only
// tries down servers when no up one is left, so without the prober a
// server after the first up one would stay down for good.
func (p *Pool) probeLoop(stop <-chan struct{}) {
	defer p.wg.Done()
	every := min(max(p.opts.FailoverBackoff/2, 50*time.Millisecond), 5*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		var due []*endpoint
		now := time.Now()
		for _, e := range p.eps {
			if e.due(now) {
				e.state = StateProbing
				due = append(due, e)
			}
		}
		f := p.f
		p.mu.Unlock()
		for _, e := range due {
			err := p.probe(f, e.server)
			p.mu.Lock()
			if e.state == StateProbing {
				if err == nil {
					e.markUp()
					p.log.Info("runspace: server is back", "server", e.server)
				} else {
					e.markDown(time.Now(), p.opts.FailoverBackoff, err)
					p.log.Debug("runspace: probe failed", "server", e.server, "err", err,
						"until", e.downUntil.Format(time.RFC3339))
				}
			}
			p.notifyLocked()
			p.mu.Unlock()
		}
	}
}

// probe checks a server by creating and deleting a WinRM shell: the
// endpoint answers and accepts the credentials.
func (p *Pool) probe(f *transportFactory, server string) error {
	ctx, cancel := context.WithTimeout(p.closing, p.opts.ConnectTimeout)
	defer cancel()
	if p.opts.Mode == ModePSRP {
		// The PSRP endpoint serves no cmd shells: a probe is a runspace
		// pool opened and deleted.
		s, err := openPSRP(ctx, &p.opts, f, server)
		if err != nil {
			return err
		}
		return s.Close(ctx)
	}
	tr := f.newTransport(server)
	defer tr.abort()
	stop := context.AfterFunc(ctx, tr.abort)
	defer stop()
	params := winrm.NewParameters(p.opts.wsmanTimeout(), "en-US", envelopeSize)
	params.TransportDecorator = func() winrm.Transporter { return tr }
	ep := p.opts.endpoint(server)
	client, err := winrm.NewClientWithParameters(ep, p.opts.User, p.opts.Password.Reveal(), params)
	if err != nil {
		return err
	}
	shell, err := client.CreateShell()
	if err != nil {
		return ctxErr(ctx, err)
	}
	if err := shell.Close(); err != nil {
		return ctxErr(ctx, err)
	}
	return nil
}

// Close stops handing out sessions, waits within ctx for the calls in
// flight, then closes every session (stdin EOF, terminate, shell deletion,
// each bounded). If ctx ends first, the calls still running are aborted and
// the deletion of their shells gets up to 2 more seconds (a shell left
// behind holds one of the account's quota slots until WinRM reaps it),
// and the shells whose creation went unanswered get a last sweep within
// ctx (orphans.go). When Close returns, no goroutine of the pool is left, unless even that
// failed (then it says so). Close is idempotent.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.closingCancel() // aborts session opens and probes
	if p.stopProbe != nil {
		close(p.stopProbe)
	}
	p.notifyLocked()
	var errs []error
	if !p.waitIdleLocked(ctx) {
		errs = append(errs, fmt.Errorf("%d calls still in flight: %w", len(p.busy), ctx.Err()))
		for s := range p.busy {
			s.markBroken(fmt.Errorf("pool closed: %w", ctx.Err()))
			s.tr.abort()
		}
		gctx, cancel := context.WithTimeout(context.Background(), forceGrace)
		p.waitIdleLocked(gctx)
		cancel()
	}
	for _, s := range p.idle {
		p.retireLocked(s)
	}
	p.idle = nil
	p.notifyLocked()
	p.mu.Unlock()

	if !waitGroup(ctx, &p.wg) {
		// Shells left behind count against the account's quotas until
		// WinRM's idle timeout: give their deletion a short grace, then
		// abort whatever is left.
		gctx, cancel := context.WithTimeout(context.Background(), forceGrace)
		if !waitGroup(gctx, &p.wg) {
			p.bgCancel()
			gctx2, cancel2 := context.WithTimeout(context.Background(), forceGrace)
			if !waitGroup(gctx2, &p.wg) {
				errs = append(errs, errors.New("background session closes did not finish"))
			}
			cancel2()
		}
		cancel()
	}
	p.orphans.flush(ctx) // shells whose creation went unanswered
	p.bgCancel()
	p.mu.Lock()
	p.finished = true
	f := p.f
	p.mu.Unlock()
	if f != nil {
		f.close()
	}
	if len(errs) > 0 {
		return fmt.Errorf("close runspace pool: %w", errors.Join(errs...))
	}
	return nil
}

// waitIdleLocked waits until no call is in flight and no session is being
// opened, or ctx ends. p.mu is held on entry and on return.
func (p *Pool) waitIdleLocked(ctx context.Context) bool {
	for len(p.busy) > 0 || p.opening > 0 {
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			p.mu.Lock()
			return false
		}
		p.mu.Lock()
	}
	return true
}

package wsman

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Causes of a command's context cancellation, readable by a Runner through
// context.Cause.
var (
	ErrTerminated   = errors.New("wsman: command terminated by signal")
	ErrInterrupted  = errors.New("wsman: command interrupted by ctrl_c")
	ErrShellDeleted = errors.New("wsman: shell deleted by the client")
	ErrShellDropped = errors.New("wsman: shell dropped by fault injection")
	ErrIdleTimeout  = errors.New("wsman: shell reaped after IdleTimeout")
	ErrServerClosed = errors.New("wsman: server closed")
)

// Buffer bounds per command. A Runner writing faster than the client
// receives blocks, as a process blocks on a full pipe; a client sending
// faster than the Runner reads stdin waits, as WinRS' stdin pipe would.
const (
	outputHighWater = 1 << 20
	stdinHighWater  = 1 << 20
	tombstones      = 64 // terminated command ids remembered per shell
)

// shell is one WinRS shell. Fields below mu-comment are guarded by
// Server.mu; the rest are immutable after creation.
type shell struct {
	id       string
	user     string // as authenticated
	userKey  string // quota key (lower-case user)
	clientIP string
	created  time.Time
	options  map[string]string
	// PowerShell shells (runspace pools): the ResourceURI, the Pool and the
	// pseudo-command whose buffers carry the pool's own messages.
	resourceURI string
	ps          bool
	poolCmd     *command

	// guarded by Server.mu
	pool         Pool
	lastActivity time.Time
	pending      int // requests in flight (long-polls) that count as activity
	commands     map[string]*command
	terminated   []string // recently terminated command ids, oldest first
	started      int      // pipelines started over the shell's life (MaxCommandsPerShell)
}

func (sh *shell) isTerminated(id string) bool {
	for _, t := range sh.terminated {
		if t == id {
			return true
		}
	}
	return false
}

// untombstone forgets that id was terminated, when a client reuses it.
func (sh *shell) untombstone(id string) {
	sh.terminated = slices.DeleteFunc(sh.terminated, func(t string) bool { return t == id })
}

func (sh *shell) addTombstone(id string) {
	if len(sh.terminated) == tombstones {
		sh.terminated = append(sh.terminated[:0], sh.terminated[1:]...)
	}
	sh.terminated = append(sh.terminated, id)
}

// command is one process started in a shell. Its buffers and state are
// guarded by mu; waiters sleep on wake, which is closed and replaced on
// every change (a broadcast that composes with select).
type command struct {
	info    Command
	started time.Time
	ctx     context.Context
	cancel  context.CancelCauseFunc
	exited  atomic.Bool // mirrors state for lock-free quota counting
	// PowerShell pipelines: ctrl_c closes interrupt instead of cancelling
	// ctx, so the pipeline can still report itself Stopped.
	ps        bool
	interrupt chan struct{}
	stopOnce  sync.Once

	mu       sync.Mutex
	wake     chan struct{}
	stdin    bytes.Buffer
	stdinEOF bool
	stdout   bytes.Buffer
	stderr   bytes.Buffer
	done     bool // Run returned
	exitCode int
	failure  *Fault // set once the command was terminated: Receives answer it
}

func newCommand(info Command) *command {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &command{info: info, started: time.Now(), ctx: ctx, cancel: cancel, wake: make(chan struct{})}
}

// broadcast wakes every waiter; c.mu must be held.
func (c *command) broadcast() {
	close(c.wake)
	c.wake = make(chan struct{})
}

// terminate cancels the process and makes every pending and later Receive
// answer f (nil keeps output deliverable, as ctrl_c does).
func (c *command) terminate(cause error, f *Fault) {
	// Record the failure before cancelling: a Runner that returns at once
	// must not let a pending Receive report Done instead of f.
	c.mu.Lock()
	if f != nil && c.failure == nil {
		c.failure = f
	}
	c.broadcast()
	c.mu.Unlock()
	c.cancel(cause)
}

// exit records the end of Run.
func (c *command) exit(code int) {
	c.mu.Lock()
	c.done = true
	c.exitCode = int(int32(code)) // Windows exit codes are 32-bit
	c.stdinEOF = true
	c.stdin.Reset()
	c.exited.Store(true)
	c.broadcast()
	c.mu.Unlock()
}

// buffered is the output waiting in the named streams; c.mu must be held.
func (c *command) buffered(streams []string) int {
	n := 0
	for _, s := range streams {
		if s == "stdout" {
			n += c.stdout.Len()
		} else {
			n += c.stderr.Len()
		}
	}
	return n
}

// take removes up to budget raw bytes from the named streams (stdout first)
// and reports whether the command is done, i.e. it exited and everything
// requested has been delivered. c.mu must be held.
func (c *command) take(streams []string, budget int) receiveChunk {
	chunk := receiveChunk{commandID: c.info.CommandID, streams: streams}
	for _, s := range streams {
		buf := &c.stdout
		if s == "stderr" {
			buf = &c.stderr
		}
		n := min(buf.Len(), budget)
		if n == 0 {
			continue
		}
		data := bytes.Clone(buf.Next(n))
		budget -= n
		if s == "stdout" {
			chunk.stdout = data
		} else {
			chunk.stderr = data
		}
	}
	if c.done && c.buffered(streams) == 0 {
		chunk.done, chunk.exitCode = true, c.exitCode
	}
	c.broadcast() // space freed for blocked writers
	return chunk
}

// send appends Send data to stdin, waiting while the Runner has not drained
// what is already buffered.
func (c *command) send(ctx context.Context, closed <-chan struct{}, data []byte, end bool) *Fault {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.failure != nil {
			return c.failure
		}
		if c.stdinEOF {
			return faultPipeClosing()
		}
		if c.stdin.Len() < stdinHighWater || len(data) == 0 {
			break
		}
		wake := c.wake
		c.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
		case <-closed:
		}
		c.mu.Lock()
		if ctx.Err() != nil {
			return faultPipeClosing()
		}
		select {
		case <-closed:
			return faultPipeClosing()
		default:
		}
	}
	c.stdin.Write(data)
	if end {
		c.stdinEOF = true
	}
	c.broadcast()
	return nil
}

// stdinReader is the Runner's view of stdin.
type stdinReader struct{ c *command }

func (r stdinReader) Read(p []byte) (int, error) {
	c := r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.stdin.Len() > 0 {
			n, _ := c.stdin.Read(p)
			c.broadcast()
			return n, nil
		}
		if c.stdinEOF {
			return 0, io.EOF
		}
		if err := c.ctx.Err(); err != nil {
			return 0, context.Cause(c.ctx)
		}
		if len(p) == 0 {
			return 0, nil
		}
		wake := c.wake
		c.mu.Unlock()
		select {
		case <-wake:
		case <-c.ctx.Done():
		}
		c.mu.Lock()
	}
}

// outputWriter is the Runner's view of stdout or stderr.
type outputWriter struct {
	c      *command
	stderr bool
}

func (w outputWriter) Write(p []byte) (int, error) {
	c := w.c
	buf := &c.stdout
	if w.stderr {
		buf = &c.stderr
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	written := 0
	for len(p) > 0 {
		if err := c.ctx.Err(); err != nil {
			return written, context.Cause(c.ctx)
		}
		if c.done {
			return written, io.ErrClosedPipe
		}
		space := outputHighWater - c.stdout.Len() - c.stderr.Len()
		if space <= 0 {
			wake := c.wake
			c.mu.Unlock()
			select {
			case <-wake:
			case <-c.ctx.Done():
			}
			c.mu.Lock()
			continue
		}
		n := min(space, len(p))
		buf.Write(p[:n])
		p = p[n:]
		written += n
		c.broadcast()
	}
	return written, nil
}

// WaitDrained blocks until every byte written so far was taken by a
// Receive, or ctx ends. A PowerShell pool uses it to answer its handshake
// in two Receive responses, as Windows does (pypsrp
// test_psrp_open_runspace.yml: SESSION_CAPABILITY and
// APPLICATION_PRIVATE_DATA, then RUNSPACEPOOL_STATE).
func (w outputWriter) WaitDrained(ctx context.Context) error {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.stdout.Len() > 0 || c.stderr.Len() > 0 {
		if c.done || c.ctx.Err() != nil {
			return io.ErrClosedPipe
		}
		wake := c.wake
		c.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
		case <-c.ctx.Done():
		}
		c.mu.Lock()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

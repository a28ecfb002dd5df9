package bed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"time"
)

// headSize is how much of a process's first output Proc keeps in memory
// for WaitOutput (the simulators print their addresses first).
const headSize = 64 << 10

// Proc is a child process whose output goes to a log file, with the start
// of it kept for WaitOutput.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	log  *os.File

	mu   sync.Mutex
	head bytes.Buffer

	exited chan struct{} // closed once the process has exited
	err    error         // of Wait, once exited is closed
}

// headWriter keeps the first headSize bytes.
type headWriter struct{ p *Proc }

func (w headWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	if room := headSize - w.p.head.Len(); room > 0 {
		w.p.head.Write(b[:min(room, len(b))])
	}
	return len(b), nil
}

// Start runs bin with args and env (added to this process's environment),
// its stdout and stderr appended to logPath.
func Start(name, bin string, args, env []string, logPath string) (*Proc, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, log: log, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	w := io.MultiWriter(log, headWriter{p})
	p.cmd.Stdout, p.cmd.Stderr = w, w
	p.cmd.SysProcAttr = ownGroup()
	if err := p.cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		log.Close()
		close(p.exited)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited is closed once the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Err is Wait's result; call it after Exited is closed.
func (p *Proc) Err() error { return p.err }

// Head returns the start of the output.
func (p *Proc) Head() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.head.String()
}

// WaitOutput waits until the start of the output matches re and returns
// every match's submatches, or fails when the process exits or ctx ends.
func (p *Proc) WaitOutput(ctx context.Context, re *regexp.Regexp) ([][]string, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if m := re.FindAllStringSubmatch(p.Head(), -1); m != nil {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: waiting for %q: %w\n%s", p.Name, re, ctx.Err(), p.Head())
		case <-p.exited:
			return nil, fmt.Errorf("%s exited before printing %q: %v\n%s", p.Name, re, p.err, p.Head())
		case <-t.C:
		}
	}
}

// Stop asks the process to stop (SIGTERM; on Windows it is killed) and
// waits up to timeout, then kills it. It returns Wait's error: nil after a
// clean exit.
func (p *Proc) Stop(timeout time.Duration) error {
	select {
	case <-p.exited:
		return p.err
	default:
	}
	if err := interrupt(p.cmd.Process); err != nil {
		_ = p.cmd.Process.Kill()
	}
	select {
	case <-p.exited:
		return p.err
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s: killed after not stopping within %s: %w", p.Name, timeout, p.err)
	}
}

// Kill kills the process at once (SIGKILL) and waits for it.
func (p *Proc) Kill() error {
	err := p.cmd.Process.Kill()
	<-p.exited
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

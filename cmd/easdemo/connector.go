package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"
)

// connectorName is the connector binary's file name on this OS.
func connectorName() string {
	if runtime.GOOS == "windows" {
		return "easconnector.exe"
	}
	return "easconnector"
}

// findConnector returns the connector binary: flag if set, else
// easconnector beside this program (bin/ under make demo), else on PATH.
func findConnector(flag string) (string, error) {
	if flag != "" {
		if _, err := os.Stat(flag); err != nil {
			return "", fmt.Errorf("--connector: %w", err)
		}
		return filepath.Abs(flag)
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), connectorName())
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("easconnector")
	if err != nil {
		return "", fmt.Errorf("no easconnector binary beside this program or on PATH: build it (make build) or give it with --connector")
	}
	return filepath.Abs(p)
}

// connector is the running `easconnector run` child process.
type connector struct {
	cmd    *exec.Cmd
	exited chan error // receives Wait's result once, and is then put back
}

// startConnector runs bin with `run --config cfg`, its stdout and stderr
// going to log. The child is in a process group of its own, so that the
// terminal's Ctrl-C reaches only the demo, which passes it on as one
// polite stop (two would make the connector exit without waiting).
func startConnector(bin, cfg string, log *os.File) (*connector, error) {
	cmd := exec.Command(bin, "run", "--config", cfg)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = ownGroup()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	c := &connector{cmd: cmd, exited: make(chan error, 1)}
	go func() { c.exited <- cmd.Wait() }()
	return c, nil
}

// waitReady waits until the connector's admin server answers /healthz,
// the connector exits, or ctx ends.
func (c *connector) waitReady(ctx context.Context, api *apiClient) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if api.healthy(ctx) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-c.exited:
			c.exited <- err
			if err == nil {
				err = errors.New("exited")
			}
			return fmt.Errorf("the connector stopped at start-up: %w", err)
		case <-t.C:
		}
	}
}

// stop asks the connector to stop and waits for it: shutdownTimeout plus
// a margin, then it is killed. A value on again (a second Ctrl-C) asks
// again, which makes the connector exit at once. It returns the exit
// error; nil after a clean stop.
func (c *connector) stop(again <-chan struct{}) error {
	select {
	case err := <-c.exited:
		c.exited <- err
		if err == nil {
			return errors.New("it exited by itself")
		}
		return err
	default:
	}
	if err := interrupt(c.cmd.Process); err != nil {
		c.cmd.Process.Kill()
	}
	kill := time.NewTimer(shutdownTimeout + 10*time.Second)
	defer kill.Stop()
	for {
		select {
		case err := <-c.exited:
			c.exited <- err
			return err
		case <-again:
			_ = interrupt(c.cmd.Process)
		case <-kill.C:
			c.cmd.Process.Kill()
			err := <-c.exited
			c.exited <- err
			return fmt.Errorf("killed after %s: %w", shutdownTimeout+10*time.Second, err)
		}
	}
}

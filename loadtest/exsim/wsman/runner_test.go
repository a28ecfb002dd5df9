package wsman_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
)

// testRunner runs a few programs, named like cmd.exe command lines:
//
//	echo [code]            copy stdin lines to stdout, then "eof\n" to stderr; exit code
//	emit N [code] [utf8]   write N bytes of a fixed pattern (ASCII or multi-byte UTF-8) to stdout
//	exit N                 exit with N at once
//	noop ...               exit 0, ignoring its arguments
//	sleep                  wait for cancellation; ctrl_c exits with STATUS_CONTROL_C_EXIT
//	delay MS TEXT          print TEXT after MS milliseconds
//	panic                  panic inside Run
//
// Anything else is refused by Start with cmd.exe's message. Every run is
// recorded with its command, exit code and the cause of its cancellation.
type testRunner struct {
	mu      sync.Mutex
	records map[string]*runRecord
	started chan wsman.Command
}

type runRecord struct {
	cmd   wsman.Command
	done  chan struct{}
	code  int
	cause error // context.Cause when Run returned; nil if not cancelled
}

var _ wsman.Runner = (*testRunner)(nil)

const statusControlCExit = -1073741510 // 0xC000013A

func newTestRunner() *testRunner {
	return &testRunner{records: map[string]*runRecord{}, started: make(chan wsman.Command, 256)}
}

// argv splits the command as cmd /c would when the client sent the whole
// line as rsp:Command (masterzen's Run* helpers do).
func argv(cmd wsman.Command) []string {
	if len(cmd.Args) > 0 {
		return append([]string{cmd.Name}, cmd.Args...)
	}
	return strings.Fields(cmd.Name)
}

func (r *testRunner) Start(cmd wsman.Command) error {
	args := argv(cmd)
	switch args[0] {
	case "echo", "emit", "exit", "noop", "sleep", "delay", "panic":
		return nil
	}
	return fmt.Errorf("'%s' is not recognized as an internal or external command, operable program or batch file.", args[0])
}

func (r *testRunner) Run(ctx context.Context, cmd wsman.Command, stdin io.Reader, stdout, stderr io.Writer) int {
	rec := &runRecord{cmd: cmd, done: make(chan struct{})}
	r.mu.Lock()
	r.records[cmd.CommandID] = rec
	r.mu.Unlock()
	select {
	case r.started <- cmd:
	default:
	}
	code := run(ctx, argv(cmd), stdin, stdout, stderr)
	r.mu.Lock()
	rec.code, rec.cause = code, context.Cause(ctx)
	r.mu.Unlock()
	close(rec.done)
	return code
}

// next returns the next command that started running.
func (r *testRunner) next(t testing.TB) wsman.Command {
	t.Helper()
	select {
	case cmd := <-r.started:
		return cmd
	case <-time.After(5 * time.Second):
		t.Fatal("no command started within 5s")
		return wsman.Command{}
	}
}

// finished waits for the run of a command to end and returns its record.
func (r *testRunner) finished(t testing.TB, commandID string) *runRecord {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		rec := r.records[commandID]
		r.mu.Unlock()
		if rec != nil {
			select {
			case <-rec.done:
				r.mu.Lock()
				defer r.mu.Unlock()
				return rec
			case <-time.After(time.Until(deadline)):
				t.Fatalf("command %s still running after 5s", commandID)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("command %s never ran", commandID)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func exitCode(args []string, i int) int {
	if len(args) <= i {
		return 0
	}
	n, err := strconv.Atoi(args[i])
	if err != nil {
		return 2
	}
	return n
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	switch args[0] {
	case "echo":
		br := bufio.NewReader(stdin)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				if _, werr := io.WriteString(stdout, line); werr != nil {
					return 1
				}
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return 1
			}
		}
		if _, err := io.WriteString(stderr, "eof\n"); err != nil {
			return 1
		}
		return exitCode(args, 1)
	case "emit":
		n := exitCode(args, 1)
		data := pattern(n, len(args) > 3 && args[3] == "utf8")
		for len(data) > 0 {
			k := min(len(data), 4096)
			if _, err := stdout.Write(data[:k]); err != nil {
				return 1
			}
			data = data[k:]
		}
		return exitCode(args, 2)
	case "exit":
		return exitCode(args, 1)
	case "noop":
		return 0
	case "sleep":
		<-ctx.Done()
		if errors.Is(context.Cause(ctx), wsman.ErrInterrupted) {
			return statusControlCExit
		}
		return 1
	case "delay":
		t := time.NewTimer(time.Duration(exitCode(args, 1)) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return 1
		}
		if _, err := fmt.Fprintln(stdout, strings.Join(args[2:], " ")); err != nil {
			return 1
		}
		return 0
	case "panic":
		panic("test runner panic")
	}
	return 9009 // cmd.exe's "not recognized"; Start refuses these first
}

// pattern is n bytes of recognisable output; the UTF-8 variant has
// multi-byte sequences that a split may cut.
func pattern(n int, utf8 bool) []byte {
	unit := "0123456789abcdefghijklmnopqrstuvwxyz\n"
	if utf8 {
		unit = "héllo wörld € 𝄞 ünïcödé\n"
	}
	return bytes.Repeat([]byte(unit), n/len(unit)+1)[:n]
}

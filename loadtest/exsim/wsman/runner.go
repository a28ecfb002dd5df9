// Package wsman serves the WS-Management / WinRS subset that
// github.com/masterzen/winrm speaks (shell Create, Command, Send, Receive,
// Signal, Delete) over HTTP, with Windows' fault envelopes, codes, texts and
// quotas. What a command does is delegated to a Runner, so the same server
// hosts the Exchange simulator's PowerShell worker and trivial test commands.
// It also serves PowerShell endpoints (MS-PSRP over WS-Management, see
// PowerShellHost): shells with client-chosen ids, pool and pipeline
// streams carrying PSRP fragments, ctrl_c that stops a pipeline.
package wsman

import (
	"context"
	"io"
)

// Command is one command started in a shell.
type Command struct {
	ShellID   string
	CommandID string
	User      string            // authenticated user that owns the shell
	Name      string            // rsp:Command, e.g. "powershell.exe"
	Args      []string          // rsp:Arguments, in order
	Options   map[string]string // shell and command options (WINRS_*)
}

// Runner runs commands. Run is called on its own goroutine for each Command
// and returns the exit code. stdin yields what the client Sends and io.EOF
// after the client's End; stdout and stderr are delivered to the client by
// Receive. ctx is cancelled when the client signals terminate, the shell is
// deleted or reaped, or the server closes; Run must then return promptly.
// Returning an error from Start refuses the command with a fault carrying
// the error's text (e.g. the command line is not acceptable).
type Runner interface {
	Start(cmd Command) error
	Run(ctx context.Context, cmd Command, stdin io.Reader, stdout, stderr io.Writer) int
}

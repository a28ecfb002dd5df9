package main

import (
	"context"
	"fmt"
	"io"

	"github.com/easconnector/easconnector/config"
	"github.com/easconnector/easconnector/pipeline"
)

const auditHelp = `verify checks the hash chain of the audit log (state_dir/audit.jsonl and
its rotated files audit.NNNNNN.jsonl): every line carries the SHA-256 of the
line before, so a changed byte, or a line removed, inserted or reordered,
breaks the chain at the next line; audit.head records the last line flushed,
so lines cut from the end show too. It prints each break with file, line
number and what is wrong, then the chain's head hash: record it elsewhere
to check later that the log was not rewritten as a whole.

A torn last line (the file ends inside a line after a crash or power loss)
is reported as such; the service moves it to audit.torn-<time> at its next
start and continues the chain from the line before.

It only reads, and may run beside the service; a line being written at that
moment can show as torn (run it again).

Exit codes: 0 the chain is whole, 1 it breaks (or cannot be read), 2 usage.`

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "verify" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprintf(stdout, "Usage: easconnector audit verify [--config file] [--state-dir dir]\n\n%s\n", auditHelp)
			return exitOK
		}
		fmt.Fprintf(stderr, "Usage: easconnector audit verify [--config file] [--state-dir dir]\n")
		return exitUsage
	}
	fs := newFlags("audit verify", "[--config file] [--state-dir dir]", stderr)
	cfgPath := fs.String("config", defaultConfig, "configuration file, for [sync] state_dir")
	stateDir := fs.String("state-dir", "", "the state directory (default: [sync] state_dir of the configuration)")
	withHelp(fs, auditHelp)
	if code := parseFlags(fs, args[1:]); code >= 0 {
		return code
	}
	dir := *stateDir
	if dir == "" {
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			fmt.Fprintf(stderr, "easconnector audit verify: %v (or give --state-dir)\n", err)
			return exitFailed
		}
		dir = cfg.Sync.StateDir
	}
	v, err := pipeline.VerifyAudit(dir)
	if err != nil {
		fmt.Fprintf(stderr, "easconnector audit verify: %v\n", err)
		return exitFailed
	}
	for _, p := range v.Problems {
		fmt.Fprintln(stdout, p.String())
	}
	for _, t := range v.Torn {
		fmt.Fprintf(stdout, "%s: a torn line set aside after a crash (not part of the chain)\n", t)
	}
	start := "from the first line ever written"
	if !v.Anchored {
		start = "from a line whose predecessor is no longer kept (rotated away)"
	}
	if v.Legacy > 0 {
		start = fmt.Sprintf("after %d lines written before the log was chained", v.Legacy)
	}
	if v.Lines == 0 {
		start = "empty"
	}
	head := v.Head
	if head == "" {
		head = "none"
	}
	fmt.Fprintf(stdout, "%d lines in %d files (%s); head %s\n", v.Lines, len(v.Files), start, head)
	if !v.OK() {
		fmt.Fprintf(stdout, "audit log chain BROKEN: %d problems\n", len(v.Problems))
		return exitFailed
	}
	fmt.Fprintln(stdout, "audit log chain OK")
	return exitOK
}

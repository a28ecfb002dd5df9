package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/easconnector/easconnector/config"
	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/runspace"
)

// closeTimeout bounds closing one check session.
const closeTimeout = 15 * time.Second

// serverCheck is the outcome of checking one server.
type serverCheck struct {
	server     string
	discovered bool
	reachable  string // yes, no or ? (unknown: failed before we could tell)
	auth       string // ok, failed or -
	exchange   string
	host       string
	devices    int
	devLimit   int
	rtt        time.Duration
	stage      string // what failed: connect, settings, devices
	err        error
	found      []string // Client Access servers it reported (discovery)
}

func (r *serverCheck) ok() bool { return r.err == nil }

const checkHelp = `Checks everything the service needs, without changing anything: each
Exchange server (reachable, login, the ActiveSync settings, a device count;
discovered Client Access servers too), then in one table the MDM (the token,
a page of devices, each group's members, the application permissions), the
mail relay when [notify] is on (connect, STARTTLS or TLS, AUTH; nothing is
sent), the state directory (writable, owner-only, the lock, free space), the
admin server (tokens, certificate, listen address), and the settings that
weaken security (insecure_skip_verify, plain HTTP to
Exchange, Graph or the admin API, unencrypted mail). Each failed or warned
line is followed by its cause and the fix.

Exit codes: 0 nothing failed (warnings allowed), 1 a check failed, 2 usage
or a configuration that does not load.`

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", "[--config file] [--device-limit n]", stderr)
	withHelp(fs, checkHelp)
	cfgPath := fs.String("config", defaultConfig, "configuration file")
	limit := fs.Int("device-limit", 1000, "count at most this many devices per server (0: count all, which can take minutes)")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if *limit < 0 {
		fmt.Fprintf(stderr, "easconnector check: --device-limit must not be negative, got %d\n", *limit)
		return exitUsage
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "easconnector check: %v\n", err)
		return exitUsage
	}
	opts, err := cfg.RunspaceOptions()
	if err != nil {
		fmt.Fprintf(stderr, "easconnector check: %v\n", err)
		return exitUsage
	}
	opts.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	var results []*serverCheck
	seen := map[string]bool{}
	discover := cfg.Exchange.CASFailover
	queue := slices.Clone(cfg.Exchange.Servers)
	for i := 0; i < len(queue); i++ {
		server := queue[i]
		if seen[strings.ToLower(server)] {
			continue
		}
		seen[strings.ToLower(server)] = true
		r := checkServer(ctx, opts, server, *limit, discover)
		r.discovered = i >= len(cfg.Exchange.Servers)
		results = append(results, r)
		if discover && r.found != nil {
			discover = false // one server's view of the organization is enough
			queue = append(queue, r.found...)
		}
		if ctx.Err() != nil {
			break
		}
	}
	printChecks(stdout, results)
	// Everything else the service needs, in one table with the cause and
	// the fix of each failure (the Exchange servers sum up in its first
	// line).
	if printServiceChecks(stdout, checkService(ctx, cfg, results)) > 0 || ctx.Err() != nil {
		return exitFailed
	}
	return exitOK
}

// checkServer opens one session on server, reads the organization settings
// (timing the round trip) and counts devices; with discover it also lists
// the organization's Client Access servers.
func checkServer(ctx context.Context, opts runspace.Options, server string, limit int, discover bool) *serverCheck {
	r := &serverCheck{server: server, reachable: "?", auth: "-", devLimit: limit}
	s, err := runspace.Open(ctx, opts, server)
	if err != nil {
		r.stage, r.err = "connect", err
		switch runspace.Classify(err) {
		case runspace.ClassAuth:
			r.reachable, r.auth = "yes", "failed"
		case runspace.ClassTLS:
			r.reachable = "yes"
		case runspace.ClassInit, runspace.ClassThrottle, runspace.ClassFault, runspace.ClassProtocol, runspace.ClassRemote:
			r.reachable, r.auth = "yes", "ok"
		case runspace.ClassTransport, runspace.ClassTimeout:
			r.reachable = "no"
		}
		return r
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_ = s.Close(cctx)
	}()
	r.reachable, r.auth = "yes", "ok"
	info := s.Info()
	r.exchange, r.host = info.Exchange, info.Host

	c := exchange.New(s)
	start := time.Now()
	if _, err := c.OrgSettings(ctx); err != nil {
		r.stage, r.err = "read ActiveSync organization settings", err
		return r
	}
	r.rtt = time.Since(start)
	if r.devices, err = c.CountMobileDevices(ctx, limit); err != nil {
		r.stage, r.err = "count mobile devices", err
		return r
	}
	if discover {
		r.found = discoverCAS(ctx, c)
	}
	return r
}

// discoverCAS lists the organization's Client Access servers, by
// Get-ClientAccessService, else by the ClientAccess role of
// Get-ExchangeServer. It returns nil when neither works (nothing to add).
func discoverCAS(ctx context.Context, c *exchange.Client) []string {
	var names []string
	add := func(s exchange.ExchangeServer) {
		if n := cmp(s.Fqdn, s.Name); n != "" {
			names = append(names, n)
		}
	}
	if cas, err := c.ClientAccessServers(ctx); err == nil {
		for _, s := range cas {
			add(s)
		}
		return names
	}
	servers, err := c.ExchangeServers(ctx)
	if err != nil {
		return nil
	}
	for _, s := range servers {
		if slices.Contains(s.ServerRole, "ClientAccess") {
			add(s)
		}
	}
	return names
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func printChecks(w io.Writer, results []*serverCheck) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tSOURCE\tREACHABLE\tAUTH\tEXCHANGE\tDEVICES\tRTT\tRESULT")
	failed := 0
	for _, r := range results {
		source := "config"
		if r.discovered {
			source = "discovered"
		}
		devices, rtt, result := "-", "-", "OK"
		if r.rtt > 0 {
			rtt = r.rtt.Round(time.Millisecond).String()
		}
		if r.err == nil {
			devices = strconv.Itoa(r.devices)
			if r.devLimit > 0 && r.devices >= r.devLimit {
				devices += "+"
			}
		} else {
			result = "FAILED"
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.server, source, r.reachable, r.auth,
			cmp(r.exchange, "-"), devices, rtt, result)
	}
	tw.Flush()
	if failed > 0 {
		fmt.Fprintln(w)
		for _, r := range results {
			if r.err != nil {
				fmt.Fprintf(w, "%s: %s: %s\n", r.server, r.stage, explain(r.err))
			}
		}
	}
	fmt.Fprintf(w, "\n%d of %d servers OK\n", len(results)-failed, len(results))
}

// explain turns a session or cmdlet error into advice for an administrator.
func explain(err error) string {
	var re *runspace.RemoteError
	switch runspace.Classify(err) {
	case runspace.ClassAuth:
		return "authentication failed: the server refused exchange.user and its password (wrong password, " +
			"locked or expired account, or this auth method is not enabled on the WinRM listener): " + err.Error()
	case runspace.ClassTLS:
		return "TLS failure: the server's certificate is not trusted or not issued for this name " +
			"(set exchange.ca_file to the issuing CA; connect by the name in the certificate): " + err.Error()
	case runspace.ClassThrottle:
		return "quota exceeded: the account has too many PowerShell sessions or cmdlets running " +
			"(Exchange PowerShellMaxConcurrency, WinRM MaxShellsPerUser); close other sessions or raise the quota: " + err.Error()
	case runspace.ClassInit:
		return "the bootstrap could not load Exchange (remoting needs http://<server>/PowerShell/ and Exchange " +
			"permissions for the account; snapin needs the Exchange management tools): " + err.Error()
	case runspace.ClassTimeout:
		return "timed out (server slow or unreachable; see exchange.connect_timeout and request_timeout): " + err.Error()
	case runspace.ClassTransport:
		return "unreachable (check the name, exchange.port and exchange.https, and that WinRM listens): " + err.Error()
	case runspace.ClassFault:
		return "WinRM refused the request: " + err.Error()
	case runspace.ClassProtocol:
		return "protocol error: the server does not speak easconnector's bootstrap protocol: " + err.Error()
	case runspace.ClassCanceled:
		return "interrupted"
	case runspace.ClassRemote:
		if errors.As(err, &re) && strings.Contains(re.Type, "CommandNotFoundException") {
			return "the account may not run this cmdlet (assign the Exchange role that grants it): " + err.Error()
		}
		return "the cmdlet failed: " + err.Error()
	}
	return err.Error()
}

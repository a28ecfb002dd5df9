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
	"github.com/easconnector/easconnector/pipeline"
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
	endpoint   string   // the URL the session opens
	mech       string   // the auth mechanism (basic, ntlm, kerberos)
	mode       string   // the session kind (psrp, remoting, snapin)
	// missing are the cmdlets easconnector runs that the session does not
	// offer (psrp: the account's RBAC roles do not grant them); rbacErr
	// says why they could not be listed.
	missing []string
	rbacErr error
	// The organization as this server showed it, for the device access
	// rule check (rulesErr: reading rules or devices failed).
	settings exchange.OrgSettings
	rules    []exchange.DeviceAccessRule
	sample   []exchange.MobileDevice
	rulesErr error
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
	rulesRead := false // the device access rule check reads from the first server that answers
	queue := slices.Clone(cfg.Exchange.Servers)
	for i := 0; i < len(queue); i++ {
		server := queue[i]
		if seen[strings.ToLower(server)] {
			continue
		}
		seen[strings.ToLower(server)] = true
		r := checkServer(ctx, opts, server, *limit, discover, !rulesRead)
		rulesRead = rulesRead || r.ok()
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
	for _, r := range results {
		if r.ok() {
			pol, err := cfg.PipelinePolicy(r.settings.DefaultAccessLevel)
			if err != nil {
				fmt.Fprintf(stderr, "easconnector check: %v\n", err)
				return exitUsage
			}
			checkRules(stdout, &pol, r)
			break
		}
	}
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
func checkServer(ctx context.Context, opts runspace.Options, server string, limit int, discover, rules bool) *serverCheck {
	r := &serverCheck{server: server, reachable: "?", auth: "-", devLimit: limit, mode: cmp(opts.Mode, runspace.DefaultMode)}
	r.endpoint, r.mech, _ = opts.EndpointURL(server) // Open reports a bad option
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
	if r.mode == runspace.ModePSRP {
		// Read only, and first: a cmdlet the roles do not grant explains
		// every later failure. Nothing is probed by calling it.
		r.missing, r.rbacErr = c.MissingCmdlets(ctx, exchange.Cmdlets())
		if len(requiredMissing(r.missing)) > 0 {
			r.stage, r.err = "RBAC", errRBACGap
		}
	}
	start := time.Now()
	if r.settings, err = c.OrgSettings(ctx); err != nil {
		if r.err == nil {
			r.stage, r.err = "read ActiveSync organization settings", err
		}
		return r
	}
	r.rtt = time.Since(start)
	if r.exchange == "" {
		// The PSRP session reports no Exchange version (its
		// APPLICATION_PRIVATE_DATA has PowerShell's only): the server's
		// own AdminDisplayVersion, as Get-ExchangeServer shows it.
		r.exchange = serverVersion(ctx, c, server)
	}
	if r.err != nil {
		return r
	}
	if r.devices, err = c.CountMobileDevices(ctx, limit); err != nil {
		r.stage, r.err = "count mobile devices", err
		return r
	}
	if discover {
		r.found = discoverCAS(ctx, c)
	}
	if rules {
		r.rules, r.sample, r.rulesErr = readRulesAndDevices(ctx, c, limit)
	}
	return r
}

// errSampleFull stops the device read of the rule check at its limit.
var errSampleFull = errors.New("device sample full")

// readRulesAndDevices reads the device access rules and up to limit
// devices (0: all) for checkRules.
func readRulesAndDevices(ctx context.Context, c *exchange.Client, limit int) ([]exchange.DeviceAccessRule, []exchange.MobileDevice, error) {
	rules, err := c.DeviceAccessRules(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("read device access rules: %w", err)
	}
	var devs []exchange.MobileDevice
	err = c.MobileDevices(ctx, exchange.DeviceFilter{}, func(d exchange.MobileDevice, derr error) error {
		if derr == nil {
			devs = append(devs, d)
		}
		if limit > 0 && len(devs) >= limit {
			return errSampleFull
		}
		return nil
	})
	if err != nil && !errors.Is(err, errSampleFull) {
		return rules, nil, fmt.Errorf("read mobile devices: %w", err)
	}
	return rules, devs, nil
}

// checkRules prints how the policy's platform exceptions fare under
// Exchange's rule order (user agent, OS, model, type; the first match
// decides whatever its level): an exception that an administrator's rule,
// or another exception's, overrides for some devices is shadowed and does
// not do what the policy says (pipeline.ShadowedByRules). It is a warning,
// not a failure: the connector runs, but the policy is not what Exchange
// enforces for those devices.
func checkRules(w io.Writer, p *pipeline.Policy, r *serverCheck) {
	fmt.Fprintln(w)
	if r.rulesErr != nil {
		fmt.Fprintf(w, "Device access rules: %s: %s\n", r.server, explain(r.rulesErr))
		return
	}
	fmt.Fprintf(w, "Device access rules: %d in Exchange, %d platform exceptions in the policy, checked against %d devices\n",
		len(r.rules), len(p.PlatformExceptions), len(r.sample))
	shadows := pipeline.ShadowedByRules(p, r.rules, r.settings.DefaultAccessLevel, r.sample)
	for _, s := range shadows {
		fmt.Fprintf(w, "WARNING: %s\n", s)
	}
	if len(shadows) == 0 && len(p.PlatformExceptions) > 0 {
		fmt.Fprintln(w, "No platform exception is shadowed by Exchange's rule order.")
	}
}

// errRBACGap fails a server whose session lacks cmdlets easconnector needs.
var errRBACGap = errors.New("the account's Exchange roles do not grant every cmdlet easconnector runs")

// optionalCmdlets may be missing without failing the check: CAS discovery
// falls back from Get-ClientAccessService (Exchange 2016 and later) to
// Get-ExchangeServer.
var optionalCmdlets = []string{"Get-ClientAccessService"}

func requiredMissing(missing []string) []string {
	return slices.DeleteFunc(slices.Clone(missing), func(c string) bool { return slices.Contains(optionalCmdlets, c) })
}

// serverVersion returns the AdminDisplayVersion of server as
// Get-ExchangeServer reports it (matched by FQDN, name or the FQDN's first
// label; else the organization's only server), or "" when it cannot tell.
func serverVersion(ctx context.Context, c *exchange.Client, server string) string {
	servers, err := c.ExchangeServers(ctx)
	if err != nil {
		return ""
	}
	short, _, _ := strings.Cut(server, ".")
	for _, s := range servers {
		if strings.EqualFold(s.Fqdn, server) || strings.EqualFold(s.Name, server) || strings.EqualFold(s.Name, short) {
			return s.AdminDisplayVersion
		}
	}
	if len(servers) == 1 {
		return servers[0].AdminDisplayVersion
	}
	return ""
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
	fmt.Fprintln(w)
	for _, r := range results {
		printDetails(w, r)
	}
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

// rbacAdvice is where a missing cmdlet is granted.
const rbacAdvice = "grant it with deploy/exchange/New-EasConnectorRbac.ps1 -ServiceAccount <account> (see docs/exchange-rbac.md)"

// printDetails writes what a server's session is: endpoint, auth
// mechanism, Exchange version, and (psrp) the RBAC gap.
func printDetails(w io.Writer, r *serverCheck) {
	fmt.Fprintf(w, "%s\n  endpoint  %s (%s, auth %s)\n  exchange  %s\n", r.server, cmp(r.endpoint, "-"), r.mode, cmp(r.mech, "-"), cmp(r.exchange, "-"))
	switch {
	case r.mode != runspace.ModePSRP:
		fmt.Fprintf(w, "  rbac      not listed in %s mode (the WinRS shell needs WinRM shell rights; see docs/exchange-rbac.md)\n", r.mode)
	case r.auth != "ok":
		fmt.Fprintln(w, "  rbac      - (no session)")
	case r.rbacErr != nil:
		fmt.Fprintf(w, "  rbac      could not list the granted cmdlets: %v\n", r.rbacErr)
	case len(r.missing) == 0:
		fmt.Fprintf(w, "  rbac      ok: the account may run all %d cmdlets easconnector runs\n", len(exchange.Cmdlets()))
	default:
		for _, c := range r.missing {
			what := "cannot run"
			if slices.Contains(optionalCmdlets, c) {
				what = "cannot run (optional: CAS discovery falls back to Get-ExchangeServer)"
			}
			fmt.Fprintf(w, "  rbac      %s %s: %s\n", what, c, rbacAdvice)
		}
	}
}

// explain turns a session or cmdlet error into advice for an administrator.
func explain(err error) string {
	var re *runspace.RemoteError
	switch runspace.Classify(err) {
	case runspace.ClassAuth:
		return "authentication failed: the server refused exchange.user and its password (wrong password, " +
			"locked or expired account, or this auth method is not enabled: psrp accepts Kerberos on the " +
			"/PowerShell/ virtual directory by default, Basic and NTLM only where Set-PowerShellVirtualDirectory " +
			"enabled them; the WinRS modes need it on the WinRM listener): " + err.Error()
	case runspace.ClassTLS:
		return "TLS failure: the server's certificate is not trusted or not issued for this name " +
			"(set exchange.ca_file to the issuing CA; connect by the name in the certificate): " + err.Error()
	case runspace.ClassThrottle:
		return "quota exceeded: the account has too many PowerShell sessions or cmdlets running " +
			"(Exchange PowerShellMaxConcurrency, WinRM MaxShellsPerUser); close other sessions or raise the quota: " + err.Error()
	case runspace.ClassInit:
		return "the Exchange session did not open (psrp: the /PowerShell/ runspace pool refused the account, which " +
			"needs an Exchange role assignment, see docs/exchange-rbac.md; remoting: the bootstrap needs " +
			"http://<server>/PowerShell/ and Exchange permissions; snapin: the Exchange management tools): " + err.Error()
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
	case runspace.ClassOther:
		if errors.Is(err, errRBACGap) {
			return err.Error() + " (the rbac lines above name them): run deploy/exchange/New-EasConnectorRbac.ps1 " +
				"-ServiceAccount <account> to grant them (see docs/exchange-rbac.md)"
		}
	case runspace.ClassRemote:
		if errors.As(err, &re) && strings.Contains(re.Type, "CommandNotFoundException") {
			return "the account may not run this cmdlet (assign the Exchange role that grants it): " + err.Error()
		}
		return "the cmdlet failed: " + err.Error()
	}
	return err.Error()
}

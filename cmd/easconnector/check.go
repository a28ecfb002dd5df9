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
	"github.com/easconnector/easconnector/mdm"
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
	// The organization as this server showed it, for the device access
	// rule check (rulesErr: reading rules or devices failed).
	settings exchange.OrgSettings
	rules    []exchange.DeviceAccessRule
	sample   []exchange.MobileDevice
	rulesErr error
}

func (r *serverCheck) ok() bool { return r.err == nil }

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", "[--config file] [--device-limit n]", stderr)
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
	mdmOK := true
	if cfg.MDM.Source == "graph" {
		gopts, err := cfg.GraphOptions()
		if err != nil {
			fmt.Fprintf(stderr, "easconnector check: %v\n", err)
			return exitUsage
		}
		gopts.MaxRetries, gopts.MaxRetryWait = 2, 30*time.Second // a check reports, it does not wait out an outage
		mdmOK = checkGraph(ctx, stdout, gopts, cfg.MDM.IncludedGroups, cfg.MDM.ExcludedGroups)
	}
	for _, r := range results {
		if !r.ok() {
			return exitFailed
		}
	}
	if !mdmOK || ctx.Err() != nil {
		return exitFailed
	}
	return exitOK
}

// checkGraph reads a page of managed devices and of each configured
// group's members with the configured app registration and prints what
// came back and which application permission is missing, if any: a 403,
// members without ids (fatal: the sync would stop), members whose UPN and
// mail come back null (the app cannot read users; the sync works by
// object id, see docs/operations.md). It reports whether nothing fatal
// was found.
func checkGraph(ctx context.Context, w io.Writer, opts mdm.GraphOptions, included, excluded []string) bool {
	fmt.Fprintf(w, "\nMicrosoft Graph (tenant %s, app %s)\n", opts.TenantID, opts.ClientID)
	g, err := mdm.NewGraph(opts)
	if err != nil {
		fmt.Fprintf(w, "  %v\n", err)
		return false
	}
	res, err := g.Probe(ctx, slices.Concat(included, excluded))
	if err != nil {
		fmt.Fprintf(w, "  %v\n", err)
		return false
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  READ\tITEMS\tWITHOUT NAME OR USERID\tRESULT")
	result := func(err error) string {
		if err != nil {
			return "FAILED"
		}
		return "OK"
	}
	fmt.Fprintf(tw, "  managedDevices\t%d\t%d without userId\t%s\n", res.Devices, res.DevicesWithoutUserID, result(res.DevicesErr))
	for _, gp := range res.Groups {
		kind := "excluded"
		if slices.ContainsFunc(included, func(id string) bool { return strings.EqualFold(id, gp.ID) }) {
			kind = "included"
		}
		fmt.Fprintf(tw, "  %s group %s\t%d users\t%d without UPN and mail\t%s\n", kind, gp.ID, gp.Users, gp.Unnamed, result(gp.Err))
	}
	tw.Flush()
	ok := true
	findings := res.Findings()
	for _, f := range findings {
		level := "warning"
		if f.Fatal {
			level, ok = "error", false
		}
		fmt.Fprintf(w, "  %s: %s\n", level, f.Text)
	}
	if len(findings) == 0 {
		fmt.Fprintf(w, "  the application has the permissions the connector needs (%s, %s, %s)\n", mdm.PermDevices, mdm.PermMembers, mdm.PermUsers)
	}
	return ok
}

// checkServer opens one session on server, reads the organization settings
// (timing the round trip) and counts devices; with discover it also lists
// the organization's Client Access servers.
func checkServer(ctx context.Context, opts runspace.Options, server string, limit int, discover, rules bool) *serverCheck {
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
	if r.settings, err = c.OrgSettings(ctx); err != nil {
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

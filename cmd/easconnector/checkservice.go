package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/easconnector/easconnector/config"
	"github.com/easconnector/easconnector/internal/hostaddr"
	"github.com/easconnector/easconnector/mdm"
	"github.com/easconnector/easconnector/pipeline/notify"
)

// Results of a service check line.
const (
	checkOK      = "OK"
	checkWarn    = "WARN"
	checkFailed  = "FAILED"
	checkSkipped = "SKIPPED"
)

// checkLine is one line of check's service table: what was checked, how
// it went and, for a failure or a warning, the cause and the fix.
type checkLine struct {
	area, item string
	result     string
	detail     string
	cause, fix string
}

// checkTimeout bounds each network step of the mail relay check.
const checkTimeout = 20 * time.Second

// Free space in the state directory below which check fails or warns. The
// state (devices.bin at ~110 bytes a device, the caches, held plans) stays
// well under the warning level for 50,000 mailboxes; the audit log grows to
// audit_max_bytes × (audit_keep+1), which is added to it.
const (
	minFreeBytes  = 64 << 20
	warnFreeBytes = 512 << 20
)

// checkService checks what the service needs beside Exchange: the MDM, the
// mail relay, the state directory, and the settings that weaken security.
// results are the Exchange server checks, summed up in one line.
func checkService(ctx context.Context, cfg *config.Config, results []*serverCheck) []checkLine {
	var lines []checkLine
	lines = append(lines, exchangeSummary(results))
	lines = append(lines, checkMDM(ctx, cfg)...)
	lines = append(lines, checkMail(ctx, cfg)...)
	state := checkStateDir(cfg)
	lines = append(lines, state...)
	serviceRuns := slices.ContainsFunc(state, func(l checkLine) bool { return l.item == "lock" && strings.HasPrefix(l.detail, "held by ") })
	lines = append(lines, checkAdminServer(cfg, serviceRuns)...)
	lines = append(lines, securityWarnings(cfg)...)
	return lines
}

// exchangeSummary is the Exchange table in one line; the table above says
// which server failed and why.
func exchangeSummary(results []*serverCheck) checkLine {
	ok := 0
	for _, r := range results {
		if r.ok() {
			ok++
		}
	}
	l := checkLine{area: "exchange", item: "servers", result: checkOK, detail: fmt.Sprintf("%d of %d servers OK", ok, len(results))}
	switch {
	case len(results) == 0:
		l.result, l.cause, l.fix = checkFailed, "no server was checked", "list the Client Access servers in [exchange] servers"
	case ok < len(results):
		l.result = checkFailed
		l.cause = "a server failed (see the server table above for the cause of each)"
		l.fix = "fix what the server table names; the service fails over to the servers that work, but every listed server should"
	}
	return l
}

// checkMDM reads a page of devices and of each group's members with the
// configured app registration (mdm.Graph.Probe), or reads the MDM file.
func checkMDM(ctx context.Context, cfg *config.Config) []checkLine {
	if cfg.MDM.Source != "graph" {
		return []checkLine{checkMDMFile(ctx, cfg)}
	}
	app := fmt.Sprintf("tenant %s, app %s", cfg.MDM.TenantID, cfg.MDM.ClientID)
	gopts, err := cfg.GraphOptions()
	if err != nil {
		return []checkLine{{area: "mdm", item: "credentials", result: checkFailed, detail: app, cause: err.Error(),
			fix: "set [mdm] client_secret_file (or client_secret_env), or certificate_file and key_file, for the app registration"}}
	}
	gopts.MaxRetries, gopts.MaxRetryWait = 2, 30*time.Second // a check reports, it does not wait out an outage
	g, err := mdm.NewGraph(gopts)
	if err != nil {
		return []checkLine{{area: "mdm", item: "credentials", result: checkFailed, detail: app, cause: err.Error(), fix: "correct the [mdm] settings it names"}}
	}
	groups := slices.Concat(cfg.MDM.IncludedGroups, cfg.MDM.ExcludedGroups)
	res, err := g.Probe(ctx, groups)
	if err != nil {
		return []checkLine{{area: "mdm", item: "groups", result: checkFailed, cause: err.Error(),
			fix: "give [mdm] included_groups and excluded_groups as Entra ID group object ids"}}
	}
	return graphLines(app, res, cfg.MDM.IncludedGroups)
}

// graphLines turns a Graph probe into lines: the token, the device page,
// each group, and the permissions.
func graphLines(app string, res *mdm.ProbeResult, included []string) []checkLine {
	var lines []checkLine
	// The token is fetched before the first read; when that fails, the
	// device read carries "token: …" and no read was made.
	if res.DevicesErr != nil && strings.Contains(res.DevicesErr.Error(), "token: ") {
		return append(lines, checkLine{area: "mdm", item: "token", result: checkFailed, detail: app, cause: res.DevicesErr.Error(),
			fix: "check [mdm] tenant_id, client_id and the secret or certificate (AADSTS7000215: wrong secret; AADSTS700016: unknown app in this tenant; " +
				"an expired secret must be renewed in Entra ID under App registrations → Certificates & secrets)"})
	}
	lines = append(lines, checkLine{area: "mdm", item: "token", result: checkOK, detail: app})
	findings := res.Findings()
	finding := func(prefix string) (mdm.Finding, bool) {
		for _, f := range findings {
			if strings.HasPrefix(f.Text, prefix) {
				return f, true
			}
		}
		return mdm.Finding{}, false
	}
	line := func(item, detail string, err error, prefix string) {
		l := checkLine{area: "mdm", item: item, result: checkOK, detail: detail}
		if f, ok := finding(prefix); ok {
			l.result, l.cause = checkWarn, f.Text
			if f.Fatal || err != nil {
				l.result = checkFailed
			}
			if f.Permission != "" {
				l.fix = "grant the application permission " + f.Permission + " (Microsoft Graph, application, not delegated) and admin consent in Entra ID"
			}
		} else if err != nil {
			l.result, l.cause = checkFailed, err.Error()
		}
		if l.result == checkFailed && l.fix == "" {
			l.fix = "see the cause; Graph outages clear by themselves (the service retries), anything else is the app registration or the group ids"
		}
		lines = append(lines, l)
	}
	line("managedDevices", fmt.Sprintf("%d read, %d without userId", res.Devices, res.DevicesWithoutUserID), res.DevicesErr, "managedDevices:")
	for _, gp := range res.Groups {
		kind := "excluded"
		if slices.ContainsFunc(included, func(id string) bool { return strings.EqualFold(id, gp.ID) }) {
			kind = "included"
		}
		line(kind+" group "+gp.ID, fmt.Sprintf("%d users, %d without UPN and mail", gp.Users, gp.Unnamed), gp.Err, "group "+gp.ID+":")
	}
	perm := checkLine{area: "mdm", item: "permissions", result: checkOK, detail: strings.Join([]string{mdm.PermDevices, mdm.PermMembers, mdm.PermUsers}, ", ")}
	var missing []string
	for _, f := range findings {
		if f.Permission != "" && !slices.Contains(missing, f.Permission) {
			missing = append(missing, f.Permission)
		}
	}
	if len(missing) > 0 {
		perm.result, perm.detail = checkWarn, "missing "+strings.Join(missing, ", ")
		for _, l := range lines {
			if l.result == checkFailed {
				perm.result = checkFailed
			}
		}
		perm.cause = "the app registration lacks " + strings.Join(missing, ", ")
		perm.fix = "grant them as Microsoft Graph application permissions and give admin consent"
	}
	return append(lines, perm)
}

// checkMDMFile reads the MDM export as a sync would.
func checkMDMFile(ctx context.Context, cfg *config.Config) checkLine {
	l := checkLine{area: "mdm", item: "file " + cfg.MDM.File, result: checkOK}
	src, err := cfg.MDMSource(slog.New(slog.DiscardHandler), metrics.NewSet())
	if err == nil {
		var snap *mdm.Snapshot
		if snap, err = src.Snapshot(ctx, slices.Concat(cfg.MDM.IncludedGroups, cfg.MDM.ExcludedGroups)); err == nil {
			l.detail = fmt.Sprintf("%d device records", len(snap.Records))
			return l
		}
	}
	l.result, l.cause = checkFailed, err.Error()
	l.fix = "point [mdm] file at a readable export in [mdm] file_format, or use source = \"graph\""
	return l
}

// checkMail connects to the mail relay, secures the connection and
// authenticates as the notifier would, then quits without sending.
func checkMail(ctx context.Context, cfg *config.Config) []checkLine {
	if !cfg.Notify.Enabled {
		return []checkLine{{area: "mail", item: "relay", result: checkSkipped, detail: "[notify] enabled = false: no mail to users or administrators"}}
	}
	nopts, err := cfg.NotifyOptions()
	if err != nil {
		return []checkLine{{area: "mail", item: "settings", result: checkFailed, cause: err.Error(), fix: "correct the [notify] setting it names"}}
	}
	return probeSMTP(ctx, nopts.SMTP, nil)
}

// probeSMTP checks one relay: connect (and greet), STARTTLS or implicit
// TLS, AUTH. roots, if non-nil, replaces the system roots (tests).
func probeSMTP(ctx context.Context, o notify.SMTPOptions, roots *x509.CertPool) []checkLine {
	port := o.Port
	if port == 0 {
		switch o.Security {
		case notify.SecurityTLS:
			port = 465
		case notify.SecurityNone:
			port = 25
		default:
			port = 587
		}
	}
	addr := net.JoinHostPort(o.Host, strconv.Itoa(port))
	tcfg := &tls.Config{ServerName: o.Host, MinVersion: tls.VersionTLS12, RootCAs: roots}
	var lines []checkLine
	fail := func(item string, err error, fix string) []checkLine {
		return append(lines, checkLine{area: "mail", item: item, result: checkFailed, cause: err.Error(), fix: fix})
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	d := &net.Dialer{}
	var conn net.Conn
	var err error
	if o.Security == notify.SecurityTLS {
		conn, err = (&tls.Dialer{NetDialer: d, Config: tcfg}).DialContext(ctx, "tcp", addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return fail("connect "+addr, err, tlsOrNetFix(err, "check [notify] smtp_host and smtp_port, and that this host may reach the relay (firewall, receive connector)"))
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c, err := smtp.NewClient(conn, o.Host)
	if err != nil {
		conn.Close()
		return fail("connect "+addr, err, tlsOrNetFix(err, "the relay sent no SMTP greeting: check that "+addr+" is an SMTP server and accepts this host"))
	}
	defer c.Close()
	if err := c.Hello(localName()); err != nil {
		return fail("connect "+addr, err, "the relay refused EHLO: check that it accepts this host (receive connector remote IP ranges)")
	}
	lines = append(lines, checkLine{area: "mail", item: "connect " + addr, result: checkOK, detail: "greeting and EHLO accepted"})
	if o.Security == notify.SecurityStartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return fail("STARTTLS", errors.New("the relay does not offer STARTTLS"),
				"enable TLS on the relay's receive connector, or use security = \"tls\" on its implicit-TLS port (465); security = \"none\" only for a relay on this host")
		}
		if err := c.StartTLS(tcfg); err != nil {
			return fail("STARTTLS", err, tlsOrNetFix(err, "the TLS handshake or the EHLO after it failed: check the relay's certificate and TLS settings"))
		}
	}
	if st, ok := c.TLSConnectionState(); ok {
		lines = append(lines, checkLine{area: "mail", item: string(o.Security), result: checkOK, detail: tls.VersionName(st.Version) + ", certificate verified for " + o.Host})
	}
	if o.Username == "" {
		lines = append(lines, checkLine{area: "mail", item: "AUTH", result: checkSkipped, detail: "no [notify] user: the relay must accept this host without AUTH (checked when the first mail is sent)"})
	} else {
		ok, mechs := c.Extension("AUTH")
		var a smtp.Auth
		fields := strings.Fields(strings.ToUpper(mechs))
		switch {
		case !ok:
			return fail("AUTH as "+o.Username, errors.New("the relay offers no AUTH"), "enable authentication on the relay's receive connector, or remove [notify] user if it accepts this host without")
		case slices.Contains(fields, "PLAIN"):
			a = smtp.PlainAuth("", o.Username, o.Password.Reveal(), o.Host)
		case slices.Contains(fields, "LOGIN"):
			a = &checkLoginAuth{user: o.Username, pass: o.Password.Reveal()}
		default:
			return fail("AUTH as "+o.Username, fmt.Errorf("the relay offers AUTH %s", mechs), "enable AUTH PLAIN or LOGIN (over TLS) on the relay")
		}
		if err := c.Auth(a); err != nil {
			return fail("AUTH as "+o.Username, err, "check [notify] user and its password (password_file or password_env); Exchange Online needs SMTP AUTH enabled for the mailbox")
		}
		lines = append(lines, checkLine{area: "mail", item: "AUTH as " + o.Username, result: checkOK, detail: "accepted (nothing sent)"})
	}
	_ = c.Quit()
	return lines
}

// checkLoginAuth is AUTH LOGIN (draft-murchison-sasl-login: the server
// asks "Username:" then "Password:", base64 both ways), which net/smtp
// lacks and Exchange receive connectors offer beside PLAIN. Only sent
// over TLS, as the notifier does.
type checkLoginAuth struct{ user, pass string }

func (a *checkLoginAuth) Start(server *smtp.ServerInfo) (string, []byte, error) {
	if !server.TLS {
		return "", nil, errors.New("refusing AUTH LOGIN without TLS")
	}
	return "LOGIN", nil, nil
}

func (a *checkLoginAuth) Next(challenge []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	switch strings.ToLower(strings.TrimSpace(string(challenge))) {
	case "username:", "user name", "username":
		return []byte(a.user), nil
	case "password:", "password":
		return []byte(a.pass), nil
	}
	return nil, fmt.Errorf("unexpected AUTH LOGIN challenge %q", challenge)
}

// tlsOrNetFix is the fix for a connection error: a certificate problem
// gets its own.
func tlsOrNetFix(err error, otherwise string) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var inv x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown):
		return "the relay's certificate is issued by an authority this host does not trust: add the issuing CA to the system's trust store"
	case errors.As(err, &host):
		return "the relay's certificate is not issued for this name: set [notify] smtp_host to a name in the certificate"
	case errors.As(err, &inv):
		return "the relay's certificate is expired or not valid for a server: renew it"
	}
	return otherwise
}

func localName() string {
	h, _ := os.Hostname()
	if h == "" || strings.ContainsAny(h, " \r\n") {
		return "localhost"
	}
	return h
}

// checkStateDir checks the state directory: there or creatable, writable,
// owner-only, the lock, and free space.
func checkStateDir(cfg *config.Config) []checkLine {
	dir := cfg.Sync.StateDir
	line := func(item string) checkLine { return checkLine{area: "state", item: item, result: checkOK} }
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		// The service creates it; the nearest existing parent must let it.
		parent := filepath.Dir(dir)
		for {
			if _, err := os.Stat(parent); err == nil || filepath.Dir(parent) == parent {
				break
			}
			parent = filepath.Dir(parent)
		}
		l := line("directory " + dir)
		if err := writable(parent); err != nil {
			l.result, l.cause = checkFailed, fmt.Sprintf("it does not exist and cannot be created in %s: %v", parent, err)
			l.fix = fmt.Sprintf("create %s owned by the service account, mode 0700 (systemd: StateDirectory=easconnector)", dir)
			return []checkLine{l}
		}
		l.detail = "does not exist yet; the service creates it (owner-only)"
		return []checkLine{l, freeSpace(cfg, parent)}
	}
	if err == nil && !fi.IsDir() {
		err = errors.New("not a directory")
	}
	l := line("directory " + dir)
	if err == nil {
		err = writable(dir)
	}
	if err == nil {
		err = config.CheckPrivateDir(dir)
	}
	if err != nil {
		l.result, l.cause = checkFailed, err.Error()
		l.fix = fmt.Sprintf("make %s a directory the service account owns and may write, readable by no one else (chmod 0700)", dir)
		return []checkLine{l}
	}
	l.detail = "writable"
	if fi.Mode().Perm()&0o077 != 0 {
		l.result, l.detail = checkWarn, fmt.Sprintf("writable, mode %04o", fi.Mode().Perm())
		l.cause = "other accounts can read the state (device ids, mailboxes, held plans, the audit log)"
		l.fix = "chmod 0700 " + dir
	}
	lock := line("lock")
	switch lk, err := lockStateDir(dir, "check"); {
	case errors.Is(err, errLocked):
		who := "another easconnector process"
		if b, err := os.ReadFile(filepath.Join(dir, lockFile)); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			who, _, _ = strings.Cut(strings.TrimSpace(string(b)), "\n")
		}
		lock.detail = "held by " + who + ": a local sync or plan must ask the service with --remote"
	case err != nil:
		lock.result, lock.cause = checkFailed, err.Error()
		lock.fix = "the lock file " + filepath.Join(dir, lockFile) + " must be creatable and lockable (a local file system, not a network share)"
	default:
		lock.detail = "free: no service uses this directory now"
		if err := lk.unlock(); err != nil {
			lock.result, lock.cause, lock.fix = checkFailed, err.Error(), "the lock must be releasable: use a local file system"
		}
	}
	return []checkLine{l, lock, freeSpace(cfg, dir)}
}

// certWarnDays is how long before its expiry the admin certificate is
// warned about.
const certWarnDays = 30

// checkAdminServer checks the admin server's settings: the tokens, the
// certificate and key, and that the listen address is free (or held by
// the running service, when serviceRuns).
func checkAdminServer(cfg *config.Config, serviceRuns bool) []checkLine {
	s := &cfg.Server
	if s.Listen == "" {
		return []checkLine{{area: "server", item: "listen", result: checkSkipped, detail: "[server] listen is empty: no admin API, metrics or status page"}}
	}
	var lines []checkLine
	opts, err := cfg.ServerOptions()
	if err != nil {
		return append(lines, checkLine{area: "server", item: "tokens", result: checkFailed, cause: err.Error(),
			fix: "correct the token setting it names (at least 16 characters, e.g. openssl rand -hex 32; the two tokens must differ)"})
	}
	tok := checkLine{area: "server", item: "tokens", result: checkOK, detail: "admin and read-only"}
	switch {
	case opts.Token.IsZero() && opts.ReadToken.IsZero():
		tok.result, tok.detail = checkWarn, "none"
		tok.cause = "with no token the API and the status page answer 403 to everyone"
		tok.fix = "set [server] token_file (admin) and read_token_file (read-only)"
	case opts.Token.IsZero():
		tok.detail = "read-only only: syncs and approvals cannot be asked for over the API"
	case opts.ReadToken.IsZero():
		tok.detail = "admin only (status and devices use it too)"
	}
	lines = append(lines, tok)
	if s.TLSCert != "" || s.TLSKey != "" {
		l := checkLine{area: "server", item: "certificate " + s.TLSCert, result: checkOK}
		pair, err := tls.LoadX509KeyPair(s.TLSCert, s.TLSKey)
		var leaf *x509.Certificate
		if err == nil {
			leaf, err = x509.ParseCertificate(pair.Certificate[0])
		}
		if err != nil {
			l.result, l.cause = checkFailed, err.Error()
			l.fix = "set [server] tls_cert and tls_key to a PEM certificate and its private key that belong together"
		} else {
			switch left := time.Until(leaf.NotAfter); {
			case left <= 0:
				l.result, l.detail = checkFailed, "expired "+leaf.NotAfter.UTC().Format(time.DateOnly)
				l.cause, l.fix = "the certificate has expired: clients refuse it", "renew it and restart the service"
			case left < certWarnDays*24*time.Hour:
				l.result, l.detail = checkWarn, "expires "+leaf.NotAfter.UTC().Format(time.DateOnly)
				l.cause, l.fix = fmt.Sprintf("the certificate expires in %d days", int(left.Hours()/24)), "renew it before then"
			default:
				l.detail = "valid until " + leaf.NotAfter.UTC().Format(time.DateOnly)
			}
		}
		lines = append(lines, l)
	}
	l := checkLine{area: "server", item: "listen " + s.Listen, result: checkOK, detail: "free"}
	ln, err := net.Listen("tcp", s.Listen)
	switch {
	case err == nil:
		ln.Close()
	case serviceRuns && addrInUse(err):
		l.detail = "in use (by the running service, which holds the state directory)"
	case addrInUse(err):
		l.result, l.cause = checkFailed, "another process listens on "+s.Listen
		l.fix = "stop it, or give [server] listen another port (ss -ltnp or netstat -abno shows who listens)"
	default:
		l.result, l.cause = checkFailed, err.Error()
		l.fix = "give [server] listen an address of this host (host:port; a port above 1023 unless the account may bind below)"
	}
	return append(lines, l)
}

// addrInUse reports whether a listen failed because the address is taken
// (EADDRINUSE; Windows' WSAEADDRINUSE says "Only one usage of each socket
// address").
func addrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "Only one usage of each socket address")
}

// writable creates and removes a file in dir.
func writable(dir string) error {
	f, err := os.CreateTemp(dir, ".easconnector-check-*")
	if err != nil {
		return err
	}
	name := f.Name()
	_, werr := f.Write([]byte("check\n"))
	cerr := f.Close()
	if rerr := os.Remove(name); rerr != nil {
		return rerr
	}
	return errors.Join(werr, cerr)
}

// freeSpace compares the free space of dir's file system with what the
// state and the audit log need.
func freeSpace(cfg *config.Config, dir string) checkLine {
	l := checkLine{area: "state", item: "free space", result: checkOK}
	free, err := diskFree(dir)
	if err != nil {
		l.result, l.detail = checkWarn, "unknown"
		l.cause, l.fix = err.Error(), "check the free space of "+dir+" by hand"
		return l
	}
	need := int64(warnFreeBytes)
	if n := cfg.Sync.AuditMaxBytes; n > 0 {
		keep := max(cfg.Sync.AuditKeep, 1)
		need += int64(n) * int64(keep+1)
	}
	l.detail = bytesText(free) + " free"
	switch {
	case free < minFreeBytes:
		l.result = checkFailed
		l.cause = fmt.Sprintf("only %s free: the state cannot be saved reliably (each save writes a new file, then renames it)", bytesText(free))
		l.fix = "free space on that file system, or move [sync] state_dir"
	case free < need:
		l.result = checkWarn
		l.cause = fmt.Sprintf("%s free, less than the %s the state and the audit log (audit_max_bytes × audit_keep) may take", bytesText(free), bytesText(need))
		l.fix = "free space, or lower [sync] audit_max_bytes / audit_keep"
	}
	return l
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

// securityWarnings names the settings that weaken the connector's
// security: they work, and check says what they expose.
func securityWarnings(cfg *config.Config) []checkLine {
	var lines []checkLine
	warn := func(item, detail, cause, fix string) {
		lines = append(lines, checkLine{area: "security", item: item, result: checkWarn, detail: detail, cause: cause, fix: fix})
	}
	ex := &cfg.Exchange
	if ex.InsecureSkipVerify {
		warn("exchange.insecure_skip_verify", "true",
			"the Exchange servers' certificates are not checked: anyone on the path can pose as a server and receive the account's credentials and every cmdlet",
			"set exchange.ca_file to the issuing CA's PEM and remove insecure_skip_verify")
	}
	if !ex.HTTPS {
		loop := true
		for _, s := range ex.Servers {
			if !hostaddr.IsLoopbackIP(s) && !strings.EqualFold(s, "localhost") {
				loop = false
			}
		}
		detail := "https = false (" + ex.Auth + ")"
		switch {
		case ex.AllowUnencrypted || !loop:
			warn("exchange transport", detail,
				"WinRM over plain HTTP: every cmdlet with its mailboxes, addresses and device ids travels in clear text"+authExposure(ex.Auth),
				"set [exchange] https = true (PSRP: the /PowerShell/ virtual directory on 443 with its certificate)")
		default:
			warn("exchange transport", detail+", loopback only",
				"plain HTTP to this host: other processes here can read the traffic"+authExposure(ex.Auth),
				"set [exchange] https = true unless this is a lab")
		}
	}
	if n := &cfg.Notify; n.Enabled && strings.EqualFold(n.Security, string(notify.SecurityNone)) &&
		!hostaddr.IsLoopbackIP(n.SMTPHost) && !strings.EqualFold(n.SMTPHost, "localhost") {
		warn("notify.security", "none",
			"mail to users and administrators crosses the network in clear text, and the relay is not authenticated",
			"set [notify] security = \"starttls\" (port 587) or \"tls\" (465)")
	}
	if s := &cfg.Server; s.Listen != "" && s.TLSCert == "" {
		host, _, err := net.SplitHostPort(s.Listen)
		if err == nil && !hostaddr.IsLoopbackIP(host) && !strings.EqualFold(host, "localhost") {
			warn("server.listen", s.Listen+" over plain HTTP",
				"the admin API and status page are reachable from the network without TLS: the API tokens and device data travel in clear text",
				"set [server] tls_cert and tls_key, or listen on 127.0.0.1 behind a TLS reverse proxy")
		}
	}
	for _, u := range []struct{ field, url string }{{"mdm.authority_url", cfg.MDM.AuthorityURL}, {"mdm.graph_url", cfg.MDM.GraphURL}} {
		if cfg.MDM.Source == "graph" && strings.HasPrefix(strings.ToLower(u.url), "http://") && !loopbackURL(u.url) {
			warn(u.field, u.url, "Microsoft Graph over plain HTTP: the client secret or token and the device data travel in clear text",
				"use the https:// endpoint (the default)")
		}
	}
	return lines
}

func authExposure(auth string) string {
	switch strings.ToLower(auth) {
	case "basic":
		return ", and with Basic auth so does the account's password"
	case "ntlm":
		return ", and the NTLM handshake can be captured or relayed"
	}
	return ""
}

func loopbackURL(u string) bool {
	rest := strings.TrimPrefix(strings.ToLower(u), "http://")
	host, _, _ := strings.Cut(rest, "/")
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return hostaddr.IsLoopbackIP(host) || host == "localhost"
}

// printServiceChecks prints the service table, then the cause and the fix
// of every failed or warned line, and returns the number of failures.
func printServiceChecks(w io.Writer, lines []checkLine) int {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AREA\tCHECK\tRESULT\tDETAIL")
	failed, warned := 0, 0
	for _, l := range lines {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.area, l.item, l.result, orDash(l.detail))
		switch l.result {
		case checkFailed:
			failed++
		case checkWarn:
			warned++
		}
	}
	tw.Flush()
	for _, l := range lines {
		if l.result != checkFailed && l.result != checkWarn {
			continue
		}
		fmt.Fprintf(w, "\n%s %s %s:\n  cause: %s\n", l.result, l.area, l.item, l.cause)
		if l.fix != "" {
			fmt.Fprintf(w, "  fix:   %s\n", l.fix)
		}
	}
	switch {
	case failed > 0:
		fmt.Fprintf(w, "\n%s, %s: the service cannot work as configured until the failures are fixed.\n", plural(failed, "check failed", "checks failed"), plural(warned, "warning", "warnings"))
	case warned > 0:
		fmt.Fprintf(w, "\nNo failures, %s.\n", plural(warned, "warning", "warnings"))
	default:
		fmt.Fprintln(w, "\nEverything the service needs works.")
	}
	return failed
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// Package kdc starts a real MIT Kerberos KDC on loopback for tests: a
// throw-away realm in a temporary directory, the connector's user
// principal, HTTP/<host> service principals exported to a keytab for the
// simulated Client Access servers, and a krb5.conf that points clients at
// it.
//
// It drives Debian's krb5-kdc and krb5-admin-server binaries (kdb5_util,
// kadmin.local, krb5kdc) and needs nothing else; where they are missing,
// StartT skips the test with a message naming the packages. With
// Options.ClockOffset the KDC runs under libfaketime (Debian's faketime
// package) so that its clock differs from the client's, which is how clock
// skew is tested for real.
//
// A KDC listens on 127.0.0.1 only, on a free UDP and TCP port. Start is
// bounded by Options.StartTimeout; Close (or the test's cleanup with
// StartT) stops the process and removes the realm. A KDC's methods are safe
// for concurrent use.
package kdc

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Defaults of Options.
const (
	DefaultRealm        = "EASCONNECTOR.TEST"
	DefaultUser         = "easconnector"
	DefaultStartTimeout = 15 * time.Second
	DefaultMaxLife      = 10 * time.Hour

	// Packages are the Debian packages that provide the binaries.
	Packages = "krb5-kdc krb5-admin-server"
	// FaketimePackage provides libfaketime for Options.ClockOffset.
	FaketimePackage = "faketime"
)

// binaries are the MIT programs Start runs.
var binaries = []string{"kdb5_util", "kadmin.local", "krb5kdc"}

// libfaketime is where Debian's libfaketime installs its preload library.
var libfaketime = []string{
	"/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
	"/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
	"/usr/lib/faketime/libfaketime.so.1",
}

// ErrUnavailable is wrapped by Start's error when the MIT binaries (or,
// for ClockOffset, libfaketime) are not installed.
var ErrUnavailable = errors.New("kdc: not installed")

// Options configure Start. Zero values take the defaults.
type Options struct {
	// Realm is the Kerberos realm (default EASCONNECTOR.TEST).
	Realm string
	// User is the connector's principal name without realm (default
	// easconnector); Password its password (default: random).
	User, Password string
	// Services are service principal names without realm, such as
	// "HTTP/cas01.easconnector.test", created with random keys and
	// exported to KDC.ServiceKeytab.
	Services []string
	// ClientKeytab exports the user's keys to KDC.ClientKeytab without
	// changing them, so that password and keytab logins both work.
	ClientKeytab bool
	// ClockOffset runs the KDC with its clock this far from the host's
	// (libfaketime); zero runs it on the host's clock.
	ClockOffset time.Duration
	// MaxLife is the realm's maximum ticket life (default 10h).
	MaxLife time.Duration
	// StartTimeout bounds Start (default 15s).
	StartTimeout time.Duration
}

// KDC is a running MIT Kerberos KDC. Its fields are read-only.
type KDC struct {
	Realm    string
	User     string // without realm
	Password string
	// Addr is the KDC's UDP and TCP address, 127.0.0.1:port.
	Addr string
	// Dir holds the database, the configuration, the keytabs and kdc.log.
	Dir string
	// Krb5Conf is the client configuration (the file exchange.krb5_conf
	// names): this realm, this KDC, no DNS and no reverse lookups.
	Krb5Conf string
	// ServiceKeytab holds the keys of every service principal.
	ServiceKeytab string
	// ClientKeytab holds the user's keys when Options.ClientKeytab is set.
	ClientKeytab string

	env  []string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	mu   sync.Mutex    // serializes kadmin.local (one database lock)
	once sync.Once
}

// Available reports whether the MIT binaries are installed, with an error
// naming the Debian packages when they are not.
func Available() error {
	for _, b := range binaries {
		if _, err := lookPath(b); err != nil {
			return fmt.Errorf("%w: %s not found (Debian packages %s)", ErrUnavailable, b, Packages)
		}
	}
	return nil
}

// FaketimeAvailable reports whether libfaketime is installed.
func FaketimeAvailable() error {
	if faketimeLib() == "" {
		return fmt.Errorf("%w: libfaketime not found (Debian package %s)", ErrUnavailable, FaketimePackage)
	}
	return nil
}

func faketimeLib() string {
	for _, p := range libfaketime {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// lookPath finds an MIT binary on PATH or in /usr/sbin, where Debian puts
// the server programs (often off a non-root PATH).
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	p := filepath.Join("/usr/sbin", name)
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

// StartT starts a KDC for the test and stops it in tb's cleanup. It skips
// the test when the binaries are missing and fails it on any other error.
func StartT(tb testing.TB, opts Options) *KDC {
	tb.Helper()
	if err := Available(); err != nil {
		tb.Skipf("real-KDC test skipped: %v", err)
	}
	if opts.ClockOffset != 0 {
		if err := FaketimeAvailable(); err != nil {
			tb.Skipf("clock-offset KDC test skipped: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), orDefault(opts.StartTimeout, DefaultStartTimeout))
	defer cancel()
	k, err := Start(ctx, opts)
	if err != nil {
		tb.Fatalf("kdc.Start() error = %v", err)
	}
	tb.Cleanup(func() {
		if err := k.Close(); err != nil {
			tb.Errorf("kdc Close() error = %v", err)
		}
	})
	return k
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Start creates the realm, its principals and keytabs, and starts
// krb5kdc in the foreground on a free loopback port. ctx bounds it (and
// Options.StartTimeout); the KDC itself runs until Close.
func Start(ctx context.Context, opts Options) (*KDC, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	var preload string
	if opts.ClockOffset != 0 {
		if preload = faketimeLib(); preload == "" {
			return nil, FaketimeAvailable()
		}
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(opts.StartTimeout, DefaultStartTimeout))
	defer cancel()
	k := &KDC{
		Realm:    strings.ToUpper(orDefault(opts.Realm, DefaultRealm)),
		User:     orDefault(opts.User, DefaultUser),
		Password: opts.Password,
		done:     make(chan struct{}),
	}
	if k.Password == "" {
		k.Password = "Pw-" + randomHex(12)
	}
	dir, err := os.MkdirTemp("", "easconnector-kdc-")
	if err != nil {
		return nil, fmt.Errorf("kdc: %w", err)
	}
	k.Dir = dir
	k.Krb5Conf = filepath.Join(dir, "krb5.conf")
	k.ServiceKeytab = filepath.Join(dir, "service.keytab")
	k.env = append(os.Environ(),
		"KRB5_CONFIG="+k.Krb5Conf,
		"KRB5_KDC_PROFILE="+filepath.Join(dir, "kdc.conf"),
		"KRB5CCNAME=FILE:"+filepath.Join(dir, "ccache"), // never the caller's cache
	)
	ok := false
	defer func() {
		if !ok {
			k.stop()
			_ = os.RemoveAll(dir)
		}
	}()

	// A port free for both UDP and TCP; krb5kdc binds it moments later,
	// so a lost race is retried with another one.
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("kdc: free port: %w", err)
		}
		k.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := k.writeConfig(orDefault(opts.MaxLife, DefaultMaxLife)); err != nil {
			return nil, err
		}
		if attempt == 0 {
			if err := k.createRealm(ctx, opts); err != nil {
				return nil, err
			}
		}
		err = k.startKDC(ctx, preload, opts.ClockOffset)
		if err == nil {
			break
		}
		if attempt == 2 || !errors.Is(err, errAddrInUse) {
			return nil, err
		}
	}
	ok = true
	return k, nil
}

// HTTPServices returns the service principal names HTTP/<host> of hosts,
// lower-cased (MIT principal names are case-sensitive; Active Directory's
// SPNs are not, and clients ask for the lower-case form), for
// Options.Services: one per simulated Client Access server.
func HTTPServices(hosts ...string) []string {
	out := make([]string, len(hosts))
	for i, h := range hosts {
		out[i] = "HTTP/" + strings.ToLower(strings.TrimSuffix(h, "."))
	}
	return out
}

// Principal returns name@Realm.
func (k *KDC) Principal(name string) string { return name + "@" + k.Realm }

// Krb5ConfText returns the client krb5.conf with kdcAddr as the realm's
// KDC (to point a client at an address where nothing answers, say).
func (k *KDC) Krb5ConfText(kdcAddr string) string {
	lower := strings.ToLower(k.Realm)
	return fmt.Sprintf(`[libdefaults]
 default_realm = %[1]s
 dns_lookup_kdc = false
 dns_lookup_realm = false
 rdns = false
 dns_canonicalize_hostname = false
 default_tkt_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96
 default_tgs_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96
 permitted_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96

[realms]
 %[1]s = {
  kdc = %[2]s
 }

[domain_realm]
 .%[3]s = %[1]s
 %[3]s = %[1]s
 localhost = %[1]s
`, k.Realm, kdcAddr, lower)
}

func (k *KDC) writeConfig(maxLife time.Duration) error {
	kdcConf := fmt.Sprintf(`[kdcdefaults]
 kdc_listen = %[2]s
 kdc_tcp_listen = %[2]s

[realms]
 %[1]s = {
  database_name = %[3]s
  key_stash_file = %[4]s
  acl_file = %[5]s
  max_life = %[6]ds
  max_renewable_life = %[6]ds
  supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
 }

[logging]
 kdc = FILE:%[7]s
`, k.Realm, k.Addr, filepath.Join(k.Dir, "principal"), filepath.Join(k.Dir, "stash"),
		filepath.Join(k.Dir, "kadm5.acl"), int(maxLife.Seconds()), filepath.Join(k.Dir, "kdc.log"))
	for name, text := range map[string]string{
		"kdc.conf":  kdcConf,
		"krb5.conf": k.Krb5ConfText(k.Addr),
		"kadm5.acl": "",
	} {
		if err := os.WriteFile(filepath.Join(k.Dir, name), []byte(text), 0o600); err != nil {
			return fmt.Errorf("kdc: write %s: %w", name, err)
		}
	}
	return nil
}

func (k *KDC) createRealm(ctx context.Context, opts Options) error {
	if _, err := k.run(ctx, "kdb5_util", "-r", k.Realm, "create", "-s", "-P", "Master-"+randomHex(12)); err != nil {
		return err
	}
	if err := k.AddUser(ctx, k.User, k.Password); err != nil {
		return err
	}
	for _, spn := range opts.Services {
		if err := k.AddService(ctx, spn); err != nil {
			return err
		}
	}
	if opts.ClientKeytab {
		k.ClientKeytab = filepath.Join(k.Dir, "client.keytab")
		// -norandkey keeps the password's keys, so both logins work.
		if _, err := k.Admin(ctx, "ktadd -k "+k.ClientKeytab+" -norandkey "+k.User); err != nil {
			return err
		}
	}
	return nil
}

// AddUser creates a user principal that requires pre-authentication, as
// Active Directory does, with the given password; extra are further
// addprinc options (such as "-maxlife", "5 seconds" or "-pwexpire", "now").
func (k *KDC) AddUser(ctx context.Context, name, password string, extra ...string) error {
	q := "addprinc -pw " + quote(password) + " +requires_preauth"
	for _, e := range extra {
		q += " " + quote(e)
	}
	_, err := k.Admin(ctx, q+" "+quote(name))
	return err
}

// AddService creates the service principal spn (without realm) with a
// random key and appends its keys to ServiceKeytab.
func (k *KDC) AddService(ctx context.Context, spn string) error {
	if _, err := k.Admin(ctx, "addprinc -randkey "+quote(spn)); err != nil {
		return err
	}
	_, err := k.Admin(ctx, "ktadd -k "+quote(k.ServiceKeytab)+" "+quote(spn))
	return err
}

// SetMaxLife limits the tickets issued for principal (a service principal
// name such as "HTTP/localhost", or a user) to d, whole seconds. Shorten a
// service's tickets rather than the realm's max_life: a short-lived TGT
// keeps gokrb5's renewal goroutine busy, and its Client.Destroy races
// with a renewal in progress.
func (k *KDC) SetMaxLife(ctx context.Context, principal string, d time.Duration) error {
	_, err := k.Admin(ctx, fmt.Sprintf("modprinc -maxlife %q %s", strconv.Itoa(int(d.Seconds()))+" seconds", quote(principal)))
	return err
}

// Admin runs one kadmin.local query against the realm's database and
// returns its output. kadmin.local exits 0 even when a query fails, so
// any diagnostic on stderr other than its informational lines is an error.
func (k *KDC) Admin(ctx context.Context, query string) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	out, err := k.run(ctx, "kadmin.local", "-r", k.Realm, "-q", query)
	if err != nil {
		return out, err
	}
	return out, nil
}

// kadminInfo are stderr lines of kadmin.local that do not mean failure.
var kadminInfo = []string{"Authenticating as principal", "No policy specified", "WARNING: no policy specified"}

// run executes an MIT program in the realm's environment.
func (k *KDC) run(ctx context.Context, name string, args ...string) (string, error) {
	path, err := lookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w: %s (Debian packages %s)", ErrUnavailable, name, Packages)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = k.env
	cmd.Dir = k.Dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	what := name + " " + strings.Join(redactArgs(args), " ")
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kdc: %s: %w: %s", what, err, strings.TrimSpace(stderr.String()))
	}
	if name == "kadmin.local" {
		for _, line := range strings.Split(stderr.String(), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || hasAnyPrefix(line, kadminInfo) {
				continue
			}
			return stdout.String(), fmt.Errorf("kdc: %s: %s", what, line)
		}
	}
	return stdout.String(), nil
}

// redactArgs hides passwords from error messages.
func redactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		switch {
		case i > 0 && args[i-1] == "-P":
			out[i] = "<redacted>"
		case strings.Contains(a, "-pw "):
			out[i] = a[:strings.Index(a, "-pw ")+4] + "<redacted>" + passwordTail(a[strings.Index(a, "-pw ")+4:])
		default:
			out[i] = a
		}
	}
	return out
}

// passwordTail drops the quoted password at the start of s.
func passwordTail(s string) string {
	if strings.HasPrefix(s, `"`) {
		if j := strings.Index(s[1:], `"`); j >= 0 {
			return s[j+2:]
		}
		return ""
	}
	if j := strings.IndexByte(s, ' '); j >= 0 {
		return s[j:]
	}
	return ""
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// quote makes s one kadmin.local argument (its parser splits on blanks
// and honours double quotes).
func quote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\"") {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, ``) + `"`
}

var errAddrInUse = errors.New("address in use")

// startKDC runs krb5kdc -n and waits until it answers on TCP.
func (k *KDC) startKDC(ctx context.Context, preload string, offset time.Duration) error {
	path, err := lookPath("krb5kdc")
	if err != nil {
		return fmt.Errorf("%w: krb5kdc (Debian package krb5-kdc)", ErrUnavailable)
	}
	logPath := filepath.Join(k.Dir, "kdc.log")
	_ = os.Remove(logPath)
	cmd := exec.Command(path, "-n", "-r", k.Realm)
	cmd.Env = k.env
	if preload != "" {
		cmd.Env = append(cmd.Env[:len(cmd.Env):len(cmd.Env)],
			"LD_PRELOAD="+preload,
			"FAKETIME="+fmt.Sprintf("%+d", int64(offset.Seconds())),
			"DONT_FAKE_MONOTONIC=1",
		)
	}
	cmd.Dir = k.Dir
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("kdc: start krb5kdc: %w", err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(done)
	}()
	k.cmd, k.done = cmd, done
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", k.Addr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return nil
		}
		select {
		case <-done:
			log, _ := os.ReadFile(logPath)
			msg := strings.TrimSpace(stderr.String() + " " + tail(string(log), 800))
			k.cmd = nil
			if strings.Contains(msg, "Address already in use") {
				return fmt.Errorf("kdc: krb5kdc on %s: %w: %s", k.Addr, errAddrInUse, msg)
			}
			return fmt.Errorf("kdc: krb5kdc exited (%v): %s", waitErr, msg)
		case <-ctx.Done():
			k.stop()
			return fmt.Errorf("kdc: krb5kdc did not answer on %s: %w", k.Addr, ctx.Err())
		case <-tick.C:
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// stop ends the KDC process (SIGTERM, then SIGKILL after 3 s).
func (k *KDC) stop() {
	if k.cmd == nil || k.cmd.Process == nil {
		return
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.done:
	case <-time.After(3 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.done
	}
	k.cmd = nil
}

// Close stops the KDC and removes its directory. It may be called more
// than once.
func (k *KDC) Close() error {
	var err error
	k.once.Do(func() {
		k.stop()
		err = os.RemoveAll(k.Dir)
	})
	return err
}

// Log returns the KDC's log so far (each request it answered, with the
// reason of each refusal).
func (k *KDC) Log() string {
	b, _ := os.ReadFile(filepath.Join(k.Dir, "kdc.log"))
	return string(b)
}

// freePort returns a loopback port that is free for both TCP and UDP.
func freePort() (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		_ = ln.Close()
		if err == nil {
			_ = pc.Close()
			return port, nil
		}
	}
	return 0, errors.New("no port free for both TCP and UDP")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Command exsim runs the simulated Exchange organization of
// loadtest/exsim standalone: one or more Client Access listeners speaking
// WS-Management on 127.0.0.1, 127.0.0.2, … (one port for all) and a JSON
// control API on loopback. It stops cleanly on SIGINT or SIGTERM.
//
//	exsim -listeners 2 -devices 50000 -profile lab
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
	"github.com/easconnector/easconnector/loadtest/population"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(exitCode(run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr))
}

// exitCode maps run's error to the exit status: 0 when it ran (or printed
// the help that -h asked for), 2 otherwise.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	}
	fmt.Fprintln(stderr, "exsim:", err)
	return 2
}

// config is the command line.
type config struct {
	listeners      int
	port           int
	control        string
	devices        int
	seed           uint64
	domain         string
	profile        string
	user           string
	password       string
	tls            bool
	caOut          string
	maxConcurrency int
	maxCmdlets     int
	cmdletsPeriod  time.Duration
	maxShells      int
	quiet          bool
	verbose        bool
	keytab         string
	spn            string
	roles          string
}

func parseFlags(args []string, stdout, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("exsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(stdout) // asked-for help is the output
			break
		}
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: exsim [flags]\n\nRuns a simulated Exchange organization (WS-Management/PSRP listeners and a control API) until SIGINT or SIGTERM.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.IntVar(&c.listeners, "listeners", 1, "number of Client Access listeners (127.0.0.1 … 127.0.0.N, same port)")
	fs.IntVar(&c.port, "port", 5985, "WS-Management port of every listener (0 picks a free one)")
	fs.StringVar(&c.control, "control", "127.0.0.1:8990", "control API address (loopback only)")
	fs.IntVar(&c.devices, "devices", 5000, "EAS devices in the generated population (0 = empty organization)")
	fs.Uint64Var(&c.seed, "seed", 1, "population and fault seed")
	fs.StringVar(&c.domain, "domain", "contoso.com", "organization domain")
	fs.StringVar(&c.profile, "profile", exsim.ProfileLab, fmt.Sprintf("latency profile %v", exsim.ProfileNames()))
	fs.StringVar(&c.user, "user", exsim.DefaultUser, "Basic auth user of the service account")
	fs.StringVar(&c.password, "password", exsim.DefaultPassword, "Basic auth password (or EXSIM_PASSWORD)")
	fs.BoolVar(&c.tls, "tls", false, "serve HTTPS with a generated certificate for every listener IP")
	fs.StringVar(&c.caOut, "ca-out", "", "with -tls, write the certificate (PEM) clients must trust to this file")
	fs.IntVar(&c.maxConcurrency, "max-concurrency", exsim.DefaultPowerShellMaxConcurrency, "PowerShellMaxConcurrency: remote PowerShell sessions per user (-1 = unlimited)")
	fs.IntVar(&c.maxCmdlets, "max-cmdlets", 0, "PowerShellMaxCmdlets per -cmdlets-period (0 = unlimited, Exchange's default)")
	fs.DurationVar(&c.cmdletsPeriod, "cmdlets-period", exsim.DefaultCmdletsTimePeriod, "PowerShellMaxCmdletsTimePeriod")
	fs.IntVar(&c.maxShells, "max-shells-per-user", 30, "WinRM MaxShellsPerUser")
	fs.BoolVar(&c.quiet, "quiet", false, "suppress the banner and CLIXML noise a real powershell.exe prints")
	fs.BoolVar(&c.verbose, "v", false, "log WS-Management events")
	fs.StringVar(&c.keytab, "keytab", "", "service keytab: also accept Negotiate/Kerberos (HTTP/<host> principals)")
	fs.StringVar(&c.spn, "spn", "", "with -keytab, the SPN tickets must name (default HTTP/<host the client addressed>)")
	fs.StringVar(&c.roles, "roles", "", "comma-separated cmdlets the -user's roles grant in Exchange sessions (default: all)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if v := os.Getenv("EXSIM_PASSWORD"); v != "" && !flagSet(fs, "password") {
		c.password = v
	}
	switch {
	case c.devices < 0:
		return c, fmt.Errorf("-devices: must not be negative, got %d", c.devices)
	case c.user == "" || c.password == "":
		return c, errors.New("-user and -password: must not be empty")
	case c.caOut != "" && !c.tls:
		return c, errors.New("-ca-out: needs -tls")
	case c.maxConcurrency == 0:
		return c, errors.New("-max-concurrency: must be positive or -1 (unlimited), got 0")
	case c.spn != "" && c.keytab == "":
		return c, errors.New("-spn: needs -keytab")
	}
	host, _, err := net.SplitHostPort(c.control)
	if err != nil {
		return c, fmt.Errorf("-control %q: %w", c.control, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return c, fmt.Errorf("-control %q: the control API has no authentication and must listen on loopback", c.control)
	}
	return c, nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// run starts the simulator and its control API, reports what it listens
// on, and stops both when ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stdout, stderr)
	if err != nil {
		return err
	}
	var logger *slog.Logger
	if c.verbose {
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	opts := exsim.Options{
		Listeners: c.listeners, Port: c.port, Profile: c.profile, Users: map[string]string{c.user: c.password}, TLS: c.tls,
		PowerShellMaxConcurrency: c.maxConcurrency, PowerShellMaxCmdlets: c.maxCmdlets, PowerShellMaxCmdletsTimePeriod: c.cmdletsPeriod,
		MaxShellsPerUser: c.maxShells, Seed: c.seed, Quiet: c.quiet, Logger: logger,
	}
	if c.keytab != "" {
		k, err := wsman.NewKerberos(c.keytab, c.spn)
		if err != nil {
			return fmt.Errorf("-keytab: %w", err)
		}
		opts.Kerberos = k
	}
	if c.roles != "" {
		var cmdlets []string
		for _, r := range strings.Split(c.roles, ",") {
			if r = strings.TrimSpace(r); r != "" {
				cmdlets = append(cmdlets, r)
			}
		}
		opts.Roles = map[string][]string{c.user: cmdlets}
	}
	if c.devices > 0 {
		opts.Population = population.Generate(population.Options{Seed: c.seed, Devices: c.devices, Domain: c.domain})
	}
	sim, err := exsim.Start(opts)
	if err != nil {
		return err
	}
	defer sim.Close()
	if c.caOut != "" {
		if err := os.WriteFile(c.caOut, sim.CAPEM(), 0o644); err != nil {
			return fmt.Errorf("-ca-out: %w", err)
		}
	}

	ln, err := net.Listen("tcp", c.control)
	if err != nil {
		return fmt.Errorf("control API: %w", err)
	}
	srv := &http.Server{Handler: sim.ControlHandler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	fmt.Fprintf(stdout, "exsim: %d mailboxes, %d devices, profile %s, PowerShellMaxConcurrency %d\n",
		mailboxes(sim), sim.Org().DeviceCount(), c.profile, sim.Quotas().PowerShellMaxConcurrency)
	for i, s := range sim.Org().Servers() {
		fmt.Fprintf(stdout, "exsim: %s WS-Management %s (remoting connectionUri %s)\n", s.Name, sim.Endpoint(i), sim.ConnectionURI(i))
		fmt.Fprintf(stdout, "exsim: %s PSRP %s (ResourceURI %s)\n", s.Name, sim.PowerShellURL(i), exsim.ResourceURI)
	}
	fmt.Fprintf(stdout, "exsim: credentials %s / %s (Basic)\n", c.user, c.password)
	if c.tls {
		where := "GET /v1/ca.pem"
		if c.caOut != "" {
			where = c.caOut + " and " + where
		}
		fmt.Fprintf(stdout, "exsim: TLS certificate to trust: %s\n", where)
	}
	fmt.Fprintf(stdout, "exsim: control API http://%s/v1/status\n", ln.Addr())

	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("control API: %w", err)
	}
	fmt.Fprintln(stdout, "exsim: stopping")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
	}
	sim.Close()
	return nil
}

func mailboxes(s *exsim.Sim) int {
	_, n := s.Org().Mailboxes(0, 1)
	return n
}

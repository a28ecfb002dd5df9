// Command graphsim runs the simulated Microsoft Graph and token endpoint of
// loadtest/graphsim standalone, so that the connector's Graph path can be
// tried outside the demo: an OAuth2 client-credentials token endpoint and
// /v1.0/deviceManagement/managedDevices and group members on one loopback
// address, and a JSON control API (faults, record changes, churn) on
// another. The fleet is generated from -seed and -devices exactly as
// exsim's is, so the two simulators describe the same organization when
// started with the same values. It stops cleanly on SIGINT or SIGTERM.
//
//	graphsim -devices 50000 -seed 1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/easconnector/easconnector/loadtest/graphsim"
	"github.com/easconnector/easconnector/loadtest/population"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "graphsim:", err)
		os.Exit(2)
	}
}

// config is the command line.
type config struct {
	listen       string
	control      string
	devices      int
	seed         uint64
	domain       string
	now          time.Time
	tenant       string
	clientID     string
	clientSecret string
	pageSize     int
	outage       bool
	errorRate    float64
	errorStatus  int
	latency      time.Duration
}

const usage = `Usage: graphsim [flags]

Serves Microsoft Graph's managedDevices and group members and the OAuth2
token endpoint for a generated fleet (the same one exsim generates from the
same -seed, -devices and -domain), on loopback. Point the connector's [mdm]
authority_url and graph_url at the printed URL.

Flags:
`

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("graphsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var now string
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8991", "address of the token endpoint and the Graph API (loopback only; port 0 picks one)")
	fs.StringVar(&c.control, "control", "127.0.0.1:8992", "control API address (loopback only)")
	fs.IntVar(&c.devices, "devices", 5000, "EAS devices in the generated fleet, as exsim's -devices (0 = no records)")
	fs.Uint64Var(&c.seed, "seed", 1, "fleet seed, as exsim's -seed")
	fs.StringVar(&c.domain, "domain", "contoso.com", "organization domain, as exsim's -domain")
	fs.StringVar(&now, "now", "", "the fleet's reference time (RFC 3339; default: now, to the minute)")
	fs.StringVar(&c.tenant, "tenant", graphsim.DefaultTenantID, "the tenant id the token endpoint serves")
	fs.StringVar(&c.clientID, "client-id", graphsim.DefaultClientID, "the registered application's client id")
	fs.StringVar(&c.clientSecret, "client-secret", "", "the accepted client secret (or GRAPHSIM_CLIENT_SECRET; required)")
	fs.IntVar(&c.pageSize, "page-size", graphsim.DefaultPageSize, "managedDevices page size without $top (at most 1000)")
	fs.BoolVar(&c.outage, "outage", false, "start in an outage: every connection is reset (PUT /v1/faults ends it)")
	fs.Float64Var(&c.errorRate, "error-rate", 0, "share of Graph API requests answered with -error-status")
	fs.IntVar(&c.errorStatus, "error-status", 429, "status of -error-rate faults (429 or 500–504)")
	fs.DurationVar(&c.latency, "latency", 0, "delay before every answer")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.clientSecret == "" {
		c.clientSecret = os.Getenv("GRAPHSIM_CLIENT_SECRET")
	}
	switch {
	case c.clientSecret == "":
		return c, errors.New("-client-secret (or GRAPHSIM_CLIENT_SECRET): must not be empty")
	case c.devices < 0 || c.devices > 1_000_000:
		return c, fmt.Errorf("-devices: must be between 0 and 1000000, got %d", c.devices)
	case c.pageSize < 1 || c.pageSize > 1000:
		return c, fmt.Errorf("-page-size: must be between 1 and 1000, got %d", c.pageSize)
	case c.latency < 0:
		return c, fmt.Errorf("-latency: must not be negative, got %s", c.latency)
	}
	if now != "" {
		t, err := time.Parse(time.RFC3339, now)
		if err != nil {
			return c, fmt.Errorf("-now: %w", err)
		}
		c.now = t.UTC()
	}
	for _, a := range []struct{ flag, addr string }{{"-listen", c.listen}, {"-control", c.control}} {
		if err := loopback(a.addr); err != nil {
			return c, fmt.Errorf("%s %q: %w", a.flag, a.addr, err)
		}
	}
	return c, nil
}

// loopback checks that addr is host:port on a loopback address: the
// simulator has a well-known secret and the control API no authentication.
func loopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return errors.New("must listen on loopback")
	}
	return nil
}

// run serves until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	var pop *population.Population
	if c.devices > 0 {
		pop = population.Generate(population.Options{Seed: c.seed, Devices: c.devices, Domain: c.domain, Now: c.now})
	} else {
		pop = &population.Population{}
	}
	g := graphsim.New(pop, graphsim.Options{TenantID: c.tenant, ClientID: c.clientID, ClientSecret: c.clientSecret, PageSize: c.pageSize})
	defer g.Close()
	if err := g.SetFaults(graphsim.ControlFaults{Outage: c.outage, ErrorRate: c.errorRate, ErrorStat: c.errorStatus,
		LatencyMS: int(c.latency / time.Millisecond)}); err != nil {
		return err
	}

	api, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	ctl, err := net.Listen("tcp", c.control)
	if err != nil {
		api.Close()
		return fmt.Errorf("-control: %w", err)
	}
	servers := []*http.Server{
		{Handler: g, ReadHeaderTimeout: 10 * time.Second},
		{Handler: g.ControlHandler(), ReadHeaderTimeout: 10 * time.Second},
	}
	served := make(chan error, 2)
	go func() { served <- servers[0].Serve(api) }()
	go func() { served <- servers[1].Serve(ctl) }()

	base := "http://" + api.Addr().String()
	fmt.Fprintf(stdout, "graphsim: %d managedDevices records (seed %d, %d EAS devices, domain %s)\n", len(pop.MDM), c.seed, c.devices, c.domain)
	fmt.Fprintf(stdout, "graphsim: token endpoint %s/%s/oauth2/v2.0/token (client id %s, client secret as given)\n", base, c.tenant, c.clientID)
	fmt.Fprintf(stdout, "graphsim: Graph %s/v1.0/deviceManagement/managedDevices\n", base)
	if c.devices > 0 {
		fmt.Fprintf(stdout, "graphsim: groups: included %s (%s), excluded %s (%s)\n", pop.Included.ID, pop.Included.Name, pop.Excluded.ID, pop.Excluded.Name)
	}
	fmt.Fprintf(stdout, "graphsim: connector [mdm] authority_url = %q, graph_url = %q, tenant_id = %q\n", base, base, c.tenant)
	fmt.Fprintf(stdout, "graphsim: control API http://%s/v1/status\n", ctl.Addr())

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	fmt.Fprintln(stdout, "graphsim: stopping")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		if s.Shutdown(sctx) != nil {
			_ = s.Close()
		}
	}
	if serveErr != nil {
		return fmt.Errorf("serve: %w", serveErr)
	}
	return nil
}

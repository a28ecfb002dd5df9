package bed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/graphsim"
	"github.com/easconnector/easconnector/loadtest/population"
)

// RandomSecret returns n random bytes in hex.
func RandomSecret(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// FleetOptions describe the generated fleet both simulators serve; with
// the same values exsim and graphsim generate the same organization.
type FleetOptions struct {
	Devices int
	Seed    uint64
	Domain  string    // "" → contoso.com
	Now     time.Time // graphsim's reference time (exsim takes its own start, to the minute)
}

// Population generates the fleet as the simulators do, for a driver that
// mirrors their changes.
func (o FleetOptions) Population() *population.Population {
	return population.Generate(population.Options{Seed: o.Seed, Devices: o.Devices, Domain: o.Domain, Now: o.Now})
}

// ExsimOptions start an exsim process.
type ExsimOptions struct {
	Fleet          FleetOptions
	Listeners      int    // 0 → 1
	Profile        string // latency profile; "" → zero
	MaxConcurrency int    // PowerShellMaxConcurrency; 0 → exsim's default
	Dir            string // where its log goes
}

// Exsim is an exsim process.
type Exsim struct {
	*Proc
	controlClient
	Hosts    []string // one per listener
	Port     int
	User     string
	Password string
}

var (
	reExsimListener = regexp.MustCompile(`exsim: (\S+) WS-Management https?://([^/\s]+)/wsman`)
	reControl       = regexp.MustCompile(`control API (http://\S+)/v1/status`)
)

// StartExsim runs bin (cmd/exsim) with a random password and waits until
// it prints its addresses.
func StartExsim(ctx context.Context, bin string, o ExsimOptions) (*Exsim, error) {
	if o.Listeners == 0 {
		o.Listeners = 1
	}
	if o.Profile == "" {
		o.Profile = exsim.ProfileZero
	}
	e := &Exsim{User: exsim.DefaultUser, Password: RandomSecret(16)}
	args := []string{"-port", "0", "-control", "127.0.0.1:0", "-quiet", "-listeners", strconv.Itoa(o.Listeners),
		"-devices", strconv.Itoa(o.Fleet.Devices), "-seed", strconv.FormatUint(o.Fleet.Seed, 10), "-profile", o.Profile}
	if o.Fleet.Domain != "" {
		args = append(args, "-domain", o.Fleet.Domain)
	}
	if o.MaxConcurrency != 0 {
		args = append(args, "-max-concurrency", strconv.Itoa(o.MaxConcurrency))
	}
	p, err := Start("exsim", bin, args, []string{"EXSIM_PASSWORD=" + e.Password}, filepath.Join(o.Dir, "exsim.log"))
	if err != nil {
		return nil, err
	}
	e.Proc = p
	m, err := p.WaitOutput(ctx, reControl)
	if err != nil {
		_ = p.Kill()
		return nil, err
	}
	e.controlClient = newControl(m[0][1])
	for _, l := range reExsimListener.FindAllStringSubmatch(p.Head(), -1) {
		u, err := url.Parse("http://" + l[2])
		if err != nil {
			_ = p.Kill()
			return nil, fmt.Errorf("exsim listener %q: %w", l[2], err)
		}
		e.Hosts = append(e.Hosts, u.Hostname())
		e.Port, _ = strconv.Atoi(u.Port())
	}
	if len(e.Hosts) != o.Listeners || e.Port == 0 {
		_ = p.Kill()
		return nil, fmt.Errorf("exsim printed %d listeners, want %d:\n%s", len(e.Hosts), o.Listeners, p.Head())
	}
	return e, nil
}

// SetDefaultAccessLevel sets the organization's DefaultAccessLevel.
func (e *Exsim) SetDefaultAccessLevel(ctx context.Context, l exchange.AccessLevel) error {
	var st exchange.OrgSettings
	if err := e.do(ctx, "GET", "/v1/org", nil, &st); err != nil {
		return err
	}
	st.DefaultAccessLevel = l
	return e.do(ctx, "PUT", "/v1/org", st, nil)
}

// AddDevice adds a partnership.
func (e *Exsim) AddDevice(ctx context.Context, d exsim.DeviceSpec) error {
	return e.do(ctx, "POST", "/v1/devices", d, nil)
}

// Counters returns exsim's counters.
func (e *Exsim) Counters(ctx context.Context) (exsim.Counters, error) {
	var c exsim.Counters
	err := e.do(ctx, "GET", "/v1/counters", nil, &c)
	return c, err
}

// Calls returns up to limit calls of the call log after sequence number
// since.
func (e *Exsim) Calls(ctx context.Context, since uint64, limit int) ([]exsim.Call, error) {
	var c []exsim.Call
	err := e.do(ctx, "GET", fmt.Sprintf("/v1/calls?since=%d&limit=%d", since, limit), nil, &c)
	return c, err
}

// Listener kills ("kill") or restarts ("restart") listener i.
func (e *Exsim) Listener(ctx context.Context, i int, action string) error {
	return e.do(ctx, "POST", fmt.Sprintf("/v1/listeners/%d/%s", i, action), nil, nil)
}

// SetQuotas sets the account's throttling quotas.
func (e *Exsim) SetQuotas(ctx context.Context, maxConcurrency, maxCmdlets int, period time.Duration) error {
	return e.do(ctx, "PUT", "/v1/quotas", map[string]any{"powerShellMaxConcurrency": maxConcurrency,
		"powerShellMaxCmdlets": maxCmdlets, "powerShellMaxCmdletsTimePeriod": period.String()}, nil)
}

// SetErrorRate makes a share of the calls to cmdlets (all when empty)
// fail with a transient error.
func (e *Exsim) SetErrorRate(ctx context.Context, rate float64, cmdlets ...string) error {
	return e.do(ctx, "PUT", "/v1/faults", map[string]any{"errorRate": rate, "cmdlets": cmdlets}, nil)
}

// GraphsimOptions start a graphsim process.
type GraphsimOptions struct {
	Fleet FleetOptions
	Dir   string // where its log goes
}

// Graphsim is a graphsim process.
type Graphsim struct {
	*Proc
	controlClient
	URL    string // authority and Graph base URL
	Secret string // the client secret it accepts
}

var reGraph = regexp.MustCompile(`graphsim: Graph (http://\S+)/v1.0/deviceManagement/managedDevices`)

// StartGraphsim runs bin (cmd/graphsim) with a random client secret and
// waits until it prints its addresses.
func StartGraphsim(ctx context.Context, bin string, o GraphsimOptions) (*Graphsim, error) {
	g := &Graphsim{Secret: RandomSecret(24)}
	args := []string{"-listen", "127.0.0.1:0", "-control", "127.0.0.1:0",
		"-devices", strconv.Itoa(o.Fleet.Devices), "-seed", strconv.FormatUint(o.Fleet.Seed, 10)}
	if o.Fleet.Domain != "" {
		args = append(args, "-domain", o.Fleet.Domain)
	}
	if !o.Fleet.Now.IsZero() {
		args = append(args, "-now", o.Fleet.Now.UTC().Format(time.RFC3339))
	}
	p, err := Start("graphsim", bin, args, []string{"GRAPHSIM_CLIENT_SECRET=" + g.Secret}, filepath.Join(o.Dir, "graphsim.log"))
	if err != nil {
		return nil, err
	}
	g.Proc = p
	m, err := p.WaitOutput(ctx, reControl)
	if err != nil {
		_ = p.Kill()
		return nil, err
	}
	g.controlClient = newControl(m[0][1])
	gm := reGraph.FindStringSubmatch(p.Head())
	if gm == nil {
		_ = p.Kill()
		return nil, fmt.Errorf("graphsim printed no Graph URL:\n%s", p.Head())
	}
	g.URL = gm[1]
	return g, nil
}

// SetFaults replaces graphsim's faults.
func (g *Graphsim) SetFaults(ctx context.Context, f graphsim.ControlFaults) error {
	return g.do(ctx, "PUT", "/v1/faults", f, nil)
}

// ApplyRecords adds, replaces and removes MDM records.
func (g *Graphsim) ApplyRecords(ctx context.Context, c graphsim.ControlChanges) error {
	return g.do(ctx, "POST", "/v1/changes", c, nil)
}

// Status returns graphsim's counts.
func (g *Graphsim) Status(ctx context.Context) (graphsim.ControlStatus, error) {
	var st graphsim.ControlStatus
	err := g.do(ctx, "GET", "/v1/status", nil, &st)
	return st, err
}

package bed

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/easconnector/easconnector/loadtest/graphsim"
	"github.com/easconnector/easconnector/server"
)

// Config is the connector's configuration for a bed; Write turns it into
// easconnector.toml and owner-only secret files in Dir.
type Config struct {
	Dir           string
	Exsim         *Exsim
	Graph         *Graphsim
	Included      string // group ids of the policy's scope
	Excluded      string
	Runspaces     int           // 0 → 8
	QuickInterval time.Duration // 0 → 1m (the configuration's minimum)
	MaxNewBlocks  int           // 0 → 1,000,000: out of the way of a first sync
	Shutdown      time.Duration // 0 → 15s
	LogLevel      string        // "" → info
	Listen        string        // admin API; "" → a free loopback port
	MemoryLimit   string        // [sync] memory_limit; "" leaves the default
}

// Written is a configuration on disk.
type Written struct {
	Path   string // easconnector.toml
	State  string // the state directory
	Listen string // the admin API's address
	Token  string // admin token
}

// FreeAddr returns a loopback address that was free a moment ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Write writes the configuration and its secret files.
func (c Config) Write() (Written, error) {
	w := Written{Path: filepath.Join(c.Dir, "easconnector.toml"), State: filepath.Join(c.Dir, "state"), Listen: c.Listen, Token: RandomSecret(16)}
	if w.Listen == "" {
		var err error
		if w.Listen, err = FreeAddr(); err != nil {
			return w, err
		}
	}
	for name, v := range map[string]string{"exchange.pw": c.Exsim.Password, "graph.secret": c.Graph.Secret, "api.token": w.Token} {
		if err := os.WriteFile(filepath.Join(c.Dir, name), []byte(v+"\n"), 0o600); err != nil {
			return w, err
		}
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.QuickInterval, time.Minute)
	def(&c.Shutdown, 15*time.Second)
	if c.Runspaces == 0 {
		c.Runspaces = 8
	}
	if c.MaxNewBlocks == 0 {
		c.MaxNewBlocks = 1_000_000
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	quoted := make([]string, len(c.Exsim.Hosts))
	for i, h := range c.Exsim.Hosts {
		quoted[i] = fmt.Sprintf("%q", h)
	}
	memory := ""
	if c.MemoryLimit != "" {
		memory = fmt.Sprintf("memory_limit = %q\n", c.MemoryLimit)
	}
	doc := fmt.Sprintf(`# Written by loadtest/bed for simulators on loopback.
[exchange]
servers = [%s]
port = %d
https = false
second_hop_credential = false
auth = "basic"
user = %q
password_file = "exchange.pw"
cas_failover = true
enable_parallel_command_support = true
runspaces = %d
connect_timeout = "10s"
request_timeout = "2m"

[log]
level = %q

[mdm]
source = "graph"
tenant_id = %q
client_id = %q
client_secret_file = "graph.secret"
authority_url = %q
graph_url = %q
included_groups = [%q]
excluded_groups = [%q]

[policy]
enabled = true
default_access_level = "quarantine"

[guard]
max_new_blocks = %d
max_new_blocks_ratio = 0.0

[sync]
state_dir = "state"
quick_interval = %q
quick_jitter = "0s"
shutdown_timeout = %q
%s
[server]
listen = %q
token_file = "api.token"
`, strings.Join(quoted[:1], ", "), c.Exsim.Port, c.Exsim.User, c.Runspaces, c.LogLevel,
		graphsim.DefaultTenantID, graphsim.DefaultClientID, c.Graph.URL, c.Graph.URL, c.Included, c.Excluded,
		c.MaxNewBlocks, c.QuickInterval.String(), c.Shutdown.String(), memory, w.Listen)
	if err := os.WriteFile(w.Path, []byte(doc), 0o600); err != nil {
		return w, err
	}
	return w, nil
}

// Connector is an `easconnector run` process and its admin API.
type Connector struct {
	*Proc
	api controlClient
	w   Written
}

// StartConnector runs `bin run --config w.Path`, its output appended to
// logPath, and waits until its admin API answers /healthz.
func StartConnector(ctx context.Context, bin string, w Written, logPath string) (*Connector, error) {
	p, err := Start("easconnector", bin, []string{"run", "--config", w.Path}, nil, logPath)
	if err != nil {
		return nil, err
	}
	c := &Connector{Proc: p, api: newControl("http://" + w.Listen), w: w}
	c.api.hc.Transport = bearer{w.Token}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if err := c.api.do(ctx, "GET", "/healthz", nil, nil); err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			_ = p.Kill()
			return nil, fmt.Errorf("easconnector: waiting for /healthz: %w (see %s)", ctx.Err(), logPath)
		case <-p.Exited():
			return nil, fmt.Errorf("easconnector exited at start-up: %v (see %s)", p.Err(), logPath)
		case <-t.C:
		}
	}
}

// bearer adds the admin token to every request.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// Syncs returns the most recent syncs, newest first (GET /api/v1/syncs).
func (c *Connector) Syncs(ctx context.Context, limit int) ([]server.SyncResult, error) {
	var v struct {
		Syncs []server.SyncResult `json:"syncs"`
	}
	err := c.api.do(ctx, "GET", fmt.Sprintf("/api/v1/syncs?limit=%d", limit), nil, &v)
	return v.Syncs, err
}

// Trigger requests a sync of kind ("quick" or "full") and returns its id.
func (c *Connector) Trigger(ctx context.Context, kind string) (string, error) {
	var v server.TriggerResponse
	err := c.api.do(ctx, "POST", "/api/v1/syncs", server.TriggerRequest{Kind: kind}, &v)
	return v.ID, err
}

// WaitSync waits until sync id has ended and returns it.
func (c *Connector) WaitSync(ctx context.Context, id string) (server.SyncResult, error) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		syncs, err := c.Syncs(ctx, 20)
		if err == nil {
			for _, s := range syncs {
				if s.ID == id && !s.End.IsZero() {
					return s, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return server.SyncResult{}, fmt.Errorf("sync %s: %w", id, ctx.Err())
		case <-c.Exited():
			return server.SyncResult{}, fmt.Errorf("sync %s: the connector exited: %v", id, c.Err())
		case <-t.C:
		}
	}
}

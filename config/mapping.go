package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/mdm"
	"github.com/easconnector/easconnector/pipeline"
	"github.com/easconnector/easconnector/pipeline/notify"
	"github.com/easconnector/easconnector/pipeline/schedule"
	"github.com/easconnector/easconnector/server"
)

// The mappings below turn the validated file into each package's Options.
// They read secrets and files (and so can fail, naming the field); what the
// file does not know (loggers, metric sets, stores, backends) is left for
// the caller.

// NewLogger returns the logger [log] describes, writing to w.
func (c *Config) NewLogger(w io.Writer) *slog.Logger {
	var level slog.Level
	switch c.Log.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		level = slog.LevelInfo
	}
	ho := &slog.HandlerOptions{Level: level}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

// maxKeyFileSize bounds a certificate or key file.
const maxKeyFileSize = 1 << 20

// GraphOptions maps [mdm] (source = "graph") onto mdm.GraphOptions,
// reading the client secret, or the certificate and its key. Logger,
// Metrics and HTTPClient are left for the caller.
func (c *Config) GraphOptions() (mdm.GraphOptions, error) {
	m := &c.MDM
	if m.Source != "graph" {
		return mdm.GraphOptions{}, &FieldError{Field: "mdm.source", Msg: fmt.Sprintf("is %q, not \"graph\"", m.Source)}
	}
	o := mdm.GraphOptions{
		TenantID:     m.TenantID,
		ClientID:     m.ClientID,
		AuthorityURL: m.AuthorityURL,
		GraphURL:     m.GraphURL,
		PageSize:     m.PageSize,
	}
	if m.CertificateFile != "" {
		cert, err := readBounded("mdm.certificate_file", m.CertificateFile, false)
		if err != nil {
			return mdm.GraphOptions{}, err
		}
		key, err := readBounded("mdm.key_file", m.KeyFile, true)
		if err != nil {
			return mdm.GraphOptions{}, err
		}
		bundle := append(append(cert, '\n'), key...)
		c, k, err := mdm.LoadCertificate(bundle)
		if err != nil {
			return mdm.GraphOptions{}, fmt.Errorf("mdm.certificate_file, mdm.key_file: %w", err)
		}
		o.Certificate, o.PrivateKey = c, secret.NewValue(k)
		return o, nil
	}
	cs, err := m.ClientSecret()
	if err != nil {
		return mdm.GraphOptions{}, err
	}
	o.ClientSecret = cs
	return o, nil
}

// readBounded reads a certificate (or, with private, an owner-only key)
// file of at most maxKeyFileSize bytes.
func readBounded(field, path string, private bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	switch {
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("%s: %s is not a regular file", field, path)
	case st.Size() > maxKeyFileSize:
		return nil, fmt.Errorf("%s: %s is larger than %d bytes", field, path, maxKeyFileSize)
	}
	if private {
		if err := checkPrivate(path, st.Mode()); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return b, nil
}

// MDMSource builds the source [mdm] names: Microsoft Graph (reading its
// credentials) or an export file. logger and set may be nil; set receives
// the Graph source's metrics (a file source has none).
func (c *Config) MDMSource(logger *slog.Logger, set *metrics.Set) (mdm.Source, error) {
	switch c.MDM.Source {
	case "graph":
		o, err := c.GraphOptions()
		if err != nil {
			return nil, err
		}
		o.Logger, o.Metrics = logger, set
		g, err := mdm.NewGraph(o)
		if err != nil {
			return nil, fmt.Errorf("mdm: %w", err)
		}
		return g, nil
	case "file":
		f, err := mdm.NewFile(c.MDM.File, mdm.Format(c.MDM.FileFormat))
		if err != nil {
			return nil, fmt.Errorf("mdm.file: %w", err)
		}
		return f, nil
	}
	return nil, &FieldError{Field: "mdm.source", Msg: fmt.Sprintf("must be \"graph\" or \"file\", got %q", c.MDM.Source)}
}

// PipelinePolicy maps [policy] and the groups of [mdm] onto
// pipeline.Policy. The policy's view of the organization's
// DefaultAccessLevel is policy.default_access_level when the file sets it
// (a full sync then asserts it), else exchangeDefault, the level Exchange
// reports now (Get-ActiveSyncOrganizationSettings).
func (c *Config) PipelinePolicy(exchangeDefault exchange.AccessLevel) (pipeline.Policy, error) {
	p := &c.Policy
	out := pipeline.Policy{
		Enabled:             p.Enabled,
		IncludedGroups:      slices.Clone(c.MDM.IncludedGroups),
		ExcludedGroups:      slices.Clone(c.MDM.ExcludedGroups),
		OverrideDefaultRule: p.OverrideDefaultRule,
		Untargeted:          pipeline.Untargeted(p.Untargeted),
		Grace:               p.Grace.Duration,
		StaleAfter:          p.StaleAfter.Duration,
	}
	orgField, orgSource := "policy.default_access_level", "set in the file"
	level := p.DefaultAccessLevel
	if level == "" {
		level, orgSource = string(exchangeDefault), "as Exchange reports it"
	}
	var err error
	if out.OrgDefault, err = exchange.ParseAccessLevel(level); err != nil {
		return pipeline.Policy{}, &FieldError{Field: orgField, Msg: fmt.Sprintf("not set, and Exchange reports no usable DefaultAccessLevel: %v", err)}
	}
	if p.Enabled && len(out.IncludedGroups) == 0 {
		return pipeline.Policy{}, &FieldError{Field: "mdm.included_groups",
			Msg: "at least one group is required with policy.enabled = true (no group targets nobody; put everyone in a group to target everyone)"}
	}
	// Quarantine leaves a device in neither list, which quarantines it only
	// when the organization's default does.
	quarantine := func(field string, a pipeline.Action) error {
		if a == pipeline.ActionQuarantine && out.OrgDefault != exchange.LevelQuarantine {
			return &FieldError{Field: field, Msg: fmt.Sprintf("\"quarantine\" leaves the device to the organization's DefaultAccessLevel, which is %s (%s): set policy.default_access_level = \"quarantine\", or use \"block\" or \"default\"", out.OrgDefault, orgSource)}
		}
		return nil
	}
	if out.Unmanaged, err = pipeline.ParseAction(p.Unmanaged); err != nil {
		return pipeline.Policy{}, &FieldError{Field: "policy.unmanaged", Msg: err.Error()}
	}
	if err := quarantine("policy.unmanaged", out.Unmanaged); err != nil {
		return pipeline.Policy{}, err
	}
	for i, x := range p.PlatformExceptions {
		field := fmt.Sprintf("policy.platform_exceptions[%d]", i)
		a, err := pipeline.ParseAction(x.Action)
		if err != nil {
			return pipeline.Policy{}, &FieldError{Field: field + ".action", Msg: err.Error()}
		}
		if err := quarantine(field+".action", a); err != nil {
			return pipeline.Policy{}, err
		}
		out.PlatformExceptions = append(out.PlatformExceptions, pipeline.PlatformException{
			Characteristic: exchange.Characteristic(x.Characteristic), Value: x.Value, Action: a,
		})
	}
	if err := out.Validate(); err != nil {
		return pipeline.Policy{}, fmt.Errorf("policy: %w", err)
	}
	return out, nil
}

// GuardConfig maps [guard].
func (c *Config) GuardConfig() pipeline.GuardConfig {
	return pipeline.GuardConfig{
		MinMDMRatio:       c.Guard.MinMDMRatio,
		MaxNewBlocks:      c.Guard.MaxNewBlocks,
		MaxNewBlocksRatio: c.Guard.MaxNewBlocksRatio,
	}
}

// OrgConfig maps the organization settings of [policy] that a full sync
// re-asserts. Device access rules for the platform exceptions are always
// managed: with no exceptions left, the rules the connector created are
// removed.
func (c *Config) OrgConfig() pipeline.OrgConfig {
	p := &c.Policy
	o := pipeline.OrgConfig{DefaultAccessLevel: p.DefaultAccessLevel != "", DeviceAccessRules: true}
	if p.AdminMailRecipients != nil {
		o.AdminMailRecipients = append([]string{}, *p.AdminMailRecipients...) // non-nil even when empty: clears them
	}
	if p.UserMailInsert != nil {
		s := *p.UserMailInsert
		o.UserMailInsert = &s
	}
	return o
}

// PipelineOptions maps the file onto pipeline.Options: policy (see
// PipelinePolicy for exchangeDefault), organization settings, guards, the
// state directory, adoption and the write concurrency (the runspace pool's
// size). Exchange, MDM, State, Caches, Notifier, Metrics, Logger and
// Progress are left for the caller.
func (c *Config) PipelineOptions(exchangeDefault exchange.AccessLevel) (pipeline.Options, error) {
	pol, err := c.PipelinePolicy(exchangeDefault)
	if err != nil {
		return pipeline.Options{}, err
	}
	workers := c.Exchange.Runspaces
	if !c.Exchange.EnableParallelCommandSupport {
		workers = 1
	}
	o := pipeline.Options{
		Policy:         pol,
		Org:            c.OrgConfig(),
		Guard:          c.GuardConfig(),
		StateDir:       c.Sync.StateDir,
		HeldPlanMaxAge: c.Guard.PlanMaxAge.Duration,
		Audit:          pipeline.AuditOptions{MaxBytes: int64(c.Sync.AuditMaxBytes), Keep: c.Sync.AuditKeep},
		AdoptExisting:  c.Policy.AdoptExisting,
		Workers:        workers,
	}
	if o.Audit.Keep == 0 {
		o.Audit.Keep = -1 // audit_keep = 0 keeps every file
	}
	if !o.Policy.Enabled {
		o.Org = pipeline.OrgConfig{} // a disabled policy changes nothing, org settings included
	}
	return o, nil
}

// NotifyOptions maps [notify], reading the SMTP password. Store, Logger and
// the wording (Organization, Contact) are left for the caller. It is an
// error to ask while notify.enabled is false.
func (c *Config) NotifyOptions() (notify.Options, error) {
	n := &c.Notify
	if !n.Enabled {
		return notify.Options{}, &FieldError{Field: "notify.enabled", Msg: "is false"}
	}
	sec, err := notify.ParseSecurity(n.Security)
	if err != nil {
		return notify.Options{}, &FieldError{Field: "notify.security", Msg: err.Error()}
	}
	pw, err := n.Password()
	if err != nil {
		return notify.Options{}, err
	}
	return notify.Options{
		SMTP: notify.SMTPOptions{
			Host:     n.SMTPHost,
			Port:     n.SMTPPort,
			Security: sec,
			Username: n.User,
			Password: pw,
		},
		From:         n.From,
		EnrollURL:    n.EnrollmentURL,
		TemplatesDir: n.TemplatesDir,
	}, nil
}

// ServerOptions maps [server], reading the API token. Backend, Metrics,
// Logger and Version are left for the caller. It is an error to ask while
// server.listen is "" (the server is disabled).
func (c *Config) ServerOptions() (server.Options, error) {
	s := &c.Server
	if s.Listen == "" {
		return server.Options{}, &FieldError{Field: "server.listen", Msg: "is empty: the admin server is disabled"}
	}
	token, err := s.Token()
	if err != nil {
		return server.Options{}, err
	}
	if err := checkToken(token, "server.token", s.TokenEnv); err != nil {
		return server.Options{}, err
	}
	read, err := s.ReadToken()
	if err != nil {
		return server.Options{}, err
	}
	if err := checkToken(read, "server.read_token", s.ReadTokenEnv); err != nil {
		return server.Options{}, err
	}
	if !token.IsZero() && token.Reveal() == read.Reveal() {
		field := "server.read_token_file"
		if s.ReadTokenEnv != "" {
			field = "server.read_token_env"
		}
		return server.Options{}, &FieldError{Field: field, Msg: "holds the admin token: the read-only token must differ"}
	}
	return server.Options{Listen: s.Listen, Token: token, ReadToken: read, TLSCert: s.TLSCert, TLSKey: s.TLSKey,
		AllowedHosts: slices.Clone(s.AllowedHosts), LoopbackPublicCounts: s.LoopbackPublicCounts}, nil
}

// checkToken checks a token's length; field is the pair's name, env its
// _env key's value (to name the key that was used).
func checkToken(t secret.String, field, env string) error {
	if t.IsZero() || t.Len() >= server.MinTokenLength {
		return nil
	}
	field += "_file"
	if env != "" {
		field = strings.TrimSuffix(field, "_file") + "_env"
	}
	return &FieldError{Field: field, Msg: fmt.Sprintf("the token must be at least %d characters, got %d", server.MinTokenLength, t.Len())}
}

// noJitter stands for "no jitter": the scheduler reads a zero Jitter as
// its default (QuickInterval/12), so sync.quick_jitter = "0s" maps to the
// smallest positive offset, which is none in practice.
const noJitter = time.Nanosecond

// ScheduleOptions maps [sync]. LastFull, LastSync (from the state),
// Logger, Clock and Seed are left for the caller.
func (c *Config) ScheduleOptions() (schedule.Options, error) {
	s := &c.Sync
	jitter := s.QuickJitter.Duration
	switch {
	case jitter == 0:
		jitter = noJitter
	case jitter >= s.QuickInterval.Duration/2:
		return schedule.Options{}, &FieldError{Field: "sync.quick_jitter",
			Msg: fmt.Sprintf("must be less than half of sync.quick_interval (%s), got %s", Dur(s.QuickInterval.Duration/2), s.QuickJitter)}
	}
	return schedule.Options{
		QuickInterval:   s.QuickInterval.Duration,
		Jitter:          jitter,
		FullAt:          s.FullAt,
		ShutdownTimeout: s.ShutdownTimeout.Duration,
	}, nil
}

// IsFieldError reports whether err names a field of the file (a mistake
// in the configuration rather than a failure of something it points to).
func IsFieldError(err error) bool {
	var fe *FieldError
	return errors.As(err, &fe)
}

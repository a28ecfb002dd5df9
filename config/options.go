package config

import (
	"fmt"
	"os"
	"slices"

	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/runspace"
)

// Password reads the Exchange service account's password.
func (e *Exchange) Password() (secret.String, error) {
	return ReadSecret("exchange.password", e.PasswordEnv, e.PasswordFile)
}

// ClientSecret reads the Graph app's client secret; empty when the app
// authenticates with a certificate.
func (m *MDM) ClientSecret() (secret.String, error) {
	if m.ClientSecretEnv == "" && m.ClientSecretFile == "" {
		return secret.String{}, nil
	}
	return ReadSecret("mdm.client_secret", m.ClientSecretEnv, m.ClientSecretFile)
}

// Token reads the admin API's bearer token; empty when none is configured.
func (s *Server) Token() (secret.String, error) {
	if s.TokenEnv == "" && s.TokenFile == "" {
		return secret.String{}, nil
	}
	return ReadSecret("server.token", s.TokenEnv, s.TokenFile)
}

// ReadToken reads the admin API's read-only bearer token; empty when none
// is configured.
func (s *Server) ReadToken() (secret.String, error) {
	if s.ReadTokenEnv == "" && s.ReadTokenFile == "" {
		return secret.String{}, nil
	}
	return ReadSecret("server.read_token", s.ReadTokenEnv, s.ReadTokenFile)
}

// Password reads the SMTP password; empty when none is configured.
func (n *Notify) Password() (secret.String, error) {
	if n.PasswordEnv == "" && n.PasswordFile == "" {
		return secret.String{}, nil
	}
	return ReadSecret("notify.password", n.PasswordEnv, n.PasswordFile)
}

// maxCAFileSize bounds a CA bundle.
const maxCAFileSize = 4 << 20

// RunspaceOptions maps [exchange] onto runspace.Options, reading the
// password and the CA file. Logger and Metrics are left for the caller.
// With enable_parallel_command_support = false the pool runs one session
// whatever runspaces says (runspace.Options.Parallel).
func (c *Config) RunspaceOptions() (runspace.Options, error) {
	e := &c.Exchange
	var pw secret.String
	if e.PasswordEnv != "" || e.PasswordFile != "" || e.KeytabFile == "" {
		var err error
		if pw, err = e.Password(); err != nil {
			return runspace.Options{}, err
		}
	}
	if e.KeytabFile != "" {
		if err := checkKeytab(e.KeytabFile); err != nil {
			return runspace.Options{}, err
		}
	}
	var ca []byte
	if e.CAFile != "" {
		st, err := os.Stat(e.CAFile)
		if err != nil {
			return runspace.Options{}, fmt.Errorf("exchange.ca_file: %w", err)
		}
		if st.Size() > maxCAFileSize {
			return runspace.Options{}, fmt.Errorf("exchange.ca_file: %s is larger than %d bytes", e.CAFile, maxCAFileSize)
		}
		if ca, err = os.ReadFile(e.CAFile); err != nil {
			return runspace.Options{}, fmt.Errorf("exchange.ca_file: %w", err)
		}
	}
	return runspace.Options{
		Servers:                  slices.Clone(e.Servers),
		Port:                     e.Port,
		PlainHTTP:                !e.HTTPS,
		AllowUnencrypted:         e.AllowUnencrypted,
		CACert:                   ca,
		InsecureSkipVerify:       e.InsecureSkipVerify,
		Auth:                     e.Auth,
		User:                     e.User,
		Password:                 pw,
		Realm:                    e.Realm,
		KrbConfig:                e.Krb5Conf,
		SPN:                      e.SPN,
		Keytab:                   e.KeytabFile,
		Mode:                     e.Mode,
		EndpointPath:             e.EndpointPath,
		ConfigurationName:        e.ConfigurationName,
		SecondHopCredential:      e.SecondHopCredential,
		CASFailover:              e.CASFailover,
		Parallel:                 e.EnableParallelCommandSupport,
		Size:                     e.Runspaces,
		PowerShellMaxConcurrency: e.PowerShellMaxConcurrency,
		MaxRequestsPerSession:    e.MaxRequestsPerSession,
		MaxSessionAge:            e.MaxSessionAge.Duration,
		RequestTimeout:           e.RequestTimeout.Duration,
		ConnectTimeout:           e.ConnectTimeout.Duration,
		OperationTimeout:         e.OperationTimeout.Duration,
	}, nil
}

// checkKeytab applies the password file's rules to the keytab: it holds
// the account's keys, which are as good as its password.
func checkKeytab(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("exchange.keytab_file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("exchange.keytab_file: %s is not a regular file", path)
	}
	if err := checkPrivate(path, st.Mode()); err != nil {
		return fmt.Errorf("exchange.keytab_file: %w", err)
	}
	return nil
}

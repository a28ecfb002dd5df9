package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/easconnector/easconnector/internal/secret"
)

// maxSecretSize bounds a secret file: a password or token, not a document.
const maxSecretSize = 64 << 10

// ReadSecret returns the secret named by a pair of keys: the value of the
// environment variable env, or the contents of file without its trailing
// line break. field names the pair in errors ("exchange.password"); no
// error carries the value.
//
// A file must be a regular file that neither group nor others may access
// (on Windows, where access is governed by ACLs, the mode is not checked).
// An empty secret is an error.
func ReadSecret(field, env, file string) (secret.String, error) {
	switch {
	case env != "" && file != "":
		return secret.String{}, fmt.Errorf("%s: set only one of the _env and _file keys", field)
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok {
			return secret.String{}, fmt.Errorf("%s_env: environment variable %s is not set", field, env)
		}
		if v == "" {
			return secret.String{}, fmt.Errorf("%s_env: environment variable %s is empty", field, env)
		}
		return secret.New(v), nil
	case file != "":
		return readSecretFile(field+"_file", file)
	}
	return secret.String{}, fmt.Errorf("%s: not configured", field)
}

func readSecretFile(field, path string) (secret.String, error) {
	f, err := os.Open(path)
	if err != nil {
		return secret.String{}, fmt.Errorf("%s: %w", field, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return secret.String{}, fmt.Errorf("%s: %w", field, err)
	}
	if !st.Mode().IsRegular() {
		return secret.String{}, fmt.Errorf("%s: %s is not a regular file", field, path)
	}
	if err := checkPrivate(path, st.Mode()); err != nil {
		return secret.String{}, fmt.Errorf("%s: %w", field, err)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretSize+1))
	if err != nil {
		return secret.String{}, fmt.Errorf("%s: %w", field, err)
	}
	if len(b) > maxSecretSize {
		return secret.String{}, fmt.Errorf("%s: %s is larger than %d bytes; it should hold one secret", field, path, maxSecretSize)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return secret.String{}, fmt.Errorf("%s: %s is empty", field, path)
	}
	if bytes.ContainsAny(b, "\r\n") {
		return secret.String{}, fmt.Errorf("%s: %s holds more than one line", field, path)
	}
	return secret.New(string(b)), nil
}

// ErrSecretExposed is wrapped by the error for a secret file that group or
// others may access.
var ErrSecretExposed = errors.New("secret file is accessible by group or others")

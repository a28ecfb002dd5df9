// Package hostaddr checks host names and addresses that come from the
// configuration: whether a string is a host at all (config and runspace
// share the rule) and whether a host is loopback only.
//
// Loopback matters because it relaxes rules (plain HTTP, no API token), so
// it is decided by what a name resolves to, not by its spelling: a
// "localhost" that /etc/hosts or a search domain points elsewhere is not
// loopback. The functions are safe for concurrent use.
package hostaddr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
)

// hostRe is a DNS name of letters, digits, '-' and '_' (Exchange server and
// lab names use it), with an optional final dot; IP literals are checked
// with net.ParseIP.
var hostRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$`)

// Valid reports whether s is a host name or an IP address, nothing more
// (no scheme, port, path, brackets or whitespace): it ends up in URLs and
// metric labels.
func Valid(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	return net.ParseIP(s) != nil || hostRe.MatchString(s)
}

// IsLoopbackIP reports whether host is a literal loopback address
// (127.0.0.0/8, ::1, ::ffff:127.x.x.x); names are not resolved.
func IsLoopbackIP(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Resolver looks names up; *net.Resolver implements it.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

var _ Resolver = (*net.Resolver)(nil)

// ErrNotLoopback is wrapped by Loopback's error for a name with an address
// that is not loopback.
var ErrNotLoopback = errors.New("not a loopback address")

// Loopback returns the addresses of host when every one of them is
// loopback: host itself when it is a literal loopback address, else what r
// (net.DefaultResolver when nil) resolves it to, at least one address. An
// empty host, an unspecified address (0.0.0.0, ::), a name that does not
// resolve and a name with any non-loopback address are errors.
func Loopback(ctx context.Context, r Resolver, host string) ([]net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return nil, fmt.Errorf("%s: %w", host, ErrNotLoopback)
		}
		return []net.IP{ip}, nil
	}
	if host == "" {
		return nil, fmt.Errorf("empty host (all interfaces): %w", ErrNotLoopback)
	}
	if r == nil {
		r = net.DefaultResolver
	}
	addrs, err := r.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", host)
	}
	ips := make([]net.IP, 0, len(addrs))
	for _, a := range addrs {
		if !a.IP.IsLoopback() {
			return nil, fmt.Errorf("%s resolves to %s: %w", host, a.IP, ErrNotLoopback)
		}
		ips = append(ips, a.IP)
	}
	return ips, nil
}

// IsLoopback reports whether Loopback accepts host.
func IsLoopback(ctx context.Context, r Resolver, host string) bool {
	_, err := Loopback(ctx, r, host)
	return err == nil
}

// Canonical lower-cases a host name and drops a final dot, so that names
// compare as DNS compares them.
func Canonical(host string) string {
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

// Static is a Resolver that answers from a map (for tests and for pinning
// names); a name it does not hold is "no such host".
type Static map[string][]string

// LookupIPAddr implements Resolver.
func (s Static) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	list, ok := s[Canonical(host)]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	out := make([]net.IPAddr, 0, len(list))
	for _, a := range list {
		ip := net.ParseIP(a)
		if ip == nil {
			return nil, fmt.Errorf("static resolver: %q is not an IP address", a)
		}
		out = append(out, net.IPAddr{IP: ip})
	}
	return out, nil
}

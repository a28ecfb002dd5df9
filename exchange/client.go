package exchange

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/easconnector/easconnector/runspace"
)

// Runner runs one cmdlet call and streams its output objects to each, in
// order, from one goroutine, and returns after the last one with
// Result.Count set to the number of objects it delivered. An error returned
// by each stops the call and is returned. *runspace.Pool implements it, and
// so does *runspace.Session (one session, as easconnector check uses).
type Runner interface {
	Do(ctx context.Context, c runspace.Call, each func(json.RawMessage) error) (runspace.Result, error)
}

// The cmdlets this package sends. Each one is in runspace.Allowlist (tested).
const (
	cmdGetMobileDevice        = "Get-MobileDevice"
	cmdGetCASMailbox          = "Get-CASMailbox"
	cmdSetCASMailbox          = "Set-CASMailbox"
	cmdGetOrgSettings         = "Get-ActiveSyncOrganizationSettings"
	cmdSetOrgSettings         = "Set-ActiveSyncOrganizationSettings"
	cmdGetDeviceAccessRule    = "Get-ActiveSyncDeviceAccessRule"
	cmdNewDeviceAccessRule    = "New-ActiveSyncDeviceAccessRule"
	cmdSetDeviceAccessRule    = "Set-ActiveSyncDeviceAccessRule"
	cmdRemoveDeviceAccessRule = "Remove-ActiveSyncDeviceAccessRule"
	cmdGetExchangeServer      = "Get-ExchangeServer"
	cmdGetClientAccessService = "Get-ClientAccessService"
)

// resultSizeUnlimited lifts Get-* cmdlets' default cap of 1,000 objects.
const resultSizeUnlimited = "Unlimited"

// ErrIncomplete is wrapped by the error of a read whose object count differs
// from the count the remote side reported: the stream was cut or repeated,
// and its result must not be acted on.
var ErrIncomplete = errors.New("incomplete result")

// Client is the typed Exchange API. The zero value is not usable; call New.
type Client struct {
	r Runner
}

// New returns a Client that sends its calls through r.
func New(r Runner) *Client { return &Client{r: r} }

// read sends a read-only call and hands each raw object to each. It checks
// that the number of objects received equals the count the remote side
// reported. An error returned by each stops the call and is returned as is.
func (c *Client) read(ctx context.Context, call runspace.Call, each func(json.RawMessage) error) error {
	call.Idempotent = true
	n := 0
	var stop error
	res, err := c.r.Do(ctx, call, func(raw json.RawMessage) error {
		n++
		if err := each(raw); err != nil {
			stop = err
			return err
		}
		return nil
	})
	switch {
	case stop != nil:
		return stop
	case err != nil:
		return err
	case res.Count != n:
		return fmt.Errorf("%w: received %d objects, %s reported %d", ErrIncomplete, n, serverName(res), res.Count)
	}
	return nil
}

// write sends a call that returns no objects.
func (c *Client) write(ctx context.Context, call runspace.Call) error {
	n := 0
	_, err := c.r.Do(ctx, call, func(json.RawMessage) error {
		n++
		return nil
	})
	if err != nil {
		return err
	}
	if n != 0 {
		return fmt.Errorf("%s returned %d unexpected objects", call.Cmd, n)
	}
	return nil
}

func serverName(res runspace.Result) string {
	if res.Server == "" {
		return "server"
	}
	return res.Server
}

// readAll collects every object of a read into a slice of T.
func readAll[T any](ctx context.Context, c *Client, call runspace.Call) ([]T, error) {
	var out []T
	err := c.read(ctx, call, func(raw json.RawMessage) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("decode object %d: %w", len(out)+1, err)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

// properties returns the JSON names of T's fields: the Select list that asks
// Exchange for exactly what T holds.
func properties[T any]() []string {
	t := reflect.TypeFor[T]()
	names := make([]string, 0, t.NumField())
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		names = append(names, name)
	}
	return names
}

// Select lists, derived once from the types so that they cannot drift.
var (
	mobileDeviceProps = properties[MobileDevice]()
	casMailboxProps   = properties[CASMailbox]()
	orgSettingsProps  = properties[OrgSettings]()
	ruleProps         = properties[DeviceAccessRule]()
	serverProps       = properties[ExchangeServer]()
	// Get-ClientAccessService objects carry no role, version or site.
	casServiceProps = []string{"Name", "Fqdn"}
)

// maxQuoted bounds how much of a hostile string an error message repeats.
const maxQuoted = 96

// quote renders a possibly hostile string for an error message: Go-quoted
// (control characters, quotes and invalid UTF-8 escaped) and truncated.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return fmt.Sprintf("%q", s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q…(%d bytes)", s[:cut], len(s))
}

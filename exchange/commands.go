package exchange

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/easconnector/easconnector/runspace"
)

// cmdGetCommand lists the commands of the session. It is read only and
// used only to report which cmdlets the account lacks (easconnector check).
const cmdGetCommand = "Get-Command"

// Cmdlets returns the Exchange cmdlets easconnector runs: the bootstrap's
// allowlist without Get-Command, which only inspects the session. They are
// the cmdlets deploy/exchange/New-EasConnectorRbac.ps1 puts in the
// connector's management role.
func Cmdlets() []string {
	return slices.DeleteFunc(slices.Clone(runspace.Allowlist), func(c string) bool { return c == cmdGetCommand })
}

// MissingCmdlets returns those of names that the session does not offer.
// An Exchange remote session (the /PowerShell/ endpoint, and the
// implicit-remoting session of remoting mode) exposes only the cmdlets the
// account's management roles grant (Microsoft Learn, "Understanding
// management role assignments" / "Exchange Server permissions": "users can
// only see and run the cmdlets and parameters that are assigned to them"),
// so Get-Command -Name over the list tells the RBAC gap without calling any
// of them: Get-Command answers each granted name with its CommandInfo and
// each other one with a CommandNotFoundException error record
// (non-terminating), which is the expected answer here, not a failure.
func (c *Client) MissingCmdlets(ctx context.Context, names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, nil
	}
	found := map[string]bool{}
	_, err := c.r.Do(ctx, runspace.Call{Cmd: cmdGetCommand, Args: map[string]any{"Name": slices.Clone(names)},
		Select: []string{"Name"}, Idempotent: true}, func(raw json.RawMessage) error {
		var ci struct{ Name string }
		if err := json.Unmarshal(raw, &ci); err != nil {
			return fmt.Errorf("decode command info: %w", err)
		}
		found[strings.ToLower(ci.Name)] = true
		return nil
	})
	if err != nil && !commandNotFound(err) {
		return nil, fmt.Errorf("get command: %w", err)
	}
	var missing []string
	for _, n := range names {
		if !found[strings.ToLower(n)] {
			missing = append(missing, n)
		}
	}
	if err != nil && len(missing) == 0 {
		// An error record names a command, yet every one was found.
		return nil, fmt.Errorf("get command: %w", err)
	}
	return missing, nil
}

// commandNotFound reports whether err is PowerShell's "not recognized as
// the name of a cmdlet" (System.Management.Automation.CommandNotFoundException),
// recognized by its exception type and FullyQualifiedErrorId, not its text.
func commandNotFound(err error) bool {
	re, ok := errors.AsType[*runspace.RemoteError](err)
	return ok && (strings.Contains(re.Type, "CommandNotFoundException") || strings.HasPrefix(re.FQID, "CommandNotFoundException"))
}

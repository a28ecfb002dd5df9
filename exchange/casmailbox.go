package exchange

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/easconnector/easconnector/runspace"
)

// CASBatchSize is the number of mailboxes CASMailboxes asks for in one
// Get-CASMailbox call. Fifty distinguished names keep the OPATH filter a few
// kilobytes long, well inside what Exchange parses quickly.
const CASBatchSize = 50

// partnershipFilter selects the mailboxes that have an EAS partnership.
const partnershipFilter = "HasActiveSyncDevicePartnership -eq $true"

// CASMailboxes streams CAS mailboxes to each.
//
// With identities == nil it reads every mailbox that has an ActiveSync
// device partnership (the filter is re-checked on each object). Otherwise
// identities are distinguished names (as MailboxDN returns them; anything
// else is refused); they are read in batches of CASBatchSize by an OPATH
// filter on DistinguishedName, and only mailboxes whose DistinguishedName is
// one of identities (case-insensitively, each at most once) reach each: a
// filter that matched more than asked for cannot widen the result. An empty,
// non-nil identities sends nothing. Identities that match no mailbox are
// simply absent from the result. A distinguished name holding a typographic
// single quote (U+2018…U+201B) is read alone, by -Identity.
//
// Batches run one after another; each is called from one goroutine at a
// time. An error returned by each stops the read and is returned.
func (c *Client) CASMailboxes(ctx context.Context, identities []string, each func(CASMailbox) error) error {
	if identities == nil {
		call := runspace.Call{
			Cmd:    cmdGetCASMailbox,
			Args:   map[string]any{"ResultSize": resultSizeUnlimited, "Filter": partnershipFilter},
			Select: casMailboxProps,
		}
		return unstopped(c.readCAS(ctx, call, nil, each), func(err error) error {
			return fmt.Errorf("get cas mailboxes: %w", err)
		})
	}
	want := make(map[string]bool, len(identities))
	uniq := make([]string, 0, len(identities))
	for _, id := range identities {
		if err := checkDN(id); err != nil {
			return fmt.Errorf("get cas mailboxes: %w", err)
		}
		k := strings.ToLower(id)
		if _, dup := want[k]; dup {
			continue
		}
		want[k] = false
		uniq = append(uniq, id)
	}
	// A DN holding a typographic single quote is read by -Identity, one
	// call each: whether Exchange's OPATH tokenizer takes U+2018…U+201B for
	// quotes (PowerShell's does) decides whether doubling them escapes them
	// or corrupts the value, and a parameter bound as data avoids the
	// question. Such names are rare.
	var filtered []string
	for _, id := range uniq {
		if strings.ContainsFunc(id, isTypographicQuote) {
			if err := c.casByIdentity(ctx, id, want, each); err != nil {
				return err
			}
			continue
		}
		filtered = append(filtered, id)
	}
	for batch := range slices.Chunk(filtered, CASBatchSize) {
		call := runspace.Call{
			Cmd:    cmdGetCASMailbox,
			Args:   map[string]any{"ResultSize": resultSizeUnlimited, "Filter": dnFilter(batch)},
			Select: casMailboxProps,
		}
		err := unstopped(c.readCAS(ctx, call, want, each), func(err error) error {
			return fmt.Errorf("get cas mailboxes %s (batch of %d): %w", quote(batch[0]), len(batch), err)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// casByIdentity reads one mailbox by -Identity; a mailbox that does not
// exist is absent from the result, not an error.
func (c *Client) casByIdentity(ctx context.Context, id string, want map[string]bool, each func(CASMailbox) error) error {
	call := runspace.Call{Cmd: cmdGetCASMailbox, Args: map[string]any{"Identity": id}, Select: casMailboxProps}
	err := c.readCAS(ctx, call, want, each)
	if re, ok := errors.AsType[*runspace.RemoteError](err); ok && strings.HasSuffix(re.Type, ".ManagementObjectNotFoundException") {
		return nil
	}
	return unstopped(err, func(err error) error {
		return fmt.Errorf("get cas mailbox %s: %w", quote(id), err)
	})
}

func isTypographicQuote(r rune) bool { return r != '\'' && isSingleQuote(r) }

// errStopped marks an error returned by the caller's callback.
type errStopped struct{ err error }

func (e errStopped) Error() string { return e.err.Error() }
func (e errStopped) Unwrap() error { return e.err }

func (c *Client) readCAS(ctx context.Context, call runspace.Call, want map[string]bool, each func(CASMailbox) error) error {
	err := c.read(ctx, call, func(raw json.RawMessage) error {
		var m CASMailbox
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("decode cas mailbox %s: %w", identityOf(raw), err)
		}
		if want == nil && !m.HasActiveSyncDevicePartnership {
			return nil // the partnership filter is re-checked client-side too
		}
		if want != nil {
			k := strings.ToLower(m.DistinguishedName)
			seen, asked := want[k]
			if !asked || seen {
				return nil
			}
			want[k] = true
		}
		if err := each(m); err != nil {
			return errStopped{err}
		}
		return nil
	})
	return err
}

// unstopped returns the callback's own error as is, or wrap(err).
func unstopped(err error, wrap func(error) error) error {
	if err == nil {
		return nil
	}
	if s, ok := errors.AsType[errStopped](err); ok {
		return s.err
	}
	return wrap(err)
}

// checkIdentity refuses identities that cannot be a distinguished name or
// mailbox identity: empty, or holding control characters (NUL, newline).
func checkIdentity(id string) error {
	if strings.TrimSpace(id) == "" {
		return errors.New("empty mailbox identity")
	}
	if strings.ContainsFunc(id, isControl) {
		return fmt.Errorf("mailbox identity %s contains control characters", quote(id))
	}
	return nil
}

// checkDN accepts a well-formed distinguished name without control
// characters: CASMailboxes matches identities by DistinguishedName, so an
// SMTP address or alias would silently match nothing.
func checkDN(dn string) error {
	if err := checkIdentity(dn); err != nil {
		return err
	}
	for i := 0; i < len(dn); {
		end, err := rdnEnd(dn, i)
		if err != nil {
			return fmt.Errorf("mailbox identity %s is not a distinguished name: %w", quote(dn), err)
		}
		i = end + 1
		if i == len(dn) {
			return fmt.Errorf("mailbox identity %s is not a distinguished name: it ends with a comma", quote(dn))
		}
	}
	return nil
}

// dnFilter returns "DistinguishedName -eq '…' -or …" for dns.
func dnFilter(dns []string) string {
	var b strings.Builder
	for i, dn := range dns {
		if i > 0 {
			b.WriteString(" -or ")
		}
		b.WriteString("DistinguishedName -eq ")
		b.WriteString(opathQuote(dn))
	}
	return b.String()
}

// opathQuote returns s as a single-quoted OPATH string. Exchange tokenizes
// filters with PowerShell's rules, which take the typographic single quotes
// U+2018, U+2019, U+201A and U+201B for ' as well; every one of them is
// doubled, as PowerShell's CodeGeneration.EscapeSingleQuotedStringContent
// does, so no value can end the string early.
func opathQuote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	for i, r := range s {
		if isSingleQuote(r) {
			b.WriteRune(r)
		}
		if r == utf8.RuneError {
			// Copy invalid bytes as they are; they cannot form a quote.
			_, n := utf8.DecodeRuneInString(s[i:])
			b.WriteString(s[i : i+n])
			continue
		}
		b.WriteRune(r)
	}
	b.WriteByte('\'')
	return b.String()
}

func isSingleQuote(r rune) bool {
	switch r {
	case '\'', '\u2018', '\u2019', '\u201a', '\u201b':
		return true
	}
	return false
}

// SetCASMailbox edits the ActiveSync allowed and blocked device lists of one
// mailbox in one Set-CASMailbox call (@{Add=…;Remove=…} on each list that
// changes). The edit is idempotent, so the pool may retry it.
//
// It sends nothing and returns an error if identity is empty, both edits are
// empty, any id fails ValidDeviceID, an id is both added and removed in one
// list, or an id is added to both lists.
func (c *Client) SetCASMailbox(ctx context.Context, identity string, allowed, blocked runspace.ListEdit) error {
	if err := checkIdentity(identity); err != nil {
		return fmt.Errorf("set cas mailbox: %w", err)
	}
	allowed, err := cleanEdit("ActiveSyncAllowedDeviceIDs", allowed)
	if err != nil {
		return fmt.Errorf("set cas mailbox %s: %w", quote(identity), err)
	}
	blocked, err = cleanEdit("ActiveSyncBlockedDeviceIDs", blocked)
	if err != nil {
		return fmt.Errorf("set cas mailbox %s: %w", quote(identity), err)
	}
	for _, id := range allowed.Add {
		if containsFold(blocked.Add, id) {
			return fmt.Errorf("set cas mailbox %s: device id %s added to both the allowed and the blocked list", quote(identity), id)
		}
	}
	args := map[string]any{"Identity": identity}
	if !emptyEdit(allowed) {
		args["ActiveSyncAllowedDeviceIDs"] = allowed
	}
	if !emptyEdit(blocked) {
		args["ActiveSyncBlockedDeviceIDs"] = blocked
	}
	if len(args) == 1 {
		return fmt.Errorf("set cas mailbox %s: empty edit", quote(identity))
	}
	call := runspace.Call{Cmd: cmdSetCASMailbox, Args: args, Idempotent: true}
	if err := c.write(ctx, call); err != nil {
		return fmt.Errorf("set cas mailbox %s: %w", quote(identity), err)
	}
	return nil
}

func emptyEdit(e runspace.ListEdit) bool { return len(e.Add) == 0 && len(e.Remove) == 0 }

// cleanEdit validates every id and drops exact duplicates, keeping order.
// The returned edit never shares memory with e.
func cleanEdit(list string, e runspace.ListEdit) (runspace.ListEdit, error) {
	var out runspace.ListEdit
	for _, part := range []struct {
		op  string
		in  []string
		out *[]string
	}{{"add", e.Add, &out.Add}, {"remove", e.Remove, &out.Remove}} {
		for _, id := range part.in {
			if !ValidDeviceID(id) {
				return runspace.ListEdit{}, fmt.Errorf("%s %s: %w %s", list, part.op, ErrInvalidDeviceID, quote(id))
			}
			if !slices.Contains(*part.out, id) {
				*part.out = append(*part.out, id)
			}
		}
	}
	for _, id := range out.Add {
		if containsFold(out.Remove, id) {
			return runspace.ListEdit{}, fmt.Errorf("%s: device id %s both added and removed", list, id)
		}
	}
	return out, nil
}

// containsFold reports whether list holds id, ignoring ASCII case (device ids
// are ASCII once validated).
func containsFold(list []string, id string) bool {
	return slices.ContainsFunc(list, func(s string) bool { return strings.EqualFold(s, id) })
}

package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/easconnector/easconnector/internal/humanize"
	"github.com/easconnector/easconnector/server"
)

const devicesHelp = `Lists device partnerships with the connector's decision, as the last sync
saw them, from a running service's admin API (before the service's own
first sync: the last sync's list from the state directory, also one of
easconnector sync). Filters combine.
DECISION "Default (Quarantine)" means the connector keeps the device in
neither list, so Exchange's device access rules decide, else the
organization's DefaultAccessLevel, which is Quarantine in that example.
EXCHANGE WAS is the access state Exchange reported when the sync read the
device, before the sync wrote: the state Exchange stored at the phone's last
request (or a Set-CASMailbox wrote since), not a live evaluation; LISTS NOW is what the mailbox's allowed and
blocked lists give it after the sync (Allowed, Blocked; "-": neither list
names it, so device access rules or the org default decide), which Exchange
applies at the device's next request; MDM is the device's compliance state.
Every decision, reason and compliance value is explained in the README's
glossary and at /glossary on the status page.`

func runDevices(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("devices", "[--decision D] [--reason R] [--user U] [--limit N] [--json] [--server URL] [--config file]", stderr)
	srv := addServerFlags(fs, "server", configUsageRemote, serverUsage)
	decision := fs.String("decision", "", "only this decision: Allow, Block or Default")
	reason := fs.String("reason", "", "only this reason, e.g. NotCompliant, NotEnrolled, Compliant")
	user := fs.String("user", "", "only this user's devices (mailbox address or UPN)")
	limit := fs.Int("limit", 100, "at most this many devices (0: all)")
	asJSON := fs.Bool("json", false, "print JSON")
	withHelp(fs, devicesHelp)
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if *limit < 0 {
		fmt.Fprintf(stderr, "easconnector devices: --limit must not be negative, got %d\n", *limit)
		return exitUsage
	}
	c, err := srv.client(false)
	if err != nil {
		fmt.Fprintf(stderr, "easconnector devices: %v\n", err)
		return exitFailed
	}
	q := url.Values{}
	for k, v := range map[string]string{"decision": *decision, "reason": *reason, "user": *user} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var rows []server.DeviceRow
	total := 0
	for offset := 0; ; {
		page := server.MaxLimit
		if *limit > 0 {
			page = min(page, *limit-len(rows))
		}
		q.Set("offset", strconv.Itoa(offset))
		q.Set("limit", strconv.Itoa(page))
		cctx, cancel := context.WithTimeout(ctx, apiTimeout)
		var p server.DevicePage
		err := c.call(cctx, "GET", "/api/v1/devices", q, nil, &p)
		cancel()
		if err != nil {
			fmt.Fprintf(stderr, "easconnector devices: %v\n", err)
			return exitFailed
		}
		rows, total = append(rows, p.Devices...), p.Total
		offset += len(p.Devices)
		if len(p.Devices) == 0 || offset >= p.Total || (*limit > 0 && len(rows) >= *limit) {
			break
		}
	}
	if *asJSON {
		return printJSON(stdout, stderr, server.DevicePage{Total: total, Offset: 0, Limit: *limit, Devices: rows})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MAILBOX\tDEVICE ID\tTYPE\tMODEL\tDECISION\tREASON\tEXCHANGE WAS\tLISTS NOW\tMDM")
	for _, r := range rows {
		decision, before := r.DecisionText, r.ExchangeStateBefore
		if decision == "" { // a server from before decisionText
			decision = r.Decision
		}
		if before == "" { // or from before the rename of exchangeState
			before = r.ExchangeState
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", clean(r.Mailbox, 80), clean(r.DeviceID, 64), clean(r.DeviceType, 40), clean(r.DeviceModel, 40),
			clean(decision, 40), clean(r.Reason, 40), orDash(before), orDash(r.ExchangeAfter), orDash(r.Compliance))
	}
	tw.Flush()
	switch {
	case total == 0:
		fmt.Fprintln(stdout, "\nNo devices match (the list fills with the first sync).")
	case len(rows) < total:
		fmt.Fprintf(stdout, "\n%s of %s devices; --limit 0 lists all.\n", humanize.Num(len(rows)), humanize.Num(total))
	default:
		fmt.Fprintf(stdout, "\n%s devices\n", humanize.Num(total))
	}
	return exitOK
}

// clean makes a phone-supplied string safe for a terminal table: control,
// formatting and space characters other than ' ' (tabs would break the
// columns, bidi overrides reorder them) and invalid UTF-8 are escaped as in
// a Go string, and it is cut to limit characters.
func clean(s string, limit int) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == ' ' || unicode.IsGraphic(r) && !unicode.IsSpace(r) && !unicode.Is(unicode.Cf, r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
	}
	q := b.String()
	if r := []rune(q); len(r) > limit {
		q = string(r[:limit-1]) + "…"
	}
	if q == "" {
		return "-"
	}
	return q
}

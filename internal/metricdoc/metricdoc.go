package metricdoc

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
)

// Missing is the HELP text of a family that is not in Catalog.
const Missing = "Not described: add this family to internal/metricdoc's Catalog."

var byName = func() map[string]*Family {
	m := map[string]*Family{}
	for i := range Catalog {
		for j := range Catalog[i].Families {
			f := &Catalog[i].Families[j]
			if m[f.Name] != nil {
				panic("metricdoc: family " + f.Name + " listed twice")
			}
			m[f.Name] = f
		}
	}
	return m
}()

// Help returns the HELP text of a family, and whether Catalog has it.
func Help(family string) (string, bool) {
	if f := byName[family]; f != nil {
		return f.Help, true
	}
	return "", false
}

// helpEscaper escapes a HELP text as the Prometheus text format wants.
var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

// Fill copies a Prometheus text exposition from src to w, giving every
// "# HELP <family>" line without text the family's Help (or Missing). It
// returns the families it filled with Missing. Other lines pass unchanged.
func Fill(w io.Writer, src []byte) (missing []string, err error) {
	bw := bufio.NewWriter(w)
	for len(src) > 0 {
		line := src
		if i := bytes.IndexByte(src, '\n'); i >= 0 {
			line, src = src[:i+1], src[i+1:]
		} else {
			src = nil
		}
		rest, ok := bytes.CutPrefix(line, []byte("# HELP "))
		name := string(bytes.TrimRight(rest, "\r\n"))
		if !ok || strings.ContainsRune(name, ' ') {
			bw.Write(line)
			continue
		}
		help, known := Help(name)
		if !known {
			help = Missing
			missing = append(missing, name)
		}
		fmt.Fprintf(bw, "# HELP %s %s\n", name, helpEscaper.Replace(help))
	}
	return missing, bw.Flush()
}

var typeNames = map[string]string{"c": "counter", "g": "gauge", "h": "histogram", "s": "summary"}

// Markdown returns docs/metrics.md.
func Markdown() []byte {
	var b bytes.Buffer
	b.WriteString(header)
	for _, s := range Catalog {
		fmt.Fprintf(&b, "\n## %s\n\n", s.Title)
		b.WriteString("| Name | Type | Labels (values) | Meaning | Alert on |\n|---|---|---|---|---|\n")
		for _, f := range s.Families {
			labels, alert := f.Labels, f.Alert
			if labels == "" {
				labels = "—"
			}
			if alert == "" {
				alert = "—"
			}
			meaning := f.Help
			if f.Details != "" {
				meaning += " " + f.Details
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", f.Name, f.Type, cell(labels), cell(meaning), cell(alert))
		}
		if s.After != "" {
			b.WriteString("\n" + s.After)
		}
	}
	b.WriteString(footer)
	return b.Bytes()
}

// cell keeps a table cell on one row.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

const header = `# easconnector metrics

<!-- Generated from internal/metricdoc/catalog.go by ` + "`go generate ./internal/metricdoc`" + `; edit the catalog, not this file. -->

Every series easconnector exposes at ` + "`/metrics`" + ` (Prometheus text format, with
HELP and TYPE lines). The HELP line of each family is its "Meaning" below
without the details: what one series counts and in which unit. Each
component registers its own set; a component that is not configured (the
Graph source with ` + "`source = \"file\"`" + `, the notifier with ` + "`[notify] enabled = false`" + `)
exposes none of its series, and a series with labels appears once it has
a value to show (an error class, say). Label values are bounded: they come
from fixed lists in the code, never from a device, a user or a mailbox.

Ready-made rules: ` + "`deploy/prometheus/easconnector-alerts.yml`" + ` (runbook in
[operations.md](operations.md#alert-runbook)); dashboard:
` + "`deploy/grafana/easconnector-dashboard.json`" + `.

Types: **c** counter, **g** gauge, **h** histogram (Prometheus
` + "`_bucket`/`_sum`/`_count`; use `histogram_quantile`" + `), **s** summary.
`

const footer = `
## Useful queries

` + "```promql" + `
# minutes since the last successful sync, per kind
(time() - easconnector_sync_last_success_timestamp_seconds) / 60

# cmdlet latency p95 by cmdlet
histogram_quantile(0.95, sum by (cmdlet, le) (rate(easconnector_runspace_request_duration_seconds_bucket[15m])))

# Set-CASMailbox failure ratio over two hours
increase(easconnector_sync_mailbox_write_failures_total[2h])
  / clamp_min(increase(easconnector_runspace_request_duration_seconds_count{cmdlet="Set-CASMailbox"}[2h]), 1)

# list entries written per hour, by list and operation
sum by (list, op) (increase(easconnector_sync_list_entries_written_total[1h]))
` + "```" + `
`

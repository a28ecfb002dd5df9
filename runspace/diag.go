package runspace

import (
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Diagnostics are the lines a session's process prints outside the
// protocol: Exchange banners and warnings on stdout, errors on stderr. They
// are kept in a small ring and quoted in errors and debug logs; they never
// drive the protocol.

const (
	diagLines    = 32  // lines kept per session
	diagLineMax  = 400 // bytes kept per line
	diagQuoteMax = 6   // lines quoted in an error message
)

// diagRing is a bounded, concurrency-safe ring of diagnostic lines.
type diagRing struct {
	mu    sync.Mutex
	lines [diagLines]string
	next  int
	n     int
	// clixml is true inside a "#< CLIXML" block on stderr.
	clixml bool
}

// add records one line from stream ("stdout" or "stderr"). It returns the
// text kept (nothing for CLIXML noise) and whether it carries a throttling
// text.
func (r *diagRing) add(stream string, line string) (kept []string, throttle bool) {
	line = strings.TrimPrefix(strings.TrimRight(line, "\r\n"), "\ufeff")
	if stream == "stderr" {
		kept, throttle = r.filterCLIXML(line)
	} else if strings.TrimSpace(line) != "" {
		kept, throttle = []string{line}, isThrottleText(line)
	}
	for i, l := range kept {
		kept[i] = r.push(stream, l)
	}
	return kept, throttle
}

// filterCLIXML strips PowerShell's serialized stream records
// ("#< CLIXML" followed by <Objs …>…</Objs>), keeping only the text of
// error records.
func (r *diagRing) filterCLIXML(line string) (keep []string, throttle bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := strings.TrimSpace(strings.TrimPrefix(line, "\ufeff"))
	if strings.HasPrefix(t, "#< CLIXML") {
		r.clixml = true
		t = strings.TrimSpace(strings.TrimPrefix(t, "#< CLIXML"))
		if t == "" {
			return nil, false
		}
	}
	if !r.clixml && !strings.HasPrefix(t, "<Objs") {
		if t == "" {
			return nil, false
		}
		return []string{line}, isThrottleText(line)
	}
	for _, m := range clixmlErrorRe.FindAllStringSubmatch(t, -1) {
		msg := strings.TrimSpace(decodeCLIXMLString(m[1]))
		if msg != "" {
			keep = append(keep, msg)
			throttle = throttle || isThrottleText(msg)
		}
	}
	if strings.Contains(t, "</Objs>") {
		r.clixml = false
	}
	return keep, throttle
}

var (
	clixmlErrorRe  = regexp.MustCompile(`<S S="Error">([^<]*)</S>`)
	clixmlEscapeRe = regexp.MustCompile(`_x([0-9A-Fa-f]{4})_`)
	xmlEntities    = strings.NewReplacer("&lt;", "<", "&gt;", ">", "&quot;", `"`, "&apos;", "'", "&amp;", "&")
)

// decodeCLIXMLString undoes CLIXML's _xHHHH_ and XML escaping.
func decodeCLIXMLString(s string) string {
	s = clixmlEscapeRe.ReplaceAllStringFunc(s, func(m string) string {
		v, err := strconv.ParseUint(m[2:6], 16, 16)
		if err != nil {
			return m
		}
		if v == '\r' || v == '\n' {
			return " "
		}
		return string(rune(v))
	})
	return xmlEntities.Replace(s)
}

func (r *diagRing) push(stream, line string) string {
	line = sanitizeLine(line)
	if line == "" {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines[r.next] = stream + ": " + line
	r.next = (r.next + 1) % diagLines
	if r.n < diagLines {
		r.n++
	}
	return line
}

// sanitizeLine removes control characters and bounds the length.
func sanitizeLine(s string) string {
	if len(s) > diagLineMax {
		cut := diagLineMax
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s))
}

// tail returns up to n of the most recent lines, oldest first.
func (r *diagRing) tail(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	n = min(n, r.n)
	out := make([]string, 0, n)
	for i := r.n - n; i < r.n; i++ {
		start := (r.next - r.n + diagLines) % diagLines
		out = append(out, r.lines[(start+i)%diagLines])
	}
	return out
}

// suffix renders the recent lines for an error message ("" when none).
func (r *diagRing) suffix() string {
	t := r.tail(diagQuoteMax)
	if len(t) == 0 {
		return ""
	}
	return " [diagnostics: " + strings.Join(t, " | ") + "]"
}

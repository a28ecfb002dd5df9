package wsman

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Enumeration of the caller's shells (MS-WSMV 3.1.4.8.2; WS-Enumeration
// as DSP0226 8 profiles it), as Get-WSManInstance -Enumerate shell and
// pypsrp's RunspacePool.get_runspace_pools ask for it. The request and the
// answer's shape follow the Windows exchange recorded in pypsrp
// tests/tests_pypsrp/responses/test_psrp_disconnect_runspaces.yml:
// ResourceURI http://schemas.microsoft.com/wbem/wsman/1/windows/shell (every
// kind of shell; .../shell/cmd lists cmd shells only), a wsen:Enumerate with
// wsman:OptimizeEnumeration and wsman:MaxElements, answered by
// wsen:EnumerateResponse with an empty wsen:EnumerationContext, wsman:Items
// of rsp:Shell and wsman:EndOfSequence. Without OptimizeEnumeration, or when
// more shells remain than MaxElements (default 1, DSP0226 8.2.3) or the
// envelope holds, the items come from wsen:Pull.
//
// Only the authenticated user's shells are listed. A cmd shell is listed
// without a Name even when its Create sent one: the recorded Windows
// CreateResponse of a named cmd shell (test_winrs_extra_opts.yml) does not
// carry it, so clients must not rely on it. The enumeration context is
// stateless (the offset into the user's shells ordered by creation), so a
// shell that goes away between Pulls shifts the rest by one, which
// WS-Enumeration allows for a live collection.

const (
	nsEnumeration           = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
	actionEnumerate         = nsEnumeration + "/Enumerate"
	actionPull              = nsEnumeration + "/Pull"
	actionEnumerateResponse = nsEnumeration + "/EnumerateResponse"
	actionPullResponse      = nsEnumeration + "/PullResponse"
	resourceURIShells       = nsShell
	enumContextPrefix       = "uuid:exsim-enum-"
)

// enumerationBody is the parsed wsen:Enumerate or wsen:Pull.
type enumerationBody struct {
	optimize    bool
	maxElements int
	offset      int // Pull: from the context
	cmdOnly     bool
}

type xmlEnumerationEnvelope struct {
	Body struct {
		Enumerate []struct {
			Optimize    []struct{} `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd OptimizeEnumeration"`
			MaxElements []string   `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd MaxElements"`
			Filter      []struct{} `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd Filter"`
			EnumFilter  []struct{} `xml:"http://schemas.xmlsoap.org/ws/2004/09/enumeration Filter"`
		} `xml:"http://schemas.xmlsoap.org/ws/2004/09/enumeration Enumerate"`
		Pull []struct {
			Context     []string `xml:"http://schemas.xmlsoap.org/ws/2004/09/enumeration EnumerationContext"`
			MaxElements []string `xml:"http://schemas.xmlsoap.org/ws/2004/09/enumeration MaxElements"`
		} `xml:"http://schemas.xmlsoap.org/ws/2004/09/enumeration Pull"`
	} `xml:"http://www.w3.org/2003/05/soap-envelope Body"`
}

// enumerationHeader accepts the shell resources for Enumerate and Pull.
func (req *request) enumerationHeader(uri string) *Fault {
	req.resourceURI = uri
	if !strings.EqualFold(uri, resourceURIShells) && !strings.EqualFold(uri, resourceURICmd) {
		return faultResourceNotFound(uri)
	}
	return nil
}

// parseEnumeration reads the body of an Enumerate or Pull from the raw
// envelope (parseEnvelope has checked that it is one element).
func (req *request) parseEnumeration() *Fault {
	var env xmlEnumerationEnvelope
	if err := xml.Unmarshal(req.raw, &env); err != nil {
		return faultInvalidBody(fmt.Sprintf("XML: %v.", err))
	}
	eb := &enumerationBody{maxElements: 1, cmdOnly: strings.EqualFold(req.resourceURI, resourceURICmd)}
	maxElements := func(values []string) *Fault {
		v, f := single(values, "MaxElements")
		if f != nil || v == "" {
			return f
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return faultInvalidParameter(fmt.Sprintf("MaxElements %q is not a positive integer.", v))
		}
		eb.maxElements = n
		return nil
	}
	switch req.action {
	case actionEnumerate:
		if len(env.Body.Enumerate) != 1 {
			return faultInvalidBody("Enumerate needs a wsen:Enumerate body.")
		}
		e := env.Body.Enumerate[0]
		if len(e.Filter) > 0 || len(e.EnumFilter) > 0 {
			// MS-WSMV 3.1.4.8.2: the cmd shell resource answers a filter
			// with wsen:FilteringNotSupported; exsim filters nothing.
			return faultInvalidParameter("Filters are not supported when enumerating shells.")
		}
		eb.optimize = len(e.Optimize) > 0
		if f := maxElements(e.MaxElements); f != nil {
			return f
		}
	case actionPull:
		if len(env.Body.Pull) != 1 {
			return faultInvalidBody("Pull needs a wsen:Pull body.")
		}
		p := env.Body.Pull[0]
		ctx, f := single(p.Context, "EnumerationContext")
		if f != nil {
			return f
		}
		rest, ok := strings.CutPrefix(ctx, enumContextPrefix)
		off, err := strconv.Atoi(rest)
		if !ok || err != nil || off < 0 {
			return faultInvalidParameter(fmt.Sprintf("EnumerationContext %q is not valid.", ctx))
		}
		eb.offset = off
		if f := maxElements(p.MaxElements); f != nil {
			return f
		}
	}
	req.enumeration = eb
	return nil
}

// enumerate answers an Enumerate or Pull with the user's shells.
func (s *Server) enumerate(req *request, user string) ([]byte, error) {
	eb := req.enumeration
	now := time.Now()
	userKey := strings.ToLower(user)
	s.mu.Lock()
	var items [][]byte
	shells := make([]*shell, 0, len(s.shells))
	for _, sh := range s.shells {
		if sh.userKey == userKey && (!eb.cmdOnly || !sh.ps) {
			shells = append(shells, sh)
		}
	}
	slices.SortFunc(shells, func(a, b *shell) int {
		if c := a.created.Compare(b.created); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	for _, sh := range shells {
		items = append(items, marshalShellItem(sh, now, s.opts.IdleTimeout))
	}
	s.mu.Unlock()

	pull := req.action == actionPull
	start := min(eb.offset, len(items))
	next := start
	budget := s.maxEnvelope(req) - 2048
	if pull || eb.optimize {
		for next < len(items) && next-start < eb.maxElements && budget-len(items[next]) > 0 {
			budget -= len(items[next])
			next++
		}
	}
	end := next == len(items)

	var b bytes.Buffer
	action, element, itemsNS := actionEnumerateResponse, "EnumerateResponse", "w"
	if pull {
		action, element, itemsNS = actionPullResponse, "PullResponse", "n"
	}
	writeEnvelopeStart(&b, action, req.messageID)
	b.WriteString(`<n:` + element + ` xmlns:n="` + nsEnumeration + `"><n:EnumerationContext>`)
	if !end {
		b.WriteString(enumContextPrefix + strconv.Itoa(next))
	}
	b.WriteString(`</n:EnumerationContext>`)
	if next > start {
		b.WriteString(`<` + itemsNS + `:Items>`)
		for _, it := range items[start:next] {
			b.Write(it)
		}
		b.WriteString(`</` + itemsNS + `:Items>`)
	}
	if end {
		b.WriteString(`<` + itemsNS + `:EndOfSequence/>`)
	}
	b.WriteString(`</n:` + element + `>`)
	writeEnvelopeEnd(&b)
	return b.Bytes(), nil
}

// marshalShellItem is one rsp:Shell of an enumeration, with the fields in
// the order of the recorded Windows answer. s.mu must be held.
func marshalShellItem(sh *shell, now time.Time, idle time.Duration) []byte {
	var b bytes.Buffer
	uri, inputs, outputs := resourceURICmd, "stdin", "stdout stderr"
	if sh.ps {
		uri, inputs, outputs = sh.resourceURI, "stdin pr", "stdout"
	}
	b.WriteString(`<rsp:Shell xmlns:rsp="` + nsShell + `"><rsp:ShellId>` + sh.id + `</rsp:ShellId><rsp:ResourceUri>`)
	escape(&b, uri)
	b.WriteString(`</rsp:ResourceUri><rsp:Owner>`)
	escape(&b, sh.user)
	b.WriteString(`</rsp:Owner><rsp:ClientIP>`)
	escape(&b, sh.clientIP)
	b.WriteString(`</rsp:ClientIP>`)
	if sh.ps {
		b.WriteString(`<rsp:ProcessId>` + strconv.Itoa(processID) + `</rsp:ProcessId>`)
	}
	b.WriteString(`<rsp:IdleTimeOut>` + xsDuration(max(idle, 0)) + `</rsp:IdleTimeOut><rsp:InputStreams>` + inputs +
		`</rsp:InputStreams><rsp:OutputStreams>` + outputs + `</rsp:OutputStreams>`)
	if sh.ps {
		b.WriteString(`<rsp:MaxIdleTimeOut>PT2147483.647S</rsp:MaxIdleTimeOut><rsp:Locale>en-US</rsp:Locale>` +
			`<rsp:DataLocale>en-US</rsp:DataLocale><rsp:CompressionMode>NoCompression</rsp:CompressionMode>` +
			`<rsp:ProfileLoaded>Yes</rsp:ProfileLoaded><rsp:Encoding>UTF8</rsp:Encoding><rsp:BufferMode>Block</rsp:BufferMode>` +
			`<rsp:State>Connected</rsp:State>`)
	}
	b.WriteString(`<rsp:ShellRunTime>` + xsDayTime(now.Sub(sh.created)) + `</rsp:ShellRunTime><rsp:ShellInactivity>` +
		xsDayTime(now.Sub(sh.lastActivity)) + `</rsp:ShellInactivity></rsp:Shell>`)
	return b.Bytes()
}

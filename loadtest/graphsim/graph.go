package graphsim

import (
	"crypto/sha1"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/easconnector/easconnector/loadtest/population"
)

// deviceFields are the managedDevice properties graphsim serves, in Graph's
// names; a $select of anything else is a 400, as Graph answers an unknown
// property.
var deviceFields = []string{
	"id", "userId", "userPrincipalName", "emailAddress", "easDeviceId", "complianceState",
	"enrolledDateTime", "lastSyncDateTime", "operatingSystem", "osVersion", "model",
	"easActivated", "managementAgent",
}

var memberFields = []string{"id", "userPrincipalName", "mail", "displayName"}

// listing is one paged read, fixed at its first request: the data it pages
// over, the selected fields and the page size.
type listing struct {
	path     string // request path, for nextLinks
	n        int
	item     func(buf []byte, i int, field string) []byte
	sel      []string
	selParam string // $select as the client sent it, echoed in nextLinks
	top      int
	context  string // @odata.context
	linkLast bool   // nextLink after "value" (Intune) rather than before (directory)
	// typeOf, when set, gives each item's @odata.type: a directoryObject
	// collection names the derived type of every item.
	typeOf func(i int) string
	count  int // @odata.count to send; -1 sends none
}

// cursor is what a $skiptoken stands for.
type cursor struct {
	l       *listing
	offset  int
	expires time.Time
}

// graph wraps a Graph API handler with bearer-token checking and the
// injected API faults.
func (s *Server) graph(endpoint string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if msg := s.checkBearer(r.Header.Get("Authorization")); msg != "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"`)
			writeGraphError(w, r, http.StatusUnauthorized, "InvalidAuthenticationToken", msg)
			return
		}
		if status, retryAfter := s.apiFault(); status != 0 {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			code, msg := faultError(status, s.opts.ClientID, endpoint)
			writeGraphError(w, r, status, code, msg)
			return
		}
		h(w, r)
	}
}

// faultError is the error code and message Graph gives with status.
func faultError(status int, clientID, endpoint string) (code, msg string) {
	switch {
	case status == http.StatusTooManyRequests:
		return "TooManyRequests", "Too many requests from Identifier:" + clientID + " under category:throttle.intune." + endpoint + "."
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
	case status >= 500:
		return strings.ReplaceAll(http.StatusText(status), " ", ""), "The service is temporarily unavailable. Please retry later."
	}
	return strings.ReplaceAll(http.StatusText(status), " ", ""), "The request failed."
}

func (s *Server) checkBearer(auth string) string {
	if auth == "" {
		return "Access token is empty."
	}
	scheme, tok, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "Access token validation failure. Invalid audience."
	}
	s.mu.Lock()
	exp, found := s.tokens[tok]
	s.mu.Unlock()
	switch {
	case !found:
		return "Access token validation failure. Invalid signature."
	case time.Now().After(exp):
		return "Lifetime validation failed, the token is expired."
	}
	return ""
}

func (s *Server) handleDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if tok := q.Get("$skiptoken"); tok != "" {
		s.serveCursor(w, r, tok)
		return
	}
	if s.grantsNow().NoDevices {
		writeGraphError(w, r, http.StatusForbidden, "Forbidden", intuneForbidden(r))
		return
	}
	sel, top, ok := parseQuery(w, r, deviceFields, "microsoft.graph.managedDevice", s.opts.PageSize, maxDevicePage, false)
	if !ok {
		return
	}
	s.mu.Lock()
	v := s.ver
	v.shared = true
	s.mu.Unlock()
	devs := v.devices
	l := &listing{
		path: r.URL.Path, n: len(devs), sel: sel, selParam: q.Get("$select"), top: top, linkLast: true, count: -1,
		context: contextURL(r, "deviceManagement/managedDevices", q.Get("$select")),
		item: func(buf []byte, i int, field string) []byte {
			return appendDeviceField(buf, &devs[i], field)
		},
	}
	s.servePage(w, r, l, 0, "")
}

// handleMembers serves /groups/{id}/transitiveMembers: every nested
// member, users and groups alike, each with its @odata.type
// (api-reference/v1.0/api/group-list-transitivemembers.md in
// microsoftgraph/microsoft-graph-docs-contrib).
func (s *Server) handleMembers(w http.ResponseWriter, r *http.Request) {
	s.serveMembers(w, r, false)
}

// handleUserMembers serves the /microsoft.graph.user cast of
// transitiveMembers. Filtering on the OData type is an advanced query:
// Graph serves it only with the ConsistencyLevel: eventual header and the
// $count=true query string (group-list-transitivemembers.md, "Optional
// query parameters"; concepts/aad-advanced-queries.md). Without them it
// answers 400 Request_UnsupportedQuery; Microsoft publishes that error's
// text for operators (aad-advanced-queries.md, "Error handling for
// advanced queries on directory objects": "… is not supported because the
// required parameters might be missing. Try adding $count=true query
// parameter and ConsistencyLevel:eventual header. …"), and graphsim words
// the cast's the same way.
func (s *Server) handleUserMembers(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("$skiptoken") == "" &&
		(!strings.EqualFold(r.Header.Get("ConsistencyLevel"), "eventual") || !strings.EqualFold(r.URL.Query().Get("$count"), "true")) {
		writeGraphError(w, r, http.StatusBadRequest, "Request_UnsupportedQuery",
			"OData cast 'microsoft.graph.user' is not supported because the required parameters might be missing. "+
				"Try adding $count=true query parameter and ConsistencyLevel:eventual header. "+
				"Refer to https://aka.ms/graph-docs/advanced-queries for more information")
		return
	}
	s.serveMembers(w, r, true)
}

func (s *Server) serveMembers(w http.ResponseWriter, r *http.Request, cast bool) {
	q := r.URL.Query()
	if tok := q.Get("$skiptoken"); tok != "" {
		s.serveCursor(w, r, tok)
		return
	}
	grants := s.grantsNow()
	if grants.NoMembers {
		writeGraphError(w, r, http.StatusForbidden, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
		return
	}
	sel, top, ok := parseQuery(w, r, memberFields, "microsoft.graph.user", defMemberPage, maxMemberPage, cast)
	if !ok {
		return
	}
	id := r.PathValue("id")
	s.mu.Lock()
	all, found := s.groupsLocked()[strings.ToLower(id)]
	noIDs := s.f.noMemberIDs
	s.mu.Unlock()
	if !found {
		writeGraphError(w, r, http.StatusNotFound, "Request_ResourceNotFound",
			fmt.Sprintf("Resource '%s' does not exist or one of its queried reference-property objects are not present.", id))
		return
	}
	ms := all
	entity := "directoryObjects"
	if cast {
		ms = make([]member, 0, len(all))
		for _, m := range all {
			if m.typ == userType {
				ms = append(ms, m)
			}
		}
		entity = "users"
	}
	l := &listing{
		path: r.URL.Path, n: len(ms), sel: sel, selParam: q.Get("$select"), top: top, count: -1,
		context: contextURL(r, entity, q.Get("$select")),
		item: func(buf []byte, i int, field string) []byte {
			m := &ms[i]
			switch {
			case field == "id" && noIDs && m.typ == userType:
				return append(buf, "null"...)
			case field != "id" && grants.NoUsers && m.typ == userType:
				return append(buf, "null"...) // limited information: only @odata.type and id
			}
			return appendMemberField(buf, m, field)
		},
	}
	if cast {
		l.count = len(ms)
	} else {
		l.typeOf = func(i int) string { return ms[i].typ }
	}
	s.servePage(w, r, l, 0, "")
}

const (
	userType  = "#microsoft.graph.user"
	groupType = "#microsoft.graph.group"
)

// groupsLocked returns the current version's groups, building them on first
// use: a nested group first (security groups are nested in practice, and
// transitiveMembers lists the nested group itself besides its users), then
// the users. s.mu must be held.
func (s *Server) groupsLocked() map[string][]member {
	v := s.ver
	if v.groups != nil {
		return v.groups
	}
	p := v.pop
	build := func(g population.Group) []member {
		ms := make([]member, 0, len(g.Members)+1)
		ms = append(ms, member{typ: groupType, id: nestedGroupID(g.ID), displayName: g.Name + " (nested)"})
		for _, i := range g.Members {
			mb := p.Mailboxes[i]
			ms = append(ms, member{typ: userType, id: mb.EntraID, upn: mb.UPN, mail: mb.PrimarySmtp, displayName: mb.DisplayName})
		}
		return ms
	}
	v.groups = map[string][]member{
		strings.ToLower(p.Included.ID): build(p.Included),
		strings.ToLower(p.Excluded.ID): build(p.Excluded),
	}
	return v.groups
}

// nestedGroupID derives a stable object id for a group's nested group.
func nestedGroupID(group string) string {
	h := sha1.Sum([]byte("nested-group:" + strings.ToLower(group)))
	b := h[:16]
	b[6] = b[6]&0x0f | 0x50
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// intuneForbidden is Intune's answer to an app without
// DeviceManagementManagedDevices.Read.All: code Forbidden, and a message
// that is itself a JSON document (as recorded in mondoohq/cnspec#1708).
func intuneForbidden(r *http.Request) string {
	return "{\r\n  \"_version\": 3,\r\n  \"Message\": \"Application is not authorized to perform this operation. " +
		"Application must have one of the following scopes: DeviceManagementManagedDevices.Read.All, " +
		"DeviceManagementManagedDevices.ReadWrite.All - Operation ID (for customer support): 00000000-0000-0000-0000-000000000000 - " +
		"Activity ID: " + newGUID() + " - Url: https://fef.msua01.manage.microsoft.com/DeviceFE/StatelessDeviceFEService" +
		r.URL.Path + "\",\r\n  \"CustomApiErrorPhrase\": \"\",\r\n  \"RetryAfter\": null,\r\n  \"ErrorSourceService\": \"\",\r\n  \"HttpHeaders\": \"{}\"\r\n}"
}

// parseQuery validates $select and $top of a first page request; on failure
// it has answered 400 and returns ok false.
func parseQuery(w http.ResponseWriter, r *http.Request, fields []string, typ string, defTop, maxTop int, count bool) (sel []string, top int, ok bool) {
	q := r.URL.Query()
	for k := range q {
		if k != "$select" && k != "$top" && (k != "$count" || !count) {
			writeGraphError(w, r, http.StatusBadRequest, "BadRequest",
				fmt.Sprintf("Query option '%s' is not supported by graphsim.", k))
			return nil, 0, false
		}
	}
	sel = fields
	if v := q.Get("$select"); v != "" {
		sel = nil
		for f := range strings.SplitSeq(v, ",") {
			f = strings.TrimSpace(f)
			if !slices.Contains(fields, f) {
				writeGraphError(w, r, http.StatusBadRequest, "BadRequest",
					fmt.Sprintf("Could not find a property named '%s' on type '%s'.", f, typ))
				return nil, 0, false
			}
			if !slices.Contains(sel, f) {
				sel = append(sel, f)
			}
		}
	}
	top = defTop
	if v := q.Get("$top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeGraphError(w, r, http.StatusBadRequest, "BadRequest",
				fmt.Sprintf("Invalid value '%s' for $top query option found. The $top query option requires a non-negative integer value.", v))
			return nil, 0, false
		}
		top = min(n, maxTop)
	}
	return sel, top, true
}

func (s *Server) serveCursor(w http.ResponseWriter, r *http.Request, tok string) {
	s.mu.Lock()
	c, ok := s.cursors[tok]
	s.mu.Unlock()
	if !ok || time.Now().After(c.expires) || c.l.path != r.URL.Path {
		writeGraphError(w, r, http.StatusBadRequest, "BadRequest", "The $skiptoken is invalid or has expired.")
		return
	}
	s.servePage(w, r, c.l, c.offset, tok)
}

// newCursor registers a $skiptoken for l at offset; about once a minute it
// drops the expired ones.
func (s *Server) newCursor(l *listing, offset int) string {
	tok := randomToken(24)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.After(s.nextSweep) {
		for k, c := range s.cursors {
			if now.After(c.expires) {
				delete(s.cursors, k)
			}
		}
		s.nextSweep = now.Add(time.Minute)
	}
	s.cursors[tok] = cursor{l: l, offset: offset, expires: now.Add(s.opts.SessionTTL)}
	return tok
}

// servePage answers one page of l starting at offset; self is the
// $skiptoken the page was requested with ("" for the first page).
func (s *Server) servePage(w http.ResponseWriter, r *http.Request, l *listing, offset int, self string) {
	empty, truncate, loop := s.pageFault()
	end := offset
	if !empty {
		end = min(offset+l.top, l.n)
	}
	var next string
	switch {
	case loop && self != "":
		next = s.nextLink(r, l, self)
	case end < l.n:
		next = s.nextLink(r, l, s.newCursor(l, end))
	}

	buf := make([]byte, 0, 256+(end-offset)*64*len(l.sel))
	buf = append(buf, `{"@odata.context":`...)
	buf = appendString(buf, l.context)
	if l.count >= 0 {
		buf = append(buf, `,"@odata.count":`...)
		buf = strconv.AppendInt(buf, int64(l.count), 10)
	}
	if next != "" && !l.linkLast {
		buf = append(buf, `,"@odata.nextLink":`...)
		buf = appendString(buf, next)
	}
	buf = append(buf, `,"value":[`...)
	for i := offset; i < end; i++ {
		if i > offset {
			buf = append(buf, ',')
		}
		buf = append(buf, '{')
		if l.typeOf != nil {
			buf = append(buf, `"@odata.type":`...)
			buf = appendString(buf, l.typeOf(i))
			if len(l.sel) > 0 {
				buf = append(buf, ',')
			}
		}
		for j, f := range l.sel {
			if j > 0 {
				buf = append(buf, ',')
			}
			buf = appendString(buf, f)
			buf = append(buf, ':')
			buf = l.item(buf, i, f)
		}
		buf = append(buf, '}')
	}
	buf = append(buf, ']')
	if next != "" && l.linkLast {
		buf = append(buf, `,"@odata.nextLink":`...)
		buf = appendString(buf, next)
	}
	buf = append(buf, '}')
	if truncate {
		buf = buf[:len(buf)/2]
	}
	h := w.Header()
	h.Set("Content-Type", "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8")
	h.Set("request-id", newGUID())
	if id := r.Header.Get("client-request-id"); id != "" {
		h.Set("client-request-id", id)
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf)
}

func (s *Server) nextLink(r *http.Request, l *listing, tok string) string {
	var b strings.Builder
	b.WriteString(baseURL(r))
	b.WriteString(l.path)
	b.WriteByte('?')
	if l.selParam != "" {
		b.WriteString("$select=")
		b.WriteString(l.selParam)
		b.WriteByte('&')
	}
	fmt.Fprintf(&b, "$top=%d&$skiptoken=%s", l.top, tok)
	return b.String()
}

func baseURL(r *http.Request) string {
	if r.TLS != nil {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

func contextURL(r *http.Request, entity, sel string) string {
	u := baseURL(r) + "/v1.0/$metadata#" + entity
	if sel != "" {
		u += "(" + sel + ")"
	}
	return u
}

func appendMemberField(buf []byte, m *member, field string) []byte {
	str := func(v string) []byte {
		if v == "" {
			return append(buf, "null"...)
		}
		return appendString(buf, v)
	}
	switch field {
	case "id":
		return appendString(buf, m.id)
	case "userPrincipalName":
		return str(m.upn)
	case "mail":
		return str(m.mail)
	case "displayName":
		return appendString(buf, m.displayName)
	}
	return append(buf, "null"...)
}

func appendDeviceField(buf []byte, d *population.MDMRecord, field string) []byte {
	switch field {
	case "id":
		return appendString(buf, d.ID)
	case "userId":
		if d.UserID == "" {
			return append(buf, "null"...)
		}
		return appendString(buf, d.UserID)
	case "userPrincipalName":
		return appendString(buf, d.UserPrincipalName)
	case "emailAddress":
		return appendString(buf, d.Email)
	case "easDeviceId":
		return appendString(buf, d.EASDeviceID)
	case "complianceState":
		return appendString(buf, d.ComplianceState)
	case "enrolledDateTime":
		return appendString(buf, graphTime(d.EnrolledAt))
	case "lastSyncDateTime":
		return appendString(buf, graphTime(d.LastSyncAt))
	case "operatingSystem":
		return appendString(buf, d.OperatingSystem)
	case "osVersion":
		return appendString(buf, d.OSVersion)
	case "model":
		return appendString(buf, d.Model)
	case "easActivated":
		return append(buf, "true"...)
	case "managementAgent":
		return appendString(buf, "mdm")
	}
	return append(buf, "null"...)
}

// graphTime formats t as Graph does; the zero time is Graph's
// "0001-01-01T00:00:00Z".
func graphTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05Z")
}

// appendString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				buf = append(buf, '\\', c)
			case c < 0x20:
				buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				buf = append(buf, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			buf = append(buf, `\ufffd`...)
		} else {
			buf = append(buf, s[i:i+n]...)
		}
		i += n
	}
	return append(buf, '"')
}

// writeGraphError answers with Graph's error shape.
func writeGraphError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	reqID := newGUID()
	buf := append([]byte(nil), `{"error":{"code":`...)
	buf = appendString(buf, code)
	buf = append(buf, `,"message":`...)
	buf = appendString(buf, msg)
	buf = append(buf, `,"innerError":{"date":`...)
	buf = appendString(buf, time.Now().UTC().Format("2006-01-02T15:04:05"))
	buf = append(buf, `,"request-id":`...)
	buf = appendString(buf, reqID)
	buf = append(buf, `,"client-request-id":`...)
	buf = appendString(buf, r.Header.Get("client-request-id"))
	buf = append(buf, "}}}"...)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("request-id", reqID)
	w.WriteHeader(status)
	_, _ = w.Write(buf)
}

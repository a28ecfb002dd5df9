package server

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// searchParam checks the device search: a mailbox address, UPN, display
// name or DeviceId.
func searchParam(q url.Values) (string, error) {
	v := strings.TrimSpace(q.Get("q"))
	switch {
	case v == "":
		return "", fmt.Errorf("parameter q: empty; want a mailbox address, UPN, display name or DeviceId")
	case len(v) > maxUserLength || strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return "", fmt.Errorf("parameter q: want at most %d characters without control characters", maxUserLength)
	}
	return v, nil
}

// handleStory is GET /api/v1/device?q=…: the devices the search matches,
// each with its full story.
func (s *Server) handleStory(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "q")
	var search string
	if err == nil {
		search, err = searchParam(q)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	ctx, cancel := s.backendCtx(r)
	defer cancel()
	stories, err := s.opts.Backend.DeviceStories(ctx, search, storyLimit)
	if err != nil {
		s.writeBackendError(w, r, "search devices", err)
		return
	}
	if stories == nil {
		stories = []DeviceStory{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"query": search, "devices": stories})
}

// storyData is what the device page's template sees.
type storyData struct {
	Nonce, Version, Query, Error, DefaultMeans string
	Stories                                    []storyView
	Searched                                   bool
}

type storyView struct {
	DeviceStory
	MDMSeen timeCell
	Writes  []changeRow
	Notices []noticeRow
}

type noticeRow struct {
	Notice
	At timeCell
}

// handleDevicePage is GET /device?q=…: the search form and each matching
// device's story, server-rendered.
func (s *Server) handleDevicePage(w http.ResponseWriter, r *http.Request) {
	if _, res := s.authenticate(r, true); res != authOK {
		s.challenge(w, res)
		return
	}
	d := &storyData{Nonce: nonce(), Version: s.opts.Version}
	q, err := query(r, "q")
	if err == nil && q.Has("q") {
		d.Searched = true
		d.Query, err = searchParam(q)
	}
	code := http.StatusOK
	if err != nil {
		d.Error, code = err.Error(), http.StatusBadRequest
	}
	ctx, cancel := s.backendCtx(r)
	defer cancel()
	d.DefaultMeans = s.status(ctx).DefaultMeans
	if d.Searched && d.Error == "" {
		stories, err := s.opts.Backend.DeviceStories(ctx, d.Query, storyLimit)
		if err != nil {
			d.Error, code = "search devices: "+err.Error(), http.StatusInternalServerError
		}
		now := time.Now()
		for _, st := range stories {
			v := storyView{DeviceStory: st, MDMSeen: s.timeCell(st.MDMLastSync, now)}
			for _, c := range st.Writes {
				v.Writes = append(v.Writes, changeRow{Change: c, At: s.timeCell(c.Time, now)})
			}
			for _, n := range st.Notices {
				v.Notices = append(v.Notices, noticeRow{Notice: n, At: s.timeCell(n.Sent, now)})
			}
			d.Stories = append(d.Stories, v)
		}
	}
	s.renderHTML(w, "device", code, d.Nonce, d)
}

// glossaryData is what the glossary page's template sees.
type glossaryData struct {
	Nonce, Version, DefaultMeans string
	Groups                       []TermGroup
}

// handleGlossary is GET /glossary: every decision, reason, compliance value
// and Exchange state, with what Default means now. It holds no personal
// data, so it needs no token.
func (s *Server) handleGlossary(w http.ResponseWriter, r *http.Request) {
	if !noParams(w, r) {
		return
	}
	ctx, cancel := s.backendCtx(r)
	defer cancel()
	d := &glossaryData{Nonce: nonce(), Version: s.opts.Version, DefaultMeans: s.status(ctx).DefaultMeans, Groups: Glossary}
	s.renderHTML(w, "glossary", http.StatusOK, d.Nonce, d)
}

// renderHTML executes one of the page templates with the page's headers.
func (s *Server) renderHTML(w http.ResponseWriter, name string, code int, nonce string, data any) {
	var buf bytes.Buffer
	if err := s.page.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		s.log.Error("render "+name+" page", "err", err)
		writeError(w, http.StatusInternalServerError, "render %s page: %v", name, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+nonce+"'; script-src 'nonce-"+nonce+
		"'; connect-src 'self'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

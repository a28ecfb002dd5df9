package notify

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	texttemplate "text/template"
	"time"
)

//go:embed templates/*.tmpl
var defaultTemplates embed.FS

// Template file names. A file of that name in Options.TemplatesDir replaces
// the shipped default (see the templates directory of this package).
const (
	NoticeSubjectTemplate = "notice.subject.tmpl" // text/template, one line
	NoticeTextTemplate    = "notice.text.tmpl"    // text/template
	NoticeHTMLTemplate    = "notice.html.tmpl"    // html/template
	DigestTextTemplate    = "digest.text.tmpl"    // text/template
)

// NoticeData is what the notice templates see. Every string has been
// cleaned (no control or formatting characters, length-capped); the HTML
// template escapes them as well.
type NoticeData struct {
	Subject      string // the rendered subject (HTML template only)
	Organization string
	Contact      string // who to contact, from Options.Contact
	EnrollURL    string
	UserName     string // display name, or the mailbox when unknown
	Mailbox      string
	DeviceID     string
	DeviceType   string
	DeviceModel  string
	State        State
	Blocked      bool
	Quarantined  bool
	Reason       string // the decision reason code, e.g. NotCompliant
	ReasonText   string // the reason in plain words
	SyncID       string
	Time         time.Time
	TimeText     string // Time in Options.Location, e.g. "Mon, 2 Jan 2026 15:04 CET"
}

// DigestData is what the digest template sees.
type DigestData struct {
	Subject      string
	Lines        []string
	Organization string
	Time         time.Time
	TimeText     string
}

type templates struct {
	subject *texttemplate.Template
	text    *texttemplate.Template
	html    *htmltemplate.Template
	digest  *texttemplate.Template
}

// loadTemplates parses the templates from dir, falling back to the shipped
// defaults for files that are not there (dir "" uses the defaults only).
func loadTemplates(dir string) (*templates, error) {
	read := func(name string) (string, []byte, error) {
		if dir != "" {
			p := filepath.Join(dir, name)
			b, err := os.ReadFile(p)
			if err == nil {
				return p, b, nil
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return p, nil, fmt.Errorf("read template %s: %w", p, err)
			}
		}
		b, err := defaultTemplates.ReadFile("templates/" + name)
		return "default " + name, b, err
	}
	var t templates
	var err error
	parseText := func(name string) *texttemplate.Template {
		if err != nil {
			return nil
		}
		var src string
		var b []byte
		if src, b, err = read(name); err != nil {
			return nil
		}
		var tt *texttemplate.Template
		if tt, err = texttemplate.New(name).Option("missingkey=error").Parse(string(b)); err != nil {
			err = fmt.Errorf("parse template %s: %w", src, err)
		}
		return tt
	}
	t.subject = parseText(NoticeSubjectTemplate)
	t.text = parseText(NoticeTextTemplate)
	t.digest = parseText(DigestTextTemplate)
	if err != nil {
		return nil, err
	}
	src, b, err := read(NoticeHTMLTemplate)
	if err != nil {
		return nil, err
	}
	if t.html, err = htmltemplate.New(NoticeHTMLTemplate).Option("missingkey=error").Parse(string(b)); err != nil {
		return nil, fmt.Errorf("parse template %s: %w", src, err)
	}
	return &t, nil
}

// renderNotice returns the subject, text and HTML of a notice.
func (t *templates) renderNotice(d *NoticeData) (subject, text, html string, err error) {
	var b bytes.Buffer
	if err := t.subject.Execute(&b, d); err != nil {
		return "", "", "", fmt.Errorf("template %s: %w", NoticeSubjectTemplate, err)
	}
	subject = strings.TrimSpace(b.String())
	if strings.ContainsAny(subject, "\r\n") {
		return "", "", "", fmt.Errorf("template %s: the subject must be one line, got %q", NoticeSubjectTemplate, subject)
	}
	if subject == "" {
		return "", "", "", fmt.Errorf("template %s: empty subject", NoticeSubjectTemplate)
	}
	d.Subject = subject
	b.Reset()
	if err := t.text.Execute(&b, d); err != nil {
		return "", "", "", fmt.Errorf("template %s: %w", NoticeTextTemplate, err)
	}
	text = b.String()
	b.Reset()
	if err := t.html.Execute(&b, d); err != nil {
		return "", "", "", fmt.Errorf("template %s: %w", NoticeHTMLTemplate, err)
	}
	return subject, text, b.String(), nil
}

func (t *templates) renderDigest(d *DigestData) (string, error) {
	var b bytes.Buffer
	if err := t.digest.Execute(&b, d); err != nil {
		return "", fmt.Errorf("template %s: %w", DigestTextTemplate, err)
	}
	return b.String(), nil
}

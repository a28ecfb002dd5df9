package notify

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"strings"
	"time"
)

// message is one mail: its envelope and what buildMessage needs for the
// header and body.
type message struct {
	envFrom string   // MAIL FROM
	envTo   []string // RCPT TO

	from    string   // From header value (formatted)
	to      []string // To header values (formatted)
	subject string   // raw; encoded by encodeHeader
	date    time.Time
	id      string // Message-ID without angle brackets
	text    string
	html    string // empty: a text/plain message
}

// newMessageID returns a globally unique Message-ID for domain.
func newMessageID(domain string, now time.Time) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%d.%s@%s", now.UnixNano(), hex.EncodeToString(b[:]), domain)
}

// build returns the message in RFC 5322 form with CRLF line ends: a
// multipart/alternative of text and HTML (text/plain alone when html is
// empty), UTF-8, quoted-printable. Auto-Submitted and
// X-Auto-Response-Suppress keep out-of-office and other robots from
// answering.
func (m *message) build() ([]byte, error) {
	subject, err := encodeHeader("Subject", m.subject)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	hdr := func(name, value string) error {
		if strings.ContainsAny(value, "\r\n") && !foldedOnly(value) {
			return fmt.Errorf("%s header: line break in %q", name, value)
		}
		buf.WriteString(name)
		buf.WriteString(": ")
		buf.WriteString(value)
		buf.WriteString("\r\n")
		return nil
	}
	for _, h := range [][2]string{
		{"Date", m.date.Format(time.RFC1123Z)},
		{"Message-ID", "<" + m.id + ">"},
		{"From", m.from},
		{"To", strings.Join(m.to, ", ")},
		{"Subject", subject},
		{"MIME-Version", "1.0"},
		{"Auto-Submitted", "auto-generated"},
		{"X-Auto-Response-Suppress", "All"},
	} {
		if err := hdr(h[0], h[1]); err != nil {
			return nil, err
		}
	}
	if m.html == "" {
		_ = hdr("Content-Type", "text/plain; charset=utf-8")
		_ = hdr("Content-Transfer-Encoding", "quoted-printable")
		buf.WriteString("\r\n")
		if err := writeQP(&buf, m.text); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	mw := multipart.NewWriter(&buf)
	_ = hdr("Content-Type", `multipart/alternative; boundary="`+mw.Boundary()+`"`)
	buf.WriteString("\r\n")
	for _, p := range []struct{ ctype, body string }{
		{"text/plain; charset=utf-8", m.text},
		{"text/html; charset=utf-8", m.html},
	} {
		w, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {p.ctype},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		if err != nil {
			return nil, err
		}
		if err := writeQP(w, p.body); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	buf.WriteString("\r\n")
	return buf.Bytes(), nil
}

// foldedOnly reports whether every line break in v is a fold (CRLF then
// white space), as encodeHeader produces.
func foldedOnly(v string) bool {
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\r':
			if i+2 >= len(v) || v[i+1] != '\n' || (v[i+2] != ' ' && v[i+2] != '\t') {
				return false
			}
			i++
		case '\n':
			return false
		}
	}
	return true
}

func writeQP(w interface{ Write([]byte) (int, error) }, s string) error {
	qp := quotedprintable.NewWriter(w)
	if _, err := qp.Write([]byte(s)); err != nil {
		return err
	}
	return qp.Close()
}

// Package mailsink is an SMTP server on loopback that accepts every
// message, counts it and keeps it as an .eml file, so that tests and the
// demo can read the mails the connector sends. It is a simulator: nothing
// in the product imports it.
//
// Start it with Start, read Dir, Port and Count from any goroutine, and
// stop it with Close.
package mailsink

import (
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// MaxKept bounds the messages kept on disk; all are counted.
const MaxKept = 10_000

// maxMessage bounds one message.
const maxMessage = 1 << 20

// Sink is a running SMTP server. It is safe for concurrent use.
type Sink struct {
	dir  string
	port int
	srv  *smtp.Server
	n    atomic.Int64
	wg   sync.WaitGroup
}

// Start listens on a free loopback port and keeps messages in dir
// (created if needed) as NNNNN.eml, the envelope in X-Envelope-From and
// X-Envelope-To headers.
func Start(dir string) (*Sink, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("mail sink %s: %w", dir, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("mail sink: %w", err)
	}
	m := &Sink{dir: dir, port: ln.Addr().(*net.TCPAddr).Port}
	m.srv = smtp.NewServer(backend{m})
	m.srv.Domain = "mail.demo.invalid"
	m.srv.ReadTimeout, m.srv.WriteTimeout = time.Minute, time.Minute
	m.srv.MaxMessageBytes = maxMessage
	m.srv.MaxRecipients = 100
	m.srv.ErrorLog = log.New(io.Discard, "", 0)
	m.wg.Go(func() { _ = m.srv.Serve(ln) })
	return m, nil
}

// Dir is where the messages are kept.
func (m *Sink) Dir() string { return m.dir }

// Port is the loopback port the server listens on.
func (m *Sink) Port() int { return m.port }

// Count is the number of messages accepted so far.
func (m *Sink) Count() int { return int(m.n.Load()) }

// Close stops the server and waits for it.
func (m *Sink) Close() {
	m.srv.Close()
	m.wg.Wait()
}

type backend struct{ m *Sink }

// NewSession implements smtp.Backend.
func (b backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{m: b.m}, nil }

type session struct {
	m    *Sink
	from string
	to   []string
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	b, err := io.ReadAll(io.LimitReader(r, maxMessage))
	if err != nil {
		return err
	}
	n := s.m.n.Add(1)
	if n > MaxKept {
		return nil
	}
	name := filepath.Join(s.m.dir, fmt.Sprintf("%05d.eml", n))
	hdr := fmt.Sprintf("X-Envelope-From: %s\r\nX-Envelope-To: %v\r\n", s.from, s.to)
	return os.WriteFile(name, append([]byte(hdr), b...), 0o600)
}

func (s *session) Reset() { s.from, s.to = "", nil }

func (s *session) Logout() error { return nil }

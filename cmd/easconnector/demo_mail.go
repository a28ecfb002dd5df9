package main

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

// maxDemoMails bounds the messages the demo keeps on disk; all are counted.
const maxDemoMails = 10_000

// mailSink is the demo's SMTP server on loopback: it accepts every
// message, counts it and keeps it as an .eml file, so that the mails users
// would get can be read.
type mailSink struct {
	dir  string
	port int
	srv  *smtp.Server
	n    atomic.Int64
	wg   sync.WaitGroup
}

func startMailSink(dir string) (*mailSink, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := &mailSink{dir: dir, port: ln.Addr().(*net.TCPAddr).Port}
	m.srv = smtp.NewServer(m)
	m.srv.Domain = "mail.demo.invalid"
	m.srv.ReadTimeout, m.srv.WriteTimeout = time.Minute, time.Minute
	m.srv.MaxMessageBytes = 1 << 20
	m.srv.MaxRecipients = 100
	m.srv.ErrorLog = log.New(io.Discard, "", 0)
	m.wg.Go(func() { _ = m.srv.Serve(ln) })
	return m, nil
}

func (m *mailSink) count() int { return int(m.n.Load()) }

func (m *mailSink) close() {
	m.srv.Close()
	m.wg.Wait()
}

// NewSession implements smtp.Backend.
func (m *mailSink) NewSession(*smtp.Conn) (smtp.Session, error) { return &mailSession{m: m}, nil }

type mailSession struct {
	m    *mailSink
	from string
	to   []string
}

func (s *mailSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return err
	}
	n := s.m.n.Add(1)
	if n > maxDemoMails {
		return nil
	}
	name := filepath.Join(s.m.dir, fmt.Sprintf("%05d.eml", n))
	hdr := fmt.Sprintf("X-Envelope-From: %s\r\nX-Envelope-To: %v\r\n", s.from, s.to)
	return os.WriteFile(name, append([]byte(hdr), b...), 0o600)
}

func (s *mailSession) Reset() {
	s.from, s.to = "", nil
}

func (s *mailSession) Logout() error { return nil }

package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"html"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"github.com/emersion/go-smtp"

	"github.com/easconnector/easconnector/internal/secret"
)

const enrollURL = "https://portal.manage.example.com/enroll?src=mail"

// options returns Options for a notifier that sends to ts in plain text.
func options(ts *testServer, store SentStore) Options {
	return Options{
		SMTP:         SMTPOptions{Host: ts.host, Port: ts.port, Security: SecurityNone, Timeout: guard, LocalName: "connector.test"},
		From:         "IT Service Desk <it@example.com>",
		EnrollURL:    enrollURL,
		Contact:      "the IT service desk, +1 555 0100",
		Organization: "Contoso",
		Store:        store,
		RetryMin:     time.Millisecond,
		RetryMax:     4 * time.Millisecond,
		Location:     time.UTC,
	}
}

// runNotifier starts n.Run and stops it at cleanup (or when the returned
// stop is called), checking that Run returns.
func runNotifier(t *testing.T, n *Notifier) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run() = %v", err)
				}
			case <-time.After(guard):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newNotifier(t *testing.T, opts Options) *Notifier {
	t.Helper()
	n, err := New(opts)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	return n
}

func notice(to, device string, st State) Notice {
	return Notice{To: to, UserName: "Anna Müller", DeviceID: device, DeviceType: "iPhone", DeviceModel: "iPhone 15",
		State: st, Reason: "NotCompliant", SyncID: "20260610T030000Z-00c0ffee", Time: time.Date(2026, 6, 10, 3, 4, 0, 0, time.UTC)}
}

// parsed is a received message taken apart.
type parsed struct {
	raw    string
	msg    *mail.Message
	header mail.Header
	text   string
	html   string
	parts  []string // Content-Type of each part
}

func parse(t *testing.T, data []byte) parsed {
	t.Helper()
	p := parsed{raw: string(data)}
	for i, line := range strings.Split(p.raw, "\r\n") {
		if len(line) > 998 {
			t.Errorf("line %d is %d characters long", i+1, len(line))
		}
		if strings.ContainsAny(line, "\r\n") {
			t.Errorf("line %d has a bare CR or LF: %q", i+1, line)
		}
	}
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("mail.ReadMessage() error = %v\n%s", err, data)
	}
	p.msg, p.header = m, m.Header
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type %q: %v", m.Header.Get("Content-Type"), err)
	}
	decode := func(cte string, r io.Reader) string {
		if cte != "quoted-printable" {
			t.Errorf("Content-Transfer-Encoding = %q, want quoted-printable", cte)
		}
		b, err := io.ReadAll(quotedprintable.NewReader(r))
		if err != nil {
			t.Fatalf("decode quoted-printable: %v", err)
		}
		return string(b)
	}
	if mt == "text/plain" {
		p.text = decode(m.Header.Get("Content-Transfer-Encoding"), m.Body)
		p.parts = []string{m.Header.Get("Content-Type")}
		return p
	}
	if mt != "multipart/alternative" || params["boundary"] == "" {
		t.Fatalf("Content-Type = %q, want multipart/alternative with a boundary", m.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		part, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("next part: %v", err)
		}
		ct := part.Header.Get("Content-Type")
		p.parts = append(p.parts, ct)
		body := decode(part.Header.Get("Content-Transfer-Encoding"), part)
		switch ct {
		case "text/plain; charset=utf-8":
			p.text = body
		case "text/html; charset=utf-8":
			p.html = body
		default:
			t.Errorf("unexpected part %q", ct)
		}
	}
	return p
}

func TestNoticeMessage(t *testing.T) {
	ts := newTestServer(t, serverConfig{})
	n := newNotifier(t, options(ts, NewMemoryStore()))
	runNotifier(t, n)
	if ok, err := n.Enqueue(notice("anna.mueller@example.com", "ApplDNQXYZ0123", StateBlocked)); !ok || err != nil {
		t.Fatalf("Enqueue() = %v, %v; want true, nil", ok, err)
	}
	r := ts.wait()
	if r.from != "it@example.com" || len(r.to) != 1 || r.to[0] != "anna.mueller@example.com" {
		t.Errorf("envelope = %s → %v, want it@example.com → [anna.mueller@example.com]", r.from, r.to)
	}
	p := parse(t, r.data)

	if d, err := p.header.Date(); err != nil || !d.Equal(d.Truncate(time.Second)) || time.Since(d) > time.Minute {
		t.Errorf("Date = %q (%v), want the current time", p.header.Get("Date"), err)
	}
	if id := p.header.Get("Message-ID"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@example.com>") {
		t.Errorf("Message-ID = %q, want <…@example.com>", id)
	}
	if from, err := p.header.AddressList("From"); err != nil || len(from) != 1 || from[0].Name != "IT Service Desk" || from[0].Address != "it@example.com" {
		t.Errorf("From = %q (%v)", p.header.Get("From"), err)
	}
	if to, err := p.header.AddressList("To"); err != nil || len(to) != 1 || to[0].Name != "Anna Müller" || to[0].Address != "anna.mueller@example.com" {
		t.Errorf("To = %q (%v), want Anna Müller <anna.mueller@example.com>", p.header.Get("To"), err)
	}
	if !strings.Contains(p.raw, "To: =?utf-8?q?Anna_M=C3=BCller?= <anna.mueller@example.com>\r\n") {
		t.Errorf("To header not RFC 2047-encoded:\n%s", p.raw[:strings.Index(p.raw, "\r\n\r\n")])
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(p.header.Get("Subject"))
	if want := "Your iPhone 15 can no longer sync Contoso mail"; err != nil || subject != want {
		t.Errorf("Subject = %q (%v), want %q", subject, err, want)
	}
	for h, want := range map[string]string{"MIME-Version": "1.0", "Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"} {
		if got := p.header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	if len(p.parts) != 2 {
		t.Fatalf("parts = %v, want text and html", p.parts)
	}
	for name, body := range map[string]string{"text": p.text, "html": html.UnescapeString(p.html)} {
		for _, want := range []string{DefaultReasonTexts["NotCompliant"][:40], "ApplDNQXYZ0123", "iPhone 15", "the IT service desk, +1 555 0100", "Wed, 10 Jun 2026 03:04 UTC", "20260610T030000Z-00c0ffee"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s part lacks %q:\n%s", name, want, body)
			}
		}
	}
	if !strings.Contains(p.text, enrollURL) {
		t.Errorf("text part lacks the enrolment link:\n%s", p.text)
	}
	if !strings.Contains(p.html, `href="https://portal.manage.example.com/enroll?src=mail"`) {
		t.Errorf("html part lacks the enrolment link:\n%s", p.html)
	}
	if !strings.Contains(p.text, "has been blocked") || !strings.Contains(p.html, "has been blocked") {
		t.Error("message does not say the device was blocked")
	}
}

func TestQuarantineNoticeAndEncodedSubject(t *testing.T) {
	ts := newTestServer(t, serverConfig{})
	opts := options(ts, NewMemoryStore())
	opts.Organization = "Müller & Söhne"
	n := newNotifier(t, opts)
	runNotifier(t, n)
	nt := notice("anna@example.com", "Dev1", StateQuarantined)
	nt.Reason = "NotEnrolled"
	n.Enqueue(nt)
	p := parse(t, ts.wait().data)
	raw := p.header.Get("Subject")
	if !strings.HasPrefix(raw, "=?utf-8?q?") {
		t.Errorf("Subject = %q, want RFC 2047 encoded-words", raw)
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(raw)
	if want := "Your iPhone 15 is waiting for access to Müller & Söhne mail"; err != nil || subject != want {
		t.Errorf("decoded Subject = %q (%v), want %q", subject, err, want)
	}
	if !strings.Contains(p.text, "quarantine") || !strings.Contains(p.text, DefaultReasonTexts["NotEnrolled"]) {
		t.Errorf("text part does not explain the quarantine:\n%s", p.text)
	}
	if !strings.Contains(p.html, "Müller &amp; Söhne") {
		t.Errorf("html part does not escape the organization:\n%s", p.html)
	}
}

func TestHostileDeviceStrings(t *testing.T) {
	ts := newTestServer(t, serverConfig{})
	n := newNotifier(t, options(ts, NewMemoryStore()))
	runNotifier(t, n)
	nt := notice("victim@example.com", "Dev\r\nBcc: a@evil.example", StateBlocked)
	nt.DeviceModel = "Pixel\r\nBcc: spy@evil.example\r\n\r\n<script>alert(1)</script>"
	nt.DeviceType = "Android\u202e<img src=x onerror=alert(1)>\x00\x1b[31m"
	nt.UserName = "Eve\r\nX-Injected: 1"
	if ok, err := n.Enqueue(nt); !ok || err != nil {
		t.Fatalf("Enqueue() = %v, %v", ok, err)
	}
	r := ts.wait()
	if len(r.to) != 1 || r.to[0] != "victim@example.com" {
		t.Errorf("recipients = %v, want only victim@example.com", r.to)
	}
	p := parse(t, r.data)
	for _, h := range []string{"Bcc", "X-Injected"} {
		if v, ok := p.header[h]; ok {
			t.Errorf("injected header %s: %q", h, v)
		}
	}
	head := p.raw[:strings.Index(p.raw, "\r\n\r\n")]
	if strings.Contains(strings.ToLower(head), "\r\nbcc:") || strings.Contains(head, "\r\nX-Injected") {
		t.Errorf("header block has an injected line:\n%s", head)
	}
	for _, bad := range []string{"<script", "<img", "\u202e"} {
		if strings.Contains(p.html, bad) {
			t.Errorf("html part contains %q:\n%s", bad, p.html)
		}
	}
	if !strings.Contains(p.html, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("html part does not show the escaped model:\n%s", p.html)
	}
	for i, r := range p.text {
		if unicode.Is(unicode.Cc, r) && r != '\r' && r != '\n' || unicode.Is(unicode.Cf, r) {
			t.Errorf("text part has control character %U at %d", r, i)
		}
	}
	if !strings.Contains(p.text, "Pixel Bcc: spy@evil.example <script>alert(1)</script>") {
		t.Errorf("text part does not show the cleaned model:\n%s", p.text)
	}
	for _, line := range strings.Split(p.text, "\r\n") {
		if strings.HasPrefix(line, "Bcc:") {
			t.Errorf("text part has a line that starts a header: %q", line)
		}
	}
}

func TestOnceAcrossRestart(t *testing.T) {
	ts := newTestServer(t, serverConfig{})
	path := filepath.Join(t.TempDir(), "notified.json")
	store, err := OpenFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	n := newNotifier(t, options(ts, store))
	stop := runNotifier(t, n)
	nt := notice("Anna@Example.com", "Dev1", StateBlocked)
	if ok, _ := n.Enqueue(nt); !ok {
		t.Fatal("first Enqueue() = false")
	}
	if ok, err := n.Enqueue(nt); ok || err != nil {
		t.Errorf("Enqueue() while queued = %v, %v; want false, nil", ok, err)
	}
	ts.wait()
	waitCounter(t, "sent", n.sent["notice"].Get, 1) // the server's reply reached the client
	stop()                                          // flushes the store

	store2, err := OpenFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	n2 := newNotifier(t, options(ts, store2))
	runNotifier(t, n2)
	nt.To = "anna@example.com" // the mailbox is compared case-insensitively
	if ok, err := n2.Enqueue(nt); ok || err != nil {
		t.Errorf("Enqueue() after restart = %v, %v; want false, nil (sent before)", ok, err)
	}
	nt.State = StateQuarantined
	if ok, err := n2.Enqueue(nt); !ok || err != nil {
		t.Errorf("Enqueue() of another state = %v, %v; want true, nil", ok, err)
	}
	ts.wait()
	if err := n2.Resolved("anna@example.com", "Dev1"); err != nil {
		t.Fatal(err)
	}
	nt.State = StateBlocked
	if ok, err := n2.Enqueue(nt); !ok || err != nil {
		t.Errorf("Enqueue() after Resolved = %v, %v; want true, nil", ok, err)
	}
	ts.wait()
	select {
	case r := <-ts.got:
		t.Errorf("unexpected extra message to %v", r.to)
	default:
	}
}

func TestConnectionReuse(t *testing.T) {
	ts := newTestServer(t, serverConfig{})
	opts := options(ts, NewMemoryStore())
	opts.SMTP.MaxMessagesPerConn = 3
	n := newNotifier(t, opts)
	for i := range 5 {
		if ok, err := n.Enqueue(notice("u@example.com", fmt.Sprintf("Dev%d", i), StateBlocked)); !ok || err != nil {
			t.Fatalf("Enqueue() = %v, %v", ok, err)
		}
	}
	runNotifier(t, n)
	for range 5 {
		ts.wait()
	}
	if c := ts.conns.Load(); c != 2 {
		t.Errorf("connections = %d for 5 messages at 3 per connection, want 2", c)
	}
}

func TestSTARTTLSAndAuth(t *testing.T) {
	srvTLS, pool := selfSigned(t)
	f := func(name string, cfg serverConfig, opts func(*SMTPOptions), wantUser string) {
		t.Run(name, func(t *testing.T) {
			cfg.tls = srvTLS
			ts := newTestServer(t, cfg)
			o := options(ts, NewMemoryStore())
			o.SMTP.Security = SecurityStartTLS
			o.SMTP.TLSConfig = &tls.Config{RootCAs: pool}
			if cfg.implicit {
				o.SMTP.Security = SecurityTLS
			}
			opts(&o.SMTP)
			n := newNotifier(t, o)
			runNotifier(t, n)
			n.Enqueue(notice("u@example.com", "Dev1", StateBlocked))
			r := ts.wait()
			if !r.tls || r.authUser != wantUser {
				t.Errorf("received over TLS %v as %q, want TLS as %q", r.tls, r.authUser, wantUser)
			}
		})
	}
	creds := func(o *SMTPOptions) { o.Username, o.Password = "svc-easconnector", secret.New("s3cret") }
	f("starttls", serverConfig{}, func(*SMTPOptions) {}, "")
	f("starttls plain", serverConfig{mechs: []string{"PLAIN", "LOGIN"}, user: "svc-easconnector", pass: "s3cret"}, creds, "svc-easconnector")
	f("starttls login", serverConfig{mechs: []string{"LOGIN"}, user: "svc-easconnector", pass: "s3cret"}, creds, "svc-easconnector")
	f("implicit tls plain", serverConfig{implicit: true, mechs: []string{"PLAIN"}, user: "svc-easconnector", pass: "s3cret"}, creds, "svc-easconnector")
}

// waitCounter waits until the counter reaches want.
func waitCounter(t *testing.T, name string, get func() uint64, want uint64) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for get() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %d, want %d", name, get(), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if got := get(); got != want {
		t.Fatalf("%s = %d, want %d", name, got, want)
	}
}

func TestFailures(t *testing.T) {
	srvTLS, pool := selfSigned(t)
	f := func(name string, cfg serverConfig, tune func(*Options), wantRetries uint64) {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, cfg)
			o := options(ts, NewMemoryStore())
			o.MaxAttempts = 3
			tune(&o)
			n := newNotifier(t, o)
			runNotifier(t, n)
			n.Enqueue(notice("u@example.com", "Dev1", StateBlocked))
			waitCounter(t, "failed", n.failed["notice"].Get, 1)
			if got := n.retries.Get(); got != wantRetries {
				t.Errorf("retries = %d, want %d", got, wantRetries)
			}
			if n.sent["notice"].Get() != 0 {
				t.Error("sent != 0")
			}
			// Not recorded as sent: the next sync may queue it again.
			if ok, err := n.Enqueue(notice("u@example.com", "Dev1", StateBlocked)); !ok || err != nil {
				t.Errorf("Enqueue() after failure = %v, %v; want true, nil", ok, err)
			}
		})
	}
	f("server down", serverConfig{}, func(o *Options) { o.SMTP.Port = closedPort(t) }, 2)
	f("recipient rejected (5xx)", serverConfig{rcptError: func(string) error {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}}, func(*Options) {}, 0)
	f("recipient deferred (4xx)", serverConfig{rcptError: func(string) error {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
	}}, func(*Options) {}, 2)
	f("wrong password", serverConfig{tls: srvTLS, mechs: []string{"PLAIN"}, user: "svc", pass: "right"}, func(o *Options) {
		o.SMTP.Security, o.SMTP.TLSConfig = SecurityStartTLS, &tls.Config{RootCAs: pool}
		o.SMTP.Username, o.SMTP.Password = "svc", secret.New("wrong")
	}, 0)
	f("untrusted certificate", serverConfig{tls: srvTLS}, func(o *Options) {
		o.SMTP.Security, o.SMTP.TLSConfig = SecurityStartTLS, &tls.Config{RootCAs: x509.NewCertPool()}
	}, 0)
	f("no STARTTLS offered", serverConfig{}, func(o *Options) { o.SMTP.Security = SecurityStartTLS }, 0)
}

func TestTransientFailureRetried(t *testing.T) {
	ts := newTestServer(t, serverConfig{failData: 2})
	n := newNotifier(t, options(ts, NewMemoryStore()))
	runNotifier(t, n)
	n.Enqueue(notice("u@example.com", "Dev1", StateBlocked))
	ts.wait()
	if got := n.retries.Get(); got != 2 {
		t.Errorf("retries = %d, want 2", got)
	}
	waitCounter(t, "sent", n.sent["notice"].Get, 1)
}

// TestEnqueueNeverBlocks: with the server down and the worker busy
// retrying, Enqueue returns at once and counts what does not fit.
func TestEnqueueNeverBlocks(t *testing.T) {
	o := Options{
		SMTP:      SMTPOptions{Host: "127.0.0.1", Port: closedPort(t), Security: SecurityNone, Timeout: guard},
		From:      "it@example.com",
		EnrollURL: enrollURL,
		Store:     NewMemoryStore(),
		QueueSize: 2,
		// Long enough that the worker sits in its backoff while we enqueue.
		MaxAttempts: 2, RetryMin: time.Minute, RetryMax: time.Minute,
	}
	n := newNotifier(t, o)
	stop := runNotifier(t, n)
	n.Enqueue(notice("u@example.com", "Dev0", StateBlocked))
	waitCounter(t, "retries", n.retries.Get, 1) // worker is now waiting to retry Dev0
	var errs []error
	for i := 1; i <= 4; i++ {
		_, err := n.Enqueue(notice("u@example.com", fmt.Sprintf("Dev%d", i), StateBlocked))
		errs = append(errs, err)
	}
	want := []error{nil, nil, ErrQueueFull, ErrQueueFull}
	for i := range want {
		if !errors.Is(errs[i], want[i]) {
			t.Errorf("Enqueue() %d = %v, want %v", i+1, errs[i], want[i])
		}
	}
	if got := n.dropped["notice"].Get(); got != 2 {
		t.Errorf("dropped = %d, want 2", got)
	}
	stop()
	// Stopping drops the retrying message and the two queued ones.
	if got := n.dropped["notice"].Get(); got != 5 {
		t.Errorf("dropped after stop = %d, want 5", got)
	}
	if got := n.queued["notice"].Get(); got != 3 {
		t.Errorf("queued = %d, want 3", got)
	}
}

func TestDigest(t *testing.T) {
	ts := newTestServer(t, serverConfig{})
	n := newNotifier(t, options(ts, NewMemoryStore()))
	runNotifier(t, n)
	lines := []string{"Plan 42 holds 1,234 new blocks (limit 500).", "Approve: easconnector sync --approve 42", "model\x1b[2J\r\nBcc: x@evil.example"}
	if err := n.Digest([]string{"exchange-admins@example.com", "Oncall <oncall@example.com>"}, "easconnector: plan 42 held by the guard", lines); err != nil {
		t.Fatal(err)
	}
	r := ts.wait()
	if strings.Join(r.to, ",") != "exchange-admins@example.com,oncall@example.com" {
		t.Errorf("recipients = %v", r.to)
	}
	p := parse(t, r.data)
	if p.header.Get("Subject") != "easconnector: plan 42 held by the guard" || len(p.parts) != 1 || p.parts[0] != "text/plain; charset=utf-8" {
		t.Errorf("Subject %q, parts %v", p.header.Get("Subject"), p.parts)
	}
	for _, want := range []string{lines[0], lines[1], "model[2J Bcc: x@evil.example"} {
		if !strings.Contains(p.text, want) {
			t.Errorf("digest lacks %q:\n%s", want, p.text)
		}
	}
	if _, ok := p.header["Bcc"]; ok {
		t.Error("digest has a Bcc header")
	}
	f := func(to []string, subject string) {
		t.Helper()
		if err := n.Digest(to, subject, nil); err == nil {
			t.Errorf("Digest(%q, %q) error = nil", to, subject)
		}
	}
	f([]string{"a@example.com"}, "held\r\nBcc: x@evil.example")
	f([]string{"a@example.com\r\nRCPT TO:<x@evil.example>"}, "ok")
	f([]string{"not an address"}, "ok")
	f(nil, "ok")
	f([]string{"a@example.com"}, " ")
}

func TestEnqueueValidation(t *testing.T) {
	n := newNotifier(t, Options{SMTP: SMTPOptions{Host: "mail.example.com"}, From: "it@example.com", EnrollURL: enrollURL, Store: NewMemoryStore()})
	f := func(nt Notice, want string) {
		t.Helper()
		if _, err := n.Enqueue(nt); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Enqueue(%+v) error = %v, want mention of %q", nt, err, want)
		}
	}
	f(notice("", "Dev1", StateBlocked), "To")
	f(notice("a@example.com\r\nBcc: x@evil.example", "Dev1", StateBlocked), "To")
	f(notice("a@example.com", "Dev1", "allowed"), "State")
	f(notice("a@example.com", "", StateBlocked), "DeviceID")
}

func TestOptionsValidation(t *testing.T) {
	base := func() Options {
		return Options{SMTP: SMTPOptions{Host: "mail.example.com"}, From: "it@example.com", EnrollURL: enrollURL, Store: NewMemoryStore()}
	}
	f := func(tune func(*Options), want string) {
		t.Helper()
		o := base()
		tune(&o)
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New() error = %v, want mention of %q", err, want)
		}
	}
	f(func(o *Options) { o.SMTP.Host = "" }, "SMTP.Host")
	f(func(o *Options) { o.SMTP.Security = "ssl" }, "SMTP.Security")
	f(func(o *Options) { o.SMTP.Security, o.SMTP.Username = SecurityNone, "u" }, "SMTP.Username")
	f(func(o *Options) { o.SMTP.Port = 70000 }, "SMTP.Port")
	f(func(o *Options) { o.From = "it\r\n@example.com" }, "From")
	f(func(o *Options) { o.EnrollURL = "javascript:alert(1)" }, "EnrollURL")
	f(func(o *Options) { o.EnrollURL = "/enroll" }, "EnrollURL")
	f(func(o *Options) { o.Store = nil }, "Store")
	f(func(o *Options) { o.QueueSize = -1 }, "QueueSize")
	f(func(o *Options) { o.RetryMin, o.RetryMax = time.Minute, time.Second }, "RetryMin")
	if _, err := New(base()); err != nil {
		t.Errorf("New(valid) error = %v", err)
	}
	o := base()
	o.SMTP.setDefaults()
	if o.SMTP.Port != 587 || o.SMTP.Security != SecurityStartTLS {
		t.Errorf("SMTP defaults = %s port %d, want starttls 587", o.SMTP.Security, o.SMTP.Port)
	}
}

func TestTemplatesDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := Options{SMTP: SMTPOptions{Host: "mail.example.com"}, From: "it@example.com", EnrollURL: enrollURL, Store: NewMemoryStore(), TemplatesDir: dir}

	write(NoticeSubjectTemplate, "{{.DeviceModel}} ({{.State}})\n")
	n := newNotifier(t, base)
	m, err := n.render(&job{kind: "notice", notice: notice("u@example.com", "Dev1", StateBlocked)})
	if err != nil || m.subject != "iPhone 15 (blocked)" {
		t.Errorf("subject from TemplatesDir = %q, %v; want %q", m.subject, err, "iPhone 15 (blocked)")
	}
	if !strings.Contains(m.text, "has been blocked") {
		t.Error("text template not the default when absent from TemplatesDir")
	}

	f := func(name, body, want string) {
		t.Helper()
		write(name, body)
		defer os.Remove(filepath.Join(dir, name))
		if _, err := New(base); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New() with %s = %q: error = %v, want mention of %q", name, body, err, want)
		}
	}
	f(NoticeHTMLTemplate, "<p>{{.DeviceModel</p>", filepath.Join(dir, NoticeHTMLTemplate))
	f(NoticeTextTemplate, "{{.NoSuchField}}", NoticeTextTemplate)
	f(NoticeSubjectTemplate, "Blocked\n{{.DeviceModel}}", "one line")
}

package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// State is the device state a notice tells the user about.
type State string

// Notice states.
const (
	StateBlocked     State = "blocked"
	StateQuarantined State = "quarantined"
)

// Notice asks to tell a user about one device.
type Notice struct {
	To          string // the mailbox's primary SMTP address
	UserName    string // display name, for the greeting
	DeviceID    string // EAS DeviceId (hostile)
	DeviceType  string // hostile
	DeviceModel string // hostile
	State       State
	Reason      string // decision reason code, e.g. "NotCompliant"
	SyncID      string
	Time        time.Time // when the state was set (now when zero)
}

// DefaultReasonTexts says each decision reason of the policy table in plain
// words. Options.ReasonTexts adds to and overrides it.
var DefaultReasonTexts = map[string]string{
	"NotCompliant":      "the device is enrolled in device management but does not meet your organization's security requirements.",
	"NotEnrolled":       "the device is not enrolled in your organization's device management.",
	"PendingEvaluation": "device management has not finished checking the device yet.",
	"Stale":             "the device has not checked in with device management for too long.",
	"UserMismatch":      "the device is enrolled in device management for a different user.",
	"PlatformRule":      "your organization does not allow this kind of device to sync mail.",
	"NotTargeted":       "your organization's mail access policy does not allow this device.",
	"Exempt":            "your organization's mail access policy does not allow this device.",
}

const genericReasonText = "your organization's mail access policy does not currently allow this device."

// Defaults for Options.
const (
	// DefaultQueueSize holds the notices of a first sync of a large
	// organization (a Quarantine default leaves every unmanaged phone to
	// quarantine) at a few hundred bytes each; what overflows is dropped,
	// counted and re-derived by the next sync.
	DefaultQueueSize   = 20000
	DefaultMaxAttempts = 5
	DefaultRetryMin    = 5 * time.Second
	DefaultRetryMax    = 5 * time.Minute
)

// Errors.
var (
	// ErrQueueFull is returned by Enqueue and Digest when the queue is full;
	// the message is dropped and counted.
	ErrQueueFull = errors.New("notification queue full")
)

// Options configure a Notifier.
type Options struct {
	SMTP SMTPOptions
	// From is the sender, "IT Service Desk <it@example.com>"; required.
	From string
	// EnrollURL is the link users follow to enroll a device (http or
	// https); required.
	EnrollURL string
	// Contact says whom to contact, in plain words ("the IT service desk,
	// +1 555 0100, helpdesk@example.com"); optional.
	Contact string
	// Organization is the organization's name as users know it; optional.
	Organization string
	// TemplatesDir holds template files that replace the shipped defaults
	// (NoticeSubjectTemplate and the others); "" uses the defaults.
	TemplatesDir string
	// ReasonTexts adds to and overrides DefaultReasonTexts.
	ReasonTexts map[string]string
	// Location is the time zone of times in mails (time.Local by default).
	Location *time.Location
	// QueueSize bounds the queue (DefaultQueueSize).
	QueueSize int
	// MaxAttempts bounds the sending attempts of one message
	// (DefaultMaxAttempts); RetryMin and RetryMax bound the backoff between
	// them (DefaultRetryMin, DefaultRetryMax). 5xx replies are not retried.
	MaxAttempts        int
	RetryMin, RetryMax time.Duration
	// Store records sent notices; required (see OpenFileStore).
	Store SentStore
	// Logger receives one line per failure and per dropped message
	// (discarded when nil).
	Logger *slog.Logger
	// Now returns the current time (time.Now by default).
	Now func() time.Time
}

func (o *Options) setDefaults() {
	o.SMTP.setDefaults()
	if o.Location == nil {
		o.Location = time.Local
	}
	if o.QueueSize == 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.RetryMin == 0 {
		o.RetryMin = DefaultRetryMin
	}
	if o.RetryMax == 0 {
		o.RetryMax = DefaultRetryMax
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Notifier queues and sends notices and digests; see the package comment.
type Notifier struct {
	opts    Options
	tmpl    *templates
	from    string // bare sender address
	fromHdr string
	domain  string // for Message-IDs
	reasons map[string]string
	log     *slog.Logger
	queue   chan *job

	mu       sync.Mutex
	inflight map[string]bool // keys queued or being sent
	running  bool

	set     *metrics.Set
	queued  map[string]*metrics.Counter // by kind: notice, digest
	sent    map[string]*metrics.Counter
	failed  map[string]*metrics.Counter
	dropped map[string]*metrics.Counter
	retries *metrics.Counter
}

type job struct {
	kind    string // "notice" or "digest"
	key     string // SentStore key; "" for digests
	notice  Notice
	to      []string
	subject string
	lines   []string
	queued  time.Time
}

// New checks opts, loads the templates and returns a Notifier; call Run to
// start sending.
func New(opts Options) (*Notifier, error) {
	opts.setDefaults()
	if err := opts.SMTP.validate(); err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	fromAddr, err := parseMailbox("notify: From", opts.From)
	if err != nil {
		return nil, err
	}
	from := fromAddr.Address
	u, err := url.Parse(opts.EnrollURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("notify: EnrollURL %q: want an absolute http or https URL", opts.EnrollURL)
	}
	switch {
	case opts.Store == nil:
		return nil, errors.New("notify: Store is nil (use OpenFileStore)")
	case opts.QueueSize < 1:
		return nil, fmt.Errorf("notify: QueueSize must be at least 1, got %d", opts.QueueSize)
	case opts.MaxAttempts < 1:
		return nil, fmt.Errorf("notify: MaxAttempts must be at least 1, got %d", opts.MaxAttempts)
	case opts.RetryMin <= 0 || opts.RetryMax < opts.RetryMin:
		return nil, fmt.Errorf("notify: want 0 < RetryMin <= RetryMax, got %v and %v", opts.RetryMin, opts.RetryMax)
	}
	tmpl, err := loadTemplates(opts.TemplatesDir)
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	n := &Notifier{
		opts:     opts,
		tmpl:     tmpl,
		from:     from,
		fromHdr:  formatAddress(fromAddr.Name, from),
		domain:   from[strings.LastIndexByte(from, '@')+1:],
		reasons:  map[string]string{},
		log:      opts.Logger,
		queue:    make(chan *job, opts.QueueSize),
		inflight: map[string]bool{},
		set:      metrics.NewSet(),
	}
	for k, v := range DefaultReasonTexts {
		n.reasons[k] = v
	}
	for k, v := range opts.ReasonTexts {
		n.reasons[k] = v
	}
	n.initMetrics()
	// Render a hostile sample, so that a template error shows at start-up,
	// not at the first blocked device.
	sample := Notice{To: from, UserName: "Sample User", DeviceID: "SAMPLE0123456789", DeviceType: "iPhone\r\nBcc: x",
		DeviceModel: "<b>\u202eModel</b>", State: StateBlocked, Reason: "NotCompliant", SyncID: "sample"}
	if _, err := n.render(&job{kind: "notice", notice: sample, queued: opts.Now()}); err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	sample.State = StateQuarantined
	if _, err := n.render(&job{kind: "notice", notice: sample, queued: opts.Now()}); err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	if _, err := n.render(&job{kind: "digest", to: []string{from}, subject: "sample", lines: []string{"a", "b"}, queued: opts.Now()}); err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	return n, nil
}

func (n *Notifier) initMetrics() {
	n.queued, n.sent, n.failed, n.dropped = map[string]*metrics.Counter{}, map[string]*metrics.Counter{}, map[string]*metrics.Counter{}, map[string]*metrics.Counter{}
	for _, kind := range []string{"notice", "digest"} {
		n.queued[kind] = n.set.NewCounter(`easconnector_notify_queued_total{kind="` + kind + `"}`)
		n.sent[kind] = n.set.NewCounter(`easconnector_notify_sent_total{kind="` + kind + `"}`)
		n.failed[kind] = n.set.NewCounter(`easconnector_notify_failed_total{kind="` + kind + `"}`)
		n.dropped[kind] = n.set.NewCounter(`easconnector_notify_dropped_total{kind="` + kind + `"}`)
	}
	n.retries = n.set.NewCounter("easconnector_notify_retries_total")
	n.set.NewGauge("easconnector_notify_queue_length", func() float64 { return float64(len(n.queue)) })
}

// Metrics returns the notifier's metrics set, to be registered for /metrics.
func (n *Notifier) Metrics() *metrics.Set { return n.set }

// Enqueue queues a notice unless it was sent before or is already queued.
// It never blocks. It reports whether the notice was queued; the error is
// ErrQueueFull when the queue is full (the notice is dropped and counted;
// the next sync derives it again), or names the invalid field.
func (n *Notifier) Enqueue(nt Notice) (bool, error) {
	to, err := parseAddress("To", nt.To)
	if err != nil {
		return false, fmt.Errorf("notice for device %q: %w", clean(nt.DeviceID, maxDeviceRunes), err)
	}
	if nt.State != StateBlocked && nt.State != StateQuarantined {
		return false, fmt.Errorf("notice for %s: State %q: want blocked or quarantined", to, nt.State)
	}
	if nt.DeviceID == "" {
		return false, fmt.Errorf("notice for %s: DeviceID is empty", to)
	}
	nt.To = to
	key := Key(to, nt.DeviceID, nt.State)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inflight[key] || n.opts.Store.Sent(key) {
		return false, nil
	}
	select {
	case n.queue <- &job{kind: "notice", key: key, notice: nt, queued: n.opts.Now()}:
		n.inflight[key] = true
		n.queued["notice"].Inc()
		return true, nil
	default:
		n.dropped["notice"].Inc()
		return false, ErrQueueFull
	}
}

// Resolved forgets the notices of a device in both states, so that the user
// hears again if the device is blocked or quarantined again later. The
// pipeline calls it when a device it notified about is allowed.
func (n *Notifier) Resolved(mailbox, deviceID string) error {
	for _, st := range []State{StateBlocked, StateQuarantined} {
		if err := n.opts.Store.Forget(Key(mailbox, deviceID, st)); err != nil {
			return fmt.Errorf("forget notice %s %s: %w", mailbox, deviceID, err)
		}
	}
	return nil
}

// Digest queues a plain-text mail to administrators: subject, then one
// line per entry (cleaned of control characters). It never blocks; the
// error is ErrQueueFull, or names the invalid address or subject.
func (n *Notifier) Digest(to []string, subject string, lines []string) error {
	if len(to) == 0 {
		return errors.New("digest: no recipients")
	}
	addrs := make([]string, 0, len(to))
	for i, a := range to {
		addr, err := parseAddress(fmt.Sprintf("digest: recipient %d", i+1), a)
		if err != nil {
			return err
		}
		addrs = append(addrs, addr)
	}
	if _, err := encodeHeader("Subject", subject); err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	if strings.TrimSpace(subject) == "" {
		return errors.New("digest: empty subject")
	}
	select {
	case n.queue <- &job{kind: "digest", to: addrs, subject: subject, lines: append([]string(nil), lines...), queued: n.opts.Now()}:
		n.queued["digest"].Inc()
		return nil
	default:
		n.dropped["digest"].Inc()
		return ErrQueueFull
	}
}

// render builds the message of a job.
func (n *Notifier) render(j *job) (*message, error) {
	now := n.opts.Now()
	m := &message{envFrom: n.from, from: n.fromHdr, date: now, id: newMessageID(n.domain, now)}
	if j.kind == "digest" {
		d := &DigestData{Subject: clean(j.subject, maxTextRunes), Organization: clean(n.opts.Organization, maxNameRunes),
			Time: now, TimeText: now.In(n.opts.Location).Format("Mon, 2 Jan 2006 15:04 MST")}
		for _, l := range j.lines {
			d.Lines = append(d.Lines, clean(l, maxTextRunes))
		}
		text, err := n.tmpl.renderDigest(d)
		if err != nil {
			return nil, err
		}
		m.envTo = j.to
		for _, a := range j.to {
			m.to = append(m.to, formatAddress("", a))
		}
		m.subject, m.text = j.subject, text
		return m, nil
	}
	nt := j.notice
	at := nt.Time
	if at.IsZero() {
		at = j.queued
	}
	reasonText, ok := n.reasons[nt.Reason]
	if !ok {
		reasonText = genericReasonText
	}
	d := &NoticeData{
		Organization: clean(n.opts.Organization, maxNameRunes),
		Contact:      clean(n.opts.Contact, maxTextRunes),
		EnrollURL:    n.opts.EnrollURL,
		UserName:     clean(nt.UserName, maxNameRunes),
		Mailbox:      nt.To,
		DeviceID:     clean(nt.DeviceID, maxDeviceRunes),
		DeviceType:   clean(nt.DeviceType, maxDeviceRunes),
		DeviceModel:  clean(nt.DeviceModel, maxDeviceRunes),
		State:        nt.State,
		Blocked:      nt.State == StateBlocked,
		Quarantined:  nt.State == StateQuarantined,
		Reason:       clean(nt.Reason, maxNameRunes),
		ReasonText:   clean(reasonText, maxTextRunes),
		SyncID:       clean(nt.SyncID, maxNameRunes),
		Time:         at,
		TimeText:     at.In(n.opts.Location).Format("Mon, 2 Jan 2006 15:04 MST"),
	}
	if d.UserName == "" {
		d.UserName = nt.To
	}
	if d.DeviceModel == "" {
		d.DeviceModel = "device"
	}
	subject, text, html, err := n.tmpl.renderNotice(d)
	if err != nil {
		return nil, err
	}
	m.envTo = []string{nt.To}
	m.to = []string{formatAddress(nt.UserName, nt.To)}
	m.subject, m.text, m.html = subject, text, html
	return m, nil
}

// Run sends queued messages until ctx ends; see the package comment. It
// returns nil, or an error when Run is already running.
func (n *Notifier) Run(ctx context.Context) error {
	n.mu.Lock()
	if n.running {
		n.mu.Unlock()
		return errors.New("notify: Run already running")
	}
	n.running = true
	n.mu.Unlock()
	var conn *smtpConn
	defer func() {
		if conn != nil {
			conn.quit()
		}
		n.drop()
		n.flush()
		n.mu.Lock()
		n.running = false
		n.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case j := <-n.queue:
			conn = n.deliver(ctx, conn, j)
			if conn != nil && (len(n.queue) == 0 || conn.sent >= n.opts.SMTP.MaxMessagesPerConn) {
				conn.quit()
				conn = nil
			}
			if len(n.queue) == 0 {
				n.flush()
			}
		}
	}
}

// drop empties the queue at shutdown, counting what was not sent.
func (n *Notifier) drop() {
	dropped := 0
	for {
		select {
		case j := <-n.queue:
			n.done(j)
			n.dropped[j.kind].Inc()
			dropped++
		default:
			if dropped > 0 {
				n.log.Warn("notifications not sent at shutdown; notices are derived again by the next sync", "count", dropped)
			}
			return
		}
	}
}

func (n *Notifier) flush() {
	if f, ok := n.opts.Store.(flusher); ok {
		if err := f.Flush(); err != nil {
			n.log.Error("save sent notifications", "err", err)
		}
	}
}

func (n *Notifier) done(j *job) {
	if j.key == "" {
		return
	}
	n.mu.Lock()
	delete(n.inflight, j.key)
	n.mu.Unlock()
}

// deliver sends one job with retries and returns the connection to reuse
// (nil when there is none).
func (n *Notifier) deliver(ctx context.Context, conn *smtpConn, j *job) *smtpConn {
	// The key leaves the in-flight set before the outcome is counted, so
	// that whoever sees the count can enqueue the notice again.
	end := func(c map[string]*metrics.Counter) {
		n.done(j)
		c[j.kind].Inc()
	}
	m, err := n.render(j)
	if err != nil {
		n.log.Error("render notification", "kind", j.kind, "err", err)
		end(n.failed)
		return conn
	}
	body, err := m.build()
	if err != nil {
		n.log.Error("build notification", "kind", j.kind, "err", err)
		end(n.failed)
		return conn
	}
	reconnected := false
	for attempt := 1; ; {
		deadline := time.Now().Add(n.opts.SMTP.Timeout)
		reused := conn != nil
		if conn == nil {
			conn, err = dial(ctx, &n.opts.SMTP, deadline)
		}
		if err == nil {
			err = conn.send(ctx, deadline, m, body)
		}
		if err == nil {
			if j.key != "" {
				if err := n.opts.Store.MarkSent(j.key, n.opts.Now()); err != nil {
					n.log.Error("record sent notification", "to", j.notice.To, "err", err)
				}
			}
			end(n.sent)
			return conn
		}
		if conn != nil {
			conn.close()
			conn = nil
		}
		if ctx.Err() != nil {
			end(n.dropped)
			return nil
		}
		// A reused connection may have been closed by the server while idle
		// between messages; one fresh try does not count as an attempt.
		if reused && !reconnected && !permanent(err) {
			reconnected = true
			continue
		}
		if permanent(err) || attempt >= n.opts.MaxAttempts {
			n.log.Error("send notification", "kind", j.kind, "to", strings.Join(m.envTo, ","), "attempts", attempt, "err", err)
			end(n.failed)
			return nil
		}
		n.retries.Inc()
		wait := n.backoff(attempt)
		n.log.Warn("send notification, will retry", "kind", j.kind, "to", strings.Join(m.envTo, ","), "attempt", attempt, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			end(n.dropped)
			return nil
		case <-t.C:
		}
		attempt++
	}
}

// backoff returns the wait after the n-th failed attempt: between 3/4 and
// all of min(RetryMin·2^(n-1), RetryMax).
func (n *Notifier) backoff(attempt int) time.Duration {
	d := n.opts.RetryMin
	for i := 1; i < attempt && d < n.opts.RetryMax; i++ {
		d *= 2
	}
	d = min(d, n.opts.RetryMax)
	return d - time.Duration(rand.Int64N(int64(d/4)+1))
}

package notify

import (
	"bytes"
	"mime"
	"net/mail"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestEncodeHeader(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		got, err := encodeHeader("Subject", in)
		if err != nil || got != want {
			t.Errorf("encodeHeader(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	f("Your device is blocked", "Your device is blocked")
	f("Gerät gesperrt", "=?utf-8?q?Ger=C3=A4t_gesperrt?=")
	f("=?utf-8?q?fake?=", "=?utf-8?q?=3D=3Futf-8=3Fq=3Ffake=3F=3D?=")
	long := strings.Repeat("blocked ", 12)
	got, err := encodeHeader("Subject", long)
	if err != nil || !strings.Contains(got, "\r\n =?utf-8?q?") {
		t.Errorf("encodeHeader(long) = %q, %v; want folded encoded-words", got, err)
	}
	for _, bad := range []string{"a\r\nBcc: x", "a\nb", "a\rb", "a\x00b", "tab\there", "del\x7f"} {
		if _, err := encodeHeader("Subject", bad); err == nil {
			t.Errorf("encodeHeader(%q) error = nil", bad)
		}
	}
}

func FuzzEncodeHeader(f *testing.F) {
	for _, s := range []string{"", "Your device is blocked", "Gerät gesperrt", "=?utf-8?q?x?=", "a\r\nBcc: x@evil.example",
		strings.Repeat("ü", 100), "\xff\xfe", " leading and trailing ", "日本語のデバイス", "a_b=c?d"} {
		f.Add(s)
	}
	dec := new(mime.WordDecoder)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := encodeHeader("Subject", s)
		hasCtl := strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
		if hasCtl {
			if err == nil {
				t.Fatalf("encodeHeader(%q) = %q, want an error (control character)", s, got)
			}
			return
		}
		if err != nil {
			t.Fatalf("encodeHeader(%q) error = %v", s, err)
		}
		if !foldedOnly(got) {
			t.Fatalf("encodeHeader(%q) = %q: a line break that is not a fold", s, got)
		}
		lines := strings.Split("Subject: "+got, "\r\n")
		for _, l := range lines {
			if len(lines) > 1 && len(l) > maxLine || len(l) > 998 {
				t.Fatalf("encodeHeader(%q): line %q is %d long", s, l, len(l))
			}
		}
		// A header parser sees exactly one Subject header, which decodes to
		// the input.
		m, err := mail.ReadMessage(strings.NewReader("Subject: " + got + "\r\nX-End: 1\r\n\r\n"))
		if err != nil {
			t.Fatalf("encodeHeader(%q) = %q: message does not parse: %v", s, got, err)
		}
		if len(m.Header) != 2 {
			t.Fatalf("encodeHeader(%q) = %q: %d headers, want 2", s, got, len(m.Header))
		}
		back, err := dec.DecodeHeader(m.Header.Get("Subject"))
		want := strings.ToValidUTF8(s, "\uFFFD")
		if got == s { // left as is: the parser trims surrounding space
			want = strings.TrimSpace(want)
		}
		if err != nil || back != want {
			t.Fatalf("encodeHeader(%q) = %q decodes to %q, %v; want %q", s, got, back, err, want)
		}
	})
}

func FuzzNoticeMessage(f *testing.F) {
	f.Add("iPhone", "iPhone 15", "Anna", "ApplABC")
	f.Add("Android\r\nBcc: x@evil.example", "<script>alert(1)</script>", "Eve\"<e@evil.example>", "Dev\x00")
	f.Add("\u202e\u200b", "{{.EnrollURL}}", "=?utf-8?q?x?=", "")
	n, err := New(Options{SMTP: SMTPOptions{Host: "mail.example.com"}, From: "IT <it@example.com>", EnrollURL: "https://e.example/enroll",
		Store: NewMemoryStore(), Location: time.UTC})
	if err != nil {
		f.Fatal(err)
	}
	build := func(t *testing.T, typ, model, user, id string) (*mail.Message, string) {
		m, err := n.render(&job{kind: "notice", notice: Notice{To: "u@example.com", UserName: user, DeviceID: id, DeviceType: typ,
			DeviceModel: model, State: StateBlocked, Reason: "NotCompliant", SyncID: "s1"}})
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		b, err := m.build()
		if err != nil {
			t.Fatalf("build: %v", err)
		}
		msg, err := mail.ReadMessage(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("message does not parse: %v\n%s", err, b)
		}
		return msg, m.html
	}
	f.Fuzz(func(t *testing.T, typ, model, user, id string) {
		msg, html := build(t, typ, model, user, id)
		want := []string{"Auto-Submitted", "Content-Type", "Date", "From", "Message-Id", "Mime-Version", "Subject", "To", "X-Auto-Response-Suppress"}
		if len(msg.Header) != len(want) {
			t.Fatalf("%d headers, want %d: %v", len(msg.Header), len(want), msg.Header)
		}
		for _, h := range want {
			if len(msg.Header[h]) != 1 {
				t.Fatalf("header %s appears %d times", h, len(msg.Header[h]))
			}
		}
		to, err := msg.Header.AddressList("To")
		if err != nil || len(to) != 1 || to[0].Address != "u@example.com" {
			t.Fatalf("To = %q (%v), want one address u@example.com", msg.Header.Get("To"), err)
		}
		// Every tag in the HTML comes from the template: the same message
		// with harmless strings has as many '<'.
		_, plain := build(t, "x", "x", "x", "x")
		if strings.Count(html, "<") != strings.Count(plain, "<") {
			t.Fatalf("HTML has %d '<', want %d: device strings became markup", strings.Count(html, "<"), strings.Count(plain, "<"))
		}
	})
}

func TestClean(t *testing.T) {
	f := func(in string, max int, want string) {
		t.Helper()
		if got := clean(in, max); got != want {
			t.Errorf("clean(%q, %d) = %q, want %q", in, max, got, want)
		}
	}
	f("  Pixel\r\n 8\tPro ", 100, "Pixel 8 Pro")
	f("a\u202eb\u200bc\u2028d", 100, "abcd")
	f("\x1b[31mred", 100, "[31mred")
	f("abcdef", 3, "abc…")
	f("ab cd", 3, "ab…")
	f("\xff", 10, "\uFFFD")
}

func FuzzClean(f *testing.F) {
	for _, s := range []string{"", "Pixel 8", "a\r\nb", "\u202e", "\xff\xfe", "  x  "} {
		f.Add(s, 8)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		if max < 1 || max > 1000 {
			return
		}
		got := clean(s, max)
		if !utf8.ValidString(got) {
			t.Fatalf("clean(%q) = %q: invalid UTF-8", s, got)
		}
		if n := utf8.RuneCountInString(got); n > max+1 {
			t.Fatalf("clean(%q, %d) = %q: %d runes", s, max, got, n)
		}
		if strings.ContainsFunc(got, func(r rune) bool { return r < 0x20 || r == 0x7f || r == 0x202e || r == 0x2028 }) {
			t.Fatalf("clean(%q) = %q: control character left", s, got)
		}
		if got != strings.TrimSpace(got) || strings.Contains(got, "  ") {
			t.Fatalf("clean(%q) = %q: untrimmed or doubled space", s, got)
		}
	})
}

// BenchmarkRenderNotice measures rendering and building one notice (both
// templates, MIME, quoted-printable): the connector's CPU cost per mail.
func BenchmarkRenderNotice(b *testing.B) {
	n, err := New(Options{SMTP: SMTPOptions{Host: "mail.example.com"}, From: "IT <it@example.com>", EnrollURL: "https://e.example/enroll",
		Store: NewMemoryStore(), Location: time.UTC})
	if err != nil {
		b.Fatal(err)
	}
	j := &job{kind: "notice", notice: Notice{To: "anna@example.com", UserName: "Anna Müller", DeviceID: "ApplF17XYZ0123",
		DeviceType: "iPhone", DeviceModel: "iPhone15,2", State: StateBlocked, Reason: "NotCompliant", SyncID: "s1"}}
	b.ReportAllocs()
	var size int
	for b.Loop() {
		m, err := n.render(j)
		if err != nil {
			b.Fatal(err)
		}
		body, err := m.build()
		if err != nil {
			b.Fatal(err)
		}
		size = len(body)
	}
	b.ReportMetric(float64(size), "bytes/msg")
}

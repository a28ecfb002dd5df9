package notify

import (
	"fmt"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxLine is the line length RFC 5322 recommends; encoded headers stay
// within it.
const maxLine = 78

// encodeHeader returns value ready to follow "name: " in a message header.
// Values with a control character (CR and LF above all) are rejected: they
// could end the header and start another. Printable ASCII that fits on one
// line and cannot be mistaken for an encoded-word is returned as is; all else
// becomes RFC 2047 Q encoded-words in UTF-8, folded onto lines of at most
// maxLine characters.
func encodeHeader(name, value string) (string, error) {
	for i, r := range value {
		if r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("%s header: control character %U at byte %d", name, r, i)
		}
	}
	value = strings.ToValidUTF8(value, "\uFFFD")
	if len(name)+2+len(value) <= maxLine && !strings.Contains(value, "=?") && printableASCII(value) {
		return value, nil
	}
	return encodeWords(value, len(name)+2), nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// encodeWords Q-encodes s (valid UTF-8) as encoded-words separated by
// folding whitespace. used is the length of the line before the first word.
// Only letters, digits and "!*+-/" stay literal (the set RFC 2047 §5(3)
// allows in any header), spaces become "_", and a character's bytes are
// never split across words.
func encodeWords(s string, used int) string {
	const open, end = "=?utf-8?q?", "?="
	var b strings.Builder
	b.Grow(len(s)*3 + 16)
	b.WriteString(open)
	room := maxLine - used - len(open) - len(end)
	n := 0
	var enc [utf8.UTFMax * 3]byte
	for _, r := range s {
		e := qEncode(enc[:0], r)
		if n+len(e) > room && n > 0 {
			b.WriteString(end + "\r\n " + open)
			room = maxLine - 1 - len(open) - len(end)
			n = 0
		}
		b.Write(e)
		n += len(e)
	}
	b.WriteString(end)
	return b.String()
}

func qEncode(dst []byte, r rune) []byte {
	const hex = "0123456789ABCDEF"
	switch {
	case r == ' ':
		return append(dst, '_')
	case r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!*+-/", r)):
		return append(dst, byte(r))
	}
	var buf [utf8.UTFMax]byte
	for _, c := range buf[:utf8.EncodeRune(buf[:], r)] {
		dst = append(dst, '=', hex[c>>4], hex[c&0x0f])
	}
	return dst
}

// parseAddress accepts one mailbox ("user@example.com", or with a display
// name, which is dropped) and rejects control characters, so that an
// address can neither inject a header nor an SMTP command.
func parseAddress(field, s string) (string, error) {
	a, err := parseMailbox(field, s)
	if err != nil {
		return "", err
	}
	return a.Address, nil
}

func parseMailbox(field, s string) (*mail.Address, error) {
	if s == "" {
		return nil, fmt.Errorf("%s: empty address", field)
	}
	for i, r := range s {
		if r < 0x20 || r == 0x7f {
			return nil, fmt.Errorf("%s %q: control character %U at byte %d", field, s, r, i)
		}
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", field, s, err)
	}
	return a, nil
}

// formatAddress renders an address header value with a cleaned display
// name; mail.Address quotes or RFC 2047-encodes the name as needed.
func formatAddress(name, addr string) string {
	name = clean(name, maxNameRunes)
	if name == "" {
		return (&mail.Address{Address: addr}).String()
	}
	return (&mail.Address{Name: name, Address: addr}).String()
}

// Caps on the length of strings shown in mails, in runes.
const (
	maxNameRunes   = 64
	maxDeviceRunes = 128
	maxTextRunes   = 1000
)

// clean makes a string that a phone, a directory or a caller chose safe to
// show: invalid UTF-8 becomes U+FFFD; control characters, format characters
// (bidirectional overrides, zero-width characters) and line or paragraph
// separators are removed; runs of white space become one space; the result
// is trimmed and cut to limit runes with an ellipsis.
func clean(s string, limit int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	b.Grow(len(s))
	n := 0
	space := false
	for _, r := range s {
		switch {
		case unicode.Is(unicode.Cc, r) && r != '\t' && r != '\n' && r != '\r',
			unicode.Is(unicode.Cf, r), unicode.Is(unicode.Zl, r), unicode.Is(unicode.Zp, r):
			continue
		case unicode.IsSpace(r):
			space = true
			continue
		}
		sep := space && n > 0
		space = false
		if sep && n+2 > limit || n+1 > limit {
			b.WriteString("…")
			return b.String()
		}
		if sep {
			b.WriteByte(' ')
			n++
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

package psrp

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// CLIXML string encoding (MS-PSRP 2.2.5.1.1 and PowerShell's serializer,
// as pypsrp's recorded Windows traffic shows: "At line:1 char:55_x000D__x000A_+ …"
// in tests/tests_pypsrp/responses/test_psrp_error_failed.yml). A UTF-16
// code unit that XML 1.0 cannot carry or that PowerShell escapes is written
// as _xHHHH_ (four uppercase hex digits): C0 controls (tab, CR and LF
// included), DEL and C1 controls, each half of a surrogate pair (so a
// character above U+FFFF becomes two escapes), U+FFFE and U+FFFF. An
// underscore followed by x or X is written _x005F_ so that a literal
// "_x000A_" survives (the decoder's match is case-insensitive). XML's own
// &, < and > are entity-escaped.
//
// Go strings are UTF-8, which cannot hold a lone surrogate; such a code
// unit is accepted and produced in WTF-8 form (ED A0..BF 80..BF), so that
// every string PowerShell can send round-trips. Any other invalid UTF-8 is
// an error.

// ErrString is wrapped by errors about strings that cannot be encoded.
var ErrString = errors.New("psrp string")

const hexUpper = "0123456789ABCDEF"

func appendEscapeUnit(dst []byte, u uint16) []byte {
	return append(dst, '_', 'x', hexUpper[u>>12], hexUpper[u>>8&0xf], hexUpper[u>>4&0xf], hexUpper[u&0xf], '_')
}

// wtf8Surrogate decodes a WTF-8 encoded surrogate at the front of s.
func wtf8Surrogate(s string) (uint16, bool) {
	if len(s) >= 3 && s[0] == 0xED && s[1] >= 0xA0 && s[1] <= 0xBF && s[2] >= 0x80 && s[2] <= 0xBF {
		return 0xD000 | uint16(s[1]&0x3f)<<6 | uint16(s[2]&0x3f), true
	}
	return 0, false
}

// AppendEscaped appends s as CLIXML element text.
func AppendEscaped(dst []byte, s string) ([]byte, error) {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c < 0x20 || c == 0x7f:
				dst = appendEscapeUnit(dst, uint16(c))
			case c == '_' && i+1 < len(s) && (s[i+1] == 'x' || s[i+1] == 'X'):
				dst = appendEscapeUnit(dst, '_')
			case c == '&':
				dst = append(dst, "&amp;"...)
			case c == '<':
				dst = append(dst, "&lt;"...)
			case c == '>':
				dst = append(dst, "&gt;"...)
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			u, ok := wtf8Surrogate(s[i:])
			if !ok {
				return dst, fmt.Errorf("%w: invalid UTF-8 at byte %d", ErrString, i)
			}
			dst = appendEscapeUnit(dst, u)
			i += 3
			continue
		}
		switch {
		case r >= 0x80 && r <= 0x9f, r == 0xfffe, r == 0xffff:
			dst = appendEscapeUnit(dst, uint16(r))
		case r > 0xffff:
			r -= 0x10000
			dst = appendEscapeUnit(dst, uint16(0xD800+(r>>10)))
			dst = appendEscapeUnit(dst, uint16(0xDC00+(r&0x3ff)))
		default:
			dst = append(dst, s[i:i+n]...)
		}
		i += n
	}
	return dst, nil
}

func unhex4[T ~string | ~[]byte](s T) (uint16, bool) {
	var u uint16
	for i := 0; i < 4; i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		u = u<<4 | uint16(c)
	}
	return u, true
}

// escapeAt reports the code unit of an _xHHHH_ escape at the front of s.
func escapeAt[T ~string | ~[]byte](s T) (uint16, bool) {
	if len(s) < 7 || s[0] != '_' || (s[1] != 'x' && s[1] != 'X') || s[6] != '_' {
		return 0, false
	}
	return unhex4(s[2:6])
}

// AppendUnescaped appends the string that CLIXML text s (already
// XML-unescaped) stands for: _xHHHH_ escapes become their code units,
// surrogate pairs are joined, and a lone surrogate is written as WTF-8.
func AppendUnescaped(dst []byte, s string) []byte { return appendUnescaped(dst, s) }

func appendUnescaped[T ~string | ~[]byte](dst []byte, s T) []byte {
	for {
		i := indexEscape(s)
		if i < 0 {
			return append(dst, s...)
		}
		dst = append(dst, s[:i]...)
		u, _ := escapeAt(s[i:])
		s = s[i+7:]
		if u >= 0xD800 && u <= 0xDBFF {
			if lo, ok := escapeAt(s); ok && lo >= 0xDC00 && lo <= 0xDFFF {
				dst = utf8.AppendRune(dst, 0x10000+(rune(u)-0xD800)<<10+rune(lo)-0xDC00)
				s = s[7:]
				continue
			}
		}
		if u >= 0xD800 && u <= 0xDFFF {
			dst = append(dst, 0xED, 0x80|byte(u>>6&0x3f), 0x80|byte(u&0x3f))
			continue
		}
		dst = utf8.AppendRune(dst, rune(u))
	}
}

func indexEscape[T ~string | ~[]byte](s T) int {
	for i := 0; i+7 <= len(s); i++ {
		if s[i] == '_' {
			if _, ok := escapeAt(s[i:]); ok {
				return i
			}
		}
	}
	return -1
}

// Unescape returns the string CLIXML text s stands for.
func Unescape(s string) string {
	if indexEscape(s) < 0 {
		return s
	}
	return string(AppendUnescaped(make([]byte, 0, len(s)), s))
}

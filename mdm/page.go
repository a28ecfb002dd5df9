package mdm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// errTruncated reports a body that ended before its JSON did: a cut
// connection or a proxy that gave up, never a valid answer.
var errTruncated = errors.New("response body truncated")

// dataError marks an error in the content of a record (a bad field, a
// duplicate id): retrying the request cannot fix it.
type dataError struct{ err error }

func (e *dataError) Error() string { return e.err.Error() }
func (e *dataError) Unwrap() error { return e.err }

// decodePage reads one Graph collection page token by token, so a page is
// never held as bytes: item is called once per element of "value" with the
// decoder positioned at that element and must consume exactly it. It returns
// the page's @odata.nextLink ("" on the last page) and the element count.
// Keys other than "value" and the @odata annotations are skipped; a missing
// "value", anything after the closing brace, or a body that ends early is
// an error.
func decodePage(r io.Reader, item func(dec *json.Decoder) error) (next string, n int, err error) {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return "", 0, err
	}
	sawValue := false
	for dec.More() {
		key, err := stringToken(dec)
		if err != nil {
			return "", n, err
		}
		switch key {
		case "value":
			if sawValue {
				return "", n, errors.New(`page has two "value" members`)
			}
			sawValue = true
			if err := expectDelim(dec, '['); err != nil {
				return "", n, fmt.Errorf("value: %w", err)
			}
			for dec.More() {
				if err := item(dec); err != nil {
					return "", n, err
				}
				n++
			}
			if err := expectDelim(dec, ']'); err != nil {
				return "", n, err
			}
		case "@odata.nextLink":
			tok, err := dec.Token()
			if err != nil {
				return "", n, tokenErr(err)
			}
			s, ok := tok.(string)
			if !ok && tok != nil {
				return "", n, fmt.Errorf("@odata.nextLink is %v, not a string", tok)
			}
			next = s
		default:
			if err := skipValue(dec); err != nil {
				return "", n, err
			}
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return "", n, err
	}
	if !sawValue {
		return "", n, errors.New(`page has no "value" array`)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			return "", n, errors.New("data after the end of the page")
		}
		return "", n, tokenErr(err)
	}
	return next, n, nil
}

// tokenErr turns the decoder's end-of-input errors into errTruncated.
func tokenErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errTruncated
	}
	return err
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return tokenErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("got %v, want %q", tok, string(want))
	}
	return nil
}

func stringToken(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", tokenErr(err)
	}
	s, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("got %v, want an object key", tok)
	}
	return s, nil
}

// skipValue consumes one JSON value of any shape without keeping it.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return tokenErr(err)
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

// decodeItem decodes the element at the decoder into v. Only a value of
// the wrong type is the record's fault (a dataError); a syntax error, a
// body that ends early or a failing connection is the transport's.
func decodeItem(dec *json.Decoder, v any) error {
	err := dec.Decode(v)
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return &dataError{err}
	}
	if err != nil {
		return tokenErr(err)
	}
	return nil
}

package mdm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// pageItems decodes a page the way the Graph source does and returns the ids.
func pageItems(body string) (ids []string, next string, err error) {
	next, n, err := decodePage(strings.NewReader(body), func(dec *json.Decoder) error {
		var d device
		if err := decodeItem(dec, &d); err != nil {
			return err
		}
		ids = append(ids, d.ID)
		return nil
	})
	if err == nil && n != len(ids) {
		return nil, "", errors.New("count mismatch")
	}
	return ids, next, err
}

func TestDecodePage(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		wantIDs  string // comma-joined
		wantNext string
		wantErr  string
	}{
		{"last page", `{"@odata.context":"x","value":[{"id":"a"},{"id":"b","easActivated":true}]}`, "a,b", "", ""},
		{"nextLink after value", `{"value":[{"id":"a"}],"@odata.nextLink":"https://g/n?$skiptoken=1"}`, "a", "https://g/n?$skiptoken=1", ""},
		{"nextLink before value", `{"@odata.nextLink":"https://g/n","value":[{"id":"a"}]}`, "a", "https://g/n", ""},
		{"empty page with nextLink", `{"value":[],"@odata.nextLink":"https://g/n"}`, "", "https://g/n", ""},
		{"null nextLink", `{"value":[],"@odata.nextLink":null}`, "", "", ""},
		{"unknown members skipped", `{"@odata.count":2,"x":{"y":[1,{"z":[]}]},"value":[{"id":"a","extra":{"deep":[1,2]}}]}`, "a", "", ""},
		{"whitespace", " {\n \"value\" : [ { \"id\" : \"a\" } ] }\n", "a", "", ""},
		{"missing value", `{"@odata.nextLink":"https://g/n"}`, "", "", `no "value" array`},
		{"value not an array", `{"value":{}}`, "", "", "value: got {"},
		{"two values", `{"value":[],"value":[]}`, "", "", `two "value"`},
		{"not an object", `[{"id":"a"}]`, "", "", "want \"{\""},
		{"trailing data", `{"value":[]}{"value":[]}`, "", "", "data after the end"},
		{"trailing garbage", `{"value":[]}x`, "", "", "invalid character"},
		{"nextLink a number", `{"value":[],"@odata.nextLink":5}`, "", "", "not a string"},
		{"wrong field type", `{"value":[{"id":5}]}`, "", "", "cannot unmarshal number"},
		{"empty body", ``, "", "", "truncated"},
		{"truncated in value", `{"value":[{"id":"a"},{"id":"b"`, "", "", "truncated"},
		{"truncated after value", `{"value":[{"id":"a"}]`, "", "", "truncated"},
		{"truncated in key", `{"value":[],"@odata.ne`, "", "", "truncated"},
		{"truncated in skipped member", `{"x":[1,2`, "", "", "truncated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ids, next, err := pageItems(tc.body)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("decodePage() error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodePage() error: %v", err)
			}
			if got := strings.Join(ids, ","); got != tc.wantIDs || next != tc.wantNext {
				t.Errorf("decodePage() = %q, %q; want %q, %q", got, next, tc.wantIDs, tc.wantNext)
			}
		})
	}
}

// TestDecodePageStreams checks the decoder works from a reader that hands
// out one byte at a time, as a slow connection does.
func TestDecodePageStreams(t *testing.T) {
	body := `{"value":[{"id":"a"},{"id":"b"}],"@odata.nextLink":"n"}`
	var ids []string
	next, _, err := decodePage(iotest.OneByteReader(strings.NewReader(body)), func(dec *json.Decoder) error {
		var d device
		err := decodeItem(dec, &d)
		ids = append(ids, d.ID)
		return err
	})
	if err != nil || next != "n" || strings.Join(ids, ",") != "a,b" {
		t.Errorf("decodePage() = %v, %q, %v", ids, next, err)
	}
	// A transport error mid-body is reported as itself, not as truncation
	// nor as a fault of the record being read.
	errNet := errors.New("connection reset by peer")
	for _, cut := range []int{1, 12, 20, len(body) - 3} {
		r := io.MultiReader(iotest.OneByteReader(strings.NewReader(body[:cut])), iotest.ErrReader(errNet))
		_, _, err = decodePage(r, func(dec *json.Decoder) error { return decodeItem(dec, &device{}) })
		var de *dataError
		if !errors.Is(err, errNet) || errors.As(err, &de) {
			t.Errorf("cut at %d: decodePage() error = %v, want the reader's", cut, err)
		}
	}
}

// FuzzDecodePage checks the page decoder against encoding/json: whatever it
// accepts is valid JSON with the same items and nextLink, and whatever it
// calls truncated is not valid JSON.
func FuzzDecodePage(f *testing.F) {
	f.Add([]byte(`{"value":[{"id":"a","complianceState":"compliant"}],"@odata.nextLink":"https://graph.microsoft.com/v1.0/x?$skiptoken=1"}`))
	f.Add([]byte(`{"@odata.context":"c","value":[]}`))
	f.Add([]byte(`{"value":[{"id":"a"},{"id":"b"}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ids, next, err := pageItems(string(data))
		if errors.Is(err, errTruncated) && json.Valid(data) {
			t.Fatalf("valid JSON %q reported truncated", data)
		}
		if err != nil {
			return
		}
		if !json.Valid(data) {
			t.Fatalf("decodePage accepted invalid JSON %q", data)
		}
		// Compare with encoding/json reading the same page (keys matched
		// exactly, the last duplicate winning, as decodePage does for
		// nextLink).
		var top map[string]json.RawMessage
		var items []device
		var link *string
		if err := json.Unmarshal(data, &top); err != nil {
			t.Fatalf("decodePage accepted %q; json.Unmarshal: %v", data, err)
		}
		if err := json.Unmarshal(top["value"], &items); err != nil {
			t.Fatalf("decodePage accepted %q; value: %v", data, err)
		}
		if raw, ok := top["@odata.nextLink"]; ok {
			if err := json.Unmarshal(raw, &link); err != nil {
				t.Fatalf("decodePage accepted %q; nextLink: %v", data, err)
			}
		}
		if len(items) != len(ids) {
			t.Fatalf("%q: %d items, encoding/json finds %d", data, len(ids), len(items))
		}
		for i := range ids {
			if ids[i] != items[i].ID {
				t.Fatalf("%q: item %d id %q, encoding/json %q", data, i, ids[i], items[i].ID)
			}
		}
		if link != nil && *link != next || link == nil && next != "" {
			t.Fatalf("%q: nextLink %q, encoding/json %v", data, next, link)
		}
	})
}

// FuzzMembersPage runs a transitiveMembers page through the decoder and
// userMember: it never panics, a kept member is a user with a trimmed
// object id, and an error names the member it is about.
func FuzzMembersPage(f *testing.F) {
	f.Add([]byte(`{"value":[{"@odata.type":"#microsoft.graph.group","id":"c43a7cc9-2d95-44b6-bf6a-6392e41949b4"},` +
		`{"@odata.type":"#microsoft.graph.user","id":"69d035a3-29c9-469f-809d-d21a4ae69e65","userPrincipalName":null,"mail":null}]}`))
	f.Add([]byte(`{"value":[{"@odata.type":"#microsoft.graph.user","id":" 69D035A3-29C9-469F-809D-D21A4AE69E65 ","userPrincipalName":"a@b","mail":"a@b"}]}`))
	f.Add([]byte(`{"value":[{"@odata.type":"#microsoft.graph.user","id":null}]}`))
	f.Add([]byte(`{"value":[{"id":"69d035a3-29c9-469f-809d-d21a4ae69e65"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		n := 0
		_, _, _ = decodePage(bytes.NewReader(data), func(dec *json.Decoder) error {
			var m memberJSON
			if err := decodeItem(dec, &m); err != nil {
				return err
			}
			n++
			mb, ok, err := userMember(&m, n)
			switch {
			case err != nil:
				if ok || !strings.Contains(err.Error(), "member "+strconv.Itoa(n)+":") {
					t.Fatalf("userMember(%+v) = %v, %v", m, ok, err)
				}
			case ok:
				if m.Type != userType || !guidRe.MatchString(mb.ID) || mb.ID != strings.TrimSpace(mb.ID) ||
					mb.UserPrincipalName != strings.TrimSpace(mb.UserPrincipalName) || mb.Mail != strings.TrimSpace(mb.Mail) {
					t.Fatalf("userMember(%+v) kept %+v", m, mb)
				}
			case m.Type == userType:
				t.Fatalf("userMember(%+v) dropped a user without an error", m)
			}
			return err
		})
	})
}

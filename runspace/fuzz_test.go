package runspace

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/easconnector/easconnector/internal/secret"
)

// FuzzDecodeFrame: any line either decodes to a valid frame that survives
// re-encoding unchanged, or is refused with an error; nothing panics.
// Seeds are in testdata/fuzz/FuzzDecodeFrame.
func FuzzDecodeFrame(f *testing.F) {
	for _, fr := range []Frame{
		{Ready: true, Host: "CAS1", Exchange: "Version 15.2 (Build 1544.4)", PS: "5.1.17763.6189"},
		{InitErr: &RemoteError{Type: "System.Management.Automation.PSInvalidOperationException", Msg: "no snap-in"}},
		{ID: 7, Obj: json.RawMessage(`{"DeviceId":"ABC123","FirstSyncTime":"2024-01-02T03:04:05Z"}`)},
		{ID: 7, End: true, Count: 3},
		{ID: 9, Err: &RemoteError{Type: "T", Category: "InvalidArgument", FQID: "X,Y", Msg: "bad"}},
	} {
		line, err := EncodeLine(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(line)
	}
	f.Add([]byte("Exchange banner line\r\n"))
	f.Add([]byte("\xef\xbb\xbfEASC1 eyJyZWFkeSI6dHJ1ZX0=\r\n"))
	f.Add([]byte("EASC1 eyJyZWFk\r\n eSI6dHJ1ZX0=\n"))
	f.Fuzz(func(t *testing.T, line []byte) {
		fr, err := DecodeFrame(line)
		if err != nil {
			if fr.Ready || fr.End || fr.ID != 0 || fr.Obj != nil || fr.Err != nil || fr.InitErr != nil {
				t.Fatalf("DecodeFrame() returned %+v with error %v", fr, err)
			}
			return
		}
		if err := fr.validate(); err != nil {
			t.Fatalf("DecodeFrame() accepted an invalid frame: %v", err)
		}
		enc, err := EncodeLine(fr)
		if err != nil {
			t.Fatalf("EncodeLine(decoded) error = %v", err)
		}
		again, err := DecodeFrame(enc)
		if err != nil {
			t.Fatalf("DecodeFrame(EncodeLine(decoded)) error = %v", err)
		}
		enc2, _ := EncodeLine(again)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("frame changed on a round trip:\n%s\n%s", enc, enc2)
		}
	})
}

// FuzzEncodeRequest: every string a caller puts in a request (identities,
// device ids, filters: hostile data) reaches the bootstrap unchanged, as
// data, on one line. Seeds (PowerShell metacharacters, quotes, NUL,
// newlines, 10 KB strings) are in testdata/fuzz/FuzzEncodeRequest.
func FuzzEncodeRequest(f *testing.F) {
	f.Add("'; Remove-Mailbox x -Confirm:$false; '", "$(Remove-Mailbox -Identity x)", "`$env:USERNAME`n", "ABC123")
	f.Add("O\u2019Brien \u2018quoted\u2019", "line1\nline2\r\nEASC1 eyJpZCI6MX0=", "nul\x00byte", "\"}]},{\"cmd\":\"Remove-Mailbox\"")
	f.Fuzz(func(t *testing.T, identity, filter, mailbox, device string) {
		c := Call{
			Cmd: "Set-CASMailbox",
			Args: map[string]any{
				"Identity":                   identity,
				"ActiveSyncAllowedDeviceIDs": ListEdit{Add: []string{device}, Remove: []string{mailbox}},
				"ActiveSyncBlockedDeviceIDs": []string{device, filter},
			},
			Select: []string{"Identity"},
		}
		valid := utf8.ValidString(identity) && utf8.ValidString(filter) && utf8.ValidString(mailbox) && utf8.ValidString(device)
		if err := checkCall(c); (err == nil) != valid {
			t.Fatalf("checkCall() error = %v, valid UTF-8 = %v", err, valid)
		}
		if !valid {
			if !errors.Is(checkCall(c), ErrInvalidCall) {
				t.Fatalf("checkCall() error is not ErrInvalidCall")
			}
			return
		}
		line, err := EncodeLine(Request{ID: 42, Cmd: c.Cmd, Args: c.Args, Select: c.Select})
		if err != nil {
			t.Fatalf("EncodeLine() error = %v", err)
		}
		// One line: the tag, base64 only, one trailing newline.
		payload, ok := bytes.CutPrefix(line, []byte(FrameTag))
		if !ok || !bytes.HasSuffix(payload, []byte("\n")) {
			t.Fatalf("EncodeLine() = %q, want tag … newline", line)
		}
		payload = payload[:len(payload)-1]
		if bytes.ContainsFunc(payload, func(r rune) bool {
			return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '+' || r == '/' || r == '=')
		}) {
			t.Fatalf("payload holds non-base64 bytes: %q", payload)
		}
		raw, err := base64.StdEncoding.DecodeString(string(payload))
		if err != nil {
			t.Fatal(err)
		}
		// The JSON has exactly the structure we built: no value escaped
		// its string into a key or another field.
		var shape struct {
			ID     uint64                     `json:"id"`
			Cmd    string                     `json:"cmd"`
			Args   map[string]json.RawMessage `json:"args"`
			Select []string                   `json:"select"`
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&shape); err != nil {
			t.Fatalf("request JSON: %v", err)
		}
		if keys := slices.Sorted(maps.Keys(shape.Args)); !slices.Equal(keys, []string{
			"ActiveSyncAllowedDeviceIDs", "ActiveSyncBlockedDeviceIDs", "Identity"}) {
			t.Fatalf("args keys = %q", keys)
		}
		req, err := DecodeRequest(line)
		if err != nil {
			t.Fatalf("DecodeRequest() error = %v", err)
		}
		if req.ID != 42 || req.Cmd != c.Cmd || !slices.Equal(req.Select, c.Select) {
			t.Fatalf("DecodeRequest() = %+v", req)
		}
		if req.Args["Identity"] != identity {
			t.Fatalf("Identity changed: %q", req.Args["Identity"])
		}
		// What Go let through, the bootstrap's checks accept too.
		if _, err := CheckWireArgs(req.Cmd, req.Args); err != nil {
			t.Fatalf("CheckWireArgs() error = %v", err)
		}
		edit, _ := req.Args["ActiveSyncAllowedDeviceIDs"].(map[string]any)
		if add, _ := edit["add"].([]any); len(add) != 1 || add[0] != device {
			t.Fatalf("ListEdit.Add = %#v, want [%q]", edit["add"], device)
		}
		if rem, _ := edit["remove"].([]any); len(rem) != 1 || rem[0] != mailbox {
			t.Fatalf("ListEdit.Remove = %#v, want [%q]", edit["remove"], mailbox)
		}
		if list, _ := req.Args["ActiveSyncBlockedDeviceIDs"].([]any); len(list) != 2 || list[0] != device || list[1] != filter {
			t.Fatalf("list = %#v", req.Args["ActiveSyncBlockedDeviceIDs"])
		}
	})
}

// FuzzSessionConfigEncode: the second-hop password always comes back
// from its own line and is never part of the config JSON.
func FuzzSessionConfigEncode(f *testing.F) {
	f.Add(`CONTOSO\svc`, "Pa55w0rd")
	f.Add("svc@contoso.com", "\"},{\"password\":\"x\n'$(whoami)'\x00ü")
	f.Fuzz(func(t *testing.T, user, password string) {
		if user == "" || !utf8.ValidString(user) {
			return
		}
		out, err := SessionConfig{Mode: ModeRemoting, ConnectionURI: "http://cas1/PowerShell/", User: user, Password: secret.New(password)}.Encode()
		if err != nil {
			t.Fatal(err)
		}
		lines := bytes.SplitAfter(out, []byte("\n"))
		if len(lines) != 3 || len(lines[2]) != 0 {
			t.Fatalf("Encode() = %q, want two lines", out)
		}
		var raw map[string]any
		if err := decodePayload(lines[0], &raw); err != nil {
			t.Fatal(err)
		}
		if _, ok := raw["password"]; ok || raw["user"] != user || len(raw) != 3 {
			t.Fatalf("config JSON = %v", raw)
		}
		if got, err := DecodePasswordLine(lines[1]); err != nil || got.Reveal() != password {
			t.Fatalf("DecodePasswordLine() = %q, %v, want %q", got.Reveal(), err, password)
		}
	})
}

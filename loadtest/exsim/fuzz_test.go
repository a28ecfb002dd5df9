package exsim

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
	"github.com/easconnector/easconnector/runspace"
)

// FuzzAppendJSONString checks the object encoder's string writer: any
// string (device-supplied, so hostile) becomes valid JSON that decodes to
// the string with each invalid UTF-8 byte replaced by U+FFFD.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `quote " backslash \ slash /`, "ctl \x00\x01\x1f\x7f", "\xff\xfe\xfd", "日本語 §", "\u2028\u2029", "<script>&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("appendJSONString(%q) = %s: invalid JSON: %v", s, out, err)
		}
		if want := string([]rune(s)); got != want {
			t.Fatalf("appendJSONString(%q) decodes to %q, want %q", s, got, want)
		}
	})
}

// FuzzRequestLine feeds one arbitrary request payload (the JSON inside a
// tagged line) to the worker after a normal session start. Whatever it
// holds, the worker answers with well-formed frames and keeps serving: a
// second, valid request still gets its end frame.
func FuzzRequestLine(f *testing.F) {
	for _, s := range []string{
		`{"id":1,"cmd":"Get-MobileDevice","args":{"ResultSize":"Unlimited","Filter":"DeviceId -like '*'"},"select":["DeviceId"]}`,
		`{"id":2,"cmd":"Set-CASMailbox","args":{"Identity":"alice","ActiveSyncAllowedDeviceIDs":{"add":["x"],"remove":null}}}`,
		`{"id":3,"cmd":"Set-CASMailbox","args":{"Identity":["a",{"b":1}],"ActiveSyncEnabled":"yes"}}`,
		`{"id":4,"cmd":"New-ActiveSyncDeviceAccessRule","args":{"Characteristic":3,"QueryString":"'; rm","AccessLevel":1.5},"select":["Name"]}`,
		`{"id":5,"cmd":"Get-CASMailbox","args":{"ResultSize":-1,"Filter":null,"ident":true}}`,
		`{"id":6,"cmd":"get-exchangeserver","select":["Name","name",""]}`,
		`{"id":0,"cmd":""}`,
		`not json`,
	} {
		f.Add([]byte(s))
	}
	s, err := New(Options{Quiet: true})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	smallOrg(f, s)
	cfg, _ := runspace.EncodeLine(snapin())
	probe, _ := runspace.EncodeLine(runspace.Request{ID: 424242, Cmd: "Get-ExchangeServer", Select: []string{"Name"}})
	f.Fuzz(func(t *testing.T, payload []byte) {
		stdin := string(runspace.Stage1Line()) + string(cfg) + runspace.FrameTag + base64.StdEncoding.EncodeToString(payload) + "\n" + string(probe)
		var out strings.Builder
		code := s.Runner(0).Run(context.Background(), wsman.Command{User: DefaultUser, Name: runspace.PowerShellExe, Args: runspace.CommandArgs()},
			strings.NewReader(stdin), &out, io.Discard)
		if code != exitOK {
			t.Fatalf("exit %d for %q", code, payload)
		}
		lines := strings.SplitAfter(out.String(), "\n")
		var last runspace.Frame
		for _, l := range lines {
			if l == "" {
				continue
			}
			f, err := runspace.DecodeFrame([]byte(l))
			switch {
			case errors.Is(err, runspace.ErrUntagged):
				continue
			case err != nil && strings.Contains(err.Error(), "response without request id"):
				continue // the bootstrap's answer to an undecodable request
			case err != nil:
				t.Fatalf("bad frame %q for %q: %v", l, payload, err)
			}
			last = f
		}
		if last.ID != 424242 || !last.End || last.Count != 1 {
			t.Fatalf("probe after %q answered %+v", payload, last)
		}
	})
}

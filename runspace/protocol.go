package runspace

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/easconnector/easconnector/internal/secret"
)

// The runspace wire protocol (DESIGN.md §3). Every protocol line on the
// PowerShell process's stdin and stdout is FrameTag followed by the standard
// base64 encoding of one UTF-8 JSON object, then "\n". Base64 makes the lines
// immune to code pages and console wrapping; the tag lets the reader tell
// protocol lines from diagnostics (banners, warnings) printed by Exchange.

// FrameTag prefixes every protocol line, in both directions.
const FrameTag = "EASC1 "

// MaxLineBytes bounds one protocol line. A longer line is a protocol error:
// it protects the reader from a runaway process.
const MaxLineBytes = 16 << 20

// ErrUntagged is returned by DecodeFrame for a line that is not a protocol
// line. Such lines are diagnostics, not errors of the session.
var ErrUntagged = errors.New("untagged line")

// Request is one cmdlet invocation, sent as one line.
//
// Args maps parameter names to values that the bootstrap binds as data by
// splatting (see Call.Args and CheckWireArgs). Allowed value types:
// string, bool (true = switch present), numbers, []string, ListEdit
// (becomes @{Add=…;Remove=…}), ClearList ({"clear":true}, becomes $null for
// a multi-valued parameter) and nil ($null, single-valued parameters only).
type Request struct {
	ID     uint64         `json:"id"`
	Cmd    string         `json:"cmd"`
	Args   map[string]any `json:"args,omitempty"`
	Select []string       `json:"select,omitempty"`
}

// ListEdit is the wire form of a multi-valued property edit,
// @{Add=…;Remove=…} in PowerShell.
type ListEdit struct {
	Add    []string `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

// RemoteError describes a PowerShell ErrorRecord or an initialisation failure.
type RemoteError struct {
	Type     string `json:"type,omitempty"`     // exception type name
	Category string `json:"category,omitempty"` // ErrorCategoryInfo.Category
	FQID     string `json:"fqid,omitempty"`     // FullyQualifiedErrorId
	Msg      string `json:"msg"`
}

func (e *RemoteError) Error() string {
	if e.Type != "" {
		return e.Type + ": " + e.Msg
	}
	return e.Msg
}

// Frame is one line written by the bootstrap. Exactly one of the following
// shapes is set:
//   - Ready: the bootstrap loaded Exchange; Host, Exchange and PS describe it.
//   - InitErr: the bootstrap could not load Exchange; the session is unusable.
//   - Obj: one output object of request ID.
//   - End: request ID finished successfully after Count objects.
//   - Err: request ID failed (objects already sent stay valid).
type Frame struct {
	ID       uint64          `json:"id,omitempty"`
	Obj      json.RawMessage `json:"obj,omitempty"`
	End      bool            `json:"end,omitempty"`
	Count    int             `json:"count,omitempty"`
	Err      *RemoteError    `json:"err,omitempty"`
	Ready    bool            `json:"ready,omitempty"`
	InitErr  *RemoteError    `json:"initerr,omitempty"`
	Host     string          `json:"host,omitempty"`
	Exchange string          `json:"exchange,omitempty"`
	PS       string          `json:"ps,omitempty"`
}

// SessionConfig is the second stdin line, read by stage 1 before it loads
// Exchange. It is data, decoded with ConvertFrom-Json, never executed.
//
// User and Password, when set, are the credential stage 1 passes to
// New-PSSession in remoting mode. A WinRM shell opened with NTLM or Kerberos
// holds no credential it could forward, so the second hop to the
// /PowerShell endpoint (even on the same server) fails without one; passing
// it explicitly is the method that needs no delegation set up in AD. The
// lines travel over the WinRM channel only, so they are sent only over
// verified HTTPS.
//
// The password is not part of the JSON: ConvertFrom-Json is a cmdlet, and
// PowerShell module logging (event 4103) records every cmdlet's parameters.
// Encode writes it on a third line, FrameTag + base64(UTF-8), which the
// bootstrap reads and decodes with .NET methods only
// ([Convert]::FromBase64String, UTF8.GetString). It is a secret.String, so
// a SessionConfig printed or logged shows no password.
type SessionConfig struct {
	Mode          string        `json:"mode"`          // "remoting" or "snapin"
	ConnectionURI string        `json:"connectionUri"` // remoting: http://<cas>/PowerShell/
	User          string        `json:"user,omitempty"`
	Password      secret.String `json:"-"` // sent on its own line after the config, when User is set
}

// Encode returns the config line and, when User is set, the password line.
func (c SessionConfig) Encode() ([]byte, error) {
	line, err := EncodeLine(c)
	if err != nil {
		return nil, err
	}
	if c.User == "" {
		return line, nil
	}
	line = append(line, FrameTag...)
	line = base64.StdEncoding.AppendEncode(line, []byte(c.Password.Reveal()))
	return append(line, '\n'), nil
}

// DecodePasswordLine decodes the line that follows a SessionConfig with a
// User (the simulator's side).
func DecodePasswordLine(line []byte) (secret.String, error) {
	line = bytes.TrimRight(line, "\r\n")
	payload, ok := bytes.CutPrefix(line, []byte(FrameTag))
	if !ok {
		return secret.String{}, errors.New("password line: not tagged")
	}
	pw, err := base64.StdEncoding.DecodeString(string(payload))
	if err != nil {
		return secret.String{}, fmt.Errorf("password line: %w", err)
	}
	return secret.New(string(pw)), nil
}

// EncodeLine returns FrameTag + base64(JSON(v)) + "\n".
func EncodeLine(v any) ([]byte, error) {
	js, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode frame: %w", err)
	}
	n := len(FrameTag) + base64.StdEncoding.EncodedLen(len(js)) + 1
	out := make([]byte, n)
	copy(out, FrameTag)
	base64.StdEncoding.Encode(out[len(FrameTag):], js)
	out[n-1] = '\n'
	return out, nil
}

// decodePayload strips the tag, whitespace inside the payload (consoles may
// wrap long lines) and decodes the base64 JSON into v.
func decodePayload(line []byte, v any) error {
	line = bytes.TrimRight(line, "\r\n")
	// A BOM may precede the first line of a Windows console stream.
	line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf"))
	if !bytes.HasPrefix(line, []byte(FrameTag)) {
		return ErrUntagged
	}
	if len(line) > MaxLineBytes {
		return fmt.Errorf("frame of %d bytes exceeds limit of %d", len(line), MaxLineBytes)
	}
	payload := line[len(FrameTag):]
	if bytes.ContainsAny(payload, " \t\r\n") {
		payload = bytes.Map(func(r rune) rune {
			switch r {
			case ' ', '\t', '\r', '\n':
				return -1
			}
			return r
		}, payload)
	}
	raw := make([]byte, base64.StdEncoding.DecodedLen(len(payload)))
	n, err := base64.StdEncoding.Decode(raw, payload)
	if err != nil {
		return fmt.Errorf("frame base64: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw[:n]))
	dec.UseNumber() // as DecodeRequest documents: numbers in Args lose nothing
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("frame json: %w", err)
	}
	if dec.More() {
		return errors.New("frame json: trailing data")
	}
	return nil
}

// DecodeFrame decodes one line written by the bootstrap. It returns
// ErrUntagged for diagnostics lines.
func DecodeFrame(line []byte) (Frame, error) {
	var f Frame
	if err := decodePayload(line, &f); err != nil {
		return Frame{}, err
	}
	if err := f.validate(); err != nil {
		return Frame{}, err
	}
	return f, nil
}

func (f *Frame) validate() error {
	shapes := 0
	if f.Ready {
		shapes++
	}
	if f.InitErr != nil {
		shapes++
	}
	if f.Obj != nil {
		shapes++
	}
	if f.End {
		shapes++
	}
	if f.Err != nil {
		shapes++
	}
	if shapes != 1 {
		return fmt.Errorf("frame: want exactly one of ready, initerr, obj, end, err; got %d", shapes)
	}
	if (f.Obj != nil || f.End || f.Err != nil) && f.ID == 0 {
		return errors.New("frame: response without request id")
	}
	if f.Count < 0 {
		return fmt.Errorf("frame: negative count %d", f.Count)
	}
	return nil
}

// DecodeRequest decodes one request line (the simulator's side). Numbers in
// Args decode as json.Number so that nothing is lost.
func DecodeRequest(line []byte) (Request, error) {
	var r Request
	if err := decodePayload(line, &r); err != nil {
		return Request{}, err
	}
	if r.ID == 0 {
		return Request{}, errors.New("request: missing id")
	}
	if r.Cmd == "" {
		return Request{}, errors.New("request: missing cmd")
	}
	return r, nil
}

// DecodeSessionConfig decodes the SessionConfig line.
func DecodeSessionConfig(line []byte) (SessionConfig, error) {
	var c SessionConfig
	if err := decodePayload(line, &c); err != nil {
		return SessionConfig{}, err
	}
	return c, nil
}

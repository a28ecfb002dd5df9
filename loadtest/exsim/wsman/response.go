package wsman

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Response actions.
const (
	actionCreateResponse  = nsTransfer + "/CreateResponse"
	actionDeleteResponse  = nsTransfer + "/DeleteResponse"
	actionCommandResponse = nsShell + "/CommandResponse"
	actionSendResponse    = nsShell + "/SendResponse"
	actionReceiveResponse = nsShell + "/ReceiveResponse"
	actionSignalResponse  = nsShell + "/SignalResponse"
)

const envelopeOpen = `<s:Envelope xml:lang="en-US" xmlns:s="` + nsSOAP + `" xmlns:a="` + nsAddressing +
	`" xmlns:x="` + nsTransfer + `" xmlns:w="` + nsWSMan + `" xmlns:rsp="` + nsShell + `" xmlns:p="` + nsWSManMS + `">`

// escape writes s as XML character data (also safe inside attribute values).
func escape(b *bytes.Buffer, s string) {
	_ = xml.EscapeText(b, []byte(s)) // bytes.Buffer writes cannot fail
}

func writeEnvelopeStart(b *bytes.Buffer, action, relatesTo string) {
	b.WriteString(envelopeOpen)
	b.WriteString(`<s:Header><a:Action>`)
	escape(b, action)
	b.WriteString(`</a:Action><a:MessageID>uuid:`)
	b.WriteString(newGUID())
	b.WriteString(`</a:MessageID><a:To>` + anonymousReplyTo + `</a:To>`)
	if relatesTo != "" {
		b.WriteString(`<a:RelatesTo>`)
		escape(b, relatesTo)
		b.WriteString(`</a:RelatesTo>`)
	}
	b.WriteString(`</s:Header><s:Body>`)
}

func writeEnvelopeEnd(b *bytes.Buffer) {
	b.WriteString(`</s:Body></s:Envelope>`)
}

// newGUID returns a random (version 4) GUID in Windows' upper-case form.
func newGUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails (it crashes the program instead)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return strings.ToUpper(string(s[:]))
}

// xsDuration formats d as WinRM does in rsp:IdleTimeOut ("PT7200.000S").
func xsDuration(d time.Duration) string {
	return fmt.Sprintf("PT%.3fS", d.Seconds())
}

// xsDayTime formats d as WinRM does in rsp:ShellRunTime ("P0DT0H0M1S").
func xsDayTime(d time.Duration) string {
	d = d.Truncate(time.Second)
	days := d / (24 * time.Hour)
	d -= days * 24 * time.Hour
	h := d / time.Hour
	d -= h * time.Hour
	m := d / time.Minute
	d -= m * time.Minute
	return fmt.Sprintf("P%dDT%dH%dM%dS", days, h, m, d/time.Second)
}

type createResult struct {
	address  string
	shellID  string
	owner    string
	clientIP string
	idle     time.Duration
}

func marshalCreateResponse(relatesTo string, r createResult) []byte {
	var b bytes.Buffer
	writeEnvelopeStart(&b, actionCreateResponse, relatesTo)
	b.WriteString(`<x:ResourceCreated><a:Address>`)
	escape(&b, r.address)
	b.WriteString(`</a:Address><a:ReferenceParameters><w:ResourceURI>` + resourceURICmd +
		`</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">`)
	b.WriteString(r.shellID)
	b.WriteString(`</w:Selector></w:SelectorSet></a:ReferenceParameters></x:ResourceCreated><rsp:Shell><rsp:ShellId>`)
	b.WriteString(r.shellID)
	b.WriteString(`</rsp:ShellId><rsp:ResourceUri>` + resourceURICmd + `</rsp:ResourceUri><rsp:Owner>`)
	escape(&b, r.owner)
	b.WriteString(`</rsp:Owner><rsp:ClientIP>`)
	escape(&b, r.clientIP)
	b.WriteString(`</rsp:ClientIP><rsp:IdleTimeOut>`)
	b.WriteString(xsDuration(r.idle))
	b.WriteString(`</rsp:IdleTimeOut><rsp:InputStreams>stdin</rsp:InputStreams>` +
		`<rsp:OutputStreams>stdout stderr</rsp:OutputStreams><rsp:ShellRunTime>`)
	b.WriteString(xsDayTime(0))
	b.WriteString(`</rsp:ShellRunTime><rsp:ShellInactivity>`)
	b.WriteString(xsDayTime(0))
	b.WriteString(`</rsp:ShellInactivity></rsp:Shell>`)
	writeEnvelopeEnd(&b)
	return b.Bytes()
}

func marshalCommandResponse(relatesTo, commandID string) []byte {
	var b bytes.Buffer
	writeEnvelopeStart(&b, actionCommandResponse, relatesTo)
	b.WriteString(`<rsp:CommandResponse><rsp:CommandId>`)
	b.WriteString(commandID)
	b.WriteString(`</rsp:CommandId></rsp:CommandResponse>`)
	writeEnvelopeEnd(&b)
	return b.Bytes()
}

func marshalEmptyResponse(action, relatesTo, element string) []byte {
	var b bytes.Buffer
	writeEnvelopeStart(&b, action, relatesTo)
	b.WriteString(element)
	writeEnvelopeEnd(&b)
	return b.Bytes()
}

// receiveChunk is what one ReceiveResponse carries.
type receiveChunk struct {
	commandID string
	streams   []string // requested streams, in request order
	stdout    []byte
	stderr    []byte
	done      bool
	exitCode  int
}

// receiveOverhead is the size of a ReceiveResponse without stream payloads:
// it is computed from the real rendering, so the payload budget is exact.
func receiveOverhead(relatesTo, commandID string, streams []string) int {
	return len(marshalReceiveResponse(relatesTo, receiveChunk{
		commandID: commandID,
		streams:   streams,
		done:      true,
		exitCode:  -2147483648, // the longest exit code rendering
	}))
}

func marshalReceiveResponse(relatesTo string, c receiveChunk) []byte {
	var b bytes.Buffer
	b.Grow(1024 + base64.StdEncoding.EncodedLen(len(c.stdout)) + base64.StdEncoding.EncodedLen(len(c.stderr)))
	writeEnvelopeStart(&b, actionReceiveResponse, relatesTo)
	b.WriteString(`<rsp:ReceiveResponse>`)
	for _, name := range c.streams {
		data := c.stdout
		if name == "stderr" {
			data = c.stderr
		}
		if len(data) == 0 && !c.done {
			continue
		}
		b.WriteString(`<rsp:Stream Name="`)
		b.WriteString(name)
		b.WriteString(`" CommandId="`)
		b.WriteString(c.commandID)
		if c.done {
			b.WriteString(`" End="true`)
		}
		b.WriteString(`">`)
		enc := base64.NewEncoder(base64.StdEncoding, &b)
		_, _ = enc.Write(data) // writes to a bytes.Buffer cannot fail
		_ = enc.Close()
		b.WriteString(`</rsp:Stream>`)
	}
	b.WriteString(`<rsp:CommandState CommandId="`)
	b.WriteString(c.commandID)
	if c.done {
		b.WriteString(`" State="` + stateDone + `"><rsp:ExitCode>`)
		b.WriteString(strconv.Itoa(c.exitCode))
		b.WriteString(`</rsp:ExitCode></rsp:CommandState>`)
	} else {
		b.WriteString(`" State="` + stateRunning + `"></rsp:CommandState>`)
	}
	b.WriteString(`</rsp:ReceiveResponse>`)
	writeEnvelopeEnd(&b)
	return b.Bytes()
}

const actionGetResponse = nsTransfer + "/GetResponse"

// getConfig answers a Get of the service configuration with the limits this
// server enforces, in the shape of a Windows answer (pypsrp
// test_wsman_update_envelope_size_4096.yml; only the settings the server
// models are listed).
func (s *Server) getConfig(req *request) []byte {
	var b bytes.Buffer
	writeEnvelopeStart(&b, actionGetResponse, req.messageID)
	fmt.Fprintf(&b, `<cfg:Config xmlns:cfg="%s"><cfg:MaxEnvelopeSizekb>%d</cfg:MaxEnvelopeSizekb><cfg:MaxTimeoutms>%d</cfg:MaxTimeoutms>`+
		`<cfg:Service><cfg:MaxConcurrentOperationsPerUser>%d</cfg:MaxConcurrentOperationsPerUser></cfg:Service>`+
		`<cfg:Winrs><cfg:IdleTimeout>%d</cfg:IdleTimeout><cfg:MaxProcessesPerShell>%d</cfg:MaxProcessesPerShell><cfg:MaxShellsPerUser>%d</cfg:MaxShellsPerUser></cfg:Winrs></cfg:Config>`,
		resourceURIConfig, s.opts.MaxEnvelopeKB, s.opts.MaxTimeout.Milliseconds(), s.opts.MaxOperationsPerUser,
		max(s.opts.IdleTimeout, 0).Milliseconds(), s.opts.MaxProcessesPerShell, s.opts.MaxShellsPerUser)
	writeEnvelopeEnd(&b)
	return b.Bytes()
}

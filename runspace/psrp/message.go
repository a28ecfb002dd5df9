package psrp

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Destination says which side a message is for (MS-PSRP 2.2.1).
type Destination uint32

// Destinations.
const (
	DestinationClient Destination = 0x00000001
	DestinationServer Destination = 0x00000002
)

// MessageType is a PSRP message type (MS-PSRP 2.2.1).
type MessageType uint32

// Every message type of MS-PSRP 2.2.1.
const (
	SessionCapability        MessageType = 0x00010002
	InitRunspacePool         MessageType = 0x00010004
	PublicKey                MessageType = 0x00010005
	EncryptedSessionKey      MessageType = 0x00010006
	PublicKeyRequest         MessageType = 0x00010007
	ConnectRunspacePool      MessageType = 0x00010008
	SetMaxRunspaces          MessageType = 0x00021002
	SetMinRunspaces          MessageType = 0x00021003
	RunspaceAvailability     MessageType = 0x00021004
	RunspacePoolState        MessageType = 0x00021005
	CreatePipeline           MessageType = 0x00021006
	GetAvailableRunspaces    MessageType = 0x00021007
	UserEvent                MessageType = 0x00021008
	ApplicationPrivateData   MessageType = 0x00021009
	GetCommandMetadata       MessageType = 0x0002100A
	RunspacePoolInitData     MessageType = 0x0002100B
	ResetRunspaceState       MessageType = 0x0002100C
	RunspacePoolHostCall     MessageType = 0x00021100
	RunspacePoolHostResponse MessageType = 0x00021101
	PipelineInput            MessageType = 0x00041002
	EndOfPipelineInput       MessageType = 0x00041003
	PipelineOutput           MessageType = 0x00041004
	ErrorRecord              MessageType = 0x00041005
	PipelineState            MessageType = 0x00041006
	DebugRecord              MessageType = 0x00041007
	VerboseRecord            MessageType = 0x00041008
	WarningRecord            MessageType = 0x00041009
	ProgressRecord           MessageType = 0x00041010
	InformationRecord        MessageType = 0x00041011
	PipelineHostCall         MessageType = 0x00041100
	PipelineHostResponse     MessageType = 0x00041101
)

var typeNames = map[MessageType]string{
	SessionCapability: "SESSION_CAPABILITY", InitRunspacePool: "INIT_RUNSPACEPOOL", PublicKey: "PUBLIC_KEY",
	EncryptedSessionKey: "ENCRYPTED_SESSION_KEY", PublicKeyRequest: "PUBLIC_KEY_REQUEST",
	ConnectRunspacePool: "CONNECT_RUNSPACEPOOL", SetMaxRunspaces: "SET_MAX_RUNSPACES",
	SetMinRunspaces: "SET_MIN_RUNSPACES", RunspaceAvailability: "RUNSPACE_AVAILABILITY",
	RunspacePoolState: "RUNSPACEPOOL_STATE", CreatePipeline: "CREATE_PIPELINE",
	GetAvailableRunspaces: "GET_AVAILABLE_RUNSPACES", UserEvent: "USER_EVENT",
	ApplicationPrivateData: "APPLICATION_PRIVATE_DATA", GetCommandMetadata: "GET_COMMAND_METADATA",
	RunspacePoolInitData: "RUNSPACEPOOL_INIT_DATA", ResetRunspaceState: "RESET_RUNSPACE_STATE",
	RunspacePoolHostCall: "RUNSPACEPOOL_HOST_CALL", RunspacePoolHostResponse: "RUNSPACEPOOL_HOST_RESPONSE",
	PipelineInput: "PIPELINE_INPUT", EndOfPipelineInput: "END_OF_PIPELINE_INPUT",
	PipelineOutput: "PIPELINE_OUTPUT", ErrorRecord: "ERROR_RECORD", PipelineState: "PIPELINE_STATE",
	DebugRecord: "DEBUG_RECORD", VerboseRecord: "VERBOSE_RECORD", WarningRecord: "WARNING_RECORD",
	ProgressRecord: "PROGRESS_RECORD", InformationRecord: "INFORMATION_RECORD",
	PipelineHostCall: "PIPELINE_HOST_CALL", PipelineHostResponse: "PIPELINE_HOST_RESPONSE",
}

func (t MessageType) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("MessageType(%#08x)", uint32(t))
}

// Known reports whether t is one of the types of MS-PSRP 2.2.1.
func (t MessageType) Known() bool { _, ok := typeNames[t]; return ok }

// GUID is a GUID in its canonical (string) byte order. On the wire PSRP
// writes GUIDs as .NET does (Guid.ToByteArray): the first three groups
// little-endian, the last eight bytes as they are (MS-PSRP 2.2.1).
type GUID [16]byte

// NewGUID returns a random (version 4) GUID.
func NewGUID() GUID {
	var g GUID
	_, _ = rand.Read(g[:]) // crypto/rand.Read never fails (Go 1.24+)
	g[6] = g[6]&0x0f | 0x40
	g[8] = g[8]&0x3f | 0x80
	return g
}

// ParseGUID accepts the 8-4-4-4-12 hex form, with or without braces, in
// either case.
func ParseGUID(s string) (GUID, error) {
	t := strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	var g GUID
	if len(t) != 36 || t[8] != '-' || t[13] != '-' || t[18] != '-' || t[23] != '-' {
		return g, fmt.Errorf("guid %q: want 8-4-4-4-12 hex digits", s)
	}
	h := t[0:8] + t[9:13] + t[14:18] + t[19:23] + t[24:]
	if _, err := hex.Decode(g[:], []byte(h)); err != nil {
		return g, fmt.Errorf("guid %q: %w", s, err)
	}
	return g, nil
}

// String is the uppercase 8-4-4-4-12 form WinRM uses for ShellId and
// CommandId.
func (g GUID) String() string {
	const digits = "0123456789ABCDEF"
	b := make([]byte, 0, 36)
	for i, c := range g {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, digits[c>>4], digits[c&0xf])
	}
	return string(b)
}

// IsZero reports whether g is the nil GUID.
func (g GUID) IsZero() bool { return g == GUID{} }

func (g GUID) putNET(b []byte) {
	b[0], b[1], b[2], b[3] = g[3], g[2], g[1], g[0]
	b[4], b[5] = g[5], g[4]
	b[6], b[7] = g[7], g[6]
	copy(b[8:16], g[8:])
}

func guidFromNET(b []byte) GUID {
	var g GUID
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	copy(g[8:], b[8:16])
	return g
}

// MessageHeaderSize is the size of a message header: destination (4),
// message type (4), RPID (16) and PID (16) (MS-PSRP 2.2.1).
const MessageHeaderSize = 40

// utf8BOM prefixes the data of messages written by Windows.
const utf8BOM = "\xef\xbb\xbf"

// ErrMessage is wrapped by every message-layer error.
var ErrMessage = errors.New("psrp message")

// Message is one PSRP message (MS-PSRP 2.2.1). Data is the CLIXML of the
// message's object (without the UTF-8 byte order mark Windows prefixes).
type Message struct {
	Destination Destination
	Type        MessageType
	RPID        GUID // runspace pool
	PID         GUID // pipeline; zero for runspace pool messages
	Data        []byte
}

// AppendMessage appends the wire form of m to dst.
func AppendMessage(dst []byte, m Message) []byte {
	var h [MessageHeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:4], uint32(m.Destination))
	binary.LittleEndian.PutUint32(h[4:8], uint32(m.Type))
	m.RPID.putNET(h[8:24])
	m.PID.putNET(h[24:40])
	dst = append(dst, h[:]...)
	return append(dst, m.Data...)
}

// ParseMessage decodes one message. Data aliases b; a leading UTF-8 byte
// order mark is dropped.
func ParseMessage(b []byte) (Message, error) {
	if len(b) < MessageHeaderSize {
		return Message{}, fmt.Errorf("%w: %d bytes, want at least %d", ErrMessage, len(b), MessageHeaderSize)
	}
	m := Message{
		Destination: Destination(binary.LittleEndian.Uint32(b[0:4])),
		Type:        MessageType(binary.LittleEndian.Uint32(b[4:8])),
		RPID:        guidFromNET(b[8:24]),
		PID:         guidFromNET(b[24:40]),
		Data:        b[MessageHeaderSize:],
	}
	if m.Destination != DestinationClient && m.Destination != DestinationServer {
		return Message{}, fmt.Errorf("%w: %s: destination %#x", ErrMessage, m.Type, uint32(m.Destination))
	}
	if !m.Type.Known() {
		return Message{}, fmt.Errorf("%w: unknown type %#08x", ErrMessage, uint32(m.Type))
	}
	if len(m.Data) >= 3 && string(m.Data[:3]) == utf8BOM {
		m.Data = m.Data[3:]
	}
	return m, nil
}

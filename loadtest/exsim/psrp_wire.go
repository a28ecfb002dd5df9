package exsim

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The PSRP framing the simulated endpoint speaks: fragments (MS-PSRP 2.2.4)
// carrying messages (MS-PSRP 2.2.1). The server keeps its own small
// implementation, independent of the client's codec, so that a framing bug
// in one is caught by the other and by the pypsrp recordings.

// PSRP message types (MS-PSRP 2.2.1) the endpoint reads or writes.
const (
	msgSessionCapability      uint32 = 0x00010002
	msgInitRunspacePool       uint32 = 0x00010004
	msgPublicKey              uint32 = 0x00010005
	msgSetMaxRunspaces        uint32 = 0x00021002
	msgSetMinRunspaces        uint32 = 0x00021003
	msgRunspaceAvailability   uint32 = 0x00021004
	msgRunspacePoolState      uint32 = 0x00021005
	msgCreatePipeline         uint32 = 0x00021006
	msgGetAvailableRunspaces  uint32 = 0x00021007
	msgApplicationPrivateData uint32 = 0x00021009
	msgGetCommandMetadata     uint32 = 0x0002100A
	msgPipelineInput          uint32 = 0x00041002
	msgEndOfPipelineInput     uint32 = 0x00041003
	msgPipelineOutput         uint32 = 0x00041004
	msgErrorRecord            uint32 = 0x00041005
	msgPipelineState          uint32 = 0x00041006
	msgWarningRecord          uint32 = 0x00041009
	msgProgressRecord         uint32 = 0x00041010
)

// Destinations (MS-PSRP 2.2.1).
const (
	destClient uint32 = 1
	destServer uint32 = 2
)

const (
	fragHeader    = 21 // ObjectId, FragmentId, flags, BlobLength
	msgHeader     = 40 // Destination, MessageType, RPID, PID
	fragFlagStart = 0x1
	fragFlagEnd   = 0x2
)

// utf8BOM prefixes the data of every message Windows sends (pypsrp
// recordings: each server message starts with EF BB BF).
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// psMessage is one PSRP message. RPID and PID keep the 16 bytes as sent:
// the server echoes the client's own bytes, whatever GUID layout it used.
type psMessage struct {
	dest uint32
	typ  uint32
	rpid [16]byte
	pid  [16]byte
	data []byte
}

func parseMessage(b []byte) (psMessage, error) {
	if len(b) < msgHeader {
		return psMessage{}, fmt.Errorf("psrp message: %d bytes, shorter than its %d-byte header", len(b), msgHeader)
	}
	m := psMessage{dest: binary.LittleEndian.Uint32(b[0:4]), typ: binary.LittleEndian.Uint32(b[4:8]), data: b[msgHeader:]}
	copy(m.rpid[:], b[8:24])
	copy(m.pid[:], b[24:40])
	return m, nil
}

func appendMessage(dst []byte, m psMessage) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, m.dest)
	dst = binary.LittleEndian.AppendUint32(dst, m.typ)
	dst = append(dst, m.rpid[:]...)
	dst = append(dst, m.pid[:]...)
	return append(dst, m.data...)
}

// fragmenter splits messages into fragments of at most max blob bytes, with
// object ids counting up from 1 per runspace pool, as Windows numbers them
// (pool and pipelines share one counter: pypsrp test_psrp_with_input.yml).
type fragmenter struct {
	max  int
	next uint64
}

// fragment appends the fragments of msg to dst.
func (f *fragmenter) fragment(dst, msg []byte) []byte {
	f.next++
	id := f.next
	var fid uint64
	for first := true; first || len(msg) > 0; first = false {
		n := min(len(msg), f.max)
		var flags byte
		if fid == 0 {
			flags |= fragFlagStart
		}
		if n == len(msg) {
			flags |= fragFlagEnd
		}
		dst = binary.BigEndian.AppendUint64(dst, id)
		dst = binary.BigEndian.AppendUint64(dst, fid)
		dst = append(dst, flags)
		dst = binary.BigEndian.AppendUint32(dst, uint32(n))
		dst = append(dst, msg[:n]...)
		msg = msg[n:]
		fid++
	}
	return dst
}

// assembler reassembles messages from fragments that may arrive split over
// several Sends, and several per Send.
type assembler struct {
	buf     []byte            // bytes of an incomplete fragment
	partial map[uint64][]byte // message bytes by object id, while incomplete
	nextFID map[uint64]uint64
}

// maxPartial bounds a message being reassembled.
const maxPartial = 64 << 20

var errFragment = errors.New("psrp fragment")

// write consumes b and calls emit for every message it completes.
func (a *assembler) write(b []byte, emit func([]byte) error) error {
	a.buf = append(a.buf, b...)
	for len(a.buf) >= fragHeader {
		n := int(binary.BigEndian.Uint32(a.buf[17:21]))
		if n > maxPartial {
			return fmt.Errorf("%w: blob length %d", errFragment, n)
		}
		if len(a.buf) < fragHeader+n {
			return nil
		}
		id := binary.BigEndian.Uint64(a.buf[0:8])
		fid := binary.BigEndian.Uint64(a.buf[8:16])
		flags := a.buf[16]
		blob := a.buf[fragHeader : fragHeader+n]
		if a.partial == nil {
			a.partial, a.nextFID = map[uint64][]byte{}, map[uint64]uint64{}
		}
		if flags&fragFlagStart != 0 {
			if fid != 0 {
				return fmt.Errorf("%w: object %d: start fragment with id %d", errFragment, id, fid)
			}
			a.partial[id] = nil
		} else if want, ok := a.nextFID[id]; !ok || want != fid {
			return fmt.Errorf("%w: object %d: fragment %d out of order", errFragment, id, fid)
		}
		msg := append(a.partial[id], blob...)
		if len(msg) > maxPartial {
			return fmt.Errorf("%w: object %d: message over %d bytes", errFragment, id, maxPartial)
		}
		a.buf = a.buf[fragHeader+n:]
		if flags&fragFlagEnd != 0 {
			delete(a.partial, id)
			delete(a.nextFID, id)
			if err := emit(msg); err != nil {
				return err
			}
			continue
		}
		a.partial[id] = msg
		a.nextFID[id] = fid + 1
	}
	if len(a.buf) == 0 {
		a.buf = nil
	}
	return nil
}

package psrp

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// FragmentHeaderSize is the size of a fragment header: ObjectId (8),
// FragmentId (8), flags (1) and blob length (4), all big-endian
// (MS-PSRP 2.2.4).
const FragmentHeaderSize = 21

// Fragment flags (MS-PSRP 2.2.4): S marks the first fragment of a message,
// E the last; a message that fits one fragment carries both.
const (
	flagStart = 0x1
	flagEnd   = 0x2
)

// DefaultMaxMessage bounds one reassembled message. Exchange output
// objects are a few KB; 64 MiB leaves room for anything real while keeping
// a hostile server from growing the client without limit.
const DefaultMaxMessage = 64 << 20

// maxPending bounds the messages an Assembler holds half-received at once.
// Windows interleaves at most a handful (one per stream of a pipeline).
const maxPending = 64

// ErrFragment is wrapped by every fragment-layer error.
var ErrFragment = errors.New("psrp fragment")

// Fragment is one fragment of a PSRP message (MS-PSRP 2.2.4).
type Fragment struct {
	ObjectID   uint64
	FragmentID uint64
	Start, End bool
	Blob       []byte
}

// AppendFragment appends the wire form of f to dst.
func AppendFragment(dst []byte, f Fragment) []byte {
	var h [FragmentHeaderSize]byte
	binary.BigEndian.PutUint64(h[0:8], f.ObjectID)
	binary.BigEndian.PutUint64(h[8:16], f.FragmentID)
	if f.Start {
		h[16] |= flagStart
	}
	if f.End {
		h[16] |= flagEnd
	}
	binary.BigEndian.PutUint32(h[17:21], uint32(len(f.Blob)))
	dst = append(dst, h[:]...)
	return append(dst, f.Blob...)
}

// ParseFragment reads one fragment from the front of b and returns it with
// the bytes that follow. The fragment's Blob aliases b.
func ParseFragment(b []byte) (Fragment, []byte, error) {
	if len(b) < FragmentHeaderSize {
		return Fragment{}, nil, fmt.Errorf("%w: header: %d bytes, want %d", ErrFragment, len(b), FragmentHeaderSize)
	}
	f := Fragment{
		ObjectID:   binary.BigEndian.Uint64(b[0:8]),
		FragmentID: binary.BigEndian.Uint64(b[8:16]),
		Start:      b[16]&flagStart != 0,
		End:        b[16]&flagEnd != 0,
	}
	if b[16]&^(flagStart|flagEnd) != 0 {
		return Fragment{}, nil, fmt.Errorf("%w: object %d fragment %d: unknown flags %#x", ErrFragment, f.ObjectID, f.FragmentID, b[16])
	}
	n := binary.BigEndian.Uint32(b[17:21])
	if uint64(n) > uint64(len(b)-FragmentHeaderSize) {
		return Fragment{}, nil, fmt.Errorf("%w: object %d fragment %d: blob length %d, %d bytes left", ErrFragment, f.ObjectID, f.FragmentID, n, len(b)-FragmentHeaderSize)
	}
	end := FragmentHeaderSize + int(n)
	f.Blob = b[FragmentHeaderSize:end:end]
	return f, b[end:], nil
}

// Fragmenter splits messages into fragments of at most MaxFragment bytes
// (header included), numbering objects from 1 up as Windows does. The zero
// value is not usable: set MaxFragment. Not safe for concurrent use.
type Fragmenter struct {
	// MaxFragment is the largest fragment, header included. The WS-Man
	// binding derives it from the server's MaxEnvelopeSize.
	MaxFragment int
	last        uint64
}

// NextObjectID is the ObjectId the next Split will use.
func (f *Fragmenter) NextObjectID() uint64 { return f.last + 1 }

// Split returns the wire form of msg's fragments, one byte slice per
// fragment, under a new ObjectId.
func (f *Fragmenter) Split(msg []byte) ([][]byte, error) {
	blob := f.MaxFragment - FragmentHeaderSize
	if blob < 1 {
		return nil, fmt.Errorf("%w: max fragment size %d leaves no room for data", ErrFragment, f.MaxFragment)
	}
	f.last++
	var out [][]byte
	for id := uint64(0); ; id++ {
		n := min(blob, len(msg))
		fr := Fragment{ObjectID: f.last, FragmentID: id, Start: id == 0, End: n == len(msg), Blob: msg[:n]}
		out = append(out, AppendFragment(make([]byte, 0, FragmentHeaderSize+n), fr))
		msg = msg[n:]
		if fr.End {
			return out, nil
		}
	}
}

// Assembler reassembles messages from fragments that may span several
// Receive responses and interleave with the fragments of other objects. The
// zero value is ready to use with DefaultMaxMessage. Not safe for concurrent
// use.
type Assembler struct {
	// MaxMessage bounds one message; 0 means DefaultMaxMessage.
	MaxMessage int
	pending    map[uint64]*partial
}

type partial struct {
	next uint64 // the FragmentId expected next
	buf  []byte
}

// Pending reports how many messages are partly received.
func (a *Assembler) Pending() int { return len(a.pending) }

// Write parses the fragments in b (one or more whole fragments, as one
// WS-Man stream element carries them) and calls emit with each message
// they complete, in order. The slice given to emit is valid only during
// the call unless the message arrived in a single fragment, in which case
// it aliases b.
func (a *Assembler) Write(b []byte, emit func(msg []byte) error) error {
	limit := a.MaxMessage
	if limit <= 0 {
		limit = DefaultMaxMessage
	}
	for len(b) > 0 {
		f, rest, err := ParseFragment(b)
		if err != nil {
			return err
		}
		b = rest
		p := a.pending[f.ObjectID]
		switch {
		case f.Start && p != nil:
			return fmt.Errorf("%w: object %d: start fragment while %d fragments are pending", ErrFragment, f.ObjectID, p.next)
		case f.Start && f.FragmentID != 0:
			return fmt.Errorf("%w: object %d: start fragment has id %d", ErrFragment, f.ObjectID, f.FragmentID)
		case !f.Start && p == nil:
			return fmt.Errorf("%w: object %d fragment %d: no start fragment", ErrFragment, f.ObjectID, f.FragmentID)
		case !f.Start && f.FragmentID != p.next:
			return fmt.Errorf("%w: object %d: fragment %d, want %d", ErrFragment, f.ObjectID, f.FragmentID, p.next)
		}
		if len(f.Blob) > limit || (p != nil && len(p.buf)+len(f.Blob) > limit) {
			return fmt.Errorf("%w: object %d: message larger than %d bytes", ErrFragment, f.ObjectID, limit)
		}
		if f.Start && f.End {
			if err := emit(f.Blob); err != nil {
				return err
			}
			continue
		}
		if f.Start {
			if len(a.pending) >= maxPending {
				return fmt.Errorf("%w: object %d: more than %d messages pending", ErrFragment, f.ObjectID, maxPending)
			}
			if a.pending == nil {
				a.pending = make(map[uint64]*partial)
			}
			p = &partial{buf: append([]byte(nil), f.Blob...)}
			a.pending[f.ObjectID] = p
		} else {
			p.buf = append(p.buf, f.Blob...)
		}
		p.next = f.FragmentID + 1
		if f.End {
			delete(a.pending, f.ObjectID)
			if err := emit(p.buf); err != nil {
				return err
			}
		}
	}
	return nil
}

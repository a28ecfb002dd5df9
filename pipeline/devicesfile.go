package pipeline

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/easconnector/easconnector/internal/atomicfile"
)

// DevicesFile is the devices list's name in the state directory: the last
// sync's rows (mailbox, device, decision, reason, Exchange's state as read
// and as the lists leave it, compliance), so that a service started after `easconnector sync` runs
// lists the devices before its own first sync ends. It is only shown: a
// quick sync never plans against it.
const DevicesFile = "devices.bin"

// The file's layout, all integers unsigned varints unless noted, strings
// a varint length and UTF-8 bytes:
//
//	"EASCDEV1"                        magic and version
//	saved at (Unix ms), row count
//	4 value tables (decisions, reasons, access states, compliances):
//	    count, then each value        so a row's indexes survive a reordering
//	mailbox count, then per mailbox:
//	    dn, guid, smtp, name, upn, device count, then per device:
//	        id, type, model, then one byte each: decision, reason, state as read,
//	        compliance, state after (the lists' verdict)
//	CRC-32C of everything before it  4 bytes, little endian
//
// 100,000 devices on 50,000 mailboxes take about 9 MB (BenchmarkDevicesFile).
const devicesMagic = "EASCDEV1"

// Bounds of the devices file: a string longer than maxFileString or more
// rows than maxFileRows is not ours.
const (
	maxDevicesBytes = 512 << 20
	maxFileString   = 4096
	maxFileRows     = 4_000_000
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// encodeDevices serialises the rows of b.
func encodeDevices(b *baseline, savedAt time.Time) []byte {
	// One allocation: an upper bound of the size (a length ≤ maxFileString
	// takes at most 2 varint bytes).
	rows, size := 0, 512
	for _, mb := range b.order {
		rows += len(mb.devs)
		size += len(mb.dn) + len(mb.guid) + len(mb.smtp) + len(mb.name) + len(mb.upn) + 5*2 + binary.MaxVarintLen64
		for i := range mb.devs {
			rw := &mb.devs[i]
			size += len(rw.id) + len(rw.typ) + len(rw.model) + 3*2 + 5
		}
	}
	buf := make([]byte, 0, size)
	buf = append(buf, devicesMagic...)
	buf = binary.AppendUvarint(buf, uint64(max(savedAt.UnixMilli(), 0)))
	buf = binary.AppendUvarint(buf, uint64(rows))
	buf = appendTable(buf, decisionList[:])
	buf = appendTable(buf, reasonList[:])
	buf = appendTable(buf, accessStates)
	buf = appendTable(buf, compliances)
	buf = binary.AppendUvarint(buf, uint64(len(b.order)))
	for _, mb := range b.order {
		for _, s := range [...]string{mb.dn, mb.guid, mb.smtp, mb.name, mb.upn} {
			buf = appendString(buf, s)
		}
		buf = binary.AppendUvarint(buf, uint64(len(mb.devs)))
		for i := range mb.devs {
			rw := &mb.devs[i]
			buf = appendString(buf, rw.id)
			buf = appendString(buf, rw.typ)
			buf = appendString(buf, rw.model)
			buf = append(buf, rw.d, rw.r, rw.st, rw.c, rw.after)
		}
	}
	return binary.LittleEndian.AppendUint32(buf, crc32.Checksum(buf, crcTable))
}

func appendString(buf []byte, s string) []byte {
	s = clipUTF8(s, maxFileString)
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

func appendTable[T ~string](buf []byte, list []T) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(list)))
	for _, v := range list {
		buf = appendString(buf, string(v))
	}
	return buf
}

// savedDevices is a decoded devices file.
type savedDevices struct {
	b       *baseline
	savedAt time.Time
}

// decoder reads the devices file, remembering the first error. Strings
// are slices of one copy of the file (s): a fleet's rows cost one
// allocation, not one per field.
type decoder struct {
	data []byte
	s    string
	off  int
	err  error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("offset %d: "+format, append([]any{d.off}, args...)...)
	}
}

func (d *decoder) uvarint(what string, limit uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.data[d.off:])
	if n <= 0 {
		d.fail("%s: bad varint", what)
		return 0
	}
	d.off += n
	if v > limit {
		d.fail("%s: %d exceeds %d", what, v, limit)
		return 0
	}
	return v
}

func (d *decoder) str(what string) string {
	n := int(d.uvarint(what+" length", maxFileString))
	if d.err != nil {
		return ""
	}
	if n > len(d.data)-d.off {
		d.fail("%s: %d bytes, %d left", what, n, len(d.data)-d.off)
		return ""
	}
	v := d.s[d.off : d.off+n]
	d.off += n
	return v
}

func (d *decoder) byte(what string) uint8 {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.data) {
		d.fail("%s: truncated", what)
		return 0
	}
	b := d.data[d.off]
	d.off++
	return b
}

// table reads a value table and maps each index onto the index of the
// same value in list. A value this code does not know is list's unknown
// value (index 0) when unknown is set, else an error: Allow is no
// decision to make up.
func table[T ~string](d *decoder, what string, list []T, unknown bool) []uint8 {
	n := int(d.uvarint(what+" count", 255))
	m := make([]uint8, n)
	for i := range n {
		v := T(d.str(what))
		j := slices.Index(list, v)
		if j < 0 && !unknown {
			d.fail("%s %q: unknown", what, clip(string(v)))
		}
		m[i] = uint8(max(j, 0))
	}
	return m
}

// decodeDevices parses a devices file.
func decodeDevices(data []byte) (*savedDevices, error) {
	if len(data) < len(devicesMagic)+4 || string(data[:len(devicesMagic)]) != devicesMagic {
		return nil, errors.New("not an easconnector devices file (or a newer version)")
	}
	body := data[:len(data)-4]
	if got, want := crc32.Checksum(body, crcTable), binary.LittleEndian.Uint32(data[len(data)-4:]); got != want {
		return nil, fmt.Errorf("checksum %08x, want %08x: the file is damaged", got, want)
	}
	d := &decoder{data: body, s: string(body), off: len(devicesMagic)}
	saved := &savedDevices{savedAt: time.UnixMilli(int64(d.uvarint("saved at", 1<<62)))}
	// Every mailbox takes at least 6 bytes and every row 8: counts beyond
	// what the bytes left could hold are lies, not allocations to make.
	rows := int(d.uvarint("row count", uint64(min(maxFileRows, len(body)/8))))
	decisions := table(d, "decision", decisionList[:], false)
	reasons := table(d, "reason", reasonList[:], false)
	states := table(d, "access state", accessStates, true)
	comps := table(d, "compliance", compliances, true)
	nmb := int(d.uvarint("mailbox count", uint64(len(body)/6)))
	mbs := make(map[string]*mbox, nmb)
	seen := 0
	idx := func(m []uint8, what string) uint8 {
		i := d.byte(what)
		if int(i) >= len(m) {
			d.fail("%s index %d of %d", what, i, len(m))
			return 0
		}
		return m[i]
	}
	for range nmb {
		mb := &mbox{sealed: true}
		mb.dn, mb.guid, mb.smtp, mb.name, mb.upn = d.str("dn"), d.str("guid"), d.str("smtp"), d.str("name"), d.str("upn")
		n := int(d.uvarint("device count", uint64(max(min(rows-seen, (len(body)-d.off)/8), 0))))
		if d.err != nil {
			break
		}
		if mb.dn == "" {
			d.fail("mailbox without a dn")
			break
		}
		mb.devs = make([]row, n)
		for i := range n {
			rw := &mb.devs[i]
			rw.id, rw.typ, rw.model = d.str("device id"), d.str("device type"), d.str("device model")
			rw.d, rw.r = idx(decisions, "decision"), idx(reasons, "reason")
			rw.st, rw.c = idx(states, "access state"), idx(comps, "compliance")
			rw.after = idx(states, "access state after")
		}
		seen += n
		if _, dup := mbs[dnKey(mb.dn)]; dup {
			d.fail("mailbox %q twice", clip(mb.dn))
		}
		mbs[dnKey(mb.dn)] = mb
	}
	switch {
	case d.err != nil:
		return nil, d.err
	case seen != rows:
		return nil, fmt.Errorf("%d rows, the header says %d", seen, rows)
	case d.off != len(body):
		return nil, fmt.Errorf("%d bytes after the last mailbox", len(body)-d.off)
	}
	saved.b = newBaseline(mbs)
	return saved, nil
}

// saveDevices writes the rows of b to dir/devices.bin atomically.
func saveDevices(dir string, b *baseline, now time.Time) error {
	return atomicfile.Write(dir, DevicesFile, encodeDevices(b, now))
}

// loadDevices reads dir/devices.bin; a missing file is nil and no error.
func loadDevices(dir string) (*savedDevices, error) {
	path := filepath.Join(dir, DevicesFile)
	data, err := atomicfile.ReadLimited(path, maxDevicesBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read devices list: %w", err)
	}
	s, err := decodeDevices(data)
	if err != nil {
		return nil, fmt.Errorf("devices list %s: %w", path, err)
	}
	return s, nil
}

// deviceSaver writes the newest published rows in the background, one
// write at a time: a sync ends without waiting for the file, and a newer
// baseline published meanwhile replaces one not yet written (only the
// last counts). wait returns once everything handed over is on disk.
type deviceSaver struct {
	dir string
	log *slog.Logger

	mu      sync.Mutex
	next    *baseline
	running bool
	idle    *sync.Cond
}

func newDeviceSaver(dir string, log *slog.Logger) *deviceSaver {
	s := &deviceSaver{dir: dir, log: log}
	s.idle = sync.NewCond(&s.mu)
	return s
}

// save queues b for writing.
func (s *deviceSaver) save(b *baseline) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next = b
	if !s.running {
		s.running = true
		go s.loop()
	}
}

func (s *deviceSaver) loop() {
	for {
		s.mu.Lock()
		b := s.next
		s.next = nil
		if b == nil {
			s.running = false
			s.idle.Broadcast()
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		start := time.Now()
		if err := saveDevices(s.dir, b, start); err != nil {
			s.log.Warn("pipeline: save devices list", "err", err)
		} else {
			s.log.Debug("pipeline: devices list saved", "devices", b.devices, "took", time.Since(start).Round(time.Millisecond))
		}
	}
}

// wait blocks until every queued baseline is written.
func (s *deviceSaver) wait() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.running {
		s.idle.Wait()
	}
}

package pipeline

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/easconnector/easconnector/internal/atomicfile"
)

// The audit log is state_dir/audit.jsonl, one JSON object per line and per
// list entry written, and its rotated predecessors audit.NNNNNN.jsonl
// (NNNNNN counting up from 000001, the oldest kept first). Each line's
// "prev" field is the SHA-256, lowercase hex, of the previous line's bytes
// without its newline; the first line ever written carries AuditGenesis,
// and the first line of a new file the hash of the last line of the file
// rotated before it, so one chain runs through all files. Editing a byte,
// or removing, inserting or reordering lines breaks the chain at the next
// line; VerifyAudit finds where. audit.head holds the hash of the last
// line flushed, so that lines cut from the end show too.
//
// A hash chain kept beside the data shows accidental damage and careless
// editing; someone who can rewrite the whole directory can rewrite the
// chain as well. Where that matters, record the head that `easconnector
// audit verify` prints somewhere the connector's host cannot write, or
// ship the lines off the host as they are written.
//
// Crash safety: lines reach the file whole, in one write each batch, and
// Flush fsyncs. A power loss can still leave the file ending inside a line
// (a torn line). VerifyAudit reports it as such (AuditTorn). OpenAudit
// moves the fragment to audit.torn-<UTC time> beside the log, truncates the
// log to its last complete line and continues the chain from that line, so
// appends after a restart never follow half a line.

// Names in the state directory.
const (
	AuditFile     = "audit.jsonl"
	AuditHeadFile = "audit.head"
)

// AuditGenesis is the prev of the first line of a new audit log.
const AuditGenesis = "0000000000000000000000000000000000000000000000000000000000000000"

// Rotation defaults. 64 MiB is about 220,000 changes (a line is ~300
// bytes): a first full sync of a 200,000-device fleet fits in one file,
// one file verifies in 2-3 s (BenchmarkVerifyAudit: ~100,000 lines/s),
// and ten of them keep years of everyday churn while bounding the disk to
// ~700 MiB.
const (
	DefaultAuditMaxBytes = 64 << 20
	DefaultAuditKeep     = 10
)

// auditBufferBytes bounds the lines held in memory between writes to the
// file; a full buffer is written (whole lines only) but not fsynced.
const auditBufferBytes = 64 << 10

// maxAuditLine bounds one line when the log is read back.
const maxAuditLine = 16 << 20

// maxAuditTail bounds how much ReadAuditTail reads.
const maxAuditTail = 1 << 20

var rotatedRe = regexp.MustCompile(`^audit\.(\d{6,9})\.jsonl$`)

// Entry presence in a list, the From and To of an audit entry.
const (
	Absent  = "absent"
	Present = "present"
)

// AuditEntry is one line of audit.jsonl: one list entry written. Prev is
// set by Audit.Write (empty on lines written before the log was chained).
type AuditEntry struct {
	Prev     string    `json:"prev,omitempty"`
	Time     time.Time `json:"time"`
	SyncID   string    `json:"sync_id"`
	Mailbox  string    `json:"mailbox"`
	Device   string    `json:"device"`
	List     List      `json:"list"`
	From     string    `json:"from"` // Absent or Present
	To       string    `json:"to"`
	Decision Decision  `json:"decision"`
	Reason   Reason    `json:"reason"`
	// Phase says where the write stood: PhaseIntent before it was sent,
	// PhaseDone once Exchange confirmed it, PhaseRecovered when a later
	// start found it unconfirmed and read Exchange (To is then what
	// Exchange holds: To == From means the write never took effect).
	// Lines written before phases existed have none and mean done.
	Phase string `json:"phase,omitempty"`
	// Setting and Target describe an organization write instead of a list
	// entry: the setting (DefaultAccessLevel, AdminMailRecipients,
	// UserMailInsert) or "Rule" with the rule's name as Target.
	Setting string `json:"setting,omitempty"`
	Target  string `json:"target,omitempty"`
}

// Audit phases (AuditEntry.Phase).
const (
	PhaseIntent    = "intent"
	PhaseDone      = "done"
	PhaseRecovered = "recovered"
)

// Applied reports whether the line records a list entry that changed in
// Exchange: a done line (or one from before phases), or a recovered line
// whose write took effect. Intent lines, writes that never took effect
// and organization writes are not list changes.
func (e *AuditEntry) Applied() bool {
	if e.Setting != "" {
		return false
	}
	switch e.Phase {
	case "", PhaseDone:
		return true
	case PhaseRecovered:
		return e.From != e.To
	}
	return false
}

// AuditEntries returns the audit lines of a plan whose write succeeded
// (phase done).
func (p *MailboxPlan) AuditEntries(syncID string, at time.Time) []AuditEntry {
	return changeEntries(p.Changes, syncID, p.Identity, PhaseDone, at)
}

// changeEntries returns one audit line per change, From and To as the
// change means them.
func changeEntries(changes []Change, syncID, mailbox, phase string, at time.Time) []AuditEntry {
	out := make([]AuditEntry, 0, len(changes))
	for _, c := range changes {
		e := AuditEntry{
			Time: at, SyncID: syncID, Mailbox: mailbox, Device: c.DeviceID, List: c.List,
			From: Absent, To: Present, Decision: c.Decision, Reason: c.Reason, Phase: phase,
		}
		if c.Op == OpRemove {
			e.From, e.To = Present, Absent
		}
		out = append(out, e)
	}
	return out
}

// lineHash is the chain hash of one line (without its newline).
func lineHash(line []byte) string {
	h := sha256.Sum256(line)
	return hex.EncodeToString(h[:])
}

// isHash reports whether s is a lowercase hex SHA-256.
func isHash(s string) bool {
	if len(s) != sha256.Size*2 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ParseAuditLine decodes one line of the audit log (without its newline):
// one JSON object (fields it does not know are ignored, so that a newer
// version's lines still verify) whose prev, if present, is 64 lowercase
// hex digits.
func ParseAuditLine(line []byte) (AuditEntry, error) {
	if t := bytes.TrimSpace(line); len(t) == 0 || t[0] != '{' {
		return AuditEntry{}, errors.New("audit line: not a JSON object")
	}
	var e AuditEntry
	if err := json.Unmarshal(line, &e); err != nil {
		return AuditEntry{}, fmt.Errorf("audit line: %w", err)
	}
	if e.Prev != "" && !isHash(e.Prev) {
		return AuditEntry{}, fmt.Errorf("audit line: prev \"%s\" is not a lowercase hex SHA-256", clip(e.Prev))
	}
	return e, nil
}

// AuditOptions tune rotation. The zero value takes the defaults.
type AuditOptions struct {
	// MaxBytes: the current file is rotated before a write would take it
	// past this size (default DefaultAuditMaxBytes; negative: never). A
	// line longer than that still goes whole into one file.
	MaxBytes int64
	// Keep is the number of rotated files kept; older ones are deleted
	// (default DefaultAuditKeep; negative: keep all).
	Keep int
}

func (o AuditOptions) resolved() AuditOptions {
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultAuditMaxBytes
	}
	if o.Keep == 0 {
		o.Keep = DefaultAuditKeep
	}
	return o
}

// ErrAuditClosed is returned by writes after Close.
var ErrAuditClosed = errors.New("audit log closed")

// Audit appends to the audit log. Lines are buffered up to 64 KiB and
// reach the file as whole lines; Flush and Close also fsync and record the
// head, so call Flush at the end of each sync. It is safe for concurrent
// use.
type Audit struct {
	dir  string
	opts AuditOptions

	mu       sync.Mutex
	f        *os.File
	size     int64  // bytes in the current file
	buf      []byte // whole lines not yet written
	prev     string // hash of the last line formatted
	written  string // hash of the last line written to the file
	headSent string // hash last recorded in audit.head
	torn     string // fragment set aside at open, or ""
	closed   bool
}

// OpenAudit opens (creating if needed) dir/audit.jsonl for appending, sets
// aside a torn last line (see the package's notes on the audit log), and
// continues the chain from the last complete line of the log.
func OpenAudit(dir string, opts AuditOptions) (*Audit, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	path := filepath.Join(dir, AuditFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	a := &Audit{dir: dir, opts: opts.resolved(), f: f, buf: make([]byte, 0, auditBufferBytes)}
	if err := a.resume(); err != nil {
		f.Close()
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	return a, nil
}

// resume finds the chain's last hash, setting aside a torn fragment.
func (a *Audit) resume() error {
	st, err := a.f.Stat()
	if err != nil {
		return err
	}
	a.size = st.Size()
	last, tornAt, err := lastLine(a.f, a.size)
	if err != nil {
		return err
	}
	if tornAt >= 0 {
		frag := make([]byte, a.size-tornAt)
		if _, err := a.f.ReadAt(frag, tornAt); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		a.torn = filepath.Join(a.dir, "audit.torn-"+time.Now().UTC().Format("20060102T150405.000000000Z"))
		if err := atomicfile.Write(a.dir, filepath.Base(a.torn), frag); err != nil {
			return fmt.Errorf("set aside torn line: %w", err)
		}
		if err := a.f.Truncate(tornAt); err != nil {
			return fmt.Errorf("cut torn line: %w", err)
		}
		if err := a.f.Sync(); err != nil {
			return err
		}
		a.size = tornAt
	}
	if last == nil {
		// The current file is empty: continue from the newest rotated one.
		files, err := rotatedFiles(a.dir)
		if err != nil {
			return err
		}
		if n := len(files); n > 0 {
			rf, err := os.Open(filepath.Join(a.dir, files[n-1].name))
			if err != nil {
				return err
			}
			defer rf.Close()
			rst, err := rf.Stat()
			if err != nil {
				return err
			}
			if last, _, err = lastLine(rf, rst.Size()); err != nil {
				return err
			}
		}
	}
	a.prev = AuditGenesis
	if last != nil {
		a.prev = lineHash(last)
	}
	a.written, a.headSent = a.prev, a.prev
	return nil
}

// TornSetAside returns the file a torn last line was moved to when the log
// was opened, or "".
func (a *Audit) TornSetAside() string { return a.torn }

// lastLine returns the last newline-terminated line of r (nil if none) and
// the offset where a torn fragment (bytes after the last newline) starts,
// -1 if the file ends with a newline or is empty.
func lastLine(r io.ReaderAt, size int64) (line []byte, tornAt int64, err error) {
	tornAt = -1
	for window := int64(64 << 10); ; window *= 2 {
		if window > maxAuditLine*2 {
			return nil, -1, fmt.Errorf("audit log: last line longer than %d bytes", maxAuditLine)
		}
		off := max(0, size-window)
		buf := make([]byte, size-off)
		if _, err := r.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
			return nil, -1, err
		}
		content := buf
		if n := len(buf); n > 0 && buf[n-1] != '\n' {
			i := bytes.LastIndexByte(buf, '\n')
			if i < 0 && off > 0 {
				continue
			}
			tornAt = off + int64(i+1)
			content = buf[:i+1]
		}
		if len(content) == 0 {
			return nil, tornAt, nil
		}
		content = content[:len(content)-1]
		j := bytes.LastIndexByte(content, '\n')
		if j < 0 && off > 0 {
			tornAt = -1
			continue
		}
		return slices.Clone(content[j+1:]), tornAt, nil
	}
}

// Write appends entries, chaining each to the line before. An error means
// some may not have reached the file.
func (a *Audit) Write(entries ...AuditEntry) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrAuditClosed
	}
	for i := range entries {
		e := entries[i]
		e.Prev = a.prev
		line, err := json.Marshal(&e)
		if err != nil {
			return fmt.Errorf("audit entry for %s/%s: %w", e.Mailbox, e.Device, err)
		}
		a.prev = lineHash(line)
		line = append(line, '\n')
		if len(a.buf)+len(line) > auditBufferBytes {
			if err := a.writeLocked(); err != nil {
				return err
			}
		}
		if len(line) > auditBufferBytes {
			if err := a.writeOut(line); err != nil {
				return err
			}
			a.written = a.prev
			continue
		}
		a.buf = append(a.buf, line...)
	}
	return nil
}

func (a *Audit) writeLocked() error {
	if len(a.buf) == 0 {
		return nil
	}
	err := a.writeOut(a.buf)
	a.buf = a.buf[:0]
	a.written = a.prev
	return err
}

// writeOut writes whole lines to the file, rotating it first when they
// would take it past MaxBytes. If the rotation fails, the lines still go
// to the current file and the error is returned.
func (a *Audit) writeOut(data []byte) error {
	var rerr error
	if a.opts.MaxBytes > 0 && a.size > 0 && a.size+int64(len(data)) > a.opts.MaxBytes {
		rerr = a.rotate()
	}
	n, err := a.f.Write(data)
	a.size += int64(n)
	if err != nil {
		return fmt.Errorf("write audit log: %w", err)
	}
	return rerr
}

// rotate renames the current file to the next audit.NNNNNN.jsonl, opens a
// new one and deletes rotated files beyond Keep.
func (a *Audit) rotate() error {
	files, err := rotatedFiles(a.dir)
	if err != nil {
		return fmt.Errorf("rotate audit log: %w", err)
	}
	seq := 1
	if n := len(files); n > 0 {
		seq = files[n-1].seq + 1
	}
	path := filepath.Join(a.dir, AuditFile)
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("rotate audit log: %w", err)
	}
	// Closed before the rename: Windows refuses to rename an open file.
	if err := a.f.Close(); err != nil {
		return fmt.Errorf("rotate audit log: %w", err)
	}
	renameErr := os.Rename(path, filepath.Join(a.dir, rotatedName(seq)))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("rotate audit log: reopen: %w", err)
	}
	a.f = f
	if renameErr != nil {
		st, serr := f.Stat()
		if serr == nil {
			a.size = st.Size()
		}
		return fmt.Errorf("rotate audit log: %w", renameErr)
	}
	a.size = 0
	_ = atomicfile.SyncDir(a.dir)
	files = append(files, rotated{seq: seq, name: rotatedName(seq)})
	if keep := a.opts.Keep; keep >= 0 && len(files) > keep {
		for _, old := range files[:len(files)-keep] {
			if err := os.Remove(filepath.Join(a.dir, old.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("rotate audit log: remove %s: %w", old.name, err)
			}
		}
	}
	return nil
}

// Flush writes the buffered lines, fsyncs the file and records the head.
func (a *Audit) Flush() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrAuditClosed
	}
	return a.flushLocked()
}

func (a *Audit) flushLocked() error {
	if err := a.writeLocked(); err != nil {
		return err
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("fsync audit log: %w", err)
	}
	if a.written != a.headSent {
		if err := writeAuditHead(a.dir, a.written); err != nil {
			return err
		}
		a.headSent = a.written
	}
	return nil
}

// Close flushes, fsyncs and closes the file. Closing twice is a no-op.
func (a *Audit) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	err := a.flushLocked()
	if cerr := a.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close audit log: %w", cerr)
	}
	return err
}

// auditHead is audit.head.
type auditHead struct {
	Hash string    `json:"hash"`
	Time time.Time `json:"time"`
}

func writeAuditHead(dir, hash string) error {
	b, _ := json.Marshal(auditHead{Hash: hash, Time: time.Now().UTC()})
	if err := atomicfile.Write(dir, AuditHeadFile, append(b, '\n')); err != nil {
		return fmt.Errorf("record audit head: %w", err)
	}
	return nil
}

// rotated is one rotated file.
type rotated struct {
	seq  int
	name string
}

func rotatedName(seq int) string { return fmt.Sprintf("audit.%06d.jsonl", seq) }

// rotatedFiles lists the rotated files, oldest first.
func rotatedFiles(dir string) ([]rotated, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []rotated
	for _, e := range ents {
		m := rotatedRe.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		seq, _ := strconv.Atoi(m[1])
		out = append(out, rotated{seq: seq, name: e.Name()})
	}
	slices.SortFunc(out, func(x, y rotated) int { return x.seq - y.seq })
	return out, nil
}

// AuditFiles returns the audit log's files in dir, oldest first: the
// rotated ones, then audit.jsonl if it exists.
func AuditFiles(dir string) ([]string, error) {
	rs, err := rotatedFiles(dir)
	if err != nil {
		return nil, fmt.Errorf("list audit log: %w", err)
	}
	out := make([]string, 0, len(rs)+1)
	for _, r := range rs {
		out = append(out, filepath.Join(dir, r.name))
	}
	cur := filepath.Join(dir, AuditFile)
	if _, err := os.Stat(cur); err == nil {
		out = append(out, cur)
	}
	return out, nil
}

// HasAuditEntries reports whether the audit log in dir records any write.
func HasAuditEntries(dir string) bool {
	files, _ := AuditFiles(dir)
	for _, f := range files {
		if info, err := os.Stat(f); err == nil && info.Size() > 0 {
			return true
		}
	}
	return false
}

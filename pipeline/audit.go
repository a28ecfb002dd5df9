package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// AuditFile is the audit log's name in the state directory.
const AuditFile = "audit.jsonl"

// auditBufferBytes bounds the lines held in memory between writes to the
// file; a full buffer is written (whole lines only) but not fsynced.
const auditBufferBytes = 64 << 10

// Entry presence in a list, the From and To of an audit entry.
const (
	Absent  = "absent"
	Present = "present"
)

// AuditEntry is one line of audit.jsonl: one list entry written.
type AuditEntry struct {
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

// ErrAuditClosed is returned by writes after Close.
var ErrAuditClosed = errors.New("audit log closed")

// Audit appends to state_dir/audit.jsonl. Lines are buffered up to 64 KiB
// and reach the file as whole lines; Flush and Close also fsync, so call
// Flush at the end of each sync. It is safe for concurrent use.
type Audit struct {
	mu     sync.Mutex
	f      *os.File
	buf    []byte
	closed bool
}

// OpenAudit opens (creating if needed) dir/audit.jsonl for appending.
func OpenAudit(dir string) (*Audit, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	path := filepath.Join(dir, AuditFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	return &Audit{f: f, buf: make([]byte, 0, auditBufferBytes)}, nil
}

// Write appends entries. An error means some may not have reached the file.
func (a *Audit) Write(entries ...AuditEntry) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrAuditClosed
	}
	for i := range entries {
		line, err := json.Marshal(&entries[i])
		if err != nil {
			return fmt.Errorf("audit entry for %s/%s: %w", entries[i].Mailbox, entries[i].Device, err)
		}
		line = append(line, '\n')
		if len(a.buf)+len(line) > auditBufferBytes {
			if err := a.writeLocked(); err != nil {
				return err
			}
		}
		if len(line) > auditBufferBytes {
			if _, err := a.f.Write(line); err != nil {
				return fmt.Errorf("write audit log: %w", err)
			}
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
	_, err := a.f.Write(a.buf)
	a.buf = a.buf[:0]
	if err != nil {
		return fmt.Errorf("write audit log: %w", err)
	}
	return nil
}

// Flush writes the buffered lines and fsyncs the file.
func (a *Audit) Flush() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrAuditClosed
	}
	if err := a.writeLocked(); err != nil {
		return err
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("fsync audit log: %w", err)
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
	err := a.writeLocked()
	if serr := a.f.Sync(); err == nil && serr != nil {
		err = fmt.Errorf("fsync audit log: %w", serr)
	}
	if cerr := a.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close audit log: %w", cerr)
	}
	return err
}

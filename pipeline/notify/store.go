package notify

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/easconnector/easconnector/internal/atomicfile"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// SentStore remembers which notices were sent, so that each is sent once.
// Implementations must be safe for concurrent use.
type SentStore interface {
	// Sent reports whether the notice with key was sent.
	Sent(key string) bool
	// MarkSent records that the notice with key was sent at t.
	MarkSent(key string, t time.Time) error
	// Forget removes key, so that the notice can be sent again (the device
	// left the state and may enter it again later).
	Forget(key string) error
}

// flusher is implemented by stores that defer writes; the Notifier flushes
// when its queue runs empty and when it stops.
type flusher interface{ Flush() error }

// Key returns the SentStore key of a notice: the mailbox (case-insensitive),
// the device id and the state, separated by newlines (a mailbox has no line
// break and the state is one of two words, so the key is unambiguous).
func Key(mailbox, deviceID string, state State) string {
	return strings.ToLower(mailbox) + "\n" + deviceID + "\n" + string(state)
}

// MemoryStore is a SentStore that forgets everything at exit; for tests and
// for callers that persist the keys elsewhere.
type MemoryStore struct {
	mu   sync.Mutex
	sent map[string]time.Time
}

var _ SentStore = (*MemoryStore)(nil)

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{sent: map[string]time.Time{}} }

// Sent implements SentStore.
func (s *MemoryStore) Sent(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.sent[key]
	return ok
}

// MarkSent implements SentStore.
func (s *MemoryStore) MarkSent(key string, t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent[key] = t
	return nil
}

// Forget implements SentStore.
func (s *MemoryStore) Forget(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sent, key)
	return nil
}

// FileStore is a SentStore kept in a JSON file, rewritten atomically (temp
// file, fsync, rename, fsync of the directory). To keep a burst of sends
// from rewriting a large file for every message, a MarkSent within
// FileStoreWriteInterval of the last write only marks the store dirty; the
// Notifier flushes when its queue runs empty and when it stops, so a crash
// can lose at most that interval's marks (and resend those notices once).
type FileStore struct {
	path string

	mu        sync.Mutex
	sent      map[string]time.Time
	dirty     bool
	lastWrite time.Time
}

var _ SentStore = (*FileStore)(nil)

// FileStoreWriteInterval is the least time between two writes of a
// FileStore by MarkSent.
const FileStoreWriteInterval = time.Second

const fileStoreVersion = 1

// fileStoreJSON is the file: the time each notice was sent, in Unix
// seconds (much cheaper to encode than RFC 3339 for 100,000 keys).
type fileStoreJSON struct {
	Version int              `json:"version"`
	Sent    map[string]int64 `json:"sent"`
}

// OpenFileStore loads the store at path; a missing file is an empty store.
// A file that does not parse is an error rather than an empty store, which
// would send every notice again.
func OpenFileStore(path string) (*FileStore, error) {
	s := &FileStore{path: path, sent: map[string]time.Time{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open notification store: %w", err)
	}
	var f fileStoreJSON
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("open notification store %s: %w", path, err)
	}
	if f.Version != fileStoreVersion {
		return nil, fmt.Errorf("open notification store %s: version %d, want %d", path, f.Version, fileStoreVersion)
	}
	for k, v := range f.Sent {
		s.sent[k] = time.Unix(v, 0).UTC()
	}
	return s, nil
}

// Sent implements SentStore.
func (s *FileStore) Sent(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.sent[key]
	return ok
}

// Len returns the number of keys.
func (s *FileStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sent)
}

// MarkSent implements SentStore.
func (s *FileStore) MarkSent(key string, t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent[key] = t.UTC()
	s.dirty = true
	if time.Since(s.lastWrite) < FileStoreWriteInterval {
		return nil
	}
	return s.writeLocked()
}

// Forget implements SentStore; it writes at once.
func (s *FileStore) Forget(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sent[key]; !ok {
		return nil
	}
	delete(s.sent, key)
	s.dirty = true
	return s.writeLocked()
}

// Flush writes the store if it has unwritten changes.
func (s *FileStore) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dirty {
		return nil
	}
	return s.writeLocked()
}

func (s *FileStore) writeLocked() error {
	f := fileStoreJSON{Version: fileStoreVersion, Sent: make(map[string]int64, len(s.sent))}
	for k, v := range s.sent {
		f.Sent[k] = v.Unix()
	}
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("write notification store %s: %w", s.path, err)
	}
	if err := atomicfile.Write(filepath.Dir(s.path), filepath.Base(s.path), b); err != nil {
		return fmt.Errorf("write notification store: %w", err)
	}
	s.dirty = false
	s.lastWrite = time.Now()
	return nil
}

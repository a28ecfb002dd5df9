package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"time"

	"github.com/easconnector/easconnector/internal/atomicfile"
)

// HistoryFile is the sync history's name in the state directory.
const HistoryFile = "history.json"

// HistoryVersion is the version of history.json this code writes; a newer
// one is ignored (the history is shown, never acted on).
const HistoryVersion = 1

// maxResults is how many recent sync results the history keeps.
const maxResults = 32

// maxHistoryBytes bounds what LoadHistory reads: 32 results and two per
// kind, each under a few kilobytes (errors are clipped to maxResultError).
const maxHistoryBytes = 4 << 20

// maxResultError bounds a result's error text in the history: a wrapped
// error can carry a whole WS-Man fault.
const maxResultError = 2048

// History is what the status shows about past syncs: the recent ones, and
// apart from them the last finished and the last successful sync of each
// kind, so that a run of quick syncs never pushes the last full sync out
// of sight. Engine keeps one, saved as StateDir/history.json after every
// sync (not after dry runs) and loaded at start, so that a service started
// after `easconnector sync` runs shows them at once.
//
// A sync succeeded when it ended without an error (some mailbox writes may
// have failed: they are retried), as easconnector_sync_last_success_timestamp_seconds
// counts it.
type History struct {
	Version int `json:"version"`
	// Recent holds the last syncs, oldest first, at most 32.
	Recent []SyncResult `json:"recent"`
	// Last and LastOK are the last finished and the last successful sync
	// of each kind.
	Last   map[SyncKind]SyncResult `json:"last"`
	LastOK map[SyncKind]SyncResult `json:"last_ok"`
}

// add records a finished sync.
func (h *History) add(r SyncResult) {
	if len(r.Error) > maxResultError {
		r.Error = clipUTF8(r.Error, maxResultError) + "…"
	}
	h.Recent = append(h.Recent, r)
	if len(h.Recent) > maxResults {
		h.Recent = slices.Delete(h.Recent, 0, len(h.Recent)-maxResults)
	}
	if h.Last == nil {
		h.Last = map[SyncKind]SyncResult{}
	}
	if h.LastOK == nil {
		h.LastOK = map[SyncKind]SyncResult{}
	}
	h.Last[r.Kind] = r
	if r.Error == "" {
		h.LastOK[r.Kind] = r
	}
}

// clone returns a copy that shares no slice or map with h (the results'
// count maps are never changed once recorded, so they are shared).
func (h *History) clone() History {
	return History{Version: h.Version, Recent: slices.Clone(h.Recent), Last: cloneResults(h.Last), LastOK: cloneResults(h.LastOK)}
}

func cloneResults(m map[SyncKind]SyncResult) map[SyncKind]SyncResult {
	out := make(map[SyncKind]SyncResult, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// clipUTF8 cuts s to at most n bytes without splitting a character.
func clipUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// SaveHistory writes dir/history.json atomically.
func SaveHistory(dir string, h *History) error {
	c := h.clone()
	c.Version = HistoryVersion
	data, err := json.Marshal(&c)
	if err != nil {
		return fmt.Errorf("encode %s: %w", HistoryFile, err)
	}
	return atomicfile.Write(dir, HistoryFile, append(data, '\n'))
}

// LoadHistory reads dir/history.json. A missing file is an empty history
// and no error; an unreadable, corrupt or newer one is an empty history
// and an error saying why, which the caller logs: the history is only
// shown, so losing it must not stop the connector.
func LoadHistory(dir string) (*History, error) {
	path := filepath.Join(dir, HistoryFile)
	data, err := atomicfile.ReadLimited(path, maxHistoryBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return &History{}, nil
	}
	if err != nil {
		return &History{}, fmt.Errorf("read sync history: %w", err)
	}
	var h History
	if err := json.Unmarshal(data, &h); err != nil {
		return &History{}, fmt.Errorf("sync history %s: %w", path, err)
	}
	if h.Version != HistoryVersion {
		return &History{}, fmt.Errorf("sync history %s: version %d, this easconnector reads %d", path, h.Version, HistoryVersion)
	}
	for i, r := range h.Recent {
		if err := r.checkLoaded(); err != nil {
			return &History{}, fmt.Errorf("sync history %s: recent[%d]: %w", path, i, err)
		}
	}
	for name, m := range map[string]map[SyncKind]SyncResult{"last": h.Last, "last_ok": h.LastOK} {
		for k, r := range m {
			if err := r.checkLoaded(); err != nil {
				return &History{}, fmt.Errorf("sync history %s: %s.%s: %w", path, name, k, err)
			}
			if r.Kind != k {
				return &History{}, fmt.Errorf("sync history %s: %s.%s: holds a %s sync", path, name, k, r.Kind)
			}
		}
	}
	if len(h.Recent) > maxResults {
		h.Recent = h.Recent[len(h.Recent)-maxResults:]
	}
	return &h, nil
}

// checkLoaded rejects a result no Engine records.
func (r *SyncResult) checkLoaded() error {
	switch {
	case r.ID == "":
		return errors.New("id: empty")
	case r.Kind != SyncFull && r.Kind != SyncQuick:
		return fmt.Errorf("kind: %q is neither full nor quick", r.Kind)
	case r.Start.IsZero() || r.End.Before(r.Start):
		return fmt.Errorf("start %s, end %s: not a finished sync", r.Start.Format(time.RFC3339), r.End.Format(time.RFC3339))
	}
	return nil
}

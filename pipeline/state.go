package pipeline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/easconnector/easconnector/internal/atomicfile"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/easconnector/easconnector/exchange"
)

// StateVersion is the version of state.json this code writes. LoadState
// reads it and every older version; a newer one is an error, never a
// silent downgrade. Version 2 added the pending writes (Pending,
// PendingRules, PendingOrg): an older easconnector must refuse a file
// whose pending entries it would ignore, since it would then treat them
// as the administrator's.
const StateVersion = 2

// StateFile is the state file's name in the state directory.
const StateFile = "state.json"

// maxStateBytes bounds what LoadState reads: 200,000 devices need a few
// megabytes, so anything near this is not ours.
const maxStateBytes = 256 << 20

// Watermarks are where the last syncs got to.
type Watermarks struct {
	LastFull  time.Time `json:"last_full,omitzero"`  // end of the last successful full sync
	LastQuick time.Time `json:"last_quick,omitzero"` // end of the last successful quick sync
	// LastGoodMDMCount is the MDM record count of the last snapshot that
	// passed CheckSnapshot and was acted on.
	LastGoodMDMCount int `json:"last_good_mdm_count"`
	// LastDeviceFirstSync is the latest FirstSyncTime seen: a quick sync
	// reads partnerships created after it.
	LastDeviceFirstSync time.Time `json:"last_device_first_sync,omitzero"`
}

// State is the connector's only authoritative memory: which list entries it
// wrote (ownership), the sync watermarks and the devices already notified.
// Mailbox keys are lower-cased; prefer the mailbox Guid, which survives
// renames.
//
// The exported fields are the file format and may be used directly before
// the State is shared; while a sync runs, use the methods, which are safe
// for concurrent use.
type State struct {
	mu sync.Mutex

	Version int       `json:"version"`
	SavedAt time.Time `json:"saved_at,omitzero"`
	// AdoptClosed is set once adoption is over: after the first full sync,
	// and from the start when the state was lost and rebuilt.
	AdoptClosed bool                 `json:"adopt_closed"`
	Owned       map[string]Owned     `json:"owned"`
	Watermarks  Watermarks           `json:"watermarks"`
	Notified    map[string]time.Time `json:"notified"`
	// Rules names the ActiveSync device access rules the connector created
	// for the policy's platform exceptions (OwnedRules, SetOwnedRules):
	// only these are ever changed or removed.
	Rules []string `json:"rules,omitempty"`

	// Pending are the mailbox writes recorded before their Set-CASMailbox
	// was sent and not yet confirmed by Exchange, by mailbox key (see
	// Pending). OwnedOf claims their entries until they are reconciled.
	Pending map[string]Pending `json:"pending,omitempty"`
	// PendingRules are the device access rule creations and removals
	// recorded before their cmdlet was sent; OwnedRules claims them.
	PendingRules []PendingRule `json:"pending_rules,omitempty"`
	// PendingOrg is the Set-ActiveSyncOrganizationSettings call recorded
	// before it was sent, until Exchange confirmed it.
	PendingOrg *PendingOrg `json:"pending_org,omitempty"`
}

// Pending is one mailbox's write as recorded before it is sent: the
// connector's intent. Write-ahead: it is saved (fsync) with its batch
// before any of the batch's writes goes out, and cleared once Exchange
// confirmed the write. A Pending found at the start of a sync (a crash, a
// kill, or a write whose outcome is unknown) is reconciled against the
// mailbox's lists as Exchange reports them: an entry to add that is
// present is ours, one that is absent was never written; an entry to
// remove that is still present stays ours, one that is gone is dropped.
type Pending struct {
	// DN is the mailbox's distinguished name, by which it is read back.
	DN string `json:"dn"`
	// Mailbox is its primary SMTP address, for the audit log.
	Mailbox string `json:"mailbox,omitempty"`
	SyncID  string `json:"sync_id"`
	// Changes are the entries the write adds and removes.
	Changes []Change `json:"changes"`
}

// PendingRule is a device access rule creation ("new"), level change
// ("set") or removal ("remove") recorded before its cmdlet is sent. At
// reconciliation a rule that exists is ours, one that does not is
// dropped, whichever the operation was (the connector only ever changes
// or removes rules it owns).
type PendingRule struct {
	Op     string `json:"op"`
	Name   string `json:"name"`
	SyncID string `json:"sync_id"`
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
}

// PendingOrg is an organization settings write recorded before it is
// sent; reconciliation reads the settings back and audits what Exchange
// holds.
type PendingOrg struct {
	SyncID  string      `json:"sync_id"`
	Changes []OrgChange `json:"changes"`
}

// NewState returns an empty state of the current version.
func NewState() *State {
	return &State{Version: StateVersion, Owned: map[string]Owned{}, Notified: map[string]time.Time{}}
}

func mailboxKey(mailbox string) string { return strings.ToLower(mailbox) }

// OwnedOf returns the entries we own on mailbox (a copy): those recorded
// as owned and, until reconciled, every entry a pending write of the
// mailbox adds or removes. Claiming too much costs nothing (a plan drops
// claims on absent entries); claiming too little would make our own
// entries the administrator's.
func (s *State) OwnedOf(mailbox string) Owned {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := mailboxKey(mailbox)
	o := s.Owned[k]
	out := Owned{Allowed: slices.Clone(o.Allowed), Blocked: slices.Clone(o.Blocked)}
	if p, ok := s.Pending[k]; ok {
		for _, c := range p.Changes {
			if c.List == ListBlocked {
				out.Blocked = append(out.Blocked, c.DeviceID)
			} else {
				out.Allowed = append(out.Allowed, c.DeviceID)
			}
		}
		out = Owned{Allowed: cleanIDs(out.Allowed), Blocked: cleanIDs(out.Blocked)}
	}
	return out
}

// recordedOwned is OwnedOf without the pending claims.
func (s *State) recordedOwned(mailbox string) Owned {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.Owned[mailboxKey(mailbox)]
	return Owned{Allowed: slices.Clone(o.Allowed), Blocked: slices.Clone(o.Blocked)}
}

// AddPending records a mailbox write about to be sent; it replaces an
// earlier pending write of the mailbox, whose claims must have been
// settled. Save the state before sending the write.
func (s *State) AddPending(mailbox string, p Pending) {
	p.Changes = slices.Clone(p.Changes)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Pending == nil {
		s.Pending = map[string]Pending{}
	}
	s.Pending[mailboxKey(mailbox)] = p
}

// SettlePending records the mailbox's ownership once its pending write is
// resolved (Exchange confirmed it, or reconciliation read the lists) and
// clears the pending record, in one step.
func (s *State) SettlePending(mailbox string, o Owned) {
	s.SetOwned(mailbox, o)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.Pending, mailboxKey(mailbox))
}

// PendingWrites returns a copy of the pending mailbox writes, by key.
func (s *State) PendingWrites() map[string]Pending {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Pending, len(s.Pending))
	for k, p := range s.Pending {
		p.Changes = slices.Clone(p.Changes)
		out[k] = p
	}
	return out
}

// HasPending reports whether any write awaits reconciliation.
func (s *State) HasPending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.Pending) > 0 || len(s.PendingRules) > 0 || s.PendingOrg != nil
}

// SetOwned records the entries we own on mailbox after a write, keeping
// only valid device ids, sorted and without duplicates; nothing owned
// removes the mailbox.
func (s *State) SetOwned(mailbox string, o Owned) {
	o = Owned{Allowed: cleanIDs(o.Allowed), Blocked: cleanIDs(o.Blocked)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Owned == nil {
		s.Owned = map[string]Owned{}
	}
	if o.IsZero() {
		delete(s.Owned, mailboxKey(mailbox))
		return
	}
	s.Owned[mailboxKey(mailbox)] = o
}

// OwnedMailboxes returns the mailboxes on which we own entries or have a
// pending write, sorted.
func (s *State) OwnedMailboxes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := slices.Collect(maps.Keys(s.Owned))
	for k := range s.Pending {
		if _, ok := s.Owned[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func cleanIDs(ids []string) []string {
	var out []string
	for _, id := range ids {
		if exchange.ValidDeviceID(id) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Marks returns the watermarks.
func (s *State) Marks() Watermarks {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Watermarks
}

// UpdateMarks changes the watermarks under the lock.
func (s *State) UpdateMarks(fn func(*Watermarks)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(&s.Watermarks)
}

// MayAdopt reports whether a plan may adopt existing entries: only when
// adopt_existing is configured and adoption is not closed.
func (s *State) MayAdopt(adoptExisting bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return adoptExisting && !s.AdoptClosed
}

// CloseAdoption ends adoption; call it once a full sync has been applied.
func (s *State) CloseAdoption() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.AdoptClosed = true
}

// The notified devices: State implements the notifier's store of sent
// notices (pipeline/notify.SentStore: Sent, MarkSent, Forget), so that
// "notify once per device" survives restarts inside state.json. Keys are
// the notifier's and opaque here.

// Sent reports whether the notice with key was sent.
func (s *State) Sent(key string) bool {
	_, ok := s.NotifiedAt(key)
	return ok
}

// NotifiedAt returns when the notice with key was sent, if ever.
func (s *State) NotifiedAt(key string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.Notified[key]
	return t, ok
}

// MarkSent records that the notice with key was sent at t. It only changes
// memory (SaveState persists it) and never fails.
func (s *State) MarkSent(key string, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Notified == nil {
		s.Notified = map[string]time.Time{}
	}
	s.Notified[key] = at.UTC()
	return nil
}

// Forget drops a sent notice, so that it can be sent again (the device
// recovered and may relapse). It never fails.
func (s *State) Forget(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.Notified, key)
	return nil
}

// PruneNotified drops notifications older than before and returns how many.
func (s *State) PruneNotified(before time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, t := range s.Notified {
		if t.Before(before) {
			delete(s.Notified, k)
			n++
		}
	}
	return n
}

// StateOrigin says where a loaded State came from.
type StateOrigin string

// State origins.
const (
	StateLoaded    StateOrigin = "loaded"    // read from the state file
	StateNew       StateOrigin = "new"       // no state file: first sync
	StateRecovered StateOrigin = "recovered" // the file was corrupt and is kept aside
	StateLost      StateOrigin = "lost"      // no file, but the audit log shows earlier syncs
)

// Status tells the operator what LoadState did; log Message and show it on
// the status page.
type Status struct {
	Origin  StateOrigin `json:"origin"`
	Path    string      `json:"path"`
	Message string      `json:"message"`
	// CorruptCopy is where a corrupt state file was kept (StateRecovered).
	CorruptCopy string `json:"corrupt_copy,omitempty"`
}

// ErrStateTooNew is wrapped by LoadState's error for a state file written by
// a newer easconnector.
var ErrStateTooNew = errors.New("state file is from a newer version")

// LoadState reads dir/state.json. A missing file gives a fresh state
// (first sync), unless a non-empty audit log shows that earlier syncs wrote
// to Exchange: then the state was lost and adoption is closed. A file that
// cannot be decoded (truncated, not JSON, no version) is renamed to
// state.json.corrupt-<time> and a fresh state with adoption closed is
// saved in its place, so that nothing is adopted: entries we wrote before
// are treated as the administrator's. None of these is an error; Status
// says which happened. A newer version, or a file that cannot be
// read or set aside, is an error: the sync must not run on a guess.
// Temporary files of a writer that crashed are never read.
func LoadState(dir string) (*State, Status, error) {
	path := filepath.Join(dir, StateFile)
	data, err := atomicfile.ReadLimited(path, maxStateBytes)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if HasAuditEntries(dir) {
			// We wrote to Exchange before: the state was lost, not never made.
			st := NewState()
			st.AdoptClosed = true
			return st, Status{
				Origin: StateLost, Path: path,
				Message: fmt.Sprintf("no state file %s, but %s records earlier syncs: the state was lost; nothing is adopted, and entries written before are treated as the administrator's", path, AuditFile),
			}, nil
		}
		return NewState(), Status{
			Origin: StateNew, Path: path,
			Message: fmt.Sprintf("no state file %s: first sync; entries already in the lists stay the administrator's unless adopt_existing is set", path),
		}, nil
	case err != nil:
		if info, serr := os.Stat(path); serr == nil && info.Mode().IsRegular() && info.Size() > maxStateBytes {
			return recoverState(dir, path, err)
		}
		return nil, Status{}, fmt.Errorf("load state %s: %w", path, err)
	}
	st, err := decodeState(data)
	if errors.Is(err, ErrStateTooNew) {
		return nil, Status{}, fmt.Errorf("load state %s: %w: run a newer easconnector or move the file aside", path, err)
	}
	if err != nil {
		return recoverState(dir, path, err)
	}
	msg := fmt.Sprintf("state loaded from %s: %d mailboxes with owned entries", path, len(st.Owned))
	return st, Status{Origin: StateLoaded, Path: path, Message: msg}, nil
}

// decodeState parses and checks a state file.
func decodeState(data []byte) (*State, error) {
	var head struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	switch {
	case head.Version == nil:
		return nil, errors.New("no version")
	case *head.Version > StateVersion:
		return nil, fmt.Errorf("%w: version %d, this easconnector understands up to %d", ErrStateTooNew, *head.Version, StateVersion)
	case *head.Version < 1:
		return nil, fmt.Errorf("bad version %d", *head.Version)
	}
	st := NewState()
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(st); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode: data after the state object")
	}
	// Migrations from older versions go here, keyed on st.Version.
	st.Version = StateVersion
	if st.Owned == nil {
		st.Owned = map[string]Owned{}
	}
	if st.Notified == nil {
		st.Notified = map[string]time.Time{}
	}
	owned := make(map[string]Owned, len(st.Owned))
	for mb, o := range st.Owned {
		o = Owned{Allowed: cleanIDs(o.Allowed), Blocked: cleanIDs(o.Blocked)}
		if mb != "" && !o.IsZero() {
			owned[mailboxKey(mb)] = o
		}
	}
	st.Owned = owned
	pending := make(map[string]Pending, len(st.Pending))
	for mb, p := range st.Pending {
		if mb == "" {
			continue
		}
		pending[mailboxKey(mb)] = p
	}
	st.Pending = pending
	for mb, p := range st.Pending {
		if strings.TrimSpace(p.DN) == "" {
			// It cannot be read back: keep its claims as owned, which a
			// plan drops where the entries are absent.
			st.SetOwned(mb, st.OwnedOf(mb))
			delete(st.Pending, mb)
		}
	}
	if len(st.PendingRules) == 0 {
		st.PendingRules = nil
	}
	for i, pr := range st.PendingRules {
		if pr.Name == "" || (pr.Op != ruleNew && pr.Op != ruleSet && pr.Op != ruleRemove) {
			return nil, fmt.Errorf("pending_rules[%d]: want a name and op %s, %s or %s, got %q, %q", i, ruleNew, ruleSet, ruleRemove, pr.Name, pr.Op)
		}
	}
	if st.Watermarks.LastGoodMDMCount < 0 {
		return nil, fmt.Errorf("watermarks.last_good_mdm_count: negative (%d)", st.Watermarks.LastGoodMDMCount)
	}
	return st, nil
}

// recoverState keeps a corrupt state file aside and starts afresh.
func recoverState(dir, path string, cause error) (*State, Status, error) {
	stamp := time.Now().UTC().Format("20060102T150405Z")
	aside := filepath.Join(dir, StateFile+".corrupt-"+stamp)
	for i := 1; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, fs.ErrNotExist) {
			break
		}
		aside = filepath.Join(dir, fmt.Sprintf("%s.corrupt-%s-%d", StateFile, stamp, i))
	}
	if err := os.Rename(path, aside); err != nil {
		return nil, Status{}, fmt.Errorf("load state %s: corrupt (%v), and it cannot be kept aside: %w", path, cause, err)
	}
	st := NewState()
	st.AdoptClosed = true
	// Save the fresh state at once: a crash before the next save must not
	// turn "recovered, adopt nothing" into "new, adopt everything".
	if err := SaveState(dir, st); err != nil {
		return nil, Status{}, fmt.Errorf("load state %s: corrupt, kept as %s: %w", path, aside, err)
	}
	return st, Status{
		Origin: StateRecovered, Path: path, CorruptCopy: aside,
		Message: fmt.Sprintf("state file %s was corrupt (%v) and is kept as %s; starting from an empty state: nothing is adopted, and entries written before are treated as the administrator's", path, cause, aside),
	}, nil
}

// SaveState writes st to dir/state.json atomically (temporary file, fsync,
// rename, fsync of the directory), creating dir if needed.
func SaveState(dir string, st *State) error {
	data, err := st.encode()
	if err != nil {
		return err
	}
	return writeState(dir, data)
}

// encode is the state file's content as of now.
func (st *State) encode() ([]byte, error) {
	st.mu.Lock()
	st.Version = StateVersion
	st.SavedAt = time.Now().UTC()
	data, err := json.Marshal(st)
	st.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("save state: %w", err)
	}
	return append(data, '\n'), nil
}

// writeState writes what encode returned, as SaveState does.
func writeState(dir string, data []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := atomicfile.Write(dir, StateFile, data); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

package pipeline

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/easconnector/easconnector/internal/atomicfile"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/easconnector/easconnector/exchange"
)

// HeldDir is the directory of held plans inside the state directory.
const HeldDir = "held"

// maxHeldBytes bounds a held plan file (a plan for every device of a
// 200,000-device fleet is a few tens of megabytes).
const maxHeldBytes = 512 << 20

// ErrHeldPlanNotFound is wrapped when no held plan has the requested id.
var ErrHeldPlanNotFound = errors.New("held plan not found")

var heldIDRe = regexp.MustCompile(`^[0-9a-f]{32}$`)

// Where a held plan comes from (HeldPlan.Source).
const (
	// HeldByGuard: a sync's guard stopped the plan; the service is
	// degraded until it is approved, discarded or expires.
	HeldByGuard = "guard"
	// HeldByPlan: `easconnector plan` kept its dry run for review; it
	// says nothing about the service's health.
	HeldByPlan = "plan"
)

// HeldPlan is a plan kept in state_dir/held/<ID>.json for review
// (`plan --show ID`): one a guard stopped, or one `easconnector plan` kept.
// `sync --approve ID` applies what of it still holds (see Engine's
// approval), within HeldPlanMaxAge.
type HeldPlan struct {
	// ID is 128 random bits in hex: a held plan cannot be approved by
	// guessing its id.
	ID        string    `json:"id"`
	SyncID    string    `json:"sync_id"`
	CreatedAt time.Time `json:"created_at"`
	Kind      SyncKind  `json:"kind"`
	// Source is HeldByGuard or HeldByPlan; a plan saved before the field
	// existed reads as HeldByGuard unless its Reason says otherwise
	// (DecodeHeldPlan).
	Source string `json:"source"`
	// Reason is the guard's message.
	Reason  string     `json:"reason"`
	Devices int        `json:"devices"`
	Counts  PlanCounts `json:"counts"`
	// Plans are the mailboxes with a write, with their SMTP address and
	// display name for review; empty plans are not kept.
	Plans []PlannedMailbox `json:"plans"`
}

// heldByPlanReason is the Reason `easconnector plan` gave its plans before
// HeldPlan.Source existed.
const heldByPlanReason = "kept by 'easconnector plan' for review"

// NewHeldPlan keeps the non-empty plans of a sync: one that guard stopped
// (source HeldByGuard), or a dry run (HeldByPlan).
func NewHeldPlan(syncID string, kind SyncKind, source string, plans []PlannedMailbox, devices int, guard error, now time.Time) (*HeldPlan, error) {
	if source != HeldByGuard && source != HeldByPlan {
		return nil, fmt.Errorf("held plan source %q: want %q or %q", source, HeldByGuard, HeldByPlan)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("held plan id: %w", err)
	}
	hp := &HeldPlan{
		ID: hex.EncodeToString(b[:]), SyncID: syncID, CreatedAt: now.UTC(), Kind: kind, Source: source, Devices: devices,
	}
	switch {
	case guard != nil:
		hp.Reason = guard.Error()
	case source == HeldByPlan:
		hp.Reason = heldByPlanReason
	}
	for i := range plans {
		if !plans[i].Empty() {
			hp.Plans = append(hp.Plans, plans[i])
		}
	}
	hp.Counts = CountPlans(mailboxPlans(hp.Plans))
	return hp, nil
}

// Validate checks a held plan read back from disk, where anyone with
// access to the state directory could have edited it: the id is well
// formed, every mailbox is named once and every device id in an edit
// passes exchange.ValidDeviceID.
func (hp *HeldPlan) Validate() error {
	if !heldIDRe.MatchString(hp.ID) {
		return fmt.Errorf("held plan: id %q is not 32 lower-case hex digits", hp.ID)
	}
	if hp.Source != HeldByGuard && hp.Source != HeldByPlan {
		return fmt.Errorf("held plan %s: source %q: want %q or %q", hp.ID, hp.Source, HeldByGuard, HeldByPlan)
	}
	seen := make(map[string]bool, len(hp.Plans))
	for i := range hp.Plans {
		p := &hp.Plans[i]
		if strings.TrimSpace(p.Identity) == "" {
			return fmt.Errorf("held plan %s: plans[%d]: empty mailbox identity", hp.ID, i)
		}
		k := strings.ToLower(p.Identity)
		if seen[k] {
			return fmt.Errorf("held plan %s: plans[%d]: mailbox %s appears twice", hp.ID, i, p.Identity)
		}
		seen[k] = true
		for _, ids := range [][]string{p.Allowed.Add, p.Allowed.Remove, p.Blocked.Add, p.Blocked.Remove, p.NewOwned.Allowed, p.NewOwned.Blocked} {
			for _, id := range ids {
				if !exchange.ValidDeviceID(id) {
					return fmt.Errorf("held plan %s: mailbox %s: device id %q: %w", hp.ID, p.Identity, id, exchange.ErrInvalidDeviceID)
				}
			}
		}
	}
	return nil
}

// CheckApprovable refuses a plan older than maxAge: the fleet it was
// computed for has moved on, and a fresh sync should be planned instead.
// maxAge <= 0 accepts any age.
func (hp *HeldPlan) CheckApprovable(now time.Time, maxAge time.Duration) error {
	if maxAge > 0 && now.Sub(hp.CreatedAt) > maxAge {
		return fmt.Errorf("held plan %s was made %s ago, more than %s: run a new sync and review its plan", hp.ID, now.Sub(hp.CreatedAt).Round(time.Second), maxAge)
	}
	return nil
}

// SaveHeldPlan writes hp to dir/held/<ID>.json atomically.
func SaveHeldPlan(dir string, hp *HeldPlan) error {
	if err := hp.Validate(); err != nil {
		return fmt.Errorf("save %w", err)
	}
	hd := filepath.Join(dir, HeldDir)
	if err := os.MkdirAll(hd, 0o700); err != nil {
		return fmt.Errorf("save held plan %s: %w", hp.ID, err)
	}
	data, err := json.MarshalIndent(hp, "", " ")
	if err != nil {
		return fmt.Errorf("save held plan %s: %w", hp.ID, err)
	}
	if err := atomicfile.Write(hd, hp.ID+".json", append(data, '\n')); err != nil {
		return fmt.Errorf("save held plan %s: %w", hp.ID, err)
	}
	return nil
}

// LoadHeldPlan reads and validates dir/held/<id>.json. The id is checked
// before it becomes part of a path.
func LoadHeldPlan(dir, id string) (*HeldPlan, error) {
	if !heldIDRe.MatchString(id) {
		return nil, fmt.Errorf("held plan id %q: want 32 lower-case hex digits", id)
	}
	path := filepath.Join(dir, HeldDir, id+".json")
	data, err := atomicfile.ReadLimited(path, maxHeldBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("held plan %s: %w", id, ErrHeldPlanNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("load held plan %s: %w", id, err)
	}
	hp, err := DecodeHeldPlan(data)
	if err != nil {
		return nil, fmt.Errorf("load held plan %s: %w", path, err)
	}
	if hp.ID != id {
		return nil, fmt.Errorf("load held plan %s: file holds plan %q", path, hp.ID)
	}
	return hp, nil
}

// DecodeHeldPlan parses and validates a held plan.
func DecodeHeldPlan(data []byte) (*HeldPlan, error) {
	var hp HeldPlan
	if err := json.Unmarshal(data, &hp); err != nil {
		return nil, fmt.Errorf("decode held plan: %w", err)
	}
	if hp.Source == "" {
		hp.Source = HeldByGuard
		if hp.Reason == heldByPlanReason {
			hp.Source = HeldByPlan
		}
	}
	if err := hp.Validate(); err != nil {
		return nil, err
	}
	return &hp, nil
}

// ListHeldPlans returns the held plans in dir, oldest first, without their
// Plans (load one with LoadHeldPlan). Files that do not decode are skipped
// and reported in the error, which is non-nil only then.
func ListHeldPlans(dir string) ([]*HeldPlan, error) {
	ents, err := os.ReadDir(filepath.Join(dir, HeldDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list held plans: %w", err)
	}
	var out []*HeldPlan
	var errs []error
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !heldIDRe.MatchString(id) || !e.Type().IsRegular() {
			continue
		}
		hp, err := LoadHeldPlan(dir, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		hp.Plans = nil
		out = append(out, hp)
	}
	slices.SortFunc(out, func(a, b *HeldPlan) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, errors.Join(errs...)
}

// RemoveHeldPlan deletes a held plan once it is applied or rejected.
func RemoveHeldPlan(dir, id string) error {
	if !heldIDRe.MatchString(id) {
		return fmt.Errorf("held plan id %q: want 32 lower-case hex digits", id)
	}
	err := os.Remove(filepath.Join(dir, HeldDir, id+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("held plan %s: %w", id, ErrHeldPlanNotFound)
	}
	if err != nil {
		return fmt.Errorf("remove held plan %s: %w", id, err)
	}
	return atomicfile.SyncDir(filepath.Join(dir, HeldDir))
}

// mailboxPlans returns the MailboxPlans of ps.
func mailboxPlans(ps []PlannedMailbox) []MailboxPlan {
	out := make([]MailboxPlan, len(ps))
	for i := range ps {
		out[i] = ps[i].MailboxPlan
	}
	return out
}

package pipeline

import (
	"errors"
	"fmt"
	"math"

	"github.com/easconnector/easconnector/mdm"
)

// Guard defaults (DESIGN.md §6; Entra Connect stops an export above 500
// deletes).
const (
	DefaultMinMDMRatio       = 0.5
	DefaultMaxNewBlocks      = 500
	DefaultMaxNewBlocksRatio = 0.10
)

// GuardConfig holds the fail-static limits checked before any write.
type GuardConfig struct {
	// MinMDMRatio: an MDM snapshot with fewer records than MinMDMRatio ×
	// the last good count is refused. 0 turns the ratio off (an empty
	// snapshot after a non-empty one is still refused).
	MinMDMRatio float64
	// MaxNewBlocks and MaxNewBlocksRatio: a sync that would revoke access
	// (PlanCounts.Revocations) for more than max(MaxNewBlocks,
	// MaxNewBlocksRatio × devices) devices is held for approval. Both zero
	// means any revocation is held; to turn the guard off, raise them.
	MaxNewBlocks      int
	MaxNewBlocksRatio float64
}

// DefaultGuardConfig returns the documented defaults.
func DefaultGuardConfig() GuardConfig {
	return GuardConfig{
		MinMDMRatio:       DefaultMinMDMRatio,
		MaxNewBlocks:      DefaultMaxNewBlocks,
		MaxNewBlocksRatio: DefaultMaxNewBlocksRatio,
	}
}

// Validate names the first bad field.
func (c GuardConfig) Validate() error {
	switch {
	case math.IsNaN(c.MinMDMRatio) || c.MinMDMRatio < 0 || c.MinMDMRatio > 1:
		return fmt.Errorf("min_mdm_ratio: must be between 0 and 1, got %v", c.MinMDMRatio)
	case c.MaxNewBlocks < 0:
		return fmt.Errorf("max_new_blocks: must not be negative, got %d", c.MaxNewBlocks)
	case math.IsNaN(c.MaxNewBlocksRatio) || c.MaxNewBlocksRatio < 0 || c.MaxNewBlocksRatio > 1:
		return fmt.Errorf("max_new_blocks_ratio: must be between 0 and 1, got %v", c.MaxNewBlocksRatio)
	}
	return nil
}

// GuardKind names the guard that tripped; kinds are bounded metric labels.
type GuardKind string

// Guard kinds.
const (
	GuardMDMMissing  GuardKind = "mdm_missing"  // no snapshot at all
	GuardMDMEmpty    GuardKind = "mdm_empty"    // empty after a non-empty one
	GuardMDMShrunk   GuardKind = "mdm_shrunk"   // below MinMDMRatio × last good
	GuardBlastRadius GuardKind = "blast_radius" // too many revocations
)

// ErrGuard is wrapped by every *GuardError, for errors.Is.
var ErrGuard = errors.New("guard tripped")

// GuardError says which guard stopped the sync and with what numbers. The
// sync writes nothing when it is returned.
type GuardError struct {
	Kind GuardKind
	// Got and Limit: records and the minimum (MDM guards), or revocations
	// and the maximum (blast radius).
	Got, Limit int
	// LastGood is the last good MDM record count (MDM guards).
	LastGood int
	// Devices and Counts describe the held plan (blast radius).
	Devices int
	Counts  PlanCounts
}

func (e *GuardError) Error() string {
	switch e.Kind {
	case GuardMDMMissing:
		return "guard: no mdm snapshot"
	case GuardMDMEmpty:
		return fmt.Sprintf("guard: mdm snapshot is empty, last good sync saw %d records", e.LastGood)
	case GuardMDMShrunk:
		return fmt.Sprintf("guard: mdm snapshot has %d records, below the minimum %d (last good %d)", e.Got, e.Limit, e.LastGood)
	case GuardBlastRadius:
		return fmt.Sprintf("guard: %d devices would lose access (%d block adds, %d allow removes in %d mailboxes), above the limit %d for %d devices",
			e.Got, e.Counts.BlockAdds, e.Counts.AllowRemoves, e.Counts.Writes, e.Limit, e.Devices)
	default:
		return fmt.Sprintf("guard %s: got %d, limit %d", e.Kind, e.Got, e.Limit)
	}
}

// Unwrap makes errors.Is(err, ErrGuard) true.
func (e *GuardError) Unwrap() error { return ErrGuard }

// CheckSnapshot refuses an MDM snapshot that is missing, empty after a
// non-empty one, or smaller than MinMDMRatio × lastGoodCount. lastGoodCount
// is State.Watermarks.LastGoodMDMCount (0 on the first sync, when only a
// missing snapshot is refused). A source returns complete snapshots only;
// this guards against a complete-looking one that is not.
func CheckSnapshot(snap *mdm.Snapshot, lastGoodCount int, cfg GuardConfig) error {
	if snap == nil {
		return &GuardError{Kind: GuardMDMMissing, LastGood: lastGoodCount}
	}
	n := len(snap.Records)
	if lastGoodCount <= 0 {
		return nil
	}
	if n == 0 {
		return &GuardError{Kind: GuardMDMEmpty, LastGood: lastGoodCount}
	}
	minimum := int(math.Ceil(cfg.MinMDMRatio * float64(lastGoodCount)))
	if n < minimum {
		return &GuardError{Kind: GuardMDMShrunk, Got: n, Limit: minimum, LastGood: lastGoodCount}
	}
	return nil
}

// BlastLimit is the most revocations one sync may make without approval.
func (c GuardConfig) BlastLimit(devices int) int {
	return max(c.MaxNewBlocks, int(math.Floor(c.MaxNewBlocksRatio*float64(max(devices, 0)))))
}

// CheckBlastRadius refuses plans that revoke access for more devices than
// cfg.BlastLimit(devices), where devices is the number of partnerships the
// sync decided on. It returns a *GuardError carrying the counts; the caller
// holds the plans (NewHeldPlan) for `sync --approve`.
func CheckBlastRadius(plans []MailboxPlan, devices int, cfg GuardConfig) error {
	c := CountPlans(plans)
	limit := cfg.BlastLimit(devices)
	if c.Revocations > limit {
		return &GuardError{Kind: GuardBlastRadius, Got: c.Revocations, Limit: limit, Devices: devices, Counts: c}
	}
	return nil
}

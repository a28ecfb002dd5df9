package mdm

import (
	"fmt"
	"strings"
	"time"
)

// compliances are the complianceState values Graph defines.
var compliances = []Compliance{
	ComplianceUnknown, ComplianceCompliant, ComplianceNoncompliant, ComplianceConflict,
	ComplianceError, ComplianceInGracePeriod, ComplianceConfigManager,
}

// ParseCompliance returns the compliance state named s. Case is ignored (an
// export may write "Compliant"); anything outside Graph's enumeration is an
// error, never a guess.
func ParseCompliance(s string) (Compliance, error) {
	s = strings.TrimSpace(s)
	for _, c := range compliances {
		if strings.EqualFold(s, string(c)) {
			return c, nil
		}
	}
	if s == "" {
		return "", fmt.Errorf("missing")
	}
	return "", fmt.Errorf("unknown value %q (want one of %s)", s, joinCompliances())
}

func joinCompliances() string {
	var b strings.Builder
	for i, c := range compliances {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(c))
	}
	return b.String()
}

// device is one managed device with Graph's field names: the shape of a
// managedDevices item and of a JSON export's record.
type device struct {
	ID                string `json:"id"`
	UserID            string `json:"userId"`
	UserPrincipalName string `json:"userPrincipalName"`
	EmailAddress      string `json:"emailAddress"`
	EASDeviceID       string `json:"easDeviceId"`
	ComplianceState   string `json:"complianceState"`
	EnrolledDateTime  string `json:"enrolledDateTime"`
	LastSyncDateTime  string `json:"lastSyncDateTime"`
	OperatingSystem   string `json:"operatingSystem"`
	OSVersion         string `json:"osVersion"`
	Model             string `json:"model"`
	EASActivated      bool   `json:"easActivated"`
	ManagementAgent   string `json:"managementAgent"`
}

// record validates d and converts it. Errors name the field; the caller
// names the record.
func (d *device) record() (Record, error) {
	r := Record{
		ID:                strings.TrimSpace(d.ID),
		EASDeviceID:       strings.TrimSpace(d.EASDeviceID),
		UserID:            strings.TrimSpace(d.UserID),
		UserPrincipalName: strings.TrimSpace(d.UserPrincipalName),
		Email:             strings.TrimSpace(d.EmailAddress),
		Platform:          d.OperatingSystem,
		OSVersion:         d.OSVersion,
		Model:             d.Model,
		EASActivated:      d.EASActivated,
		ManagementAgent:   d.ManagementAgent,
	}
	if r.ID == "" {
		return r, fmt.Errorf("id: missing")
	}
	var err error
	if r.Compliance, err = ParseCompliance(d.ComplianceState); err != nil {
		return r, fmt.Errorf("complianceState: %w", err)
	}
	if r.EnrolledAt, err = parseTime(d.EnrolledDateTime); err != nil {
		return r, fmt.Errorf("enrolledDateTime: %w", err)
	}
	if r.LastSyncAt, err = parseTime(d.LastSyncDateTime); err != nil {
		return r, fmt.Errorf("lastSyncDateTime: %w", err)
	}
	return r, nil
}

// parseTime reads an RFC 3339 time, in UTC. Empty, and Graph's
// "0001-01-01T00:00:00Z" for "never" (any time in year 1), are the zero
// time.
func parseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time", s)
	}
	if t = t.UTC(); t.Year() <= 1 {
		return time.Time{}, nil
	}
	return t, nil
}

// builder gathers validated records into a snapshot: it rejects duplicate
// ids, keeps records without an EAS id out of the join while counting them,
// and flags EAS ids claimed by more than one user.
type builder struct {
	records []Record
	seen    map[string]string // id → where it was read
	noEAS   int
}

func newBuilder(sizeHint int) *builder {
	return &builder{records: make([]Record, 0, sizeHint), seen: make(map[string]string, sizeHint)}
}

// add takes r, read at where (a line, an index), or reports a duplicate id.
func (b *builder) add(r Record, where string) error {
	if prev, dup := b.seen[r.ID]; dup {
		return fmt.Errorf("%s: duplicate id %s (first at %s)", where, r.ID, prev)
	}
	b.seen[r.ID] = where
	if r.EASDeviceID == "" {
		b.noEAS++
		return nil
	}
	b.records = append(b.records, r)
	return nil
}

// owner names the record's user: the UPN, or the e-mail address when the
// MDM has no UPN for it.
func (r *Record) owner() string {
	if r.UserPrincipalName != "" {
		return r.UserPrincipalName
	}
	return r.Email
}

// finish fills s with the records and their counts, flagging conflicts.
func (b *builder) finish(s *Snapshot) {
	type claim struct {
		upn   string
		multi bool
	}
	claims := make(map[string]*claim, len(b.records))
	keys := make([]string, len(b.records))
	for i := range b.records {
		r := &b.records[i]
		keys[i] = strings.ToLower(r.EASDeviceID)
		c, ok := claims[keys[i]]
		switch {
		case !ok:
			claims[keys[i]] = &claim{upn: r.owner()}
		case !c.multi && !strings.EqualFold(c.upn, r.owner()):
			c.multi = true
			s.Conflicts++
		}
	}
	if s.Conflicts > 0 {
		for i := range b.records {
			b.records[i].Conflict = claims[keys[i]].multi
		}
	}
	s.Records, s.NoEASID = b.records, b.noEAS
}

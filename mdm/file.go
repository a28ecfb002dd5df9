package mdm

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Format is the format of an MDM export file.
type Format string

// Export formats.
const (
	FormatJSON Format = "json"
	FormatCSV  Format = "csv"
)

// GroupsCSV is the name of the group membership file that accompanies a CSV
// export, in the same directory.
const GroupsCSV = "groups.csv"

// File reads a snapshot from an export written by any MDM (or by a script
// over one), re-read on every Snapshot so the exporter can replace it
// between syncs. Replace it atomically (write elsewhere, then rename): a
// half-written file fails to parse and stops the sync, which is safe but
// noisy. The schema is documented in FILEFORMAT.md; in short:
//
// JSON: an array of device objects, or an object
//
//	{"value": [ {device}, … ],
//	 "groups": {"<group id>": [ {"id": "…", "userPrincipalName": "…", "mail": "…"}, … ]}}
//
// where a device has Graph's managedDevice field names: id (required,
// unique), userId (the owner's directory object id, optional),
// easDeviceId, userPrincipalName, emailAddress, complianceState
// (required; Graph's enumeration, any case), enrolledDateTime,
// lastSyncDateTime (RFC 3339), operatingSystem, osVersion, model,
// easActivated (bool), managementAgent. Other fields are ignored; a saved
// Graph page that still has an @odata.nextLink is refused as incomplete.
//
// CSV: a header row naming the columns (any order, any case): id,
// easDeviceId, userPrincipalName and complianceState are required;
// userId, emailAddress, enrolledDateTime, lastSyncDateTime,
// operatingSystem, osVersion, model, easActivated and managementAgent are
// optional. Group membership is in groups.csv beside it, with columns
// group, userPrincipalName, mail (and optionally id); a row with only a
// group declares that group, so an empty group can be told from a missing
// one. A member needs an id, a UPN or a mail; one given by id alone
// matches the records whose userId it is.
//
// Every group the policy names must be in the export: a missing group is an
// error, never an empty group. Errors name the file, the CSV line or JSON
// record number (counting from 1) and the field. TakenAt is the export's
// modification time, so a stale export can be recognised.
type File struct {
	path   string
	format Format
}

var _ Source = (*File)(nil)

// NewFile returns a source reading the export at path. An empty format is
// taken from the file name's extension (.json or .csv). The file is first
// read by Snapshot.
func NewFile(path string, format Format) (*File, error) {
	if path == "" {
		return nil, errors.New("mdm file: path: missing")
	}
	if format == "" {
		format = Format(strings.TrimPrefix(filepath.Ext(path), "."))
	}
	format = Format(strings.ToLower(string(format)))
	if format != FormatJSON && format != FormatCSV {
		return nil, fmt.Errorf("mdm file: format: %q is neither json nor csv", format)
	}
	return &File{path: path, format: format}, nil
}

// Snapshot reads and validates the whole export.
func (f *File) Snapshot(ctx context.Context, groups []string) (*Snapshot, error) {
	fh, err := os.Open(f.path)
	if err != nil {
		return nil, fmt.Errorf("mdm file: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("mdm file: %w", err)
	}
	var snap *Snapshot
	if f.format == FormatJSON {
		snap, err = parseJSON(ctx, fh, groups)
	} else {
		var gr io.Reader
		gpath := filepath.Join(filepath.Dir(f.path), GroupsCSV)
		if len(groups) > 0 {
			gf, gerr := os.Open(gpath)
			if gerr != nil {
				return nil, fmt.Errorf("mdm file: group membership for %s: %w", f.path, gerr)
			}
			defer gf.Close()
			if gst, err := gf.Stat(); err == nil && gst.ModTime().Before(st.ModTime()) {
				st = gst // the older file dates the snapshot
			}
			gr = gf
		}
		snap, err = parseCSV(ctx, fh, gr, groups)
	}
	if err != nil {
		return nil, fmt.Errorf("mdm file %s: %w", f.path, err)
	}
	snap.TakenAt = st.ModTime().UTC()
	snap.Pages = 1
	return snap, nil
}

// memberJSON is a group member as Graph and the JSON export write it.
type memberJSON struct {
	Type              string `json:"@odata.type,omitempty"`
	ID                string `json:"id"`
	UserPrincipalName string `json:"userPrincipalName"`
	Mail              string `json:"mail"`
}

// groupSet collects the groups of an export, then answers for the groups
// the policy names.
type groupSet struct {
	present bool                // the export has group data at all
	groups  map[string][]Member // lower-case group id → members
	seen    map[string]bool     // lower-case group id + "\x00" + member key
}

func newGroupSet() *groupSet {
	return &groupSet{groups: make(map[string][]Member), seen: make(map[string]bool)}
}

func (g *groupSet) declare(id string) {
	g.present = true
	k := strings.ToLower(id)
	if g.groups[k] == nil {
		g.groups[k] = []Member{}
	}
}

func (g *groupSet) add(group string, m memberJSON) error {
	g.declare(group)
	m.ID, m.UserPrincipalName, m.Mail = strings.TrimSpace(m.ID), strings.TrimSpace(m.UserPrincipalName), strings.TrimSpace(m.Mail)
	if m.ID == "" && m.UserPrincipalName == "" && m.Mail == "" {
		return errors.New("id, userPrincipalName and mail: all missing")
	}
	k := strings.ToLower(group)
	key := k + "\x00" + strings.ToLower(m.ID)
	if m.ID == "" {
		key += "\x00" + strings.ToLower(m.UserPrincipalName) + "\x00" + strings.ToLower(m.Mail)
	}
	if g.seen[key] {
		return nil
	}
	g.seen[key] = true
	g.groups[k] = append(g.groups[k], Member{ID: m.ID, UserPrincipalName: m.UserPrincipalName, Mail: m.Mail})
	return nil
}

// pick returns the members of each requested group, keyed as requested.
func (g *groupSet) pick(want []string) (map[string][]Member, error) {
	out := make(map[string][]Member, len(want))
	for _, id := range want {
		ms, ok := g.groups[strings.ToLower(id)]
		if !ok {
			if !g.present {
				return nil, fmt.Errorf("group %s: the export has no group membership", id)
			}
			return nil, fmt.Errorf("group %s: not in the export", id)
		}
		out[id] = ms
	}
	return out, nil
}

// parseJSON reads a JSON export; see File.
func parseJSON(ctx context.Context, r io.Reader, groups []string) (*Snapshot, error) {
	dec := json.NewDecoder(r)
	b := newBuilder(0)
	gs := newGroupSet()
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", tokenErr(err))
	}
	switch tok {
	case json.Delim('['):
		if err := jsonRecords(ctx, dec, b); err != nil {
			return nil, err
		}
	case json.Delim('{'):
		sawValue := false
		for dec.More() {
			key, err := stringToken(dec)
			if err != nil {
				return nil, err
			}
			switch {
			case key == "value":
				if sawValue {
					return nil, errors.New(`two "value" members`)
				}
				sawValue = true
				if err := expectDelim(dec, '['); err != nil {
					return nil, fmt.Errorf("value: %w", err)
				}
				if err := jsonRecords(ctx, dec, b); err != nil {
					return nil, err
				}
			case key == "groups":
				if err := jsonGroups(dec, gs); err != nil {
					return nil, err
				}
			case key == "@odata.nextLink":
				return nil, errors.New("@odata.nextLink: the export is one page of a paged Graph answer; export every page")
			case strings.HasPrefix(key, "@odata."):
				if err := skipValue(dec); err != nil {
					return nil, err
				}
			default:
				return nil, fmt.Errorf("unknown member %q (want value, groups)", key)
			}
		}
		if err := expectDelim(dec, '}'); err != nil {
			return nil, err
		}
		if !sawValue {
			return nil, errors.New(`no "value" array of devices`)
		}
	default:
		return nil, fmt.Errorf("got %v, want an array of devices or an object with \"value\"", tok)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			return nil, errors.New("data after the end of the export")
		}
		return nil, tokenErr(err)
	}
	return finishSnapshot(b, gs, groups)
}

// jsonRecords reads device objects up to and including the closing ']'.
func jsonRecords(ctx context.Context, dec *json.Decoder, b *builder) error {
	for n := 1; dec.More(); n++ {
		if n%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		where := "record " + strconv.Itoa(n)
		var d device
		if err := decodeItem(dec, &d); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		rec, err := d.record()
		if err != nil {
			if id := strings.TrimSpace(d.ID); id != "" {
				where += " (id " + id + ")"
			}
			return fmt.Errorf("%s: %w", where, err)
		}
		if err := b.add(rec, where); err != nil {
			return err
		}
	}
	return expectDelim(dec, ']')
}

// jsonGroups reads the "groups" object.
func jsonGroups(dec *json.Decoder, gs *groupSet) error {
	if err := expectDelim(dec, '{'); err != nil {
		return fmt.Errorf("groups: %w", err)
	}
	gs.present = true
	for dec.More() {
		id, err := stringToken(dec)
		if err != nil {
			return fmt.Errorf("groups: %w", err)
		}
		if strings.TrimSpace(id) == "" {
			return errors.New("groups: empty group id")
		}
		gs.declare(id)
		if err := expectDelim(dec, '['); err != nil {
			return fmt.Errorf("groups.%s: %w", id, err)
		}
		for i := 1; dec.More(); i++ {
			var m memberJSON
			if err := decodeItem(dec, &m); err != nil {
				return fmt.Errorf("groups.%s member %d: %w", id, i, err)
			}
			if err := gs.add(id, m); err != nil {
				return fmt.Errorf("groups.%s member %d: %w", id, i, err)
			}
		}
		if err := expectDelim(dec, ']'); err != nil {
			return fmt.Errorf("groups.%s: %w", id, err)
		}
	}
	return expectDelim(dec, '}')
}

func finishSnapshot(b *builder, gs *groupSet, groups []string) (*Snapshot, error) {
	picked, err := gs.pick(groups)
	if err != nil {
		return nil, err
	}
	snap := &Snapshot{Groups: picked}
	for _, ms := range picked {
		for i := range ms {
			if !ms[i].Named() {
				snap.Unnamed++
			}
		}
	}
	b.finish(snap)
	return snap, nil
}

// csvColumns are the device columns of a CSV export.
var csvColumns = []string{
	"id", "userId", "easDeviceId", "userPrincipalName", "emailAddress", "complianceState", "enrolledDateTime",
	"lastSyncDateTime", "operatingSystem", "osVersion", "model", "easActivated", "managementAgent",
}

var csvRequired = []string{"id", "easDeviceId", "userPrincipalName", "complianceState"}

// csvHeader maps a header row onto known column names: col[i] is the name
// of field i.
func csvHeader(cr *csv.Reader, known, required []string) ([]string, error) {
	row, err := cr.Read()
	if err == io.EOF {
		return nil, errors.New("line 1: header row missing (empty file)")
	}
	if err != nil {
		return nil, err
	}
	cols := make([]string, len(row))
	for i, h := range row {
		if i == 0 {
			h = strings.TrimPrefix(h, "\ufeff") // byte order mark written by Excel
		}
		h = strings.TrimSpace(h)
		for _, k := range known {
			if strings.EqualFold(h, k) {
				cols[i] = k
			}
		}
		switch {
		case cols[i] == "":
			return nil, fmt.Errorf("line 1: unknown column %q (known: %s)", h, strings.Join(known, ", "))
		case indexOf(cols[:i], cols[i]) >= 0:
			return nil, fmt.Errorf("line 1: column %q appears twice", cols[i])
		}
	}
	for _, req := range required {
		if indexOf(cols, req) < 0 {
			return nil, fmt.Errorf("line 1: required column %q missing", req)
		}
	}
	return cols, nil
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func newCSVReader(r io.Reader) *csv.Reader {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	return cr
}

// parseCSV reads a CSV export and, when groups are requested, its
// groups.csv; see File.
func parseCSV(ctx context.Context, devices, groupsCSV io.Reader, groups []string) (*Snapshot, error) {
	cr := newCSVReader(devices)
	cols, err := csvHeader(cr, csvColumns, csvRequired)
	if err != nil {
		return nil, err
	}
	b := newBuilder(0)
	for n := 1; ; n++ {
		if n%1024 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		row, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err // *csv.ParseError names the line
		}
		line, _ := cr.FieldPos(0)
		where := "line " + strconv.Itoa(line)
		var d device
		for i, v := range row {
			if err := setDeviceField(&d, cols[i], v); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
		}
		rec, err := d.record()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if err := b.add(rec, where); err != nil {
			return nil, err
		}
	}
	gs := newGroupSet()
	if groupsCSV != nil {
		if err := csvGroups(groupsCSV, gs); err != nil {
			return nil, fmt.Errorf("%s %w", GroupsCSV, err)
		}
	}
	return finishSnapshot(b, gs, groups)
}

func setDeviceField(d *device, col, v string) error {
	switch col {
	case "id":
		d.ID = v
	case "userId":
		d.UserID = v
	case "easDeviceId":
		d.EASDeviceID = v
	case "userPrincipalName":
		d.UserPrincipalName = v
	case "emailAddress":
		d.EmailAddress = v
	case "complianceState":
		d.ComplianceState = v
	case "enrolledDateTime":
		d.EnrolledDateTime = v
	case "lastSyncDateTime":
		d.LastSyncDateTime = v
	case "operatingSystem":
		d.OperatingSystem = v
	case "osVersion":
		d.OSVersion = v
	case "model":
		d.Model = v
	case "managementAgent":
		d.ManagementAgent = v
	case "easActivated":
		if v = strings.TrimSpace(v); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("easActivated: %q is not true or false", v)
			}
			d.EASActivated = b
		}
	}
	return nil
}

var groupColumns = []string{"group", "userPrincipalName", "mail", "id"}

func csvGroups(r io.Reader, gs *groupSet) error {
	cr := newCSVReader(r)
	cols, err := csvHeader(cr, groupColumns, []string{"group"})
	if err != nil {
		return err
	}
	gs.present = true
	for {
		row, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		line, _ := cr.FieldPos(0)
		var group string
		var m memberJSON
		for i, v := range row {
			switch cols[i] {
			case "group":
				group = strings.TrimSpace(v)
			case "userPrincipalName":
				m.UserPrincipalName = v
			case "mail":
				m.Mail = v
			case "id":
				m.ID = v
			}
		}
		if group == "" {
			return fmt.Errorf("line %d: group: missing", line)
		}
		if strings.TrimSpace(m.UserPrincipalName+m.Mail+m.ID) == "" {
			gs.declare(group) // an empty group, declared
			continue
		}
		if err := gs.add(group, m); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
	}
}

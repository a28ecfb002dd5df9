package mdm

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	g1 = "aaaaaaaa-0000-4000-8000-000000000001"
	g2 = "bbbbbbbb-0000-4000-8000-000000000002"
)

func TestParseJSON(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		groups  []string
		wantErr string
		check   func(t *testing.T, s *Snapshot)
	}{
		{"array", `[{"id":"1","easDeviceId":"AppleA","userPrincipalName":"alice@contoso.com","complianceState":"compliant",
			"lastSyncDateTime":"2025-03-01T10:00:00Z","operatingSystem":"iOS","easActivated":true,"deviceName":"ignored"},
			{"id":"2","easDeviceId":"","complianceState":"noncompliant"}]`, nil, "", func(t *testing.T, s *Snapshot) {
			want := Record{ID: "1", EASDeviceID: "AppleA", UserPrincipalName: "alice@contoso.com", Compliance: ComplianceCompliant,
				LastSyncAt: time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC), Platform: "iOS", EASActivated: true}
			if len(s.Records) != 1 || s.Records[0] != want || s.NoEASID != 1 || len(s.Groups) != 0 {
				t.Errorf("snapshot = %+v", s)
			}
		}},
		{"value and groups", `{"@odata.context":"x","groups":{"` + strings.ToUpper(g1) + `":[{"userPrincipalName":"alice@contoso.com","mail":"alice@contoso.com"},
			{"userPrincipalName":"ALICE@contoso.com","mail":"alice@contoso.com"},{"mail":"bob@contoso.com"}],"` + g2 + `":[]},
			"value":[{"id":"1","easDeviceId":"AppleA","complianceState":"inGracePeriod"}]}`, []string{g1, g2}, "", func(t *testing.T, s *Snapshot) {
			if len(s.Groups[g1]) != 2 || s.Groups[g1][1].Mail != "bob@contoso.com" || s.Groups[g2] == nil || len(s.Groups[g2]) != 0 {
				t.Errorf("groups = %+v", s.Groups)
			}
		}},
		{"saved Graph page", `{"value":[],"@odata.nextLink":"https://graph.microsoft.com/v1.0/x"}`, nil, "one page of a paged Graph answer", nil},
		{"unknown member", `{"value":[],"devices":[]}`, nil, `unknown member "devices"`, nil},
		{"no value", `{"groups":{}}`, nil, `no "value" array`, nil},
		{"not a list", `"devices"`, nil, "want an array of devices", nil},
		{"bad compliance", `[{"id":"a","complianceState":"compliant"},{"id":"b","complianceState":"ok"}]`, nil,
			`record 2 (id b): complianceState: unknown value "ok"`, nil},
		{"missing compliance", `[{"id":"a"}]`, nil, "record 1 (id a): complianceState: missing", nil},
		{"missing id", `[{"id":"a","complianceState":"compliant"},{"id":"b","complianceState":"compliant"},{"complianceState":"compliant"}]`, nil,
			"record 3: id: missing", nil},
		{"bad time", `[{"id":"a","complianceState":"compliant","enrolledDateTime":"01/03/2025"}]`, nil,
			`record 1 (id a): enrolledDateTime: "01/03/2025" is not an RFC 3339 time`, nil},
		{"wrong type", `[{"id":"a","complianceState":"compliant","easActivated":"yes"}]`, nil,
			"record 1: json: cannot unmarshal string into Go struct field device.easActivated of type bool", nil},
		{"duplicate id", `[{"id":"a","complianceState":"compliant"},{"id":"b","complianceState":"compliant"},{"id":"a","complianceState":"error"}]`, nil,
			"record 3: duplicate id a (first at record 1)", nil},
		{"truncated", `[{"id":"a","complianceState":"compliant"},{"id":"b"`, nil, "truncated", nil},
		{"trailing data", `[] []`, nil, "data after the end", nil},
		{"group missing", `{"value":[],"groups":{"` + g1 + `":[]}}`, []string{g1, g2}, "group " + g2 + ": not in the export", nil},
		{"no groups", `[]`, []string{g1}, "group " + g1 + ": the export has no group membership", nil},
		{"member without any key", `{"value":[],"groups":{"` + g1 + `":[{"mail":"a@b"},{"userPrincipalName":" "}]}}`, []string{g1},
			"groups." + g1 + " member 2: id, userPrincipalName and mail: all missing", nil},
		{"userId and members by id alone", `{"value":[{"id":"1","userId":" u-1 ","easDeviceId":"AppleA","userPrincipalName":"alice@contoso.com","complianceState":"compliant"}],
			"groups":{"` + g1 + `":[{"id":"u-1"},{"id":"U-1"},{"id":"u-2","mail":"bob@contoso.com"},{"mail":"carol@contoso.com"},{"mail":"carol@contoso.com"}]}}`,
			[]string{g1}, "", func(t *testing.T, s *Snapshot) {
				want := []Member{{ID: "u-1"}, {ID: "u-2", Mail: "bob@contoso.com"}, {Mail: "carol@contoso.com"}}
				if s.Records[0].UserID != "u-1" || !slices.Equal(s.Groups[g1], want) || s.Unnamed != 1 {
					t.Errorf("records %+v, groups %+v, unnamed %d; want userId u-1, %+v, 1", s.Records, s.Groups[g1], s.Unnamed, want)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parseJSON(context.Background(), strings.NewReader(tc.in), tc.groups)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseJSON() error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseJSON() error: %v", err)
			}
			checkSnapshot(t, s)
			tc.check(t, s)
		})
	}
}

func TestParseCSV(t *testing.T) {
	const header = "id,easDeviceId,userPrincipalName,complianceState\n"
	tests := []struct {
		name    string
		in      string
		groups  string // groups.csv; "" → none
		want    []string
		wantErr string
		check   func(t *testing.T, s *Snapshot)
	}{
		{"all columns, any order and case, BOM", "\ufeffComplianceState,ID,easdeviceid,userPrincipalName,emailAddress,enrolledDateTime,lastSyncDateTime,operatingSystem,osVersion,model,easActivated,managementAgent\n" +
			"compliant,1, AppleA ,alice@contoso.com,alice@contoso.com,2025-01-01T00:00:00Z,2025-03-01T10:00:00Z,iOS,17.5,\"iPhone, 15\",TRUE,mdm\n", "", nil, "",
			func(t *testing.T, s *Snapshot) {
				want := Record{ID: "1", EASDeviceID: "AppleA", UserPrincipalName: "alice@contoso.com", Email: "alice@contoso.com",
					Compliance: ComplianceCompliant, EnrolledAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
					LastSyncAt: time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC), Platform: "iOS", OSVersion: "17.5", Model: "iPhone, 15",
					EASActivated: true, ManagementAgent: "mdm"}
				if len(s.Records) != 1 || s.Records[0] != want {
					t.Errorf("records = %+v, want %+v", s.Records, want)
				}
			}},
		{"userId column, member by id", "id,userId,easDeviceId,userPrincipalName,complianceState\n1,u-1,AppleA,alice@contoso.com,compliant\n",
			"group,id,userPrincipalName,mail\n" + g1 + ",u-1,,\n", []string{g1}, "", func(t *testing.T, s *Snapshot) {
				if s.Records[0].UserID != "u-1" || !slices.Equal(s.Groups[g1], []Member{{ID: "u-1"}}) {
					t.Errorf("records %+v, groups %+v", s.Records, s.Groups)
				}
			}},
		{"groups", header + "1,AppleA,alice@contoso.com,compliant\n",
			"group,userPrincipalName,mail\n" + g1 + ",alice@contoso.com,\n" + strings.ToUpper(g1) + ",,bob@contoso.com\n" + g2 + ",,\n",
			[]string{g1, g2}, "", func(t *testing.T, s *Snapshot) {
				if len(s.Groups[g1]) != 2 || s.Groups[g2] == nil || len(s.Groups[g2]) != 0 {
					t.Errorf("groups = %+v", s.Groups)
				}
			}},
		{"empty file", "", "", nil, "line 1: header row missing", nil},
		{"unknown column", "id,easDeviceId,userPrincipalName,complianceState,colour\n", "", nil, `line 1: unknown column "colour"`, nil},
		{"column twice", "id,easDeviceId,userPrincipalName,complianceState,ID\n", "", nil, `line 1: column "id" appears twice`, nil},
		{"required column missing", "id,easDeviceId,userPrincipalName\n", "", nil, `line 1: required column "complianceState" missing`, nil},
		{"bad compliance", header + "1,A,a@b,compliant\n2,B,b@b,Compliant\n3,C,c@b,quarantined\n", "", nil,
			`line 4: complianceState: unknown value "quarantined"`, nil},
		{"line numbers count quoted newlines", header + "1,A,\"a\nb\",compliant\n2,B,b@b,\n", "", nil, "line 4: complianceState: missing", nil},
		{"bad bool", "id,easDeviceId,userPrincipalName,complianceState,easActivated\n1,A,a@b,compliant,maybe\n", "", nil,
			`line 2: easActivated: "maybe" is not true or false`, nil},
		{"bad time", "id,easDeviceId,userPrincipalName,complianceState,lastSyncDateTime\n1,A,a@b,compliant,2025-03-01\n", "", nil,
			`line 2: lastSyncDateTime: "2025-03-01" is not an RFC 3339 time`, nil},
		{"field count", header + "1,A,a@b,compliant\n2,B,compliant\n", "", nil, "record on line 3: wrong number of fields", nil},
		{"duplicate id", header + "x,A,a@b,compliant\ny,B,b@b,compliant\nx,C,c@b,error\n", "", nil, "line 4: duplicate id x (first at line 2)", nil},
		{"group missing", header, "group,userPrincipalName,mail\n" + g1 + ",a@b,\n", []string{g2}, "group " + g2 + ": not in the export", nil},
		{"group row without group", header, "group,userPrincipalName,mail\n,a@b,\n", []string{g1}, "groups.csv line 2: group: missing", nil},
		{"groups header", header, "userPrincipalName,mail\n", []string{g1}, `groups.csv line 1: required column "group" missing`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var gr *strings.Reader
			if tc.groups != "" {
				gr = strings.NewReader(tc.groups)
			}
			s, err := parseCSV(context.Background(), strings.NewReader(tc.in), readerOrNil(gr), tc.want)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseCSV() error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseCSV() error: %v", err)
			}
			checkSnapshot(t, s)
			tc.check(t, s)
		})
	}
}

// readerOrNil keeps a nil *strings.Reader from becoming a non-nil io.Reader.
func readerOrNil(r *strings.Reader) io.Reader {
	if r == nil {
		return nil
	}
	return r
}

func TestFileSource(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string, mtime time.Time) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t1 := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	t0 := t1.Add(-time.Hour)
	csvPath := write("devices.csv", "id,easDeviceId,userPrincipalName,complianceState\n1,A,a@b,compliant\n", t1)
	jsonPath := write("export.JSON", `{"value":[{"id":"1","easDeviceId":"A","complianceState":"compliant"}],"groups":{"`+g1+`":[{"mail":"a@b"}]}}`, t1)
	ctx := context.Background()

	src, err := NewFile(jsonPath, "")
	if err != nil {
		t.Fatal(err)
	}
	s, err := src.Snapshot(ctx, []string{g1})
	if err != nil || len(s.Records) != 1 || len(s.Groups[g1]) != 1 || !s.TakenAt.Equal(t1) {
		t.Fatalf("JSON Snapshot() = %+v, %v", s, err)
	}

	src, err = NewFile(csvPath, FormatCSV)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := src.Snapshot(ctx, nil); err != nil || len(s.Records) != 1 || !s.TakenAt.Equal(t1) {
		t.Errorf("CSV Snapshot() without groups = %+v, %v", s, err)
	}
	if _, err := src.Snapshot(ctx, []string{g1}); err == nil || !strings.Contains(err.Error(), "groups.csv") {
		t.Errorf("CSV Snapshot() without groups.csv: %v, want an error naming it", err)
	}
	write(GroupsCSV, "group,userPrincipalName,mail\n"+g1+",a@b,\n", t0)
	if s, err := src.Snapshot(ctx, []string{g1}); err != nil || len(s.Groups[g1]) != 1 || !s.TakenAt.Equal(t0) {
		t.Errorf("CSV Snapshot() = %+v, %v; want TakenAt %v, the older file", s, err, t0)
	}

	bad := write("bad.csv", "id,easDeviceId,userPrincipalName,complianceState\n1,A,a@b,green\n", t1)
	src, _ = NewFile(bad, "")
	if _, err := src.Snapshot(ctx, nil); err == nil || !strings.HasPrefix(err.Error(), "mdm file "+bad+": line 2: complianceState") {
		t.Errorf("error %v, want it to name the file, line and field", err)
	}
	src, _ = NewFile(filepath.Join(dir, "missing.json"), "")
	if _, err := src.Snapshot(ctx, nil); err == nil {
		t.Error("Snapshot() of a missing file succeeded")
	}
	for _, tc := range []struct{ path, format, wantErr string }{
		{"", "", "path: missing"}, {"x.txt", "", `"txt" is neither`}, {"x.json", "xml", `"xml" is neither`},
	} {
		if _, err := NewFile(tc.path, Format(tc.format)); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("NewFile(%q, %q) error = %v, want %q", tc.path, tc.format, err, tc.wantErr)
		}
	}
}

// checkSnapshot verifies what every successful parse guarantees.
func checkSnapshot(t *testing.T, s *Snapshot) {
	t.Helper()
	ids := make(map[string]bool)
	owners := make(map[string][]string) // lower-case EAS id → UPN (or mail)
	for _, r := range s.Records {
		if r.ID == "" || ids[r.ID] || r.EASDeviceID == "" || r.EASDeviceID != strings.TrimSpace(r.EASDeviceID) {
			t.Fatalf("bad record %+v", r)
		}
		if _, err := ParseCompliance(string(r.Compliance)); err != nil || string(r.Compliance) != strings.TrimSpace(string(r.Compliance)) {
			t.Fatalf("record %s: compliance %q", r.ID, r.Compliance)
		}
		ids[r.ID] = true
		k := strings.ToLower(r.EASDeviceID)
		owner := r.UserPrincipalName
		if owner == "" {
			owner = r.Email
		}
		owners[k] = append(owners[k], owner)
	}
	contested := func(upns []string) bool {
		for _, u := range upns {
			if !strings.EqualFold(u, upns[0]) {
				return true
			}
		}
		return false
	}
	conflicts := 0
	for _, upns := range owners {
		if contested(upns) {
			conflicts++
		}
	}
	for _, r := range s.Records {
		if r.Conflict != contested(owners[strings.ToLower(r.EASDeviceID)]) {
			t.Fatalf("record %s: Conflict %v", r.ID, r.Conflict)
		}
	}
	if conflicts != s.Conflicts || s.Total() != len(s.Records)+s.NoEASID {
		t.Fatalf("Conflicts %d, want %d", s.Conflicts, conflicts)
	}
}

func jsonTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339Nano)
}

// exportJSON writes records and groups in the JSON export format.
func exportJSON(t *testing.T, s *Snapshot) []byte {
	t.Helper()
	devs := []device{}
	for _, r := range s.Records {
		devs = append(devs, device{ID: r.ID, UserID: r.UserID, UserPrincipalName: r.UserPrincipalName, EmailAddress: r.Email, EASDeviceID: r.EASDeviceID,
			ComplianceState: string(r.Compliance), EnrolledDateTime: jsonTime(r.EnrolledAt), LastSyncDateTime: jsonTime(r.LastSyncAt),
			OperatingSystem: r.Platform, OSVersion: r.OSVersion, Model: r.Model, EASActivated: r.EASActivated, ManagementAgent: r.ManagementAgent})
	}
	groups := make(map[string][]memberJSON)
	for id, ms := range s.Groups {
		groups[id] = []memberJSON{}
		for _, m := range ms {
			groups[id] = append(groups[id], memberJSON{ID: m.ID, UserPrincipalName: m.UserPrincipalName, Mail: m.Mail})
		}
	}
	b, err := json.Marshal(map[string]any{"value": devs, "groups": groups})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// exportCSV writes records and groups in the CSV export format.
func exportCSV(t *testing.T, s *Snapshot) (devices, groups []byte) {
	t.Helper()
	var db, gb bytes.Buffer
	w := csv.NewWriter(&db)
	_ = w.Write(csvColumns)
	for _, r := range s.Records {
		_ = w.Write([]string{r.ID, r.UserID, r.EASDeviceID, r.UserPrincipalName, r.Email, string(r.Compliance), jsonTime(r.EnrolledAt),
			jsonTime(r.LastSyncAt), r.Platform, r.OSVersion, r.Model, strconv.FormatBool(r.EASActivated), r.ManagementAgent})
	}
	w.Flush()
	w = csv.NewWriter(&gb)
	_ = w.Write(groupColumns)
	for id, ms := range s.Groups {
		_ = w.Write([]string{id, "", "", ""})
		for _, m := range ms {
			_ = w.Write([]string{id, m.UserPrincipalName, m.Mail, m.ID})
		}
	}
	w.Flush()
	return db.Bytes(), gb.Bytes()
}

// sameSnapshot compares what an export carries: records without an EAS id
// are not in Records and so do not survive a round trip.
func sameSnapshot(a, b *Snapshot) bool {
	return reflect.DeepEqual(a.Records, b.Records) && reflect.DeepEqual(a.Groups, b.Groups) && a.Conflicts == b.Conflicts
}

func groupsIn(s *Snapshot) []string {
	var ids []string
	for id := range s.Groups {
		ids = append(ids, id)
	}
	return ids
}

// FuzzFileJSON checks the JSON export parser: it never panics, whatever it
// accepts is a valid snapshot, and writing that snapshot back out and
// reading it again gives the same snapshot.
func FuzzFileJSON(f *testing.F) {
	f.Add([]byte(`[{"id":"1","easDeviceId":"A","complianceState":"compliant"}]`), false)
	f.Add([]byte(`{"value":[{"id":"1","easDeviceId":"A","userPrincipalName":"u","complianceState":"error","lastSyncDateTime":"2025-03-01T10:00:00.5+01:00"}],"groups":{"`+g1+`":[{"mail":"m"}]}}`), true)
	f.Fuzz(func(t *testing.T, data []byte, withGroup bool) {
		var groups []string
		if withGroup {
			groups = []string{g1}
		}
		s, err := parseJSON(context.Background(), bytes.NewReader(data), groups)
		if err != nil {
			return
		}
		checkSnapshot(t, s)
		again, err := parseJSON(context.Background(), bytes.NewReader(exportJSON(t, s)), groupsIn(s))
		if err != nil {
			t.Fatalf("re-export of %q does not parse: %v", data, err)
		}
		if !sameSnapshot(s, again) {
			t.Fatalf("round trip of %q changed the snapshot:\n%+v\n%+v", data, s, again)
		}
	})
}

// FuzzFileCSV is FuzzFileJSON for the CSV export and its groups.csv.
func FuzzFileCSV(f *testing.F) {
	f.Add([]byte("id,easDeviceId,userPrincipalName,complianceState\n1,A,u,compliant\n"), []byte("group,userPrincipalName,mail\n"+g1+",u,\n"), true)
	f.Add([]byte("\ufeffeasActivated,ID,EASDEVICEID,userPrincipalName,complianceState\ntrue,1,\" A \",\"u\nv\",inGracePeriod\n"), []byte(""), false)
	f.Fuzz(func(t *testing.T, devices, groupsCSV []byte, withGroup bool) {
		var groups []string
		if withGroup {
			groups = []string{g1}
		}
		s, err := parseCSV(context.Background(), bytes.NewReader(devices), bytes.NewReader(groupsCSV), groups)
		if err != nil {
			return
		}
		checkSnapshot(t, s)
		d, g := exportCSV(t, s)
		again, err := parseCSV(context.Background(), bytes.NewReader(d), bytes.NewReader(g), groupsIn(s))
		if err != nil {
			t.Fatalf("re-export of %q does not parse: %v\n%s", devices, err, d)
		}
		if !sameSnapshot(s, again) {
			t.Fatalf("round trip of %q changed the snapshot:\n%+v\n%+v", devices, s, again)
		}
	})
}

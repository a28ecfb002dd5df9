package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/easconnector/easconnector/pipeline"
)

func TestAuditVerifyCommand(t *testing.T) {
	dir := t.TempDir()
	a, err := pipeline.OpenAudit(dir, pipeline.AuditOptions{MaxBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		if err := a.Write(pipeline.AuditEntry{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), SyncID: "s", Mailbox: fmt.Sprintf("m%d@contoso.com", i),
			Device: fmt.Sprintf("DEV%d", i), List: pipeline.ListBlocked, From: pipeline.Absent, To: pipeline.Present}); err != nil {
			t.Fatal(err)
		}
		a.Flush()
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runIn(t, t.Context(), "audit", "verify", "--state-dir", dir)
	if code != exitOK || !strings.Contains(out, "12 lines in ") || !strings.Contains(out, "audit log chain OK") {
		t.Fatalf("audit verify = %d\n%s%s", code, out, errOut)
	}
	files, _ := pipeline.AuditFiles(dir)
	if len(files) < 3 {
		t.Fatalf("files %v: want rotation", files)
	}
	// One byte changed in the first line of the newest rotated file.
	victim := files[len(files)-2]
	b, _ := os.ReadFile(victim)
	b = bytes.Replace(b, []byte("@contoso"), []byte("@contosp"), 1)
	os.WriteFile(victim, b, 0o600)
	code, out, _ = runIn(t, t.Context(), "audit", "verify", "--state-dir", dir)
	if code != exitFailed || !strings.Contains(out, filepath.Base(victim)+":2: chain: prev ") || !strings.Contains(out, "BROKEN") {
		t.Errorf("audit verify after an edit in %s = %d\n%s", filepath.Base(victim), code, out)
	}
	if code, _, errOut = runIn(t, t.Context(), "audit", "verify", "--state-dir", filepath.Join(dir, "nope")); code != exitFailed || !strings.Contains(errOut, "nope") {
		t.Errorf("audit verify of a missing directory = %d, %s", code, errOut)
	}
	if code, _, _ = runIn(t, t.Context(), "audit"); code != exitUsage {
		t.Errorf("audit without verify = %d, want usage", code)
	}
}

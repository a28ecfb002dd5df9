package config

import (
	"strings"
	"testing"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/pipeline"
)

func TestAuditRotationKeys(t *testing.T) {
	c := mustParse(t, minimal)
	o, err := c.PipelineOptions(exchange.LevelAllow)
	if err != nil {
		t.Fatal(err)
	}
	if o.Audit != (pipeline.AuditOptions{MaxBytes: pipeline.DefaultAuditMaxBytes, Keep: pipeline.DefaultAuditKeep}) {
		t.Errorf("default audit options = %+v", o.Audit)
	}
	c = mustParse(t, minimal+"[sync]\naudit_max_bytes = 1048576\naudit_keep = 0\n")
	if o, _ = c.PipelineOptions(exchange.LevelAllow); o.Audit != (pipeline.AuditOptions{MaxBytes: 1 << 20, Keep: -1}) {
		t.Errorf("audit_keep = 0 maps to %+v, want every file kept", o.Audit)
	}
	for doc, want := range map[string]string{
		"[sync]\naudit_max_bytes = 100\n": "sync.audit_max_bytes",
		"[sync]\naudit_keep = -1\n":       "sync.audit_keep",
	} {
		if _, err := Parse(strings.NewReader(minimal + doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error naming %s", doc, err, want)
		}
	}
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/graphsim"
	"github.com/easconnector/easconnector/loadtest/population"
	"github.com/easconnector/easconnector/mdm"
)

// TestCheckGraph: with [mdm] source = "graph", check reads a page of
// devices and of each group's members and names the missing application
// permission: a 403 fails the check, members whose UPN and mail come back
// null (an app with GroupMember.Read.All only) are a warning naming
// User.Read.All.
func TestCheckGraph(t *testing.T) {
	sim := startSim(t, exsim.Options{Listeners: 1})
	pop := population.Generate(population.Options{Devices: 40, Seed: 5})
	gs := graphsim.New(pop, graphsim.Options{ClientSecret: "check-secret"})
	url, err := gs.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gs.Close)

	cfg := writeConfig(t, sim, exsim.DefaultPassword, 0o600, "")
	dir := filepath.Dir(cfg)
	if err := os.WriteFile(filepath.Join(dir, "graph.secret"), []byte("check-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), "source = \"file\"\nfile = \"mdm.json\"\n", fmt.Sprintf(`source = "graph"
tenant_id = %q
client_id = %q
client_secret_file = %q
authority_url = %q
graph_url = %q
included_groups = [%q]
excluded_groups = [%q]
`, graphsim.DefaultTenantID, graphsim.DefaultClientID, filepath.Join(dir, "graph.secret"), url, url, pop.Included.ID, pop.Excluded.ID), 1)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}

	f := func(g graphsim.Grants, wantCode int, want ...string) {
		t.Helper()
		gs.SetGrants(g)
		code, out, errOut := runCmd(t, "check", "--config", cfg)
		if code != wantCode {
			t.Errorf("check with grants %+v = %d, want %d\n%s\n%s", g, code, wantCode, out, errOut)
		}
		for _, w := range want {
			if !regexp.MustCompile(w).MatchString(out) {
				t.Errorf("check with grants %+v: output lacks %s:\n%s", g, w, out)
			}
		}
	}
	f(graphsim.Grants{}, exitOK, `mdm\s+token\s+OK\s+tenant `, `mdm\s+managedDevices\s+OK\s+\d+ read, 0 without userId`,
		`mdm\s+included group `+pop.Included.ID+`\s+OK\s+\d+ users, 0 without UPN and mail`,
		`mdm\s+permissions\s+OK\s+`+regexp.QuoteMeta(mdm.PermDevices))
	f(graphsim.Grants{NoUsers: true}, exitOK, `mdm\s+included group `+pop.Included.ID+`\s+WARN\s+\d+ users, [1-9]\d* without UPN and mail`,
		`WARN mdm included group `+pop.Included.ID+`:\n  cause: group `+pop.Included.ID+`: \d+ of \d+ members came with userPrincipalName and mail null .*\n  fix:   grant the application permission `+regexp.QuoteMeta(mdm.PermUsers),
		`mdm\s+permissions\s+WARN\s+missing `+regexp.QuoteMeta(mdm.PermUsers))
	f(graphsim.Grants{NoMembers: true}, exitFailed, `mdm\s+excluded group `+pop.Excluded.ID+`\s+FAILED\s+0 users`,
		`FAILED mdm excluded group `+pop.Excluded.ID+`:\n  cause: group `+pop.Excluded.ID+`: access denied: grant the application `+regexp.QuoteMeta(mdm.PermMembers),
		`mdm\s+permissions\s+FAILED\s+missing `+regexp.QuoteMeta(mdm.PermMembers))
	f(graphsim.Grants{NoDevices: true}, exitFailed, `mdm\s+managedDevices\s+FAILED\s+0 read`,
		`FAILED mdm managedDevices:\n  cause: managedDevices: access denied: grant the application `+regexp.QuoteMeta(mdm.PermDevices),
		`fix:   grant the application permission `+regexp.QuoteMeta(mdm.PermDevices))
	// A wrong secret fails at the token, before any read.
	if err := os.WriteFile(filepath.Join(dir, "graph.secret"), []byte("wrong-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f(graphsim.Grants{}, exitFailed, `mdm\s+token\s+FAILED\s+tenant `, `FAILED mdm token:\n  cause: .*token: HTTP 401.*\n  fix:   check \[mdm\] tenant_id, client_id and the secret`)
}

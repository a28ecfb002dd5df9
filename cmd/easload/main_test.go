package main

import (
	"context"
	"strings"
	"testing"
)

func TestFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		out  string // in stdout or stderr
	}{
		{[]string{"--help"}, exitOK, "kill9"},
		{[]string{"-list"}, exitOK, "lag p95 ≤ 2m0s"},
		{[]string{"-list", "-full"}, exitOK, "50000 devices"},
		{[]string{"-scenario", "steady,nope"}, exitFailed, `scenario "nope": unknown`},
		{[]string{"-devices", "3"}, exitFailed, "-devices: must be between 10"},
		{[]string{"extra"}, exitFailed, `unexpected argument "extra"`},
		{[]string{"-bin", t.TempDir(), "-dir", t.TempDir()}, exitFailed, "easconnector:"},
	} {
		var out, errOut strings.Builder
		code := run(context.Background(), c.args, &out, &errOut)
		if code != c.code || !strings.Contains(out.String()+errOut.String(), c.out) {
			t.Errorf("easload %q = %d, want %d with %q in:\n%s%s", c.args, code, c.code, c.out, out.String(), errOut.String())
		}
	}
}

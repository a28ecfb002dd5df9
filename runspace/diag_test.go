package runspace

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestDiagRingCLIXML(t *testing.T) {
	var r diagRing
	lines := []string{
		"#< CLIXML",
		`<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04"><Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj>`,
		`<S S="Error">Import-PSSession : Access is denied_x000D__x000A_</S><S S="Error">    + CategoryInfo : &lt;none&gt;_x000D__x000A_</S></Objs>`,
		"plain stderr line",
		"#< CLIXML\r",
		`<Objs Version="1.1.0.1"><S S="Error">The WS-Management service cannot process the request. This user is allowed a maximum of 18 concurrent shells, which has been exceeded.</S></Objs>`,
	}
	throttle := false
	for _, l := range lines {
		_, th := r.add("stderr", l)
		throttle = throttle || th
	}
	want := []string{
		"stderr: Import-PSSession : Access is denied",
		"stderr: + CategoryInfo : <none>",
		"stderr: plain stderr line",
		"stderr: The WS-Management service cannot process the request. This user is allowed a maximum of 18 concurrent shells, which has been exceeded.",
	}
	if got := r.tail(10); !slices.Equal(got, want) {
		t.Errorf("tail() = %q\nwant %q", got, want)
	}
	if !throttle {
		t.Errorf("add() did not report the throttling text inside CLIXML")
	}
	if strings.Contains(r.suffix(), "progress") || strings.Contains(r.suffix(), "<Obj") {
		t.Errorf("suffix() = %q, CLIXML not stripped", r.suffix())
	}
}

func TestDiagRingBounds(t *testing.T) {
	var r diagRing
	for i := range 3 * diagLines {
		r.add("stdout", fmt.Sprintf("line %d\x1b[31m", i))
	}
	got := r.tail(diagLines + 5)
	if len(got) != diagLines {
		t.Fatalf("tail() has %d lines, want %d", len(got), diagLines)
	}
	if got[0] != fmt.Sprintf("stdout: line %d [31m", 2*diagLines) || got[len(got)-1] != fmt.Sprintf("stdout: line %d [31m", 3*diagLines-1) {
		t.Errorf("tail() = %q … %q, want the newest lines without control characters", got[0], got[len(got)-1])
	}
	r.add("stdout", strings.Repeat("é", diagLineMax))
	last := r.tail(1)[0]
	if len(last) > diagLineMax+len("stdout: ")+len("…") || !strings.HasSuffix(last, "…") {
		t.Errorf("long line kept as %d bytes, want it truncated", len(last))
	}
	if n := len(strings.Split(r.suffix(), " | ")); n != diagQuoteMax {
		t.Errorf("suffix() quotes %d lines, want %d", n, diagQuoteMax)
	}
	var empty diagRing
	if empty.suffix() != "" {
		t.Errorf("empty suffix() = %q", empty.suffix())
	}
}

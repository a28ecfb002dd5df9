package runspace

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"
)

// psGrammarDir holds check.mjs, which parses PowerShell with the
// tree-sitter-powershell grammar (web-tree-sitter, wasm: no native build).
const psGrammarDir = "testdata/psgrammar"

type grammarFinding struct {
	Line int    `json:"line"`
	Col  int    `json:"col"`
	Msg  string `json:"msg"`
	Text string `json:"text"`
}

// runGrammarCheck runs check.mjs once over files (mode=path pairs) and
// returns the findings per path. It skips, saying what to install, when
// node or the npm packages are missing, except under CI, which installs
// them (.ci/run) and must not skip silently.
func runGrammarCheck(t *testing.T, files ...string) map[string][]grammarFinding {
	t.Helper()
	missing := func(what string) {
		t.Helper()
		msg := what + ": install Node.js 18+ (apt-get install nodejs npm), then run `npm ci` in runspace/" + psGrammarDir
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node not found")
	}
	for _, p := range []string{"node_modules/web-tree-sitter/package.json", "node_modules/tree-sitter-powershell/tree-sitter-powershell.wasm"} {
		if _, err := os.Stat(filepath.Join(psGrammarDir, p)); err != nil {
			missing(p + " not found")
		}
	}
	// --liftoff-only: see check.mjs (seconds of background compiling otherwise).
	args := append([]string{"--liftoff-only", filepath.Join(psGrammarDir, "check.mjs")}, files...)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(node, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node check.mjs: %v\n%s", err, stderr.String())
	}
	var out map[string][]grammarFinding
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("check.mjs output %q: %v", stdout.String(), err)
	}
	return out
}

// decodeEncodedCommand reverses -EncodedCommand: base64 of UTF-16LE.
func decodeEncodedCommand(t *testing.T, args []string) string {
	t.Helper()
	for i, a := range args {
		if a == "-EncodedCommand" && i+1 < len(args) {
			raw, err := base64.StdEncoding.DecodeString(args[i+1])
			if err != nil || len(raw)%2 != 0 {
				t.Fatalf("-EncodedCommand is not base64 UTF-16LE: %v", err)
			}
			u := make([]uint16, len(raw)/2)
			for j := range u {
				u[j] = binary.LittleEndian.Uint16(raw[2*j:])
			}
			return string(utf16.Decode(u))
		}
	}
	t.Fatal("CommandArgs() has no -EncodedCommand")
	return ""
}

// TestBootstrapGrammar parses the stage 1 script and the stage 0 that
// CommandArgs really sends with a PowerShell grammar: no syntax error, and
// no construct that evaluates a string as code except stage 0 running
// stage 1. The same checker must catch each hostile edit of the script.
func TestBootstrapGrammar(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	script := string(stage1)
	stage0 := decodeEncodedCommand(t, CommandArgs())
	if stage0 != Stage0 {
		t.Fatalf("decoded stage 0 = %q, want Stage0", stage0)
	}
	// Each edit goes where a careless change would: into the request loop.
	const anchor = "        $params = @{}\n"
	if !strings.Contains(script, anchor) {
		t.Fatalf("bootstrap.ps1 lost the line %q the edits are inserted after", anchor)
	}
	insert := func(line string) string { return strings.Replace(script, anchor, anchor+"        "+line+"\n", 1) }
	bad := []struct {
		name, text, want string
	}{
		{"Invoke-Expression", insert("Invoke-Expression $name"), "command Invoke-Expression"},
		{"iex alias in capitals", insert("$x = IEX $req.cmd"), "command Invoke-Expression"},
		{"module-qualified", insert(`Microsoft.PowerShell.Utility\Invoke-Expression -Command $name`), "command Invoke-Expression"},
		{"scriptblock create", insert("$sb = [ScriptBlock]::Create($name)"), "[scriptblock]::Create"},
		{"scriptblock full name", insert("$sb = [System.Management.Automation.ScriptBlock]::Create($name)"), "[scriptblock]::Create"},
		{"ExecutionContext", insert("$ExecutionContext.InvokeCommand.InvokeScript($name)"), "$ExecutionContext"},
		{"InvokeScript", insert("$host.Runspace.SessionStateProxy.InvokeCommand.InvokeScript($name)"), "method InvokeScript"},
		{"ExpandString", insert("$s = $executioncontext.SessionState.InvokeCommand.ExpandString($name)"), "method ExpandString"},
		{"AddScript", insert("$null = [PowerShell]::Create().AddScript($name).Invoke()"), "method AddScript"},
		{"Add-Type", insert("Add-Type -TypeDefinition $name"), "command Add-Type"},
		{"Invoke-Command with a string", insert("icm -ScriptBlock ([scriptblock]::Create($name))"), "command Invoke-Command"},
		{"call operator on a request value", insert("& $name @params"), "invocation operator &"},
		{"call operator on the table", insert("& $allowed[$name] @params"), "invocation operator &"},
		{"call operator on a string", insert("& ('Remove-' + 'Mailbox') x"), "invocation operator &"},
		{"dot-source", insert(". $name"), "invocation operator ."},
		{"ForEach-Object -MemberName", insert("$req | ForEach-Object $name"), "ForEach-Object with something other than a script block"},
		{"powershell -Command", insert("powershell.exe -Command $name"), "command powershell"},
		{"Assembly.Load", insert("[System.Reflection.Assembly]::Load($bytes)"), "assembly Load"},
		{"inside a string", insert(`$x = "$(iex $name)"`), "command Invoke-Expression"},
		{"quoted method name", insert(`$host.Runspace.SessionStateProxy.InvokeCommand.'InvokeScript'($name)`), "method InvokeScript"},
		{"quoted Create", insert(`$sb = [scriptblock]::"Create"($name)`), "[scriptblock]::Create"},
		{"computed method name", insert(`$null = $req.$name()`), "method called by a computed name"},
		{"syntax error", strings.Replace(script, "function Send-Frame($frame) {", "function Send-Frame($frame) ", 1), "syntax error"},
		{"unclosed string", insert("$x = 'unclosed"), "syntax error"},
	}
	args := []string{"stage1=" + write("bootstrap.ps1", script), "stage0=" + write("stage0.ps1", stage0),
		"stage1=" + write("stage0-as-stage1.ps1", stage0),
		"stage0=" + write("stage0-twice.ps1", stage0+";"+stage0)}
	for i, b := range bad {
		args = append(args, "stage1="+write(fmt.Sprintf("bad%02d.ps1", i), b.text))
	}
	out := runGrammarCheck(t, args...)
	show := func(fs []grammarFinding) string {
		var b strings.Builder
		for _, f := range fs {
			fmt.Fprintf(&b, "\n  %d:%d: %s (%q)", f.Line, f.Col, f.Msg, f.Text)
		}
		return b.String()
	}
	for _, name := range []string{"bootstrap.ps1", "stage0.ps1"} {
		if fs, ok := out[filepath.Join(dir, name)]; !ok || len(fs) != 0 {
			t.Errorf("%s: %d findings (present %v):%s", name, len(fs), ok, show(fs))
		}
	}
	if fs := out[filepath.Join(dir, "stage0-as-stage1.ps1")]; len(fs) == 0 || !strings.Contains(show(fs), "invocation operator .") {
		t.Errorf("stage 0's evaluation is allowed outside stage 0:%s", show(fs))
	}
	if fs := out[filepath.Join(dir, "stage0-twice.ps1")]; !strings.Contains(show(fs), "exactly once") {
		t.Errorf("stage 0 running code twice passed:%s", show(fs))
	}
	for i, b := range bad {
		fs := out[filepath.Join(dir, fmt.Sprintf("bad%02d.ps1", i))]
		if !strings.Contains(show(fs), b.want) {
			t.Errorf("%s: findings%s\nwant one containing %q", b.name, show(fs), b.want)
		}
	}
}

// TestShippedScriptsGrammar parses the other PowerShell the project ships
// (deploy/exchange: the RBAC setup an administrator runs on Exchange) with
// the same grammar and rules: no syntax error, nothing that evaluates a
// string as code.
func TestShippedScriptsGrammar(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "deploy", "exchange", "*.ps1"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts under deploy/exchange (%v)", err)
	}
	args := make([]string, len(files))
	for i, f := range files {
		args[i] = "stage1=" + f
	}
	out := runGrammarCheck(t, args...)
	for _, f := range files {
		fs, ok := out[f]
		if !ok {
			t.Errorf("%s: not checked", f)
		}
		for _, x := range fs {
			t.Errorf("%s:%d:%d: %s (%q)", f, x.Line, x.Col, x.Msg, x.Text)
		}
	}
}

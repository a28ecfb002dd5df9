package runspace

import (
	"bytes"
	_ "embed"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode/utf16"
)

// stage1 is the bootstrap script, sent over stdin (see bootstrap.ps1).
//
//go:embed bootstrap.ps1
var stage1 []byte

// Stage0 is the first stage, carried on the command line: it sets UTF-8
// output, reads one tagged line from stdin (stage 1), decodes and runs it.
// It is constant, so the command line never carries request data.
const Stage0 = `$e=New-Object System.Text.UTF8Encoding $false;[Console]::OutputEncoding=$e;` +
	`$l=[Console]::In.ReadLine();if($l -and $l.StartsWith('EASC1 ')){` +
	`. ([ScriptBlock]::Create($e.GetString([Convert]::FromBase64String($l.Substring(6)))))}else{exit 3}`

// PowerShellExe is the program the session starts in the WinRM shell.
const PowerShellExe = "powershell.exe"

// Allowlist is the set of cmdlets the bootstrap will run, read from the
// allowlist block of bootstrap.ps1 so there is one source of truth.
var Allowlist []string

// Param is a parameter the bootstrap lets a cmdlet take.
type Param struct {
	Name string // canonical spelling, as bootstrap.ps1 binds it
	// List marks a multi-valued parameter: it takes []string, a ListEdit
	// or ClearList, never nil (JSON null would bind as $null and empty
	// the whole list).
	List bool
}

// allowParams maps a lowercased cmdlet name to its parameters.
var allowParams map[string][]Param

func init() {
	Allowlist, allowParams = parseAllowlist(stage1)
}

var (
	allowEntryRe = regexp.MustCompile(`^\s*'([A-Za-z]+-[A-Za-z]+)'\s*=\s*@\(([^()]*)\)\s*$`)
	allowParamRe = regexp.MustCompile(`^'([A-Za-z]{1,64})(\[\])?'$`)
)

// parseAllowlist reads the "# allowlist:begin" block of the script. Any
// line it does not understand is a build error of the script, so it panics:
// Go and PowerShell must never read two different lists.
func parseAllowlist(script []byte) ([]string, map[string][]Param) {
	start := bytes.Index(script, []byte("# allowlist:begin"))
	end := bytes.Index(script, []byte("# allowlist:end"))
	if start < 0 || end < start {
		panic("runspace: bootstrap.ps1 has no allowlist block")
	}
	var names []string
	params := map[string][]Param{}
	for _, line := range strings.Split(string(script[start:end]), "\n") {
		line = strings.TrimRight(line, "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") || trimmed == "$allowed = @{" || trimmed == "}" {
			continue
		}
		m := allowEntryRe.FindStringSubmatch(line)
		if m == nil {
			panic("runspace: bootstrap.ps1 allowlist line not understood: " + line)
		}
		key := strings.ToLower(m[1])
		if _, dup := params[key]; dup {
			panic("runspace: bootstrap.ps1 allowlist names a cmdlet twice: " + m[1])
		}
		ps := []Param{}
		seen := map[string]bool{}
		for _, f := range strings.Split(m[2], ",") {
			f = strings.TrimSpace(f)
			if f == "" && strings.TrimSpace(m[2]) == "" {
				break
			}
			pm := allowParamRe.FindStringSubmatch(f)
			if pm == nil || seen[strings.ToLower(pm[1])] {
				panic("runspace: bootstrap.ps1 allowlist has a bad parameter for " + m[1] + ": " + f)
			}
			seen[strings.ToLower(pm[1])] = true
			ps = append(ps, Param{Name: pm[1], List: pm[2] != ""})
		}
		names = append(names, m[1])
		params[key] = ps
	}
	slices.Sort(names)
	return names, params
}

// Allowed reports whether cmd is in the bootstrap's allowlist (spelled as
// the allowlist spells it).
func Allowed(cmd string) bool {
	_, ok := slices.BinarySearch(Allowlist, cmd)
	return ok
}

// Params returns the parameters the bootstrap lets cmd take (matched
// case-insensitively, as the bootstrap's hashtable does), and whether cmd
// is allowlisted at all.
func Params(cmd string) ([]Param, bool) {
	ps, ok := allowParams[strings.ToLower(cmd)]
	return slices.Clone(ps), ok
}

// lookupParam finds the allowlisted parameter name denotes for cmd:
// exactly, case-insensitively, never by prefix (PowerShell would accept a
// unique prefix, which is how -ov would reach -OutVariable).
func lookupParam(cmd, name string) (Param, bool) {
	for _, p := range allowParams[strings.ToLower(cmd)] {
		if strings.EqualFold(p.Name, name) {
			return p, true
		}
	}
	return Param{}, false
}

// ClearList is the value that empties a multi-valued parameter (it binds
// as $null). A nil slice is refused instead, so that a list emptied by
// accident never clears Exchange's.
type ClearList struct{}

// MarshalJSON writes the wire form bootstrap.ps1 turns into $null.
func (ClearList) MarshalJSON() ([]byte, error) { return []byte(`{"clear":true}`), nil }

// CheckWireArgs applies bootstrap.ps1's checks to the args of a decoded
// request (JSON values: nil, bool, string, json.Number or float64, []any,
// map[string]any) and returns them under their canonical names, with a
// clear turned into nil, the way the bootstrap binds them. Its errors carry
// the text the bootstrap throws. The simulator uses it to behave as the
// bootstrap does.
func CheckWireArgs(cmd string, args map[string]any) (map[string]any, error) {
	if _, ok := allowParams[strings.ToLower(cmd)]; !ok {
		return nil, fmt.Errorf("cmdlet is not in the easconnector allowlist: %s", cmd)
	}
	canonCmd := cmd
	for _, n := range Allowlist {
		if strings.EqualFold(n, cmd) {
			canonCmd = n
		}
	}
	out := make(map[string]any, len(args))
	for _, name := range slices.Sorted(maps.Keys(args)) {
		p, ok := lookupParam(cmd, name)
		if !ok {
			return nil, fmt.Errorf("parameter is not in the easconnector allowlist of %s: %s", canonCmd, name)
		}
		if _, dup := out[p.Name]; dup {
			return nil, fmt.Errorf("parameter %s of %s given twice", p.Name, canonCmd)
		}
		v, err := wireArg(canonCmd, p, args[name])
		if err != nil {
			return nil, err
		}
		out[p.Name] = v
	}
	return out, nil
}

// wireArg is ConvertTo-Arg of bootstrap.ps1.
func wireArg(cmd string, p Param, v any) (any, error) {
	what := "parameter " + p.Name + " of " + cmd
	if !p.List {
		switch v.(type) {
		case nil, string, bool, json.Number, float64:
			return v, nil
		}
		return nil, fmt.Errorf("%s takes one value, not a list or an edit", what)
	}
	switch v := v.(type) {
	case nil:
		return nil, fmt.Errorf("%s is a list: null is refused (send a clear to empty it)", what)
	case []any:
		if err := wireList(what, v); err != nil {
			return nil, err
		}
		return v, nil
	case map[string]any:
		if len(v) == 1 && v["clear"] == true {
			return nil, nil
		}
		for _, n := range slices.Sorted(maps.Keys(v)) {
			if n != "add" && n != "remove" {
				return nil, fmt.Errorf("%s: an edit has only add and remove, got %s", what, n)
			}
			if v[n] == nil {
				return nil, fmt.Errorf("%s: %s is null", what, n)
			}
			list, _ := v[n].([]any)
			if list == nil {
				list = []any{v[n]} // @($x) of a single value
			}
			if err := wireList(what, list); err != nil {
				return nil, err
			}
		}
		if len(v) == 0 {
			return nil, fmt.Errorf("%s: empty edit", what)
		}
		return v, nil
	}
	return nil, fmt.Errorf("%s is a list: a single value is refused", what)
}

func wireList(what string, list []any) error {
	for _, x := range list {
		if _, ok := x.(string); !ok {
			return fmt.Errorf("%s: list items must be strings", what)
		}
	}
	return nil
}

// encodeUTF16LE returns base64(UTF-16LE(s)), the form -EncodedCommand takes.
func encodeUTF16LE(s string) string {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// CommandArgs returns the arguments of PowerShellExe that start stage 0.
func CommandArgs() []string {
	return []string{"-NoLogo", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass",
		"-EncodedCommand", encodeUTF16LE(Stage0)}
}

// Stage1Line is the first stdin line: the tagged, base64-encoded bootstrap.
func Stage1Line() []byte {
	out := make([]byte, 0, len(FrameTag)+base64.StdEncoding.EncodedLen(len(stage1))+1)
	out = append(out, FrameTag...)
	out = base64.StdEncoding.AppendEncode(out, stage1)
	return append(out, '\n')
}

// Stage1Script returns the bootstrap script text (for inspection and tests).
func Stage1Script() []byte { return bytes.Clone(stage1) }

// VerifyCommandLine checks that a command and its arguments are exactly the
// ones CommandArgs produces. The simulator uses it to refuse anything that
// is not easconnector's stage 0.
func VerifyCommandLine(command string, args []string) error {
	if command != PowerShellExe {
		return fmt.Errorf("bootstrap: command %q is not %s", command, PowerShellExe)
	}
	if !slices.Equal(args, CommandArgs()) {
		return errors.New("bootstrap: arguments are not easconnector's stage 0")
	}
	return nil
}

// VerifyStage1Line checks that line is the exact stage 1 this binary sends.
func VerifyStage1Line(line []byte) error {
	line = bytes.TrimRight(line, "\r\n")
	if !bytes.HasPrefix(line, []byte(FrameTag)) {
		return errors.New("bootstrap: stage 1 line is not tagged")
	}
	got, err := base64.StdEncoding.DecodeString(string(line[len(FrameTag):]))
	if err != nil {
		return fmt.Errorf("bootstrap: stage 1 base64: %w", err)
	}
	if !bytes.Equal(got, stage1) {
		return errors.New("bootstrap: stage 1 is not easconnector's bootstrap")
	}
	return nil
}

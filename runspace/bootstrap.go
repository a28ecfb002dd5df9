package runspace

import (
	"bytes"
	_ "embed"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"slices"
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
var Allowlist = parseAllowlist(stage1)

func parseAllowlist(script []byte) []string {
	start := bytes.Index(script, []byte("# allowlist:begin"))
	end := bytes.Index(script, []byte("# allowlist:end"))
	if start < 0 || end < start {
		panic("runspace: bootstrap.ps1 has no allowlist block")
	}
	re := regexp.MustCompile(`(?m)^\s*'([A-Za-z-]+)'\s*=\s*'([A-Za-z-]+)'\s*$`)
	var names []string
	for _, m := range re.FindAllSubmatch(script[start:end], -1) {
		if !bytes.Equal(m[1], m[2]) {
			panic("runspace: allowlist entry maps to another cmdlet: " + string(m[1]))
		}
		names = append(names, string(m[1]))
	}
	slices.Sort(names)
	return names
}

// Allowed reports whether cmd is in the bootstrap's allowlist.
func Allowed(cmd string) bool {
	_, ok := slices.BinarySearch(Allowlist, cmd)
	return ok
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

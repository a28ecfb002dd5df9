package bed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Commands are the binaries a load run needs, by name under cmd/.
var Commands = []string{"easconnector", "exsim", "graphsim"}

// exe is name with the OS's executable suffix.
func exe(name string) string {
	if runtime.GOOS == "windows" {
		return name + ".exe"
	}
	return name
}

// goTool is the go command: on PATH, else the one that built this program.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// ModuleRoot returns the directory of the module that holds the working
// directory (go env GOMOD), for building its commands.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD: not inside the easconnector module")
	}
	return filepath.Dir(mod), nil
}

// Build builds the named commands (Commands when none) of the module at
// root into dir with one go build, and returns their paths by name.
func Build(ctx context.Context, root, dir string, names ...string) (map[string]string, error) {
	if len(names) == 0 {
		names = Commands
	}
	args := []string{"build", "-trimpath", "-o", dir + string(filepath.Separator)}
	for _, n := range names {
		args = append(args, "./cmd/"+n)
	}
	cmd := exec.CommandContext(ctx, goTool(), args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %w\n%s", strings.Join(names, " "), err, out)
	}
	return Find(dir, names...)
}

// Find returns the named commands (Commands when none) in dir, or an error
// naming the first one missing.
func Find(dir string, names ...string) (map[string]string, error) {
	if len(names) == 0 {
		names = Commands
	}
	out := map[string]string{}
	for _, n := range names {
		p, err := filepath.Abs(filepath.Join(dir, exe(n)))
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%s: %w (make build puts it in bin/)", n, err)
		}
		out[n] = p
	}
	return out, nil
}

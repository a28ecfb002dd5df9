package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/easconnector/easconnector/config"
)

// The daemon's soft memory limit. Go's runtime reads GOMEMLIMIT but not
// the cgroup's memory limit, so without one a connector under systemd's
// MemoryMax= (or in a container) lets its heap grow to twice the live heap
// and can be OOM-killed while the collector had room to work harder. The
// limit is 90 % of the cgroup's, leaving the rest for what the runtime does
// not count (the binary, thread stacks outside the heap, page cache the
// cgroup charges).

// autoLimitShare is the share of the cgroup limit taken by default.
const autoLimitShare = 0.9

// memoryLimit decides the limit: GOMEMLIMIT in the environment wins, then
// [sync] memory_limit, then 90 % of the cgroup limit read under root
// ("/" in production). It returns the limit in bytes (0: none) and where
// it came from.
func memoryLimit(env, configured string, root fs.FS) (int64, string) {
	if env != "" {
		return 0, "GOMEMLIMIT=" + env + " from the environment"
	}
	n, err := config.ParseMemoryLimit(configured)
	switch {
	case err != nil: // validated at load; a bad value here is a bug
		return 0, fmt.Sprintf("none: sync.memory_limit: %v", err)
	case n < 0:
		return 0, "none: sync.memory_limit = \"off\""
	case n > 0:
		return n, "sync.memory_limit = " + strconv.Quote(configured)
	}
	lim, where, err := cgroupMemoryLimit(root)
	switch {
	case err != nil:
		return 0, fmt.Sprintf("none: no cgroup memory limit found (%v)", err)
	case lim == 0:
		return 0, "none: the cgroup (" + where + ") has no memory limit"
	}
	return int64(float64(lim) * autoLimitShare), fmt.Sprintf("90%% of the cgroup memory limit %d MiB (%s)", lim>>20, where)
}

// applyMemoryLimit sets the runtime's limit as memoryLimit decides and logs
// the choice.
func applyMemoryLimit(cfg *config.Config, log *slog.Logger) {
	env := os.Getenv("GOMEMLIMIT")
	lim, why := memoryLimit(env, cfg.Sync.MemoryLimit, os.DirFS("/"))
	if lim > 0 {
		debug.SetMemoryLimit(lim)
	}
	if cur := debug.SetMemoryLimit(-1); cur != 1<<63-1 {
		log.Info("memory limit", "limit_mib", cur>>20, "from", why)
	} else {
		log.Info("memory limit", "limit", "none", "from", why)
	}
}

// unlimitedV1 is where cgroup v1 reports "no limit": the largest page
// multiple below 2^63; anything at or above 2^62 is taken as none.
const unlimitedV1 = 1 << 62

// cgroupMemoryLimit returns the memory limit of this process's cgroup (the
// smallest along its path to the root of the hierarchy; 0 when none), from
// /proc/self/cgroup and the cgroup file system under root: memory.max for
// cgroup v2, memory.limit_in_bytes for v1 (kernel Documentation
// admin-guide/cgroup-v2.rst "memory.max", cgroup-v1/memory.rst).
func cgroupMemoryLimit(root fs.FS) (limit int64, where string, err error) {
	b, err := fs.ReadFile(root, "proc/self/cgroup")
	if err != nil {
		return 0, "", err
	}
	var v1, v2 string
	found1, found2 := false, false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2, found2 = parts[2], true
		case containsWord(parts[1], "memory"):
			v1, found1 = parts[2], true
		}
	}
	type source struct{ dir, file, version string }
	var tries []source
	if found1 { // a v1 memory controller is the one that limits, even beside a v2 hierarchy
		tries = append(tries, source{"sys/fs/cgroup/memory", "memory.limit_in_bytes", "v1"})
	}
	if found2 {
		tries = append(tries, source{"sys/fs/cgroup", "memory.max", "v2"})
	}
	if len(tries) == 0 {
		return 0, "", errors.New("/proc/self/cgroup names no memory cgroup")
	}
	for _, s := range tries {
		p := v2
		if s.version == "v1" {
			p = v1
		}
		lim, read := int64(0), false
		for dir := path.Clean("/" + p); ; dir = path.Dir(dir) {
			raw, err := fs.ReadFile(root, strings.TrimSuffix(s.dir+dir, "/")+"/"+s.file)
			if err == nil {
				read = true
				v := strings.TrimSpace(string(raw))
				if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 && n < unlimitedV1 && (lim == 0 || n < lim) {
					lim = n
				}
			}
			if dir == "/" {
				break
			}
		}
		if read {
			return lim, "cgroup " + s.version + " " + p, nil
		}
	}
	return 0, "", errors.New("no memory.max or memory.limit_in_bytes along the cgroup path")
}

func containsWord(list, w string) bool {
	for f := range strings.SplitSeq(list, ",") {
		if f == w {
			return true
		}
	}
	return false
}

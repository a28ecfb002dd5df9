package main

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestMemoryLimit(t *testing.T) {
	v2 := fstest.MapFS{
		"proc/self/cgroup": {Data: []byte("0::/system.slice/easconnector.service\n")},
		"sys/fs/cgroup/system.slice/easconnector.service/memory.max": {Data: []byte("2147483648\n")},
		"sys/fs/cgroup/system.slice/memory.max":                      {Data: []byte("max\n")},
	}
	v1 := fstest.MapFS{
		"proc/self/cgroup": {Data: []byte("12:pids:/\n4:memory:/process_api/abc\n1:name=systemd:/\n0::/\n")},
		// The parent's limit is the tighter one.
		"sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": {Data: []byte("9223372036854771712\n")},
		"sys/fs/cgroup/memory/process_api/memory.limit_in_bytes":     {Data: []byte("1073741824\n")},
		"sys/fs/cgroup/memory/memory.limit_in_bytes":                 {Data: []byte("9223372036854771712\n")},
	}
	unlimited := fstest.MapFS{
		"proc/self/cgroup":                    {Data: []byte("0::/user.slice\n")},
		"sys/fs/cgroup/user.slice/memory.max": {Data: []byte("max\n")},
	}
	for _, c := range []struct {
		name, env, cfg string
		root           fstest.MapFS
		want           int64
		why            string
	}{
		{"v2 cgroup", "", "", v2, 2147483648 * 9 / 10, "90% of the cgroup memory limit 2048 MiB (cgroup v2 /system.slice/easconnector.service)"},
		{"v1 cgroup, parent limit", "", "", v1, 1073741824 * 9 / 10, "1024 MiB (cgroup v1 /process_api/abc)"},
		{"no limit", "", "", unlimited, 0, "has no memory limit"},
		{"no cgroup file", "", "", fstest.MapFS{}, 0, "no cgroup memory limit found"},
		{"configured wins over the cgroup", "", "1536MiB", v2, 1536 << 20, `sync.memory_limit = "1536MiB"`},
		{"off", "", "off", v2, 0, `"off"`},
		{"environment wins", "800MiB", "1536MiB", v2, 0, "GOMEMLIMIT=800MiB from the environment"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, why := memoryLimit(c.env, c.cfg, c.root)
			if got != c.want || !strings.Contains(why, c.why) {
				t.Errorf("memoryLimit = %d, %q; want %d, containing %q", got, why, c.want, c.why)
			}
		})
	}
}

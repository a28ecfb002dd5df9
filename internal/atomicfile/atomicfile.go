// Package atomicfile writes small state files so that a crash or power loss
// leaves either the old file or the new one, never a torn mix, and reads them
// back with a size bound. The connector's state, held plans and notification
// records all go through it.
package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Write replaces dir/name with data so that a crash at any point
// leaves either the old file or the new one, never a mix: a temporary file
// in the same directory is written and fsynced, renamed over the target,
// and the directory is fsynced so that the rename itself survives a power
// loss. A temporary file a crashed writer left behind is ignored by readers
// (it never has the target's name) and removed by a later write once it is
// an hour old. The file is private to its owner (os.CreateTemp makes it
// 0600): it names mailboxes and devices.
func Write(dir, name string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	target := filepath.Join(dir, name)
	if err = os.Rename(tmp, target); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, target, err)
	}
	if err = SyncDir(dir); err != nil {
		return err
	}
	removeStaleTemps(dir, name, time.Hour)
	return nil
}

// SyncDir makes a rename in dir durable. Windows cannot fsync a directory
// (and its rename is durable without it).
func SyncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}

// removeStaleTemps removes temporary files of name older than age: a writer
// that crashed before its rename left them. Younger ones may belong to a
// writer in another process (the CLI beside the daemon) and stay.
func removeStaleTemps(dir, name string, age time.Duration) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	prefix := "." + name + ".tmp-"
	for _, e := range ents {
		if e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > age {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// ReadLimited reads a file of at most limit bytes; a bigger file is an
// error rather than an unbounded allocation.
func ReadLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("read %s: larger than the limit of %d bytes", path, limit)
	}
	return b, nil
}

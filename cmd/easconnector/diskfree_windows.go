//go:build windows

package main

import "golang.org/x/sys/windows"

// diskFree returns the bytes the calling account may still write on dir's
// volume (its quota included).
func diskFree(dir string) (int64, error) {
	p, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return 0, err
	}
	var avail, total, free uint64
	if err := windows.GetDiskFreeSpaceEx(p, &avail, &total, &free); err != nil {
		return 0, err
	}
	return int64(avail), nil
}

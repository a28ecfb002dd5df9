// Package soak holds the long load run behind `make loadtest`: a large
// organization on both simulators, a first full sync, then rounds of fleet
// churn and quick syncs with faults injected along the way (a Client Access
// listener killed and restarted, Graph throttling), ending with a full sync
// that must find nothing to write. It runs only when asked for
// (go test -run Load, not under -short) and stops by itself.
package soak

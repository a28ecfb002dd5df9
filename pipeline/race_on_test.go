//go:build race

package pipeline_test

// raceEnabled: the race detector slows the simulators about tenfold, so
// the end-to-end tests use a smaller fleet under it.
const raceEnabled = true

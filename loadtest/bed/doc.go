// Package bed is the process-level test bed of the load tests: it builds
// the product's commands as an installation gets them (go build of
// cmd/easconnector, cmd/exsim, cmd/graphsim), runs exsim and graphsim as
// processes on loopback and drives them through their control APIs, writes
// the connector's configuration and secret files for them, runs the real
// easconnector binary as a child process, reads its admin API, and
// measures the process (peak RSS, CPU) from /proc.
//
// cmd/easload and loadtest/scenario use it; tests that need the binary
// against simulators in their own process (cmd/easconnector's crash and
// shutdown tests, the demo) can take Build, Proc and Config from here too.
package bed

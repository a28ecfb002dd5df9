// Package bench holds easconnector's capacity-planning benchmarks: whole
// syncs, end to end, through the real runspace pool, WinRM client,
// exchange.Client and mdm.Graph against the Exchange simulator (exsim,
// behind WS-Management) and the Graph simulator (graphsim), in one
// process. They answer "how long does a sync of my fleet take with R
// sessions and Exchange's latency L, and how much memory does the
// connector need", and compare the measured time with the bound of
// DESIGN.md §9. README.md explains how to run and read them.
//
// The package has no non-test code besides this comment.
package bench

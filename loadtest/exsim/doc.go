// Package exsim manages a simulated on-premises Exchange organization served
// behind the real WS-Management wire protocol, so that easconnector's
// runspace pool, with the real github.com/masterzen/winrm client, talks to it
// exactly as it talks to Exchange (DESIGN.md §7).
//
// A Sim owns one Org (mailboxes, EAS partnerships, ActiveSync organization
// settings, device access rules, servers) and one or more Client Access
// listeners: listener i serves WS-Man on 127.0.0.(i+1) with the same port
// for all, so a client configured with one port reaches every server by
// host. Each listener's wsman.Server runs the worker of this package for
// every command: it accepts only easconnector's stage 0 command line and
// stage 1 bootstrap (runspace.VerifyCommandLine, VerifyStage1Line), then
// plays the bootstrap's protocol (runspace/protocol.go): a session config
// line, a ready or initerr frame, and per request line zero or more obj
// frames, streamed as produced, then an end or err frame.
//
// The cmdlets are the bootstrap's allowlist, with Exchange's parameter
// behaviour (types, abbreviations, parameter sets, mandatory parameters,
// @{Add;Remove} edits, -ResultSize, -Filter in OPATH, -ErrorAction) and
// Exchange's and PowerShell's error texts. Access states come from Org's
// ABQ evaluation in Exchange's order (see Org.Access). Latency follows a
// named Profile; Quotas reproduce PowerShellMaxConcurrency and the
// PowerShellMaxCmdlets budget; Faults and the listener methods inject
// failures; Counters and the call log record what clients did.
//
// Lifecycle: Start (or New, without network, for driving Runner over
// pipes) → use → Close, which stops every listener and waits for every
// session. All methods of Sim and Org are safe for concurrent use.
// ControlHandler exposes the same operations as JSON for loopback use;
// cmd/exsim runs a Sim standalone.
package exsim

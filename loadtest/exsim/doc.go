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
// Each listener also serves Exchange's own endpoint: MS-PSRP over
// WS-Management on /PowerShell/ (and /wsman) with the ResourceURI
// http://schemas.microsoft.com/powershell/Microsoft.Exchange (ResourceURI,
// PowerShellURL). A runspace pool is an Exchange session: its Create takes one
// of the user's PowerShellMaxConcurrency slots (the quota fault when none is
// left) and is answered with SESSION_CAPABILITY, APPLICATION_PRIVATE_DATA and
// RUNSPACEPOOL_STATE Opened; each pipeline is one allowlisted Exchange
// cmdlet (or Get-Command), optionally followed by Select-Object -Property,
// run by the same cmdlet layer as the bootstrap, with its output as
// Exchange's objects in CLIXML, non-terminating errors as ERROR_RECORD,
// warnings as WARNING_RECORD and its end as PIPELINE_STATE. Scripts are
// refused (a no-language runspace), so are cmdlets the account's roles do
// not grant (Options.Roles, SetRoles: CommandNotFoundException). The call
// log shows each PSRP call with Protocol "psrp", its pipeline id and its
// parameters exactly as received. The wire format is checked against
// pypsrp's recordings of Windows (psrp_conformance_test.go).
//
// The cmdlets are the bootstrap's allowlist, with Exchange's parameter
// behaviour (types, abbreviations, parameter sets, mandatory parameters,
// @{Add;Remove} edits, -ResultSize, -Filter in OPATH, -ErrorAction) and
// Exchange's and PowerShell's error texts.
//
// Access states are stored, not live, as on a Client Access server: each
// request of a phone evaluates ABQ (Org.evaluateLocked: ActiveSync enabled,
// blocked list, allowed list, discovery when rules exist, device access
// rules by characteristic — UserAgent, DeviceOS, DeviceModel, DeviceType,
// the first match deciding whatever its level — then DefaultAccessLevel)
// and stores the outcome on the device; Get-MobileDevice reports what is
// stored. A phone makes a request when its partnership is created, when it
// reports new characteristics (UpdateDevice), on Org.Contact / ContactAll
// (control API POST /v1/device/contact, /v1/devices/contact) and after each
// churn step (Sim.ApplyChurn). Set-CASMailbox writes the stored state of the
// devices whose ids it lists at once (Blocked or Allowed, Individual) and
// Unknown for a device whose entry it removed, and keeps the two lists
// disjoint (an id added to one leaves the other; one call leaving an id in
// both is refused with Exchange's ErrorDeviceIdInBothLists). Changing rules,
// the default level or ActiveSyncEnabled reaches a device only at its next
// request, and a mailbox with ActiveSync disabled is refused before ABQ, so
// its devices keep their stored state. Org.Access and Evaluate answer "would
// this phone get mail now?" live, for tests. Sources: the cmdlet reference in
// MicrosoftDocs/office-docs-powershell (Set-CASMailbox.md,
// New-ActiveSyncDeviceAccessRule.md, Get-MobileDevice.md), and where it is
// silent Exchange 2016's own code (AirSync Command.DetermineDeviceAccessState,
// SetCASMailboxBase, as decompiled in evilashz/exchange-server-27065).
//
// Latency follows a
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

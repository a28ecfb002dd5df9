// Package pipeline manages one sync of EAS device access with MDM
// compliance: it decides, per Exchange device partnership, whether the
// device belongs in the mailbox's ActiveSyncAllowedDeviceIDs, in its
// ActiveSyncBlockedDeviceIDs or in neither, and plans the smallest edit of
// those lists that gets there without touching what an Exchange
// administrator put there.
//
// This file set is the pure core the staged sync (discover → join → decide →
// plan → guard → apply → notify → report) is built on:
//
//   - Policy, Decide: the decision table of DESIGN.md §4, first matching
//     row wins. Decide is a pure function of the policy, one device's Input
//     and the time; it allocates nothing.
//   - Scope, Join, Index: who is targeted (included/excluded groups of the
//     MDM snapshot, joined to mailboxes by Entra object id through the
//     device records when the directory withholds members' UPN and mail;
//     ScopeUnknown when neither can tell) and the MDM record of an EAS
//     device id.
//   - PlanMailbox: one mailbox's current lists, the entries we own and the
//     decisions of its devices → a MailboxPlan (one Set-CASMailbox with
//     @{Add=…;Remove=…} per list), conflicts with administrator entries and
//     the ownership after the write. Planning again against the written
//     lists gives an empty plan.
//   - CheckSnapshot, CheckBlastRadius, HeldPlan: the fail-static guards of
//     DESIGN.md §6, and a held plan that `sync --approve ID` applies later.
//   - State, Audit: the only authoritative files (state_dir/state.json,
//     written atomically; state_dir/audit.jsonl, append-only).
//   - StageMetrics, SyncResult: one wrapper that times and counts every
//     stage, and the record of a finished sync that the server shows.
//
// Nothing here does I/O except State, Audit and HeldPlan, which read and
// write files in the state directory. Decide, PlanMailbox, the guards and
// Index are safe for concurrent use; State's methods are safe for concurrent
// use, its fields are not; Audit is safe for concurrent use.
//
// # Engine
//
// Engine runs the syncs on top of that core (engine.go and the stage
// files): New(Options) loads the state and opens the audit log; Sync runs
// one sync at a time (a second call gets ErrSyncRunning) and returns a
// Report; Devices and LastResults serve the status API; Close ends it.
//
// A full sync is an errgroup of stages joined by a bounded channel: the
// MDM snapshot (checked by CheckSnapshot as soon as it arrives), the
// ActiveSync org settings and rules, Get-CASMailbox of every mailbox with
// a partnership, and Get-MobileDevice streaming into the joiner, which
// groups devices by mailbox and decides each one as soon as the snapshot
// and the mailbox map are there (devices arriving earlier wait in memory,
// so the device read never waits for Get-CASMailbox). Decisions are cheap
// (Decide does not allocate; ~1 µs per device with the join), so the
// joiner is one goroutine. Mailboxes the stream names but Get-CASMailbox
// did not return are read by DN; devices whose mailbox still cannot be
// read, whose DeviceId is invalid or whose object does not decode are
// skipped and reported, never acted on. Then: plan every mailbox
// (Complete when the policy is enabled), the blast-radius guard over all
// plans (and the devices a tightening DefaultAccessLevel would shut out),
// before the first write; apply, one Set-CASMailbox per changed mailbox on
// an ants pool of Workers, retried with backoff; the org configuration;
// notices; state, watermarks, fingerprints and the baseline the next
// quick sync compares with.
//
// A quick sync reads the MDM in full (Graph has no delta) but from
// Exchange only what can have changed since the baseline, the decisions
// of the last sync held in memory: partnerships created after the
// watermark, devices in quarantine or discovery that the baseline did not
// leave there, the mailboxes of MDM records whose fingerprint changed
// (cache.FingerprintCache: a miss counts as changed) or that vanished, of
// users who entered or left the policy's groups, and of writes that failed
// last time. Each affected mailbox is read whole (Get-MobileDevice
// -Mailbox) and planned without Complete; its lists come from the mailbox
// cache when the plan against them is empty, and are read again before
// any write. Without a baseline (after a start) a quick sync runs as a
// full one and says so.
//
// When Sync returns, every goroutine it started has exited, also when its
// context ends mid-sync: the writes already made are recorded (a write in
// flight claims ownership as OwnedIfUncertain) and the state is saved.
//
// # Errors
//
// Infrastructure failures (config, all CAS unreachable, MDM unreadable) are
// returned and stop the sync before any write. Per-device and per-mailbox
// failures are recorded on the item, counted, logged at a bounded rate, and
// retried next sync: one bad mailbox never cancels the others.
//
// In this core that means: an invalid policy, an MDM snapshot missing a
// configured group or whose included members none can be matched to a
// mailbox (ErrScopeUnresolvable; members without object ids already fail
// the mdm snapshot), an unreadable or too-new state file and a tripped
// guard are errors; a device whose DeviceId fails validation is a decision
// (NoChange, InvalidDeviceId), an administrator entry that contradicts the
// policy is a Conflict on its MailboxPlan, and neither stops anything.
//
// # Ownership
//
// Exchange is the source of truth for what is applied; the connector owns
// only the list entries it wrote (State.Owned). An entry present but not
// owned is the administrator's: it is never removed, and where it
// contradicts a decision the plan reports a Conflict (reason AdminOverride)
// and yields to it. Entries present before the first full sync become ours
// only when adopt_existing is set (State.MayAdopt); after a lost or corrupt
// state file nothing is adopted, so entries we wrote earlier are treated as
// the administrator's until someone removes them.
package pipeline

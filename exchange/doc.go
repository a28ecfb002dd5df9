// Package exchange is the typed Exchange API of easconnector: it reads mobile
// devices, CAS mailboxes, ActiveSync organization settings, device access
// rules and servers, and writes the per-mailbox allowed/blocked device lists,
// through a Runner (in production the runspace pool).
//
// Every method sends one allowlisted cmdlet per call (CASMailboxes sends one
// per batch of 50 identities) with its arguments as data: values travel as
// JSON and are bound by splatting in the bootstrap, and the only strings this
// package composes into an OPATH -Filter are its own (enum names, formatted
// dates, quoted distinguished names read from Exchange). Device-supplied
// strings — DeviceId, DeviceType, DeviceModel, DeviceUserAgent — are treated
// as hostile: a device whose DeviceId fails ValidDeviceID is reported to the
// caller with an error wrapping ErrInvalidDeviceID, and SetCASMailbox refuses
// to send any id that fails it.
//
// Reads ask for exactly the properties the Go types hold (Select), so the
// wire carries nothing else. Reads and list edits are marked idempotent, so
// the pool may retry them on a fresh session; rule creation and removal are
// not.
//
// A Client holds no state besides its Runner and is safe for concurrent use
// to the extent the Runner is.
package exchange

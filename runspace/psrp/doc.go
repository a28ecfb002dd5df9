// Package psrp implements the message layer of the PowerShell Remoting
// Protocol (MS-PSRP) that easconnector needs to run Exchange cmdlets
// through Exchange's own /PowerShell endpoint: fragments, messages and
// CLIXML. It knows nothing of WS-Management; the runspace package carries
// its bytes in WS-Man Create/Command/Send/Receive bodies, and exsim's PSRP
// endpoint serves them.
//
// # API
//
// Fragments (MS-PSRP 2.2.4):
//
//	fr := psrp.Fragmenter{MaxFragment: n}  // Split(msg) -> wire fragments, ObjectId 1, 2, …
//	var asm psrp.Assembler                 // Write(streamChunk, emit) -> whole messages
//
// The Assembler takes whole fragments as WS-Man stream elements carry them,
// reassembles messages whose fragments span several Receive responses and
// interleave with other objects, and refuses gaps, restarts, unknown flags
// and messages over MaxMessage.
//
// Messages (2.2.1): Message{Destination, Type, RPID, PID, Data},
// AppendMessage, ParseMessage (drops Windows' UTF-8 BOM). Every message
// type of 2.2.1 is a MessageType constant. GUIDs are kept in canonical
// order and written in .NET order.
//
// CLIXML (2.2.5): Encoder writes typed values (string with PowerShell's
// _xHHHH_ escaping, []string, bool, Switch, int32/int64, DateTime,
// Hashtable for @{Add=…;Remove=…}, nil, []any) with RefIds and TN/TNRef;
// AppendEscaped/Unescape are the string codec. DecodeValue builds a small
// tree (Value, Object) for control messages; Projection streams an output
// object straight to a flat JSON object of selected properties, building
// no tree.
//
// Builders and parsers: BuildSessionCapability, BuildInitRunspacePool and
// BuildCreatePipeline (a pipeline of Commands — cmdlet name and typed
// Params, IsScript always false: no script text can be sent);
// ParsePoolState, ParsePipelineState, ParseErrorRecord (ErrorInfo with
// FullyQualifiedErrorId and category for language-independent
// classification), ParseInformational (warning, verbose, debug and
// information records) and ParseApplicationPrivateData.
//
// Nothing here is safe for concurrent use except the pure functions; a
// session owns its Fragmenter, Assembler, Encoder and Projection.
//
// # Conformance
//
// The tests replay pypsrp's recordings of real Windows traffic
// (testdata/pypsrp, provenance and MIT licence in PROVENANCE there):
// every recorded fragment, message and CLIXML payload decodes, summarized
// against reviewed golden files, and the CLIXML shape of SESSION_CAPABILITY,
// INIT_RUNSPACEPOOL and CREATE_PIPELINE is compared with what pypsrp sent.
// Package psrptest reads the recordings for other packages' tests.
//
// # Why not github.com/smnsjas/go-psrpcore
//
// We evaluated go-psrpcore v0.0.0-20251230190552-63d922dacbb3 against the
// same recordings. Its fragments and messages decode all 80 recorded
// messages, but its Assembler accepts fragments with no start fragment or
// out of sequence and has no byte bound, its CLIXML deserializer builds a
// generic tree per object and leaves _xHHHH_ escapes in strings
// ("a_x000D__x000A_b" stays so), and its serializer writes control
// characters as XML character references instead of PowerShell's escapes
// (so a NUL cannot be sent). The fragment and message layers are a few
// dozen lines each; we kept none of it rather than take a dependency (and
// github.com/google/uuid) for them, and wrote the CLIXML codec, which is
// where the gaps were, ourselves.
package psrp

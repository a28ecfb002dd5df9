package wsman

import (
	"bytes"
	"fmt"
	"strconv"
)

// WSManFault codes (the Code attribute of f:WSManFault) this server answers
// with. WS-Management's own codes are the HRESULTs of wsmerror.h written as
// unsigned decimals, as Windows writes them; Win32 errors raised by the shell
// plugin are HRESULT_FROM_WIN32 values, and a few plain Win32 codes (995)
// appear unwrapped, as PowerShell's own client expects them.
const (
	CodeResourceNotFound        = 2150858752 // ERROR_WSMAN_RESOURCE_NOT_FOUND 0x80338000: ResourceURI is not the cmd shell
	CodeProviderFailure         = 2150858755 // ERROR_WSMAN_PROVIDER_FAILURE 0x80338003: injected internal error (SetFaultRate)
	CodeInvalidHeader           = 2150858767 // ERROR_WSMAN_INVALID_MESSAGE_INFORMATION_HEADER 0x8033800F
	CodeHeaderRequired          = 2150858769 // ERROR_WSMAN_MESSAGE_INFORMATION_HEADER_REQUIRED 0x80338011
	CodeActionNotSupported      = 2150858771 // ERROR_WSMAN_ACTION_NOT_SUPPORTED 0x80338013
	CodeInvalidBody             = 2150858791 // ERROR_WSMAN_INVALID_SOAP_BODY 0x80338027
	CodeOperationTimeout        = 2150858793 // ERROR_WSMAN_OPERATION_TIMEDOUT 0x80338029: Receive long-poll expired
	CodeInvalidOptions          = 2150858809 // ERROR_WSMAN_INVALID_OPTIONS 0x80338039
	CodeInvalidParameter        = 2150858810 // ERROR_WSMAN_INVALID_PARAMETER 0x8033803A: unknown stream or signal
	CodeMaxEnvelopeSizeExceeded = 2150858824 // ERROR_WSMAN_MAX_ENVELOPE_SIZE_EXCEEDED 0x80338048
	CodeInvalidSelectors        = 2150858843 // ERROR_WSMAN_UNEXPECTED_SELECTORS 0x8033805B: shell or command not found
	CodeInvalidTimeout          = 2150858881 // ERROR_WSMAN_INVALID_TIMEOUT_HEADER 0x80338081
	CodeMaxShells               = 2150859173 // ERROR_WSMAN_QUOTA_MAX_SHELLS 0x803381A5: MaxShellsPerUser
	CodeMaxOperations           = 2150859174 // ERROR_WSMAN_QUOTA_MAX_OPERATIONS 0x803381A6: MaxConcurrentOperationsPerUser
	CodeCommandTerminated       = 2150859212 // ERROR_WSMAN_COMMAND_TERMINATED 0x803381CC
	CodeMaxShellsPPQ            = 2150859236 // ERROR_WSMAN_QUOTA_MAX_SHELLS_PPQ 0x803381E4: plugin Quotas/MaxShells
	CodeMaxUsersPPQ             = 2150859237 // ERROR_WSMAN_QUOTA_MAX_USERS_PPQ 0x803381E5: plugin Quotas/MaxConcurrentUsers
	CodeMaxPluginShellsPPQ      = 2150859238 // ERROR_WSMAN_QUOTA_MAX_PLUGINSHELLS_PPQ 0x803381E6: plugin Quotas/MaxShellsPerUser
	CodeMaxPluginOperationsPPQ  = 2150859239 // ERROR_WSMAN_QUOTA_MAX_PLUGINOPERATIONS_PPQ 0x803381E7: plugin Quotas/MaxConcurrentOperations
	CodeMaxOperationsUserPPQ    = 2150859240 // ERROR_WSMAN_QUOTA_MAX_OPERATIONS_USER_PPQ 0x803381E8: plugin Quotas/MaxConcurrentOperationsPerUser
	CodeMaxCommandsPerShell     = 2150859241 // ERROR_WSMAN_QUOTA_MAX_COMMANDS_PER_SHELL_PPQ 0x803381E9: MaxProcessesPerShell, plugin MaxConcurrentCommandsPerShell
	CodeMinRequirementPPQ       = 2150859242 // ERROR_WSMAN_QUOTA_MIN_REQUIREMENT_NOT_AVAILABLE_PPQ 0x803381EA: the plugin's quotas cannot be met at all
	CodeCmdTooLong              = 2147942606 // HRESULT_FROM_WIN32(ERROR_FILENAME_EXCED_RANGE) 0x800700CE
	CodePipeClosing             = 2147942632 // HRESULT_FROM_WIN32(ERROR_NO_DATA) 0x800700E8: stdin of an ended command
	CodeStartFailed             = 2147500037 // E_FAIL 0x80004005: Runner.Start refused the command
	CodeOperationAborted        = 995        // ERROR_OPERATION_ABORTED: Receive pending while its shell was deleted
)

// Fault actions: WS-Addressing faults (subcode a:…) and WS-Management faults.
const (
	actionAddressingFault = nsAddressing + "/fault"
	actionWSManFault      = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
)

// The shell plugin that raises provider faults, as Windows names it.
const (
	cmdProvider     = "Shell cmd plugin"
	cmdProviderPath = `%systemroot%\system32\winrscmd.dll`
)

// Fault is a SOAP 1.2 fault with a WS-Management f:WSManFault detail, the
// way Windows reports every WinRM error. The server answers it with HTTP 500.
type Fault struct {
	// Sender is true for s:Sender (the request is wrong) and false for
	// s:Receiver (the service could not do it).
	Sender bool
	// Subcode is the qualified subcode value, e.g. "w:TimedOut" or
	// "a:DestinationUnreachable"; the prefix selects the fault Action.
	Subcode string
	// Code is the WSManFault Code attribute.
	Code uint32
	// Reason is the s:Reason text.
	Reason string
	// Message is the f:Message text; Reason when empty.
	Message string
	// Provider, when set, wraps Message in f:ProviderFault with this
	// provider name, as the shell plugin's own errors are.
	Provider string
	// Detail, when set, is the w:FaultDetail URI Windows puts before
	// f:WSManFault in s:Detail (DSP0226 §14.6), e.g. FaultDetailUnexpectedSelectors.
	Detail string
}

// FaultDetail URIs (DSP0226 Table 14; as recorded in pypsrp's
// tests/tests_pypsrp/responses/test_winrs_bad_cmd_id.yml and
// test_psrp_is_alive_invalid_selectors.yml).
const FaultDetailUnexpectedSelectors = "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors"

// textInvalidSelectors is Windows' generic s:Reason for w:InvalidSelectors,
// with its trailing space (pypsrp recordings above).
const textInvalidSelectors = "The WS-Management service cannot process the request because the request contained invalid selectors for the resource. "

// Error implements error so faults can travel as errors inside the server.
func (f *Fault) Error() string {
	return fmt.Sprintf("wsman fault %d (%s): %s", f.Code, f.Subcode, f.Reason)
}

func (f *Fault) message() string {
	if f.Message != "" {
		return f.Message
	}
	return f.Reason
}

func (f *Fault) action() string {
	if len(f.Subcode) > 2 && f.Subcode[:2] == "a:" {
		return actionAddressingFault
	}
	return actionWSManFault
}

// MarshalEnvelope renders the fault as a complete SOAP envelope, with
// Machine in the WSManFault detail and relatesTo (the request's MessageID,
// may be empty) in a:RelatesTo.
func (f *Fault) MarshalEnvelope(machine, relatesTo string) []byte {
	var b bytes.Buffer
	writeEnvelopeStart(&b, f.action(), relatesTo)
	b.WriteString(`<s:Fault><s:Code><s:Value>`)
	if f.Sender {
		b.WriteString("s:Sender")
	} else {
		b.WriteString("s:Receiver")
	}
	b.WriteString(`</s:Value><s:Subcode><s:Value>`)
	escape(&b, f.Subcode)
	b.WriteString(`</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">`)
	escape(&b, f.Reason)
	b.WriteString(`</s:Text></s:Reason><s:Detail>`)
	if f.Detail != "" {
		b.WriteString(`<w:FaultDetail>`)
		escape(&b, f.Detail)
		b.WriteString(`</w:FaultDetail>`)
	}
	b.WriteString(`<f:WSManFault xmlns:f="`)
	b.WriteString(nsWSManFault)
	b.WriteString(`" Code="`)
	b.WriteString(strconv.FormatUint(uint64(f.Code), 10))
	b.WriteString(`" Machine="`)
	escape(&b, machine)
	b.WriteString(`"><f:Message>`)
	if f.Provider != "" {
		b.WriteString(`<f:ProviderFault provider="`)
		escape(&b, f.Provider)
		b.WriteString(`" path="`)
		escape(&b, cmdProviderPath)
		b.WriteString(`">`)
		escape(&b, f.message())
		b.WriteString(`</f:ProviderFault>`)
	} else {
		escape(&b, f.message())
	}
	b.WriteString(`</f:Message></f:WSManFault></s:Detail></s:Fault>`)
	writeEnvelopeEnd(&b)
	return b.Bytes()
}

// FaultOperationTimeout is the Receive long-poll expiry. Its text contains
// "OperationTimeout", which is what masterzen/winrm retries on; the two
// trailing spaces are Windows' (pypsrp test_winrs_operation_timeout.yml).
func FaultOperationTimeout() *Fault {
	const text = "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  "
	return &Fault{Subcode: "w:TimedOut", Code: CodeOperationTimeout, Reason: text}
}

// FaultInvalidSelectors reports a ShellId unknown to the server: never
// created, deleted, reaped for idleness, or owned by another user. Windows
// puts the generic selector text in s:Reason and the shell's own text in
// f:Message (the Reason of pypsrp's test_psrp_is_alive_invalid_selectors.yml;
// the Message as Microsoft Learn's "InvalidShellID" troubleshooting article
// quotes it, reference/winrm.md §2.6).
func FaultInvalidSelectors(shellID string) *Fault {
	text := "The request for the Windows Remote Shell with ShellId " + shellID +
		" failed because the shell was not found on the server. Possible causes are: the specified ShellId is" +
		" incorrect or the shell no longer exists on the server. Provide the correct ShellId or create a new" +
		" shell and retry the operation. "
	return &Fault{Sender: true, Subcode: "w:InvalidSelectors", Code: CodeInvalidSelectors,
		Reason: textInvalidSelectors, Message: text, Detail: FaultDetailUnexpectedSelectors}
}

// FaultMaxShells is the MaxShellsPerUser quota fault on Create.
func FaultMaxShells(limit int) *Fault {
	return &Fault{
		Sender:  true,
		Subcode: "w:QuotaLimit",
		Code:    CodeMaxShells,
		Reason: "The WS-Management service cannot process the request. The maximum number of concurrent shells" +
			" for this user has been exceeded. Close existing shells or raise the quota for this user.",
		Message: "The WS-Management service cannot process the request. This user is allowed a maximum number of " +
			strconv.Itoa(limit) + " concurrent shells, which has been exceeded. Close existing shells or raise the" +
			" quota for this user.",
	}
}

// FaultMaxOperations is the MaxConcurrentOperationsPerUser quota fault on
// Command (Windows reports it as an InternalError).
func FaultMaxOperations(limit int) *Fault {
	text := "The WS-Management service cannot process the request. This user is allowed a maximum number of " +
		strconv.Itoa(limit) + " concurrent operations, which has been exceeded. Close existing operations for" +
		" this user, or raise the quota for this user."
	return &Fault{Subcode: "w:InternalError", Code: CodeMaxOperations, Reason: text}
}

// FaultMaxCommandsPerShell is the per-shell command quota fault on Command
// (winrs MaxProcessesPerShell, the PowerShell plugin's
// MaxConcurrentCommandsPerShell). Windows sends it as s:Receiver
// w:InternalError with the quota text in Reason, as pypsrp issue #148
// records it ("Code: w:InternalError, Reason: The WS-Management service
// cannot process the request. The maximum number of concurrent commands per
// shell has been exceeded. …").
func FaultMaxCommandsPerShell() *Fault {
	return FaultPluginQuota(CodeMaxCommandsPerShell)
}

// pluginQuotaTexts are the quota texts of the per-plugin quota (PPQ) faults.
// Only MaxCommandsPerShell's is recorded (pypsrp #148); the others follow
// its form with the quota named as the plugin's Quotas element names it
// (MS-WSMV 2.2.4.30 QuotasType).
var pluginQuotaTexts = map[uint32]string{
	CodeMaxShellsPPQ:           "The maximum number of concurrent shells allowed for this plugin has been exceeded. Retry the request later or raise the Maximum Shells quota.",
	CodeMaxUsersPPQ:            "The maximum number of concurrent users allowed for this plugin has been exceeded. Retry the request later or raise the Maximum Concurrent Users quota.",
	CodeMaxPluginShellsPPQ:     "The maximum number of concurrent shells allowed for this user for this plugin has been exceeded. Retry the request later or raise the Maximum Shells per User quota.",
	CodeMaxPluginOperationsPPQ: "The maximum number of concurrent operations allowed for this plugin has been exceeded. Retry the request later or raise the Maximum Concurrent Operations quota.",
	CodeMaxOperationsUserPPQ:   "The maximum number of concurrent operations allowed for this user for this plugin has been exceeded. Retry the request later or raise the Maximum Concurrent Operations per User quota.",
	CodeMaxCommandsPerShell:    "The maximum number of concurrent commands per shell has been exceeded. Retry the request later or raise the Maximum Commands per Shell quota.",
	CodeMinRequirementPPQ:      "The quota limits for this plugin cannot be met with the current service quota settings. Raise the service quotas or lower the plugin quotas.",
}

// FaultPluginQuota is the per-plugin quota fault with one of the codes
// 2150859236–2150859242: w:InternalError, the quota text in Reason and
// Message (the form of pypsrp #148). A code outside that range is answered
// with MaxCommandsPerShell's text.
func FaultPluginQuota(code uint32) *Fault {
	text, ok := pluginQuotaTexts[code]
	if !ok {
		code, text = CodeMaxCommandsPerShell, pluginQuotaTexts[CodeMaxCommandsPerShell]
	}
	return &Fault{Subcode: "w:InternalError", Code: code,
		Reason: "The WS-Management service cannot process the request. " + text}
}

// FaultCmdTooLong is what the cmd shell plugin answers when the command line
// exceeds cmd.exe's (or CreateProcess') limit. The trailing space is Windows'.
func FaultCmdTooLong() *Fault {
	const text = "The filename or extension is too long. "
	return &Fault{Subcode: "w:InternalError", Code: CodeCmdTooLong, Reason: text, Provider: cmdProvider}
}

// FaultStartFailed wraps a Runner.Start refusal the way the shell plugin
// reports a process that cannot be created.
func FaultStartFailed(text string) *Fault {
	return &Fault{Subcode: "w:InternalError", Code: CodeStartFailed, Reason: text, Provider: cmdProvider}
}

// FaultProviderFailure is the internal error injected by SetFaultRate.
func FaultProviderFailure() *Fault {
	return &Fault{Subcode: "w:InternalError", Code: CodeProviderFailure, Reason: "An error was encountered inside the plugin."}
}

// FaultCommandTerminated answers requests for a command that was terminated
// by a Signal, including a Receive that was pending at that moment.
func FaultCommandTerminated() *Fault {
	return &Fault{
		Subcode: "w:InternalError",
		Code:    CodeCommandTerminated,
		Reason:  "The WinRM Shell client cannot process the request. The command is currently terminating or was terminated.",
	}
}

// FaultOperationAborted answers a Receive that was pending when its shell was
// deleted (PowerShell's client reads 995 as "the shell or command closed").
func FaultOperationAborted() *Fault {
	return &Fault{
		Subcode: "w:InternalError",
		Code:    CodeOperationAborted,
		Reason:  "The I/O operation has been aborted because of either a thread exit or an application request.",
	}
}

// faultPipeClosing answers Send to a command whose stdin is closed (End was
// sent, or the process ended). Code and text are ERROR_NO_DATA's; what
// Windows answers here is not verified against a real host.
func faultPipeClosing() *Fault {
	return &Fault{Subcode: "w:InternalError", Code: CodePipeClosing, Reason: "The pipe is being closed.", Provider: cmdProvider}
}

func faultInvalidParameter(detail string) *Fault {
	return &Fault{
		Sender:  true,
		Subcode: "w:InvalidParameter",
		Code:    CodeInvalidParameter,
		Reason:  "The WS-Management service cannot process the request because a parameter for the operation is not valid.",
		Message: "The WS-Management service cannot process the request because a parameter for the operation is not valid. " + detail,
	}
}

func faultInvalidBody(detail string) *Fault {
	const text = "The WS-Management service cannot process the request because the request packet does not have a valid SOAP body."
	return &Fault{Sender: true, Subcode: "w:InvalidBody", Code: CodeInvalidBody, Reason: text, Message: text + " " + detail}
}

func faultHeaderRequired(detail string) *Fault {
	const text = "The WS-Management service cannot process the request. The request does not have all the expected SOAP headers."
	return &Fault{Sender: true, Subcode: "a:MessageInformationHeaderRequired", Code: CodeHeaderRequired, Reason: text, Message: text + " " + detail}
}

func faultInvalidHeader(detail string) *Fault {
	const text = "The WS-Management service cannot process the request. The request contains one or more invalid SOAP headers."
	return &Fault{Sender: true, Subcode: "a:InvalidMessageInformationHeader", Code: CodeInvalidHeader, Reason: text, Message: text + " " + detail}
}

func faultInvalidTimeout(detail string) *Fault {
	const text = "The WS-Management service cannot process the request because the timeout header in the request is invalid."
	return &Fault{Sender: true, Subcode: "w:InvalidHeader", Code: CodeInvalidTimeout, Reason: text, Message: text + " " + detail}
}

func faultEnvelopeTooSmall(detail string) *Fault {
	const text = "The response that the WS-Management service computed exceeds the maximum envelope size in the request."
	return &Fault{Sender: true, Subcode: "w:EncodingLimit", Code: CodeMaxEnvelopeSizeExceeded, Reason: text, Message: text + " " + detail}
}

func faultActionNotSupported(action string) *Fault {
	const text = "The WS-Management service does not support the action specified in the request."
	return &Fault{Sender: true, Subcode: "a:ActionNotSupported", Code: CodeActionNotSupported, Reason: text, Message: text + " Action: " + action}
}

func faultResourceNotFound(uri string) *Fault {
	const text = "The WS-Management service cannot process the request. The service cannot find the resource identified by the resource URI and selectors."
	return &Fault{Sender: true, Subcode: "a:DestinationUnreachable", Code: CodeResourceNotFound, Reason: text, Message: text + " ResourceURI: " + uri}
}

func faultInvalidOptions(detail string) *Fault {
	const text = "The WS-Management service cannot process the request because one or more options are not valid." +
		" The option names or values may not be valid or they are used in incorrect combinations." +
		" Retrieve the catalog entry for the resource and determine how to correct the invalid option values."
	return &Fault{Sender: true, Subcode: "w:InvalidOptions", Code: CodeInvalidOptions, Reason: text, Message: text + " " + detail}
}

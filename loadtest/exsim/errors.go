package exsim

import (
	"fmt"
	"strings"
	"time"

	"github.com/easconnector/easconnector/runspace"
)

// Error texts. Where Exchange's or PowerShell's text is known it is
// reproduced word for word (reference/exchange.md §3.4; PowerShell's
// ParameterBinderStrings); the few that could not be confirmed are marked
// "exsim wording" and keep Exchange's style, so clients can only rely on the
// exception type and category, as they should with Exchange itself.

// Exception type names as ErrorRecord.Exception.GetType().FullName reports them.
const (
	typeParamBinding    = "System.Management.Automation.ParameterBindingException"
	typeParamValidation = "System.Management.Automation.ParameterBindingValidationException"
	typeArgTransform    = "System.Management.Automation.ParameterBindingArgumentTransformationException"
	typeRuntime         = "System.Management.Automation.RuntimeException"
	typeRemoting        = "System.Management.Automation.Remoting.PSRemotingTransportException"
	typeHost            = "System.Management.Automation.PSInvalidOperationException"
	typeNotFound        = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
	typeAmbiguous       = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException"
	typeADTransient     = "Microsoft.Exchange.Data.Directory.ADTransientException"
	typeADExists        = "Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException"
	typeDataValidation  = "Microsoft.Exchange.Data.DataValidationException"
	typeIDInBothLists   = "Microsoft.Exchange.Management.AirSync.ErrorDeviceIdInBothLists"
)

// taskClass maps a cmdlet to the Exchange task class named in the
// FullyQualifiedErrorId of errors raised inside the cmdlet.
var taskClass = map[string]string{
	"Get-MobileDevice":                   "Microsoft.Exchange.Management.Tasks.GetMobileDevice",
	"Get-CASMailbox":                     "Microsoft.Exchange.Management.RecipientTasks.GetCASMailbox",
	"Set-CASMailbox":                     "Microsoft.Exchange.Management.RecipientTasks.SetCASMailbox",
	"Get-ActiveSyncOrganizationSettings": "Microsoft.Exchange.Management.Tasks.GetActiveSyncOrganizationSettings",
	"Set-ActiveSyncOrganizationSettings": "Microsoft.Exchange.Management.Tasks.SetActiveSyncOrganizationSettings",
	"Get-ActiveSyncDeviceAccessRule":     "Microsoft.Exchange.Management.Tasks.GetActiveSyncDeviceAccessRule",
	"New-ActiveSyncDeviceAccessRule":     "Microsoft.Exchange.Management.Tasks.NewActiveSyncDeviceAccessRule",
	"Set-ActiveSyncDeviceAccessRule":     "Microsoft.Exchange.Management.Tasks.SetActiveSyncDeviceAccessRule",
	"Remove-ActiveSyncDeviceAccessRule":  "Microsoft.Exchange.Management.Tasks.RemoveActiveSyncDeviceAccessRule",
	"Get-ExchangeServer":                 "Microsoft.Exchange.Management.SystemConfigurationTasks.GetExchangeServer",
	"Get-ClientAccessService":            "Microsoft.Exchange.Management.SystemConfigurationTasks.GetClientAccessService",
}

// bindErr is a parameter binding error, raised before the cmdlet runs. It is
// terminating whatever -ErrorAction says.
func bindErr(cmd, fqid, msg string) *runspace.RemoteError {
	return &runspace.RemoteError{Type: typeParamBinding, Category: "InvalidArgument", FQID: fqid + "," + cmd, Msg: msg}
}

func errParamNotFound(cmd, name string) *runspace.RemoteError {
	return bindErr(cmd, "NamedParameterNotFound",
		fmt.Sprintf("A parameter cannot be found that matches parameter name '%s'.", name))
}

func errParamAmbiguous(cmd, name string, matches []string) *runspace.RemoteError {
	return bindErr(cmd, "AmbiguousParameter",
		fmt.Sprintf("Parameter cannot be processed because the parameter name '%s' is ambiguous. Possible matches include: -%s.",
			name, strings.Join(matches, " -")))
}

func errParamTwice(cmd, name string) *runspace.RemoteError {
	return bindErr(cmd, "ParameterAlreadyBound",
		fmt.Sprintf("Cannot bind parameter because parameter '%s' is specified more than once. To provide multiple values to parameters that can accept multiple values, use the array syntax. For example, \"-parameter value1,value2,value3\".", name))
}

func errMissingMandatory(cmd string, names []string) *runspace.RemoteError {
	return bindErr(cmd, "MissingMandatoryParameter",
		"Cannot process command because of one or more missing mandatory parameters: "+strings.Join(names, " ")+".")
}

func errParameterSet(cmd string) *runspace.RemoteError {
	return bindErr(cmd, "AmbiguousParameterSet", "Parameter set cannot be resolved using the specified named parameters.")
}

// errNotSupportedConversion is PowerShell's text for an array or hashtable
// bound to a scalar parameter.
func errNotSupportedConversion(cmd, param, from, to string) *runspace.RemoteError {
	return &runspace.RemoteError{Type: typeParamBinding, Category: "InvalidArgument", FQID: "CannotConvertArgument," + cmd,
		Msg: fmt.Sprintf("Cannot convert '%s' to the type '%s' required by parameter '%s'. Specified method is not supported.", from, to, param)}
}

func errBoolTransform(cmd, param, from, to string) *runspace.RemoteError {
	return &runspace.RemoteError{Type: typeArgTransform, Category: "InvalidData", FQID: "ParameterArgumentTransformationError," + cmd,
		Msg: fmt.Sprintf("Cannot process argument transformation on parameter '%s'. Cannot convert value \"%s\" to type \"%s\". Boolean parameters accept only Boolean values and numbers, such as $True, $False, 1 or 0.", param, from, to)}
}

func errConvertValue(cmd, param, value, to, detail string) *runspace.RemoteError {
	return &runspace.RemoteError{Type: typeParamBinding, Category: "InvalidArgument", FQID: "CannotConvertArgumentNoMessage," + cmd,
		Msg: fmt.Sprintf("Cannot bind parameter '%s'. Cannot convert value \"%s\" to type \"%s\". Error: \"%s\"", param, value, to, detail)}
}

func errArgNull(cmd, param string) *runspace.RemoteError {
	return &runspace.RemoteError{Type: typeParamValidation, Category: "InvalidData", FQID: "ParameterArgumentValidationErrorNullNotAllowed," + cmd,
		Msg: fmt.Sprintf("Cannot validate argument on parameter '%s'. The argument is null. Provide a valid value for the argument, and then try running the command again.", param)}
}

func errArgEmpty(cmd, param string) *runspace.RemoteError {
	return &runspace.RemoteError{Type: typeParamValidation, Category: "InvalidData", FQID: "ParameterArgumentValidationError," + cmd,
		Msg: fmt.Sprintf("Cannot validate argument on parameter '%s'. The argument is null or empty. Provide an argument that is not null or empty, and then try the command again.", param)}
}

func errRangeMin(cmd, param, value string, min int) *runspace.RemoteError {
	return &runspace.RemoteError{Type: typeParamValidation, Category: "InvalidData", FQID: "ParameterArgumentValidationError," + cmd,
		Msg: fmt.Sprintf("Cannot validate argument on parameter '%s'. The %s argument is less than the minimum allowed range of %d. Supply an argument that is greater than or equal to %d and then try the command again.", param, value, min, min)}
}

// errFilter wraps an OPATH error the way Exchange reports a -Filter it
// cannot parse: a binding error naming the filter and the 1-based position.
func errFilter(cmd string, e *FilterError) *runspace.RemoteError {
	return &runspace.RemoteError{Type: typeParamBinding, Category: "InvalidArgument", FQID: "ParameterBindingFailed," + cmd,
		Msg: fmt.Sprintf("Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": \"%s\"", e.Error())}
}

// errBootstrap is what the bootstrap's own `throw "…"` produces.
func errBootstrap(msg string) *runspace.RemoteError {
	return &runspace.RemoteError{Type: typeRuntime, Category: "OperationStopped", FQID: msg, Msg: msg}
}

func errNonInteractive(cmd string) *runspace.RemoteError {
	return &runspace.RemoteError{Type: typeHost, Category: "InvalidOperation", FQID: "System.Management.Automation.PSInvalidOperationException," + cmd,
		Msg: "PowerShell is in NonInteractive mode. Read and Prompt functionality is not available."}
}

// taskErr is an error raised inside an Exchange task. Exchange decorates its
// FullyQualifiedErrorId with the server, a request id and the failure class.
func (w *worker) taskErr(cmd, typ, category, msg string) *runspace.RemoteError {
	short := typ[strings.LastIndexByte(typ, '.')+1:]
	fq := fmt.Sprintf("[Server=%s,RequestId=%s,TimeStamp=%s] [FailureCategory=Cmdlet-%s] %08X,%s",
		w.server.Name, w.sim.newGUID(), w.sim.now().Format("1/2/2006 3:04:05 PM"), short, fnv32(msg), taskClass[cmd])
	return &runspace.RemoteError{Type: typ, Category: category, FQID: fq, Msg: msg}
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// orgError is an error of the organization (identity not found, value out of
// range, object exists) that the worker turns into a task error of the
// cmdlet that hit it, and the control API into an HTTP status.
type orgError struct {
	typ      string
	category string
	msg      string
}

func (e *orgError) Error() string { return e.msg }

func notFound(identity, dc string) *orgError {
	return &orgError{typeNotFound, "NotSpecified",
		fmt.Sprintf("The operation couldn't be performed because object '%s' couldn't be found on '%s'.", identity, dc)}
}

func ambiguous(identity string) *orgError {
	return &orgError{typeAmbiguous, "NotSpecified",
		fmt.Sprintf("The operation couldn't be performed because '%s' matches multiple entries.", identity)}
}

func tooLong(max, got int) *orgError {
	return &orgError{typeDataValidation, "NotSpecified",
		fmt.Sprintf("The length of the property is too long. The maximum length is %d and the length of the value provided is %d.", max, got)}
}

func invalidSMTP(addr string) *orgError {
	return &orgError{typeDataValidation, "InvalidData",
		fmt.Sprintf("The email address \"%s\" isn't correct. Please use this format: user name, the @ sign, followed by the domain name. For example, tonysmith@contoso.com or tony.smith@contoso.com.", addr)}
}

func alreadyExists(dc, dn string) *orgError {
	return &orgError{typeADExists, "NotSpecified",
		fmt.Sprintf("Active Directory operation failed on %s. The object '%s' already exists.", dc, dn)}
}

// deviceIDInBothLists is Set-CASMailbox's refusal of a call that leaves id
// in both ActiveSync lists (category InvalidData; the English text of
// Exchange's Strings.ErrorDeviceIdInBothLists resource, build 15.1.2106).
func deviceIDInBothLists(id string) *orgError {
	return &orgError{typeIDInBothLists, "InvalidData",
		fmt.Sprintf("DeviceID %s is included in both the ActiveSyncAllowedDeviceIDs list and the ActiveSyncBlockedDeviceIDs list. It should be removed from one of the lists using the Set-CASMailbox cmdlet.", id)}
}

// invalidValue is exsim wording for a control API value Exchange would
// refuse at binding time (the cmdlet path reports binding errors instead).
func invalidValue(field, msg string) *orgError {
	return &orgError{typeDataValidation, "InvalidData", field + ": " + msg}
}

func adTransient(dc string) string {
	return fmt.Sprintf("Active Directory operation failed on %s. This error could have been caused by user input or by the Active Directory server being unavailable. Please retry at a later time. Additional information: The LDAP server is unavailable.", dc)
}

// quotaShells is Exchange's text when a user opens more remote PowerShell
// sessions than PowerShellMaxConcurrency allows (reference/exchange.md §3.4),
// as New-PSSession reports it.
func quotaShells(host string, max int) string {
	return fmt.Sprintf("Connecting to remote server %s failed with the following error message : The WS-Management service cannot process the request. This user is allowed a maximum of %d concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user. For more information, see the about_Remote_Troubleshooting Help topic.", host, max)
}

// quotaCmdlets is Exchange's text when PowerShellMaxCmdlets per
// PowerShellMaxCmdletsTimePeriod is exceeded, as the imported session
// reports it.
func quotaCmdlets(host string, max, periodSec int, waitMs int64) string {
	return fmt.Sprintf("Processing data from remote server %s failed with the following error message: The WS-Management service cannot process the request. The user load quota of %d requests per %d seconds has been exceeded. Send future requests at a slower rate or raise the quota for this user. The next request from this user will not be approved for at least %d milliseconds. For more information, see the about_Remote_Troubleshooting Help topic.", host, max, periodSec, waitMs)
}

// sessionBroken is what an imported session reports when its server stopped
// answering.
func sessionBroken(host string) string {
	return fmt.Sprintf("Processing data from remote server %s failed with the following error message: The WinRM client cannot complete the operation within the time specified. Check if the machine name is valid and is reachable over the network and firewall exception for Windows Remote Management service is enabled. For more information, see the about_Remote_Troubleshooting Help topic.", host)
}

// microDelay is Exchange's warning when the budget engine delays a cmdlet
// (reference/exchange.md §3.4 [E16]: "Micro delay applied. Actual delayed:
// 21956 msecs, …"); the budget snapshot after it is exsim's.
func microDelay(d time.Duration) string {
	ms := d.Milliseconds()
	return fmt.Sprintf("Micro delay applied. Actual delayed: %d msecs, Enforced: True, Capped delay: %d msecs, Required: False, Additional info: .; Policy: DefaultThrottlingPolicy; Snapshot: BudgetType: PowerShell ActiveRunspaces: 1/18", ms, ms)
}

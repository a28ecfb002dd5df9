package runspace

// ParamAllowlist names, per allowlisted cmdlet, the parameters the psrp
// session kind will send: the ones the exchange package uses (and the
// pool's discovery). A call with any other parameter is refused before
// anything is sent, so even a bug upstream cannot reach a parameter such
// as -ScriptBlock or -Arbitration.
var ParamAllowlist = map[string][]string{
	"Get-MobileDevice":                   {"Filter", "Identity", "Mailbox", "ResultSize"},
	"Get-CASMailbox":                     {"Filter", "Identity", "ResultSize"},
	"Set-CASMailbox":                     {"ActiveSyncAllowedDeviceIDs", "ActiveSyncBlockedDeviceIDs", "Identity"},
	"Get-ActiveSyncOrganizationSettings": {},
	"Set-ActiveSyncOrganizationSettings": {"AdminMailRecipients", "DefaultAccessLevel", "UserMailInsert"},
	"Get-ActiveSyncDeviceAccessRule":     {"Identity"},
	"New-ActiveSyncDeviceAccessRule":     {"AccessLevel", "Characteristic", "QueryString"},
	"Set-ActiveSyncDeviceAccessRule":     {"AccessLevel", "Identity"},
	"Remove-ActiveSyncDeviceAccessRule":  {"Confirm", "Identity"},
	"Get-ExchangeServer":                 {"Identity"},
	"Get-ClientAccessService":            {"Identity"},
}

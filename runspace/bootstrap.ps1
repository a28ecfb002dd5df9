# easconnector runspace bootstrap, stage 1 (DESIGN.md section 3).
# Stage 0 (on the command line) reads this script from stdin and runs it. It
# loads Exchange, writes a ready frame, then serves one request per stdin line
# until EOF. Requests are data: the cmdlet name must be in the allowlist and
# every argument is bound by splatting. Nothing in a request is parsed as code.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$WarningPreference = 'SilentlyContinue'
$VerbosePreference = 'SilentlyContinue'
$InformationPreference = 'SilentlyContinue'
$ConfirmPreference = 'None'
$utf8 = New-Object System.Text.UTF8Encoding $false
$OutputEncoding = $utf8
$out = [Console]::Out
$tag = 'EASC1 '
# allowlist:begin
$allowed = @{
    'Get-MobileDevice'                   = 'Get-MobileDevice'
    'Get-CASMailbox'                     = 'Get-CASMailbox'
    'Set-CASMailbox'                     = 'Set-CASMailbox'
    'Get-ActiveSyncOrganizationSettings' = 'Get-ActiveSyncOrganizationSettings'
    'Set-ActiveSyncOrganizationSettings' = 'Set-ActiveSyncOrganizationSettings'
    'Get-ActiveSyncDeviceAccessRule'     = 'Get-ActiveSyncDeviceAccessRule'
    'New-ActiveSyncDeviceAccessRule'     = 'New-ActiveSyncDeviceAccessRule'
    'Set-ActiveSyncDeviceAccessRule'     = 'Set-ActiveSyncDeviceAccessRule'
    'Remove-ActiveSyncDeviceAccessRule'  = 'Remove-ActiveSyncDeviceAccessRule'
    'Get-ExchangeServer'                 = 'Get-ExchangeServer'
    'Get-ClientAccessService'            = 'Get-ClientAccessService'
}
# allowlist:end

function Send-Frame($frame) {
    $json = ConvertTo-Json -InputObject $frame -Depth 6 -Compress
    $out.Write($tag + [Convert]::ToBase64String($utf8.GetBytes($json)) + "`n")
    $out.Flush()
}

function Read-Frame {
    while ($true) {
        $line = [Console]::In.ReadLine()
        if ($null -eq $line) { return $null }
        if ($line.StartsWith($tag)) {
            return ConvertFrom-Json ($utf8.GetString([Convert]::FromBase64String($line.Substring($tag.Length))))
        }
    }
}

function ConvertTo-WireValue($v) {
    if ($null -eq $v) { return $null }
    if ($v -is [string] -or $v -is [bool] -or $v -is [int] -or $v -is [long] -or $v -is [double]) { return $v }
    if ($v -is [datetime]) { return $v.ToUniversalTime().ToString('o') }
    if ($v -is [System.Collections.IEnumerable]) { return ,([string[]]@($v | ForEach-Object { [string]$_ })) }
    return [string]$v
}

function ConvertTo-Wire($o, $select) {
    $h = [ordered]@{}
    foreach ($name in $select) {
        $p = $o.PSObject.Properties[[string]$name]
        if ($null -ne $p) { $h[[string]$name] = ConvertTo-WireValue $p.Value } else { $h[[string]$name] = $null }
    }
    return $h
}

function ConvertTo-Arg($v) {
    if ($v -is [System.Management.Automation.PSCustomObject]) {
        $edit = @{}
        if ($null -ne $v.PSObject.Properties['add']) { $edit['Add'] = [string[]]@($v.add) }
        if ($null -ne $v.PSObject.Properties['remove']) { $edit['Remove'] = [string[]]@($v.remove) }
        return $edit
    }
    if ($v -is [array]) { return [string[]]$v }
    return $v
}

function Get-ErrorInfo($e) {
    return @{
        type     = $e.Exception.GetType().FullName
        category = [string]$e.CategoryInfo.Category
        fqid     = [string]$e.FullyQualifiedErrorId
        msg      = [string]$e.Exception.Message
    }
}

$session = $null
try {
    $cfg = Read-Frame
    if ($null -eq $cfg) { exit 3 }
    if ($cfg.mode -eq 'snapin') {
        Add-PSSnapin Microsoft.Exchange.Management.PowerShell.SnapIn
        # A management-only host is no Exchange server: the version is optional.
        $exVersion = ''
        try { $exVersion = [string](Get-ExchangeServer -Identity $env:COMPUTERNAME).AdminDisplayVersion } catch { }
    } else {
        $sp = @{ ConfigurationName = 'Microsoft.Exchange'; ConnectionUri = [uri]$cfg.connectionUri; Authentication = 'Kerberos' }
        if ($cfg.user) {
            # The second hop: this shell holds no forwardable credential.
            $secret = ConvertTo-SecureString ([string]$cfg.password) -AsPlainText -Force
            $sp['Credential'] = New-Object System.Management.Automation.PSCredential ([string]$cfg.user, $secret)
            $cfg.password = $null
        }
        $session = New-PSSession @sp
        $null = Import-PSSession $session -CommandName ([string[]]$allowed.Keys) -DisableNameChecking -AllowClobber
        $exVersion = [string]$session.ApplicationPrivateData.SupportedVersions
    }
} catch {
    Send-Frame @{ initerr = (Get-ErrorInfo $_) }
    exit 2
}
Send-Frame @{ ready = $true; host = [string]$env:COMPUTERNAME; exchange = $exVersion; ps = [string]$PSVersionTable.PSVersion }

while ($true) {
    $id = 0
    try {
        $req = Read-Frame
        if ($null -eq $req) { break }
        $id = [uint64]$req.id
        $name = [string]$req.cmd
        if (-not $allowed.ContainsKey($name)) { throw "cmdlet is not in the easconnector allowlist: $name" }
        $params = @{}
        if ($null -ne $req.args) {
            foreach ($p in $req.args.PSObject.Properties) {
                if ($p.Name -notmatch '^[A-Za-z]{1,64}$') { throw "invalid parameter name" }
                $params[$p.Name] = ConvertTo-Arg $p.Value
            }
        }
        # @($null) is a one-element array: test for absence first.
        $select = @()
        if ($null -ne $req.select) { $select = @($req.select) }
        $n = 0
        & $allowed[$name] @params | ForEach-Object {
            if ($select.Count -gt 0) { Send-Frame @{ id = $id; obj = (ConvertTo-Wire $_ $select) } ; $n++ }
        }
        Send-Frame @{ id = $id; end = $true; count = $n }
    } catch {
        Send-Frame @{ id = $id; err = (Get-ErrorInfo $_) }
        # A broken implicit-remoting session fails every later call: end
        # the process so that the client replaces the session.
        if ($null -ne $session -and $session.State -ne 'Opened') { exit 4 }
    }
}

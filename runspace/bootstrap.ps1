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
# The cmdlets a request may name, each with the only parameters it may pass.
# Names match exactly (case-insensitively, never by prefix), so PowerShell's
# common parameters (-OutVariable, -ErrorVariable, -PipelineVariable, ...)
# cannot reach a cmdlet and overwrite this script's variables. A trailing []
# marks a multi-valued parameter: it takes a list, an edit {add, remove} or
# an explicit clear {clear: true}, never a bare null (which would empty the
# whole list). bootstrap.go parses this block: it is the one allowlist.
$allowed = @{
    'Get-MobileDevice'                   = @('Mailbox', 'Filter', 'ResultSize')
    'Get-CASMailbox'                     = @('Identity', 'Filter', 'ResultSize')
    'Set-CASMailbox'                     = @('Identity', 'ActiveSyncAllowedDeviceIDs[]', 'ActiveSyncBlockedDeviceIDs[]')
    'Get-ActiveSyncOrganizationSettings' = @()
    'Set-ActiveSyncOrganizationSettings' = @('DefaultAccessLevel', 'AdminMailRecipients[]', 'UserMailInsert')
    'Get-ActiveSyncDeviceAccessRule'     = @()
    'New-ActiveSyncDeviceAccessRule'     = @('Characteristic', 'QueryString', 'AccessLevel')
    'Set-ActiveSyncDeviceAccessRule'     = @('Identity', 'AccessLevel')
    'Remove-ActiveSyncDeviceAccessRule'  = @('Identity', 'Confirm')
    'Get-ExchangeServer'                 = @()
    'Get-ClientAccessService'            = @()
    # Read only: easconnector check lists which of these cmdlets the
    # account's roles grant (an Exchange session exposes only those).
    'Get-Command'                        = @('Name[]')
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

function Test-Scalar($v) {
    return ($v -is [string] -or $v -is [bool] -or $v -is [int] -or $v -is [long] -or $v -is [double] -or $v -is [decimal])
}

function ConvertTo-List($v, $what) {
    $list = @($v)
    foreach ($x in $list) {
        if (-not ($x -is [string])) { throw "${what}: list items must be strings" }
    }
    return ,([string[]]$list)
}

# ConvertTo-Arg turns one request value into the value bound to parameter
# $pname of $cmdlet; $isList marks a multi-valued parameter.
function ConvertTo-Arg($cmdlet, $pname, $isList, $v) {
    $what = "parameter $pname of $cmdlet"
    if (-not $isList) {
        if ($null -eq $v -or (Test-Scalar $v)) { return $v }
        throw "$what takes one value, not a list or an edit"
    }
    if ($null -eq $v) { throw "$what is a list: null is refused (send a clear to empty it)" }
    if ($v -is [array]) {
        $list = ConvertTo-List $v $what
        return ,$list
    }
    if (-not ($v -is [System.Management.Automation.PSCustomObject])) { throw "$what is a list: a single value is refused" }
    $names = @()
    foreach ($prop in $v.PSObject.Properties) { $names += $prop.Name }
    if ($names.Count -eq 1 -and $names[0] -eq 'clear' -and $v.clear -is [bool] -and $v.clear) { return $null }
    $edit = @{}
    foreach ($n in $names) {
        if ($n -ne 'add' -and $n -ne 'remove') { throw "${what}: an edit has only add and remove, got $n" }
        if ($null -eq $v.$n) { throw "${what}: $n is null" }
        $edit[$n] = ConvertTo-List $v.$n $what
    }
    if ($edit.Count -eq 0) { throw "${what}: empty edit" }
    $bound = @{}
    if ($edit.ContainsKey('add')) { $bound['Add'] = $edit['add'] }
    if ($edit.ContainsKey('remove')) { $bound['Remove'] = $edit['remove'] }
    return $bound
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
    $secret = $null
    if ($cfg.user) {
        # The second hop: this shell holds no forwardable credential, so
        # the password follows on its own line. It never passes through a
        # cmdlet parameter or pipeline: module logging (event 4103,
        # "Turn on Module Logging") writes every cmdlet's parameter
        # bindings to the event log, so ConvertTo-SecureString
        # -AsPlainText (or ConvertFrom-Json, or New-Object -ArgumentList)
        # would put it there in clear. Method calls are not logged. See
        # https://learn.microsoft.com/powershell/module/microsoft.powershell.core/about/about_logging_windows
        # and https://learn.microsoft.com/powershell/module/microsoft.powershell.core/about/about_group_policy_settings
        $line = [Console]::In.ReadLine()
        if ($null -eq $line -or -not $line.StartsWith($tag)) { throw 'the second-hop password line is missing' }
        $bytes = [Convert]::FromBase64String($line.Substring($tag.Length))
        $chars = $utf8.GetChars($bytes)
        $secret = [System.Security.SecureString]::new()
        foreach ($c in $chars) { $secret.AppendChar($c) }
        $secret.MakeReadOnly()
        [Array]::Clear($bytes, 0, $bytes.Length)
        [Array]::Clear($chars, 0, $chars.Length)
        $line = $null
    }
    if ($cfg.mode -eq 'snapin') {
        Add-PSSnapin Microsoft.Exchange.Management.PowerShell.SnapIn
        # A management-only host is no Exchange server: the version is optional.
        $exVersion = ''
        try { $exVersion = [string](Get-ExchangeServer -Identity $env:COMPUTERNAME).AdminDisplayVersion } catch { }
    } else {
        $sp = @{ ConfigurationName = 'Microsoft.Exchange'; ConnectionUri = [uri]$cfg.connectionUri; Authentication = 'Kerberos' }
        if ($null -ne $secret) { $sp['Credential'] = [System.Management.Automation.PSCredential]::new([string]$cfg.user, $secret) }
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
        # $cmdlet is the allowlist's own key: the only thing this script
        # ever invokes with &.
        $cmdlet = $null
        foreach ($k in $allowed.Keys) { if ($k -eq $name) { $cmdlet = $k } }
        if ($null -eq $cmdlet) { throw "cmdlet is not in the easconnector allowlist: $name" }
        $params = @{}
        if ($null -ne $req.args) {
            foreach ($p in $req.args.PSObject.Properties) {
                $spec = $null
                foreach ($a in $allowed[$cmdlet]) { if (($a -replace '\[\]$', '') -eq $p.Name) { $spec = $a } }
                if ($null -eq $spec) { throw "parameter is not in the easconnector allowlist of ${cmdlet}: $($p.Name)" }
                $pname = $spec -replace '\[\]$', ''
                $isList = $spec.EndsWith('[]')
                if ($params.ContainsKey($pname)) { throw "parameter $pname of $cmdlet given twice" }
                $params[$pname] = ConvertTo-Arg $cmdlet $pname $isList $p.Value
            }
        }
        # @($null) is a one-element array: test for absence first.
        $select = @()
        if ($null -ne $req.select) { $select = @($req.select) }
        $n = 0
        & $cmdlet @params | ForEach-Object {
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

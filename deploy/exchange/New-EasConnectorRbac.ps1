#Requires -Version 5.1
<#
.SYNOPSIS
    Creates the Exchange RBAC setup easconnector needs: custom management
    roles holding exactly the cmdlets (and, for writes, exactly the
    parameters) the connector runs, a role group with those roles, and the
    service account as its only member.

.DESCRIPTION
    Run it once in the Exchange Management Shell as a member of
    Organization Management (or with the Role Management role). It is
    idempotent: run again, it checks what exists and repairs it; with
    -Remove it deletes what it created.

    easconnector's default session kind (exchange.mode = "psrp") connects to
    https://<cas>/PowerShell/ with configuration Microsoft.Exchange, the
    same endpoint the Exchange Management Shell uses. Exchange builds that
    session from the account's RBAC roles only, so the account needs no
    WinRM shell rights, no local group on any server, and no
    Organization Management membership: a stolen connector credential can
    then run these eleven cmdlets and nothing else.

    A custom role has exactly one parent and the cmdlets come from several
    built-in roles, so one custom role "<prefix> - <parent>" is created per
    parent. Parents are picked with Get-ManagementRole -Cmdlet, preferring
    Mail Recipients (Get-MobileDevice, Get-CASMailbox, Set-CASMailbox),
    Organization Client Access (the ActiveSync organization settings and
    device access rules) and View-Only Configuration (Get-ExchangeServer,
    Get-ClientAccessService); every parent is chosen before anything is
    created, so a failure leaves nothing half made.

    Sources: "Create a role group" and "Create custom roles" in Exchange
    Server permissions (learn.microsoft.com/exchange/permissions/),
    New-ManagementRole, Remove-ManagementRoleEntry and
    Set-ManagementRoleEntry (MicrosoftDocs/office-docs-powershell,
    exchange/exchange-ps/exchange/*.md): without -AddParameter or
    -RemoveParameter, Set-ManagementRoleEntry -Parameters leaves exactly the
    listed parameters on the entry.

.PARAMETER ServiceAccount
    The connector's account (user name, UPN or DN), e.g. svc-easconnector.

.PARAMETER Prefix
    Prefix of the created roles and the role group name (default easconnector).

.PARAMETER RecipientOrganizationalUnitScope
    Optional OU that limits which mailboxes the account may read and write
    (the role group's recipient write scope). Leave empty for the whole
    organization, as the Intune connector had.

.PARAMETER PowerShellMaxConcurrency
    When set, creates (or updates) a throttling policy "<prefix> Throttling"
    with this PowerShellMaxConcurrency and associates it with the account.
    Keep it above easconnector's runspaces setting plus the shells an
    administrator may open with the same account (default policy: 18).

.PARAMETER Remove
    Removes the role group, the custom roles ("<prefix> - *") and the
    throttling policy.

.EXAMPLE
    .\New-EasConnectorRbac.ps1 -ServiceAccount svc-easconnector

.EXAMPLE
    .\New-EasConnectorRbac.ps1 -ServiceAccount svc-easconnector -PowerShellMaxConcurrency 24 -WhatIf
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [Parameter(Mandatory = $true)]
    [string] $ServiceAccount,
    [ValidatePattern('^[A-Za-z0-9 ._-]{1,40}$')]
    [string] $Prefix = 'easconnector',
    [string] $RecipientOrganizationalUnitScope = '',
    [ValidateRange(1, 100)]
    [int] $PowerShellMaxConcurrency = 0,
    [switch] $Remove
)

$ErrorActionPreference = 'Stop'

# The cmdlets easconnector runs (runspace/bootstrap.ps1's allowlist) and,
# for the ones that write, the only parameters it passes
# (exchange/casmailbox.go, exchange/org.go). An empty list keeps the
# parent's parameters: those cmdlets only read.
$cmdlets = [ordered]@{
    'Get-MobileDevice'                   = @()
    'Get-CASMailbox'                     = @()
    'Set-CASMailbox'                     = @('Identity', 'ActiveSyncAllowedDeviceIDs', 'ActiveSyncBlockedDeviceIDs')
    'Get-ActiveSyncOrganizationSettings' = @()
    'Set-ActiveSyncOrganizationSettings' = @('Identity', 'DefaultAccessLevel', 'AdminMailRecipients', 'UserMailInsert')
    'Get-ActiveSyncDeviceAccessRule'     = @()
    'New-ActiveSyncDeviceAccessRule'     = @('Characteristic', 'QueryString', 'AccessLevel')
    'Set-ActiveSyncDeviceAccessRule'     = @('Identity', 'AccessLevel')
    'Remove-ActiveSyncDeviceAccessRule'  = @('Identity')
    'Get-ExchangeServer'                 = @()
    'Get-ClientAccessService'            = @()
}
# PowerShell's common parameters stay on the cut entries: implicit
# remoting's proxy functions may pass them, and they grant no rights.
$common = @('Confirm', 'WhatIf', 'ErrorAction', 'ErrorVariable', 'WarningAction', 'WarningVariable',
    'OutVariable', 'OutBuffer', 'Verbose', 'Debug')
# Built-in parents tried first; any other root role that holds a cmdlet is
# taken when these do not (Exchange versions differ).
$prefer = @('Mail Recipients', 'Organization Client Access', 'View-Only Configuration', 'Exchange Servers')

$groupName = $Prefix
$policyName = "$Prefix Throttling"
$rolePrefix = "$Prefix - "

if ($Remove) {
    if (Get-RoleGroup -Identity $groupName -ErrorAction SilentlyContinue) {
        if ($PSCmdlet.ShouldProcess($groupName, 'Remove-RoleGroup')) {
            Remove-RoleGroup -Identity $groupName -BypassSecurityGroupManagerCheck -Confirm:$false
        }
    }
    foreach ($role in @(Get-ManagementRole -Identity "$rolePrefix*" -ErrorAction SilentlyContinue)) {
        if ($PSCmdlet.ShouldProcess($role.Name, 'Remove-ManagementRole')) {
            Remove-ManagementRole -Identity $role.Name -Confirm:$false
        }
    }
    if (Get-ThrottlingPolicy -Identity $policyName -ErrorAction SilentlyContinue) {
        if ($PSCmdlet.ShouldProcess($policyName, 'Remove-ThrottlingPolicy')) {
            Remove-ThrottlingPolicy -Identity $policyName -Confirm:$false
        }
    }
    Write-Host "easconnector's RBAC setup is removed."
    return
}

# 1. Pick a built-in parent for every cmdlet before creating anything, so a
#    failure leaves nothing half made: a parent already picked first, then
#    the preferred ones, then any root role that holds it.
$byParent = [ordered]@{}
foreach ($cmdlet in $cmdlets.Keys) {
    $roles = @(Get-ManagementRole -Cmdlet $cmdlet |
        Where-Object { $_.IsRootRole -and -not $_.IsEndUserRole } |
        Sort-Object { $i = [array]::IndexOf($prefer, $_.Name); if ($i -lt 0) { 99 } else { $i } })
    if ($roles.Count -eq 0) { throw "no built-in role holds $cmdlet in this Exchange version" }
    $parent = $roles | Where-Object { $byParent.Contains($_.Name) } | Select-Object -First 1
    if (-not $parent) { $parent = $roles[0] }
    if (-not $byParent.Contains($parent.Name)) { $byParent[$parent.Name] = @() }
    $byParent[$parent.Name] += $cmdlet
}

# 2. The custom roles, one per parent: a copy of the parent, then every
#    entry we do not need removed, then the write entries cut to our
#    parameters.
$roleNames = @()
foreach ($parent in $byParent.Keys) {
    $name = $rolePrefix + $parent
    $roleNames += $name
    $keep = [string[]] $byParent[$parent]
    if (-not (Get-ManagementRole -Identity $name -ErrorAction SilentlyContinue)) {
        if ($PSCmdlet.ShouldProcess($name, "New-ManagementRole -Parent '$parent'")) {
            $null = New-ManagementRole -Name $name -Parent $parent -Description "easconnector: $($keep -join ', ')"
        }
    }
    if (-not (Get-ManagementRole -Identity $name -ErrorAction SilentlyContinue)) { continue } # -WhatIf
    foreach ($entry in @(Get-ManagementRoleEntry -Identity "$name\*")) {
        if ($keep -notcontains $entry.Name) {
            if ($PSCmdlet.ShouldProcess("$name\$($entry.Name)", 'Remove-ManagementRoleEntry')) {
                Remove-ManagementRoleEntry -Identity "$name\$($entry.Name)" -Confirm:$false
            }
        }
    }
    foreach ($cmdlet in $keep) {
        $params = [string[]] $cmdlets[$cmdlet]
        if ($params.Count -eq 0) { continue }
        $entry = Get-ManagementRoleEntry -Identity "$name\$cmdlet"
        $params = @($params + $common | Where-Object { $entry.Parameters -contains $_ })
        if ($PSCmdlet.ShouldProcess("$name\$cmdlet", "Set-ManagementRoleEntry -Parameters $($params -join ',')")) {
            Set-ManagementRoleEntry -Identity "$name\$cmdlet" -Parameters $params
        }
    }
}

# 3. The role group, with the service account as its only member.
if (-not (Get-RoleGroup -Identity $groupName -ErrorAction SilentlyContinue)) {
    $groupArgs = @{
        Name        = $groupName
        Roles       = $roleNames
        Members     = $ServiceAccount
        Description = 'easconnector service account: ActiveSync device access only'
    }
    if ($RecipientOrganizationalUnitScope -ne '') {
        $groupArgs['RecipientOrganizationalUnitScope'] = $RecipientOrganizationalUnitScope
    }
    if ($PSCmdlet.ShouldProcess($groupName, 'New-RoleGroup')) {
        $null = New-RoleGroup @groupArgs
    }
} else {
    $assigned = @(Get-ManagementRoleAssignment -RoleAssignee $groupName | ForEach-Object { [string] $_.Role })
    foreach ($role in $roleNames) {
        if ($assigned -notcontains $role) {
            if ($PSCmdlet.ShouldProcess($groupName, "New-ManagementRoleAssignment -Role '$role'")) {
                $null = New-ManagementRoleAssignment -SecurityGroup $groupName -Role $role
            }
        }
    }
    $members = @(Get-RoleGroupMember -Identity $groupName | ForEach-Object { [string] $_.SamAccountName })
    $account = (Get-User -Identity $ServiceAccount).SamAccountName
    if ($members -notcontains $account) {
        if ($PSCmdlet.ShouldProcess($groupName, "Add-RoleGroupMember '$ServiceAccount'")) {
            Add-RoleGroupMember -Identity $groupName -Member $ServiceAccount -BypassSecurityGroupManagerCheck
        }
    }
}

# 4. Optional throttling policy (PowerShellMaxConcurrency bounds the
#    account's concurrent sessions; easconnector's runspaces must stay below it).
if ($PowerShellMaxConcurrency -gt 0) {
    if (-not (Get-ThrottlingPolicy -Identity $policyName -ErrorAction SilentlyContinue)) {
        if ($PSCmdlet.ShouldProcess($policyName, 'New-ThrottlingPolicy')) {
            $null = New-ThrottlingPolicy -Name $policyName -ThrottlingPolicyScope Regular -PowerShellMaxConcurrency $PowerShellMaxConcurrency
        }
    } elseif ($PSCmdlet.ShouldProcess($policyName, "Set-ThrottlingPolicy -PowerShellMaxConcurrency $PowerShellMaxConcurrency")) {
        Set-ThrottlingPolicy -Identity $policyName -PowerShellMaxConcurrency $PowerShellMaxConcurrency
    }
    if ($PSCmdlet.ShouldProcess($ServiceAccount, "Set-ThrottlingPolicyAssociation '$policyName'")) {
        Set-ThrottlingPolicyAssociation -Identity $ServiceAccount -ThrottlingPolicy $policyName
    }
}

# 5. Show what the account can now run.
Write-Host "Role group '$groupName' holds:"
foreach ($role in $roleNames) {
    if (Get-ManagementRole -Identity $role -ErrorAction SilentlyContinue) {
        Get-ManagementRoleEntry -Identity "$role\*" | ForEach-Object {
            Write-Host ("  {0,-36} {1}" -f $_.Name, ($_.Parameters -join ', '))
        }
    }
}
Write-Host "Check from the connector host: easconnector check (it lists any cmdlet the account cannot run)."

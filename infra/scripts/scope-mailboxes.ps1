<#
.SYNOPSIS
    The email team's half of an outbox sender, in Exchange Online: scope the app to named mailboxes,
    allow it SMTP AUTH on them, and verify every step.

.DESCRIPTION
    Run once per app, and again whenever the list of mailboxes changes: every step looks before it acts,
    so a second run changes nothing and only verifies. -VerifyOnly changes nothing at all.

    Seed checklist, "Infrastructure Team", step by step (the step numbers below are the script's sections):
      1. "If App-only is needed (SMTP): register the app's service principal in Exchange"
         -> New-ServicePrincipal with the app id and the Enterprise Application's object id (a wrong object
            id gives 535 5.7.3 later). RBAC for Applications needs the same service principal.
      2. "If App-only is needed (Graph): scope the app to specific mailbox(es) via Application Access Policy
         or RBAC for Applications"
         -> Rbac (default): a management scope that names the mailboxes and one role assignment per
            permission ("Application Mail.Send", ...). Do NOT also consent Mail.* in Entra: that grant is
            tenant-wide and adds up with this one (grant-admin-consent.sh refuses it).
         -> AccessPolicy: the mailboxes join a mail-enabled security group and an Application Access Policy
            (RestrictAccess) limits the app's Entra-consented Mail.* permissions to that group.
      3. "SMTP app-only: register Exchange service principal and grant SendAs (and FullAccess only if needed)"
         -> Add-MailboxPermission FullAccess (the token authenticates as the mailbox: Microsoft's documented
            requirement for SMTP AUTH app-only) and, with -GrantSendAs, Add-RecipientPermission SendAs for a
            From that is not the authenticating mailbox.
      4. "SMTP: enable Authenticated SMTP on the sender mailbox"
         -> Set-CASMailbox -SmtpClientAuthenticationDisabled $false on each mailbox (the per-mailbox switch
            overrides the tenant-wide one).
      5. Verify: Test-ServicePrincipalAuthorization (RBAC), Test-ApplicationAccessPolicy (policy),
         Get-MailboxPermission / Get-RecipientPermission (SMTP), Get-CASMailbox (SMTP AUTH).
    Admin consent ("Verify admin consent where required") is grant-admin-consent.sh, in Entra.

    Requires the ExchangeOnlineManagement module (3.x) and a session opened with Connect-ExchangeOnline by an
    Exchange administrator. Changes to scopes and policies can take up to an hour to reach Graph and SMTP.

.EXAMPLE
    Connect-ExchangeOnline
    ./scope-mailboxes.ps1 -AppId 11111111-2222-3333-4444-555555555555 -ServicePrincipalObjectId 66666666-7777-8888-9999-000000000000 -Mailboxes noreply@contoso.com -Transport Both

.EXAMPLE
    ./scope-mailboxes.ps1 -AppId ... -ServicePrincipalObjectId ... -Mailboxes a@contoso.com,b@contoso.com -GraphScoping AccessPolicy -PolicyGroup outbox-senders@contoso.com -VerifyOnly
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    # Client (application) id of the sending app: OUTBOX_CLIENT_ID.
    [Parameter(Mandatory = $true)]
    [ValidatePattern('^[0-9a-fA-F-]{36}$')]
    [string] $AppId,

    # Object id of the app's Enterprise Application (service principal), NOT of the app registration.
    [Parameter(Mandatory = $true)]
    [ValidatePattern('^[0-9a-fA-F-]{36}$')]
    [string] $ServicePrincipalObjectId,

    # The sender mailboxes (primary SMTP addresses), exactly those the app may send from.
    [Parameter(Mandatory = $true)]
    [ValidateNotNullOrEmpty()]
    [string[]] $Mailboxes,

    [ValidateSet('Graph', 'Smtp', 'Both')]
    [string] $Transport = 'Graph',

    [ValidateSet('Rbac', 'AccessPolicy')]
    [string] $GraphScoping = 'Rbac',

    # Graph permissions to scope (RBAC roles "Application <permission>"): Mail.ReadBasic lets outbox look for an
    # ambiguous send in Sent Items, Mail.ReadWrite lets it upload attachments over 3 MB.
    [ValidateSet('Mail.Send', 'Mail.ReadBasic', 'Mail.ReadWrite')]
    [string[]] $GraphPermissions = @('Mail.Send'),

    # Mail-enabled security group of the Application Access Policy (AccessPolicy only); created if missing.
    [string] $PolicyGroup = '',

    # Also grant Send As on each mailbox (SMTP): needed only when the From differs from the mailbox
    # the token authenticates as.
    [switch] $GrantSendAs,

    # Name shown for the service principal in Exchange.
    [string] $DisplayName = 'outbox-sender',

    # Change nothing: only report what is in place and what is missing (exit code 1 when anything is).
    [switch] $VerifyOnly
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$useGraph = $Transport -in @('Graph', 'Both')
$useSmtp = $Transport -in @('Smtp', 'Both')
$missing = [System.Collections.Generic.List[string]]::new()
# Names derived from the app id, so a second run finds what the first one made.
$shortId = $AppId.Substring(0, 8)
$scopeName = "outbox-$shortId-mailboxes"

function Write-Step([string] $Text) { Write-Host "`n== $Text" }
function Write-Ok([string] $Text) { Write-Host "   ok: $Text" }
function Write-Missing([string] $Text) {
    Write-Warning $Text
    $missing.Add($Text)
}

# A change, unless -VerifyOnly: then it is only reported as missing. -WhatIf is honoured through ShouldProcess.
function Invoke-Change([string] $Target, [string] $Action, [scriptblock] $Change) {
    if ($VerifyOnly) {
        Write-Missing "$Target : $Action"
        return $false
    }
    if ($PSCmdlet.ShouldProcess($Target, $Action)) {
        $null = & $Change
        return $true
    }
    return $false
}

# Whether a scope's recipient filter names exactly these addresses (Exchange may re-bracket the filter text).
function Test-SameAddresses([string] $RecipientFilter, [string[]] $Addresses) {
    $inFilter = @([regex]::Matches($RecipientFilter, "'([^']+)'") | ForEach-Object { $_.Groups[1].Value.ToLowerInvariant() } | Sort-Object -Unique)
    $wanted = @($Addresses | ForEach-Object { $_.ToLowerInvariant() } | Sort-Object -Unique)
    return ($inFilter -join ',') -eq ($wanted -join ',')
}

# Exchange has renamed the service principal's object id property (ServiceId, then ObjectId).
function Get-SpObjectId($ServicePrincipal) {
    foreach ($name in @('ObjectId', 'ServiceId')) {
        $property = $ServicePrincipal.PSObject.Properties[$name]
        if ($null -ne $property -and $property.Value) { return [string] $property.Value }
    }
    return ''
}

if ($useGraph -and $GraphScoping -eq 'AccessPolicy' -and -not $PolicyGroup) {
    throw 'AccessPolicy needs -PolicyGroup (a mail-enabled security group, e.g. outbox-senders@contoso.com).'
}

# --- 0. Session ---------------------------------------------------------------------------------------------
Write-Step 'Exchange Online session'
$connection = Get-ConnectionInformation | Where-Object { $_.State -eq 'Connected' } | Select-Object -First 1
if ($null -eq $connection) {
    throw 'Not connected: run Connect-ExchangeOnline (ExchangeOnlineManagement 3.x) as an Exchange administrator first.'
}
Write-Ok "connected to $($connection.Organization) as $($connection.UserPrincipalName)"

foreach ($mailbox in $Mailboxes) {
    $null = Get-Mailbox -Identity $mailbox  # throws, naming the mailbox, when it does not exist
}
Write-Ok "mailboxes found: $($Mailboxes -join ', ')"

# --- 1. Exchange service principal ------------------------------------------------------------------------
Write-Step "Service principal for app $AppId"
$servicePrincipal = Get-ServicePrincipal | Where-Object { $_.AppId -eq $AppId } | Select-Object -First 1
if ($null -eq $servicePrincipal) {
    $created = Invoke-Change "app $AppId" 'New-ServicePrincipal' {
        New-ServicePrincipal -AppId $AppId -ObjectId $ServicePrincipalObjectId -DisplayName $DisplayName
    }
    if ($created) {
        $servicePrincipal = Get-ServicePrincipal | Where-Object { $_.AppId -eq $AppId } | Select-Object -First 1
        Write-Ok "created ($(Get-SpObjectId $servicePrincipal))"
    }
}
else {
    $existingObjectId = Get-SpObjectId $servicePrincipal
    if ($existingObjectId -ne $ServicePrincipalObjectId) {
        # The classic cause of a 535 5.7.3 that nothing else explains.
        throw ("Exchange's service principal for $AppId points at object id $existingObjectId, not $ServicePrincipalObjectId " +
            '(the Enterprise Application object id). Remove it with Remove-ServicePrincipal and run this script again.')
    }
    Write-Ok "exists (object id $existingObjectId)"
}
# Cmdlets below name the principal by its object id (the service principal's identity in Exchange).
$principal = $ServicePrincipalObjectId

# --- 2. Graph: scope the app to the named mailboxes ---------------------------------------------------------
if ($useGraph -and $GraphScoping -eq 'Rbac') {
    Write-Step "Graph, RBAC for Applications: scope '$scopeName'"
    $filter = ($Mailboxes | ForEach-Object { "PrimarySmtpAddress -eq '$_'" }) -join ' -or '
    $scope = Get-ManagementScope -Identity $scopeName -ErrorAction SilentlyContinue
    if ($null -eq $scope) {
        $null = Invoke-Change $scopeName 'New-ManagementScope' {
            New-ManagementScope -Name $scopeName -RecipientRestrictionFilter $filter
        }
    }
    elseif (-not (Test-SameAddresses $scope.RecipientFilter $Mailboxes)) {
        # The list of mailboxes changed: the scope follows it exactly (mailboxes left out lose access).
        $null = Invoke-Change $scopeName 'Set-ManagementScope (mailbox list changed)' {
            Set-ManagementScope -Identity $scopeName -RecipientRestrictionFilter $filter
        }
    }
    else {
        Write-Ok "scope names exactly: $($Mailboxes -join ', ')"
    }

    foreach ($permission in $GraphPermissions) {
        $role = "Application $permission"
        $assignmentName = "outbox-$shortId-$permission"
        $assignment = Get-ManagementRoleAssignment -Identity $assignmentName -ErrorAction SilentlyContinue
        if ($null -eq $assignment) {
            $null = Invoke-Change $assignmentName "New-ManagementRoleAssignment $role" {
                New-ManagementRoleAssignment -Name $assignmentName -App $principal -Role $role -CustomResourceScope $scopeName
            }
        }
        else {
            Write-Ok "$role assigned on scope $scopeName"
        }
    }
}
elseif ($useGraph) {
    Write-Step "Graph, Application Access Policy on group '$PolicyGroup'"
    $group = Get-DistributionGroup -Identity $PolicyGroup -ErrorAction SilentlyContinue
    if ($null -eq $group) {
        $null = Invoke-Change $PolicyGroup 'New-DistributionGroup (mail-enabled security group)' {
            New-DistributionGroup -Name $PolicyGroup.Split('@')[0] -PrimarySmtpAddress $PolicyGroup -Type Security
        }
    }
    $members = @()
    if (-not ($VerifyOnly -and $null -eq $group)) {
        $members = @(Get-DistributionGroupMember -Identity $PolicyGroup -ResultSize Unlimited |
            ForEach-Object { [string] $_.PrimarySmtpAddress })
    }
    foreach ($mailbox in $Mailboxes) {
        if ($members -contains $mailbox) {
            Write-Ok "$mailbox is in $PolicyGroup"
        }
        else {
            $null = Invoke-Change $mailbox "Add-DistributionGroupMember $PolicyGroup" {
                Add-DistributionGroupMember -Identity $PolicyGroup -Member $mailbox -BypassSecurityGroupManagerCheck
            }
        }
    }
    $policy = Get-ApplicationAccessPolicy | Where-Object { $_.AppId -eq $AppId } | Select-Object -First 1
    if ($null -eq $policy) {
        $null = Invoke-Change "app $AppId" 'New-ApplicationAccessPolicy RestrictAccess' {
            New-ApplicationAccessPolicy -AppId $AppId -PolicyScopeGroupId $PolicyGroup -AccessRight RestrictAccess `
                -Description "outbox: $AppId may send only as members of $PolicyGroup"
        }
    }
    elseif ($policy.AccessRight -ne 'RestrictAccess') {
        throw "The Application Access Policy of $AppId is $($policy.AccessRight), not RestrictAccess: review it by hand."
    }
    else {
        Write-Ok "policy exists ($($policy.AccessRight) to $($policy.ScopeName))"
    }
}

# --- 3. SMTP: mailbox permissions for the service principal -------------------------------------------------
if ($useSmtp) {
    Write-Step 'SMTP app-only: mailbox permissions'
    foreach ($mailbox in $Mailboxes) {
        $fullAccess = Get-MailboxPermission -Identity $mailbox -User $principal -ErrorAction SilentlyContinue |
            Where-Object { $_.AccessRights -contains 'FullAccess' -and -not $_.Deny }
        if ($null -eq $fullAccess) {
            $null = Invoke-Change $mailbox 'Add-MailboxPermission FullAccess' {
                Add-MailboxPermission -Identity $mailbox -User $principal -AccessRights FullAccess
            }
        }
        else {
            Write-Ok "$mailbox : FullAccess"
        }
        if ($GrantSendAs) {
            $sendAs = Get-RecipientPermission -Identity $mailbox -Trustee $principal -ErrorAction SilentlyContinue |
                Where-Object { $_.AccessRights -contains 'SendAs' }
            if ($null -eq $sendAs) {
                $null = Invoke-Change $mailbox 'Add-RecipientPermission SendAs' {
                    Add-RecipientPermission -Identity $mailbox -Trustee $principal -AccessRights SendAs -Confirm:$false
                }
            }
            else {
                Write-Ok "$mailbox : SendAs"
            }
        }
    }

    # --- 4. Authenticated SMTP on each sender mailbox -------------------------------------------------------
    Write-Step 'Authenticated SMTP (SMTP AUTH) on the sender mailboxes'
    $tenantDisabled = (Get-TransportConfig).SmtpClientAuthenticationDisabled
    Write-Host "   tenant-wide SmtpClientAuthenticationDisabled = $tenantDisabled (a mailbox setting overrides it)"
    foreach ($mailbox in $Mailboxes) {
        $cas = Get-CASMailbox -Identity $mailbox
        if ($cas.SmtpClientAuthenticationDisabled -eq $false) {
            Write-Ok "$mailbox : SMTP AUTH enabled"
        }
        else {
            $null = Invoke-Change $mailbox 'Set-CASMailbox -SmtpClientAuthenticationDisabled $false' {
                Set-CASMailbox -Identity $mailbox -SmtpClientAuthenticationDisabled $false
            }
        }
    }
}

# --- 5. Verify, as Exchange itself evaluates it --------------------------------------------------------------
if (-not $WhatIfPreference) {
    Write-Step 'Verification'
    foreach ($mailbox in $Mailboxes) {
        if ($useGraph -and $GraphScoping -eq 'Rbac') {
            try { $results = @(Test-ServicePrincipalAuthorization -Identity $principal -Resource $mailbox) }
            catch { $results = @(); Write-Warning "Test-ServicePrincipalAuthorization failed: $_" }
            foreach ($permission in $GraphPermissions) {
                $granted = $results | Where-Object { $_.RoleName -eq "Application $permission" -and $_.InScope }
                if ($granted) { Write-Ok "$mailbox : Graph $permission in scope" }
                else { Write-Missing "$mailbox : Graph $permission NOT in scope (Test-ServicePrincipalAuthorization)" }
            }
        }
        elseif ($useGraph) {
            try { $result = (Test-ApplicationAccessPolicy -Identity $mailbox -AppId $AppId).AccessCheckResult }
            catch { $result = "not testable ($_)" }
            if ($result -eq 'Granted') { Write-Ok "$mailbox : Graph access Granted" }
            else { Write-Missing "$mailbox : Graph access $result (Test-ApplicationAccessPolicy)" }
        }
        if ($useSmtp) {
            $permissionOk = Get-MailboxPermission -Identity $mailbox -User $principal -ErrorAction SilentlyContinue |
                Where-Object { $_.AccessRights -contains 'FullAccess' -and -not $_.Deny }
            if ($permissionOk) { Write-Ok "$mailbox : SMTP FullAccess" }
            else { Write-Missing "$mailbox : no FullAccess for the service principal (Get-MailboxPermission)" }
            $cas = Get-CASMailbox -Identity $mailbox
            if ($cas.SmtpClientAuthenticationDisabled -eq $false) { Write-Ok "$mailbox : SMTP AUTH enabled" }
            else { Write-Missing "$mailbox : SMTP AUTH not enabled (Get-CASMailbox SmtpClientAuthenticationDisabled=$($cas.SmtpClientAuthenticationDisabled))" }
        }
    }
}

Write-Step 'Done'
if ($missing.Count -gt 0) {
    Write-Warning "$($missing.Count) item(s) missing or not verified:"
    $missing | ForEach-Object { Write-Warning "  $_" }
    exit 1
}
Write-Host 'Everything is in place. Scope and policy changes can take up to an hour to reach Graph and SMTP;'
Write-Host "then check from the app side with: outbox doctor --mailbox $($Mailboxes[0]) --transport $($Transport.ToLower())"

<#
.SYNOPSIS
    Installs failover-agent as a Windows service (or removes it).

.DESCRIPTION
    Run from a checkout of the repository, in an elevated Windows PowerShell 5.1:

    1. creates the virtual environment (py -3.11 -m venv) unless it exists, and installs the agent
       with its 'service' extra (pywin32) from the checkout;
    2. copies service\failover_agent_service.py into the environment and registers pywin32's
       service host (pythonservice.exe, which pywin32 places in the environment) as the service,
       with the registry values it reads: PythonClass, and Parameters\ConfigPath and LogLevel;
    3. restarts it on failure (60 s, 60 s, then 5 min; the count resets after a day). The agent
       stops with a non-zero exit code for what a restart may cure (the store not reachable yet, a
       bug) and with exit code 0 for a bad config, which a restart cannot fix: the Application
       event log (source failover-agent) says why;
    4. restricts the config directory and the token files to the service account, SYSTEM and
       Administrators (inheritance off), and gives the account Modify on the data directory
       (set agent.data_dir in the config to it).

    The service runs 'failover-agent serve --config <ConfigPath>': leader or standby on the store
    and, on the leader, the HTTP API. A stop ends it as SIGTERM does on Linux: the step in hand
    is cut off, stays journalled and the next leader runs it again.

    Check the config before starting (it contacts both sites):
        C:\failover-agent\Scripts\failover-agent.exe validate --config C:\ProgramData\failover-agent\config.yaml --deep

.EXAMPLE
    .\service\install-service.ps1 -ConfigPath C:\ProgramData\failover-agent\config.yaml -Account 'CONTOSO\gmsa-failover$' `
        -TokenPath C:\ProgramData\failover-agent\vmm-password.txt

.EXAMPLE
    .\service\install-service.ps1 -Uninstall
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [string] $VenvPath = 'C:\failover-agent',
    [string] $ConfigPath = 'C:\ProgramData\failover-agent\config.yaml',
    [string] $DataPath = 'C:\ProgramData\failover-agent\data',
    # Files the config's file: secret references name (passwords, TSIG keys, API tokens).
    [string[]] $TokenPath = @(),
    [string] $ServiceName = 'failover-agent',
    # A gMSA ('DOMAIN\name$', no password) or a domain account; default: LocalSystem, which
    # rarely has the rights the agent needs on remote VMM and Hyper-V hosts.
    [string] $Account,
    [pscredential] $Credential,
    [ValidateSet('debug', 'info', 'warning', 'error')]
    [string] $LogLevel = 'info',
    [string] $PythonVersion = '3.11',
    [string] $SourcePath = (Split-Path -Parent $PSScriptRoot),
    [switch] $Uninstall
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$serviceKey = "HKLM:\SYSTEM\CurrentControlSet\Services\$ServiceName"

function Invoke-Checked {
    # An external program's failure is an exit code, not an error record: make it one.
    param([string] $What, [int] $ExitCode)
    if ($ExitCode -ne 0) { throw "$What failed with exit code $ExitCode" }
}

function Set-PrivateAcl {
    # Only these identities, nothing inherited: a config names endpoints and secret files, a
    # token file holds the secret itself.
    param([string] $Path, [string] $ServiceIdentity, [string] $ServiceRights)
    $isDirectory = Test-Path -LiteralPath $Path -PathType Container
    $inherit = if ($isDirectory) { 'ContainerInherit, ObjectInherit' } else { 'None' }
    $acl = Get-Acl -LiteralPath $Path
    $acl.SetAccessRuleProtection($true, $false)
    foreach ($rule in @($acl.Access)) {
        [void] $acl.RemoveAccessRule($rule)
    }
    $grants = @(
        @('BUILTIN\Administrators', 'FullControl'),
        @('NT AUTHORITY\SYSTEM', 'FullControl'),
        @($ServiceIdentity, $ServiceRights)
    )
    foreach ($grant in $grants) {
        $rule = New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule `
            -ArgumentList @($grant[0], $grant[1], $inherit, 'None', 'Allow')
        $acl.AddAccessRule($rule)
    }
    if ($PSCmdlet.ShouldProcess($Path, "allow only Administrators, SYSTEM and $ServiceIdentity ($ServiceRights)")) {
        Set-Acl -LiteralPath $Path -AclObject $acl
    }
}

$existing = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue

if ($Uninstall) {
    if ($null -eq $existing) {
        Write-Verbose "service $ServiceName is not installed"
        return
    }
    if ($existing.Status -ne 'Stopped') {
        # The agent journals the step in hand and releases its lease; a standby takes over.
        Stop-Service -Name $ServiceName -Force
    }
    if ($PSCmdlet.ShouldProcess($ServiceName, 'remove service')) {
        # Removes its registry key too (PythonClass, Parameters); the venv and data stay.
        & sc.exe delete $ServiceName | Out-Null
        Invoke-Checked "sc.exe delete $ServiceName" $LASTEXITCODE
        Write-Output "service $ServiceName removed; $VenvPath, the config and the data directory are left as they were"
    }
    return
}

if ($null -ne $existing) {
    throw "service $ServiceName already exists; run with -Uninstall first to replace it"
}
if (-not (Test-Path -LiteralPath $ConfigPath -PathType Leaf)) {
    throw "config file $ConfigPath not found (failover-agent config template prints one to start from)"
}
foreach ($token in $TokenPath) {
    if (-not (Test-Path -LiteralPath $token -PathType Leaf)) { throw "token file $token not found" }
}
if (-not (Test-Path -LiteralPath (Join-Path $SourcePath 'pyproject.toml') -PathType Leaf)) {
    throw "$SourcePath is not a checkout of failover-agent (no pyproject.toml): give -SourcePath"
}
$configFull = (Resolve-Path -LiteralPath $ConfigPath).Path
$python = Join-Path $VenvPath 'Scripts\python.exe'

if ($PSCmdlet.ShouldProcess($VenvPath, 'create the virtual environment and install the agent')) {
    if (-not (Test-Path -LiteralPath $python -PathType Leaf)) {
        & py "-$PythonVersion" -m venv $VenvPath
        Invoke-Checked "py -$PythonVersion -m venv $VenvPath" $LASTEXITCODE
    }
    & $python -m pip install --disable-pip-version-check --quiet ('{0}[service]' -f $SourcePath)
    Invoke-Checked 'pip install' $LASTEXITCODE
    Copy-Item -LiteralPath (Join-Path $PSScriptRoot 'failover_agent_service.py') -Destination $VenvPath -Force
}

$module = Join-Path $VenvPath 'failover_agent_service.py'
$hostExe = Join-Path $VenvPath 'pythonservice.exe'
if (Test-Path -LiteralPath $module -PathType Leaf) {
    # pywin32 places its host in the environment; this also registers the event log source.
    $hostExe = @(& $python $module host-exe)[-1]
    Invoke-Checked 'locating the service host (pythonservice.exe)' $LASTEXITCODE
}

$identity = 'NT AUTHORITY\SYSTEM'
if ($Credential) { $identity = $Credential.UserName } elseif ($Account) { $identity = $Account }

$params = @{
    Name           = $ServiceName
    BinaryPathName = '"{0}"' -f $hostExe
    DisplayName    = 'failover-agent (network side of Hyper-V / VMM disaster recovery)'
    Description    = 'Reserves IPs in VMM pools, sets failover IPs, builds test networks, moves routes and updates DNS for site failovers.'
    StartupType    = 'Automatic'
}
if ($Credential) {
    $params.Credential = $Credential
}

if ($PSCmdlet.ShouldProcess($ServiceName, "create service hosted by $hostExe")) {
    New-Service @params | Out-Null
    if ($Account -and -not $Credential) {
        # A gMSA has no password: sc.exe sets the account with none. The account also needs the
        # "Log on as a service" right (secpol.msc, or a GPO), which sc.exe does not grant.
        & sc.exe config $ServiceName obj= $Account | Out-Null
        Invoke-Checked "sc.exe config $ServiceName obj= $Account" $LASTEXITCODE
    }
    # What pythonservice.exe hosts, and what agent.winservice reads.
    $class = [System.IO.Path]::ChangeExtension($module, $null) + '.FailoverAgentService'
    New-Item -Path (Join-Path $serviceKey 'PythonClass') -Value $class -Force | Out-Null
    New-Item -Path (Join-Path $serviceKey 'Parameters') -Force | Out-Null
    New-ItemProperty -LiteralPath (Join-Path $serviceKey 'Parameters') -Name 'ConfigPath' -Value $configFull -PropertyType String -Force | Out-Null
    New-ItemProperty -LiteralPath (Join-Path $serviceKey 'Parameters') -Name 'LogLevel' -Value $LogLevel -PropertyType String -Force | Out-Null

    & sc.exe failure $ServiceName reset= 86400 actions= restart/60000/restart/60000/restart/300000 | Out-Null
    Invoke-Checked "sc.exe failure $ServiceName" $LASTEXITCODE
    # Failure actions also when the service stops itself with a non-zero exit code, not only
    # when its process dies.
    & sc.exe failureflag $ServiceName 1 | Out-Null
    Invoke-Checked "sc.exe failureflag $ServiceName" $LASTEXITCODE
}

if (-not (Test-Path -LiteralPath $DataPath -PathType Container)) {
    New-Item -Path $DataPath -ItemType Directory -Force | Out-Null
}
Set-PrivateAcl -Path (Split-Path -Parent $configFull) -ServiceIdentity $identity -ServiceRights 'ReadAndExecute'
Set-PrivateAcl -Path $DataPath -ServiceIdentity $identity -ServiceRights 'Modify'
foreach ($token in $TokenPath) {
    Set-PrivateAcl -Path $token -ServiceIdentity $identity -ServiceRights 'Read'
}

Write-Output "service $ServiceName registered: $hostExe hosting failover-agent serve --config $configFull (runs as $identity)"
Write-Output "start it with: Start-Service $ServiceName; its role changes and errors go to the Application event log (source $ServiceName)"

<#
.SYNOPSIS
    Registers failover-agent as a Windows service (or removes it).

.DESCRIPTION
    Registers a service that runs `failover-agent.exe serve --config <ConfigPath>` from the
    virtual environment the agent was installed into, under a dedicated account (a gMSA is the
    usual choice: it needs rights on VMM, the Hyper-V hosts and DNS, and no password to rotate).

    NOTE: `failover-agent serve` (the HTTP API, which also answers the Service Control Manager)
    arrives with the API issue. Until then this script registers the service, but the service
    cannot start: the current version has no long-running command.

    Install first:
        py -3.11 -m venv C:\failover-agent
        C:\failover-agent\Scripts\python.exe -m pip install .
        C:\failover-agent\Scripts\failover-agent.exe validate --config C:\ProgramData\failover-agent\config.yaml

.EXAMPLE
    .\install-service.ps1 -VenvPath C:\failover-agent -ConfigPath C:\ProgramData\failover-agent\config.yaml `
        -Account 'CONTOSO\gmsa-failover$'

.EXAMPLE
    .\install-service.ps1 -Uninstall
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [string] $VenvPath = 'C:\failover-agent',
    [string] $ConfigPath = 'C:\ProgramData\failover-agent\config.yaml',
    [string] $ServiceName = 'failover-agent',
    # A gMSA ('DOMAIN\name$', no password) or a domain account; default: LocalSystem, which
    # rarely has the rights the agent needs on remote VMM and Hyper-V hosts.
    [string] $Account,
    [pscredential] $Credential,
    [switch] $Uninstall
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$existing = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue

if ($Uninstall) {
    if ($null -eq $existing) {
        Write-Verbose "service $ServiceName is not installed"
        return
    }
    if ($existing.Status -ne 'Stopped') {
        Stop-Service -Name $ServiceName -Force
    }
    if ($PSCmdlet.ShouldProcess($ServiceName, 'remove service')) {
        & sc.exe delete $ServiceName | Out-Null
        if ($LASTEXITCODE -ne 0) { throw "sc.exe delete $ServiceName failed with exit code $LASTEXITCODE" }
    }
    return
}

$exe = Join-Path $VenvPath 'Scripts\failover-agent.exe'
if (-not (Test-Path -LiteralPath $exe -PathType Leaf)) {
    throw "$exe not found: install the agent into $VenvPath first (see the help of this script)"
}
if (-not (Test-Path -LiteralPath $ConfigPath -PathType Leaf)) {
    throw "config file $ConfigPath not found"
}
if ($null -ne $existing) {
    throw "service $ServiceName already exists; run with -Uninstall first to replace it"
}

# Quote both paths: either may contain spaces.
$binaryPath = '"{0}" serve --config "{1}"' -f $exe, (Resolve-Path -LiteralPath $ConfigPath).Path

$params = @{
    Name           = $ServiceName
    BinaryPathName = $binaryPath
    DisplayName    = 'failover-agent (network side of Hyper-V / VMM disaster recovery)'
    Description    = 'Reserves IPs in VMM pools, sets failover IPs, builds test networks, moves routes and updates DNS for site failovers.'
    StartupType    = 'Automatic'
}
if ($Credential) {
    $params.Credential = $Credential
}

if ($PSCmdlet.ShouldProcess($ServiceName, "create service running $binaryPath")) {
    New-Service @params | Out-Null
    if ($Account -and -not $Credential) {
        # A gMSA has no password: sc.exe sets the account with none. The account also needs the
        # "Log on as a service" right (secpol.msc, or a GPO), which sc.exe does not grant.
        & sc.exe config $ServiceName obj= $Account | Out-Null
        if ($LASTEXITCODE -ne 0) { throw "sc.exe config $ServiceName obj= $Account failed with exit code $LASTEXITCODE" }
    }
    # Restart after a crash (5 s, 30 s, then every 60 s); the failure count resets after a day.
    & sc.exe failure $ServiceName reset= 86400 actions= restart/5000/restart/30000/restart/60000 | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "sc.exe failure $ServiceName failed with exit code $LASTEXITCODE" }
    Write-Output "service $ServiceName registered: $binaryPath"
    Write-Output "start it with: Start-Service $ServiceName   (needs the 'serve' command, which arrives with the API)"
}

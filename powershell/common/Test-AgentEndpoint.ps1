<#
.SYNOPSIS
Read only: which host answered, its PowerShell version, and which of the agent's modules it has.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $false)][string[]] $ModuleName
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
if (-not $ModuleName) {
    $ModuleName = @('VirtualMachineManager', 'Hyper-V', 'DnsServer', 'NetTCPIP', 'RemoteAccess')
}
$modules = @()
foreach ($name in $ModuleName) {
    $found = @(Get-Module -ListAvailable -Name $name -ErrorAction SilentlyContinue)
    $version = $null
    if ($found.Count -gt 0) { $version = [string]($found | Sort-Object Version -Descending | Select-Object -First 1).Version }
    $modules += [pscustomobject]@{ name = $name; available = ($found.Count -gt 0); version = $version }
}
$after = [pscustomobject]@{
    host_name = [System.Net.Dns]::GetHostName()
    powershell_version = [string]$PSVersionTable.PSVersion
    modules = $modules
}
$item = [pscustomobject]@{ key = 'endpoint'; changed = $false; before = $null; after = $after; error = $null }
[pscustomobject]@{ schema = 'common/Test-AgentEndpoint/1'; items = @($item) } | ConvertTo-Json -Depth 10 -Compress

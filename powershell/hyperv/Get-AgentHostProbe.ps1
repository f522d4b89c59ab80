<#
.SYNOPSIS
Proves one Hyper-V host answers the agent: reads the host and counts its VMs; changes nothing.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $ComputerName
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$items = @()
try {
    $vmHost = Hyper-V\Get-VMHost -ComputerName $ComputerName
    $held = @(Hyper-V\Get-VM -ComputerName $ComputerName).Count
    $items += [pscustomobject]@{ key = $ComputerName; changed = $false; before = $null
        after = [pscustomobject]@{ host = $vmHost.ComputerName; vms = $held; answer = "Hyper-V host $($vmHost.ComputerName) answers ($held VMs)" }
        error = $null }
} catch {
    $items += [pscustomobject]@{ key = $ComputerName; changed = $false; before = $null; after = $null
        error = [pscustomobject]@{ id = $_.FullyQualifiedErrorId; message = $_.Exception.Message; code = $null } }
}
[pscustomobject]@{ schema = 'hyperv/Get-AgentHostProbe/1'; items = $items } | ConvertTo-Json -Depth 10 -Compress

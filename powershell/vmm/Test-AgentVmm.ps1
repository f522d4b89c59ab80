<#
.SYNOPSIS
Proves this VMM server answers: its name, version and how many VMs and VM networks it manages. Changes nothing.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string] $Site
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

Import-Module VirtualMachineManager
$server = Get-SCVMMServer -ComputerName 'localhost'
$vms = @(Get-SCVirtualMachine -VMMServer $server -All).Count
$networks = @(Get-SCVMNetwork -VMMServer $server).Count
$item = [pscustomobject]@{ key = $Site; changed = $false; before = $null; error = $null
    after = [pscustomobject]@{ message = "VMM server $($server.Name) $($server.ProductVersion) of $Site answers ($vms VMs, $networks VM networks)" } }
[pscustomobject]@{ schema = 'vmm/Test-AgentVmm/1'; items = @($item) } | ConvertTo-Json -Depth 10 -Compress

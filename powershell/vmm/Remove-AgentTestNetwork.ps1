<#
.SYNOPSIS
Deletes test VM networks the agent created, with their static IP pools and subnets, when nothing uses them.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string[]] $Name
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

Import-Module VirtualMachineManager
$server = Get-SCVMMServer -ComputerName 'localhost'
$testMark = '[failover-agent test network; copy of '
$items = New-Object System.Collections.Generic.List[object]

function Add-Failure([string] $Key, [string] $Id, [string] $Code, [string] $Message) {
    $items.Add([pscustomobject]@{ key = $Key; changed = $false; before = $null; after = $null
        error = [pscustomobject]@{ id = $Id; code = $Code; message = $Message } })
}

foreach ($n in $Name) {
    try {
        $net = Get-SCVMNetwork -VMMServer $server -Name $n
        if ($null -eq $net) {
            $items.Add([pscustomobject]@{ key = $n; changed = $false; before = $null; after = $null; error = $null })
            continue
        }
        if (-not ([string]$net.Description).StartsWith($testMark)) {
            Add-Failure $n 'AgentNotATestNetwork' 'not_a_test_network' "VM network $n was not created as a test network; not deleting it"
            continue
        }
        $nics = @(Get-SCVirtualNetworkAdapter -VMMServer $server -All | Where-Object { $_.VMNetwork -and $_.VMNetwork.ID -eq $net.ID } |
            ForEach-Object { "$($_.Name)" })
        $subnets = @(Get-SCVMSubnet -VMMServer $server -VMNetwork $net)
        $pools = @($subnets | ForEach-Object { Get-SCStaticIPAddressPool -VMMServer $server -VMSubnet $_ })
        $held = @($pools | ForEach-Object { $p = $_; Get-SCIPAddress -VMMServer $server -StaticIPAddressPool $p -Assigned |
            ForEach-Object { "$($p.Name):$($_.Address)" } })
        if ($nics.Count -gt 0 -or $held.Count -gt 0) {
            Add-Failure $n 'AgentNetworkInUse' 'network_in_use' "test network $n is in use (NICs connected: $($nics -join ', '); grants held: $($held -join ', '))"
            continue
        }
        foreach ($p in $pools) { Remove-SCStaticIPAddressPool -StaticIPAddressPool $p -Confirm:$false | Out-Null }
        foreach ($s in $subnets) { Remove-SCVMSubnet -VMSubnet $s -Confirm:$false | Out-Null }
        Remove-SCVMNetwork -VMNetwork $net -Confirm:$false | Out-Null
        $items.Add([pscustomobject]@{ key = $n; changed = $true; before = [pscustomobject]@{ name = $n }; after = $null; error = $null })
    } catch {
        Add-Failure $n $_.FullyQualifiedErrorId $null $_.Exception.Message
    }
}

[pscustomobject]@{ schema = 'vmm/Remove-AgentTestNetwork/1'; items = @($items) } | ConvertTo-Json -Depth 10 -Compress

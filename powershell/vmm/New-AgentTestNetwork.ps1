<#
.SYNOPSIS
Creates isolated (network-virtualised) copies of VM networks with their subnets and static IP pools, for test failovers.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string] $RequestJson
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

# RequestJson: [{name, copy_of, description}]. The copy's description starts with the test marker,
# which is how Remove-AgentTestNetwork and Get-AgentInventory know the agent made it.
Import-Module VirtualMachineManager
$server = Get-SCVMMServer -ComputerName 'localhost'
$testMark = '[failover-agent test network; copy of '
$requests = @($RequestJson | ConvertFrom-Json)
$items = New-Object System.Collections.Generic.List[object]

function Get-NetworkView($Net) {
    $subnets = @(Get-SCVMSubnet -VMMServer $server -VMNetwork $Net | ForEach-Object {
        $vlan = @($_.SubnetVLans)[0]
        [pscustomobject]@{ name = $_.Name; prefix = [string]$vlan.Subnet
            vlan_id = $(if ($vlan.VLanID -gt 0) { [int]$vlan.VLanID } else { $null }); supports_dhcp = [bool]$vlan.SupportsDHCP } })
    [pscustomobject]@{ name = $Net.Name; logical_network = $Net.LogicalNetwork.Name; isolation = [string]$Net.IsolationType
        subnets = $subnets; description = [string]$Net.Description }
}

function Add-Failure([string] $Key, [string] $Id, [string] $Code, [string] $Message) {
    $items.Add([pscustomobject]@{ key = $Key; changed = $false; before = $null; after = $null
        error = [pscustomobject]@{ id = $Id; code = $Code; message = $Message } })
}

foreach ($r in $requests) {
    $name = [string]$r.name
    try {
        $orig = Get-SCVMNetwork -VMMServer $server -Name ([string]$r.copy_of)
        if ($null -eq $orig) { Add-Failure $name 'AgentNetworkNotFound' 'not_found' "no VM network $($r.copy_of) to copy"; continue }
        $mark = $testMark + [string]$r.copy_of + ']'
        $existing = Get-SCVMNetwork -VMMServer $server -Name $name
        if ($null -ne $existing) {
            $view = Get-NetworkView $existing
            if (([string]$existing.Description).StartsWith($mark)) {
                $items.Add([pscustomobject]@{ key = $name; changed = $false; before = $view; after = $view; error = $null })
            } else {
                Add-Failure $name 'AgentNetworkExists' 'conflict' "VM network $name already exists and is not a test copy of $($r.copy_of)"
            }
            continue
        }
        $origSubnets = @(Get-SCVMSubnet -VMMServer $server -VMNetwork $orig)
        $pools = @($origSubnets | ForEach-Object { Get-SCStaticIPAddressPool -VMMServer $server -VMSubnet $_ })
        $clash = @($pools | Where-Object { $null -ne (Get-SCStaticIPAddressPool -VMMServer $server -Name "$name/$($_.Name)") })
        if ($clash.Count -gt 0) { Add-Failure $name 'AgentPoolExists' 'conflict' "static IP pool $name/$($clash[0].Name) already exists"; continue }

        $net = New-SCVMNetwork -VMMServer $server -Name $name -LogicalNetwork $orig.LogicalNetwork -IsolationType 'WindowsNetworkVirtualization' -Description ("$mark " + [string]$r.description)
        foreach ($sub in $origSubnets) {
            $vlans = @($sub.SubnetVLans | ForEach-Object { New-SCSubnetVLan -Subnet ([string]$_.Subnet) -SupportsDHCP ([bool]$_.SupportsDHCP) })
            $copy = New-SCVMSubnet -VMMServer $server -Name $sub.Name -VMNetwork $net -SubnetVLan $vlans
            foreach ($pool in @(Get-SCStaticIPAddressPool -VMMServer $server -VMSubnet $sub)) {
                $dns = @($pool.DNSServers | ForEach-Object { [string]$_ })
                $gateways = @($pool.DefaultGateways | ForEach-Object { New-SCDefaultGateway -VMMServer $server -IPAddress ([string]$_.IPAddress) -Automatic })
                New-SCStaticIPAddressPool -VMMServer $server -Name "$name/$($pool.Name)" -VMSubnet $copy -Subnet ([string]$pool.Subnet) `
                    -IPAddressRangeStart ([string]$pool.IPAddressRangeStart) -IPAddressRangeEnd ([string]$pool.IPAddressRangeEnd) `
                    -IPAddressReservedSet ([string]$pool.IPAddressReservedSet) -DefaultGateway $gateways `
                    -DNSServer $dns -DNSSuffix ([string]$pool.DNSSuffix) | Out-Null
            }
        }
        $items.Add([pscustomobject]@{ key = $name; changed = $true; before = $null; after = (Get-NetworkView $net); error = $null })
    } catch {
        Add-Failure $name $_.FullyQualifiedErrorId $null $_.Exception.Message
    }
}

[pscustomobject]@{ schema = 'vmm/New-AgentTestNetwork/1'; items = @($items) } | ConvertTo-Json -Depth 10 -Compress

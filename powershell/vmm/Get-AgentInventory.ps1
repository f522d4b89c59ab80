<#
.SYNOPSIS
Reads this VMM server's VM networks, static IP pools, granted addresses and VMs (with NICs) as flat objects.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string] $Site
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

# VMM objects serialise one level deep over PSRP: every value below is projected by hand to
# strings, numbers and arrays of [pscustomobject], then printed as one JSON document.
Import-Module VirtualMachineManager
$server = Get-SCVMMServer -ComputerName 'localhost'
$testMark = '[failover-agent test network; copy of '
$items = New-Object System.Collections.Generic.List[object]

function Split-Description([string] $Text) {
    # A test network carries '[failover-agent test network; copy of <name>] <description>'.
    if ($Text -and $Text.StartsWith($testMark)) {
        $end = $Text.IndexOf(']')
        return @($true, $Text.Substring($testMark.Length, $end - $testMark.Length), $Text.Substring($end + 1).TrimStart())
    }
    return @($false, $null, [string]$Text)
}

# Hyper-V changes VMs behind VMM's back (a test failover creates '<vm> - Test', a failover
# changes the replica): a light refresh of every host first, so what follows is not stale.
foreach ($vmHost in @(Get-SCVMHost -VMMServer $server)) { Read-SCVirtualMachine -VMHost $vmHost | Out-Null }

$networks = @(Get-SCVMNetwork -VMMServer $server)
$subnetsById = @{}
foreach ($net in $networks) {
    $subnets = @()
    foreach ($sub in @(Get-SCVMSubnet -VMMServer $server -VMNetwork $net)) {
        $subnetsById[[string]$sub.ID] = @($net.Name, $sub.Name)
        $vlan = @($sub.SubnetVLans)[0]
        $subnets += [pscustomobject]@{ name = $sub.Name; prefix = [string]$vlan.Subnet
            vlan_id = $(if ($vlan.VLanID -gt 0) { [int]$vlan.VLanID } else { $null })
            supports_dhcp = [bool]$vlan.SupportsDHCP }
    }
    $test, $copyOf, $description = Split-Description $net.Description
    $items.Add([pscustomobject]@{ key = "network:$($net.Name)"; changed = $false; before = $null; error = $null
        after = [pscustomobject]@{ name = $net.Name; logical_network = $net.LogicalNetwork.Name
            isolation = [string]$net.IsolationType; subnets = @($subnets); test_network = $test
            copy_of = $copyOf; description = $description } })
}

foreach ($pool in @(Get-SCStaticIPAddressPool -VMMServer $server)) {
    if ($null -eq $pool.VMSubnet) { continue }  # logical-network pools: not the agent's
    $owner = $subnetsById[[string]$pool.VMSubnet.ID]
    $gateway = @($pool.DefaultGateways | ForEach-Object { [string]$_.IPAddress })
    $items.Add([pscustomobject]@{ key = "pool:$($pool.Name)"; changed = $false; before = $null; error = $null
        after = [pscustomobject]@{ name = $pool.Name; vm_network = $owner[0]; vm_subnet = $owner[1]
            prefix = [string]$pool.Subnet; range_start = [string]$pool.IPAddressRangeStart
            range_end = [string]$pool.IPAddressRangeEnd
            reserved = @(([string]$pool.IPAddressReservedSet) -split ',' | Where-Object { $_ })
            gateway = $(if ($gateway.Count -gt 0) { $gateway[0] } else { $null })
            dns_servers = @($pool.DNSServers | ForEach-Object { [string]$_ })
            dns_suffix = $(if ($pool.DNSSuffix) { [string]$pool.DNSSuffix } else { $null }) } })
    foreach ($ip in @(Get-SCIPAddress -VMMServer $server -StaticIPAddressPool $pool -Assigned)) {
        $items.Add([pscustomobject]@{ key = "grant:$($pool.Name):$($ip.Address)"; changed = $false; before = $null
            error = $null
            after = [pscustomobject]@{ pool = $pool.Name; address = [string]$ip.Address
                owner_type = [string]$ip.AssignedToType; owner_id = [string]$ip.AssignedToID
                description = [string]$ip.Description } })
    }
}

foreach ($vm in @(Get-SCVirtualMachine -VMMServer $server -All)) {
    $nics = @()
    foreach ($nic in @(Get-SCVirtualNetworkAdapter -VMMServer $server -VM $vm)) {
        $ips = @()
        if ([string]$nic.IPv4AddressType -eq 'Static') {
            foreach ($a in @($nic.IPv4Addresses)) {
                $pool = @($nic.IPv4AddressPools)[0]
                $ips += [pscustomobject]@{ mode = 'static'; address = [string]$a
                    prefix_length = [int](([string]$pool.Subnet) -split '/')[1] }
            }
        } else {
            $ips += [pscustomobject]@{ mode = 'dhcp'; address = $null; prefix_length = $null }
        }
        $nics += [pscustomobject]@{ id = [string]$nic.ID; name = $nic.Name
            vm_network = $(if ($nic.VMNetwork) { $nic.VMNetwork.Name } else { $null })
            vm_subnet = $(if ($nic.VMSubnet) { $nic.VMSubnet.Name } else { $null }); ip_configurations = @($ips) }
    }
    $role = 'primary'
    if ($vm.Name.EndsWith(' - Test')) { $role = 'test' } elseif ([string]$vm.ReplicationMode -eq 'Recovery') { $role = 'replica' }
    $power = $(if ([string]$vm.VirtualMachineState -eq 'Running') { 'Running' } else { 'Off' })
    $items.Add([pscustomobject]@{ key = "vm:$($vm.Name)"; changed = $false; before = $null; error = $null
        after = [pscustomobject]@{ name = $vm.Name; host = [string]$vm.VMHost.Name; role = $role
            power_state = $power; nics = @($nics) } })
}

[pscustomobject]@{ schema = 'vmm/Get-AgentInventory/1'; site = $Site; items = @($items) } | ConvertTo-Json -Depth 10 -Compress

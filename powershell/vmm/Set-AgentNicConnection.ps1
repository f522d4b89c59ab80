<#
.SYNOPSIS
Connects (or disconnects) each VM's NIC to a VM network and subnet, static from the network's pools or DHCP.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string] $RequestJson
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

# RequestJson: [{vm, nic, vm_network (null: disconnect), vm_subnet, addresses: [[address, prefix_length]]}].
Import-Module VirtualMachineManager
$server = Get-SCVMMServer -ComputerName 'localhost'
$requests = @($RequestJson | ConvertFrom-Json)
$items = New-Object System.Collections.Generic.List[object]
$refreshed = $false

function Get-NicView($Nic) {
    $ips = @()
    if ([string]$Nic.IPv4AddressType -eq 'Static') {
        $prefix = [int](([string]@($Nic.IPv4AddressPools)[0].Subnet) -split '/')[1]
        $ips = @(@($Nic.IPv4Addresses) | ForEach-Object { [pscustomobject]@{ mode = 'static'; address = [string]$_; prefix_length = $prefix } })
    } else {
        $ips = @([pscustomobject]@{ mode = 'dhcp'; address = $null; prefix_length = $null })
    }
    [pscustomobject]@{ id = [string]$Nic.ID; name = $Nic.Name
        vm_network = $(if ($Nic.VMNetwork) { $Nic.VMNetwork.Name } else { $null })
        vm_subnet = $(if ($Nic.VMSubnet) { $Nic.VMSubnet.Name } else { $null }); ip_configurations = $ips }
}

function Test-InRange([string] $Address, $Pool) {
    $a = [System.Net.IPAddress]::Parse($Address).GetAddressBytes()
    $s = [System.Net.IPAddress]::Parse([string]$Pool.IPAddressRangeStart).GetAddressBytes()
    $e = [System.Net.IPAddress]::Parse([string]$Pool.IPAddressRangeEnd).GetAddressBytes()
    if ($a.Length -ne $s.Length) { return $false }
    [Array]::Reverse($a); [Array]::Reverse($s); [Array]::Reverse($e)
    $n = [System.Numerics.BigInteger]::new([byte[]]($a + 0))
    return ($n -ge [System.Numerics.BigInteger]::new([byte[]]($s + 0))) -and ($n -le [System.Numerics.BigInteger]::new([byte[]]($e + 0)))
}

function Add-Failure([string] $Key, [string] $Id, [string] $Code, [string] $Message) {
    $items.Add([pscustomobject]@{ key = $Key; changed = $false; before = $null; after = $null
        error = [pscustomobject]@{ id = $Id; code = $Code; message = $Message } })
}

foreach ($r in $requests) {
    $key = "$($r.vm)/$($r.nic)"
    try {
        $vm = Get-SCVirtualMachine -VMMServer $server -Name ([string]$r.vm)
        if ($null -eq $vm -and -not $refreshed) {
            # A VM Hyper-V created since VMM last looked (a test failover's '<vm> - Test'):
            # refresh the hosts once per call and look again.
            foreach ($vmHost in @(Get-SCVMHost -VMMServer $server)) { Read-SCVirtualMachine -VMHost $vmHost | Out-Null }
            $refreshed = $true
            $vm = Get-SCVirtualMachine -VMMServer $server -Name ([string]$r.vm)
        }
        if ($null -eq $vm) { Add-Failure $key 'AgentVmNotFound' 'not_found' "no VM $($r.vm)"; continue }
        # A failover changed the VM on its host; VMM's cached view is stale until refreshed.
        $vm = Read-SCVirtualMachine -VM $vm
        $nic = @(Get-SCVirtualNetworkAdapter -VMMServer $server -VM $vm | Where-Object { $_.Name -eq [string]$r.nic })
        if ($nic.Count -eq 0) { Add-Failure $key 'AgentNicNotFound' 'not_found' "VM $($r.vm) has no NIC $($r.nic)"; continue }
        $nic = $nic[0]
        $before = Get-NicView $nic
        $addresses = @($r.addresses)
        if ($null -eq $r.vm_network) {
            if ($addresses.Count -gt 0 -or $r.vm_subnet) { Add-Failure $key 'AgentInvalidSetting' 'invalid_setting' "${key}: a NIC being disconnected takes no subnet or addresses"; continue }
            if ($null -eq $nic.VMNetwork -and [string]$nic.IPv4AddressType -ne 'Static') {
                $items.Add([pscustomobject]@{ key = $key; changed = $false; before = $before; after = $before; error = $null }); continue
            }
            $nic = Set-SCVirtualNetworkAdapter -VirtualNetworkAdapter $nic -NoConnection -IPv4AddressType 'Dynamic'
            $items.Add([pscustomobject]@{ key = $key; changed = $true; before = $before; after = (Get-NicView $nic); error = $null }); continue
        }
        $net = Get-SCVMNetwork -VMMServer $server -Name ([string]$r.vm_network)
        if ($null -eq $net) { Add-Failure $key 'AgentNetworkNotFound' 'not_found' "no VM network $($r.vm_network)"; continue }
        $subnets = @(Get-SCVMSubnet -VMMServer $server -VMNetwork $net)
        $subnet = $(if ($r.vm_subnet) { @($subnets | Where-Object { $_.Name -eq [string]$r.vm_subnet })[0] } else { @($subnets)[0] })
        if ($null -eq $subnet) { Add-Failure $key 'AgentSubnetNotFound' 'not_found' "VM network $($r.vm_network) has no subnet $($r.vm_subnet)"; continue }
        $pools = @(Get-SCStaticIPAddressPool -VMMServer $server -VMSubnet $subnet)
        $wanted = @(); $wantedPools = @(); $refused = $false
        foreach ($pair in $addresses) {
            $address = [System.Net.IPAddress]::Parse([string]$pair[0]).ToString()
            $grant = $null; $owner = $null
            foreach ($p in $pools) {
                $g = @(Get-SCIPAddress -VMMServer $server -StaticIPAddressPool $p -Assigned | Where-Object { [string]$_.Address -eq $address })
                if ($g.Count -gt 0) { $grant = $g[0]; $owner = $p; break }
            }
            if ($null -eq $grant -and -not @($pools | Where-Object { Test-InRange $address $_ })) { Add-Failure $key 'AgentAddressOutsidePool' 'address_outside_pool' "$address is in no static IP pool of $($r.vm_network)/$($subnet.Name)"; $refused = $true; break }
            if ($null -eq $grant) { Add-Failure $key 'AgentAddressNotGranted' 'not_found' "$address is not granted in a pool of $($r.vm_network)/$($subnet.Name); grant it to $key before connecting"; $refused = $true; break }
            if ([string]$grant.AssignedToID -ne [string]$nic.ID) { Add-Failure $key 'AgentAddressAlreadyGranted' 'address_already_granted' "$address in pool $($owner.Name) is granted to $($grant.AssignedToID), not to $key ($($nic.ID))"; $refused = $true; break }
            $poolLength = [int](([string]$owner.Subnet) -split '/')[1]
            if ([int]$pair[1] -ne $poolLength) { Add-Failure $key 'AgentInvalidSetting' 'invalid_setting' "$address/$($pair[1]): pool $($owner.Name) is a /$poolLength"; $refused = $true; break }
            $wanted += $address; $wantedPools += $owner
        }
        if ($refused) { continue }
        $current = @($before.ip_configurations | Where-Object { $_.mode -eq 'static' } | ForEach-Object { $_.address })
        $same = ($before.vm_network -eq $net.Name) -and ($before.vm_subnet -eq $subnet.Name) -and ((@($current) -join ',') -eq (@($wanted) -join ','))
        if ($same) { $items.Add([pscustomobject]@{ key = $key; changed = $false; before = $before; after = $before; error = $null }); continue }
        if ($wanted.Count -gt 0) {
            $list = New-Object 'System.Collections.Generic.List[string]'; foreach ($a in $wanted) { $list.Add($a) }
            $poolList = New-Object 'System.Collections.Generic.List[Microsoft.SystemCenter.VirtualMachineManager.StaticIPAddressPool]'
            foreach ($p in $wantedPools) { $poolList.Add($p) }
            $nic = Set-SCVirtualNetworkAdapter -VirtualNetworkAdapter $nic -VMNetwork $net -VMSubnet $subnet -IPv4AddressType 'Static' -IPv4Addresses $list -IPv4AddressPools $poolList
        } else {
            $nic = Set-SCVirtualNetworkAdapter -VirtualNetworkAdapter $nic -VMNetwork $net -VMSubnet $subnet -IPv4AddressType 'Dynamic'
        }
        $items.Add([pscustomobject]@{ key = $key; changed = $true; before = $before; after = (Get-NicView $nic); error = $null })
    } catch {
        Add-Failure $key $_.FullyQualifiedErrorId $null $_.Exception.Message
    }
}

[pscustomobject]@{ schema = 'vmm/Set-AgentNicConnection/1'; items = @($items) } | ConvertTo-Json -Depth 10 -Compress

<#
.SYNOPSIS
Grants each requested address of a static IP pool to a virtual NIC, with the agent's marker as its description.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string] $RequestJson
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

# RequestJson: [{pool, address, owner_id, description}]; address '' asks for any free address.
Import-Module VirtualMachineManager
$server = Get-SCVMMServer -ComputerName 'localhost'
$requests = @($RequestJson | ConvertFrom-Json)
$items = New-Object System.Collections.Generic.List[object]

function ConvertTo-Grant($Pool, $Ip) {
    [pscustomobject]@{ pool = $Pool.Name; address = [string]$Ip.Address; owner_type = [string]$Ip.AssignedToType
        owner_id = [string]$Ip.AssignedToID; description = [string]$Ip.Description }
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

foreach ($r in $requests) {
    $address = [string]$r.address
    $key = "$($r.pool):$address"
    try {
        $pool = Get-SCStaticIPAddressPool -VMMServer $server -Name ([string]$r.pool)
        if ($null -eq $pool) {
            $items.Add([pscustomobject]@{ key = $key; changed = $false; before = $null; after = $null
                error = [pscustomobject]@{ id = 'AgentPoolNotFound'; code = 'not_found'; message = "no static IP pool $($r.pool)" } })
            continue
        }
        $nic = Get-SCVirtualNetworkAdapter -VMMServer $server -ID ([guid][string]$r.owner_id)
        if ($null -eq $nic) {
            $items.Add([pscustomobject]@{ key = $key; changed = $false; before = $null; after = $null
                error = [pscustomobject]@{ id = 'AgentOwnerNotFound'; code = 'not_found'; message = "no NIC with id $($r.owner_id) to grant $address to" } })
            continue
        }
        if ($address -ne '') {
            $address = [System.Net.IPAddress]::Parse($address.Trim()).ToString()
            $key = "$($r.pool):$address"
            if (-not (Test-InRange $address $pool)) {
                $items.Add([pscustomobject]@{ key = $key; changed = $false; before = $null; after = $null
                    error = [pscustomobject]@{ id = 'AgentAddressOutsidePool'; code = 'address_outside_pool'; message = "$address is outside pool $($pool.Name) ($($pool.IPAddressRangeStart)-$($pool.IPAddressRangeEnd))" } })
                continue
            }
            if ((([string]$pool.IPAddressReservedSet) -split ',') -contains $address) {
                $items.Add([pscustomobject]@{ key = $key; changed = $false; before = $null; after = $null
                    error = [pscustomobject]@{ id = 'AgentAddressReserved'; code = 'address_reserved'; message = "$address is in the reserved set of pool $($pool.Name)" } })
                continue
            }
            $held = @(Get-SCIPAddress -VMMServer $server -StaticIPAddressPool $pool -Assigned | Where-Object { [string]$_.Address -eq $address })
            if ($held.Count -gt 0) {
                if ([string]$held[0].AssignedToID -eq [string]$nic.ID) {
                    # Drift check: already granted to this NIC, nothing to do.
                    $items.Add([pscustomobject]@{ key = $key; changed = $false; before = (ConvertTo-Grant $pool $held[0])
                        after = (ConvertTo-Grant $pool $held[0]); error = $null })
                } else {
                    $items.Add([pscustomobject]@{ key = $key; changed = $false; before = (ConvertTo-Grant $pool $held[0]); after = $null
                        error = [pscustomobject]@{ id = 'AgentAddressAlreadyGranted'; code = 'address_already_granted'; message = "$address in pool $($pool.Name) is already granted to $($held[0].AssignedToID) ($($held[0].Description))" } })
                }
                continue
            }
            $ip = Grant-SCIPAddress -VMMServer $server -StaticIPAddressPool $pool -GrantToObjectType 'VirtualNetworkAdapter' -GrantToObjectID $nic.ID -IPAddress $address -Description ([string]$r.description)
        } else {
            # No address named: not idempotent; the caller finds an earlier grant by its marker first.
            $ip = Grant-SCIPAddress -VMMServer $server -StaticIPAddressPool $pool -GrantToObjectType 'VirtualNetworkAdapter' -GrantToObjectID $nic.ID -Description ([string]$r.description)
        }
        $items.Add([pscustomobject]@{ key = "$($pool.Name):$($ip.Address)"; changed = $true; before = $null
            after = (ConvertTo-Grant $pool $ip); error = $null })
    } catch {
        $items.Add([pscustomobject]@{ key = $key; changed = $false; before = $null; after = $null
            error = [pscustomobject]@{ id = $_.FullyQualifiedErrorId; code = $null; message = $_.Exception.Message } })
    }
}

[pscustomobject]@{ schema = 'vmm/Grant-AgentIPAddress/1'; items = @($items) } | ConvertTo-Json -Depth 10 -Compress

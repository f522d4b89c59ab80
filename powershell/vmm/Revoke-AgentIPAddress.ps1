<#
.SYNOPSIS
Returns each granted address to its pool, only where it is still granted to the NIC the agent granted it to and carries the agent's marker.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string] $RequestJson,
    [Parameter(Mandatory = $true)][string] $Marker
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

# RequestJson: [{pool, address, owner_id}]. Marker: what every description the agent wrote starts with.
Import-Module VirtualMachineManager
$server = Get-SCVMMServer -ComputerName 'localhost'
$requests = @($RequestJson | ConvertFrom-Json)
$items = New-Object System.Collections.Generic.List[object]

foreach ($r in $requests) {
    $key = "$($r.pool):$($r.address)"
    try {
        $pool = Get-SCStaticIPAddressPool -VMMServer $server -Name ([string]$r.pool)
        if ($null -eq $pool) {  # the pool went, and its grants with it
            $items.Add([pscustomobject]@{ key = $key; changed = $false; before = $null; after = $null; error = $null })
            continue
        }
        $held = @(Get-SCIPAddress -VMMServer $server -StaticIPAddressPool $pool -Assigned | Where-Object { [string]$_.Address -eq [string]$r.address })
        if ($held.Count -eq 0) {
            $items.Add([pscustomobject]@{ key = $key; changed = $false; before = $null; after = $null; error = $null })
            continue
        }
        $ip = $held[0]
        $before = [pscustomobject]@{ pool = $pool.Name; address = [string]$ip.Address; owner_type = [string]$ip.AssignedToType
            owner_id = [string]$ip.AssignedToID; description = [string]$ip.Description }
        if ([string]$ip.AssignedToID -ne [string]$r.owner_id) {
            $items.Add([pscustomobject]@{ key = $key; changed = $false; before = $before; after = $before
                error = [pscustomobject]@{ id = 'AgentGrantOwnerChanged'; code = 'conflict'; message = "$($r.address) in pool $($pool.Name) is now granted to $($ip.AssignedToID), not $($r.owner_id); left alone" } })
            continue
        }
        if ($Marker -and -not ([string]$ip.Description).StartsWith($Marker)) {
            $items.Add([pscustomobject]@{ key = $key; changed = $false; before = $before; after = $before
                error = [pscustomobject]@{ id = 'AgentGrantNotMarked'; code = 'conflict'; message = "$($r.address) in pool $($pool.Name) was not granted by this agent (description '$($ip.Description)'); left alone" } })
            continue
        }
        Revoke-SCIPAddress -VMMServer $server -AllocatedIPAddress $ip | Out-Null
        $items.Add([pscustomobject]@{ key = $key; changed = $true; before = $before; after = $null; error = $null })
    } catch {
        $items.Add([pscustomobject]@{ key = $key; changed = $false; before = $null; after = $null
            error = [pscustomobject]@{ id = $_.FullyQualifiedErrorId; code = $null; message = $_.Exception.Message } })
    }
}

[pscustomobject]@{ schema = 'vmm/Revoke-AgentIPAddress/1'; items = @($items) } | ConvertTo-Json -Depth 10 -Compress

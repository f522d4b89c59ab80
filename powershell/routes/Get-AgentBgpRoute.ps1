<#
.SYNOPSIS
Reads the networks this BGP speaker announces (RemoteAccess BGP custom routes), all or those asked for.
.NOTES
A BGP custom route is an announced network: Get-BgpCustomRoute lists prefixes (Network) and
interfaces whose routes it redistributes (Interface), with no next hop and no metric -- the
speaker itself is the next hop its peers use. Only the prefixes are the agent's to read; the
interfaces are left out. Prefixes are compared in canonical form (the address as .NET writes it,
then /length), so 2001:DB8:0::/48 and 2001:db8::/48 are one network. The router itself is the
endpoint (RRAS with BGP, not multitenant: no routing domain); -Router is its name in the agent's
config, echoed in the answer.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $Router,
    [string[]] $Prefix = @()
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function ConvertTo-Canonical([string] $Network) {
    $address, $length = $Network.Trim() -split '/', 2
    if (-not $length) { return $Network.Trim() }
    return "$([System.Net.IPAddress]::Parse($address))/$([int] $length)"
}

$announced = New-Object System.Collections.Generic.List[string]
foreach ($custom in @(RemoteAccess\Get-BgpCustomRoute)) {
    foreach ($network in @($custom.Network)) {
        if ($network) {
            $canonical = ConvertTo-Canonical "$network"
            if (-not $announced.Contains($canonical)) { $announced.Add($canonical) }
        }
    }
}
$wanted = @($Prefix | ForEach-Object { ConvertTo-Canonical $_ })
$items = @()
foreach ($network in $announced) {
    if ($wanted.Count -gt 0 -and $wanted -notcontains $network) { continue }
    $items += [pscustomobject]@{ key = $network; changed = $false; before = $null
        after = [pscustomobject]@{ router = $Router; prefix = $network }; error = $null }
}
[pscustomobject]@{ schema = 'routes/Get-AgentBgpRoute/1'; items = $items } | ConvertTo-Json -Depth 10 -Compress

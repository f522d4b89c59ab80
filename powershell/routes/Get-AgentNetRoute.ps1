<#
.SYNOPSIS
Reads this router's routes (NetTCPIP), all static ones or those of the prefixes asked for.
.NOTES
Without -Prefix only the routes an administrator or the agent made (protocol NetMgmt) are
listed: the system's own (loopback, multicast, connected subnets) are not the agent's to move.
An on-link route has no next hop (0.0.0.0 / ::). The router itself is the endpoint; -Router is
its name in the agent's config, echoed in the answer.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $Router,
    [string[]] $Prefix = @()
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function ConvertTo-Value($Route) {
    $hop = "$($Route.NextHop)"
    if ($hop -eq '0.0.0.0' -or $hop -eq '::') { $hop = $null }
    [pscustomobject]@{ router = $Router; prefix = "$($Route.DestinationPrefix)"; next_hop = $hop
        interface = "$($Route.InterfaceAlias)"; metric = [int] $Route.RouteMetric }
}

$items = @()
if ($Prefix.Count -eq 0) {
    $found = @(Get-NetRoute -Protocol NetMgmt -ErrorAction SilentlyContinue)
} else {
    $found = @(Get-NetRoute -DestinationPrefix $Prefix -ErrorAction SilentlyContinue)
}
foreach ($route in $found) {
    $value = ConvertTo-Value $route
    $items += [pscustomobject]@{ key = $value.prefix; changed = $false; before = $null; after = $value; error = $null }
}
[pscustomobject]@{ schema = 'routes/Get-AgentNetRoute/1'; items = $items } | ConvertTo-Json -Depth 10 -Compress

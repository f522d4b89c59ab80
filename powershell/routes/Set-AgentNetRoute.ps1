<#
.SYNOPSIS
Announces (New-NetRoute) or withdraws (Remove-NetRoute) each route on this router, where it does not hold yet.
.NOTES
-RoutesJson: [{prefix, next_hop, interface, metric}]. A route matches the one asked for when its
next hop is the same and, if an interface is asked for, its interface alias too. A prefix routed
elsewhere is someone else's route: refused (route_conflict), never replaced nor removed. A route
without interface goes out of the interface Find-NetRoute picks for its next hop. Every change is
read back: a route not visible after announce (or still there after withdraw) is an item error.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $Router,
    [Parameter(Mandatory)][ValidateSet('announce', 'withdraw')][string] $Action,
    [Parameter(Mandatory)][string] $RoutesJson
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function New-AgentError([string] $Code, [string] $Message) {
    $exception = New-Object System.InvalidOperationException $Message
    New-Object System.Management.Automation.ErrorRecord $exception, "Agent.$Code", 'InvalidOperation', $null
}

function Get-Hop($Route) {
    $hop = "$($Route.NextHop)"
    if ($hop -eq '0.0.0.0' -or $hop -eq '::') { return $null }
    return $hop
}

function ConvertTo-Value($Route) {
    [pscustomobject]@{ router = $Router; prefix = "$($Route.DestinationPrefix)"; next_hop = (Get-Hop $Route)
        interface = "$($Route.InterfaceAlias)"; metric = [int] $Route.RouteMetric }
}

function Get-Current([string] $Prefix) {
    @(Get-NetRoute -DestinationPrefix $Prefix -ErrorAction SilentlyContinue)
}

function Test-Same($Route, $Wanted) {
    if ("$(Get-Hop $Route)" -ne "$($Wanted.next_hop)") { return $false }
    if ($Wanted.interface -and "$($Route.InterfaceAlias)" -ne "$($Wanted.interface)") { return $false }
    return $true
}

function Get-Matching([string] $Prefix, $Wanted) {
    $current = Get-Current $Prefix
    $same = @($current | Where-Object { Test-Same $_ $Wanted })
    if ($current.Count -gt 0 -and $same.Count -eq 0) {
        $found = ConvertTo-Value $current[0]
        throw (New-AgentError 'route_conflict' "$Prefix on $Router is routed via $($found.next_hop) dev $($found.interface), not the route asked for")
    }
    return $same
}

$items = @()
foreach ($wanted in @(ConvertFrom-Json $RoutesJson)) {
    $prefix = "$($wanted.prefix)"
    try {
        $same = Get-Matching $prefix $wanted
        if ($Action -eq 'announce') {
            $metric = [uint16] $wanted.metric
            if ($same.Count -gt 0) {
                $before = ConvertTo-Value $same[0]
                if ($before.metric -eq $metric) {
                    $items += [pscustomobject]@{ key = $prefix; changed = $false; before = $before; after = $before; error = $null }
                    continue
                }
                Set-NetRoute -DestinationPrefix $prefix -InterfaceIndex $same[0].InterfaceIndex -NextHop $same[0].NextHop -RouteMetric $metric -Confirm:$false
            } else {
                $before = $null
                if ($wanted.interface) {
                    if ($wanted.next_hop) {
                        $null = New-NetRoute -DestinationPrefix $prefix -InterfaceAlias $wanted.interface -NextHop $wanted.next_hop -RouteMetric $metric -Confirm:$false
                    } else {
                        $null = New-NetRoute -DestinationPrefix $prefix -InterfaceAlias $wanted.interface -RouteMetric $metric -Confirm:$false
                    }
                } else {
                    $via = @(Find-NetRoute -RemoteIPAddress $wanted.next_hop)
                    if ($via.Count -eq 0) { throw (New-AgentError 'not_found' "no interface of $Router reaches next hop $($wanted.next_hop)") }
                    $null = New-NetRoute -DestinationPrefix $prefix -InterfaceIndex $via[0].InterfaceIndex -NextHop $wanted.next_hop -RouteMetric $metric -Confirm:$false
                }
            }
            $now = @(Get-Current $prefix | Where-Object { (Test-Same $_ $wanted) -and [int] $_.RouteMetric -eq [int] $metric })
            if ($now.Count -eq 0) { throw (New-AgentError 'route_not_visible' "$prefix on $Router is not visible after announce") }
            $items += [pscustomobject]@{ key = $prefix; changed = $true; before = $before; after = (ConvertTo-Value $now[0]); error = $null }
        } else {
            if ($same.Count -eq 0) {
                $items += [pscustomobject]@{ key = $prefix; changed = $false; before = $null; after = $null; error = $null }
                continue
            }
            $before = ConvertTo-Value $same[0]
            Remove-NetRoute -DestinationPrefix $prefix -InterfaceIndex $same[0].InterfaceIndex -NextHop $same[0].NextHop -Confirm:$false
            $left = @(Get-Current $prefix | Where-Object { Test-Same $_ $wanted })
            if ($left.Count -gt 0) { throw (New-AgentError 'route_still_present' "$prefix on $Router is still there after withdraw") }
            $items += [pscustomobject]@{ key = $prefix; changed = $true; before = $before; after = $null; error = $null }
        }
    } catch {
        $code = $null
        if ($_.FullyQualifiedErrorId -like 'Agent.*') { $code = ($_.FullyQualifiedErrorId -split ',')[0].Substring(6) }
        $items += [pscustomobject]@{ key = $prefix; changed = $false; before = $null; after = $null
            error = [pscustomobject]@{ id = $_.FullyQualifiedErrorId; message = $_.Exception.Message; code = $code } }
    }
}
[pscustomobject]@{ schema = 'routes/Set-AgentNetRoute/1'; items = $items } | ConvertTo-Json -Depth 10 -Compress

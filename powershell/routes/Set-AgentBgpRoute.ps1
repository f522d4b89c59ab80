<#
.SYNOPSIS
Announces (Add-BgpCustomRoute) or withdraws (Remove-BgpCustomRoute) each network on this BGP speaker, where it does not hold yet.
.NOTES
-Prefix: the networks, in the order of the answer's items. A network already announced (or
already absent, for withdraw) answers changed = false and nothing is called. A BGP custom route
has no next hop, interface or metric: the prefix is the whole route, so there is nothing to
conflict with. Add-BgpCustomRoute has no -Force or -Confirm (it does not prompt);
Remove-BgpCustomRoute prompts, so -Force. Every change is read back with Get-BgpCustomRoute: a
network not announced after announce (or still announced after withdraw) is an item error.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $Router,
    [Parameter(Mandatory)][ValidateSet('announce', 'withdraw')][string] $Action,
    [Parameter(Mandatory)][string[]] $Prefix
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function New-AgentError([string] $Code, [string] $Message) {
    $exception = New-Object System.InvalidOperationException $Message
    New-Object System.Management.Automation.ErrorRecord $exception, "Agent.$Code", 'InvalidOperation', $null
}

function ConvertTo-Canonical([string] $Network) {
    $address, $length = $Network.Trim() -split '/', 2
    if (-not $length) { return $Network.Trim() }
    return "$([System.Net.IPAddress]::Parse($address))/$([int] $length)"
}

function Get-Announced {
    $found = New-Object System.Collections.Generic.List[string]
    foreach ($custom in @(RemoteAccess\Get-BgpCustomRoute)) {
        foreach ($network in @($custom.Network)) {
            if ($network) { $found.Add((ConvertTo-Canonical "$network")) }
        }
    }
    return , $found
}

$items = @()
foreach ($asked in $Prefix) {
    $network = "$asked"
    try {
        $network = ConvertTo-Canonical $asked
        $value = [pscustomobject]@{ router = $Router; prefix = $network }
        $held = (Get-Announced).Contains($network)
        if ($Action -eq 'announce') {
            if ($held) {
                $items += [pscustomobject]@{ key = $network; changed = $false; before = $value; after = $value; error = $null }
                continue
            }
            RemoteAccess\Add-BgpCustomRoute -Network $network
            if (-not (Get-Announced).Contains($network)) { throw (New-AgentError 'route_not_visible' "$network on $Router is not announced after Add-BgpCustomRoute") }
            $items += [pscustomobject]@{ key = $network; changed = $true; before = $null; after = $value; error = $null }
        } else {
            if (-not $held) {
                $items += [pscustomobject]@{ key = $network; changed = $false; before = $null; after = $null; error = $null }
                continue
            }
            RemoteAccess\Remove-BgpCustomRoute -Network $network -Force
            if ((Get-Announced).Contains($network)) { throw (New-AgentError 'route_still_present' "$network on $Router is still announced after Remove-BgpCustomRoute") }
            $items += [pscustomobject]@{ key = $network; changed = $true; before = $value; after = $null; error = $null }
        }
    } catch {
        $code = $null
        if ($_.FullyQualifiedErrorId -like 'Agent.*') { $code = ($_.FullyQualifiedErrorId -split ',')[0].Substring(6) }
        $items += [pscustomobject]@{ key = $network; changed = $false; before = $null; after = $null
            error = [pscustomobject]@{ id = $_.FullyQualifiedErrorId; message = $_.Exception.Message; code = $code } }
    }
}
[pscustomobject]@{ schema = 'routes/Set-AgentBgpRoute/1'; items = $items } | ConvertTo-Json -Depth 10 -Compress

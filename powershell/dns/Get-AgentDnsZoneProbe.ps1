<#
.SYNOPSIS
Proves one Windows DNS server holds one zone: its type, whether it is AD-integrated and what
dynamic updates it takes. Read-only.
.NOTES
One item keyed by the zone name; a zone the server does not hold is an item error
(WIN32 9601, code dns_not_authoritative), not a terminating one.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $ComputerName,
    [Parameter(Mandatory)][string] $ZoneName
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

try {
    $zone = DnsServer\Get-DnsServerZone -ComputerName $ComputerName -Name $ZoneName
    $after = [pscustomobject]@{ zone = $zone.ZoneName; zone_type = "$($zone.ZoneType)"
        ad_integrated = [bool] $zone.IsDsIntegrated; dynamic_update = "$($zone.DynamicUpdate)" }
    $item = [pscustomobject]@{ key = $ZoneName; changed = $false; before = $null; after = $after; error = $null }
} catch {
    $code = $null
    if ($_.FullyQualifiedErrorId -like 'WIN32 9601*') { $code = 'dns_not_authoritative' }
    $item = [pscustomobject]@{ key = $ZoneName; changed = $false; before = $null; after = $null
        error = [pscustomobject]@{ id = $_.FullyQualifiedErrorId; message = $_.Exception.Message; code = $code } }
}
[pscustomobject]@{ schema = 'dns/Get-AgentDnsZoneProbe/1'; items = @($item) } | ConvertTo-Json -Depth 10 -Compress

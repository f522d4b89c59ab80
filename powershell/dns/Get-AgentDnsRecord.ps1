<#
.SYNOPSIS
Reads the A, AAAA and PTR record sets of named nodes in one zone of one Windows DNS server.
.NOTES
Names are relative to the zone ('@' for the apex), as the DnsServer cmdlets take them. A node or
type with no record is left out of the answer. TTL and aging (timestamp: $null for a static
record) are read so that a later replace keeps them.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $ComputerName,
    [Parameter(Mandatory)][string] $ZoneName,
    [Parameter(Mandatory)][string] $NamesJson
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function Get-RecordValue($Record) {
    switch ($Record.RecordType) {
        'A' { $Record.RecordData.IPv4Address.IPAddressToString }
        'AAAA' { $Record.RecordData.IPv6Address.IPAddressToString }
        'PTR' { $Record.RecordData.PtrDomainName }
    }
}

$items = @()
foreach ($wanted in @(ConvertFrom-Json $NamesJson)) {
    $key = "$($wanted.name)/$($wanted.type)"
    try {
        $records = @(DnsServer\Get-DnsServerResourceRecord -ComputerName $ComputerName -ZoneName $ZoneName `
            -Name $wanted.name -RRType $wanted.type -ErrorAction SilentlyContinue)
        if ($records.Count -eq 0) { continue }
        $stamp = $null
        if ($records[0].Timestamp) { $stamp = $records[0].Timestamp.ToUniversalTime().ToString('o') }
        $after = [pscustomobject]@{
            name = $wanted.name; type = $wanted.type
            ttl = [int] $records[0].TimeToLive.TotalSeconds; timestamp = $stamp
            values = @($records | ForEach-Object { Get-RecordValue $_ })
        }
        $items += [pscustomobject]@{ key = $key; changed = $false; before = $null; after = $after; error = $null }
    } catch {
        $items += [pscustomobject]@{ key = $key; changed = $false; before = $null; after = $null
            error = [pscustomobject]@{ id = $_.FullyQualifiedErrorId; message = $_.Exception.Message; code = $null } }
    }
}
[pscustomobject]@{ schema = 'dns/Get-AgentDnsRecord/1'; items = $items } | ConvertTo-Json -Depth 10 -Compress

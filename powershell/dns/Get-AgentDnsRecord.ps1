<#
.SYNOPSIS
Reads the A, AAAA and PTR record sets of named nodes in one zone of one Windows DNS server.
.NOTES
Names are relative to the zone ('@' for the apex), as the DnsServer cmdlets take them. A node or
type with no record is left out of the answer. TTL and aging (timestamp: $null for a static
record) are read so that a later replace keeps them. A zone the server does not hold fails the
whole script (Get-DnsServerZone: WIN32 9601) rather than reading as "no records".
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

$null = DnsServer\Get-DnsServerZone -ComputerName $ComputerName -Name $ZoneName
$items = @()
# Windows PowerShell 5.1 writes a JSON array as one object: ForEach-Object unrolls it.
foreach ($wanted in @(ConvertFrom-Json $NamesJson | ForEach-Object { $_ })) {
    $key = "$($wanted.name)/$($wanted.type)"
    try {
        try {
            $records = @(DnsServer\Get-DnsServerResourceRecord -ComputerName $ComputerName -ZoneName $ZoneName `
                -Name $wanted.name -RRType $wanted.type)
        } catch {
            # WIN32 9714: the node does not exist -- no record set, not an error.
            if ($_.FullyQualifiedErrorId -like 'WIN32 9714*') { $records = @() } else { throw }
        }
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

<#
.SYNOPSIS
Replaces A, AAAA and PTR record sets in one zone of one Windows DNS server, each pinned to the
values the agent expects to find there.
.NOTES
ChangesJson: [{name, type, ttl, expected: [values], new: [values]}], names relative to the zone
('@' for the apex), values canonical (PTR targets fully qualified). Empty 'new' removes the set.
Every set is read first. A change whose new values already hold with its TTL is left alone
(changed = $false). If any set holds other values than 'expected', nothing is changed and each
such item carries code dns_prerequisite_failed with what it holds as 'after'. Otherwise each set
is changed on its own: a replaced value keeps its record (Set-DnsServerResourceRecord, so aging
and its timestamp stay), an added one is aged when the set was, and one refused change leaves the
others going on (its item carries the error, and as 'after' what the set holds now when it can
still be read: a failure midway may have changed part of it).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $ComputerName,
    [Parameter(Mandatory)][string] $ZoneName,
    [Parameter(Mandatory)][string] $ChangesJson
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function Get-RecordValue($Record) {
    switch ($Record.RecordType) {
        'A' { $Record.RecordData.IPv4Address.IPAddressToString }
        'AAAA' { $Record.RecordData.IPv6Address.IPAddressToString }
        'PTR' { $Record.RecordData.PtrDomainName.ToLowerInvariant() }
    }
}

function ConvertTo-ServerForm([string] $Type, [string] $Value) {
    # The agent's canonical text and .NET's differ for some IPv6 forms (::ffff:1.2.3.4): values
    # are compared as the server spells them.
    if ($Type -eq 'PTR') { $Value.ToLowerInvariant() } else { ([ipaddress] $Value).IPAddressToString }
}

function Get-RecordSet($Change) {
    try {
        @(DnsServer\Get-DnsServerResourceRecord -ComputerName $ComputerName -ZoneName $ZoneName `
            -Name $Change.name -RRType $Change.type)
    } catch {
        if ($_.FullyQualifiedErrorId -like 'WIN32 9714*') { @() } else { throw }
    }
}

function Get-SetView($Change, $Records) {
    if ($Records.Count -eq 0) { return $null }
    $stamp = $null
    if ($Records[0].Timestamp) { $stamp = $Records[0].Timestamp.ToUniversalTime().ToString('o') }
    [pscustomobject]@{ name = $Change.name; type = $Change.type; ttl = [int] $Records[0].TimeToLive.TotalSeconds
        timestamp = $stamp; values = @($Records | ForEach-Object { Get-RecordValue $_ }) }
}

function Test-SameValues($Left, $Right) {
    $l = @($Left | Sort-Object -Unique)
    $r = @($Right | Sort-Object -Unique)
    if ($l.Count -ne $r.Count) { return $false }
    for ($i = 0; $i -lt $l.Count; $i++) { if ($l[$i] -ne $r[$i]) { return $false } }
    $true
}

function Set-RecordData($Record, $Type, $Value) {
    switch ($Type) {
        'A' { $Record.RecordData.IPv4Address = [ipaddress] $Value }
        'AAAA' { $Record.RecordData.IPv6Address = [ipaddress] $Value }
        'PTR' { $Record.RecordData.PtrDomainName = $Value }
    }
}

function Add-Record($Change, $Value, [bool] $Aged) {
    $ttl = [timespan]::FromSeconds($Change.ttl)
    switch ($Change.type) {
        'A' { DnsServer\Add-DnsServerResourceRecordA -ComputerName $ComputerName -ZoneName $ZoneName `
                -Name $Change.name -IPv4Address $Value -TimeToLive $ttl -AgeRecord:$Aged -Confirm:$false }
        'AAAA' { DnsServer\Add-DnsServerResourceRecordAAAA -ComputerName $ComputerName -ZoneName $ZoneName `
                -Name $Change.name -IPv6Address $Value -TimeToLive $ttl -AgeRecord:$Aged -Confirm:$false }
        'PTR' { DnsServer\Add-DnsServerResourceRecordPtr -ComputerName $ComputerName -ZoneName $ZoneName `
                -Name $Change.name -PtrDomainName $Value -TimeToLive $ttl -AgeRecord:$Aged -Confirm:$false }
    }
}

function Update-RecordSet($Change, $Records) {
    $new = @($Change.new)
    $keep = @($Records | Where-Object { $new -contains (Get-RecordValue $_) })
    $drop = @($Records | Where-Object { $new -notcontains (Get-RecordValue $_) })
    $held = @($Records | ForEach-Object { Get-RecordValue $_ })
    $add = @($new | Where-Object { $held -notcontains $_ })
    $ttl = [timespan]::FromSeconds($Change.ttl)
    $aged = $Records.Count -gt 0 -and [bool] $Records[0].Timestamp
    foreach ($record in $keep) {
        if ($record.TimeToLive -ne $ttl) {
            $changed = $record.Clone(); $changed.TimeToLive = $ttl
            DnsServer\Set-DnsServerResourceRecord -ComputerName $ComputerName -ZoneName $ZoneName `
                -OldInputObject $record -NewInputObject $changed
        }
    }
    $i = 0
    for (; $i -lt [Math]::Min($drop.Count, $add.Count); $i++) {
        # A replaced value keeps its record: its aging timestamp stays as it was.
        $changed = $drop[$i].Clone(); $changed.TimeToLive = $ttl
        Set-RecordData $changed $Change.type $add[$i]
        DnsServer\Set-DnsServerResourceRecord -ComputerName $ComputerName -ZoneName $ZoneName `
            -OldInputObject $drop[$i] -NewInputObject $changed
    }
    for ($j = $i; $j -lt $drop.Count; $j++) {
        DnsServer\Remove-DnsServerResourceRecord -ComputerName $ComputerName -ZoneName $ZoneName `
            -InputObject $drop[$j] -Force
    }
    for ($j = $i; $j -lt $add.Count; $j++) { Add-Record $Change $add[$j] $aged }
}

function New-AgentItem($Key, [bool] $Changed, $Before, $After, $Err) {
    [pscustomobject]@{ key = $Key; changed = $Changed; before = $Before; after = $After; error = $Err }
}

$null = DnsServer\Get-DnsServerZone -ComputerName $ComputerName -Name $ZoneName
# Windows PowerShell 5.1 writes a JSON array as one object: ForEach-Object unrolls it.
$changes = @(ConvertFrom-Json $ChangesJson | ForEach-Object { $_ })
foreach ($change in $changes) {
    $change.new = @($change.new | ForEach-Object { ConvertTo-ServerForm $change.type $_ })
    $change.expected = @($change.expected | ForEach-Object { ConvertTo-ServerForm $change.type $_ })
}
$found = @{}
$pending = @()
$mismatched = @()
foreach ($change in $changes) {
    $key = "$($change.name)/$($change.type)"
    $records = @(Get-RecordSet $change)
    $found[$key] = $records
    $held = @($records | ForEach-Object { Get-RecordValue $_ })
    $inEffect = if ($records.Count -eq 0) { @($change.new).Count -eq 0 } else {
        # Windows keeps a TTL per record: in effect only when every record has the change's.
        $otherTtl = @($records | Where-Object { [int] $_.TimeToLive.TotalSeconds -ne $change.ttl })
        (Test-SameValues $held @($change.new)) -and $otherTtl.Count -eq 0 }
    if ($inEffect) { continue }
    $pending += $key
    if (-not (Test-SameValues $held @($change.expected))) { $mismatched += $key }
}

$items = @()
foreach ($change in $changes) {
    $key = "$($change.name)/$($change.type)"
    $records = $found[$key]
    $view = Get-SetView $change $records
    if ($pending -notcontains $key) {
        $items += New-AgentItem $key $false $view $view $null
    } elseif ($mismatched.Count -gt 0) {
        $err = $null
        if ($mismatched -contains $key) {
            $err = [pscustomobject]@{ id = 'Agent.dns_prerequisite_failed'; code = 'dns_prerequisite_failed'
                message = "$key holds other values than expected" }
        }
        $items += New-AgentItem $key $false $view $view $err
    } else {
        try {
            Update-RecordSet $change $records
            $items += New-AgentItem $key $true $view (Get-SetView $change @(Get-RecordSet $change)) $null
        } catch {
            $failure = $_
            # What the set holds now (a failure midway may have changed part of it), if readable.
            $now = $null
            try { $now = Get-SetView $change @(Get-RecordSet $change) } catch { $now = $null }
            $items += New-AgentItem $key $false $view $now ([pscustomobject]@{
                id = $failure.FullyQualifiedErrorId; message = $failure.Exception.Message; code = $null })
        }
    }
}
[pscustomobject]@{ schema = 'dns/Set-AgentDnsRecord/1'; items = $items } | ConvertTo-Json -Depth 10 -Compress

<#
.SYNOPSIS
EXAMPLE ONLY: a router script for failover-agent's router kind 'script', driving the IPv4 static
routes of a Cisco IOS device over SSH (Posh-SSH). Adapt it and test it against your device.
.DESCRIPTION
The agent runs this on the router's endpoint (a Windows host that reaches the device), with the
route bound as parameters, and reads the one JSON document it prints last (README, "Routers";
schema: powershell/routes/router-script.schema.json):
  {"schema": "routes/router-script/1", "routes": [{prefix, next_hop, interface, metric}],
   "changed": true|false, "error": null | {"code": "...", "message": "..."}}
- read: the routes the device holds for -Prefix (all static routes when -Prefix is empty).
- add: make the route hold (changed = false when it already did); remove: make it go.
- A prefix routed elsewhere is someone else's route: answer error code route_conflict, change
  nothing. The agent reads again after each add or remove and believes only that read.
IOS has no route metric: the agent's Metric is written as the route's administrative distance.
.NOTES
Needs Posh-SSH on the endpoint (Install-Module Posh-SSH). The device's SSH host key must be
trusted beforehand (connect once by hand): -ErrorOnUntrusted makes an unknown key an error, never
a prompt. The credential stays on the endpoint, in a file only the agent's account can read:
  Get-Credential | Export-Clixml C:\ProgramData\failover-agent\routers\rtr-branch.clixml
Windows PowerShell 5.1 syntax only.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][ValidateSet('read', 'add', 'remove')][string] $Action,
    [string] $Prefix = '',
    [string] $NextHop = '',
    [string] $Interface = '',
    [int] $Metric = 0,
    [string] $Router = '',
    [Parameter(Mandatory)][string] $Device,
    [Parameter(Mandatory)][string] $CredentialFile
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function ConvertTo-Mask([int] $Length) {
    $bits = [uint32] 0
    if ($Length -gt 0) { $bits = [uint32] ([math]::Pow(2, 32) - [math]::Pow(2, 32 - $Length)) }
    $bytes = [BitConverter]::GetBytes($bits)
    [array]::Reverse($bytes)
    return ([System.Net.IPAddress] $bytes).ToString()
}

function ConvertTo-Length([string] $Mask) {
    $bytes = ([System.Net.IPAddress]::Parse($Mask)).GetAddressBytes()
    $length = 0
    foreach ($byte in $bytes) { $length += ([Convert]::ToString($byte, 2) -replace '0', '').Length }
    return $length
}

function Get-StaticRoute($Stream) {
    # 'ip route NET MASK (NEXTHOP | INTERFACE [NEXTHOP]) [DISTANCE]'; other options are left unparsed.
    $lines = Invoke-SSHStreamShellCommand -ShellStream $Stream -Command 'show running-config | include ^ip route '
    foreach ($line in @($lines -split "`r?`n")) {
        $words = @($line.Trim() -split '\s+')
        if ($words.Count -lt 5 -or $words[0] -ne 'ip' -or $words[1] -ne 'route') { continue }
        $hop = $null; $dev = $null; $distance = 1; $rest = @($words[4..($words.Count - 1)])
        $ip = $null
        if ([System.Net.IPAddress]::TryParse($rest[0], [ref] $ip)) { $hop = $rest[0] } else { $dev = $rest[0] }
        if ($dev -and $rest.Count -gt 1 -and [System.Net.IPAddress]::TryParse($rest[1], [ref] $ip)) { $hop = $rest[1] }
        $last = $rest[$rest.Count - 1]
        if ($rest.Count -gt 1 -and $last -match '^\d+$') { $distance = [int] $last }
        [pscustomobject]@{ prefix = "$($words[2])/$(ConvertTo-Length $words[3])"; next_hop = $hop
            interface = $dev; metric = $distance }
    }
}

function Write-Answer($Routes, [bool] $Changed, $Failure) {
    [pscustomobject]@{ schema = 'routes/router-script/1'; routes = @($Routes); changed = $Changed
        error = $Failure } | ConvertTo-Json -Depth 5 -Compress
}

if ($Prefix -and $Prefix.Contains(':')) {
    Write-Answer @() $false ([pscustomobject]@{ code = 'not_supported'; message = "this example drives IPv4 routes only, not $Prefix" })
    return
}
$credential = Import-Clixml -Path $CredentialFile
$session = New-SSHSession -ComputerName $Device -Credential $credential -ErrorOnUntrusted -ConnectionTimeout 30
try {
    $stream = New-SSHShellStream -SessionId $session.SessionId
    $null = Invoke-SSHStreamShellCommand -ShellStream $stream -Command 'terminal length 0'
    $all = @(Get-StaticRoute $stream)
    $mine = @($all | Where-Object { $_.prefix -eq $Prefix })
    if ($Action -eq 'read') {
        if ($Prefix) { Write-Answer $mine $false $null } else { Write-Answer $all $false $null }
        return
    }
    $same = @($mine | Where-Object { "$($_.next_hop)" -eq $NextHop -and (-not $Interface -or "$($_.interface)" -eq $Interface) })
    if ($mine.Count -gt 0 -and $same.Count -eq 0) {
        Write-Answer $mine $false ([pscustomobject]@{ code = 'route_conflict'; message = "$Prefix on $Router is routed elsewhere; left alone" })
        return
    }
    $network, $length = $Prefix -split '/', 2
    $target = (@($Interface, $NextHop) | Where-Object { $_ }) -join ' '
    $command = $null
    if ($Action -eq 'add' -and -not ($same | Where-Object { $_.metric -eq $Metric })) {
        $command = "ip route $network $(ConvertTo-Mask ([int] $length)) $target $Metric"
    } elseif ($Action -eq 'remove' -and $same.Count -gt 0) {
        $command = "no ip route $network $(ConvertTo-Mask ([int] $length)) $target"
    }
    if ($command) {
        foreach ($line in @('configure terminal', $command, 'end', 'write memory')) {
            $null = Invoke-SSHStreamShellCommand -ShellStream $stream -Command $line
        }
    }
    $after = @(Get-StaticRoute $stream | Where-Object { $_.prefix -eq $Prefix })
    Write-Answer $after ([bool] $command) $null
} finally {
    $null = Remove-SSHSession -SessionId $session.SessionId
}

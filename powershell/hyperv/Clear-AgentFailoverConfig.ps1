<#
.SYNOPSIS
Removes the failover TCP/IP configuration of each (VM, NIC) on one Hyper-V host (both families).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $ComputerName,
    [Parameter(Mandatory)][string] $NicsJson
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function ConvertTo-PrefixLength([string] $Mask) {
    $bits = 0
    foreach ($octet in ([System.Net.IPAddress]::Parse($Mask)).GetAddressBytes()) {
        $bits += ([Convert]::ToString($octet, 2).ToCharArray() | Where-Object { $_ -eq '1' }).Count
    }
    $bits
}

function Read-FailoverSetting($Adapter) {
    # Msvm_FailoverNetworkAdapterSettingData instances of this adapter: one per family (4096 = IPv4, 4097 = IPv6).
    $filter = "InstanceID LIKE '%" + ($Adapter.Id -replace '^Microsoft:', '' -replace '\\', '\\') + "%'"
    $data = @(Get-CimInstance -ComputerName $ComputerName -Namespace 'root\virtualization\v2' `
        -ClassName 'Msvm_FailoverNetworkAdapterSettingData' -Filter $filter)
    $settings = @()
    foreach ($d in $data) {
        for ($i = 0; $i -lt @($d.IPAddresses).Count; $i++) {
            $address = @($d.IPAddresses)[$i]
            if (-not $address) { continue }
            $subnet = @($d.Subnets)[$i]
            if ($d.ProtocolIFType -eq 4096) { $prefix = ConvertTo-PrefixLength $subnet } else { $prefix = [int] $subnet }
            $gateway = $null
            if (@($d.DefaultGateways).Count -gt $i -and @($d.DefaultGateways)[$i]) { $gateway = @($d.DefaultGateways)[$i] }
            $settings += [pscustomobject]@{
                address = $address; prefix_length = $prefix; gateway = $gateway
                dns_servers = @(@($d.DNSServers) | Where-Object { $_ })
            }
        }
    }
    if ($settings.Count -eq 0) {
        # No CIM data readable: what the cmdlet shows (one address per family).
        $cfg = $Adapter | Hyper-V\Get-VMNetworkAdapterFailoverConfiguration
        if ($cfg.IPv4Address) {
            $settings += [pscustomobject]@{
                address = $cfg.IPv4Address; prefix_length = (ConvertTo-PrefixLength $cfg.IPv4SubnetMask)
                gateway = $(if ($cfg.IPv4DefaultGateway) { $cfg.IPv4DefaultGateway } else { $null })
                dns_servers = @(@($cfg.IPv4PreferredDNSServer, $cfg.IPv4AlternateDNSServer) | Where-Object { $_ })
            }
        }
        if ($cfg.IPv6Address) {
            $settings += [pscustomobject]@{
                address = $cfg.IPv6Address; prefix_length = [int] $cfg.IPv6SubnetPrefixLength
                gateway = $(if ($cfg.IPv6DefaultGateway) { $cfg.IPv6DefaultGateway } else { $null })
                dns_servers = @(@($cfg.IPv6PreferredDNSServer, $cfg.IPv6AlternateDNSServer) | Where-Object { $_ })
            }
        }
    }
    , $settings
}


function Get-ReplicatedAdapter([string] $VmName, [string] $NicName) {
    # Returns the adapter, or throws an error record whose id the driver maps to an agent code.
    $vm = Hyper-V\Get-VM -ComputerName $ComputerName -Name $VmName -ErrorAction SilentlyContinue
    if (-not $vm) { throw (New-AgentError 'not_found' "no VM $VmName on $ComputerName") }
    $adapter = Hyper-V\Get-VMNetworkAdapter -VM $vm -Name $NicName -ErrorAction SilentlyContinue
    if (-not $adapter) { throw (New-AgentError 'not_found' "VM $VmName has no NIC $NicName") }
    $replication = Hyper-V\Get-VMReplication -VM $vm -ErrorAction SilentlyContinue
    if (-not $replication -or "$($replication.ReplicationState)" -eq 'Disabled') {
        throw (New-AgentError 'replication_not_enabled' "VM $VmName on $ComputerName has no replication")
    }
    $adapter
}

function New-AgentError([string] $Code, [string] $Message) {
    $exception = New-Object System.InvalidOperationException $Message
    $record = New-Object System.Management.Automation.ErrorRecord $exception, "Agent.$Code", 'InvalidOperation', $null
    $record
}

function Get-ItemError($Record) {
    $code = $null
    if ($Record.FullyQualifiedErrorId -like 'Agent.*') { $code = ($Record.FullyQualifiedErrorId -split ',')[0].Substring(6) }
    [pscustomobject]@{ id = $Record.FullyQualifiedErrorId; message = $Record.Exception.Message; code = $code }
}
$items = @()
foreach ($nic in @(ConvertFrom-Json $NicsJson)) {
    $key = "$($nic.vm)/$($nic.nic)"
    try {
        $adapter = Get-ReplicatedAdapter $nic.vm $nic.nic
        $before = @(Read-FailoverSetting $adapter)
        if ($before.Count -eq 0) {
            $items += [pscustomobject]@{ key = $key; changed = $false; before = $null; after = $null; error = $null }
            continue
        }
        $adapter | Hyper-V\Set-VMNetworkAdapterFailoverConfiguration -ClearFailoverIPv4Settings -ClearFailoverIPv6Settings -Confirm:$false
        $items += [pscustomobject]@{ key = $key; changed = $true
            before = [pscustomobject]@{ vm = $nic.vm; nic = $nic.nic; host = $ComputerName; settings = $before }; after = $null; error = $null }
    } catch {
        $items += [pscustomobject]@{ key = $key; changed = $false; before = $null; after = $null; error = (Get-ItemError $_) }
    }
}
[pscustomobject]@{ schema = 'hyperv/Clear-AgentFailoverConfig/1'; items = $items } | ConvertTo-Json -Depth 10 -Compress

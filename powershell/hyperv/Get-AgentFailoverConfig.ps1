<#
.SYNOPSIS
Reads the failover TCP/IP configuration of each (VM, NIC) on one Hyper-V host.
.NOTES
Get-VMNetworkAdapterFailoverConfiguration shows one IPv4 and one IPv6 address per NIC. Where a
NIC holds more, they live in the arrays of Msvm_FailoverNetworkAdapterSettingData
(https://learn.microsoft.com/windows/win32/hyperv_v2/msvm-failovernetworkadaptersettingdata),
read here through CIM. Unknown VMs and NICs are left out of the answer.
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

$items = @()
foreach ($nic in @(ConvertFrom-Json $NicsJson)) {
    $key = "$($nic.vm)/$($nic.nic)"
    $vm = Hyper-V\Get-VM -ComputerName $ComputerName -Name $nic.vm -ErrorAction SilentlyContinue
    if (-not $vm) { continue }
    $adapter = Hyper-V\Get-VMNetworkAdapter -VM $vm -Name $nic.nic -ErrorAction SilentlyContinue
    if (-not $adapter) { continue }
    try {
        $after = [pscustomobject]@{ vm = $nic.vm; nic = $nic.nic; host = $ComputerName; settings = (Read-FailoverSetting $adapter) }
        $items += [pscustomobject]@{ key = $key; changed = $false; before = $null; after = $after; error = $null }
    } catch {
        $items += [pscustomobject]@{ key = $key; changed = $false; before = $null; after = $null
            error = [pscustomobject]@{ id = $_.FullyQualifiedErrorId; message = $_.Exception.Message; code = $null } }
    }
}
[pscustomobject]@{ schema = 'hyperv/Get-AgentFailoverConfig/1'; items = $items } | ConvertTo-Json -Depth 10 -Compress

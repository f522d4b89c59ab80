<#
.SYNOPSIS
Replaces the failover TCP/IP configuration of each (VM, NIC) on one Hyper-V host, where it drifted.
.NOTES
One address per family goes through Set-VMNetworkAdapterFailoverConfiguration; several through
CIM, Msvm_ReplicationService.SetFailoverNetworkAdapterSettings
(https://learn.microsoft.com/windows/win32/hyperv_v2/setfailovernetworkadaptersettings-msvm-replicationservice).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $ComputerName,
    [Parameter(Mandatory)][string] $ConfigsJson
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
function ConvertTo-SubnetMask([int] $Length) {
    $bits = ('1' * $Length).PadRight(32, '0')
    (0..3 | ForEach-Object { [Convert]::ToInt32($bits.Substring($_ * 8, 8), 2) }) -join '.'
}

function Test-SameSetting($Have, $Want) {
    $a = @($Have | ForEach-Object { "$($_.address)/$($_.prefix_length)/$($_.gateway)/$(@($_.dns_servers) -join ',')" })
    $b = @($Want | ForEach-Object { "$($_.address)/$($_.prefix_length)/$($_.gateway)/$(@($_.dns_servers) -join ',')" })
    ($a -join ';') -eq ($b -join ';')
}

function Test-WantedSetting($Key, $Settings) {
    if (@($Settings).Count -eq 0) { throw (New-AgentError 'invalid_setting' "${Key}: no settings given (clear them instead)") }
    $seen = @{}
    foreach ($s in $Settings) {
        $ip = $null
        if (-not [System.Net.IPAddress]::TryParse([string] $s.address, [ref] $ip)) {
            throw (New-AgentError 'invalid_setting' "${Key}: $($s.address) is not an IP address")
        }
        $max = $(if ($ip.AddressFamily -eq 'InterNetwork') { 32 } else { 128 })
        if ([int] $s.prefix_length -lt 0 -or [int] $s.prefix_length -gt $max) {
            throw (New-AgentError 'invalid_setting' "${Key}: prefix length $($s.prefix_length) is out of range for $($s.address)")
        }
        if ($seen.ContainsKey([string] $s.address)) { throw (New-AgentError 'invalid_setting' "${Key}: $($s.address) is given twice") }
        $seen[[string] $s.address] = $true
    }
}

function Set-ByCmdlet($Adapter, $Settings) {
    # One address per family: the cmdlet's own path. Both families are cleared first so that a
    # gateway or DNS server no longer wanted does not stay behind; each value is then set by its
    # own parameter (the cmdlet changes only the settings it is given).
    $Adapter | Hyper-V\Set-VMNetworkAdapterFailoverConfiguration -ClearFailoverIPv4Settings -ClearFailoverIPv6Settings -Confirm:$false
    foreach ($s in $Settings) {
        $dns = @($s.dns_servers)
        if (([System.Net.IPAddress]::Parse($s.address)).AddressFamily -eq 'InterNetwork') {
            $mask = ConvertTo-SubnetMask ([int] $s.prefix_length)
            $Adapter | Hyper-V\Set-VMNetworkAdapterFailoverConfiguration -IPv4Address ([string] $s.address) -IPv4SubnetMask $mask -Confirm:$false
            if ($s.gateway) { $Adapter | Hyper-V\Set-VMNetworkAdapterFailoverConfiguration -IPv4DefaultGateway ([string] $s.gateway) -Confirm:$false }
            if ($dns.Count -gt 0) { $Adapter | Hyper-V\Set-VMNetworkAdapterFailoverConfiguration -IPv4PreferredDNSServer ([string] $dns[0]) -Confirm:$false }
            if ($dns.Count -gt 1) { $Adapter | Hyper-V\Set-VMNetworkAdapterFailoverConfiguration -IPv4AlternateDNSServer ([string] $dns[1]) -Confirm:$false }
        } else {
            $Adapter | Hyper-V\Set-VMNetworkAdapterFailoverConfiguration -IPv6Address ([string] $s.address) -IPv6SubnetPrefixLength ([int] $s.prefix_length) -Confirm:$false
            if ($s.gateway) { $Adapter | Hyper-V\Set-VMNetworkAdapterFailoverConfiguration -IPv6DefaultGateway ([string] $s.gateway) -Confirm:$false }
            if ($dns.Count -gt 0) { $Adapter | Hyper-V\Set-VMNetworkAdapterFailoverConfiguration -IPv6PreferredDNSServer ([string] $dns[0]) -Confirm:$false }
            if ($dns.Count -gt 1) { $Adapter | Hyper-V\Set-VMNetworkAdapterFailoverConfiguration -IPv6AlternateDNSServer ([string] $dns[1]) -Confirm:$false }
        }
    }
}

function Set-ByCim($Adapter, $Settings) {
    # Several addresses of one family: Msvm_ReplicationService.SetFailoverNetworkAdapterSettings
    # takes the VM and the adapter's Msvm_FailoverNetworkAdapterSettingData instances (one per
    # family, embedded as text) whose IPAddresses/Subnets/DefaultGateways/DNSServers are arrays.
    # https://learn.microsoft.com/windows/win32/hyperv_v2/setfailovernetworkadaptersettings-msvm-replicationservice
    # https://learn.microsoft.com/windows/win32/hyperv_v2/msvm-failovernetworkadaptersettingdata
    # The instances are the adapter's own, read and changed here, so their InstanceIDs stay Hyper-V's.
    $ns = 'root\virtualization\v2'
    $system = Get-CimInstance -ComputerName $ComputerName -Namespace $ns -ClassName 'Msvm_ComputerSystem' `
        -Filter "Name = '$($Adapter.VMId)'"
    $service = Get-CimInstance -ComputerName $ComputerName -Namespace $ns -ClassName 'Msvm_ReplicationService'
    $filter = "InstanceID LIKE '%" + ($Adapter.Id -replace '^Microsoft:', '' -replace '\\', '\\') + "%'"
    $existing = @(Get-CimInstance -ComputerName $ComputerName -Namespace $ns `
        -ClassName 'Msvm_FailoverNetworkAdapterSettingData' -Filter $filter)
    $serializer = [Microsoft.Management.Infrastructure.Serialization.CimSerializer]::Create()
    $embedded = @()
    foreach ($family in 4096, 4097) {
        $data = @($existing | Where-Object { $_.ProtocolIFType -eq $family }) | Select-Object -First 1
        if (-not $data) {
            throw (New-AgentError 'invalid_setting' "adapter $($Adapter.Name) of $($Adapter.VMName) has no failover settings of protocol type $family to change")
        }
        $these = @($Settings | Where-Object {
            (([System.Net.IPAddress]::Parse($_.address)).AddressFamily -eq 'InterNetwork') -eq ($family -eq 4096) })
        $data.DHCPEnabled = $false
        $data.IPAddresses = [string[]] @($these | ForEach-Object { [string] $_.address })
        $data.Subnets = [string[]] @($these | ForEach-Object {
            if ($family -eq 4096) { ConvertTo-SubnetMask ([int] $_.prefix_length) } else { [string] $_.prefix_length } })
        $data.DefaultGateways = [string[]] @($these | Where-Object { $_.gateway } | ForEach-Object { [string] $_.gateway })
        $data.DNSServers = [string[]] @($these | ForEach-Object { @($_.dns_servers) })
        $bytes = $serializer.Serialize($data, [Microsoft.Management.Infrastructure.Serialization.InstanceSerializationOptions]::None)
        $embedded += [System.Text.Encoding]::Unicode.GetString($bytes)
    }
    $result = Invoke-CimMethod -InputObject $service -MethodName 'SetFailoverNetworkAdapterSettings' `
        -Arguments @{ ComputerSystem = [ref] $system; NetworkSettings = [string[]] $embedded }
    # 0 = done, 4096 = job started; anything else is the method's failure code.
    if ($result.ReturnValue -ne 0 -and $result.ReturnValue -ne 4096) {
        throw (New-AgentError 'invalid_setting' "SetFailoverNetworkAdapterSettings returned $($result.ReturnValue)")
    }
}

$items = @()
foreach ($cfg in @(ConvertFrom-Json $ConfigsJson)) {
    $key = "$($cfg.vm)/$($cfg.nic)"
    try {
        if ($cfg.host -ne $ComputerName) { throw (New-AgentError 'invalid_setting' "${key}: config names host $($cfg.host), call went to $ComputerName") }
        $adapter = Get-ReplicatedAdapter $cfg.vm $cfg.nic
        $wanted = @($cfg.settings)
        Test-WantedSetting $key $wanted
        $before = [pscustomobject]@{ vm = $cfg.vm; nic = $cfg.nic; host = $ComputerName; settings = (Read-FailoverSetting $adapter) }
        if (Test-SameSetting $before.settings $wanted) {
            $items += [pscustomobject]@{ key = $key; changed = $false; before = $before; after = $before; error = $null }
            continue
        }
        # The cmdlet carries one address and two DNS servers per family; more need CIM.
        $perFamily = @($wanted | Group-Object { ([System.Net.IPAddress]::Parse($_.address)).AddressFamily } | Where-Object { $_.Count -gt 1 })
        $manyDns = @($wanted | Where-Object { @($_.dns_servers).Count -gt 2 })
        if ($perFamily.Count -gt 0 -or $manyDns.Count -gt 0) { Set-ByCim $adapter $wanted } else { Set-ByCmdlet $adapter $wanted }
        $after = [pscustomobject]@{ vm = $cfg.vm; nic = $cfg.nic; host = $ComputerName; settings = (Read-FailoverSetting $adapter) }
        $items += [pscustomobject]@{ key = $key; changed = $true; before = $before; after = $after; error = $null }
    } catch {
        $items += [pscustomobject]@{ key = $key; changed = $false; before = $null; after = $null; error = (Get-ItemError $_) }
    }
}
[pscustomobject]@{ schema = 'hyperv/Set-AgentFailoverConfig/1'; items = $items } | ConvertTo-Json -Depth 10 -Compress

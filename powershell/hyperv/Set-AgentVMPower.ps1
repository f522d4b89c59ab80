<#
.SYNOPSIS
Starts or shuts down each VM (test VMs included) on one host, where it is not in that state yet.
.NOTES
stop is a guest shutdown (Stop-VM -Force: no prompt, unsaved guest data gets its grace time),
not a turn-off. A replica starts only after failover. The answer carries what Hyper-V knows
of the VM; its NICs as VMM sees them come from VMM's inventory, not from here.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $ComputerName,
    [Parameter(Mandatory)][ValidateSet('start', 'stop')][string] $Action,
    [Parameter(Mandatory)][string[]] $VmName
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function New-AgentError([string] $Code, [string] $Message) {
    $exception = New-Object System.InvalidOperationException $Message
    New-Object System.Management.Automation.ErrorRecord $exception, "Agent.$Code", 'InvalidOperation', $null
}

function ConvertTo-Value($Vm) {
    $role = 'primary'
    if ("$($Vm.ReplicationMode)" -eq 'Replica') { $role = 'replica' }
    elseif ("$($Vm.ReplicationMode)" -eq 'TestReplica') { $role = 'test' }
    [pscustomobject]@{ name = $Vm.Name; host = $ComputerName; role = $role; power_state = "$($Vm.State)" }
}

$items = @()
foreach ($name in $VmName) {
    try {
        $vm = Hyper-V\Get-VM -ComputerName $ComputerName -Name $name -ErrorAction SilentlyContinue
        if (-not $vm) { throw (New-AgentError 'not_found' "no VM $name on $ComputerName") }
        $before = ConvertTo-Value $vm
        $target = $(if ($Action -eq 'start') { 'Running' } else { 'Off' })
        if ("$($vm.State)" -eq $target) {
            $items += [pscustomobject]@{ key = $name; changed = $false; before = $before; after = $before; error = $null }
            continue
        }
        if ($Action -eq 'start') {
            if ("$($vm.ReplicationMode)" -eq 'Replica' -and
                @('FailedOverWaitingCompletion', 'FailedOver') -notcontains "$($vm.ReplicationState)") {
                throw (New-AgentError 'invalid_replication_state' "replica VM $name cannot start while replication is $($vm.ReplicationState); fail over first")
            }
            Hyper-V\Start-VM -ComputerName $ComputerName -Name $name -Confirm:$false
        } else {
            Hyper-V\Stop-VM -ComputerName $ComputerName -Name $name -Force -Confirm:$false
        }
        $after = ConvertTo-Value (Hyper-V\Get-VM -ComputerName $ComputerName -Name $name)
        $items += [pscustomobject]@{ key = $name; changed = $true; before = $before; after = $after; error = $null }
    } catch {
        $code = $null
        if ($_.FullyQualifiedErrorId -like 'Agent.*') { $code = ($_.FullyQualifiedErrorId -split ',')[0].Substring(6) }
        $items += [pscustomobject]@{ key = $name; changed = $false; before = $null; after = $null
            error = [pscustomobject]@{ id = $_.FullyQualifiedErrorId; message = $_.Exception.Message; code = $code } }
    }
}
[pscustomobject]@{ schema = 'hyperv/Set-AgentVMPower/1'; items = $items } | ConvertTo-Json -Depth 10 -Compress

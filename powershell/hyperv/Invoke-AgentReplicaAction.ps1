<#
.SYNOPSIS
Moves each VM's Hyper-V Replica state machine one step on one host, where it is not there yet.
.NOTES
prepare: Start-VMFailover -Prepare (primary, VM off); failover: Start-VMFailover (replica);
start_test: Start-VMFailover -AsTest (replica); stop_test: Stop-VMFailover on the relationship's
TestVirtualMachine; cancel: Stop-VMFailover; complete: Complete-VMFailover; reverse:
Set-VMReplication -Reverse (replica, old primary off).
PointsJson names, per VM, the recovery point a failover or start_test comes up from: recovery
points are replica snapshots (Start-VMFailover, example 1: "Get-VMSnapshot VM01 -Name Snapshot01 |
Start-VMFailover"; https://learn.microsoft.com/powershell/module/hyper-v/start-vmfailover), passed
as -VMRecoverySnapshot. A VM not named there fails over to its latest state, Hyper-V's default.
Changing the point of a pending failover is a cancel (Stop-VMFailover) then another failover
("you can cancel the failover ... Then you can choose a different point-in-time and do a
Failover", Types of failover operations in Hyper-V Replica, Part III, Virtualization blog).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $ComputerName,
    [Parameter(Mandatory)]
    [ValidateSet('prepare', 'failover', 'start_test', 'stop_test', 'cancel', 'complete', 'reverse')]
    [string] $Action,
    [Parameter(Mandatory)][string[]] $VmName,
    [string] $PointsJson = '{}'
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function New-AgentError([string] $Code, [string] $Message) {
    $exception = New-Object System.InvalidOperationException $Message
    New-Object System.Management.Automation.ErrorRecord $exception, "Agent.$Code", 'InvalidOperation', $null
}

function Get-ItemError($Record) {
    $code = $null
    if ($Record.FullyQualifiedErrorId -like 'Agent.*') { $code = ($Record.FullyQualifiedErrorId -split ',')[0].Substring(6) }
    [pscustomobject]@{ id = $Record.FullyQualifiedErrorId; message = $Record.Exception.Message; code = $code }
}

function Read-Replication([string] $Name) {
    $rep = Hyper-V\Get-VMReplication -ComputerName $ComputerName -VMName $Name -ErrorAction SilentlyContinue
    if (-not $rep) {
        $vm = Hyper-V\Get-VM -ComputerName $ComputerName -Name $Name -ErrorAction SilentlyContinue
        if (-not $vm) { throw (New-AgentError 'not_found' "no VM $Name on $ComputerName") }
        throw (New-AgentError 'replication_not_enabled' "VM $Name on $ComputerName has no replication")
    }
    $rep
}

function ConvertTo-Value($Rep, [string] $Point) {
    $test = $null
    if ($Rep.TestVirtualMachine) { $test = $Rep.TestVirtualMachine.Name }
    $used = $null
    if ($Point) { $used = $Point }
    [pscustomobject]@{ vm = $Rep.VMName; primary_host = $Rep.PrimaryServerName; replica_host = $Rep.ReplicaServerName
        state = "$($Rep.ReplicationState)"; mode = "$($Rep.ReplicationMode)"; test_vm = $test; recovery_point = $used }
}

# Hashtables compare keys case-insensitively, as Hyper-V compares VM names.
$points = @{}
foreach ($entry in (ConvertFrom-Json $PointsJson).PSObject.Properties) { $points[$entry.Name] = [string] $entry.Value }

function Get-RecoverySnapshot([string] $Name, [string] $Point) {
    # The replica's recovery points: SnapshotType Replica, or AppConsistentReplica for the
    # application-consistent ones (names compared with -eq: case-insensitively).
    $found = @(Hyper-V\Get-VMSnapshot -ComputerName $ComputerName -VMName $Name -ErrorAction SilentlyContinue |
        Where-Object { ("$($_.SnapshotType)" -eq 'Replica' -or "$($_.SnapshotType)" -eq 'AppConsistentReplica') -and $_.Name -eq $Point })
    if ($found.Count -eq 0) { throw (New-AgentError 'not_found' "VM $Name has no recovery point '$Point' on $ComputerName") }
    $found[$found.Count - 1]
}

function Assert-Role($Rep, [string] $Mode, [string] $What) {
    if ("$($Rep.ReplicationMode)" -ne $Mode) {
        $expected = $(if ($Mode -eq 'Primary') { $Rep.PrimaryServerName } else { $Rep.ReplicaServerName })
        throw (New-AgentError 'invalid_replication_state' "$What of $($Rep.VMName) runs on the $($Mode.ToLower()) host $expected, not on $ComputerName")
    }
}

function Stop-Refused($Rep, [string] $What, [string] $Why) {
    throw (New-AgentError 'invalid_replication_state' "cannot $What $($Rep.VMName): replication is $($Rep.ReplicationState) ($Why)")
}

$items = @()
foreach ($name in $VmName) {
    try {
        $rep = Read-Replication $name
        $before = ConvertTo-Value $rep
        $state = "$($rep.ReplicationState)"
        $point = $null
        if (($Action -eq 'failover' -or $Action -eq 'start_test') -and $points.ContainsKey($name)) { $point = $points[$name] }
        $act = $true
        switch ($Action) {
            'prepare' {
                Assert-Role $rep 'Primary' 'prepare'
                if ($state -eq 'PreparedForFailover') { $act = $false; break }
                if ($state -ne 'Replicating') { Stop-Refused $rep 'prepare' 'prepare starts from Replicating' }
                $vm = Hyper-V\Get-VM -ComputerName $ComputerName -Name $name
                if ("$($vm.State)" -ne 'Off') { throw (New-AgentError 'vm_running' "prepare of $name needs the primary VM shut down; it is $($vm.State) on $ComputerName") }
                Hyper-V\Start-VMFailover -ComputerName $ComputerName -VMName $name -Prepare -Confirm:$false
            }
            'failover' {
                Assert-Role $rep 'Replica' 'failover'
                if ($state -eq 'FailedOverWaitingCompletion') { $act = $false; break }
                if ($state -ne 'PreparedForFailover' -and $state -ne 'Replicating') { Stop-Refused $rep 'failover' 'already failed over and completed' }
                if ($rep.TestVirtualMachine) { throw (New-AgentError 'test_failover_running' "test failover of $name is running ($($rep.TestVirtualMachine.Name)); stop it before failing over") }
                if ($point) {
                    $snapshot = Get-RecoverySnapshot $name $point
                    Hyper-V\Start-VMFailover -VMRecoverySnapshot $snapshot -Confirm:$false
                } else {
                    Hyper-V\Start-VMFailover -ComputerName $ComputerName -VMName $name -Confirm:$false
                }
            }
            'start_test' {
                Assert-Role $rep 'Replica' 'start_test'
                if ($rep.TestVirtualMachine) { throw (New-AgentError 'test_failover_running' "a test failover of $name is already running ($($rep.TestVirtualMachine.Name))") }
                if ($state -ne 'Replicating') { Stop-Refused $rep 'start a test failover of' 'test failover needs Replicating' }
                if ($point) {
                    $snapshot = Get-RecoverySnapshot $name $point
                    Hyper-V\Start-VMFailover -VMRecoverySnapshot $snapshot -AsTest -Confirm:$false
                } else {
                    Hyper-V\Start-VMFailover -ComputerName $ComputerName -VMName $name -AsTest -Confirm:$false
                }
            }
            'stop_test' {
                Assert-Role $rep 'Replica' 'stop_test'
                if (-not $rep.TestVirtualMachine) { $act = $false; break }
                Hyper-V\Stop-VMFailover -VM $rep.TestVirtualMachine -Confirm:$false
            }
            'cancel' {
                if ($state -eq 'Replicating') { $act = $false; break }
                if ($state -eq 'PreparedForFailover') { Assert-Role $rep 'Primary' 'cancel' }
                elseif ($state -eq 'FailedOverWaitingCompletion') { Assert-Role $rep 'Replica' 'cancel' }
                else { Stop-Refused $rep 'cancel' 'the failover is completed' }
                # Stop-VMFailover turns a started replica off: no prompt to answer.
                Hyper-V\Stop-VMFailover -ComputerName $ComputerName -VMName $name -Confirm:$false
            }
            'complete' {
                Assert-Role $rep 'Replica' 'complete'
                if ($state -eq 'FailedOver') { $act = $false; break }
                if ($state -ne 'FailedOverWaitingCompletion') { Stop-Refused $rep 'complete' 'complete follows failover' }
                Hyper-V\Complete-VMFailover -ComputerName $ComputerName -VMName $name -Confirm:$false
            }
            'reverse' {
                if ($state -eq 'Replicating' -and "$($rep.ReplicationMode)" -eq 'Primary') { $act = $false; break }
                Assert-Role $rep 'Replica' 'reverse'
                if ($state -ne 'FailedOver') { Stop-Refused $rep 'reverse' 'reverse follows complete' }
                $old = Hyper-V\Get-VM -ComputerName $rep.PrimaryServerName -Name $name
                if ("$($old.State)" -ne 'Off') { throw (New-AgentError 'vm_running' "reverse of ${name}: the old primary on $($rep.PrimaryServerName) is $($old.State); shut it down before it becomes the replica") }
                Hyper-V\Set-VMReplication -ComputerName $ComputerName -VMName $name -Reverse -Confirm:$false
            }
        }
        $after = $before
        if ($act) { $after = ConvertTo-Value (Read-Replication $name) $point }
        $items += [pscustomobject]@{ key = $name; changed = $act; before = $before; after = $after; error = $null }
    } catch {
        $items += [pscustomobject]@{ key = $name; changed = $false; before = $null; after = $null; error = (Get-ItemError $_) }
    }
}
[pscustomobject]@{ schema = 'hyperv/Invoke-AgentReplicaAction/1'; items = $items } | ConvertTo-Json -Depth 10 -Compress

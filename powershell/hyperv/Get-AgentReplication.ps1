<#
.SYNOPSIS
Reads the Hyper-V Replica relationship of each VM on one host (VMs without one are left out).
.NOTES
The test VM is the relationship's TestVirtualMachine, never guessed from its name. The replica
host also lists the recovery points, oldest first: its replica snapshots (Get-VMSnapshot,
SnapshotType Replica, or AppConsistentReplica for application-consistent ones), which
Start-VMFailover -VMRecoverySnapshot takes. The primary host has none to list.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $ComputerName,
    [Parameter(Mandatory)][string[]] $VmName
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$items = @()
foreach ($name in $VmName) {
    $vm = Hyper-V\Get-VM -ComputerName $ComputerName -Name $name -ErrorAction SilentlyContinue
    if (-not $vm) { continue }
    $rep = Hyper-V\Get-VMReplication -VM $vm -ErrorAction SilentlyContinue
    if (-not $rep -or "$($rep.ReplicationState)" -eq 'Disabled') { continue }
    $test = $null
    if ($rep.TestVirtualMachine) { $test = $rep.TestVirtualMachine.Name }
    $points = @()
    if ("$($rep.ReplicationMode)" -eq 'Replica') {
        $points = @(Hyper-V\Get-VMSnapshot -VM $vm -ErrorAction SilentlyContinue |
            Where-Object { "$($_.SnapshotType)" -eq 'Replica' -or "$($_.SnapshotType)" -eq 'AppConsistentReplica' } |
            Sort-Object CreationTime |
            ForEach-Object { [pscustomobject]@{ name = $_.Name; created = $_.CreationTime.ToUniversalTime().ToString('o')
                    app_consistent = ("$($_.SnapshotType)" -eq 'AppConsistentReplica') } })
    }
    $after = [pscustomobject]@{
        vm = $name; primary_host = $rep.PrimaryServerName; replica_host = $rep.ReplicaServerName
        state = "$($rep.ReplicationState)"; mode = "$($rep.ReplicationMode)"; test_vm = $test
        recovery_points = $points
    }
    $items += [pscustomobject]@{ key = $name; changed = $false; before = $null; after = $after; error = $null }
}
[pscustomobject]@{ schema = 'hyperv/Get-AgentReplication/1'; items = $items } | ConvertTo-Json -Depth 10 -Compress

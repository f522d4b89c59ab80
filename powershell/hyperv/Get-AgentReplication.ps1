<#
.SYNOPSIS
Reads the Hyper-V Replica relationship of each VM on one host (VMs without one are left out).
.NOTES
The test VM is the relationship's TestVirtualMachine, never guessed from its name.
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
    $after = [pscustomobject]@{
        vm = $name; primary_host = $rep.PrimaryServerName; replica_host = $rep.ReplicaServerName
        state = "$($rep.ReplicationState)"; mode = "$($rep.ReplicationMode)"; test_vm = $test
    }
    $items += [pscustomobject]@{ key = $name; changed = $false; before = $null; after = $after; error = $null }
}
[pscustomobject]@{ schema = 'hyperv/Get-AgentReplication/1'; items = $items } | ConvertTo-Json -Depth 10 -Compress

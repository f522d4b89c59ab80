<#
.SYNOPSIS
Runs one operator's recovery-plan script on this host with its parameters bound, and reports
what it printed.
.NOTES
The operator's script arrives as data: its text in $ScriptText (read by the agent), or, when the
agent has no copy, its path on this host in $ScriptPath. Its parameters arrive as one JSON
object in $ParametersJson and are splatted by name, so no value is ever part of any script text.
Everything it writes (output, warnings, verbose, information) is kept as text; error records it
wrote and went on are kept in errors; a terminating error ends it and becomes the item's error,
with the output written before it kept.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $Key,
    [string] $ScriptText = '',
    [string] $ScriptPath = '',
    [string] $ParametersJson = '{}'
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$bound = @{}
$decoded = ConvertFrom-Json -InputObject $ParametersJson
if ($null -ne $decoded) {
    foreach ($property in $decoded.PSObject.Properties) { $bound[$property.Name] = $property.Value }
}
$target = $ScriptPath
if (-not $ScriptPath) { $target = [scriptblock]::Create($ScriptText) }

$output = New-Object System.Collections.Generic.List[string]
$errors = New-Object System.Collections.Generic.List[object]
$failure = $null
try {
    # The operator's script gets PowerShell's default strict mode, not this wrapper's.
    & { Set-StrictMode -Off; & $target @bound } *>&1 | ForEach-Object {
        if ($_ -is [System.Management.Automation.ErrorRecord]) {
            $errors.Add([pscustomobject]@{ id = "$($_.FullyQualifiedErrorId)"; message = "$($_.Exception.Message)" })
        } else {
            $output.Add(($_ | Out-String).TrimEnd("`r", "`n"))
        }
    }
} catch {
    $failure = [pscustomobject]@{ id = "$($_.FullyQualifiedErrorId)"; message = "$($_.Exception.Message)"; code = 'script_failed' }
}
$text = ''
if ($output.Count -gt 0) { $text = ($output -join "`n") + "`n" }
$after = [pscustomobject]@{ output = $text; errors = $errors.ToArray() }
$item = [pscustomobject]@{ key = $Key; changed = $true; before = $null; after = $after; error = $failure }
[pscustomobject]@{ schema = 'scripts/Invoke-AgentPlanScript/1'; items = @($item) } | ConvertTo-Json -Depth 10 -Compress

<#
.SYNOPSIS
failover-agent's HTTP API (v1) for recovery-plan scripts: start an operation, read it, wait for
it within a script's time limit, resume it.

.DESCRIPTION
-Uri defaults to $env:FA_URI, else http://127.0.0.1:8740 (the agent's default api.host and
api.port); -Token to $env:FA_TOKEN (a token of scope operate to start and resume, read to look).

The rules recovery-plan scripts live under hold here: nothing is written to the host or to the
error stream unless a call failed (then it throws, with the API's problem title, detail and
code); no call blocks past 600 s: Wait-FAOperation gives up by -TimeoutSec (at most 590) and
hands back the operation, whose id a later script passes to Get-, Wait- or Resume-FAOperation.
#>
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$script:DefaultUri = 'http://127.0.0.1:8740'
$script:EndStatuses = @('succeeded', 'partially_succeeded', 'cancelled', 'failed', 'waiting_for_manual_action')
$script:FinalStatuses = @('succeeded', 'partially_succeeded', 'cancelled')

function Get-FAProblemText {
    # The API's errors are application/problem+json; anything else is shown as it came.
    param($ErrorRecord)
    $text = $ErrorRecord.Exception.Message
    if ($null -eq $ErrorRecord.ErrorDetails -or -not $ErrorRecord.ErrorDetails.Message) { return $text }
    try {
        $problem = ConvertFrom-Json -InputObject $ErrorRecord.ErrorDetails.Message
    } catch {
        return $ErrorRecord.ErrorDetails.Message
    }
    $parts = foreach ($name in @('title', 'detail', 'code')) {
        $property = $problem.PSObject.Properties[$name]
        if ($null -ne $property -and $property.Value) { '{0}: {1}' -f $name, $property.Value }
    }
    return ($parts -join '; ')
}

function Test-FARetryable {
    # No answer at all, or a server error: the same request (with the same Idempotency-Key) is safe again.
    param($ErrorRecord)
    $response = $null
    if ($ErrorRecord.Exception -is [System.Net.WebException]) { $response = $ErrorRecord.Exception.Response }
    if ($null -eq $response) { return $true }
    return ([int] $response.StatusCode) -ge 500
}

function Invoke-FARequest {
    param(
        [string] $Method,
        [string] $Path,
        [string] $Uri,
        [string] $Token,
        $Body = $null,
        [hashtable] $Headers = @{},
        [int] $TimeoutSec = 30,
        [int] $Attempts = 1
    )
    if (-not $Uri) { $Uri = $env:FA_URI }
    if (-not $Uri) { $Uri = $script:DefaultUri }
    if (-not $Token) { $Token = $env:FA_TOKEN }
    if (-not $Token) { throw 'failover-agent: no API token: pass -Token or set $env:FA_TOKEN' }
    $sent = @{ Authorization = "Bearer $Token" }
    foreach ($name in $Headers.Keys) { $sent[$name] = $Headers[$name] }
    $request = @{
        Uri             = $Uri.TrimEnd('/') + $Path
        Method          = $Method
        Headers         = $sent
        TimeoutSec      = [Math]::Max(1, $TimeoutSec)
        UseBasicParsing = $true
    }
    if ($null -ne $Body) {
        # Bytes, not a string: Windows PowerShell would send a string body as ISO-8859-1.
        $json = ConvertTo-Json -InputObject $Body -Depth 20 -Compress
        $request.Body = [System.Text.Encoding]::UTF8.GetBytes($json)
        $request.ContentType = 'application/json; charset=utf-8'
    }
    for ($attempt = 1; ; $attempt++) {
        try {
            return Invoke-RestMethod @request
        } catch {
            $failure = $_
            $retryable = Test-FARetryable $failure
            if ($attempt -ge $Attempts -or -not $retryable) {
                $message = 'failover-agent {0} {1} failed: {2}' -f $Method, $Path, (Get-FAProblemText $failure)
                $exception = New-Object -TypeName System.InvalidOperationException -ArgumentList @($message, $failure.Exception)
                $exception.Data['retryable'] = $retryable
                throw $exception
            }
            Write-Verbose ('failover-agent {0} {1}: attempt {2} failed, trying again' -f $Method, $Path, $attempt)
            Start-Sleep -Seconds 2
        }
    }
}

function Get-FAOperationPath {
    param([string] $Id, [string] $Suffix = '')
    if (-not $Id) { throw 'failover-agent: an operation id is required' }
    return '/v1/operations/' + [uri]::EscapeDataString($Id) + $Suffix
}

function Start-FAOperation {
    <#
    .SYNOPSIS
    Starts an operation on a recovery plan (POST /v1/operations) and returns it at once (202).
    The Idempotency-Key (a new GUID unless given) is sent with every retry of the request, so a
    lost answer never starts it twice; pass your own to make a re-run of the script safe too.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)]
        [ValidateSet('test_failover', 'cleanup_test', 'planned_failover', 'unplanned_failover', 'commit', 'reverse',
            'failback', 'prepare', 'change_recovery_point')]
        [string] $Kind,
        [Parameter(Mandatory = $true)][string] $Plan,
        [hashtable] $Options = @{},
        [string] $PlanChecksum,
        [string] $IdempotencyKey = ([guid]::NewGuid().ToString()),
        [string] $Uri,
        [string] $Token
    )
    $body = @{ kind = $Kind; plan = $Plan; options = $Options }
    if ($PlanChecksum) { $body.plan_checksum = $PlanChecksum }
    Invoke-FARequest -Method 'Post' -Path '/v1/operations' -Uri $Uri -Token $Token -Body $body `
        -Headers @{ 'Idempotency-Key' = $IdempotencyKey } -Attempts 3
}

function Get-FAOperation {
    <#
    .SYNOPSIS
    Reads an operation (GET /v1/operations/{id}): status, percent, waiting_for, errors, steps.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string] $Id,
        [string] $Uri,
        [string] $Token
    )
    Invoke-FARequest -Method 'Get' -Path (Get-FAOperationPath $Id) -Uri $Uri -Token $Token -Attempts 3
}

function Wait-FAOperation {
    <#
    .SYNOPSIS
    Waits until the operation ends (succeeded, partially_succeeded, cancelled), fails or waits for
    a manual action, or until -TimeoutSec (default 540, at most 590: a script must finish inside
    600 s). Returns the operation either way, with timed_out = $true when it gave up: its id
    lets a later script wait again or resume it.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string] $Id,
        [ValidateRange(1, 590)][int] $TimeoutSec = 540,
        [ValidateRange(1, 60)][int] $PollSec = 5,
        [string] $Uri,
        [string] $Token
    )
    $clock = [System.Diagnostics.Stopwatch]::StartNew()
    $path = Get-FAOperationPath $Id
    while ($true) {
        $left = $TimeoutSec - [int] $clock.Elapsed.TotalSeconds
        try {
            $op = Invoke-FARequest -Method 'Get' -Path $path -Uri $Uri -Token $Token -TimeoutSec ([Math]::Min(30, $left))
        } catch {
            # A poll the agent did not answer (a restart, a standby taking over) is tried again
            # while there is time; a refusal (401, 403, 404) is not.
            $left = $TimeoutSec - [int] $clock.Elapsed.TotalSeconds
            if (-not $_.Exception.Data['retryable'] -or $left -le $PollSec) { throw }
            Write-Verbose $_.Exception.Message
            Start-Sleep -Seconds $PollSec
            continue
        }
        $ended = $script:EndStatuses -contains $op.status
        $left = $TimeoutSec - [int] $clock.Elapsed.TotalSeconds
        if ($ended -or $left -le 0) {
            Add-Member -InputObject $op -NotePropertyName 'timed_out' -NotePropertyValue (-not $ended) -Force
            Add-Member -InputObject $op -NotePropertyName 'final' -NotePropertyValue ($script:FinalStatuses -contains $op.status) -Force
            return $op
        }
        Write-Verbose ('failover-agent {0}: {1} ({2} %)' -f $Id, $op.status, $op.percent)
        Start-Sleep -Seconds ([Math]::Max(1, [Math]::Min($PollSec, $left)))
    }
}

function Resume-FAOperation {
    <#
    .SYNOPSIS
    Resumes an operation (POST /v1/operations/{id}/resume): after its manual action is done,
    after a failed step's cause was fixed, or after the agent was stopped. Returns it (202).
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string] $Id,
        [string] $Uri,
        [string] $Token
    )
    Invoke-FARequest -Method 'Post' -Path (Get-FAOperationPath $Id '/resume') -Uri $Uri -Token $Token
}

Export-ModuleMember -Function 'Start-FAOperation', 'Get-FAOperation', 'Wait-FAOperation', 'Resume-FAOperation'

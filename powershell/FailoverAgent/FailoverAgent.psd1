@{
    RootModule        = 'FailoverAgent.psm1'
    ModuleVersion     = '0.1.0'
    GUID              = '6f1d2c47-3b8e-4d0a-9a52-1e7c5b9d4f08'
    Author            = 'failover-agent contributors'
    Description       = 'Start, watch and resume failover-agent operations from recovery-plan scripts over the agent''s HTTP API (v1).'
    PowerShellVersion = '5.1'
    FunctionsToExport = @('Start-FAOperation', 'Get-FAOperation', 'Wait-FAOperation', 'Resume-FAOperation')
    CmdletsToExport   = @()
    VariablesToExport = @()
    AliasesToExport   = @()
}

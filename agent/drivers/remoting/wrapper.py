"""The fixed wrapper script the ``winrm`` and ``local`` transports run, and its two documents.

Neither pywinrm nor a ``powershell.exe`` process can bind parameters the way PSRP does: all they
take is a command line. So the command line is always the same -- ``powershell.exe -NoProfile
-NonInteractive -EncodedCommand <WRAPPER>`` -- and everything that varies travels on the
process's **stdin** as one base64 document::

    base64(UTF-8 JSON {"script": "<the shipped script, unchanged>", "parameters": {name: value}})

The wrapper decodes it, turns the script text into a script block and calls it with the values
*splatted* (``& $block @bound``): PowerShell binds them to the script's ``param()`` block as
values; nothing is ever parsed as PowerShell but the shipped script itself. (``-Command -``
would make stdin the program text, so the wrapper goes in ``-EncodedCommand`` and stdin carries
only data.) Environment variables were not used: Windows caps them at 32 767 characters.

The wrapper prints one base64 document on stdout::

    base64(UTF-8 JSON {"output": "<last output object as a string>" | null,
                       "errors": [{"id": FullyQualifiedErrorId, "message": ...}],
                       "failed": null | {"id": ..., "message": ...}})

``errors``: error records the script wrote and went on (non-terminating); ``failed``: the
terminating error that stopped it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from agent.drivers.remoting import PsScript, RemoteScriptError
from agent.drivers.remoting.answers import error_stream, last_json

WRAPPER = """$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$result = [ordered]@{ output = $null; errors = @(); failed = $null }
try {
    $raw = [Console]::In.ReadToEnd().Trim()
    $doc = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($raw)) | ConvertFrom-Json
    $bound = @{}
    foreach ($p in $doc.parameters.PSObject.Properties) { $bound[$p.Name] = $p.Value }
    $block = [scriptblock]::Create([string]$doc.script)
    $all = @(& $block @bound 2>&1)
    $records = @($all | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] })
    $values = @($all | Where-Object { $_ -isnot [System.Management.Automation.ErrorRecord] })
    $result.errors = @($records | ForEach-Object {
        @{ id = [string]$_.FullyQualifiedErrorId; message = $_.ToString() } })
    if ($values.Count -gt 0) { $result.output = [string]$values[-1] }
} catch {
    $result.failed = @{ id = [string]$_.FullyQualifiedErrorId; message = $_.ToString() }
}
$json = $result | ConvertTo-Json -Compress -Depth 5
[Console]::Out.Write([Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes($json)))
"""

ENCODED_WRAPPER = base64.b64encode(WRAPPER.encode("utf-16-le")).decode("ascii")
ARGUMENTS: tuple[str, ...] = ("-NoProfile", "-NonInteractive", "-EncodedCommand", ENCODED_WRAPPER)
"""The arguments of ``powershell.exe``: the same bytes for every call."""


def values_document(script: PsScript, parameters: Mapping[str, Any]) -> bytes:
    """What goes on the wrapper's stdin."""
    doc = {"script": script.text, "parameters": {k: list(v) if isinstance(v, tuple) else v
                                                  for k, v in parameters.items()}}
    return base64.b64encode(json.dumps(doc, ensure_ascii=True).encode("utf-8"))


def read_result(stdout: bytes, stderr: bytes, exit_code: int, script: PsScript, host: str | None) -> Any:
    """The script's answer from what the wrapper printed."""
    try:
        result = json.loads(base64.b64decode(stdout.strip(), validate=True).decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        tail = (stderr or stdout).decode("utf-8", "replace")[-500:]
        raise RemoteScriptError(f"{script.name} at {host}: the wrapper printed no result (exit {exit_code}): {tail}",
                                script=script.name, host=host) from None
    failed = result.get("failed")
    if failed:
        raise RemoteScriptError(f"{script.name} failed at {host}: {failed.get('message')}", script=script.name,
                                host=host, fully_qualified_error_id=failed.get("id") or "unknown")
    errors = result.get("errors") or []
    if isinstance(errors, dict):  # ConvertTo-Json unwraps a one-element array
        errors = [errors]
    output = result.get("output")
    return error_stream(last_json([] if output is None else [output], script),
                        [{"id": str(e.get("id")), "message": str(e.get("message"))} for e in errors], script, host)

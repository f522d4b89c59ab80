"""Recovery-plan script steps through PowerShell (:class:`agent.ports.Scripts`).

The operator's script is not one of the agent's (it has no schema and prints what it likes), so
it never runs as the sent script itself: the constant wrapper ``scripts/Invoke-AgentPlanScript``
runs it and answers in the agent's one-document shape. The operator's script travels as data --
its text (``$ScriptText``) when the agent can read the file at ``path`` (absolute, or relative
to ``script_root``, the config's directory), else its path on the host (``$ScriptPath``) -- and
its parameters as one JSON object (``$ParametersJson``) the wrapper splats by name. So the text
sent is the same whatever the values, and no value is ever part of PowerShell text. The contract
an operator's script keeps is in ``powershell/README.md`` ("Recovery-plan scripts"). The
behaviour each method keeps is the simulated driver's (``agent/drivers/sim/scripts.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.config import Endpoint
from agent.drivers.ps import PsDriver
from agent.drivers.remoting import Remote, RemoteItem, RemoteScriptError
from agent.errors import NotFoundError
from agent.ports import ScriptResult

__all__ = ["PsScripts", "document_of", "script_text"]


def document_of(output: str) -> dict[str, Any]:
    """The JSON document a script wrote: its last non-empty output line when that is a JSON
    object (the convention the port's ``output`` stands for), else none."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines or not lines[-1].lstrip().startswith("{"):
        return {}
    try:
        found = json.loads(lines[-1])
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def script_text(path: str, root: Path | None, *, what: str) -> str | None:
    """An operator's script's text when the agent has the file (``path`` absolute, or relative
    to ``root``), else None: the host runs its own copy at ``path``."""
    local = Path(path)
    if not local.is_absolute() and root is not None:
        local = root / local
    try:
        return local.read_text(encoding="utf-8-sig") if local.is_file() else None
    except OSError as exc:
        raise NotFoundError(f"the {what} {local} cannot be read: {exc}", path=str(local)) from None


class PsScripts:
    """Runs recovery-plan scripts on the hosts of ``hosts`` (host name → its endpoint)."""

    def __init__(self, remote: Remote, hosts: Mapping[str, Endpoint], *, script_root: Path | None = None) -> None:
        if not hosts:
            raise ValueError("no host endpoints to run recovery-plan scripts on")
        self._hosts = dict(hosts)
        self._root = script_root
        self._ps = PsDriver(remote, next(iter(self._hosts.values())))

    def _endpoint(self, host: str) -> Endpoint:
        if host not in self._hosts:
            raise NotFoundError(f"no Hyper-V host {host} to run scripts on (hosts: {', '.join(sorted(self._hosts))})",
                                host=host)
        return self._hosts[host]

    def run_script(self, host: str, path: str, parameters: dict[str, Any], timeout_s: float) -> ScriptResult:
        endpoint = self._endpoint(host)
        text = script_text(path, self._root, what="recovery-plan script")
        started = time.monotonic()
        driver = PsDriver(self._ps.remote, endpoint, timeout_s=timeout_s)
        try:
            items = driver.call("scripts/Invoke-AgentPlanScript", Key=f"{host}:{path}", ScriptText=text or "",
                                ScriptPath="" if text is not None else path, ParametersJson=json.dumps(parameters))
        except RemoteScriptError as exc:  # the wrapper itself could not run: the script did not either
            return ScriptResult(host=host, path=path, succeeded=False, error=str(exc),
                                duration_s=round(time.monotonic() - started, 3))
        if len(items) != 1:
            raise RemoteScriptError(f"scripts/Invoke-AgentPlanScript answered {len(items)} items for one run",
                                    host=host, path=path)
        return _result(host, path, items[0], round(time.monotonic() - started, 3))

    def probe(self, host: str) -> str:
        """Runs nothing of the operator's: which PowerShell answers at ``host``."""
        items = self._ps.call_at(self._endpoint(host), "common/Test-AgentEndpoint",
                                 ModuleName=["Microsoft.PowerShell.Utility"])
        if not items or not isinstance(items[0].after, dict):
            raise RemoteScriptError(f"host {host} answered the probe with nothing", host=host)
        after = items[0].after
        return (f"host {host} can run scripts (answered as {after.get('host_name')}, "
                f"PowerShell {after.get('powershell_version')})")


def _result(host: str, path: str, item: RemoteItem, duration_s: float) -> ScriptResult:
    after = item.after if isinstance(item.after, dict) else {}
    output = str(after.get("output") or "")
    errors = after.get("errors") or []
    if isinstance(errors, dict):  # ConvertTo-Json turns a one-element array into the element
        errors = [errors]
    stderr = "".join(f"{e.get('message', '')} ({e.get('id', '')})\n" for e in errors if isinstance(e, dict))
    if item.error_id is not None:  # the terminating error, with its id, after the ones it went on from
        stderr += f"{item.error_message} ({item.error_id})\n"
    failed = item.error_id is not None
    return ScriptResult(host=host, path=path, succeeded=not failed, output=document_of(output),
                        error=(item.error_message or "the script failed") if failed else None,
                        duration_s=duration_s, stdout=output, stderr=stderr)

"""The one seam between the PowerShell-backed drivers and the wire: ``run(endpoint, script,
parameters) -> parsed JSON``.

A driver never builds PowerShell text. It loads a shipped script (:func:`load_script`), whose
text is constant, and hands the values to a :class:`Remote` as bound parameters; every
transport (``psrp``, ``winrm``, ``local``) carries them as data, never spliced into the script.
A script prints exactly one JSON document (``ConvertTo-Json -Compress``), which the transport
parses.

The shape every script answers in (each script documents its own ``items`` beside it, in
``<Script>.schema.json``)::

    {"schema": "<area>/<Script>/1",
     "items": [{"key": "...", "changed": false, "before": {...} | null, "after": {...} | null,
                "error": null | {"id": "<FullyQualifiedErrorId>", "message": "...",
                                 "code": null | "<agent error code>"}}]}

An item error's ``code`` is set where the script recognised the condition (``not_found``,
``conflict``, the codes each port lists); otherwise the driver maps ``id``.

Reads answer ``changed: false`` and the state read in ``after``. An item that failed carries its
``error`` and the rest of the batch goes on; a terminating error of the whole script is a
:class:`RemoteScriptError` (permanent); a fault of the wire (reset, timeout, WinRM quota) is a
:class:`~agent.errors.TransientError`.

Parameter values are JSON-shaped: ``str``, ``int``, ``float``, ``bool``, ``None`` and lists of
those. A batch of structured items travels as one ``[string]`` parameter holding JSON (named
``*Json`` by convention), which the script reads with ``ConvertFrom-Json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import agent
from agent.config import Endpoint
from agent.errors import PermanentError

__all__ = ["PsScript", "Remote", "RemoteItem", "RemoteScriptError", "ScriptParameterError", "check_parameters",
           "load_script", "parse_answer", "script_dir"]


class RemoteScriptError(PermanentError):
    """The script raised a terminating error (``fully_qualified_error_id`` names it), or printed
    something that is not its documented answer."""

    code = "remote_script_error"


class ScriptParameterError(PermanentError):
    """A caller bound a parameter the script does not declare, or a value JSON cannot carry.
    Raised before anything is sent."""

    code = "script_parameter_error"


@dataclass(frozen=True, slots=True)
class PsScript:
    name: str
    """``<area>/<Verb-Noun>``, e.g. ``vmm/Get-AgentInventory``."""
    text: str
    parameters: tuple[str, ...]
    """The names in the script's ``param()`` block, in order: exactly what a caller may bind."""

    @property
    def schema_id(self) -> str:
        """The ``schema`` value the script's answer carries."""
        return f"{self.name}/1"


class Remote(Protocol):
    """A transport to endpoints of one kind. Implementations own their connections."""

    def run(self, endpoint: Endpoint, script: PsScript, parameters: Mapping[str, Any], *,
            timeout_s: float | None = None) -> Any:
        """Run ``script`` at ``endpoint`` with ``parameters`` bound by name; the JSON it printed.

        Refuses (:class:`ScriptParameterError`) a parameter the script does not declare before
        anything is sent; raises :class:`~agent.errors.TransientError` for a fault of the wire
        and :class:`RemoteScriptError` for a terminating error of the script."""
        ...

    def close(self) -> None: ...


def script_dir() -> Path:
    """Where the shipped scripts are: ``agent/powershell/`` in a wheel (pyproject maps the
    repository's ``powershell/`` there), the repository's ``powershell/`` in a checkout."""
    package = Path(agent.__file__).resolve().parent
    for candidate in (package / "powershell", package.parent / "powershell"):
        if candidate.is_dir() and any(candidate.glob("*/*.ps1")):
            return candidate
    raise FileNotFoundError(f"the PowerShell scripts are missing from this installation (looked in "
                            f"{package / 'powershell'} and {package.parent / 'powershell'}); reinstall failover-agent")


_PARAM_BLOCK = re.compile(r"^\s*param\s*\(", re.IGNORECASE | re.MULTILINE)
_VARIABLE = re.compile(r"\$(?!(?:true|false|null)\b)([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
"""A ``$name`` in a param() block, but not the constants ``$true``/``$false``/``$null`` that
attribute arguments such as ``Mandatory = $true`` use."""


def param_names(text: str, name: str) -> tuple[str, ...]:
    """The variables declared in the first ``param()`` block of ``text``.

    The template keeps attribute arguments free of variables other than the constants
    (``powershell/README.md``), so every other ``$name`` in the block is a parameter."""
    match = _PARAM_BLOCK.search(text)
    if match is None:
        raise ValueError(f"{name}: no param() block")
    depth, start = 1, match.end()
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return tuple(dict.fromkeys(_VARIABLE.findall(text[start:i])))
    raise ValueError(f"{name}: param() block is not closed")


@cache
def load_script(name: str) -> PsScript:
    """The shipped script ``name`` (``vmm/Get-AgentInventory``), read once per process."""
    path = script_dir() / f"{name}.ps1"
    text = path.read_text(encoding="utf-8-sig")
    return PsScript(name=name, text=text, parameters=param_names(text, name))


def _json_value(value: Any) -> bool:
    if value is None or isinstance(value, str | bool | int | float):
        return True
    return isinstance(value, list | tuple) and all(
        v is None or isinstance(v, str | bool | int | float) for v in value)


def check_parameters(script: PsScript, parameters: Mapping[str, Any]) -> None:
    """Refuse what a transport must not send: an undeclared name, a value JSON cannot carry."""
    unknown = sorted(set(parameters) - set(script.parameters))
    if unknown:
        raise ScriptParameterError(f"{script.name} has no parameter {', '.join(unknown)} "
                                   f"(it takes {', '.join(script.parameters) or 'none'})",
                                   script=script.name, unknown=unknown)
    bad = sorted(k for k, v in parameters.items() if not _json_value(v))
    if bad:
        raise ScriptParameterError(f"{script.name}: parameter {', '.join(bad)} is not a string, number, "
                                   "boolean or list of those", script=script.name, parameters=bad)


@dataclass(frozen=True, slots=True)
class RemoteItem:
    """One item of a script's answer."""

    key: str
    changed: bool
    before: Any
    after: Any
    error_id: str | None
    """The item's ``FullyQualifiedErrorId`` (or the script's own id) when it failed."""
    error_message: str | None
    error_code: str | None = None
    """The agent's error code, where the script recognised the condition."""


def parse_answer(script: PsScript, answer: Any) -> list[RemoteItem]:
    """The items of ``answer``; :class:`RemoteScriptError` when it is not ``script``'s shape."""
    if isinstance(answer, str | bytes):
        try:
            answer = json.loads(answer)
        except ValueError as exc:
            raise RemoteScriptError(f"{script.name} printed something that is not JSON: {exc}",
                                    script=script.name) from None
    if not isinstance(answer, dict) or answer.get("schema") != script.schema_id:
        got = answer.get("schema") if isinstance(answer, dict) else type(answer).__name__
        raise RemoteScriptError(f"{script.name} answered {got!r}, not {script.schema_id!r}: the script on the "
                                "host and this agent are different versions", script=script.name)
    raw = answer.get("items")
    if isinstance(raw, dict):  # ConvertTo-Json turns a one-element array into the element
        raw = [raw]
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise RemoteScriptError(f"{script.name}: 'items' is not a list", script=script.name)
    items: list[RemoteItem] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise RemoteScriptError(f"{script.name}: item {i} has no key", script=script.name)
        error = item.get("error")
        if error is not None and not isinstance(error, dict):
            raise RemoteScriptError(f"{script.name}: item {item['key']!r} has a malformed error", script=script.name)
        items.append(RemoteItem(key=item["key"], changed=bool(item.get("changed", False)),
                                before=item.get("before"), after=item.get("after"),
                                error_id=None if error is None else str(error.get("id") or "unknown"),
                                error_message=None if error is None else str(error.get("message") or ""),
                                error_code=None if error is None or error.get("code") is None
                                else str(error["code"])))
    return items


def by_key(items: Sequence[RemoteItem]) -> dict[str, RemoteItem]:
    return {item.key: item for item in items}

"""Every Python call site of a shipped script binds exactly what the script's ``param()``
declares: each name it passes is declared, each mandatory one is passed. Read from the source
(``PsDriver.call("area/X", Name=...)`` with literal keyword arguments), so a renamed or added
script parameter fails here, not on a customer's VMM server with "A parameter cannot be found"."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import pscheck

REPO = Path(__file__).parents[2]
SCRIPTS = REPO / "powershell"
DRIVERS = sorted((REPO / "agent").rglob("*.py"))
CALLERS = {"call": 0, "call_at": 1}
"""The PsDriver methods that run a script, and the position of the script name among their arguments."""


@dataclass(frozen=True)
class CallSite:
    where: str
    script: str
    passed: frozenset[str]
    splatted: bool


def sites_in(source: str, where: str) -> list[CallSite]:
    sites = []
    for node in ast.walk(ast.parse(source, where)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in CALLERS and len(node.args) > CALLERS[node.func.attr]):
            continue
        name = node.args[CALLERS[node.func.attr]]
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str) and "/" in name.value):
            continue
        sites.append(CallSite(f"{where}:{node.lineno}", name.value,
                              frozenset(k.arg for k in node.keywords if k.arg is not None),
                              any(k.arg is None for k in node.keywords)))
    return sites


SITES = [site for path in DRIVERS
         for site in sites_in(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]


@pytest.mark.parametrize("site", SITES, ids=[s.where for s in SITES])
def test_call_site_binds_exactly_the_scripts_parameters(site: CallSite) -> None:
    path = SCRIPTS / f"{site.script}.ps1"
    assert path.is_file(), f"{site.where} runs {site.script}, which is not shipped"
    assert not site.splatted, f"{site.where}: pass the parameters as literal keywords so they can be checked"
    declared = {p.name.casefold(): p for p in pscheck.script_parameters(path.read_bytes())}
    passed = {n.casefold() for n in site.passed}
    unknown = passed - set(declared)
    missing = {p.name for key, p in declared.items() if p.mandatory and key not in passed}
    assert not unknown, f"{site.where} passes {sorted(unknown)}, which {site.script}.ps1 does not declare"
    assert not missing, f"{site.where} leaves mandatory {sorted(missing)} of {site.script}.ps1 unbound"


def test_every_shipped_driver_script_has_a_caller() -> None:
    called = {s.script for s in SITES}
    shipped = {f"{p.parent.name}/{p.stem}" for p in SCRIPTS.glob("*/*.ps1")}
    assert shipped <= called, f"scripts no driver runs: {sorted(shipped - called)}"


def test_the_reader_sees_call_sites() -> None:
    """The parametrised test above proves nothing if the AST reader misses the call form."""
    sample = 'self.driver.call("vmm/Get-X", VmName=names, **extra)\nd.call_at(ep, "hyperv/Y", A=1)\nx.call(f)\n'
    assert sites_in(sample, "s.py") == [
        CallSite("s.py:1", "vmm/Get-X", frozenset({"VmName"}), True),
        CallSite("s.py:2", "hyperv/Y", frozenset({"A"}), False),
    ]


def test_the_loader_reads_the_templates_param_block() -> None:
    """``Mandatory = $true`` is an attribute argument, not a parameter called ``true``."""
    from agent.drivers.remoting import param_names

    text = "[CmdletBinding()]\nparam(\n    [Parameter(Mandatory = $true)][string[]] $VmName,\n" \
           "    [Parameter(Mandatory = $False)][string] $RequestJson = $null\n)\n$x = $true\n"
    assert param_names(text, "t") == ("VmName", "RequestJson")

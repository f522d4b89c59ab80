"""Every shipped PowerShell script keeps the rules of powershell/README.md and binds against the
documented syntax of the cmdlets it calls (tests/pscheck): a script that would fail on a real
Windows PowerShell 5.1 host -- an unknown parameter, two parameter sets mixed, a prompt, a
Hyper-V call that VMM's aliases would hijack -- fails here first."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from agent.drivers.remoting import load_script
from tests import pscheck

ROOT = Path(__file__).parents[2] / "powershell"
SCRIPTS = sorted(ROOT.glob("*/*.ps1"))
IDS = [str(p.relative_to(ROOT)) for p in SCRIPTS]

PROMPTING_VERBS = {"Remove", "Revoke", "Clear", "Reset", "Uninstall", "Unregister"}
"""ShouldProcess cmdlets with these verbs ask before acting; over remoting nobody can answer."""
ALWAYS_PROMPTING = re.compile(r"^Add-DnsServerResourceRecord", re.IGNORECASE)
"""Prompt unless -Force although they are not destructive (cmdlets-and-libraries.md)."""


def _source(path: Path) -> bytes:
    return path.read_bytes()


@pytest.mark.parametrize("path", SCRIPTS, ids=IDS)
def test_script_parses_and_every_cmdlet_call_binds(path: Path) -> None:
    findings = pscheck.check_file(path, ROOT)
    assert not findings, "\n".join(map(str, findings))


@pytest.mark.parametrize("path", SCRIPTS, ids=IDS)
def test_script_follows_the_template(path: Path) -> None:
    text = _source(path).decode("utf-8")
    head = text.split("param(", 1)[0]
    assert "[CmdletBinding()]" in head, "the template starts with [CmdletBinding()] before param()"
    body = text.split("param(", 1)[1] if "param(" in text else ""
    assert re.search(r"^Set-StrictMode -Version Latest$", body, re.M), "Set-StrictMode -Version Latest after param()"
    assert re.search(r"^\$ErrorActionPreference = 'Stop'$", body, re.M), "$ErrorActionPreference = 'Stop' after param()"
    for forbidden in ("Write-Host", "Read-Host", "Get-Credential", "Invoke-Expression", "-ProgressAction"):
        assert forbidden.casefold() not in text.casefold(), f"{forbidden} has no place in a remote script"


@pytest.mark.parametrize("path", SCRIPTS, ids=IDS)
def test_script_prints_the_document_its_schema_describes(path: Path) -> None:
    script = load_script(f"{path.parent.name}/{path.stem}")
    schema_path = path.with_suffix(".schema.json")
    assert schema_path.is_file(), f"{schema_path.name} must sit beside {path.name}"
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema.get("properties", {}).get("schema", {}).get("const") == script.schema_id
    assert f"'{script.schema_id}'" in path.read_text(encoding="utf-8"), \
        f"the script must print schema = '{script.schema_id}'"
    assert "ConvertTo-Json" in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", SCRIPTS, ids=IDS)
def test_no_call_can_stop_at_a_prompt(path: Path) -> None:
    source = _source(path)
    for call in pscheck.commands(source):
        bare = call.name.rpartition("\\")[2]
        entry = pscheck.catalog()["cmdlets"].get(bare)
        if entry is None:
            continue
        verb = bare.split("-", 1)[0]
        if not (ALWAYS_PROMPTING.match(bare) or (entry.get("supports_should_process") and verb in PROMPTING_VERBS)):
            continue
        written = {text.lstrip("-").casefold() for kind, text, _ in call.elements if kind == "parameter"}
        confirm_off = any(kind == "parameter" and text.casefold() == "-confirm" and i + 2 < len(call.elements)
                          and call.elements[i + 2][1].casefold() == "$false"
                          for i, (kind, text, _) in enumerate(call.elements))
        assert "force" in written or confirm_off, \
            f"{path.name}:{call.line}: {call.name} asks for confirmation unless -Force or -Confirm:$false"


@pytest.mark.parametrize("path", SCRIPTS, ids=IDS)
def test_hyperv_cmdlets_are_module_qualified(path: Path) -> None:
    """VMM's module defines Get-VM, Stop-VM, ... aliases; only ``Hyper-V\\X`` is sure to be Hyper-V's."""
    for call in pscheck.commands(_source(path)):
        entry = pscheck.catalog()["cmdlets"].get(call.name)
        if entry is not None and entry["module"] == "Hyper-V":
            pytest.fail(f"{path.name}:{call.line}: write Hyper-V\\{call.name}")


def test_the_catalog_is_the_reference_one() -> None:
    """The committed catalog carries its sources, so every binding rule traces to a page."""
    data = pscheck.catalog()
    assert len(data["cmdlets"]) > 1500
    for module in ("VirtualMachineManager", "Hyper-V", "DnsServer", "NetTCPIP", "RemoteAccess"):
        assert module in data["summary"]["per_module"]
    assert all(entry.get("source") for entry in data["cmdlets"].values())


# ------------------------------------------- the install script and the recovery-plan module

REPO = ROOT.parent
OTHER = sorted([*(REPO / "service").glob("*.ps1"), *(ROOT / "FailoverAgent").glob("*.psm1")])
"""Run by an administrator (install-service.ps1) or imported by an operator's recovery-plan script
(FailoverAgent): not remote scripts with a schema, but Windows PowerShell 5.1 all the same."""
OTHER_IDS = [str(p.relative_to(REPO)) for p in OTHER]


def test_the_other_powershell_files_are_found() -> None:
    assert {"service/install-service.ps1", "powershell/FailoverAgent/FailoverAgent.psm1"} <= set(OTHER_IDS)


@pytest.mark.parametrize("path", OTHER, ids=OTHER_IDS)
def test_other_powershell_parses_and_every_cmdlet_call_binds(path: Path) -> None:
    findings = pscheck.check_file(path, REPO)
    assert not findings, "\n".join(map(str, findings))


@pytest.mark.parametrize("path", OTHER, ids=OTHER_IDS)
def test_other_powershell_is_strict_and_never_prompts(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert re.search(r"^Set-StrictMode -Version Latest$", text, re.M)
    assert re.search(r"^\$ErrorActionPreference = 'Stop'$", text, re.M)
    for forbidden in ("Write-Host", "Read-Host", "Get-Credential", "Invoke-Expression", "-ProgressAction"):
        assert forbidden.casefold() not in text.casefold(), f"{forbidden} has no place here"

"""The VMM scripts keep the template and call only documented cmdlets, each call fitting one of
the cmdlet's parameter sets with its mandatory parameters bound (``cmdlet-catalog.json``: VMM
2016 pages plus the 2019 differences, Windows PowerShell 5.1)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from agent.drivers.remoting import load_script, script_dir

CATALOG = Path("/work/shared/reference/cmdlet-catalog.json")
SCRIPTS = sorted(p.stem for p in (script_dir() / "vmm").glob("*.ps1"))
CALL = re.compile(r"(?<![\w$.\\-])([A-Z][a-z]+-[A-Z][A-Za-z]+)\b([^|;{}]*)")
PARAM = re.compile(r"(?<![\w\"'])-([A-Za-z][A-Za-z0-9]*)(?::\$\w+)?")
OPERATORS = {"eq", "ne", "gt", "ge", "lt", "le", "and", "or", "not", "contains", "split", "join", "is", "isnot",
             "match", "like", "in", "notin", "replace"}


@pytest.fixture(scope="module")
def catalog() -> dict[str, Any]:
    if not CATALOG.exists():
        pytest.skip("the cmdlet catalog is not on this machine")
    loaded: dict[str, Any] = json.loads(CATALOG.read_text())
    return loaded


def calls(text: str) -> list[tuple[str, set[str]]]:
    """Each cmdlet call and the parameter names bound on it (one statement: up to the next
    pipe, brace, semicolon or closing parenthesis; backtick continuations joined)."""
    body = re.sub(r"<#.*?#>", "", text, flags=re.S)
    body = re.sub(r"^\s*#.*$|\s#\s.*$", "", body, flags=re.M).replace("`\n", " ")
    body = re.sub(r"'[^']*'", "''", body)
    found = []
    for line in body.splitlines():
        for match in CALL.finditer(line):
            rest = match.group(2)
            while re.search(r"\([^()]*\)", rest):  # an argument's own parentheses are not the end
                rest = re.sub(r"\([^()]*\)", "", rest)
            rest = re.split(r"[|;{})]", rest, maxsplit=1)[0]
            found.append((match.group(1), {p for p in PARAM.findall(rest) if p.lower() not in OPERATORS}))
    return found


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_call_fits_one_parameter_set_of_a_documented_cmdlet(name: str, catalog: dict[str, Any]) -> None:
    common = {p.lower() for p in catalog["common_parameters"]["parameters"]}
    text = load_script(f"vmm/{name}").text
    own = set(re.findall(r"^function ([\w-]+)", text, flags=re.M))
    seen = [(c, p) for c, p in calls(text) if c not in own]
    assert any(c.endswith("-SCVMMServer") for c, _ in seen), name
    for cmdlet, params in seen:
        entry = catalog["cmdlets"].get(cmdlet)
        assert entry is not None, f"{name}: {cmdlet} is not a documented cmdlet"
        wanted = {p.lower() for p in params} - common
        fits = []
        for pset in entry["parameter_sets"]:
            names = {p["name"].lower() for p in pset["parameters"]}
            # Mandatory unless it may come positionally or from the pipeline (how the scripts
            # bind New-Object's type name, ForEach-Object's block).
            mandatory = {p["name"].lower() for p in pset["parameters"]
                         if p["mandatory"] and not p.get("pipeline") and p.get("position") is None}
            if wanted <= names and mandatory <= wanted:
                fits.append(pset["name"])
        assert fits, f"{name}: {cmdlet} -{' -'.join(sorted(params))} fits none of its parameter sets"


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_keeps_the_template(name: str, catalog: dict[str, Any]) -> None:
    script = load_script(f"vmm/{name}")
    text = script.text
    for needed in ("[CmdletBinding()]", "Set-StrictMode -Version Latest", "$ErrorActionPreference = 'Stop'",
                   f"schema = 'vmm/{name}/1'", "ConvertTo-Json -Depth 10 -Compress"):
        assert needed in text, f"{name}: missing {needed}"
    for banned in ("??", "?.", "-Parallel", "-ProgressAction", "Read-Host", "Get-Credential", "Invoke-Expression"):
        assert banned not in text, f"{name}: {banned}"
    # A Hyper-V cmdlet the VMM module shadows with an alias must be module-qualified.
    aliases = set(catalog["vmm_module_aliases"]["aliases"])
    for cmdlet, _ in calls(text):
        assert cmdlet not in aliases, f"{name}: {cmdlet} is a VMM alias; call the cmdlet by its module-qualified name"
    schema = json.loads((script_dir() / "vmm" / f"{name}.schema.json").read_text())
    assert schema["properties"]["schema"]["const"] == script.schema_id


@pytest.mark.parametrize(("name", "read"), [("Get-AgentInventory", "Get-SCVirtualMachine"),
                                             ("Set-AgentNicConnection", "Get-SCVirtualNetworkAdapter")])
def test_vmm_is_refreshed_before_a_vm_it_may_not_know_yet_is_trusted(name: str, read: str) -> None:
    """Hyper-V creates and changes VMs behind VMM's back (test failover, failover)."""
    order = [c for c, _ in calls(load_script(f"vmm/{name}").text)]
    assert "Read-SCVirtualMachine" in order and order.index("Read-SCVirtualMachine") < order.index(read)

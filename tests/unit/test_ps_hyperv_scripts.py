"""The Hyper-V scripts call only what the cmdlet catalog documents: every cmdlet exists, Hyper-V
ones are module-qualified, and the parameters of each call fit one parameter set of it with its
mandatory parameters bound (by name, or by the pipeline when the call is piped into)."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from agent.drivers.remoting import load_script, script_dir

CATALOG = Path("/work/shared/reference/cmdlet-catalog.json")
SCRIPTS = sorted(p.stem for p in (script_dir() / "hyperv").glob("*.ps1"))
CMDLET = re.compile(r"(?<![\w\\-])(?:(Hyper-V|CimCmdlets)\\)?((?:Get|Set|Start|Stop|Complete|New|Invoke)-"
                    r"(?:VM\w*|Cim\w+))\b")


@cache
def catalog() -> dict[str, Any]:
    if not CATALOG.exists():
        pytest.skip("the shared cmdlet catalog is not on this machine")
    loaded: dict[str, Any] = json.loads(CATALOG.read_text(encoding="utf-8"))
    return loaded


def statements(text: str) -> list[str]:
    """The script's lines with backtick continuations joined."""
    text = re.sub(r"<#.*?#>", "", text, flags=re.DOTALL)
    return re.sub(r"`\r?\n\s*", " ", text).splitlines()


def call_text(line: str, start: int) -> str:
    """From a cmdlet name to where its command ends: a pipe, ``;`` or an unbalanced bracket."""
    depth, quote = 0, ""
    for i in range(start, len(line)):
        ch = line[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "({[":
            depth += 1
        elif ch in ")}]":
            if depth == 0:
                return line[start:i]
            depth -= 1
        elif ch in "|;" and depth == 0:
            return line[start:i]
    return line[start:]


def calls(name: str) -> list[tuple[str | None, str, set[str], bool]]:
    found = []
    for line in statements(load_script(f"hyperv/{name}").text):
        if line.lstrip().startswith("#"):
            continue
        for m in CMDLET.finditer(line):
            text = call_text(line, m.end())
            # Only the command's own parameters: drop what nested brackets hold.
            flat = re.sub(r"\([^()]*\)|\{[^{}]*\}|'[^']*'|\"[^\"]*\"", "", text)
            params = set(re.findall(r"(?<![\w$])-([A-Za-z][A-Za-z0-9]*)", flat))
            piped = line[: m.start()].rstrip().endswith("|")
            found.append((m.group(1), m.group(2), params, piped))
    return found


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_call_fits_one_parameter_set(name: str) -> None:
    cat = catalog()
    common = set(cat["common_parameters"]["parameters"])
    problems = []
    seen = calls(name)
    assert seen, f"{name} calls no cmdlet"
    for module, cmdlet, params, piped in seen:
        entry = cat["cmdlets"].get(cmdlet)
        if entry is None:
            problems.append(f"{cmdlet}: not in the catalog")
            continue
        if entry["module"] == "Hyper-V" and module != "Hyper-V":
            problems.append(f"{cmdlet}: not module-qualified (VMM's aliases shadow it)")
        own = params - common
        fits = []
        for pset in entry["parameter_sets"]:
            names = {p["name"] for p in pset["parameters"]}
            mandatory = {p["name"] for p in pset["parameters"] if p["mandatory"]}
            by_pipe = {p["name"] for p in pset["parameters"] if p.get("pipeline")}
            missing = mandatory - own - (by_pipe if piped else set())
            if own <= names and not missing:
                fits.append(pset["name"])
        if not fits:
            problems.append(f"{cmdlet} {sorted(own)}{' (piped)' if piped else ''}: fits no parameter set")
    assert not problems, f"{name}: " + "; ".join(problems)


def test_start_vmfailover_as_test_never_with_prepare() -> None:
    for _module, cmdlet, params, _piped in calls("Invoke-AgentReplicaAction"):
        if cmdlet == "Start-VMFailover":
            assert not {"AsTest", "Prepare"} <= params


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_keep_the_template(name: str) -> None:
    text = load_script(f"hyperv/{name}").text
    assert "[CmdletBinding()]" in text and "Set-StrictMode -Version Latest" in text
    assert "$ErrorActionPreference = 'Stop'" in text
    assert f"schema = 'hyperv/{name}/1'" in text
    assert (script_dir() / "hyperv" / f"{name}.schema.json").exists()
    for forbidden in ("Read-Host", "Get-Credential", "Invoke-Expression", "??", "?."):
        assert forbidden not in text, f"{name} uses {forbidden}"

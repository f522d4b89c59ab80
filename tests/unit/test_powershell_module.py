"""The FailoverAgent PowerShell module, read statically: there is no PowerShell here to run it
against a live API (no pwsh on the test hosts), so what can be proved without one is proved --
the manifest exports exactly the functions the module defines and exports, each function takes
the parameters recovery-plan scripts are told of, the kinds are the API's, the waiting stays
inside a script's 600 s, and every parameter splatted into Invoke-RestMethod is one Windows
PowerShell 5.1 has (the parse and binding gate is in test_powershell_gates.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agent import __version__
from agent.engine.model import OperationKind
from tests import pscheck

MODULE = Path(__file__).parents[2] / "powershell" / "FailoverAgent"
PSM1 = MODULE / "FailoverAgent.psm1"
PSD1 = MODULE / "FailoverAgent.psd1"
EXPORTED = {"Start-FAOperation", "Get-FAOperation", "Wait-FAOperation", "Resume-FAOperation"}


def _functions(source: bytes) -> dict[str, list[str]]:
    """Each function the module defines, with the names of its param() block, in order."""
    found: dict[str, list[str]] = {}
    for node in pscheck._walk(pscheck.parse(source).root_node):
        if node.type != "function_statement":
            continue
        name = next(c for c in node.children if c.type == "function_name")
        params: list[str] = []
        for inner in pscheck._walk(node):
            if inner.type == "script_parameter":
                variable = next(c for c in inner.children if c.type == "variable")
                params.append(source[variable.start_byte + 1:variable.end_byte].decode())
        found[source[name.start_byte:name.end_byte].decode()] = params
    return found


def _quoted_list(text: str) -> set[str]:
    return set(re.findall(r"'([^']+)'", text))


def test_the_manifest_parses_and_names_the_module_and_its_functions() -> None:
    source = PSD1.read_bytes()
    assert pscheck.syntax_errors("FailoverAgent.psd1", source) == []
    text = source.decode()
    assert re.search(r"RootModule\s*=\s*'FailoverAgent.psm1'", text)
    assert re.search(rf"ModuleVersion\s*=\s*'{re.escape(__version__)}'", text), "the module's version is the agent's"
    assert re.search(r"PowerShellVersion\s*=\s*'5.1'", text)
    exports = re.search(r"FunctionsToExport\s*=\s*@\(([^)]*)\)", text)
    assert exports is not None and _quoted_list(exports[1]) == EXPORTED


def test_the_module_defines_and_exports_exactly_the_manifests_functions() -> None:
    source = PSM1.read_bytes()
    defined = _functions(source)
    assert set(defined) >= EXPORTED
    export_line = re.search(r"^Export-ModuleMember -Function (.+)$", source.decode(), re.M)
    assert export_line is not None and _quoted_list(export_line[1]) == EXPORTED
    helpers = set(defined) - EXPORTED
    assert all(name.split("-", 1)[1].startswith("FA") for name in helpers), helpers


def test_each_function_takes_the_documented_parameters() -> None:
    defined = _functions(PSM1.read_bytes())
    assert defined["Start-FAOperation"] == ["Kind", "Plan", "Options", "PlanChecksum", "IdempotencyKey", "Uri", "Token"]
    assert defined["Get-FAOperation"] == ["Id", "Uri", "Token"]
    assert defined["Wait-FAOperation"] == ["Id", "TimeoutSec", "PollSec", "Uri", "Token"]
    assert defined["Resume-FAOperation"] == ["Id", "Uri", "Token"]


def _function_text(name: str) -> str:
    text = PSM1.read_text(encoding="utf-8")
    start = text.index(f"function {name} {{")
    end = text.find("\nfunction ", start + 1)
    return text[start:end if end > 0 else len(text)]


def test_the_kinds_it_starts_are_the_apis() -> None:
    validate = re.search(r"\[ValidateSet\(([^)]*)\)\]\s*\[string\] \$Kind", _function_text("Start-FAOperation"))
    assert validate is not None
    assert _quoted_list(validate[1]) == {k.value for k in OperationKind} - {OperationKind.CANCEL.value}


def test_a_start_sends_one_idempotency_key_for_all_its_attempts() -> None:
    start = _function_text("Start-FAOperation")
    assert re.search(r"\[string\] \$IdempotencyKey = \(\[guid\]::NewGuid\(\)\.ToString\(\)\)", start)
    assert "'Idempotency-Key' = $IdempotencyKey" in start and "-Attempts 3" in start


def test_waiting_never_outlasts_a_scripts_600_seconds() -> None:
    wait = _function_text("Wait-FAOperation")
    assert re.search(r"\[ValidateRange\(1, 590\)\]\[int\] \$TimeoutSec = 540", wait)
    assert re.search(r"\[ValidateRange\(1, 60\)\]\[int\] \$PollSec = 5", wait)
    # each poll's own timeout and each sleep are cut to what is left
    assert "-TimeoutSec ([Math]::Min(30, $left))" in wait
    assert "[Math]::Min($PollSec, $left)" in wait
    assert "'timed_out'" in wait


def test_uri_and_token_default_from_the_environment_and_the_token_is_a_bearer_header() -> None:
    text = PSM1.read_text(encoding="utf-8")
    assert "$Uri = $env:FA_URI" in text and "$Token = $env:FA_TOKEN" in text
    assert "'http://127.0.0.1:8740'" in text  # the API's default bind
    assert 'Authorization = "Bearer $Token"' in text


def test_every_key_splatted_into_invoke_restmethod_is_one_of_its_parameters() -> None:
    text = PSM1.read_text(encoding="utf-8")
    literal = re.search(r"\$request = @\{(.*?)\n    \}", text, re.S)
    assert literal is not None
    keys = set(re.findall(r"^\s*(\w+)\s*=", literal[1], re.M)) | set(re.findall(r"\$request\.(\w+) =", text))
    assert keys >= {"Uri", "Method", "Headers", "TimeoutSec", "UseBasicParsing", "Body", "ContentType"}
    entry: dict[str, Any] = pscheck.catalog()["cmdlets"]["Invoke-RestMethod"]
    assert keys <= set(entry["parameters"]), keys - set(entry["parameters"])
    assert "Invoke-RestMethod @request" in text

"""Whatever the values, the script text a host receives is the shipped file, byte for byte, and
the values arrive intact as bound parameters -- recorded on the server side of the wire, for
every shipped script under ``powershell/`` (found by walking the directory, so scripts added
later are covered) and every string parameter, over psrp and over winrm's fixed wrapper."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from agent.config import Endpoint
from agent.drivers.remoting import PsScript, load_script, script_dir
from agent.drivers.remoting.psrp import PsrpRemote
from agent.drivers.remoting.winrm import WinrmRemote
from agent.drivers.remoting.wrapper import ARGUMENTS
from tests.psrpserver import PsrpTestServer, serving

HOSTILE = [
    "it's", 'say "hi"', "a; Remove-Item C:\\ -Recurse -Force", "$(Stop-Computer -Force)", "`$env:PATH`",
    "line1\nline2\r\nline3", "# not a comment", "<#", "#>", "@'\n'@", "ünïcødé ✓ 名前 🚀", "\t lead and trail \t",
    "", "&& || | > nul", "${x}", "'; exit 1; '", "x" * 100_000,
]

_PARAM_BLOCK = re.compile(r"^\s*param\s*\((.*?)^\)", re.IGNORECASE | re.MULTILINE | re.DOTALL)
_STRING_PARAM = re.compile(r"\[(string(?:\[\])?)\]\s*\$([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)


def shipped() -> list[str]:
    root = script_dir()
    return sorted(str(p.relative_to(root).with_suffix("")).replace("\\", "/") for p in root.glob("*/*.ps1"))


def string_parameters(script: PsScript) -> list[tuple[str, bool]]:
    """Each ``[string]`` / ``[string[]]`` parameter of ``script`` and whether it is an array."""
    block = _PARAM_BLOCK.search(script.text)
    assert block is not None, f"{script.name}: no param() block"
    found = [(name, kind.lower().endswith("[]")) for kind, name in _STRING_PARAM.findall(block.group(1))]
    assert {n for n, _ in found} <= set(script.parameters)
    return found


def constant_answer(script: PsScript) -> Callable[[dict[str, Any]], list[Any]]:
    return lambda params: [json.dumps({"schema": script.schema_id, "items": []})]


def test_the_corpus_covers_the_shipped_scripts() -> None:
    names = shipped()
    assert "common/Test-AgentEndpoint" in names
    assert all(string_parameters(load_script(n)) is not None for n in names)


@pytest.mark.parametrize("transport", ["psrp", "winrm"])
def test_script_text_is_constant_and_values_arrive_intact(monkeypatch: pytest.MonkeyPatch, transport: str) -> None:
    with serving(monkeypatch) as server:
        run_corpus(server, transport)


def run_corpus(server: PsrpTestServer, transport: str) -> None:
    remote: Any = PsrpRemote() if transport == "psrp" else WinrmRemote()
    ep = Endpoint.model_validate({"transport": transport, "address": "vmm-hq.sim.test", "port": server.port,
                                  "ssl": False, "auth": "basic", "username": "agent",
                                  "credential": "env:FA_SIM_PASSWORD"})
    sent: list[tuple[PsScript, dict[str, Any]]] = []
    try:
        for name in shipped():
            script = load_script(name)
            # The value path, not the simulator, is under test: a constant answer in the script's shape.
            server.extra[script.text] = constant_answer(script)
            for parameter, is_array in string_parameters(script):
                for value in HOSTILE:
                    bound: dict[str, Any] = {parameter: [value, value[::-1]] if is_array else value}
                    remote.run(ep, script, bound)
                    sent.append((script, bound))
    finally:
        remote.close()
    assert sent, "no shipped script has a string parameter"
    assert len(server.received) == len(sent)
    for (script, bound), got in zip(sent, server.received, strict=True):
        assert got.script_text == script.text  # byte-identical: the file as shipped
        assert got.parameters == bound
    if transport == "winrm":
        assert set(server.winrs_command_lines) == {("powershell.exe", " ".join(ARGUMENTS))}

"""One home per error code, and every driver raises the classes its port documents.

The engine, the API and the journal branch on an error's ``code``; a code defined twice (two
classes an ``except`` must both name) or a driver raising a code its port never promised would
make the same refusal look different depending on which driver is behind the port.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import pytest

import agent
from agent import ports
from agent.domain.errors import ERROR_CLASSES
from agent.errors import AgentError

GENERIC = {"timeout", "unreachable", "invalid_request"}
"""Codes of a failed call (not of an item), promised by the ports' shared contract."""

PORT_OF: dict[str, type] = {
    "agent.drivers.sim.vmm": ports.Vmm,
    "agent.drivers.sim.hyperv": ports.HyperV,
    "agent.drivers.sim.dns": ports.Dns,
    "agent.drivers.sim.routes": ports.Routes,
    "agent.drivers.sim.scripts": ports.Scripts,
    "agent.drivers.rfc2136": ports.Dns,
    "agent.dns.errors": ports.Dns,
    "agent.dns.verify": ports.Dns,
}
SIMULATOR_ONLY = {"injected_fault"}
"""A fault injected on purpose by a test's rule: the simulator documents it, no port does."""


def agent_modules() -> list[ModuleType]:
    names = [m.name for m in pkgutil.walk_packages(agent.__path__, "agent.")
             if ".migrations" not in m.name and not m.name.endswith("__main__")]
    return [importlib.import_module(name) for name in names]


def defined_codes() -> dict[str, list[str]]:
    where: dict[str, list[str]] = defaultdict(list)
    for module in agent_modules():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, AgentError) and "code" in vars(cls):
                where[cls.code].append(f"{cls.__module__}.{cls.__qualname__}")
    return where


def test_every_error_code_is_defined_once() -> None:
    where = defined_codes()
    assert len(where) > 40, "the scan found the error classes"
    assert {code: homes for code, homes in where.items() if len(homes) > 1} == {}


def documented(port: type) -> set[str]:
    """The codes a port promises: those its docstring's "Error codes ..." / "Errors raised ..."
    paragraph names, and those its methods' docstrings name as refusals."""
    doc = inspect.getdoc(port) or ""
    paragraph = re.search(r"Errors? (?:codes|raised).*?(?:\n\n|$)", doc, re.S)
    assert paragraph, f"{port.__name__} documents no error codes"
    codes = set(re.findall(r"``([a-z][a-z_]+)``", paragraph.group(0)))
    for name in dir(port):
        method = inspect.getdoc(getattr(port, name)) if not name.startswith("_") else None
        codes |= set(re.findall(r"\(``([a-z][a-z_]+)``\)", method or ""))
    parameters = {p for name in dir(port) if not name.startswith("_") and callable(getattr(port, name))
                  for p in inspect.signature(getattr(port, name)).parameters}
    return codes - parameters


@pytest.mark.parametrize("port", [ports.Vmm, ports.HyperV, ports.Dns, ports.Routes, ports.Scripts],
                         ids=lambda p: p.__name__)
def test_every_code_a_port_documents_has_its_one_class(port: type) -> None:
    codes = documented(port)
    assert len(codes) >= 2
    assert codes - set(ERROR_CLASSES) == set(), "a documented code no class carries"


def raised_classes(module: ModuleType) -> dict[str, type[AgentError]]:
    """The error classes a module constructs (``SomeError(...)``), by the name it uses."""
    tree = ast.parse(Path(inspect.getfile(module)).read_text())
    found: dict[str, type[AgentError]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            value = getattr(module, node.func.id, None)
            if inspect.isclass(value) and issubclass(value, AgentError):
                found[node.func.id] = value
    return found


@pytest.mark.parametrize("module_name", sorted(PORT_OF))
def test_a_driver_raises_only_the_shared_classes_and_codes_of_its_port(module_name: str) -> None:
    module = importlib.import_module(module_name)
    port = PORT_OF[module_name]
    classes = raised_classes(module)
    assert classes, f"{module_name} raises no agent errors?"
    homes = {name: cls.__module__ for name, cls in classes.items()}
    # No driver defines codes of its own: the classes live in agent.errors / agent.domain.errors.
    assert {n: m for n, m in homes.items() if m not in ("agent.errors", "agent.domain.errors")
            and classes[n].code not in SIMULATOR_ONLY and classes[n].__name__ != "StateFileError"} == {}
    allowed = documented(port) | GENERIC | SIMULATOR_ONLY | {"not_found", "conflict"}
    codes = {cls.code for cls in classes.values() if cls.__name__ != "StateFileError"}
    assert codes - allowed == set(), f"{module_name} raises codes {port.__name__} does not document"


def test_the_simulator_and_the_rfc2136_driver_refuse_a_stale_pin_with_the_same_class() -> None:
    from agent.domain.errors import DnsPrerequisiteFailed

    sim = raised_classes(importlib.import_module("agent.drivers.sim.dns"))
    wire = raised_classes(importlib.import_module("agent.drivers.rfc2136"))
    assert sim["DnsPrerequisiteFailed"] is wire["DnsPrerequisiteFailed"] is DnsPrerequisiteFailed

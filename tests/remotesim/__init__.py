"""Simulated sites behind the PowerShell scripts: what a real VMM server, Hyper-V host, Windows
DNS server or router would answer to each shipped script, computed from the simulator.

One handler per script, in ``tests/remotesim/<area>.py`` (``HANDLERS = {"Get-AgentInventory":
fn, ...}``). A handler receives the :class:`Call` -- the simulated world, the :class:`Target` the
endpoint stands for, the bound parameters exactly as the script would see them -- and returns
the script's whole answer document. :func:`answer` checks the call against the script's
``param()`` block and the answer against the script's ``<Script>.schema.json``, so a handler
cannot drift from the script it stands for.

Two transports use the handlers: :class:`SimRemote`, in process (driver tests), and the PSRP
test server (``tests/psrpserver``), on the wire.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import jsonschema_rs

from agent.config import AgentConfig, Endpoint
from agent.drivers.remoting import PsScript, RemoteScriptError, check_parameters, script_dir
from agent.drivers.sim import SimWorld

Role = Literal["vmm", "hyperv", "dns", "router"]


@dataclass(frozen=True)
class Target:
    """What an endpoint address stands for in the simulated sites."""

    role: Role
    site: str | None
    """The site of a VMM server, Hyper-V host or router (None: a DNS server, a third site's router)."""
    name: str
    """The Hyper-V host, DNS server or router name (the site name for a VMM server)."""


@dataclass
class Call:
    world: SimWorld
    target: Target
    script: PsScript
    parameters: dict[str, Any]


class ScriptFailed(Exception):
    """A handler's terminating error: what ``$ErrorActionPreference = 'Stop'`` would throw."""

    def __init__(self, error_id: str, message: str) -> None:
        super().__init__(message)
        self.error_id = error_id
        self.message = message


Handler = Callable[[Call], dict[str, Any]]


def handler_for(script: PsScript) -> Handler:
    area, verb_noun = script.name.split("/", 1)
    module = importlib.import_module(f"tests.remotesim.{area}")
    handlers: Mapping[str, Handler] = module.HANDLERS
    if verb_noun not in handlers:
        raise LookupError(f"tests/remotesim/{area}.py has no handler for {script.name}")
    return handlers[verb_noun]


@cache
def _validator(name: str) -> Any:
    """The script's answer schema, compiled once. ``jsonschema.validate`` checked the schema
    itself against the metaschema on every answer, and walks a document in pure Python: at
    10,000 VMs one inventory answer took seconds, and the wire benchmark (bench_memory.py) could
    not run. Formats are not asserted, as ``jsonschema.validate`` did not."""
    path = Path(script_dir()) / f"{name}.schema.json"
    return jsonschema_rs.validator_for(json.loads(path.read_text(encoding="utf-8")), validate_formats=False)


def answer(call: Call) -> dict[str, Any]:
    """The handler's answer to ``call``, checked against the script's documented shape."""
    check_parameters(call.script, call.parameters)
    document = handler_for(call.script)(call)
    _validator(call.script.name).validate(document)
    return document


def targets_for(config: AgentConfig) -> dict[str, Target]:
    """Each endpoint address of ``config`` and what it stands for."""
    found: dict[str, Target] = {}

    def add(endpoint: Endpoint | None, target: Target) -> None:
        if endpoint is not None and endpoint.address:
            found[endpoint.address] = target

    for site in config.sites:
        add(site.vmm, Target("vmm", site.name, site.name))
        for host in site.hyperv_hosts:
            add(host.endpoint, Target("hyperv", site.name, host.name))
        for router in site.routers:
            add(router.endpoint, Target("router", site.name, router.name))
    for third in config.third_sites:
        for router in third.routers:
            add(router.endpoint, Target("router", None, router.name))
    for server in config.dns.servers:
        add(server.endpoint, Target("dns", None, server.name))
    return found


@dataclass
class SimRemote:
    """A :class:`~agent.drivers.remoting.Remote` that answers in process from the simulator.

    Parameters and answers make a JSON round trip, as they would on the wire, and every call is
    kept in :attr:`calls` for tests to inspect."""

    world: SimWorld
    targets: Mapping[str, Target]
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def run(self, endpoint: Endpoint, script: PsScript, parameters: Mapping[str, Any], *,
            timeout_s: float | None = None) -> Any:
        check_parameters(script, parameters)
        bound = json.loads(json.dumps(dict(parameters)))
        address = endpoint.address or ""
        self.calls.append((address, script.name, bound))
        target = self.targets.get(address)
        if target is None:
            raise LookupError(f"no simulated endpoint at {address!r} (known: {sorted(self.targets)})")
        try:
            document = answer(Call(self.world, target, script, bound))
        except ScriptFailed as failed:
            raise RemoteScriptError(failed.message, script=script.name, fully_qualified_error_id=failed.error_id) \
                from None
        return json.loads(json.dumps(document))

    def close(self) -> None:
        pass


def open_world(loaded: Any) -> SimWorld:
    """The simulated world of a loaded config (:class:`agent.configfile.LoadedConfig`): the same
    state file its ``sim`` drivers use, so both see one world."""
    loaded.simulator_state.parent.mkdir(parents=True, exist_ok=True)
    return SimWorld.open(loaded.simulator_inventory, loaded.simulator_state)


def sim_remote(loaded: Any) -> SimRemote:
    """A :class:`SimRemote` answering for every endpoint of a loaded config."""
    return SimRemote(open_world(loaded), targets_for(loaded.config))


ALL_ROLES: tuple[Role, ...] = ("vmm", "hyperv", "dns", "router")


def over_psrp(roles: tuple[Role, ...] = ALL_ROLES, *, transport: str = "psrp",
              port: int | None = None) -> Callable[[dict[str, Any]], None]:
    """A ``copy_demo(edit=...)`` function that moves the demo's ``roles`` off the ``sim``
    drivers onto the PowerShell-backed ones over ``transport``: each endpoint gets the address
    ``<name>.sim.test`` (``port``: all on one port, for the PSRP test server); DNS servers become
    kind ``windows`` and routers kind ``netroute``. The ``simulator`` section stays: the
    handlers answer from its world."""

    def endpoint(name: str) -> dict[str, Any]:
        found: dict[str, Any] = {"transport": transport, "address": f"{name}.sim.test", "ssl": False,
                                 "auth": "basic", "username": "agent", "credential": "env:FA_SIM_PASSWORD"}
        if port is not None:
            found["port"] = port
        return found

    def edit(data: dict[str, Any]) -> None:
        for site in data["sites"]:
            if "vmm" in roles:
                site["vmm"] = endpoint(f"vmm-{site['name']}")
            if "hyperv" in roles:
                for host in site.get("hyperv_hosts", []):
                    host["endpoint"] = endpoint(host["name"])
        if "router" in roles:
            for site in [*data["sites"], *data.get("third_sites", [])]:
                for router in site.get("routers", []):
                    router["kind"] = "netroute"
                    router["endpoint"] = endpoint(router["name"])
        if "dns" in roles:
            for server in data["dns"]["servers"]:
                server["kind"] = "windows"
                server["endpoint"] = endpoint(server["name"])

    return edit

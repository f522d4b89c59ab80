"""Drivers: the implementations of the ports (``agent.ports``), chosen per config entry.

:func:`build_drivers` is the one place that turns a loaded config into live drivers:

* ``transport: sim`` / ``kind: sim`` -- the simulated sites (``agent.drivers.sim``), one shared
  world opened from the config's simulator inventory and state file;
* DNS ``kind: rfc2136`` -- :class:`agent.drivers.rfc2136.Rfc2136Dns` (TSIG-signed updates);
* ``transport: psrp`` / ``winrm``, DNS ``kind: windows`` and router kinds ``netroute`` / ``bgp``
  are refused with :class:`NotAvailableYet`: the PowerShell-remoting drivers come in a later
  version. Every such entry is named at once, with its line in the config file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.ports import Dns, HyperV, Routes, Scripts, Vmm
from agent.yamlfile import InvalidFileError, Problem

if TYPE_CHECKING:
    from agent.configfile import LoadedConfig

__all__ = ["Drivers", "NotAvailableYet", "build_drivers", "check_available"]


class NotAvailableYet(InvalidFileError):
    """The config asks for a driver this version does not have. Nothing was contacted."""

    code = "not_available_yet"
    hint = (
        "The PowerShell-remoting drivers (transports psrp and winrm, DNS kind windows, router kinds "
        "netroute and bgp) come in a later version; transport/kind 'sim' and DNS kind 'rfc2136' work now."
    )


@dataclass
class Drivers:
    """The live drivers of one config: a VMM and a Hyper-V driver per site, a DNS driver per
    configured DNS server, and one routes driver for every router. Close when done."""

    vmm: dict[str, Vmm]
    hyperv: dict[str, HyperV]
    dns: dict[str, Dns]
    routes: Routes
    scripts: Scripts | None = None
    world: Any = None
    """The simulated sites, when the config uses them (tests and the demo inspect it)."""
    _closers: list[Callable[[], Any]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        """Release connections and files. Idempotent; every closer runs even if one fails."""
        closers, self._closers = self._closers, []
        first: BaseException | None = None
        for close in reversed(closers):
            try:
                close()
            except Exception as exc:  # keep closing the rest; report the first failure
                first = first or exc
        if first is not None:
            raise first

    def __enter__(self) -> Drivers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unavailable(loaded: LoadedConfig) -> list[Problem]:
    """Every config entry that needs a driver this version lacks."""

    cfg = loaded.config
    found: list[tuple[str, str]] = []

    def endpoint(key: str, transport: str) -> None:
        if transport != "sim":
            found.append((f"{key}.transport", f"transport {transport!r} is not available yet in this version"))

    def router(key: str, r: Any) -> None:
        if r.kind != "sim":
            found.append((f"{key}.kind", f"router kind {r.kind!r} is not available yet in this version"))
        endpoint(f"{key}.endpoint", r.endpoint.transport)

    for i, site in enumerate(cfg.sites):
        endpoint(f"sites[{i}].vmm", site.vmm.transport)
        for j, host in enumerate(site.hyperv_hosts):
            endpoint(f"sites[{i}].hyperv_hosts[{j}].endpoint", host.endpoint.transport)
        for j, r in enumerate(site.routers):
            router(f"sites[{i}].routers[{j}]", r)
    for i, third in enumerate(cfg.third_sites):
        for j, r in enumerate(third.routers):
            router(f"third_sites[{i}].routers[{j}]", r)
    for i, server in enumerate(cfg.dns.servers):
        if server.kind == "windows":
            found.append((
                f"dns.servers[{i}].kind",
                "DNS server kind 'windows' is not available yet in this version "
                "(Windows DNS also accepts TSIG-signed RFC 2136 updates: kind 'rfc2136')",
            ))
    shown = str(loaded.path)
    return [Problem(shown, loaded.line_of(key), key, message) for key, message in found]


def check_available(loaded: LoadedConfig) -> None:
    """Raise :class:`NotAvailableYet` naming every config entry this version has no driver for."""

    problems = _unavailable(loaded)
    if problems:
        raise NotAvailableYet(loaded.path, problems)


def build_drivers(loaded: LoadedConfig) -> Drivers:
    """Open the drivers ``loaded`` asks for. Refuses the whole config, before contacting anything,
    when an entry needs a driver this version does not have."""

    check_available(loaded)
    cfg = loaded.config
    drivers = Drivers(vmm={}, hyperv={}, dns={}, routes=None)  # type: ignore[arg-type]  # filled below
    try:
        # Every site is simulated in this version (anything else was refused above), so there is
        # always a world; its routers serve the routes port.
        world = _open_world(loaded, drivers)
        for site in cfg.sites:
            # The Hyper-V hosts of a simulated site are simulated too (checked above: every
            # endpoint is 'sim' in this version).
            drivers.vmm[site.name] = world.vmm(site.name)
            drivers.hyperv[site.name] = world.hyperv(site.name)
        for server in cfg.dns.servers:
            if server.kind == "sim":
                drivers.dns[server.name] = world.dns(server.name)
            else:
                zones = [z.name for z in cfg.dns.zones if z.server == server.name]
                drivers.dns[server.name] = _rfc2136(server, zones, drivers)
        drivers.routes = world.routes()
        drivers.scripts = world.scripts()
        drivers.world = world
    except BaseException:
        drivers.close()
        raise
    return drivers


def _open_world(loaded: LoadedConfig, drivers: Drivers) -> Any:
    from agent.drivers.sim import SimWorld

    if loaded.simulator_inventory is None or loaded.simulator_state is None:
        # AgentConfig refuses 'sim' without a simulator section; this guards a hand-built LoadedConfig.
        raise InvalidFileError(
            loaded.path,
            [Problem(str(loaded.path), None, "simulator", "'sim' drivers need a simulator inventory")],
        )
    loaded.simulator_state.parent.mkdir(parents=True, exist_ok=True)
    world = SimWorld.open(loaded.simulator_inventory, loaded.simulator_state)
    close = getattr(world, "close", None)
    if close is not None:
        drivers._closers.append(close)
    return world


def _rfc2136(server: Any, zones: list[str], drivers: Drivers) -> Dns:
    from agent.drivers.rfc2136 import Rfc2136Dns

    dns = Rfc2136Dns(server, zones)
    close = getattr(dns, "close", None)
    if close is not None:
        drivers._closers.append(close)
    return dns

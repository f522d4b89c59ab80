"""The composition root: the one place that turns a loaded config into live ports.

Every driver is an entry in :data:`DRIVERS`, a table of factories keyed by what the config says
(an endpoint's ``transport``, a DNS server's ``kind``, a router's ``kind`` and transport), so a
new driver is one entry there and nothing else changes: the engine, the inventory reader, the
CLI and the API server receive a :class:`~agent.ports.Ports` bundle and never learn which
drivers it holds. A config entry with no factory is refused, every such entry at once and
located in the file, before anything is contacted.

The simulated sites are opened here too (and only here outside ``agent/drivers/sim``): lazily,
once, shared by every simulated port. Tests and the demo that inspect them get the explicit
handle :attr:`Connection.simulator`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from agent.config import DnsServer, HyperVHost, Router, Site
from agent.configfile import LoadedConfig
from agent.drivers.dispatch import HyperVByHost, RoutesByRouter, ScriptsByHost
from agent.ports import Dns, HyperV, Ports, Routes, Scripts, Vmm
from agent.yamlfile import InvalidFileError, Problem

if TYPE_CHECKING:
    from agent.drivers.remoting import Remote

    # The handle on the simulated sites that tests and the demo inspect, named here so that
    # nothing outside the drivers and this module imports the simulator.
    from agent.drivers.sim import SimWorld as SimulatedSites

__all__ = ["DRIVERS", "Connection", "DriverTable", "NotAvailableYet", "SimulatedSites", "WiringContext",
           "check_available", "connect"]


class NotAvailableYet(InvalidFileError):
    """The config asks for a driver this version does not have. Nothing was contacted."""

    code = "not_available_yet"
    hint = "Each problem above names the drivers this version has."


class WiringContext:
    """What a factory may use: the config, a place to register what must be closed, and the
    simulated sites (opened on first use)."""

    def __init__(self, loaded: LoadedConfig, *, reset_simulator: bool = False,
                 remotes: Mapping[str, Remote] | None = None) -> None:
        self.loaded = loaded
        self.reset_simulator = reset_simulator
        self.notices: list[str] = []
        self._closers: list[Callable[[], object]] = []
        self._world: SimulatedSites | None = None
        self._remotes: dict[str, Remote] = dict(remotes or {})

    def remote(self, transport: str) -> Remote:
        """The one transport object (``psrp``, ``winrm``, ``local``) every PowerShell-backed
        driver of this config shares, opened on first use and closed with the connection. One
        handed in by the caller (a test's) is used as it is and left to the caller to close."""
        if transport not in self._remotes:
            from agent.drivers.remoting.transports import open_remote

            opened = open_remote(transport, self.loaded)
            self._remotes[transport] = opened
            self.on_close(opened.close)
        return self._remotes[transport]

    def on_close(self, close: Callable[[], object]) -> None:
        self._closers.append(close)

    def simulator(self) -> SimulatedSites:
        """The simulated sites of the config's ``simulator`` section, opened once.

        A new state file is seeded from the inventory (which checks it). After that the state
        file is the truth, but an inventory edited since is checked every time -- a broken one
        must be reported at every start, not only the first. The demo's world is disposable: it
        starts afresh when asked or when the shipped inventory changed (an upgrade); any other
        config only gets a notice, because its state may matter."""

        if self._world is None:
            from agent.drivers.sim import SimWorld
            from agent.drivers.sim.inventory import load_inventory

            inventory, state = self.loaded.simulator_inventory, self.loaded.simulator_state
            if inventory is None or state is None:
                # AgentConfig refuses 'sim' without a simulator section; this guards a hand-built one.
                raise InvalidFileError(self.loaded.path, [Problem(
                    str(self.loaded.path), None, "simulator", "'sim' drivers need a simulator inventory")])
            state.parent.mkdir(parents=True, exist_ok=True)
            world = SimWorld.open(inventory, state)
            changed = world.inventory_changed
            if changed:
                load_inventory(inventory)
            if self.reset_simulator or (changed and self.loaded.is_demo):
                world.reset()
            elif changed:
                self.notices.append(
                    f"{inventory} changed since the simulated world in {state} was created from it; the world "
                    "still shows the old inventory (delete the state file to start afresh).")
            self._world = world
        return self._world

    @property
    def opened_simulator(self) -> SimulatedSites | None:
        return self._world

    def close(self) -> None:
        """Close everything opened, newest first; every closer runs even if one fails."""

        closers, self._closers = self._closers, []
        first: BaseException | None = None
        for close in reversed(closers):
            try:
                close()
            except Exception as exc:  # keep closing the rest; report the first failure
                first = first or exc
        if first is not None:
            raise first


VmmFactory = Callable[[WiringContext, Site], Vmm]
HyperVFactory = Callable[[WiringContext, Site, Sequence[HyperVHost]], HyperV]
"""One site's Hyper-V hosts that share a transport (a site without hosts in the config gets
the factory of its VMM's transport, with no hosts)."""
DnsFactory = Callable[[WiringContext, DnsServer, Sequence[str]], Dns]
"""One DNS server, with the names of the zones the config puts on it."""
RoutesFactory = Callable[[WiringContext, Sequence[Router]], Routes]
ScriptsFactory = Callable[[WiringContext, Sequence[HyperVHost]], Scripts]
"""The hosts (of both sites) whose endpoints share a transport."""


@dataclass(frozen=True)
class DriverTable:
    """Driver factories by role and key. Keys: an endpoint's ``transport`` for VMM, Hyper-V and
    scripts; a DNS server's ``kind``; a router's ``kind/transport`` (``"sim/sim"``,
    ``"bgp/psrp"``)."""

    vmm: Mapping[str, VmmFactory]
    hyperv: Mapping[str, HyperVFactory]
    dns: Mapping[str, DnsFactory]
    routes: Mapping[str, RoutesFactory]
    scripts: Mapping[str, ScriptsFactory]


def _rfc2136(ctx: WiringContext, server: DnsServer, zones: Sequence[str]) -> Dns:
    from agent.drivers.rfc2136 import Rfc2136Dns

    return Rfc2136Dns(server, zones)


def _windows_dns(ctx: WiringContext, server: DnsServer, zones: Sequence[str]) -> Dns:
    """A Windows DNS server through the DnsServer cmdlets, over its endpoint's transport."""
    from agent.drivers.ps.windns import PsWindowsDns

    assert server.endpoint is not None  # DnsServer refuses kind windows without one
    return PsWindowsDns(ctx.remote(server.endpoint.transport), server, zones=zones)


def _ps_hyperv(transport: str) -> HyperVFactory:
    """The PowerShell-backed Hyper-V port of a site over ``transport``; a site listing no hosts
    reaches them through its VMM server."""

    def make(ctx: WiringContext, site: Site, hosts: Sequence[HyperVHost]) -> HyperV:
        from agent.drivers.ps.hyperv import PsHyperV

        sites = ctx.loaded.config.sites
        return PsHyperV(ctx.remote(transport), site.name, {h.name: h.endpoint for h in hosts},
                        via=None if hosts else site.vmm,
                        sites_by_host={h.name: s.name for s in sites for h in s.hyperv_hosts},
                        sites=[s.name for s in sites])

    return make


def _ps_scripts(transport: str) -> ScriptsFactory:
    """Recovery-plan scripts on the hosts whose endpoints use ``transport``; a script path
    relative to the config's directory is read by the agent and sent as data."""

    def make(ctx: WiringContext, hosts: Sequence[HyperVHost]) -> Scripts:
        from agent.drivers.ps.scripts import PsScripts

        return PsScripts(ctx.remote(transport), {h.name: h.endpoint for h in hosts},
                         script_root=ctx.loaded.path.parent)

    return make


def _ps_vmm(transport: str) -> VmmFactory:
    def factory(ctx: WiringContext, site: Site) -> Vmm:
        from agent.drivers.ps.vmm import PsVmm

        # Every grant description starts with the owner id (engine.actions.vmm): the marker
        # that lets the driver revoke only what this agent granted.
        return PsVmm(ctx.remote(transport), site.vmm, site.name, marker=f"{ctx.loaded.config.agent.owner_id} ")

    return factory


def _ps_routes(transport: str) -> RoutesFactory:
    """Windows routers (NetTCPIP routing table) over ``transport``: each one its own endpoint."""

    def make(ctx: WiringContext, routers: Sequence[Router]) -> Routes:
        from agent.drivers.ps.routes import PsRoutes

        return PsRoutes(ctx.remote(transport), {r.name: r.endpoint for r in routers})

    return make


def _ps_bgp_routes(transport: str) -> RoutesFactory:
    """Windows BGP speakers (RemoteAccess BGP custom routes) over ``transport``."""

    def make(ctx: WiringContext, routers: Sequence[Router]) -> Routes:
        from agent.drivers.ps.routes import PsBgpRoutes

        return PsBgpRoutes(ctx.remote(transport), {r.name: r.endpoint for r in routers})

    return make


def _script_routes(transport: str) -> RoutesFactory:
    """Routers of any make, each through the operator's script run at its endpoint over
    ``transport``; a script path relative to the config's directory is read and sent as data."""

    def make(ctx: WiringContext, routers: Sequence[Router]) -> Routes:
        from agent.drivers.ps.routerscript import ScriptRoutes

        return ScriptRoutes(ctx.remote(transport), routers, script_root=ctx.loaded.path.parent)

    return make


DRIVERS = DriverTable(
    vmm={"sim": lambda ctx, site: ctx.simulator().vmm(site.name),
         **{transport: _ps_vmm(transport) for transport in ("psrp", "winrm", "local")}},
    hyperv={"sim": lambda ctx, site, hosts: ctx.simulator().hyperv(site.name),
            **{transport: _ps_hyperv(transport) for transport in ("psrp", "winrm", "local")}},
    dns={"sim": lambda ctx, server, zones: ctx.simulator().dns(server.name), "rfc2136": _rfc2136,
         "windows": _windows_dns},
    routes={"sim/sim": lambda ctx, routers: ctx.simulator().routes(),
            **{f"netroute/{transport}": _ps_routes(transport) for transport in ("psrp", "winrm", "local")},
            **{f"bgp/{transport}": _ps_bgp_routes(transport) for transport in ("psrp", "winrm", "local")},
            **{f"script/{transport}": _script_routes(transport) for transport in ("psrp", "winrm", "local")}},
    scripts={"sim": lambda ctx, hosts: ctx.simulator().scripts(),
             **{transport: _ps_scripts(transport) for transport in ("psrp", "winrm", "local")}},
)
"""Every driver of this version."""


def router_key(router: Router) -> str:
    return f"{router.kind}/{router.endpoint.transport}"


# ------------------------------------------------------------------------------ what is asked for

E = TypeVar("E")


@dataclass
class _Wanted(Generic[E]):
    """Config entries of one role grouped by key, with the config key path of each entry."""

    entries: dict[str, list[tuple[str, E]]] = field(default_factory=dict)

    def add(self, key: str, where: str, entry: E) -> None:
        self.entries.setdefault(key, []).append((where, entry))


@dataclass
class _Asked:
    vmm: _Wanted[Site] = field(default_factory=_Wanted)
    hyperv: dict[str, _Wanted[HyperVHost]] = field(default_factory=dict)
    """Per site."""
    hyperv_via_vmm: _Wanted[Site] = field(default_factory=_Wanted)
    """Sites that list no Hyper-V host: their hosts are reached like their VMM."""
    dns: _Wanted[DnsServer] = field(default_factory=_Wanted)
    routes: _Wanted[Router] = field(default_factory=_Wanted)
    scripts: _Wanted[HyperVHost] = field(default_factory=_Wanted)


def _asked(loaded: LoadedConfig) -> _Asked:
    cfg = loaded.config
    asked = _Asked()
    for i, site in enumerate(cfg.sites):
        asked.vmm.add(site.vmm.transport, f"sites[{i}].vmm.transport", site)
        hosts = asked.hyperv.setdefault(site.name, _Wanted())
        for j, host in enumerate(site.hyperv_hosts):
            where = f"sites[{i}].hyperv_hosts[{j}].endpoint.transport"
            hosts.add(host.endpoint.transport, where, host)
            asked.scripts.add(host.endpoint.transport, where, host)
        if not site.hyperv_hosts:
            asked.hyperv_via_vmm.add(site.vmm.transport, f"sites[{i}].vmm.transport", site)
        for j, router in enumerate(site.routers):
            asked.routes.add(router_key(router), f"sites[{i}].routers[{j}].kind", router)
    for i, third in enumerate(cfg.third_sites):
        for j, router in enumerate(third.routers):
            asked.routes.add(router_key(router), f"third_sites[{i}].routers[{j}].kind", router)
    for i, server in enumerate(cfg.dns.servers):
        asked.dns.add(server.kind, f"dns.servers[{i}].kind", server)
    return asked


def _missing(table: DriverTable, asked: _Asked) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def check(what: str, known: Mapping[str, object], wanted: _Wanted[E],
              describe: Callable[[str], str] | None = None) -> None:
        for key, entries in wanted.entries.items():
            if key not in known:
                told = describe(key) if describe else f"{what} {key!r} is not available yet in this version " \
                    f"(available: {', '.join(sorted(known)) or 'none'})"
                found.extend((where, told) for where, _ in entries)

    def router(key: str) -> str:
        kind, transport = key.split("/", 1)
        kinds = sorted({k.split("/", 1)[0] for k in table.routes})
        if kind not in kinds:
            return f"router kind {kind!r} is not available yet in this version (available: {', '.join(kinds)})"
        return (f"router kind {kind!r} over transport {transport!r} is not available yet in this version "
                f"(available: {', '.join(sorted(table.routes))})")

    check("transport", table.vmm, asked.vmm)
    for hosts in asked.hyperv.values():
        check("transport", table.hyperv, hosts)
    check("transport", table.hyperv, asked.hyperv_via_vmm)
    check("DNS server kind", table.dns, asked.dns)
    check("router", table.routes, asked.routes, router)
    scripts = _Wanted[HyperVHost]({k: v for k, v in asked.scripts.entries.items() if k in table.hyperv})
    check("script transport", table.scripts, scripts)
    return list(dict.fromkeys(found))


def check_available(loaded: LoadedConfig, table: DriverTable = DRIVERS) -> None:
    """Raise :class:`NotAvailableYet` naming every config entry this version has no driver for."""
    _check(loaded, table, _asked(loaded))


def _check(loaded: LoadedConfig, table: DriverTable, asked: _Asked) -> None:
    missing = _missing(table, asked)
    if missing:
        shown = str(loaded.path)
        problems = [Problem(shown, loaded.line_of(key), key, message) for key, message in missing]
        raise NotAvailableYet(loaded.path, sorted(problems, key=lambda p: p.line or 0))


# ------------------------------------------------------------------------------- connecting


@dataclass
class Connection:
    """The live ports of one config. Close when done (a context manager)."""

    ports: Ports
    context: WiringContext

    @property
    def simulator(self) -> SimulatedSites | None:
        """The simulated sites, when the config uses them: for tests and the demo to inspect."""
        return self.context.opened_simulator

    @property
    def notices(self) -> Sequence[str]:
        """Things the operator should know about what was opened (e.g. a stale simulated world)."""
        return tuple(self.context.notices)

    def close(self) -> None:
        self.context.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(loaded: LoadedConfig, *, reset_simulator: bool = False, table: DriverTable = DRIVERS,
            remotes: Mapping[str, Remote] | None = None) -> Connection:
    """Open the ports ``loaded`` asks for. Refuses the whole config, before contacting anything,
    when an entry needs a driver this version does not have. ``reset_simulator`` starts the
    simulated sites afresh from their inventory; ``remotes`` replaces transports by name (tests
    run the PowerShell-backed drivers over an in-process one)."""

    asked = _asked(loaded)
    _check(loaded, table, asked)
    cfg = loaded.config
    ctx = WiringContext(loaded, reset_simulator=reset_simulator, remotes=remotes)
    try:
        vmm = {site.name: table.vmm[site.vmm.transport](ctx, site) for site in cfg.sites}
        hyperv = {site.name: _site_hyperv(ctx, table, site, asked.hyperv[site.name]) for site in cfg.sites}
        dns = {server.name: table.dns[server.kind](ctx, server, [z.name for z in cfg.dns.zones
                                                                  if z.server == server.name])
               for server in cfg.dns.servers}
        routes = _routes(ctx, table, asked.routes)
        scripts = _scripts(ctx, table, asked)
        for port in (*vmm.values(), *hyperv.values(), *dns.values(), routes, scripts):
            close = getattr(port, "close", None)
            if callable(close):
                ctx.on_close(close)
    except BaseException:
        ctx.close()
        raise
    return Connection(Ports(vmm=vmm, hyperv=hyperv, dns=dns, routes=routes, scripts=scripts), ctx)


N = TypeVar("N", HyperVHost, Router)
P = TypeVar("P")


def _groups(wanted: _Wanted[N]) -> Iterable[tuple[str, list[N]]]:
    for key, entries in wanted.entries.items():
        yield key, [entry for _, entry in entries]


def _one_or_dispatch(wanted: _Wanted[N], make: Callable[[str, list[N]], P],
                     dispatch: Callable[[dict[str, P]], P]) -> P:
    """The port of the one driver ``wanted`` needs, or, when its entries (hosts, routers) need
    several drivers -- or none is configured -- a dispatcher sending each call by entry name."""
    built = [(make(key, group), group) for key, group in _groups(wanted)]
    if len(built) == 1:
        return built[0][0]
    return dispatch({entry.name: port for port, group in built for entry in group})


def _site_hyperv(ctx: WiringContext, table: DriverTable, site: Site, hosts: _Wanted[HyperVHost]) -> HyperV:
    if not hosts.entries:
        return table.hyperv[site.vmm.transport](ctx, site, ())
    return _one_or_dispatch(hosts, lambda key, group: table.hyperv[key](ctx, site, group),
                            lambda by_host: HyperVByHost(site.name, by_host))


def _routes(ctx: WiringContext, table: DriverTable, wanted: _Wanted[Router]) -> Routes:
    return _one_or_dispatch(wanted, lambda key, group: table.routes[key](ctx, group), RoutesByRouter)


def _scripts(ctx: WiringContext, table: DriverTable, asked: _Asked) -> Scripts:
    return _one_or_dispatch(asked.scripts, lambda key, group: table.scripts[key](ctx, group), ScriptsByHost)

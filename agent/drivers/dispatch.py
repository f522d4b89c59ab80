"""Ports that send each call to the driver of its host or router, for configs that reach hosts
or routers of one role through different drivers (BGP speakers beside static routers, Hyper-V
hosts behind two transports). Built by :mod:`agent.wiring` only when a config mixes drivers.

Every port call names one host or one router (the ports are batch-shaped per endpoint), so
dispatching never splits a call. A host or router the config does not name is refused with
``not_found``, as the Scripts and Routes ports document.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.domain.errors import InvalidRequest
from agent.domain.model import NicFailoverConfig, Replication, Route, VirtualMachine
from agent.errors import NotFoundError
from agent.ports import HyperV, ItemResult, PowerAction, ReplicaAction, Routes, ScriptResult, Scripts


class HyperVByHost:
    """One site's Hyper-V hosts, each through its own driver."""

    def __init__(self, site: str, by_host: Mapping[str, HyperV]) -> None:
        self.site = site
        self._by_host = dict(by_host)

    def _of(self, host: str) -> HyperV:
        port = self._by_host.get(host)
        if port is None:
            raise NotFoundError(f"Hyper-V host {host} is not configured at site {self.site}", host=host, site=self.site)
        return port

    def get_failover_configs(self, host: str, nics: Sequence[tuple[str, str]]) -> list[NicFailoverConfig]:
        return self._of(host).get_failover_configs(host, nics)

    def set_failover_configs(self, host: str,
                             configs: Sequence[NicFailoverConfig]) -> list[ItemResult[NicFailoverConfig]]:
        return self._of(host).set_failover_configs(host, configs)

    def clear_failover_configs(self, host: str, nics: Sequence[tuple[str, str]]) -> list[ItemResult[None]]:
        return self._of(host).clear_failover_configs(host, nics)

    def get_replications(self, host: str, vms: Sequence[str]) -> list[Replication]:
        return self._of(host).get_replications(host, vms)

    def replicate(self, host: str, action: ReplicaAction, vms: Sequence[str],
                  points: Mapping[str, str] | None = None) -> list[ItemResult[Replication]]:
        return self._of(host).replicate(host, action, vms, points)

    def set_power(self, host: str, action: PowerAction, vms: Sequence[str]) -> list[ItemResult[VirtualMachine]]:
        return self._of(host).set_power(host, action, vms)

    def probe(self, host: str) -> str:
        return self._of(host).probe(host)


class RoutesByRouter:
    """Every router of the config, each through the driver of its kind."""

    def __init__(self, by_router: Mapping[str, Routes]) -> None:
        self._by_router = dict(by_router)

    def _of(self, router: str) -> Routes:
        port = self._by_router.get(router)
        if port is None:
            raise NotFoundError(f"router {router} is not configured", router=router)
        return port

    def _one_router(self, routes: Sequence[Route]) -> str | None:
        routers = {r.router for r in routes}
        if len(routers) > 1:
            raise InvalidRequest(f"one router per call, got {sorted(routers)}", routers=sorted(routers))
        return next(iter(routers), None)

    def read_routes(self, router: str, prefixes: Sequence[str] | None = None) -> list[Route]:
        return self._of(router).read_routes(router, prefixes)

    def announce(self, routes: Sequence[Route]) -> list[ItemResult[Route]]:
        router = self._one_router(routes)
        return [] if router is None else self._of(router).announce(routes)

    def withdraw(self, routes: Sequence[Route]) -> list[ItemResult[None]]:
        router = self._one_router(routes)
        return [] if router is None else self._of(router).withdraw(routes)

    def probe(self, router: str) -> str:
        return self._of(router).probe(router)


class ScriptsByHost:
    """Recovery-plan scripts, each run through the driver of the host it runs on."""

    def __init__(self, by_host: Mapping[str, Scripts]) -> None:
        self._by_host = dict(by_host)

    def run_script(self, host: str, path: str, parameters: dict[str, Any], timeout_s: float) -> ScriptResult:
        port = self._by_host.get(host)
        if port is None:
            raise NotFoundError(f"no host {host} to run {path} on is configured", host=host)
        return port.run_script(host, path, parameters, timeout_s)

    def probe(self, host: str) -> str:
        port = self._by_host.get(host)
        if port is None:
            raise NotFoundError(f"no host {host} to run scripts on is configured", host=host)
        return port.probe(host)

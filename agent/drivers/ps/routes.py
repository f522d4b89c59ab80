"""Windows routers over PowerShell remoting (:class:`agent.ports.Routes`): the router kind
``netroute``, its routing table through NetTCPIP ``Get-NetRoute`` / ``New-NetRoute`` /
``Set-NetRoute`` / ``Remove-NetRoute``, and the router kind ``bgp``, the networks a RemoteAccess
BGP speaker announces through ``Get-BgpCustomRoute`` / ``Add-BgpCustomRoute`` /
``Remove-BgpCustomRoute``.

Each router is its own endpoint; a call goes to the one router its routes name, with the whole
batch, and the script reads back every change it made (a route not visible after announce is an
item error, never a success).

A BGP custom route is an *announced network*: the prefix alone (:class:`Route` with neither next
hop nor interface, and the default metric). Get-BgpCustomRoute has no next hop or metric to
give, and the speaker is the next hop its peers use, so a bgp router's routes are read, compared
and verified by prefix only; a route with a next hop or interface is not one it can hold, and is
refused before anything is sent (the config refuses it first, ``agent.configrefs``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from agent.config import Endpoint
from agent.domain.errors import InvalidRequest
from agent.domain.model import Route
from agent.drivers.ps import PsDriver, item_error
from agent.drivers.remoting import Remote, RemoteItem, RemoteScriptError
from agent.errors import NotFoundError
from agent.ports import ItemResult

__all__ = ["PsBgpRoutes", "PsRoutes"]


class PsRoutes:
    """The ``netroute`` routers that share a transport, each at its ``endpoints[name]``.

    A router not in ``endpoints`` is ``not_found`` without anything being sent (the sim
    driver's behaviour for an unknown router)."""

    def __init__(self, remote: Remote, endpoints: Mapping[str, Endpoint], *,
                 timeout_s: float | None = None) -> None:
        self._remote = remote
        self._timeout_s = timeout_s
        self.endpoints = dict(endpoints)

    def _driver(self, router: str) -> PsDriver:
        endpoint = self.endpoints.get(router)
        if endpoint is None:
            raise NotFoundError(f"no router {router}", router=router)
        return PsDriver(self._remote, endpoint, timeout_s=self._timeout_s)

    # ------------------------------------------------------------------------------ read

    def read_routes(self, router: str, prefixes: Sequence[str] | None = None) -> list[Route]:
        driver = self._driver(router)
        try:
            wanted = [] if prefixes is None else [str(ipaddress.ip_network(p)) for p in prefixes]
        except ValueError as exc:
            raise InvalidRequest(f"not a prefix: {exc}", router=router) from None
        if prefixes is not None and not wanted:
            return []  # the scripts read every route when given no prefix
        items = self._read(driver, router, wanted)
        found = [self._route(router, item) for item in items]
        order = {p: i for i, p in enumerate(wanted)}
        return sorted(found, key=lambda r: order.get(r.prefix, 0)) if wanted else found

    def probe(self, router: str) -> str:
        routes = self.read_routes(router)
        return f"router {router} answers ({len(routes)} {self._what})"

    _what = "static routes"

    def _read(self, driver: PsDriver, router: str, prefixes: list[str]) -> list[RemoteItem]:
        return driver.call("routes/Get-AgentNetRoute", Router=router, Prefix=prefixes)

    def _send(self, driver: PsDriver, router: str, action: str, routes: Sequence[Route]) -> list[RemoteItem]:
        if any(r.announced_network for r in routes):
            raise InvalidRequest(f"router {router} is a netroute router: each route needs a next hop or an "
                                 "interface", router=router)
        batch = json.dumps([{"prefix": r.prefix, "next_hop": r.next_hop, "interface": r.interface,
                             "metric": r.metric} for r in routes])
        return driver.call("routes/Set-AgentNetRoute", Router=router, Action=action, RoutesJson=batch)

    # ---------------------------------------------------------------------------- change

    def announce(self, routes: Sequence[Route]) -> list[ItemResult[Route]]:
        return [self._result(r, i, with_value=True) for r, i in self._set(routes, "announce")]

    def withdraw(self, routes: Sequence[Route]) -> list[ItemResult[None]]:
        return [self._result(r, i, with_value=False) for r, i in self._set(routes, "withdraw")]

    def _set(self, routes: Sequence[Route], action: str) -> list[tuple[Route, RemoteItem | None]]:
        if not routes:
            return []
        names = sorted({r.router for r in routes})
        if len(names) > 1:
            raise InvalidRequest(f"one router per call; got {', '.join(names)}", routers=names)
        router = names[0]
        if router not in self.endpoints:
            return [(r, None) for r in routes]
        items = self._send(self._driver(router), router, action, routes)
        if [i.key for i in items] != [r.prefix for r in routes]:
            raise RemoteScriptError(f"router {router} answered items {[i.key for i in items]} for "
                                    f"{[r.prefix for r in routes]}: re-read before trusting what it did",
                                    router=router)
        return list(zip(routes, items, strict=True))

    # --------------------------------------------------------------------------- helpers

    def _result(self, route: Route, item: RemoteItem | None, *, with_value: bool) -> ItemResult[Any]:
        key = f"{route.router}:{route.prefix}"
        if item is None:
            return ItemResult(key, error=NotFoundError(f"no router {route.router}", router=route.router))
        if item.error_id is not None:
            return ItemResult(key, error=item_error(item))
        value = self._route(route.router, item) if with_value else None
        return ItemResult(key, value, changed=item.changed)

    def _route(self, router: str, item: RemoteItem) -> Route:
        after = item.after
        if not isinstance(after, dict):
            raise RemoteScriptError(f"router {router}: item {item.key!r} carries no route", router=router, key=item.key)
        try:
            return self._value(router, after)
        except (KeyError, ValidationError) as exc:
            raise RemoteScriptError(f"router {router}: item {item.key!r} is not a route: {exc}", router=router,
                                    key=item.key) from None

    def _value(self, router: str, after: dict[str, Any]) -> Route:
        return Route(router=router, prefix=after["prefix"], next_hop=after.get("next_hop"),
                     interface=after.get("interface") or None, metric=after["metric"])


class PsBgpRoutes(PsRoutes):
    """The ``bgp`` routers (RemoteAccess BGP speakers) that share a transport: their routes are
    announced networks, read and changed by prefix (the module docstring says why)."""

    _what = "announced networks"

    def _read(self, driver: PsDriver, router: str, prefixes: list[str]) -> list[RemoteItem]:
        return driver.call("routes/Get-AgentBgpRoute", Router=router, Prefix=prefixes)

    def _send(self, driver: PsDriver, router: str, action: str, routes: Sequence[Route]) -> list[RemoteItem]:
        targeted = [r.prefix for r in routes if not r.announced_network]
        if targeted:
            raise InvalidRequest(f"router {router} is a bgp router: it announces networks, and a route with a next "
                                 f"hop or interface is not one it can hold ({', '.join(targeted)})", router=router)
        return driver.call("routes/Set-AgentBgpRoute", Router=router, Action=action, Prefix=[r.prefix for r in routes])

    def _value(self, router: str, after: dict[str, Any]) -> Route:
        return Route(router=router, prefix=str(ipaddress.ip_network(after["prefix"])))

"""The simulated routers of every site (:class:`agent.ports.Routes`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from agent.domain.errors import InvalidRequest, RouteConflict
from agent.domain.model import Route
from agent.drivers.sim.state import State, route_value
from agent.errors import NotFoundError
from agent.ports import ItemResult

if TYPE_CHECKING:
    from agent.drivers.sim.world import SimWorld

R = TypeVar("R")


def _describe(r: dict[str, Any] | Route) -> str:
    hop = r["next_hop"] if isinstance(r, dict) else r.next_hop
    iface = r["interface"] if isinstance(r, dict) else r.interface
    return " ".join(p for p in (f"via {hop}" if hop else "", f"dev {iface}" if iface else "") if p)


class SimRoutes:
    """Routers hold one route per prefix. ``announce`` of a prefix routed to the same next hop
    and interface is ``changed=False`` (a new metric is applied, ``changed=True``); to another
    one, ``route_conflict``. ``withdraw`` of an absent prefix is ``changed=False``; of a prefix
    routed elsewhere, ``route_conflict`` (that route is not the caller's). Routes of two routers
    in one call are ``invalid_request``."""

    def __init__(self, world: SimWorld) -> None:
        self._world = world

    def read_routes(self, router: str, prefixes: Sequence[str] | None = None) -> list[Route]:
        def run(st: State) -> tuple[list[Route], Sequence[str]]:
            rtr = st["routers"].get(router)
            if rtr is None:
                raise NotFoundError(f"no router {router}", router=router)
            if prefixes is None:
                wanted = list(rtr["routes"])
            else:
                try:
                    wanted = [str(ipaddress.ip_network(p)) for p in prefixes]
                except ValueError as exc:
                    raise InvalidRequest(f"not a prefix: {exc}", router=router) from None
            return [route_value(router, p, rtr["routes"][p]) for p in wanted if p in rtr["routes"]], ()

        return self._world._single(
            "routes.read_routes",
            router,
            [router, *(prefixes or ())],
            run,
            mutating=False,
            items=len(prefixes or ()),
            keys=list(prefixes or ()),
        )

    def _router(self, st: State, route: Route) -> dict[str, Any]:
        rtr = st["routers"].get(route.router)
        if rtr is None:
            raise NotFoundError(f"no router {route.router}", router=route.router)
        return rtr

    def announce(self, routes: Sequence[Route]) -> list[ItemResult[Route]]:
        def apply(st: State, route: Route) -> ItemResult[Route]:
            table = self._router(st, route)["routes"]
            wanted = {"next_hop": route.next_hop, "interface": route.interface, "metric": route.metric}
            current = table.get(route.prefix)
            if current is not None:
                _check_same_target(route, current)
                if current["metric"] == route.metric:
                    return ItemResult(_key(route), route_value(route.router, route.prefix, current))
            table[route.prefix] = wanted
            return ItemResult(_key(route), route_value(route.router, route.prefix, wanted), changed=True)

        return self._run("routes.announce", routes, apply)

    def withdraw(self, routes: Sequence[Route]) -> list[ItemResult[None]]:
        def apply(st: State, route: Route) -> ItemResult[None]:
            table = self._router(st, route)["routes"]
            current = table.get(route.prefix)
            if current is None:
                return ItemResult(_key(route))
            _check_same_target(route, current, "; left alone")
            del table[route.prefix]
            return ItemResult(_key(route), changed=True)

        return self._run("routes.withdraw", routes, apply)

    def _run(
        self, kind: str, routes: Sequence[Route], apply: Callable[[State, Route], ItemResult[R]]
    ) -> list[ItemResult[R]]:
        """One batch call to the router the routes name; routes of several routers are refused
        as a whole, before any is touched."""

        def one_router(st: State) -> None:
            names = sorted({r.router for r in routes})
            if len(names) > 1:
                raise InvalidRequest(f"one router per call; got {', '.join(names)}", routers=names)

        router = routes[0].router if routes else ""
        return self._world._batch(kind, router, routes, _key, lambda r: (r.prefix, _key(r)), apply, precheck=one_router)

    def probe(self, router: str) -> str:
        """``not_found`` for an unknown router; fault rules match ``routes.probe`` and the router."""

        def run(st: State) -> tuple[str, Sequence[str]]:
            rtr = st["routers"].get(router)
            if rtr is None:
                raise NotFoundError(f"no router {router}", router=router)
            return f"simulated router {router} answers ({len(rtr['routes'])} routes)", ()

        return self._world._single("routes.probe", router, [router], run, mutating=False)


def _check_same_target(route: Route, current: dict[str, Any], note: str = "") -> None:
    """Refuses a route whose prefix is routed elsewhere: that route is someone else's, not the
    caller's to replace or remove."""

    if (current["next_hop"], current["interface"]) != (route.next_hop, route.interface):
        raise RouteConflict(
            f"{route.prefix} on {route.router} is routed {_describe(current)}, not {_describe(route)}{note}",
            router=route.router,
            prefix=route.prefix,
            found=_describe(current),
        )


def _key(r: Route) -> str:
    return f"{r.router}:{r.prefix}"


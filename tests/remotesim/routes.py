"""What a router answers to each ``powershell/routes/`` script, computed from the simulated
sites: :class:`~agent.drivers.sim.routes.SimRoutes` does the work (its rules are the routers'
rules: one route per prefix, a prefix routed elsewhere refused) and each handler reports it in
the script's shape, item errors with the ``Agent.<code>`` ids the scripts raise. The endpoint is
the router, so the router each call reads or changes is the target's, whatever ``-Router`` says
(the scripts only echo it)."""

from __future__ import annotations

import json
from typing import Any

from agent.domain.model import Route
from agent.errors import AgentError, NotFoundError
from agent.ports import ItemResult
from tests.remotesim import Call, ScriptFailed


def _value(r: Route, router: str) -> dict[str, Any]:
    return {"router": router, "prefix": r.prefix, "next_hop": r.next_hop, "interface": r.interface,
            "metric": r.metric}


def _item(key: str, *, changed: bool = False, before: Any = None, after: Any = None,
          error: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"key": key, "changed": changed, "before": before, "after": after, "error": error}


def _router(call: Call) -> str:
    if call.target.role != "router":
        raise ScriptFailed("CommandNotFoundException", f"{call.script.name}: not a router")
    return call.target.name


def _read(call: Call, prefixes: list[str] | None) -> list[Route]:
    try:
        return call.world.routes().read_routes(_router(call), prefixes)
    except NotFoundError as exc:  # the router's own table is gone: the whole script fails
        raise ScriptFailed("CimException,Get-NetRoute", exc.message) from None


def get_routes(call: Call) -> dict[str, Any]:
    prefixes = list(call.parameters.get("Prefix") or [])
    echoed = call.parameters["Router"]
    items = [_item(r.prefix, after=_value(r, echoed)) for r in _read(call, prefixes or None)]
    return {"schema": call.script.schema_id, "items": items}


def set_routes(call: Call) -> dict[str, Any]:
    router, echoed = _router(call), call.parameters["Router"]
    wanted = [Route(router=router, prefix=r["prefix"], next_hop=r["next_hop"], interface=r["interface"],
                    metric=r["metric"]) for r in json.loads(call.parameters["RoutesJson"])]
    before = {r.prefix: _value(r, echoed) for r in _read(call, [w.prefix for w in wanted])}
    routes = call.world.routes()
    results: list[ItemResult[Any]] = list(
        routes.announce(wanted) if call.parameters["Action"] == "announce" else routes.withdraw(wanted))
    items = []
    for w, r in zip(wanted, results, strict=True):
        if r.error is not None:
            items.append(_item(w.prefix, error=_error(r.error)))
        else:
            after = None if r.value is None else _value(r.value, echoed)
            items.append(_item(w.prefix, changed=r.changed, before=before.get(w.prefix), after=after))
    return {"schema": call.script.schema_id, "items": items}


def _error(exc: AgentError) -> dict[str, Any]:
    return {"id": f"Agent.{exc.code}", "message": exc.message, "code": exc.code}


HANDLERS = {"Get-AgentNetRoute": get_routes, "Set-AgentNetRoute": set_routes}

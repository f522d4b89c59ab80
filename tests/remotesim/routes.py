"""What a router answers to each ``powershell/routes/`` script, computed from the simulated
sites: :class:`~agent.drivers.sim.routes.SimRoutes` does the work (its rules are the routers'
rules: one route per prefix, a prefix routed elsewhere refused) and each handler reports it in
the script's shape, item errors with the ``Agent.<code>`` ids the scripts raise. The endpoint is
the router, so the router each call reads or changes is the target's, whatever ``-Router`` says
(the scripts only echo it).

A ``bgp`` router's scripts see the same table as the networks it announces: a prefix is
announced when the table holds it (whatever next hop the inventory gave it), an announce adds it
without next hop or interface, and a withdraw removes what the table holds for it."""

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


def get_bgp_routes(call: Call) -> dict[str, Any]:
    prefixes = list(call.parameters.get("Prefix") or [])
    echoed = call.parameters["Router"]
    found = {r.prefix for r in _read(call, prefixes or None)}
    items = [_item(p, after={"router": echoed, "prefix": p}) for p in sorted(found)]
    return {"schema": call.script.schema_id, "items": items}


def set_bgp_routes(call: Call) -> dict[str, Any]:
    router, echoed = _router(call), call.parameters["Router"]
    routes = call.world.routes()
    items = []
    for prefix in call.parameters["Prefix"]:
        value = {"router": echoed, "prefix": prefix}
        held = _read(call, [prefix])
        result: ItemResult[Any]
        if call.parameters["Action"] == "announce":
            if held:
                items.append(_item(prefix, before=value, after=value))
                continue
            [result] = routes.announce([Route(router=router, prefix=prefix)])
            before, after = None, value
        else:
            if not held:
                items.append(_item(prefix))
                continue
            [result] = routes.withdraw(held)
            before, after = value, None
        if result.error is not None:
            items.append(_item(prefix, error=_error(result.error)))
        else:
            items.append(_item(prefix, changed=True, before=before, after=after))
    return {"schema": call.script.schema_id, "items": items}


def router_script(call: Call) -> dict[str, Any]:
    """What the wrapper ``scripts/Invoke-AgentPlanScript`` answers at a ``script`` router's
    endpoint: a simulated operator's script keeping the documented contract (README, "Routers")
    against the router's simulated table, with some device chatter before its JSON line. Its
    file name picks how it misbehaves, for tests: ``*malformed*`` answers a document of the
    wrong shape, ``*silent*`` prints nothing, ``*liar*`` answers changed without changing,
    ``*broken*`` throws."""
    p = call.parameters
    bound, router = json.loads(p["ParametersJson"]), _router(call)
    name = p["Key"].split(":", 1)[1].rsplit("/", 1)[-1].casefold()
    output = f"{bound.get('Device', router)}# connected as {p['Key'].split(':', 1)[0]}\n"
    error = None
    if "broken" in name:
        error = {"id": "SshException,Invoke-CiscoCommand", "message": "connection to the device refused",
                 "code": "script_failed"}
    elif "silent" in name:
        output = ""
    elif "malformed" in name:
        output += json.dumps({"schema": "routes/router-script/1", "routes": "all good"}) + "\n"
    else:
        output += json.dumps(_scripted(call, bound, lie="liar" in name)) + "\n"
    return {"schema": call.script.schema_id, "items": [
        {"key": p["Key"], "changed": True, "before": None, "after": {"output": output, "errors": []},
         "error": error}]}


def _scripted(call: Call, bound: dict[str, Any], *, lie: bool) -> dict[str, Any]:
    router, routes, prefix = _router(call), call.world.routes(), bound["Prefix"]
    answer: dict[str, Any] = {"schema": "routes/router-script/1", "changed": False, "error": None}
    if bound["Action"] in ("add", "remove") and not lie:
        wanted = Route(router=router, prefix=prefix, next_hop=bound["NextHop"] or None,
                       interface=bound["Interface"] or None, metric=bound["Metric"])
        [result] = routes.announce([wanted]) if bound["Action"] == "add" else routes.withdraw([wanted])
        if result.error is not None:
            answer["error"] = {"code": result.error.code, "message": result.error.message}
        answer["changed"] = result.changed
    elif lie:
        answer["changed"] = True
    held = _read(call, [prefix] if prefix else None)
    answer["routes"] = [{"prefix": r.prefix, "next_hop": r.next_hop, "interface": r.interface, "metric": r.metric}
                        for r in held]
    return answer


HANDLERS = {"Get-AgentNetRoute": get_routes, "Set-AgentNetRoute": set_routes,
            "Get-AgentBgpRoute": get_bgp_routes, "Set-AgentBgpRoute": set_bgp_routes}

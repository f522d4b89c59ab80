"""Routers of any make through the operator's own script (:class:`agent.ports.Routes`): the
router kind ``script``, for Cisco, Junos, FortiOS ... devices the agent has no driver for.

The operator's script runs at the router's ``endpoint`` (a Windows host that can reach the
device) inside the constant wrapper ``scripts/Invoke-AgentPlanScript``, as recovery-plan scripts
do (:mod:`agent.drivers.ps.scripts`): its text (or its path on the host) and its parameters
travel as bound data, never as PowerShell text. On each run it gets the route as bound
parameters -- ``Action`` (``read``, ``add``, ``remove``), ``Prefix``, ``NextHop``,
``Interface``, ``Metric``, ``Router`` -- plus the config's ``script.parameters``, and answers
one JSON document on its last output line, :class:`RouterScriptAnswer`
(``powershell/routes/router-script.schema.json``; README, "Routers").

One route per run: a device CLI changes one route at a time, and a run that fails leaves the
others of the batch standing. After each add or remove the driver runs the script again with
``Action=read`` for that prefix and decides from that read alone whether the route holds (or is
gone): a script that says it added a route the device does not show is an item error
(``route_not_visible``), never a success. An answer that is not the documented document is a
permanent error naming the router and the script: what the device did is unknown, so nothing is
taken from it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.config import Router, RouterScript
from agent.domain.errors import InvalidRequest
from agent.domain.model import Route
from agent.drivers.ps import PsDriver
from agent.drivers.ps.scripts import script_text
from agent.drivers.remoting import Remote, RemoteItem
from agent.errors import AgentError, NotFoundError, PermanentError, make_error
from agent.ports import ItemResult

__all__ = ["RouterScriptAnswer", "RouterScriptError", "ScriptRoutes"]

ANSWER_SCHEMA = "routes/router-script/1"


class RouterScriptError(PermanentError):
    """A ``script`` router's script did not answer the documented document (or failed while
    reading): ``router`` and ``path`` name it."""

    code = "router_script_error"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnsweredRoute(_Strict):
    prefix: str
    next_hop: str | None = None
    interface: str | None = None
    metric: int = Field(default=256, ge=0, le=65535)


class AnsweredError(_Strict):
    code: str = Field(default="remote_item_error", pattern=r"^[a-z][a-z0-9_]{0,63}$")
    message: str


class RouterScriptAnswer(_Strict):
    """The one JSON document a router script prints last: the routes the device holds for
    ``Prefix`` after the action (every route it manages when ``Prefix`` is empty), whether the
    action changed anything, and the script's own refusal of the route, if any (``code`` e.g.
    ``route_conflict`` when the prefix is routed elsewhere: someone else's route, left alone)."""

    schema_id: Literal["routes/router-script/1"] = Field(alias="schema")
    routes: list[AnsweredRoute] = Field(default_factory=list)
    changed: bool = False
    error: AnsweredError | None = None


class ScriptRoutes:
    """The ``script`` routers that share a transport, each with its endpoint and script."""

    def __init__(self, remote: Remote, routers: Sequence[Router], *, script_root: Path | None = None) -> None:
        self._remote = remote
        self._root = script_root
        self.routers: dict[str, Router] = {}
        for router in routers:
            if router.script is None:
                raise ValueError(f"router {router.name} is not of kind script")
            self.routers[router.name] = router

    def _router(self, name: str) -> tuple[Router, RouterScript]:
        router = self.routers.get(name)
        if router is None or router.script is None:
            raise NotFoundError(f"no router {name}", router=name)
        return router, router.script

    # ------------------------------------------------------------------------------ read

    def read_routes(self, router: str, prefixes: Sequence[str] | None = None) -> list[Route]:
        self._router(router)
        try:
            wanted = [str(Route(router=router, prefix=p).prefix) for p in prefixes or ()]
        except ValidationError as exc:
            raise InvalidRequest(f"not a prefix: {exc.errors()[0]['msg']}", router=router) from None
        if prefixes is None:
            return self._read(router, "")
        return [r for p in wanted for r in self._read(router, p)]

    def probe(self, router: str) -> str:
        """Runs the script with ``Action=read`` and no prefix: read-only by its contract."""
        return f"router {router} answers through its script ({len(self.read_routes(router))} routes)"

    def _read(self, router: str, prefix: str) -> list[Route]:
        answer = self._run(router, "read", prefix)
        if isinstance(answer, AgentError):
            raise answer
        if answer.error is not None:
            raise self._failed(router, f"refused to read: {answer.error.message} ({answer.error.code})")
        found = self._routes(router, answer)
        return [r for r in found if r.prefix == prefix] if prefix else found

    # ---------------------------------------------------------------------------- change

    def announce(self, routes: Sequence[Route]) -> list[ItemResult[Route]]:
        return [self._change(r, "add") for r in self._batch(routes)]

    def withdraw(self, routes: Sequence[Route]) -> list[ItemResult[None]]:
        return [self._change(r, "remove") for r in self._batch(routes)]

    def _batch(self, routes: Sequence[Route]) -> Sequence[Route]:
        names = sorted({r.router for r in routes})
        if len(names) > 1:
            raise InvalidRequest(f"one router per call; got {', '.join(names)}", routers=names)
        for r in routes:
            if r.announced_network:
                raise InvalidRequest(f"router {r.router} is a script router: route {r.prefix} needs a next hop or "
                                     "an interface", router=r.router)
        return routes

    def _change(self, route: Route, action: Literal["add", "remove"]) -> ItemResult[Any]:
        key = f"{route.router}:{route.prefix}"
        if route.router not in self.routers:
            return ItemResult(key, error=NotFoundError(f"no router {route.router}", router=route.router))
        answer = self._run(route.router, action, route.prefix, route)
        if isinstance(answer, AgentError):
            return ItemResult(key, error=answer)
        if answer.error is not None:
            return ItemResult(key, error=make_error(answer.error.code, "permanent", answer.error.message,
                                                    router=route.router, key=route.prefix))
        now = [r for r in self._read(route.router, route.prefix) if _same(r, route)]
        if action == "add":
            held = [r for r in now if r.metric == route.metric]
            if not held:
                return ItemResult(key, error=make_error(
                    "route_not_visible", "permanent", f"{route.prefix} on {route.router} is not there after the "
                    f"script's add (it answered changed={str(answer.changed).lower()})", router=route.router))
            return ItemResult(key, held[0], changed=answer.changed)
        if now:
            return ItemResult(key, error=make_error(
                "route_still_present", "permanent", f"{route.prefix} on {route.router} is still there after the "
                "script's remove", router=route.router))
        return ItemResult(key, changed=answer.changed)

    # --------------------------------------------------------------------------- helpers

    def _run(self, name: str, action: str, prefix: str, route: Route | None = None) -> RouterScriptAnswer | AgentError:
        """One run of the router's script: its answer, or the error it ended with (a terminating
        error of the script, as an item error); a malformed answer raises. A read binds the
        prefix only (NextHop and Interface empty, Metric 0): every route for it is wanted."""
        router, script = self._router(name)
        bound: dict[str, Any] = {**script.parameters, "Action": action, "Router": name, "Prefix": prefix,
                                 "NextHop": (route.next_hop if route else None) or "",
                                 "Interface": (route.interface if route else None) or "",
                                 "Metric": route.metric if route else 0}
        text = script_text(script.path, self._root, what=f"script of router {name}")
        driver = PsDriver(self._remote, router.endpoint, timeout_s=script.timeout_s)
        [item] = _one(name, script.path, driver.call(
            "scripts/Invoke-AgentPlanScript", Key=f"{name}:{script.path}", ScriptText=text or "",
            ScriptPath="" if text is not None else script.path, ParametersJson=json.dumps(bound)))
        if item.error_id is not None:
            return make_error("script_failed", "permanent", f"the script {script.path} of router {name} failed: "
                              f"{item.error_message}", router=name, path=script.path,
                              fully_qualified_error_id=item.error_id)
        output = str((item.after if isinstance(item.after, dict) else {}).get("output") or "")
        return self._parse(name, output)

    def _parse(self, router: str, output: str) -> RouterScriptAnswer:
        lines = [line for line in output.splitlines() if line.strip()]
        if not lines:
            raise self._failed(router, "printed nothing; it must print one JSON document last "
                               f"(schema {ANSWER_SCHEMA!r})")
        try:
            return RouterScriptAnswer.model_validate(json.loads(lines[-1]))
        except ValueError as exc:  # JSONDecodeError and ValidationError are both ValueErrors
            shown = lines[-1] if len(lines[-1]) <= 200 else lines[-1][:200] + "..."
            why = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}"
                            for e in exc.errors()[:3]) if isinstance(exc, ValidationError) else str(exc)
            raise self._failed(router, f"answered what is not the documented document ({why}): {shown}") from None

    def _routes(self, router: str, answer: RouterScriptAnswer) -> list[Route]:
        try:
            return [Route(router=router, prefix=r.prefix, next_hop=r.next_hop, interface=r.interface,
                          metric=r.metric) for r in answer.routes]
        except ValidationError as exc:
            raise self._failed(router, f"answered a route that is not one: {exc.errors()[0]['msg']}") from None

    def _failed(self, router: str, why: str) -> RouterScriptError:
        path = self._router(router)[1].path
        return RouterScriptError(f"the script {path} of router {router} {why}", router=router, path=path)


def _one(router: str, path: str, items: list[RemoteItem]) -> list[RemoteItem]:
    if len(items) != 1:
        raise RouterScriptError(f"scripts/Invoke-AgentPlanScript answered {len(items)} items for one run of "
                                f"the script {path} of router {router}", router=router, path=path)
    return items


def _same(found: Route, wanted: Route) -> bool:
    """The route asked for: same next hop, and same interface when one was asked for."""
    return found.next_hop == wanted.next_hop and (wanted.interface is None or found.interface == wanted.interface)


"""Step actions on routers: withdraw and announce a moving subnet's routes, and put a router's
routes back as they were (cancel). What a router held for a prefix is snapshotted before the
first change, so the restore is exact.
"""

from __future__ import annotations

from agent.domain.model import Route
from agent.engine.actions.base import ActionContext, action, outcomes, tolerant
from agent.engine.model import ItemOutcome, StepResult
from agent.engine.steps import Item, RestoreRoutesArgs, RouteArgs
from agent.errors import TransientError


def _snapshot_key(router: str, prefix: str) -> str:
    return f"{router}/{prefix}"


def _snapshot_routes(ctx: ActionContext, router: str, prefixes: set[str]) -> None:
    current = ctx.call(f"routes.read@{router}", lambda: ctx.ports.routes.read_routes(router, sorted(prefixes)))
    ctx.journal.snapshot_many(scope=ctx.op_id, kind="routes", data={
        _snapshot_key(router, prefix): [r.model_dump(mode="json") for r in current if r.prefix == prefix]
        for prefix in prefixes})


@action("routes.withdraw", RouteArgs)
def withdraw(ctx: ActionContext, args: RouteArgs) -> StepResult:
    router = args.router
    routes = [it.route for it in args.items]
    try:
        _snapshot_routes(ctx, router, {r.prefix for r in routes})
    except TransientError:
        if not args.tolerate_unreachable:
            raise
    return StepResult(items=tolerant(ctx, args.tolerate_unreachable, args.items, f"routes.withdraw@{router}",
                                     lambda: ctx.ports.routes.withdraw(routes)))


@action("routes.announce", RouteArgs)
def announce(ctx: ActionContext, args: RouteArgs) -> StepResult:
    router = args.router
    routes = [it.route for it in args.items]
    _snapshot_routes(ctx, router, {r.prefix for r in routes})
    res = ctx.call(f"routes.announce@{router}", lambda: ctx.ports.routes.announce(routes))
    return StepResult(items=outcomes(args.items, res))


@action("routes.restore", RestoreRoutesArgs)
def restore(ctx: ActionContext, args: RestoreRoutesArgs) -> StepResult:
    """Put a router's routes for the prefixes operation ``scope`` changed back as they were."""
    router = args.router
    snaps = [s for s in ctx.journal.snapshots(scope=args.scope, kind="routes")
             if s.key.startswith(_snapshot_key(router, ""))]
    if not snaps:
        return StepResult()
    prefixes = sorted({s.key[len(_snapshot_key(router, "")):] for s in snaps})
    now = set(ctx.call(f"routes.read@{router}", lambda: ctx.ports.routes.read_routes(router, prefixes)))
    before = {Route.model_validate(d) for s in snaps for d in s.data}
    extra, missing = sorted(now - before, key=str), sorted(before - now, key=str)
    done: list[ItemOutcome] = []
    if extra:
        withdrawn = ctx.call(f"routes.withdraw@{router}", lambda: ctx.ports.routes.withdraw(extra))
        done += outcomes([Item(key=f"withdraw {r.prefix}@{router}") for r in extra], withdrawn)
    if missing:
        announced = ctx.call(f"routes.announce@{router}", lambda: ctx.ports.routes.announce(missing))
        done += outcomes([Item(key=f"announce {r.prefix}@{router}") for r in missing], announced)
    return StepResult(items=done)

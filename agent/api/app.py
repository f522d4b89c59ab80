"""The FastAPI application of the served agent (``failover-agent serve``).

``create_app`` takes what it serves from (:class:`agent.api.served.Served`); nothing here opens a
store or reads a config, so tests build an app on a rig and serve it with uvicorn at a free port.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from agent import __version__
from agent.api import pages, problems
from agent.api.auth import Tokens
from agent.api.polled import PolledOperations
from agent.api.routes import inventory, meta, operations
from agent.api.routes.inventory import InventoryCache
from agent.api.served import Served
from agent.api.viewcache import ViewCache, read_store
from agent.engine.journal import Journal
from agent.remotecalls import remote_call_observers

DESCRIPTION = """The local control API of failover-agent: the network side of Hyper-V / VMM disaster
recovery. Every route but `/v1/health` needs `Authorization: Bearer <token>`
(`failover-agent token create`); scopes: `read` < `operate` < `admin`. Errors are
`application/problem+json` with the agent's stable error `code`."""


def create_app(served: Served, *, tokens: Tokens | None = None) -> FastAPI:
    app = FastAPI(title="failover-agent", version=__version__, description=DESCRIPTION,
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None)
    app.state.served = served
    app.state.tokens = tokens or Tokens(served.config.api)
    served.inventory_cache = InventoryCache(served)
    reads = read_store(served.store)
    journal = Journal(reads)
    served.views = ViewCache(reads, lambda op_id: operations.full_view_json(served, op_id, journal), owned=True)
    app.state.remote_calls = meta.RemoteCalls()
    remote_call_observers.append(app.state.remote_calls.observe)
    problems.install(app)
    app.add_middleware(PolledOperations, views=served.views, tokens=app.state.tokens)
    for router in (meta.router, operations.router, inventory.router):
        _publish_scopes(router)
        app.include_router(router, responses=problems.RESPONSES)
    pages.install(app)  # the status page: not API, so not in the OpenAPI document
    return app


def _publish_scopes(router: APIRouter) -> None:
    """Each route's OpenAPI operation says the scope it needs (``x-required-scope``), read off
    its ``require(scope)`` dependency: the auth matrix test checks every route against it."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        names = [d.call.__name__ for d in route.dependant.dependencies if d.call is not None]
        scopes = [n.removeprefix("require_") for n in names if n.startswith("require_")]
        route.openapi_extra = {**(route.openapi_extra or {}), "x-required-scope": scopes[0] if scopes else None}

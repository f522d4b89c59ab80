"""``GET /v1/operations/{id}`` while nothing changed: answered before FastAPI's routing.

Orchestrators and status pages poll this one route many times a second while an operation
runs, and almost every answer is the view kept by :class:`agent.api.viewcache.ViewCache`. Routing,
dependency resolution and the thread-pool hop of a sync route cost more server CPU than that
answer itself, and under a running operation each hop also waits for the GIL the engine's step
threads hold; so :class:`PolledOperations`, an ASGI middleware, answers the request itself when,
and only when, the answer is certain to be the route's:

- the bearer token is one of this agent's, with scope ``read`` (checked on every request, as the
  route's dependency does, and a good token clears its client's failure count the same way);
- the kept view's signature is the store's now (one query, run on the event loop: it is one
  indexed read, and a thread hop would cost more than it).

Anything else -- no token, a bad one, a missing scope, an unknown operation, a view not kept or
changed, the store failing -- goes on to the route, which answers it (401, 403, 404, 503 as
problem+json, or the rebuilt view, kept for the next poll). Both paths answer through
:func:`view_response`: same body, same headers.
"""

from __future__ import annotations

from datetime import datetime

from fastapi.security.utils import get_authorization_scheme_param
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from agent.api.auth import Tokens
from agent.api.viewcache import Encoded, ViewCache
from agent.engine.store import utcnow

PREFIX = "/v1/operations/"


def view_response(encoded: Encoded, if_none_match: str | None, now: datetime) -> Response:
    """The operation's answer: 304 when the caller already has this view (``If-None-Match``
    with its ``ETag``), else the view with its elapsed time as of ``now``."""
    headers = {"ETag": encoded.etag, "Cache-Control": "no-cache"}
    if if_none_match is not None and matches(if_none_match, encoded.etag):
        return Response(status_code=304, headers=headers)
    return Response(encoded.render(now), media_type="application/json", headers=headers)


def matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 13.1.2: weak comparison against each entity tag listed, or ``*``."""
    if if_none_match.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(t.strip().removeprefix("W/") == ours for t in if_none_match.split(","))


class PolledOperations:
    def __init__(self, app: ASGIApp, *, views: ViewCache, tokens: Tokens) -> None:
        self.app = app
        self.views = views
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            op_id = path[len(PREFIX):] if path.startswith(PREFIX) else ""
            if op_id and "/" not in op_id:
                response = self._answer(scope, op_id)
                if response is not None:
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope, op_id: str) -> Response | None:
        authorization = if_none_match = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's Headers.get
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"if-none-match" and if_none_match is None:
                if_none_match = value.decode("latin-1")
        # As fastapi.security.HTTPBearer reads it; anything it would not accept is the route's.
        scheme, credentials = get_authorization_scheme_param(authorization)
        if not (authorization and scheme and credentials) or scheme.lower() != "bearer":
            return None
        caller = self.tokens.caller(credentials)
        if caller is None or not caller.may("read"):
            return None
        try:
            encoded = self.views.cached(op_id)
        except Exception:  # the route meets it again and answers it as a problem
            return None
        if encoded is None:
            return None
        client = scope.get("client")
        self.tokens.succeeded(client[0] if client else "unknown")
        return view_response(encoded, if_none_match, utcnow())

"""Bearer tokens: who calls, with which scope.

Tokens are compared by their SHA-256 (``api.tokens[].sha256``), in constant time, so neither the
config nor a timing difference gives one away. Scopes are ordered: ``admin`` includes
``operate``, which includes ``read``.

Failed authentications slow their client down: each failure in a row from one address waits
longer before its answer (``api.failed_auth_delay_s``, doubling, at most 5 s), so guessing is
slow while a caller with a good token is never delayed. The token itself is never logged: only
the name it belongs to.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agent.configapi import SCOPES, Api, Scope
from agent.errors import AgentError

TOKEN_PREFIX = "fa_"
MAX_DELAY_S = 5.0


class Unauthenticated(AgentError):
    code = "unauthenticated"


class Forbidden(AgentError):
    code = "forbidden"


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: frozenset[Scope]

    def may(self, scope: Scope) -> bool:
        rank = SCOPES.index(scope)
        return any(SCOPES.index(s) >= rank for s in self.scopes)

    @property
    def actor(self) -> str:
        """How the journal and audit trail name this caller."""
        return f"api:{self.name}"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    def __init__(self, api: Api, extra: dict[str, tuple[str, frozenset[Scope]]] | None = None) -> None:
        self._by_hash: dict[str, Caller] = {t.sha256: Caller(t.name, frozenset(t.scopes)) for t in api.tokens}
        for digest, (name, scopes) in (extra or {}).items():
            self._by_hash[digest] = Caller(name, scopes)
        self.base_delay_s = api.failed_auth_delay_s
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def caller(self, token: str) -> Caller | None:
        digest = token_hash(token)
        found = None
        for known, caller in self._by_hash.items():  # every entry, so the time says nothing
            if hmac.compare_digest(known, digest):
                found = caller
        return found

    def failed(self, client: str) -> float:
        """Count a failure from ``client``; the delay its answer waits."""
        with self._lock:
            n = self._failures.get(client, 0) + 1
            self._failures[client] = n
            if len(self._failures) > 10000:  # bounded memory under a spray from many addresses
                self._failures.clear()
        if n <= 1 or self.base_delay_s == 0:
            return 0.0
        return min(MAX_DELAY_S, self.base_delay_s * 2 ** (n - 2))

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


_bearer = HTTPBearer(auto_error=False, description="A token from `failover-agent token create`.")


def require(scope: Scope) -> Callable[..., Awaitable[Caller]]:
    """FastAPI dependency: the caller, who must hold ``scope``; 401 or 403 otherwise."""

    async def dependency(request: Request,
                         credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Caller:
        tokens: Tokens = request.app.state.tokens
        client = request.client.host if request.client else "unknown"
        caller = tokens.caller(credentials.credentials) if credentials is not None else None
        if credentials is None:  # not a guess: nothing to slow down
            raise Unauthenticated("this call needs a bearer token (Authorization: Bearer <token>)")
        if caller is None:
            delay = tokens.failed(client)
            if delay:
                await asyncio.sleep(delay)
            raise Unauthenticated("the bearer token is not one of this agent's tokens")
        tokens.succeeded(client)
        if not caller.may(scope):
            raise Forbidden(f"token {caller.name!r} lacks scope {scope!r} (it has {', '.join(sorted(caller.scopes))})",
                            needed=scope)
        request.state.caller = caller
        return caller

    dependency.__name__ = f"require_{scope}"
    return dependency

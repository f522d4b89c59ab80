"""Browser sessions for the status page: a site admin signs in once with a token, and the browser
then holds a cookie naming a session kept here.

A bearer header is awkward in a browser, and a token in a cookie would be the credential itself,
sent with every request and kept on disk by the browser. So ``POST /login`` checks the token
(with the same slowdown of failed attempts as the bearer path) and the cookie holds a random
session id instead: ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's
page sends it), ``Secure`` when the agent serves TLS, expiring after :data:`SESSION_TTL_S`.
The server keeps only the id's SHA-256, so neither a memory dump nor a log line holds a usable one.

The cookie is accepted by the page routes only (``agent.api.pages``), never by ``/v1``: the
API's mutating calls stay bearer-only, so no other site can make a signed-in browser call them.
The page's own forms (resume, cancel, sign out) carry the session's CSRF token, checked in
constant time on every POST, and a POST whose ``Origin`` or ``Sec-Fetch-Site`` says it came from
another site is refused before that (the login form included: it has no session yet).

Sessions live in this process: a restarted agent, or a second agent behind a load balancer,
asks to sign in again -- a few seconds of an admin's time, against a table of live credentials
in the shared store.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from fastapi import Request

from agent.api.auth import Caller
from agent.configapi import Scope

COOKIE = "fa_session"
SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 1000
"""Beyond this, signing in drops the sessions that expire soonest: memory stays bounded."""
MAX_FORM_BYTES = 8192


class LoginNeeded(Exception):
    """No valid session: a browser is sent to the login form."""


class PageForbidden(Exception):
    """A session without the scope, or a POST that failed its CSRF or origin check."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Session:
    caller: Caller
    csrf: str
    expires_at: float
    flash: list[str] = field(default_factory=list)
    """Messages for the next page shown (the outcome of a button pressed), then dropped."""


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    def __init__(self, *, ttl_s: float = SESSION_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._by_digest: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, caller: Caller) -> tuple[str, Session]:
        """A new session (a new id at every sign-in: no id chosen before it is ever trusted)."""
        session_id = secrets.token_urlsafe(32)
        session = Session(caller, secrets.token_urlsafe(32), self._clock() + self.ttl_s)
        with self._lock:
            now = self._clock()
            self._by_digest = {d: s for d, s in self._by_digest.items() if s.expires_at > now}
            while len(self._by_digest) >= MAX_SESSIONS:
                del self._by_digest[min(self._by_digest, key=lambda d: self._by_digest[d].expires_at)]
            self._by_digest[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        digest = _digest(session_id)
        with self._lock:
            session = self._by_digest.get(digest)
            if session is not None and session.expires_at <= self._clock():
                del self._by_digest[digest]
                return None
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._by_digest.pop(_digest(session_id), None)


@dataclass(frozen=True)
class PageCaller:
    """Who looks at the page, through which session."""

    caller: Caller
    session: Session
    session_id: str

    @property
    def may_operate(self) -> bool:
        return self.caller.may("operate")


def sessions_of(request: Request) -> Sessions:
    found: Sessions = request.app.state.sessions
    return found


def session_of(request: Request) -> tuple[str, Session] | None:
    session_id = request.cookies.get(COOKIE)
    session = sessions_of(request).get(session_id)
    return None if session is None or session_id is None else (session_id, session)


def require_page(scope: Scope) -> Callable[..., Awaitable[PageCaller]]:
    """FastAPI dependency of the page routes: the session's caller, who must hold ``scope``.
    No session: :class:`LoginNeeded`. A POST must also pass :func:`check_post`."""

    async def dependency(request: Request) -> PageCaller:
        found = session_of(request)
        if found is None:
            raise LoginNeeded()
        session_id, session = found
        if request.method == "POST":
            await check_post(request, csrf=session.csrf)
        if not session.caller.may(scope):
            raise PageForbidden(f"{session.caller.name} lacks scope {scope!r} "
                                f"(it has {', '.join(sorted(session.caller.scopes))})")
        return PageCaller(session.caller, session, session_id)

    dependency.__name__ = f"require_page_{scope}"
    return dependency


async def form(request: Request) -> dict[str, str]:
    """The POSTed form's fields (first value of each), read without python-multipart: the
    page's forms are small and urlencoded, and anything else is refused."""
    cached: dict[str, str] | None = getattr(request.state, "form", None)
    if cached is not None:
        return cached
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise PageForbidden("the page's forms are sent as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PageForbidden("the form is larger than any of the page's forms")
    fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
    request.state.form = fields
    return fields


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another site's page. Browsers send
    ``Sec-Fetch-Site`` and ``Origin`` with a form POST; a client that sends neither (curl, a
    test) is not a browser carrying someone else's cookie, and the CSRF token still applies."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    parsed = urlsplit(origin)
    return parsed.scheme == request.url.scheme and parsed.netloc.lower() == host.lower()


async def check_post(request: Request, *, csrf: str | None) -> dict[str, str]:
    """Refuse a cross-site POST, and one whose ``csrf`` field is not the session's token."""
    if not same_origin(request):
        raise PageForbidden("this form was sent from another site's page")
    fields = await form(request)
    if csrf is not None and not hmac.compare_digest(fields.get("csrf", "").encode(), csrf.encode()):
        raise PageForbidden("the form's CSRF token is not this session's: reload the page and try again")
    return fields


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this agent only (never ``//elsewhere``)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if not all(c.isalnum() or c in "/-_." for c in target):
        return "/"
    return target

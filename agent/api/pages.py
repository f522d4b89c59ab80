"""The status page for site admins, served by the agent: server-rendered HTML, no build step.

``GET /`` (also ``/status``) shows the recovery plans with their state and the kinds that can
start now, the operations in progress (percent, where each stands), the manual pauses with
their instructions, the pools with used and free addresses, the reservations the agent holds
and the last :data:`AUDIT_SHOWN` audit entries. It reloads itself every :data:`REFRESH_S`
seconds (``<meta http-equiv=refresh>``): progress stays live with no script at all, so the
page's policy can forbid every script. A session with ``operate`` also gets Resume and Cancel
buttons: plain forms carrying the session's CSRF token (:mod:`agent.api.sessions`), answered
with a redirect back to the page and a one-time message saying what happened. Cancel asks
again on a page of its own, which does not reload under the admin's hand.

Sign-in is by form (``/login``) with a token; the session cookie it sets is honoured by these
routes only. ``/reports/{id}`` serves an operation's drill report to the signed-in browser.

Every value shown (VM names, instructions, audit details) comes from sites, configs and
operators: Jinja2 autoescapes all of it, control and bidi characters are shown as escapes, and
the Content-Security-Policy of every page (:data:`PAGE_POLICY`) runs no script even if markup
got through. None of these routes is in the OpenAPI document: they are pages, not API.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import jinja2
import markupsafe
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from agent import __version__
from agent.api import sessions as ses
from agent.api.auth import Tokens
from agent.api.routes import inventory
from agent.api.routes.operations import ServedDep, report_response
from agent.api.served import Served
from agent.api.sessions import LoginNeeded, PageCaller, PageForbidden, require_page, safe_next
from agent.engine.model import FINAL_STATUSES, OperationView, OpStatus
from agent.engine.store import AuditRow, utcnow
from agent.errors import AgentError
from agent.report.render import duration, utc
from agent.terminal import visible

router = APIRouter(include_in_schema=False)

REFRESH_S = 5
AUDIT_SHOWN = 50
RECENT_SHOWN = 20
ACTIVE_SHOWN = 100
DETAILS_SHOWN = 400
"""Characters of an audit entry's details on the page (the drill report has all of them)."""

PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'; "
               "frame-ancestors 'none'")
"""No script, nothing loaded; forms post to this agent only; no other site frames the page (its
buttons cannot be clicked through a decoy)."""

RESUMABLE = {OpStatus.WAITING.value, OpStatus.FAILED.value, OpStatus.INTERRUPTED.value}
FINAL = sorted(s.value for s in FINAL_STATUSES)
UNFINISHED = sorted({s.value for s in OpStatus} - set(FINAL))

T = TypeVar("T")
Read = Annotated[PageCaller, Depends(require_page("read"))]
Operate = Annotated[PageCaller, Depends(require_page("operate"))]


def page_headers() -> dict[str, str]:
    # Referrer-Policy same-origin, not no-referrer: under no-referrer Chromium sends a form's
    # POST with "Origin: null", which the origin check must refuse (a sandboxed frame sends it).
    return {"Content-Security-Policy": PAGE_POLICY, "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=page_headers())


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=page_headers())


# ---------------------------------------------------------------------------- templates


def _environment() -> jinja2.Environment:
    """As the drill report's (agent.report.render): autoescape everything, fail on a misspelt
    name, show control and bidi characters as escapes."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("agent.api", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=lambda v: visible(v) if isinstance(v, str) and not isinstance(v, markupsafe.Markup) else v,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(duration=duration, utc=utc, visible=visible)
    return env


_ENV: jinja2.Environment | None = None


def render(template: str, **values: Any) -> str:
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    return _ENV.get_template(template).render(version=__version__, **values)


# ------------------------------------------------------------------------------- sign-in


@router.get("/login")
def login_form(request: Request, next: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    if ses.session_of(request) is not None:
        return _redirect(safe_next(next))
    return _html(render("login.html.j2", next=safe_next(next), error=None))


@router.post("/login")
async def login(request: Request) -> Response:
    fields = await ses.check_post(request, csrf=None)
    tokens: Tokens = request.app.state.tokens
    client = request.client.host if request.client else "unknown"
    caller = tokens.caller(fields.get("token", "").strip())
    target = safe_next(fields.get("next"))
    if caller is None:
        delay = tokens.failed(client)  # guessing through the form is as slow as through the header
        if delay:
            await asyncio.sleep(delay)
        return _html(render("login.html.j2", next=target, error="That is not one of this agent's tokens."), 401)
    tokens.succeeded(client)
    session_id, session = ses.sessions_of(request).create(caller)
    response = _redirect(target)
    response.set_cookie(ses.COOKIE, session_id, max_age=int(ses.sessions_of(request).ttl_s), path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout(request: Request, who: Read) -> Response:
    ses.sessions_of(request).end(who.session_id)
    response = _redirect("/login")
    response.delete_cookie(ses.COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


# ------------------------------------------------------------------------------ the page


@router.get("/")
@router.get("/status")
def status_page(s: ServedDep, who: Read) -> Response:
    flash = list(who.session.flash)
    who.session.flash.clear()  # each message once: a reload does not say it again
    return _html(render("status.html.j2", **status_facts(s, who), flash=flash, refresh_s=REFRESH_S))


def _read(what: Callable[[], T]) -> tuple[T | None, str | None]:
    """One section's facts, or why they could not be read: a site that does not answer blanks
    its sections, not the page (the operations and the audit come from the store)."""
    try:
        return what(), None
    except AgentError as exc:
        return None, exc.message


def status_facts(s: Served, who: PageCaller) -> dict[str, Any]:
    now = utcnow()
    ops, ops_error = _read(lambda: [s.engine.view(r.id) for r in s.engine.operations(status=UNFINISHED,
                                                                                       limit=ACTIVE_SHOWN)])
    recent, recent_error = _read(lambda: _finished(s, now))
    fresh = _settled_since_read(s, [*(ops or []), *(recent or [])])
    plans, plans_error = _read(lambda: inventory.plans(s, who.caller, fresh)["plans"])
    pools, pools_error = _read(lambda: inventory.pools(s, who.caller, False)["pools"])
    reservations, reservations_error = _read(lambda: inventory.reservations(s, who.caller)["reservations"])
    audit, audit_error = _read(lambda: _audit(s))
    active = ops or []
    return {
        "now": now, "who": who, "csrf": who.session.csrf, "role": s.role, "site": s.config.agent.site,
        "plans": plans or [], "plans_error": plans_error,
        "active": active, "paused": [o for o in active if o.status == OpStatus.WAITING.value],
        "recent": recent or [], "ops_error": ops_error or recent_error,
        "pools": pools or [], "pools_error": pools_error,
        "reservations": reservations or [], "reservations_error": reservations_error,
        "audit": audit or [], "audit_error": audit_error,
        "resumable": RESUMABLE, "current_step": current_step, "elapsed": lambda o: o.elapsed_s(now),
    }


@dataclass(frozen=True)
class Finished:
    """A finished operation as the page lists it: its row is enough, its steps are not read."""

    id: str
    kind: str
    plan: str
    status: str
    finished_at: datetime | None
    elapsed_s: float


def _finished(s: Served, now: datetime) -> list[Finished]:
    return [Finished(r.id, r.kind, r.plan_name, r.status, r.finished_at,
                     ((r.finished_at or now) - r.created_at).total_seconds())
            for r in s.engine.operations(status=FINAL, limit=RECENT_SHOWN)]


def _settled_since_read(s: Served, ops: list[OperationView | Finished]) -> bool:
    """True when an operation ended or paused after the sites were last read: the plans' states
    are then read again, so the page never shows a drill that just ended as not run. Between
    such moments the API's cache (a read at most every 15 s) spares VMM a read per reload."""
    read_at = getattr(s.inventory_cache, "read_at", None)
    if read_at is None:
        return False  # never read: this read is fresh anyway
    moments = [o.finished_at for o in ops if o.finished_at is not None]
    moments += [st.started_at for o in ops if isinstance(o, OperationView)
                for st in o.steps if st.status == "waiting" and st.started_at]
    return any(at > read_at for at in moments)


def current_step(op: OperationView) -> str | None:
    """Where the operation stands: its first step not done (running, waiting, failed or next)."""
    for step in op.steps:
        if step.status not in ("succeeded", "skipped"):
            return f"{step.name} ({step.status})"
    return None


def _audit(s: Served) -> list[dict[str, Any]]:
    with s.store.session() as session:
        rows = list(session.scalars(select(AuditRow).order_by(AuditRow.id.desc()).limit(AUDIT_SHOWN)))
    return [{"id": r.id, "at": r.at, "actor": r.actor, "action": r.action, "target": r.target,
             "operation": r.operation_id, "details": _details(r.details)} for r in rows]


def _details(value: Any) -> str:
    if value is None:
        return ""
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= DETAILS_SHOWN else text[:DETAILS_SHOWN] + " ..."


# ------------------------------------------------------------------------------- actions


@router.post("/status/operations/{op_id}/resume")
def resume(op_id: str, s: ServedDep, who: Operate) -> Response:
    try:
        s.resume(op_id, caller=who.caller.actor)
    except AgentError as exc:
        who.session.flash.append(f"{op_id} was not resumed: {exc.message}")
    else:
        who.session.flash.append(f"{op_id} resumed by {who.caller.name}.")
    return _redirect(f"/#{op_id}")


@router.get("/status/operations/{op_id}/cancel")
def cancel_form(op_id: str, s: ServedDep, who: Operate) -> Response:
    try:
        op = s.engine.view(op_id)
    except AgentError as exc:
        who.session.flash.append(f"{op_id}: {exc.message}")
        return _redirect("/")
    return _html(render("cancel.html.j2", op=op, step=current_step(op), csrf=who.session.csrf))


@router.post("/status/operations/{op_id}/cancel")
async def cancel(op_id: str, request: Request, s: ServedDep, who: Operate) -> Response:
    fields = await ses.form(request)
    if fields.get("confirm") != "yes":
        who.session.flash.append(f"{op_id} was not cancelled: confirm it on its Cancel page.")
        return _redirect(f"/#{op_id}")
    try:
        await asyncio.to_thread(s.cancel, op_id, caller=who.caller.actor)
    except AgentError as exc:
        who.session.flash.append(f"{op_id} was not cancelled: {exc.message}")
    else:
        who.session.flash.append(f"{op_id} cancelled by {who.caller.name}: what is safe to undo is undone.")
    return _redirect(f"/#{op_id}")


@router.get("/reports/{op_id}")
def report(op_id: str, s: ServedDep, _who: Read,
           format: Annotated[Literal["html", "csv"], Query()] = "html") -> Response:
    response = report_response(s, op_id, format, link=lambda other: f"/reports/{other}")
    response.headers.update({k: v for k, v in page_headers().items() if k != "Content-Security-Policy"})
    return response


# -------------------------------------------------------------------------------- wiring


def install(app: FastAPI) -> None:
    """Add the page routes and what answers their refusals in HTML."""
    from agent.api.sessions import Sessions

    app.state.sessions = Sessions()
    app.include_router(router)

    @app.exception_handler(LoginNeeded)
    async def login_needed(request: Request, _exc: LoginNeeded) -> Response:
        path = request.url.path if request.method == "GET" else "/"
        return _redirect("/login" if path == "/" else f"/login?next={safe_next(path)}")

    @app.exception_handler(PageForbidden)
    async def forbidden(_request: Request, exc: PageForbidden) -> Response:
        return _html(render("refused.html.j2", message=exc.message), 403)

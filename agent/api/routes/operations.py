"""``/v1/operations``: start, follow, resume, cancel and annotate operations."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, StreamingResponse
from sqlalchemy import select

from agent.api.auth import Caller, require
from agent.api.polled import view_response
from agent.api.schemas import Note, Operation, Operations, StartableKind, StartOperation
from agent.api.served import Served
from agent.engine.journal import Journal
from agent.engine.model import FINAL_STATUSES, OperationKind, OpStatus
from agent.engine.store import OperationRow, utcnow
from agent.errors import NotFoundError

router = APIRouter(prefix="/v1/operations", tags=["operations"])

SETTLED = {s.value for s in FINAL_STATUSES} | {OpStatus.FAILED.value, OpStatus.WAITING.value}
"""Where an event stream ends: nothing more happens until someone acts."""

EVENT_POLL_S = 0.25


async def served(request: Request) -> Served:  # async: a sync dependency costs a thread hop
    served_by: Served = request.app.state.served
    return served_by


ServedDep = Annotated[Served, Depends(served)]


def view_json(s: Served, op_id: str) -> dict[str, Any]:
    return s.engine.view(op_id).to_json(utcnow())


def full_view_json(s: Served, op_id: str, journal: Journal | None = None) -> dict[str, Any]:
    """``GET /v1/operations/{id}``: the view, who asked and the plan it is pinned to, as
    'ops show --json' says them; read through ``journal`` (default: the engine's)."""
    journal = journal or s.engine.journal
    view = journal.view(op_id).to_json(utcnow())  # raises NotFoundError for an unknown id
    # Two columns, not the row: the row carries the plan (1.4 MB of JSON for 1,000 VMs), and
    # parsing it cost more than the whole view on every rebuild of a running operation's.
    with journal.store.session() as session:
        row = session.execute(select(OperationRow.requested_by, OperationRow.plan_checksum)
                              .where(OperationRow.id == op_id)).one()
    return {**view, "requested_by": row.requested_by, "plan_checksum": row.plan_checksum}


def _location(op_id: str) -> str:
    return f"/v1/operations/{op_id}"


@router.get("", response_model=Operations, summary="List operations, newest first")
def list_operations(s: ServedDep, _caller: Annotated[Caller, Depends(require("read"))],
                    status: Annotated[list[str] | None, Query(max_length=16)] = None,
                    kind: Annotated[StartableKind | None, Query()] = None,
                    plan: Annotated[str | None, Query(max_length=128)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    rows = s.engine.operations(status=status, limit=limit if kind is None and plan is None else 10000)
    rows = [r for r in rows
            if (kind is None or r.kind == kind) and (plan is None or r.plan_name.lower() == plan.lower())]
    return {"operations": [view_json(s, r.id) for r in rows[:limit]]}


@router.post("", status_code=202, response_model=Operation,
             summary="Start an operation; follow it at the Location returned",
             responses={200: {"model": Operation, "description": "A retry: this Idempotency-Key started it"}})
def start_operation(body: StartOperation, response: Response, s: ServedDep,
                    caller: Annotated[Caller, Depends(require("operate"))],
                    idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> dict[str, Any]:
    if s.config.plan(body.plan) is None:
        known = ", ".join(p.name for p in s.config.recovery_plans) or "none"
        raise NotFoundError(f"no recovery plan named {body.plan!r} in the config (known: {known})",
                            plan=body.plan)
    started = s.start(OperationKind(body.kind), body.plan, caller=caller.actor, checksum=body.plan_checksum,
                      take_over=body.options.take_over_dns, idempotency_key=idempotency_key or None,
                      recovery_point=body.options.recovery_point)
    response.headers["Location"] = _location(started.op_id)
    if started.replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    elif body.options.confirmed is not None:  # who let it change production, and how (as the CLI records it)
        by = {"yes": "--yes", "terminal": "answer at the terminal"}[body.options.confirmed]
        s.store.audit(actor=caller.actor, action="operation.confirmed", operation_id=started.op_id, target=body.plan,
                      details={"by": f"{by} (through the API)", "checksum": body.plan_checksum or "not pinned"})
    return view_json(s, started.op_id)


@router.get("/{op_id}", response_model=Operation, summary="One operation: steps, progress, errors",
            description="The answer carries a weak `ETag`: send it back in `If-None-Match` and the answer is "
                        "304 with no body while nothing but the elapsed time changed.",
            responses={304: {"description": "Nothing but the elapsed time changed since the ETag given"}})
async def get_operation(op_id: str, s: ServedDep, _caller: Annotated[Caller, Depends(require("read"))],
                        if_none_match: Annotated[str | None, Header(max_length=2000)] = None) -> Response:
    # Polls of a view that did not change are answered before routing (agent.api.polled); this
    # is the rest: the first poll, a changed view (rebuilt off the event loop), and every refusal.
    # Encoded straight from the journal's view, without a second validation pass through the
    # response model (its schema is still published, and the schemathesis test checks every
    # answer against it).
    encoded = await run_in_threadpool(s.views.current, op_id)
    return view_response(encoded, if_none_match, utcnow())


@router.post("/{op_id}/resume", status_code=202, response_model=Operation,
             summary="Continue after a manual pause, the orchestrator's pause, a failure or an interruption")
def resume_operation(op_id: str, response: Response, s: ServedDep,
                     caller: Annotated[Caller, Depends(require("operate"))]) -> dict[str, Any]:
    s.resume(op_id, caller=caller.actor)
    response.headers["Location"] = _location(op_id)
    return view_json(s, op_id)


@router.post("/{op_id}/cancel", status_code=202, response_model=Operation,
             summary="Cancel and undo what is safe to undo")
def cancel_operation(op_id: str, response: Response, s: ServedDep,
                     caller: Annotated[Caller, Depends(require("operate"))]) -> dict[str, Any]:
    s.cancel(op_id, caller=caller.actor)
    response.headers["Location"] = _location(op_id)
    return view_json(s, op_id)


@router.post("/{op_id}/notes", status_code=201, response_model=Operation, summary="Add a note (shown in reports)")
def add_note(op_id: str, body: Note, s: ServedDep,
             caller: Annotated[Caller, Depends(require("operate"))]) -> dict[str, Any]:
    s.engine.journal.add_note(op_id, caller.actor, body.text)
    s.store.audit(actor=caller.actor, action="operation.note", operation_id=op_id)
    return view_json(s, op_id)


@router.get("/{op_id}/events", summary="Server-sent events: the operation as it changes",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`progress` events with the operation, then one `end`"}})
async def operation_events(op_id: str, request: Request, s: ServedDep,
                           _caller: Annotated[Caller, Depends(require("read"))]) -> StreamingResponse:
    first = await run_in_threadpool(view_json, s, op_id)  # 404 before the stream starts

    async def stream() -> AsyncIterator[str]:
        shown: dict[str, Any] | None = None
        current = first
        while True:
            changed = {k: v for k, v in current.items() if k != "elapsed_s"}
            if changed != shown:
                shown = changed
                yield _event("progress", current)
            if current["status"] in SETTLED:
                yield _event("end", current)
                return
            await asyncio.sleep(EVENT_POLL_S)
            if await request.is_disconnected():
                return
            current = await run_in_threadpool(view_json, s, op_id)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.get("/{op_id}/report", summary="The drill report: a self-contained HTML page, or CSV",
            response_class=HTMLResponse,
            responses={200: {"content": {"text/html": {}, "text/csv": {}, "application/json": {}},
                             "description": "what ran, the timeline and recovery time, every change, errors, notes"}})
def operation_report(op_id: str, s: ServedDep, _caller: Annotated[Caller, Depends(require("read"))],
                     format: Annotated[Literal["html", "csv", "json"], Query()] = "html") -> Response:
    return report_response(s, op_id, format, link=lambda other: f"/v1/operations/{other}/report")


def report_response(s: Served, op_id: str, format: str, *, link: Callable[[str], str]) -> Response:
    """The drill report of ``op_id`` as served (here and by the status page's ``/reports``):
    ``link(other id)`` is where the page links another operation's report."""
    from fastapi.responses import JSONResponse

    from agent.report import CONTENT_SECURITY_POLICY, build_report, render_csv, render_html

    report = build_report(s.store, s.engine.journal.operation(op_id).id)
    if format == "json":  # the report's facts, as 'failover-agent report --json' prints them
        return JSONResponse(report.to_json())
    if format == "csv":
        return Response(render_csv(report), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{op_id}.csv"'})
    return HTMLResponse(render_html(report, link=link),
                        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY + "; frame-ancestors 'none'"})

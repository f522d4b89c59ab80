"""Errors as ``application/problem+json`` (RFC 9457): the agent's stable error code and its
structured fields, so an orchestrator branches on ``code``, never on the wording.

The HTTP status follows the error's meaning: a refusal (the operation cannot apply now, a
checksum that no longer matches) is 409, a missing thing 404, a bad request 422, a store or site
that cannot be reached and a standby's refusal 503 (retry, perhaps elsewhere).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.errors import AgentError, NotFoundError, RefusedError

PROBLEM = "application/problem+json"

_STATUS_BY_CODE = {
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "unknown_operation": 404,
    "unknown_plan": 404,
    "idempotency_key_reused": 422,
    "invalid_request": 422,
}


def _problem_schema() -> dict[str, Any]:
    return {"type": "object", "required": ["type", "title", "status", "detail", "code"],
            "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                           "detail": {"type": "string"}, "code": {"type": "string"}},
            "additionalProperties": True}


def _documented(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": _problem_schema()}}}


RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented("The body is not JSON"),
    401: _documented("No token, or not one of this agent's"),
    403: _documented("The token lacks the scope this call needs"),
    404: _documented("No such operation, plan or route"),
    409: _documented("Refused: the operation cannot apply now (the plan's state, a changed plan checksum)"),
    422: _documented("Invalid request: each field and what is wrong with it"),
    503: _documented("Not now: a standby, or the store or a site cannot be reached; retry (Retry-After)"),
}
"""Every route may answer these problems; published so clients (and schemathesis) know them."""


def status_of(exc: AgentError) -> int:
    if exc.code in _STATUS_BY_CODE:
        return _STATUS_BY_CODE[exc.code]
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, RefusedError):
        return 409
    if exc.transient:
        return 503
    return 409 if exc.category == "permanent" and exc.code in ("conflict", "vm_busy", "lease_lost") else 500


def problem(status: int, title: str, detail: str, code: str, **fields: Any) -> JSONResponse:
    body = {"type": f"urn:failover-agent:error:{code}", "title": title, "status": status, "detail": detail,
            "code": code, **fields}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "5"}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(AgentError)
    async def agent_error(_request: Request, exc: AgentError) -> JSONResponse:
        status = status_of(exc)
        fields = {k: v for k, v in exc.fields.items() if k not in ("type", "title", "status", "detail", "code")}
        return problem(status, _title(status), exc.message, exc.code, category=exc.category, **fields)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
                  for e in exc.errors()]
        shown = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Invalid request", shown, "invalid_request", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem(exc.status_code, _title(exc.status_code), str(exc.detail), code)


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"

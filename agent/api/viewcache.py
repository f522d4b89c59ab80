"""The operation an orchestrator polls, answered without rebuilding it when nothing changed.

``GET /v1/operations/{id}`` is called every few seconds by every orchestrator and status page
while an operation runs; rebuilding the view reads every step of it (``Journal.view``). A
signature of what the view shows -- the operation row's last update, and per step table the
count in each status, the attempts, the latest intent, start and finish, and the notes -- is one
aggregate query; while it holds, the last view built is the answer, with only its elapsed time
brought up to now.

Every write the view reflects moves the signature: a status change updates the operation row,
a step's outcome and errors are written with its status or attempts (``Journal.record_outcome``,
``complete_manual``), a note adds a row.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from agent.engine.store import NoteRow, OperationRow, StepRow, Store

CACHED = 64


class ViewCache:
    def __init__(self, store: Store, build: Callable[[str], dict[str, Any]]) -> None:
        self.store = store
        self.build = build
        self._lock = threading.Lock()
        self._views: OrderedDict[str, tuple[tuple[Any, ...], dict[str, Any]]] = OrderedDict()

    def signature(self, op_id: str) -> tuple[Any, ...] | None:
        with self.store.session() as s:
            op = s.execute(select(OperationRow.updated_at, OperationRow.status, OperationRow.finished_at)
                           .where(OperationRow.id == op_id)).first()
            if op is None:
                return None
            steps = tuple(s.execute(
                select(StepRow.status, func.count(), func.sum(StepRow.attempts), func.max(StepRow.intent_at),
                       func.max(StepRow.started_at), func.max(StepRow.finished_at))
                .where(StepRow.operation_id == op_id).group_by(StepRow.status).order_by(StepRow.status)).all())
            notes = s.execute(select(func.count(), func.max(NoteRow.id)).where(NoteRow.operation_id == op_id)).one()
        return (tuple(op), tuple(tuple(r) for r in steps), tuple(notes))

    def get(self, op_id: str, now: datetime) -> dict[str, Any]:
        signature = self.signature(op_id)
        with self._lock:
            known = self._views.get(op_id)
            if signature is not None and known is not None and known[0] == signature:
                self._views.move_to_end(op_id)
                return _now(known[1], now)
        body = self.build(op_id)  # raises NotFoundError for an unknown id
        if signature is not None:
            with self._lock:
                self._views[op_id] = (signature, body)
                self._views.move_to_end(op_id)
                while len(self._views) > CACHED:
                    self._views.popitem(last=False)
        return body


def _now(body: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The cached view with its elapsed time as of ``now`` (the one value that moves alone)."""
    if body.get("finished_at") is not None:
        return body
    created = datetime.fromisoformat(body["created_at"])
    return {**body, "elapsed_s": round((now - created).total_seconds(), 3)}

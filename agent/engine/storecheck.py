"""Reading the store when some of its rows are damaged (a disk error, a hand edit, a restore of a
half-written file): which operation, row and column cannot be read, so that ``ops list`` shows
the rest and ``ops show`` says what is wrong instead of crashing.

A row is read the way the store reads it (each column's own type conversion), from the raw
values, column by column; the journal's rules on top (a known status and kind, JSON of the
shape the views read) are checked the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Table, select, text

from agent.engine.model import OperationKind, OpStatus, StepStatus
from agent.engine.store import AuditRow, NoteRow, OperationRow, StepRow, Store
from agent.errors import AgentError, RefusedError

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class BadCell:
    operation: str
    table: str
    row: str
    column: str
    problem: str

    def __str__(self) -> str:
        return f"operation {self.operation}: {self.table} row {self.row}, column {self.column}: {self.problem}"


class UnreadableOperation(RefusedError):
    """Rows of an operation in the store cannot be read; ``cells`` says which."""

    code = "store_row_unreadable"

    def __init__(self, op_id: str, cells: Sequence[BadCell]) -> None:
        self.cells = list(cells)
        listing = "".join(f"\n  {c}" for c in cells) or f" operation {op_id}: a row cannot be read"
        super().__init__(f"the store holds rows that cannot be read (damaged, or edited by hand):{listing}",
                         operation=op_id)


_SHAPES: dict[tuple[str, str], Callable[[Any], str | None]] = {
    ("operations", "status"): lambda v: None if v in set(OpStatus) else f"{v!r} is not an operation status",
    ("operations", "kind"): lambda v: None if v in set(OperationKind) else f"{v!r} is not an operation kind",
    ("operations", "plan"): lambda v: None if v is None or isinstance(v, dict) else "not a JSON object",
    ("operations", "result"): lambda v: None if v is None or isinstance(v, dict) else "not a JSON object",
    ("steps", "status"): lambda v: None if v in set(StepStatus) else f"{v!r} is not a step status",
    ("steps", "outcome"): lambda v: None if v is None or isinstance(v, dict) else "not a JSON object",
    ("steps", "errors"): lambda v: None if v is None or isinstance(v, list) else "not a JSON list",
    ("steps", "attempts"): lambda v: None if isinstance(v, int) else "not a whole number",
    ("steps", "ordinal"): lambda v: None if isinstance(v, int) else "not a whole number",
}


def _convert(store: Store, table: Table, raw: Any, operation: str, row_id: str) -> tuple[dict[str, Any], list[BadCell]]:
    """One raw row converted column by column as the store would: the values, and the cells
    that cannot be read."""

    dialect = store.engine.dialect
    values: dict[str, Any] = {}
    found = []
    for column in table.columns:
        if column.name not in raw:
            continue
        value = raw[column.name]
        try:
            convert = column.type.dialect_impl(dialect).result_processor(dialect, None)
            value = convert(value) if convert is not None and value is not None else value
        except Exception as exc:  # whatever the conversion raises is what is wrong with the cell
            found.append(BadCell(operation, table.name, row_id, column.name,
                                 f"cannot be read ({type(exc).__name__}: {str(exc)[:120]})"))
            continue
        shape = _SHAPES.get((table.name, column.name))
        problem = shape(value) if shape is not None else None
        if problem:
            found.append(BadCell(operation, table.name, row_id, column.name, problem))
        values[column.key] = value
    return values, found


def _bad_cells(store: Store, table: Table, op_id: str, key: str, where: str) -> list[BadCell]:
    found = []
    with store.session() as s:
        # Plain text: no column type, so the values come back as stored, to be converted one by one.
        rows = s.execute(text(f"SELECT * FROM {table.name} WHERE {where} = :op"), {"op": op_id}).mappings()
        for raw in rows:
            found += _convert(store, table, raw, op_id, str(raw.get(key)))[1]
    return found


def audit_entries(store: Store, op_id: str | None, limit: int) -> tuple[list[AuditRow], list[BadCell]]:
    """The newest ``limit`` audit entries (of one operation, or all), oldest first, and the cells
    of the entries among them that cannot be read (those entries are left out, not guessed)."""

    table: Table = AuditRow.__table__  # type: ignore[assignment]
    where = "WHERE operation_id = :op " if op_id is not None else ""
    entries: list[AuditRow] = []
    bad: list[BadCell] = []
    with store.session() as s:
        rows = s.execute(text(f"SELECT * FROM audit {where}ORDER BY id DESC LIMIT :limit"),
                         {"op": op_id, "limit": limit}).mappings()
        for raw in rows:
            values, cells = _convert(store, table, raw, str(raw.get("operation_id") or "-"), str(raw.get("id")))
            if cells:
                bad += cells
            else:
                entries.append(AuditRow(**values))
    return entries[::-1], bad[::-1]


def diagnose(store: Store, op_id: str) -> list[BadCell]:
    """Every cell of operation ``op_id`` (its row, its steps, its notes) that cannot be read."""

    return (_bad_cells(store, OperationRow.__table__, op_id, "id", "id")  # type: ignore[arg-type]
            + _bad_cells(store, StepRow.__table__, op_id, "id", "operation_id")  # type: ignore[arg-type]
            + _bad_cells(store, NoteRow.__table__, op_id, "id", "operation_id"))  # type: ignore[arg-type]


def operation_ids(store: Store, *, status: Sequence[str] | None = None, limit: int = 100) -> list[str]:
    """The ids of the operations, newest first, read without converting any other column."""

    t = OperationRow.__table__
    q = select(t.c.id).order_by(t.c.created_at.desc()).limit(limit)
    if status:
        q = q.where(t.c.status.in_(list(status)))
    with store.session() as s:
        return [str(i) for i in s.scalars(q)]


def children(store: Store, op_id: str) -> list[tuple[str, str, str]]:
    """(id, kind, status) of the operations that follow ``op_id`` up, read without conversion."""

    t = OperationRow.__table__
    q = select(t.c.id, t.c.kind, t.c.status).where(t.c.parent_id == op_id).order_by(
        t.c.created_at)
    with store.session() as s:
        return [(str(a), str(b), str(c)) for a, b, c in s.execute(q)]


def read_operation(store: Store, op_id: str, read: Callable[[], _T]) -> _T:
    """``read()`` (a view of operation ``op_id``), or :class:`UnreadableOperation` naming the
    damaged cells when a row of it cannot be read."""

    try:
        return read()
    except AgentError:
        raise
    except Exception as exc:  # a damaged row raises whatever its conversion raises
        raise UnreadableOperation(op_id, diagnose(store, op_id)) from exc

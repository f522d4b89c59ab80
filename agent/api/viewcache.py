"""The operation an orchestrator polls, answered without rebuilding it when nothing changed.

``GET /v1/operations/{id}`` is called every few seconds by every orchestrator and status page
while an operation runs; rebuilding the view reads every step of it (``Journal.view``). A
signature of what the view shows -- the operation row's last update, status and finish, and over
its steps the count in each status, the attempts, the latest intent, start and finish, and over
its notes their count and last id -- is one aggregate query; while it holds, the last view built
is the answer, with only its elapsed time brought up to now.

Every write the view reflects moves the signature: a status change updates the operation row
(its ``updated_at`` moves on every update), a step's outcome and errors are written with its
status or attempts (``Journal.mark_intents``, ``record_outcome``, ``complete_manual``), a note adds
a row. The query is one statement, so its parts are one snapshot of the store, and it runs
outside :meth:`Store.session`: it writes nothing, so the lease's fence (which guards writes) has
nothing to guard, and a standby answers from the same query.

The polled answer (:mod:`agent.api.polled`) runs that query on the event loop, so it has a
connection of its own (:class:`_LoopReader`): from the store's pool, the loop would wait for the
engine's step threads to give one back (30 s, the pool's timeout, while a 1,000-VM failover ran),
and with it every request the loop serves. Its waits are bounded (a second) and any failure
sends the request on to the route, which meets the store through the pool like every other.

The view is kept encoded (:class:`Encoded`): the JSON is cut around the elapsed time, the one
value that moves alone, so an answer is two joins of bytes and one float, byte for byte what
encoding the view afresh gives.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, bindparam, case, create_engine, func, select, true
from sqlalchemy.exc import DatabaseError, DBAPIError

from agent.engine.model import StepStatus
from agent.engine.store import (
    BUSY_TIMEOUT_S,
    POOL_RECYCLE_S,
    NoteRow,
    OperationRow,
    StepRow,
    Store,
    store_error,
)

CACHED = 64

LOOP_WAIT_S = 1
"""The longest the event loop waits for the store in a polled answer (then the route answers)."""

_MARK = "\x00elapsed\x00"
_MARK_JSON = json.dumps(_MARK).encode()


def _signature_query() -> Select[Any]:
    op: Any = bindparam("op_id")
    steps = (select(func.count().label("n"), func.coalesce(func.sum(StepRow.attempts), 0),
                    func.max(StepRow.intent_at), func.max(StepRow.started_at), func.max(StepRow.finished_at),
                    *(func.coalesce(func.sum(case((StepRow.status == s.value, 1), else_=0)), 0) for s in StepStatus))
             .where(StepRow.operation_id == op).subquery())
    notes = select(func.count().label("n"), func.max(NoteRow.id)).where(NoteRow.operation_id == op).subquery()
    return (select(OperationRow.updated_at, OperationRow.status, OperationRow.finished_at, *steps.c, *notes.c)
            .select_from(OperationRow).join(steps, true()).join(notes, true()).where(OperationRow.id == op))


SIGNATURE = _signature_query()


def encode(body: dict[str, Any]) -> bytes:
    """The JSON of a view, as every route that returns one encodes it."""
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Encoded:
    """One operation's view as last built, encoded."""

    signature: tuple[Any, ...]
    etag: str
    """Weak (``W/``): a cached answer differs from the last one only by the time elapsed since."""
    body: dict[str, Any]
    head: bytes
    tail: bytes | None
    """None: ``head`` is the whole body (a finished operation's elapsed time no longer moves)."""
    created: datetime

    @classmethod
    def of(cls, signature: tuple[Any, ...], body: dict[str, Any]) -> Encoded:
        etag = 'W/"' + hashlib.blake2b(repr(signature).encode(), digest_size=12).hexdigest() + '"'
        created = datetime.fromisoformat(body["created_at"])
        if body.get("finished_at") is None and "elapsed_s" in body:
            parts = encode({**body, "elapsed_s": _MARK}).split(_MARK_JSON)
            if len(parts) == 2:
                return cls(signature, etag, body, parts[0], parts[1], created)
        return cls(signature, etag, body, encode(body), None, created)

    def render(self, now: datetime) -> bytes:
        if self.tail is None:
            return self.head
        return b"".join((self.head, repr(elapsed(self.created, now)).encode(), self.tail))

    def view(self, now: datetime) -> dict[str, Any]:
        if self.tail is None:
            return self.body
        return {**self.body, "elapsed_s": elapsed(self.created, now)}


def elapsed(created: datetime, now: datetime) -> float:
    """As ``OperationView.to_json`` says it."""
    return round((now - created).total_seconds(), 3)


READ_POOL = 4
"""Connections of the API's own pool for views (:func:`read_store`)."""


def read_store(store: Store) -> Store:
    """The same store through a pool of the API's own, for reading views.

    The engine runs every step of a stage in a thread of its own (a hundred at once in a
    1,000-VM failover), each taking a connection from the store's pool for its journal writes;
    behind them in that pool a poll waited for its connection up to the pool's timeout (tens of
    seconds measured). It writes nothing, so it has no fence."""
    url = store.engine.url
    if url.get_backend_name() == "sqlite":  # the file is in WAL already: its writer set it
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": BUSY_TIMEOUT_S}}
    else:
        kwargs = {"pool_pre_ping": True, "pool_recycle": POOL_RECYCLE_S}
    return Store(create_engine(url, pool_size=READ_POOL, max_overflow=READ_POOL, **kwargs))


class _LoopReader:
    """One connection to the store, in autocommit (no transaction held between two polls), used
    only by the event loop's thread; replaced after any error.

    On SQLite the signature costs about a millisecond of CPU for 290 steps (a step's row keeps
    its spec before its status, so reading the status walks the spec's overflow pages), and
    ``PRAGMA data_version`` -- which moves whenever any other connection, in any process, commits
    to the file -- says in microseconds that nothing at all was written since the last query: the
    signatures read then still hold."""

    def __init__(self, store: Store) -> None:
        url = store.engine.url
        args: dict[str, Any] = {}
        self._sqlite = url.get_backend_name() == "sqlite"
        if self._sqlite:  # WAL: a reader waits only in rare cases (recovery)
            args = {"check_same_thread": False, "timeout": LOOP_WAIT_S}
        elif url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg":
            args = {"connect_timeout": LOOP_WAIT_S + 1, "options": f"-c statement_timeout={LOOP_WAIT_S * 1000}"}
        self._engine: Engine = create_engine(url, pool_size=1, max_overflow=0, connect_args=args)
        self._conn: Connection | None = None
        self._version: Any = None
        self._read: dict[str, tuple[Any, ...] | None] = {}
        """Signatures read at ``_version`` of the store (SQLite only)."""

    def first(self, op_id: str) -> tuple[Any, ...] | None:
        try:
            if self._conn is None:
                self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if self._sqlite:
                version = self._conn.exec_driver_sql("PRAGMA data_version").scalar()
                if version != self._version:
                    self._version, self._read = version, {}
                elif op_id in self._read:
                    return self._read[op_id]
            row = self._conn.execute(SIGNATURE, {"op_id": op_id}).first()
        except DBAPIError:
            self.close()
            raise
        signature = None if row is None else tuple(row)
        if self._sqlite and len(self._read) < CACHED:
            self._read[op_id] = signature
        return signature

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._version, self._read = None, {}
        if conn is not None:
            conn.invalidate()
            conn.close()

    def dispose(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._engine.dispose()


class ViewCache:
    def __init__(self, store: Store, build: Callable[[str], dict[str, Any]], *, owned: bool = False) -> None:
        """``owned``: ``store`` is this cache's own (:func:`read_store`), closed with it."""
        self.store = store
        self.build = build
        self._owned = owned
        self._lock = threading.Lock()
        self._views: OrderedDict[str, Encoded] = OrderedDict()
        self._loop_reader: _LoopReader | None = None
        self._building: dict[str, threading.Lock] = {}
        self._read_at: dict[str, float] = {}
        """Operation id -> when (``time.monotonic``) the signature of its kept view was last read
        from the store (before the read): the kept view holds everything committed before then."""

    def signature(self, op_id: str) -> tuple[Any, ...] | None:
        try:
            with self.store.engine.connect() as c:
                row = c.execute(SIGNATURE, {"op_id": op_id}).first()
        except (DatabaseError, OSError) as exc:  # as Store.session maps them: 503 with the store named
            mapped = store_error(exc, str(self.store.engine.url))
            if mapped is None:
                raise
            raise mapped from exc
        return None if row is None else tuple(row)

    def cached(self, op_id: str) -> Encoded | None:
        """The kept view of ``op_id`` if the store says it still holds; None otherwise (not kept,
        changed, or no such operation: :meth:`current` builds or refuses it). For the event loop's
        thread only (its connection is its own); raises what the store raises."""
        with self._lock:
            known = self._views.get(op_id)
        if known is None:
            return None
        if self._loop_reader is None:
            self._loop_reader = _LoopReader(self.store)
        if self._loop_reader.first(op_id) != known.signature:
            return None
        with self._lock:
            if op_id in self._views:
                self._views.move_to_end(op_id)
        return known

    def current(self, op_id: str) -> Encoded:
        """The view of ``op_id`` as the store has it now: kept, or built and kept.

        One build at a time per operation: while a running operation changes at every poll,
        concurrent polls would otherwise each rebuild the same view. Every poll is answered with
        what the store held after it arrived, never an older one: a poll that waited for a build
        whose signature was read after it arrived takes that build (the store moved on since, but
        only past what it asked for); otherwise it reads the signature itself after its wait (the
        view the build before it left, or a build of its own). Taking the build it waited for
        matters while a 1,000-VM failover runs: the store moves between any two polls, and each
        waiter reading it again rebuilt the view again, one after the other."""
        arrived = time.monotonic()
        with self._lock:
            building = self._building.setdefault(op_id, threading.Lock())
        try:
            return self._current(op_id, building, arrived)
        finally:
            with self._lock:  # bounded: only the kept views' locks stay (a spray of unknown ids leaves none)
                for gone in [k for k, lock in self._building.items() if k not in self._views and not lock.locked()]:
                    del self._building[gone]

    def _current(self, op_id: str, building: threading.Lock, arrived: float) -> Encoded:
        with building:
            with self._lock:
                known = self._views.get(op_id)
                if known is not None and self._read_at.get(op_id, arrived) > arrived:
                    return known
            read_at = time.monotonic()
            signature = self.signature(op_id)
            if signature is not None and known is not None and known.signature == signature:
                with self._lock:
                    if self._views.get(op_id) is known:
                        self._read_at[op_id] = read_at
                return known
            # The signature is read before the view: a write between the two leaves a view newer
            # than its signature, which the next signature no longer matches (rebuilt, not stale).
            body = self.build(op_id)  # raises NotFoundError for an unknown id
            made = Encoded.of(signature if signature is not None else (), body)
            if signature is not None:
                with self._lock:
                    self._views[op_id] = made
                    self._read_at[op_id] = read_at
                    self._views.move_to_end(op_id)
                    while len(self._views) > CACHED:
                        gone, _ = self._views.popitem(last=False)
                        self._read_at.pop(gone, None)
            return made

    def get(self, op_id: str, now: datetime) -> dict[str, Any]:
        return self.current(op_id).view(now)

    def close(self) -> None:
        if self._loop_reader is not None:
            self._loop_reader.dispose()
            self._loop_reader = None
        if self._owned:
            self.store.close()

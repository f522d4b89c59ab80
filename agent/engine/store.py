"""The agent's store: operations, their journalled steps, reservations it owns, snapshots of
everything it changes, operator notes and an append-only audit trail.

SQLAlchemy 2 on SQLite by default (a file: zero set-up, embedded); any SQLAlchemy URL works
(PostgreSQL, SQL Server) because only portable types and constructs are used: strings, integers,
text-encoded JSON, UTC timestamps as naive ``DateTime`` values. The schema is owned by
Alembic migrations (``agent/engine/migrations``) so an upgraded agent opens an older store.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.exc import DatabaseError, DataError, IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from agent.errors import TransientError


def utcnow() -> datetime:
    return datetime.now(UTC)


class JsonText(TypeDecorator):
    """JSON kept as text: portable to every database the store may run on."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=True, default=str)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


class UtcDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class OperationRow(Base):
    __tablename__ = "operations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    plan_name: Mapped[str] = mapped_column(String(128))
    plan_kind: Mapped[str | None] = mapped_column(String(16))
    plan_checksum: Mapped[str | None] = mapped_column(String(80))
    plan: Mapped[Any] = mapped_column(JsonText)
    vms: Mapped[Any] = mapped_column(JsonText, nullable=True)
    """The names of the plan's VMs, in its order, so that listing them decodes no plan. None:
    created before migration 0008 (they are in ``plan``)."""
    mode: Mapped[str] = mapped_column(String(16))
    error_policy: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), index=True)
    source_site: Mapped[str] = mapped_column(String(128))
    target_site: Mapped[str] = mapped_column(String(128))
    parent_id: Mapped[str | None] = mapped_column(String(40))
    """The operation this one follows up (cleanup of a test, failback of a failover)."""
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    requested_by: Mapped[str] = mapped_column(String(128), default="cli")
    result: Mapped[Any] = mapped_column(JsonText, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class StepRow(Base):
    __tablename__ = "steps"
    __table_args__ = (
        UniqueConstraint("operation_id", "ordinal", name="uq_step_ordinal"),
        # What a polled view reads on every change (its signature, each step's moving columns),
        # without the rows: on SQLite a row keeps its spec before its status (migration 0009).
        Index("ix_steps_view", "operation_id", "ordinal", "status", "attempts", "intent_at", "started_at",
              "finished_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operation_id: Mapped[str] = mapped_column(ForeignKey("operations.id"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    group_name: Mapped[str | None] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(200))
    """The host, site, server or router the step talks to."""
    stage: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Steps of one stage run concurrently, stages in order. None: kept in ``spec`` (version 1)."""
    needs: Mapped[Any] = mapped_column(JsonText, nullable=True)
    """The ordinals of the steps this one waits for. None (rows of agents before revision 0007):
    the stage barrier, every step of the previous stage."""
    spec: Mapped[Any] = mapped_column(JsonText)
    """The step's arguments (``agent.engine.steps``); fixed when the operation is created."""
    spec_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """The schema version of ``spec`` (``agent.engine.steps.SPEC_VERSION`` when written)."""
    status: Mapped[str] = mapped_column(String(32), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    intent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    outcome: Mapped[Any] = mapped_column(JsonText, nullable=True)
    """Per-item results; replayed on resume, never re-executed."""
    errors: Mapped[Any] = mapped_column(JsonText, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class ReservationRow(Base):
    """An address the agent holds in a VMM pool. Unique per (site, pool, address) while held,
    so two operations can never both record the same address."""

    __tablename__ = "reservations"
    __table_args__ = (
        Index("ix_reservation_held", "site", "pool", "address", "held_key", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site: Mapped[str] = mapped_column(String(128))
    pool: Mapped[str] = mapped_column(String(256))
    address: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[str] = mapped_column(String(64))
    vm: Mapped[str] = mapped_column(String(128))
    nic: Mapped[str] = mapped_column(String(128))
    ip_index: Mapped[int] = mapped_column(Integer, default=0)
    purpose: Mapped[str] = mapped_column(String(16))
    operation_id: Mapped[str] = mapped_column(String(40), index=True)
    held: Mapped[bool] = mapped_column(Boolean, default=True)
    held_key: Mapped[int] = mapped_column(Integer, default=0)
    """0 while held; the row id once released, so the unique index only binds held rows."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class SnapshotRow(Base):
    """What was there before the agent first changed it: a DNS record set, a router's routes
    for a prefix, a NIC's failover configuration. First write wins within a scope, so a resumed
    or repeated operation never overwrites the original with its own work."""

    __tablename__ = "snapshots"
    __table_args__ = (UniqueConstraint("scope", "kind", "key", name="uq_snapshot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(80))
    """The operation whose changes it precedes (or a protection cycle id)."""
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(400))
    data: Mapped[Any] = mapped_column(JsonText)
    written: Mapped[Any] = mapped_column(JsonText, nullable=True)
    """What the agent wrote over it (to check nobody changed it since, before restoring)."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ManagedRecordRow(Base):
    """DNS record sets the agent manages (listed in config, created by it, or taken over)."""

    __tablename__ = "managed_records"
    __table_args__ = (UniqueConstraint("zone", "name", "type", name="uq_managed_record"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    zone: Mapped[str] = mapped_column(String(256))
    name: Mapped[str] = mapped_column(String(256))
    type: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class NoteRow(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operation_id: Mapped[str] = mapped_column(ForeignKey("operations.id"), index=True)
    author: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class VmLockRow(Base):
    """One active operation per VM: the row exists while an operation holds the VM."""

    __tablename__ = "vm_locks"

    vm: Mapped[str] = mapped_column(String(128), primary_key=True)
    operation_id: Mapped[str] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class SiteViewRow(Base):
    """The last good read of one part of a site (its VMM, a Hyper-V host, a router), so an
    unplanned failover can still be planned when that site has gone dark."""

    __tablename__ = "site_views"

    site: Mapped[str] = mapped_column(String(128), primary_key=True)
    part: Mapped[str] = mapped_column(String(200), primary_key=True)
    data: Mapped[Any] = mapped_column(JsonText)
    read_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AuditRow(Base):
    """Append-only: every change the agent made to an outside system, and who asked for it. A
    change a step makes is written before the call (``details.result`` pending) and completed
    after it, once per ``key`` (:mod:`agent.engine.audit`), or withdrawn by that call if it
    found nothing to change."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_change", "operation_id", "key", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    operation_id: Mapped[str | None] = mapped_column(String(40), index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(400))
    details: Mapped[Any] = mapped_column(JsonText, nullable=True)
    key: Mapped[str | None] = mapped_column(String(400), nullable=True)
    """For a step's change: step ordinal and call, so a retried or resumed step finds its row."""


class IdempotencyRow(Base):
    """An API request's Idempotency-Key and the operation it created (per caller: two callers'
    keys never collide)."""

    __tablename__ = "idempotency_keys"
    caller: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    operation_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


POOL_RECYCLE_S = 1800
"""A database server's connections are replaced after this long (seconds)."""

BUSY_TIMEOUT_S = 30
"""How long a SQLite connection waits for another process's write lock before "locked"."""


def _set_wal(cur: Any) -> None:
    """Switch to WAL, waiting out a process that is creating the store.

    The switch needs the file to itself, and SQLite answers "database is locked" at once,
    without waiting the busy timeout, while another process holds its first (migration)
    transaction on a new store: seen in 1 of 3 runs of 30 simultaneous starts. WAL persists
    in the file, so only the first opens of a new store ever wait here."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cur = dbapi_connection.cursor()
    # WAL: readers (CLI, API) never block the engine. FULL, not NORMAL: in WAL mode NORMAL
    # syncs only at checkpoints, so a power cut loses the last commits -- and a lost DNS or
    # failover-IP snapshot is not harmless: the step runs again, snapshots the records it had
    # already changed as their "originals", and commit, cancel and failback then restore the
    # wrong thing (TTLs left at the failover TTL). Snapshots, grants and intents must be on
    # disk before the outside change they guard; FULL syncs the WAL at every commit (measured:
    # tests/benchmarks/RESULTS-engine.md).
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    _set_wal(cur)
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class StoreUnavailable(TransientError):
    """The store cannot be read or written: a full disk, a file that cannot be opened or is not
    a database, a lock held too long. Raised at the store's boundary, so that the caller reports
    it as what it is (exit 3: try again once it is fixed) and never as a bug."""

    code = "store_unavailable"


def _location(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        return parsed.database or url
    return parsed.render_as_string(hide_password=True)


def store_error(exc: BaseException, url: str | None) -> StoreUnavailable | None:
    """The :class:`StoreUnavailable` a database or file error means, or None for one that is not
    about the store being usable (a constraint, which the journal handles itself)."""

    if isinstance(exc, IntegrityError | DataError) or not isinstance(exc, DatabaseError | OSError):
        # DataError: a value the column refuses (PostgreSQL enforces String lengths, SQLite does
        # not) -- a fault in what was written, not a store to try again later.
        return None
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    where = _location(url) if url else "of this agent"
    if "full" in reason or getattr(exc, "errno", None) == 28:
        hint = "free some space on its disk, then run the command again"
    elif isinstance(exc, OperationalError) and "locked" in reason:
        hint = "another agent or command holds it; try again when it is done"
    elif not (url or "sqlite").startswith("sqlite"):
        hint = ("the database server cannot be reached or dropped the connection (a restart or a failover "
                "of the server): the operation stays in the journal; run the command again, or `ops resume`, "
                "once the server answers")
    else:
        hint = "check that the file (store.url, agent.data_dir) is the agent's store and can be read and written"
    return StoreUnavailable(f"the store {where} cannot be used: {reason}; {hint}", store=where)


class Store:
    """Owns the engine and sessions. ``Store.open(url)`` migrates the schema to the newest."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.fence: Callable[[Session], None] | None = None
        """Called at the end of every transaction, before its commit (``agent.engine.lease``
        checks there that this process still holds the lease, and raises to roll back if not)."""

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_S}
        else:
            # A database server restarts or fails over between two uses of a pooled connection:
            # pre-ping finds the dead connection and opens a new one, so an idle agent does not
            # fail its next write (without it: "terminating connection due to administrator
            # command" on the first statement after a restart). A connection lost inside a
            # transaction still raises (StoreUnavailable), and SQLAlchemy then drops the whole
            # pool. Recycling bounds how long a connection outlives a silent network drop.
            kwargs.update(pool_pre_ping=True, pool_recycle=POOL_RECYCLE_S)
        engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(engine, "connect", _sqlite_pragmas)
        if migrate:
            from agent.engine.migrate import upgrade

            try:
                upgrade(engine)
            except (DatabaseError, OSError) as exc:
                engine.dispose()
                mapped = store_error(exc, url)
                if mapped is None:
                    raise
                raise mapped from exc
        return cls(engine)

    @classmethod
    def for_path(cls, path: Path) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls.open(f"sqlite:///{path.resolve()}")

    @contextmanager
    def session(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
                if self.fence is not None:
                    self.fence(session)
        except (DatabaseError, OSError) as exc:
            mapped = store_error(exc, str(self.engine.url))
            if mapped is None:
                raise
            raise mapped from exc

    def audit(self, *, actor: str, action: str, target: str | None = None,
              operation_id: str | None = None, details: Any = None) -> None:
        with self.session() as s:
            s.add(AuditRow(actor=actor, action=action, target=target, operation_id=operation_id, details=details))

    def audit_trail(self, operation_id: str | None = None, limit: int = 1000) -> list[AuditRow]:
        with self.session() as s:
            q = select(AuditRow).order_by(AuditRow.id)
            if operation_id:
                q = q.where(AuditRow.operation_id == operation_id)
            return list(s.scalars(q.limit(limit)))

    def close(self) -> None:
        self.engine.dispose()

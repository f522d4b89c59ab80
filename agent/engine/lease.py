"""The leader lease: one agent process at a time executes the operations of a store.

A row of ``leases`` names the holder (a process-unique id, its host and pid) and how long its
claim lasts unrenewed (``store.lease_s``). Taking it is one compare-and-set transaction that
every database serialises (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped
advisory lock, then the row ``FOR UPDATE``): free, expired or released -> taken, with a fencing
token one higher than any before.

The token is what makes a lost lease harmless: once held, :meth:`Lease.fence` runs at the end
of every transaction of the store (``Store.fence``), in that transaction, and rolls it back with
:class:`LeaseLost` unless the row still names this holder, with this token, unexpired. A process
paused (SIGSTOP) or cut off past its expiry, whose lease a standby took meanwhile, wakes to find
its next journal write refused; it never writes beside the new leader. The check comes after the
transaction's own writes: on SQLite the first write takes the database's write lock, so no
acquirer can commit between the check and the commit; on PostgreSQL ``FOR SHARE`` makes an
acquirer's ``FOR UPDATE`` wait for the commit.

Expiry is judged by each process's own clock: hosts sharing a store keep NTP time (a skew
shortens or lengthens the lease by as much; the fencing token still refuses the loser).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from agent.engine.store import Store, StoreUnavailable, UtcDateTime, store_error, utcnow
from agent.errors import ConflictError, RefusedError

log = structlog.get_logger("agent.lease")

OPERATIONS = "operations"
"""The lease of executing a store's operations (the one lease there is so far)."""

LEASE_LOCK = 0x6C65617365
"""PostgreSQL advisory lock key serialising acquirers ("lease" in ASCII)."""

LEASES = Table(
    "leases", MetaData(),
    Column("name", String(64), primary_key=True),
    Column("holder", String(64)),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("acquired_at", UtcDateTime),
    Column("renewed_at", UtcDateTime),
    Column("expires_at", UtcDateTime),
    Column("token", Integer, nullable=False),
)


class LeaseLost(ConflictError):
    """This process no longer holds the store's lease (it expired while the process was paused
    or cut off, or another agent took it): it must not write, and steps down."""

    code = "lease_lost"


class LeaseHeld(RefusedError):
    """Another live agent process executes this store's operations: refused, nothing changed."""

    code = "lease_held"


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a lease, as the store says."""

    holder: str | None
    host: str | None
    pid: int | None
    acquired_at: datetime | None
    renewed_at: datetime | None
    expires_at: datetime | None
    token: int

    def live(self, now: datetime | None = None) -> bool:
        return self.holder is not None and self.expires_at is not None and self.expires_at > (now or utcnow())

    def describe(self) -> str:
        until = self.expires_at.isoformat(timespec="seconds") if self.expires_at else "?"
        return f"failover-agent pid {self.pid} on host {self.host} (lease until {until})"


def _holder(row: Any) -> Holder:
    return Holder(holder=row.holder, host=row.host, pid=row.pid, acquired_at=row.acquired_at,
                  renewed_at=row.renewed_at, expires_at=row.expires_at, token=row.token)


class Lease:
    """One process's claim on a store's lease. Not held until :meth:`acquire` says so."""

    def __init__(self, store: Store, *, lease_s: float, name: str = OPERATIONS,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.name = name
        self.lease_s = lease_s
        self.clock = clock
        self.holder_id = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.token: int | None = None
        self.lost = threading.Event()
        """Set once this process knows it lost the lease (a refused renewal or write)."""

    @property
    def holds(self) -> bool:
        return self.token is not None and not self.lost.is_set()

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def _exclusive(self) -> Iterator[Connection]:
        """A transaction no other acquirer runs beside (see the module docstring)."""
        try:
            with self.store.engine.connect() as connection:
                dialect = connection.dialect.name
                with connection.begin():
                    if dialect == "sqlite":
                        connection.exec_driver_sql("BEGIN IMMEDIATE")
                    elif dialect == "postgresql":
                        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({LEASE_LOCK})")
                    yield connection
        except DatabaseError as exc:
            mapped = store_error(exc, str(self.store.engine.url))
            if mapped is None:
                raise
            raise mapped from exc

    def _row(self, connection: Connection, *, lock: bool = False) -> Holder | None:
        q = select(LEASES).where(LEASES.c.name == self.name)
        if lock and connection.dialect.name == "postgresql":
            q = q.with_for_update()
        row = connection.execute(q).first()
        return None if row is None else _holder(row)

    def acquire(self) -> Holder:
        """Take the lease if it is free, released or expired (or renew it if this process
        holds it); returns the holder the store names afterwards -- this process when
        :attr:`holds`, else the live holder that kept it."""
        now = self.clock()
        expires = now + timedelta(seconds=self.lease_s)
        mine = {"holder": self.holder_id, "host": self.host, "pid": self.pid, "renewed_at": now,
                "expires_at": expires}
        with self._exclusive() as c:
            current = self._row(c, lock=True)
            if current is None:
                token = 1
                c.execute(insert(LEASES).values(name=self.name, acquired_at=now, token=token, **mine))
            elif current.holder == self.holder_id and current.token == self.token and current.live(now):
                token = current.token
                c.execute(update(LEASES).where(LEASES.c.name == self.name).values(**mine))
            elif current.live(now):
                return current
            else:
                token = current.token + 1
                c.execute(update(LEASES).where(LEASES.c.name == self.name).values(
                    acquired_at=now, token=token, **mine))
        if token != self.token:
            log.info("lease acquired", lease=self.name, token=token, expires=expires.isoformat())
        self.token = token
        self.lost.clear()
        self.store.fence = self.fence
        return Holder(holder=self.holder_id, host=self.host, pid=self.pid, acquired_at=now, renewed_at=now,
                      expires_at=expires, token=token)

    def renew(self) -> bool:
        """Push the expiry on; False (and :attr:`lost` set) if the lease is no longer ours. A
        store that cannot be reached raises :class:`StoreUnavailable`: the caller retries until
        the expiry it knows of has passed."""
        if self.token is None or self.lost.is_set():
            return False
        now = self.clock()
        with self._exclusive() as c:
            done = c.execute(update(LEASES).where(
                LEASES.c.name == self.name, LEASES.c.holder == self.holder_id, LEASES.c.token == self.token,
                LEASES.c.expires_at > now,
            ).values(renewed_at=now, expires_at=now + timedelta(seconds=self.lease_s))).rowcount
        if done != 1:
            self._lose("renewal refused")
            return False
        return True

    def release(self) -> None:
        """Give the lease up at once (a standby need not wait for it to expire). The token stays."""
        if self.token is None:
            return
        # The fence stays: with no token it refuses every later write of this process (a
        # worker thread still finishing, a scheduler job), until the lease is taken again.
        token, self.token = self.token, None
        now = self.clock()
        try:
            with self._exclusive() as c:
                c.execute(update(LEASES).where(
                    LEASES.c.name == self.name, LEASES.c.holder == self.holder_id, LEASES.c.token == token,
                ).values(holder=None, host=None, pid=None, expires_at=now))
        except StoreUnavailable as exc:  # it expires by itself
            log.warning("lease not released; it expires by itself", lease=self.name, error=exc.message)
        log.info("lease released", lease=self.name, token=token)

    def current(self) -> Holder | None:
        """Who holds the lease, as the store says now (None: nobody ever took it)."""
        with self._exclusive() as c:
            return self._row(c)

    # ------------------------------------------------------------------------ fence

    def fence(self, session: Session) -> None:
        """``Store.fence``: in the transaction about to commit, after its writes, refuse it
        unless this process still holds the lease."""
        session.flush()
        q = select(LEASES.c.holder, LEASES.c.token, LEASES.c.expires_at).where(LEASES.c.name == self.name)
        if session.get_bind().dialect.name == "postgresql":
            q = q.with_for_update(read=True)
        row = session.execute(q).first()
        now = self.clock()
        if (self.token is None or self.lost.is_set() or row is None or row.holder != self.holder_id
                or row.token != self.token or row.expires_at is None or row.expires_at <= now):
            reason = ("it expired" if row is not None and row.holder == self.holder_id and row.token == self.token
                      else "another agent took it" if row is not None and row.token != self.token else "released")
            self._lose(reason)
            raise LeaseLost(f"this agent process (pid {self.pid} on host {self.host}) lost the lease of the store "
                            f"({reason}): nothing was written; it stops executing operations", token=self.token,
                            store_token=None if row is None else row.token)

    def _lose(self, reason: str) -> None:
        if not self.lost.is_set():
            log.warning("lease lost", lease=self.name, token=self.token, reason=reason)
        self.lost.set()


class Renewer:
    """Renews a held lease from a background thread, every third of its duration, until stopped
    or lost (then ``on_lost`` is called, from that thread)."""

    def __init__(self, lease: Lease, *, on_lost: Callable[[], None] | None = None) -> None:
        self.lease = lease
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{lease.name}", daemon=True)

    def start(self) -> Renewer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _loop(self) -> None:
        interval = self.lease.lease_s / 3
        deadline = self.lease.clock() + timedelta(seconds=self.lease.lease_s)
        while not self._stop.wait(interval):
            try:
                if self.lease.renew():
                    deadline = self.lease.clock() + timedelta(seconds=self.lease.lease_s)
                    continue
            except StoreUnavailable as exc:
                log.warning("lease not renewed; trying again", lease=self.lease.name, error=exc.message)
                if self.lease.clock() < deadline:
                    continue
                self.lease._lose("the store could not be reached before it expired")
            if self.on_lost is not None:
                self.on_lost()
            return


@contextmanager
def holding(store: Store, *, lease_s: float, refused: Callable[[Holder], LeaseHeld]) -> Iterator[Lease]:
    """The store's lease for one command: taken before anything else is done, renewed while the
    command runs, released on the way out. When another live process holds it, ``refused(holder)``
    is raised and nothing changed."""
    lease = Lease(store, lease_s=lease_s)
    holder = lease.acquire()
    if not lease.holds:
        raise refused(holder)
    renewer = Renewer(lease).start()
    try:
        yield lease
    finally:
        renewer.stop()
        lease.release()

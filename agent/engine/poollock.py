"""The allocation lock: planning addresses and granting them, for one store, one process at a time.

A prepare picks free addresses when it plans and reserves them when it runs. Two agents (or an
agent and a CLI) doing that at once on one store both see the same address free; before this
lock, which was per process, they relied on VMM refusing the second grant. The lock lives where
every process of the store can see it:

- PostgreSQL: ``pg_advisory_xact_lock`` on a connection of its own, in a transaction held for
  the plan-then-grant and released by its end -- or by the server, if the holder dies or its
  connection is cut, so a killed agent never leaves it taken.
- SQLite: an exclusive lock (``agent.filelock``) on a file beside the database. Not ``BEGIN IMMEDIATE``: that
  takes the database's one write lock for the whole operation, and the journal's own writes,
  on other connections of the same process, would then wait on it until "database is locked".
  The kernel drops a ``flock`` with the process that held it.

Keys: the pools an operation grants in are known only once it is planned, which is under the
lock, so a key names a scope the caller knows beforehand (``allocation_key``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from agent.engine.store import Store, store_error
from agent.filelock import lock


def allocation_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key for a scope (``site``, ``pool``): stable across
    processes and versions (not Python's salted ``hash``)."""
    digest = hashlib.sha256("\x00".join(("failover-agent allocation", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def allocation_lock(store: Store, scopes: Iterable[tuple[str, ...]]) -> Iterator[None]:
    """Hold the allocation lock of every scope until the block ends. Scopes are taken in one
    order (sorted by key) so two holders of overlapping sets never deadlock."""
    keys = sorted({allocation_key(*scope) for scope in scopes})
    url = store.engine.url
    with ExitStack() as held:
        if url.get_backend_name() == "sqlite" and _in_memory(url.database):
            held.enter_context(_MEMORY_LOCK)  # one process only can reach such a store
        elif url.get_backend_name() == "sqlite":
            held.enter_context(_file_locks(Path(url.database or ""), keys))
        elif url.get_backend_name() == "postgresql":
            held.enter_context(_advisory_locks(store, keys))
        else:  # no cross-process lock known for it: refuse rather than race for addresses
            raise NotImplementedError(f"no allocation lock for {url.get_backend_name()} stores")
        yield


_MEMORY_LOCK = threading.Lock()


def _in_memory(database: str | None) -> bool:
    return database in (None, "", ":memory:") or database.startswith("file:")


@contextmanager
def _file_locks(database: Path, keys: list[int]) -> Iterator[None]:
    with ExitStack() as held:
        for key in keys:
            path = database.with_name(f"{database.name}.alloc-{key & 0xFFFFFFFFFFFFFFFF:016x}.lock")
            fd = held.enter_context(path.open("a"))
            lock(fd.fileno())  # released when the file closes
        yield


@contextmanager
def _advisory_locks(store: Store, keys: list[int]) -> Iterator[None]:
    try:
        connection = store.engine.connect()
        transaction = connection.begin()
        for key in keys:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    except DatabaseError as exc:
        mapped = store_error(exc, str(store.engine.url))  # str(): the password masked
        if mapped is None:
            raise
        raise mapped from exc
    try:
        yield
    finally:
        # Nothing was written in it: ending it releases the locks. If the connection is gone,
        # the server released them with it.
        with suppress(DatabaseError):
            transaction.rollback()
        connection.close()

"""Two processes opening one empty store at the same moment: the schema is created once, by one
of them, and both open it. Before the migration lock, 2 of 6 such starts failed with "table audit
already exists". On SQLite and on PostgreSQL (a fresh database per trial)."""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from agent.engine.migrate import current_revision, head_revision
from agent.engine.store import Store
from tests.stores import STORE_KINDS, store_url_for

TRIALS = 20


def _open_at_once(url: str, barrier, results) -> None:  # runs in a child process
    barrier.wait()
    try:
        store = Store.open(url)
        store.close()
        results.put("ok")
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_two_processes_starting_on_an_empty_store_migrate_it_once(kind: str, tmp_path: Path) -> None:
    # fork where there is one: 40 spawned interpreters importing the agent take half a minute.
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    failures = []
    for trial in range(TRIALS):
        with _empty_store(kind, tmp_path / f"trial-{trial}") as url:
            barrier, results = context.Barrier(2), context.Queue()
            children = [context.Process(target=_open_at_once, args=(url, barrier, results)) for _ in range(2)]
            for child in children:
                child.start()
            for child in children:
                child.join(60)
            outcomes = [results.get(timeout=5) for _ in children]
            failures += [f"trial {trial}: {o}" for o in outcomes if o != "ok"]
            engine = create_engine(url)
            try:
                assert current_revision(engine) == head_revision()
            finally:
                engine.dispose()
    assert failures == []


@contextlib.contextmanager
def _empty_store(kind: str, where: Path) -> Iterator[str]:
    where.mkdir()
    yield from store_url_for(kind, where)

"""Two processes opening one empty store at the same moment: the schema is created once, by one
of them, and both open it. Before the migration lock, 2 of 6 such starts failed with "table audit
already exists"."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from agent.engine.migrate import head_revision
from agent.engine.store import Store

TRIALS = 20


def _open_at_once(path: str, barrier, results) -> None:  # runs in a child process
    barrier.wait()
    try:
        store = Store.open(f"sqlite:///{path}")
        store.close()
        results.put("ok")
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_two_processes_starting_on_an_empty_store_migrate_it_once(tmp_path: Path) -> None:
    # fork where there is one: 40 spawned interpreters importing the agent take half a minute.
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    failures = []
    for trial in range(TRIALS):
        path = tmp_path / f"store-{trial}.sqlite"
        barrier, results = context.Barrier(2), context.Queue()
        children = [context.Process(target=_open_at_once, args=(str(path), barrier, results)) for _ in range(2)]
        for child in children:
            child.start()
        for child in children:
            child.join(60)
        outcomes = [results.get(timeout=5) for _ in children]
        failures += [f"trial {trial}: {o}" for o in outcomes if o != "ok"]
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(),)]
    assert failures == []

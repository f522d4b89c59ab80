"""The database fails over under the agent: every connection of the agent to its PostgreSQL store
is cut (``pg_terminate_backend``, what a server restart or a promoted standby does to clients)
in the middle of an operation. The operation stops with the store's transient error, the resume
path finishes it, and nothing is lost or done twice: the journal complete, the world exactly as
an uninterrupted run leaves it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from agent.engine.model import OperationKind, OpStatus, StepStatus
from agent.engine.store import StoreUnavailable
from tests.integration.test_engine_recovery import (  # noqa: F401  (fixtures)
    Uninterrupted,
    assert_same_as_uninterrupted,
    planned,
    uninterrupted,
)
from tests.rigs import DEMO_PLAN, Rig, Templates, copy_demo
from tests.stores import new_pg_database, pg_admin_url

STEP = "applications/failover/hv-west-01"


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from new_pg_database()


def cut_every_connection(database: str) -> int:
    """Terminate every session on ``database``, waiting until each is gone. Returns how many."""
    admin = create_engine(pg_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            return len(c.execute(text(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database}).all())
    finally:
        admin.dispose()


@pytest.mark.parametrize("phase", ["intent", "acted"])
def test_connections_cut_mid_failover_are_retried_or_resumed_and_change_everything_once(
        pg_url: str, phase: str, uninterrupted: Uninterrupted, tmp_path: Path) -> None:  # noqa: F811
    """``intent``: cut before the step's call, at its first read of the journal (its arguments)
    -- retried as a call is (a transient error) on a new connection, and the operation runs on,
    never failing the step for the store's blip.
    ``acted``: cut after the call took effect, at the write of the step's outcome -- the
    operation stops with the store's error, still ``running`` in the journal, and the resume
    path (the next start, ``ops resume``) re-runs the step, which finds the change made."""
    templates = Templates.build(copy_demo(tmp_path / "demo", store_url=pg_url), store_url=pg_url)
    state, store = templates.copy_to(tmp_path / "rig")
    armed: list[bool] = []
    armed_by: list[int] = []
    cut: list[int] = []

    def hook(p: str, s: str) -> None:
        if (p, s) == (phase, STEP) and not cut:
            armed.append(True)
            armed_by.append(threading.get_ident())

    rig = Rig(templates.loaded, state, store, crash_hook=hook)
    database = make_url(pg_url).database or ""

    once = threading.Lock()

    @event.listens_for(rig.store.engine, "before_cursor_execute")
    def cut_before_next_statement(*_: Any) -> None:  # the next journal write after the hook
        # A stage's steps run in threads: one cut, by whichever thread writes first.
        with once:
            if armed and not cut and threading.get_ident() in armed_by:
                cut.append(cut_every_connection(database))

    try:
        if phase == "intent":
            try:
                view = rig.start(OperationKind.PLANNED_FAILOVER, DEMO_PLAN)
            except StoreUnavailable:
                # The cut also ends the connection of a step of the same stage in another thread,
                # if it was writing its own intent just then: that step is not in a call to retry,
                # so the operation stops for the resume path, as in the 'acted' case.
                [view] = rig.resume_all()
            else:
                [op] = rig.engine.operations()
                [step] = [s for s in rig.engine.journal.steps(op.id) if s.name == STEP]
                assert [r["code"] for r in step.outcome["info"]["retries"]] == ["store_unavailable"]
            assert view.status == OpStatus.SUCCEEDED.value, view.errors
            [op] = rig.engine.operations()
        else:
            with pytest.raises(StoreUnavailable, match="terminating connection"):
                rig.start(OperationKind.PLANNED_FAILOVER, DEMO_PLAN)
            [op] = rig.engine.operations()
            assert op.status == OpStatus.RUNNING.value, "left for the resume path, not reported as failed"
            # The same agent resumes, as at its next start: its pool reconnects.
            views = rig.resume_all()
            assert [v.status for v in views] == [OpStatus.SUCCEEDED.value]
        assert cut and cut[0] >= 1, "the agent's connections were cut"
        steps = rig.engine.journal.steps(op.id)
        assert {s.status for s in steps} == {StepStatus.SUCCEEDED.value}, "the journal is complete"
        assert_same_as_uninterrupted(rig, uninterrupted)
        held = rig.engine.journal.reservations(purpose="failover")
        assert len({(r.pool, r.address) for r in held}) == len(held), "no address recorded twice"
    finally:
        rig.close()


def test_a_server_restart_between_two_writes_is_not_seen_by_the_agent(pg_url: str) -> None:
    """An idle agent's pooled connections die with the server (restart, failover): its next
    write opens new ones instead of failing (pool_pre_ping)."""
    from agent.engine.store import Store

    store = Store.open(pg_url)
    try:
        store.audit(actor="t", action="before")
        assert cut_every_connection(make_url(pg_url).database or "") >= 1
        store.audit(actor="t", action="after")
        assert [a.action for a in store.audit_trail()] == ["before", "after"]
    finally:
        store.close()


def test_an_unreachable_server_is_the_stores_transient_error_and_hides_the_password(pg_url: str) -> None:
    from agent.engine.store import Store

    url = make_url(pg_url).set(password="s3cret-pw", host="127.0.0.1", port=1, query={})
    with pytest.raises(StoreUnavailable) as caught:
        Store.open(url.render_as_string(hide_password=False))
    assert "s3cret-pw" not in str(caught.value) and "s3cret-pw" not in repr(caught.value.to_dict())
    assert "database server cannot be reached" in str(caught.value)


def test_a_value_too_long_for_its_column_is_not_reported_as_the_server_being_away(pg_url: str) -> None:
    """PostgreSQL enforces column lengths (SQLite does not): a too-long value is a fault in what
    was written, named as such -- never "try again later"."""
    from sqlalchemy.exc import DataError

    from agent.engine.store import Store

    store = Store.open(pg_url)
    try:
        with pytest.raises(DataError, match="too long"):
            store.audit(actor="a" * 129, action="x")  # actor: String(128)
    finally:
        store.close()

"""The store across agent versions: a store left at the initial schema revision (by an older
agent) opens in this one, which migrates it in place and carries on with what it recorded;
opening an existing store never loses data. The migration tests run on SQLite and on PostgreSQL
(``store_demo``): the migrations must be portable both ways."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, inspect

from agent.engine.migrate import _config, current_revision, head_revision
from agent.engine.model import OperationKind, OpStatus
from agent.engine.store import Store
from tests.rigs import ACTOR, Templates

INITIAL = "0001"


def url_of(where: Path | str) -> str:
    """The SQLAlchemy URL of a rig's store (a SQLite file, or already a URL)."""
    return where if isinstance(where, str) else f"sqlite:///{where}"


def at_revision(where: Path | str, revision: str) -> None:
    """Take the store back to ``revision``, as an agent of that version left it."""
    engine = create_engine(url_of(where))
    try:
        with engine.begin() as connection:
            command.downgrade(_config(connection), revision)
        assert current_revision(engine) == revision
    finally:
        engine.dispose()


def test_a_store_at_the_initial_revision_is_migrated_and_its_operations_carry_on(
        new_rig, store_demo: Templates) -> None:
    rig = new_rig(store_demo)
    prepared = rig.start(OperationKind.PREPARE)
    waiting = rig.engine.start(OperationKind.TEST_FAILOVER, "contoso-apps")  # left at its manual pause
    rig.engine.journal.add_note(waiting.id, ACTOR, "paused for the application owners")
    reserved = [(r.pool, r.address, r.vm) for r in rig.engine.journal.reservations()]
    trail = [(a.id, a.action, a.operation_id) for a in rig.store.audit_trail(limit=100000)]
    rig.close()
    assert head_revision() != INITIAL, "there is a later revision to migrate to"
    at_revision(rig.store_path, INITIAL)

    rig.restart()  # Store.open migrates

    engine = create_engine(url_of(rig.store_path))
    try:
        assert current_revision(engine) == head_revision()
        assert "site_views" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    assert rig.engine.view(prepared.id).status == OpStatus.SUCCEEDED.value
    paused = rig.engine.view(waiting.id)
    assert (paused.status, paused.notes[0]["text"]) == (OpStatus.WAITING.value, "paused for the application owners")
    assert [(r.pool, r.address, r.vm) for r in rig.engine.journal.reservations()] == reserved
    assert [(a.id, a.action, a.operation_id) for a in rig.store.audit_trail(limit=100000)] == trail
    # The migrated store is fully usable: the drill resumes from its pause and is cleaned up.
    assert rig.through_pauses(rig.engine.resume(waiting.id, actor=ACTOR)).status == OpStatus.SUCCEEDED.value
    assert rig.start(OperationKind.CLEANUP_TEST, parent_id=waiting.id).status == OpStatus.SUCCEEDED.value


def test_opening_an_existing_store_keeps_everything(new_rig, store_demo: Templates) -> None:
    rig = new_rig(store_demo)
    view = rig.start(OperationKind.PLANNED_FAILOVER)
    steps = [(s.name, s.status, s.attempts, s.outcome) for s in rig.engine.journal.steps(view.id)]
    snapshots = [(s.kind, s.key, s.data, s.written) for s in rig.engine.journal.snapshots(scope=view.id)]
    trail = [(a.id, a.action) for a in rig.store.audit_trail(limit=100000)]
    rig.close()

    for _ in range(2):  # opened (and "migrated") twice
        store = Store.open(url_of(rig.store_path))
        store.close()
    rig.restart()

    assert [(s.name, s.status, s.attempts, s.outcome) for s in rig.engine.journal.steps(view.id)] == steps
    assert [(s.kind, s.key, s.data, s.written) for s in rig.engine.journal.snapshots(scope=view.id)] == snapshots
    assert [(a.id, a.action) for a in rig.store.audit_trail(limit=100000)] == trail
    # ... which is what commit needs: the TTLs the failover snapshotted are restored.
    commit = rig.start(OperationKind.COMMIT)
    assert commit.status == OpStatus.SUCCEEDED.value
    assert any(s.changed for s in commit.steps if s.action == "dns.restore_ttl")


def test_every_migration_can_be_undone_and_done_again(new_rig, store_demo: Templates) -> None:
    """An operator who downgrades the agent takes the store back with Alembic; the way back must
    exist for every revision, and upgrading again gives a store that works."""
    rig = new_rig(store_demo)
    rig.close()
    at_revision_base = create_engine(url_of(rig.store_path))
    try:
        with at_revision_base.begin() as connection:
            command.downgrade(_config(connection), "base")
        assert current_revision(at_revision_base) is None
        assert set(inspect(at_revision_base).get_table_names()) <= {"alembic_version", "apscheduler_jobs"}
    finally:
        at_revision_base.dispose()

    rig.restart()  # Store.open migrates from nothing to the newest revision
    assert rig.start(OperationKind.PREPARE).status == OpStatus.SUCCEEDED.value
    steps = rig.engine.journal.steps(rig.engine.operations()[0].id)
    assert steps and all(s.spec_version == 2 and s.stage is not None for s in steps)

"""The operation's view as a long-lived reader sees it (the API's journal lives as long as
``serve``): it keeps what it took from each step's outcome and from the plan, so every view of a
running 1,000-VM operation does not parse megabytes of JSON again. Whatever it keeps, each view
must equal the view of a journal that has never seen the operation -- after every step, across
a failure and its resume, a manual pause, and on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from agent.engine import journal as journal_module
from agent.engine.journal import Journal
from agent.engine.model import OperationKind, OperationView, OpStatus
from agent.errors import NotFoundError
from tests.rigs import ACTOR, Templates


def fresh_view(rig: Any, op_id: str) -> OperationView:
    return Journal(rig.store).view(op_id)


def from_rows(rig: Any, op_id: str) -> dict[str, Any]:
    """What the view must say of the steps, worked out here from the journalled rows themselves."""
    steps = rig.engine.journal.steps(op_id)
    failed = sorted({it["vm"] for s in steps for it in (s.outcome or {}).get("items", [])
                     if it.get("vm") and it.get("error")} | set((rig.engine.journal.operation(op_id).result or {})
                                                               .get("failed_vms", [])))
    return {"items": [len((s.outcome or {}).get("items", [])) for s in steps],
            "changed": [sum(1 for it in (s.outcome or {}).get("items", []) if it.get("changed")) for s in steps],
            "status": [s.status for s in steps], "failed_vms": failed}


def shown(view: OperationView) -> dict[str, Any]:
    return {"items": [s.items for s in view.steps], "changed": [s.changed for s in view.steps],
            "status": [s.status for s in view.steps], "failed_vms": view.failed_vms}


def test_a_long_lived_reader_sees_every_outcome_as_it_is_journalled(new_rig, store_demo: Templates) -> None:
    seen: list[str] = []
    reader: list[Journal] = []  # another journal on the same store: the API's, or a standby's

    def after_each(phase: str, step: str) -> None:
        # The steps of a stage run in threads of their own: while this one is in its hook, the
        # others may journal theirs, so only this step's entry is settled enough to compare.
        if phase != "outcome":
            return
        op_id = rig.engine.operations(limit=1)[0].id
        mine = [next(s for s in view.steps if s.name == step)
                for view in (reader[0].view(op_id), fresh_view(rig, op_id))]
        row = next(s for s in rig.engine.journal.steps(op_id) if s.name == step)
        items = (row.outcome or {}).get("items", [])
        assert mine[0] == mine[1], f"after {step}"
        assert (mine[0].status, mine[0].items, mine[0].changed) == (
            row.status, len(items), sum(1 for it in items if it.get("changed"))), f"after {step}"
        seen.append(step)

    rig = new_rig(store_demo, crash_hook=after_each)
    reader.append(Journal(rig.store))
    view = rig.start(OperationKind.PLANNED_FAILOVER)

    assert view.status == OpStatus.SUCCEEDED.value
    assert sorted(seen) == sorted(s.name for s in view.steps), "a view was compared after every step"
    final = reader[0].view(view.id)
    assert final == fresh_view(rig, view.id) == view
    assert shown(final) == from_rows(rig, view.id)
    assert final.succeeded_vms and not final.failed_vms
    assert sum(s.items for s in final.steps) > 0 and sum(s.changed for s in final.steps) > 0


def test_a_failed_step_and_its_resume_show_in_a_long_lived_readers_view(new_rig) -> None:
    rig = new_rig()
    reader = Journal(rig.store)
    rig.world.inject({"call": "hyperv.replicate.failover", "target": "app02", "fault": "permanent"})

    failed = rig.start(OperationKind.PLANNED_FAILOVER)
    view = reader.view(failed.id)

    assert view.status == OpStatus.FAILED.value and view.failed_vms == ["app02"]
    assert view == fresh_view(rig, failed.id)
    assert shown(view) == from_rows(rig, failed.id)
    assert [e["vm"] for e in view.errors] == ["app02"]

    rig.world.clear_faults()
    done = rig.through_pauses(rig.engine.resume(failed.id, actor=ACTOR))
    again = reader.view(failed.id)

    assert again.status == OpStatus.SUCCEEDED.value and again.failed_vms == [] and "app02" in again.succeeded_vms
    assert again == fresh_view(rig, failed.id) == done
    retried = next(s for s in again.steps if s.name == "applications/failover/hv-west-02")
    assert (retried.status, retried.attempts, retried.errors) == ("succeeded", 2, [])


def test_a_manual_pause_and_its_end_show_in_a_long_lived_readers_view(new_rig) -> None:
    rig = new_rig()
    reader = Journal(rig.store)

    paused = rig.engine.start(OperationKind.TEST_FAILOVER, "contoso-apps")
    view = reader.view(paused.id)

    assert view.status == OpStatus.WAITING.value and view.waiting_for
    assert view == fresh_view(rig, paused.id)

    rig.through_pauses(rig.engine.resume(paused.id, actor=ACTOR))
    after = reader.view(paused.id)

    assert after.status == OpStatus.SUCCEEDED.value and after.waiting_for is None
    assert after == fresh_view(rig, paused.id)


def test_what_a_reader_keeps_is_bounded_and_views_stay_right_past_the_bound(new_rig, monkeypatch) -> None:
    monkeypatch.setattr(journal_module, "PLAN_VMS_CACHED", 1)
    monkeypatch.setattr(journal_module, "STEP_OUTCOMES_CACHED", 3)
    rig = new_rig()
    reader = Journal(rig.store)
    first = rig.start(OperationKind.PLANNED_FAILOVER)
    second = rig.start(OperationKind.COMMIT)

    for op in (first, second, first, second):
        assert reader.view(op.id) == fresh_view(rig, op.id)
    assert len(reader._plan_vms) == 1
    assert len(reader._steps) <= max(3, len(second.steps))


def test_an_unknown_operation_is_not_found() -> None:
    from tests.rigs import open_store

    store = open_store("sqlite://")
    try:
        with pytest.raises(NotFoundError, match="no operation op-000000000000"):
            Journal(store).view("op-000000000000")
    finally:
        store.close()


def test_an_operation_created_before_its_vms_were_listed_apart_still_shows_them(new_rig) -> None:
    """Migration 0008 lists an operation's VMs beside its plan; one created before has none
    there, and its view names the VMs that succeeded from its plan, as before."""
    from sqlalchemy import update

    from agent.engine.store import OperationRow

    rig = new_rig()
    done = rig.start(OperationKind.PLANNED_FAILOVER)
    planned = [v["name"] for v in rig.engine.journal.operation(done.id).plan["vms"]]
    assert done.status == OpStatus.SUCCEEDED.value and done.succeeded_vms == planned

    with rig.store.session() as s:
        s.execute(update(OperationRow).where(OperationRow.id == done.id).values(vms=None))
    assert fresh_view(rig, done.id).succeeded_vms == planned

"""Test failover and its cleanup leave nothing behind: not after a normal drill, not after a drill
whose agent was killed half-way, not when cleaned up twice, and not when the operator forgot it
and the agent was down when its maximum age came (the scheduler catches up at start-up)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.engine.model import OperationKind, OpStatus
from agent.engine.service import UncleanedTestFailover
from agent.errors import ConflictError
from agent.scheduler import Scheduler
from tests.rigs import (
    Killed,
    Templates,
    changes,
    copy_demo,
    kill_at,
)

TEST = OperationKind.TEST_FAILOVER
CLEANUP = OperationKind.CLEANUP_TEST


def test_a_drill_and_its_cleanup_leave_the_sites_exactly_as_they_were(new_rig) -> None:
    rig = new_rig()
    before = rig.world.snapshot()

    test = rig.start(TEST)
    during = rig.world.snapshot()
    cleanup = rig.start(CLEANUP, parent_id=test.id)

    assert (test.status, cleanup.status) == (OpStatus.SUCCEEDED.value, OpStatus.SUCCEEDED.value)
    # The drill did build things (so the equality below means something) ...
    assert during["vm_networks"] != before["vm_networks"]
    assert during["grants"] != before["grants"]
    assert {vm for vm in during["vms"]["contoso-west"] if vm.endswith(" - Test")} == {
        "sql01 - Test", "app01 - Test", "app02 - Test", "web01 - Test"}
    assert during["record_sets"]["dns-drill"] != before["record_sets"]["dns-drill"]
    # ... without touching production (no failover IPs, routes or production DNS) ...
    for part in ("failover_configs", "routes"):
        assert during[part] == before[part], part
    assert during["record_sets"]["dns-contoso"] == before["record_sets"]["dns-contoso"]
    # ... and the cleanup took all of it away: networks, pools, grants, VMs, DNS, routes.
    assert rig.world.snapshot() == before
    assert rig.engine.journal.reservations(purpose="test") == [], "the store holds no test reservation"


def test_cleaning_up_twice_changes_nothing_the_second_time(new_rig) -> None:
    rig = new_rig()
    before = rig.world.snapshot()
    test = rig.start(TEST)
    rig.start(CLEANUP, parent_id=test.id)
    since = len(rig.world.calls())

    again = rig.start(CLEANUP, parent_id=test.id)

    assert again.status == OpStatus.SUCCEEDED.value
    assert sum(s.changed for s in again.steps) == 0
    assert changes(rig.world, since) == {}
    assert rig.world.snapshot() == before


@pytest.mark.parametrize("phase, step", [
    ("acted", "create-test-networks"),
    ("intent", "applications/reserve-test"),
    ("acted", "applications/reserve-test"),          # granted in VMM, not journalled
    ("acted", "databases/start-test/hv-west-01"),    # a test VM exists, nothing else of its group
    ("outcome", "web/test-dns/dns-drill/corp.contoso.example."),
])
def test_a_drill_killed_half_way_is_cleaned_up_completely(new_rig, phase: str, step: str) -> None:
    assert_killed_drill_cleaned_up(new_rig(crash_hook=kill_at(phase, step)))


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)  # SQLite: the case above
def test_a_drill_killed_after_its_grant_is_cleaned_up_completely_on_postgresql(new_rig, store_demo) -> None:
    assert_killed_drill_cleaned_up(new_rig(store_demo, crash_hook=kill_at("acted", "applications/reserve-test")))


def assert_killed_drill_cleaned_up(rig) -> None:
    before = rig.world.snapshot()
    with pytest.raises(Killed):
        rig.start(TEST)

    rig.restart()  # the next agent resumes the drill first (it stops at its manual pause or ends) ...
    [resumed] = rig.engine.resume_unfinished()
    assert resumed.status in (OpStatus.WAITING.value, OpStatus.SUCCEEDED.value)
    # ... and the operator cleans it up, without answering the pause.
    cleanup = rig.start(CLEANUP, parent_id=resumed.id)

    assert cleanup.status == OpStatus.SUCCEEDED.value, cleanup.errors
    assert rig.world.snapshot() == before
    assert rig.engine.view(resumed.id).status in (OpStatus.CANCELLED.value, OpStatus.SUCCEEDED.value)
    assert rig.engine.journal.reservations(purpose="test") == []


def test_cleaning_up_a_drill_stopped_at_its_pause_takes_it_over(new_rig) -> None:
    rig = new_rig()
    before = rig.world.snapshot()
    test = rig.engine.start(TEST, "contoso-apps")
    assert test.status == OpStatus.WAITING.value

    cleanup = rig.start(CLEANUP, parent_id=test.id)

    assert cleanup.status == OpStatus.SUCCEEDED.value
    assert rig.engine.view(test.id).status == OpStatus.CANCELLED.value
    assert [a.action for a in rig.store.audit_trail(test.id) if a.action.startswith("test_failover.")] == [
        "test_failover.superseded_by_cleanup"]
    assert rig.world.snapshot() == before


def test_a_drill_being_run_is_not_cleaned_up_under_its_feet(new_rig) -> None:
    rig = new_rig()
    test = rig.engine.start(TEST, "contoso-apps")
    rig.engine.journal.set_status(test.id, OpStatus.RUNNING)  # as if another thread were running it
    with pytest.raises(ConflictError, match="cancel it instead"):
        rig.engine.create(CLEANUP, parent_id=test.id)


def test_a_second_drill_is_refused_while_the_first_is_not_cleaned_up(new_rig) -> None:
    rig = new_rig()
    first = rig.start(TEST)
    since = len(rig.world.calls())

    with pytest.raises(UncleanedTestFailover, match="sql01 - Test"):
        rig.engine.start(TEST, "contoso-apps")

    assert [op.id for op in rig.engine.operations()] == [first.id], "nothing recorded"
    assert changes(rig.world, since) == {}
    rig.start(CLEANUP)  # the refusal held no VM: the first drill cleans up as usual
    assert rig.start(TEST).status == OpStatus.SUCCEEDED.value


def test_a_forgotten_drill_is_cleaned_up_by_force_after_an_agent_restart(
        new_rig, store_url: str, tmp_path: Path) -> None:
    """The maximum age passes while no agent runs; the next agent's scheduler catches up (its
    jobs in the store: on SQLite and on PostgreSQL)."""

    def two_seconds(config: dict) -> None:
        config.setdefault("policies", {})["test_failover_max_age"] = 2

    templates = Templates.build(copy_demo(tmp_path / "short-max-age", edit=two_seconds, store_url=store_url),
                                store_url=store_url)
    rig = new_rig(templates=templates)
    before = rig.world.snapshot()
    scheduler = Scheduler(rig.store)  # its jobs live in the agent's store
    rig.engine.scheduler = scheduler
    scheduler.start(rig.engine)
    try:
        test = rig.engine.start(TEST, "contoso-apps")  # left at its manual pause
        [(due_op, due_at)] = scheduler.due()
        assert due_op == test.id
    finally:
        scheduler.shutdown()
    rig.close()  # the agent is down when the drill falls due

    time.sleep(max(0.0, (due_at.timestamp() - time.time())) + 0.5)
    rig.restart()
    scheduler = Scheduler(rig.store)
    rig.engine.scheduler = scheduler
    scheduler.start(rig.engine)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            cleanups = [op for op in rig.engine.operations() if op.kind == CLEANUP.value]
            if cleanups and cleanups[0].status == OpStatus.SUCCEEDED.value:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the overdue drill was not cleaned up")
        assert scheduler.due() == []
    finally:
        scheduler.shutdown()

    [cleanup] = cleanups
    assert (cleanup.parent_id, cleanup.requested_by) == (test.id, "scheduler")
    assert rig.engine.view(test.id).status == OpStatus.CANCELLED.value
    trail = [(a.actor, a.action, a.details) for a in rig.store.audit_trail(test.id) if a.actor == "scheduler"]
    assert [(actor, action) for actor, action, _ in trail] == [
        ("scheduler", "test_failover.expired"), ("scheduler", "test_failover.force_cleaned")]
    forced = trail[1][2]
    assert forced["cleanup"] == cleanup.id and forced["status"] == OpStatus.SUCCEEDED.value
    assert any(step["changed"] for step in forced["removed"]), "the audit lists what was removed"
    assert rig.world.snapshot() == before


def test_a_plan_named_in_another_case_is_the_same_plan_for_its_follow_ups(new_rig) -> None:
    rig = new_rig()
    before = rig.world.snapshot()
    test = rig.through_pauses(rig.start(TEST, plan="CONTOSO-Apps"))
    assert test.plan == "contoso-apps"  # recorded as the config spells it
    cleanup = rig.start(CLEANUP, plan="Contoso-APPS")  # found by plan name, not by id
    assert cleanup.status == "succeeded", cleanup.errors
    assert rig.world.snapshot() == before

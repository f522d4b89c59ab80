"""The forced cleanup of an overdue test failover never cancels what is running, and one that
fails is tried again -- from where it failed -- until it succeeds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent import scheduler as scheduler_module
from agent.engine.expiry import CleanupDeferred, retry_delay_s
from agent.engine.model import OperationKind, OpStatus
from agent.scheduler import Scheduler

TEST = OperationKind.TEST_FAILOVER
CLEANUP = OperationKind.CLEANUP_TEST


def test_a_running_operation_of_the_plan_makes_the_forced_cleanup_wait(new_rig) -> None:
    rig = new_rig()
    first = rig.start(TEST)
    rig.start(CLEANUP, parent_id=first.id)
    refusals: list[tuple[str, CleanupDeferred]] = []

    def expire_mid_run(phase: str, step: str) -> None:
        # The forced cleanup falls due while the next drill is executing its steps.
        running = [o.id for o in rig.engine.operations(status=[OpStatus.RUNNING.value]) if o.kind == TEST.value]
        if phase == "acted" and not refusals and running:
            with pytest.raises(CleanupDeferred) as refused:
                rig.engine.expire_test_failover(running[0])
            refusals.append((running[0], refused.value))

    rig.restart(crash_hook=expire_mid_run)
    view = rig.start(TEST)
    op_id = view.id

    [(refused_for, refusal)] = refusals
    assert refused_for == op_id and refusal.fields["waiting_for"] == op_id
    assert "waits for it" in refusal.message
    assert view.status == OpStatus.SUCCEEDED.value, "the running drill was not cancelled under itself"
    assert "test_failover.expired" not in [a.action for a in rig.store.audit_trail(op_id)]
    # Once nothing runs, the same forced cleanup goes ahead.
    cleaned = rig.engine.expire_test_failover(op_id)
    assert cleaned is not None and cleaned.status == OpStatus.SUCCEEDED.value
    assert rig.engine.journal.operation(cleaned.id).parent_id == op_id


def fire_next(scheduler: Scheduler, op_id: str) -> tuple[object, ...]:
    """What APScheduler does when a one-shot expiry falls due: take it out of the job store,
    run it. Returns the job's arguments."""
    job = min((j for j in scheduler._scheduler.get_jobs() if j.args[0] == op_id), key=lambda j: j.next_run_time)
    scheduler._scheduler.remove_job(job.id)
    scheduler_module.run_expiry(*job.args)
    return tuple(job.args)


def test_a_forced_cleanup_that_fails_is_retried_with_backoff_until_nothing_is_left(new_rig) -> None:
    rig = new_rig()
    before = rig.world.snapshot()
    scheduler = Scheduler(rig.store)
    rig.engine.scheduler = scheduler
    scheduler.start(rig.engine, paused=True)  # jobs kept, none run by itself: the test fires them
    try:
        test = rig.start(TEST)
        # VMM refuses the first forced cleanup.
        rig.world.inject({"call": "vmm.delete_test_networks", "fault": "permanent", "count": 1})
        assert fire_next(scheduler, test.id) == (test.id, 0)

        [cleanup] = [o for o in rig.engine.operations() if o.kind == CLEANUP.value]
        assert cleanup.status == OpStatus.PARTIAL.value, "a step failed: not reported as success"
        assert cleanup.result["failed_steps"] == ["delete-test-networks"]
        [(due_op, due_at)] = [(op, when) for op, when in scheduler.due() if op == test.id]
        assert due_at - datetime.now(UTC) > timedelta(seconds=retry_delay_s(1) - 5), "backed off a minute"
        actions = [a.action for a in rig.store.audit_trail(test.id) if a.actor == "scheduler"]
        assert actions == ["test_failover.expired", "test_failover.force_cleanup_failed",
                           "test_failover.force_cleanup_scheduled"]

        # The attempt count lives in the job store, so a restart keeps the backoff going.
        assert fire_next(scheduler, test.id) == (test.id, 1)

        second = [o for o in rig.engine.operations() if o.kind == CLEANUP.value and o.id != cleanup.id]
        assert [o.status for o in second] == [OpStatus.SUCCEEDED.value]
        assert rig.world.snapshot() == before, "the second cleanup removed what the first left"
        assert not [op for op, _ in scheduler.due() if op == test.id], "no further attempt is due"
        assert rig.store.audit_trail(test.id)[-1].action == "test_failover.force_cleaned"
    finally:
        scheduler.shutdown()


def test_the_backoff_doubles_and_stops_at_an_hour() -> None:
    assert [retry_delay_s(n) for n in (1, 2, 3, 7, 20)] == [60, 120, 240, 3600, 3600]


def test_the_expiry_job_that_finds_the_plan_busy_looks_again_shortly_without_counting_a_failure(new_rig) -> None:
    rig = new_rig()
    scheduler = Scheduler(rig.store)
    fired: list[str] = []

    def expiry_falls_due(phase: str, step: str) -> None:
        running = [o.id for o in rig.engine.operations(status=[OpStatus.RUNNING.value]) if o.kind == TEST.value]
        if phase == "acted" and not fired and running:
            fired.append(running[0])
            scheduler_module.run_expiry(running[0])

    rig.restart(crash_hook=expiry_falls_due)
    rig.engine.scheduler = scheduler
    scheduler.start(rig.engine, paused=True)
    try:
        test = rig.start(TEST)
        assert fired == [test.id] and test.status == OpStatus.SUCCEEDED.value
        retries = [j for j in scheduler._scheduler.get_jobs() if j.args[0] == test.id and j.args[1] == 0
                   and j.id != f"test-expiry:{test.id}"]
        assert len(retries) == 1, "one look-again job, still attempt 0"
        assert retries[0].next_run_time - datetime.now(UTC) < timedelta(seconds=60)
        assert not [a for a in rig.store.audit_trail(test.id) if a.actor == "scheduler"], "nothing failed"
    finally:
        scheduler.shutdown()

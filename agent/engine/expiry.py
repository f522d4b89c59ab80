"""The forced cleanup of a test failover past its maximum age.

Two rules keep it from making things worse. It never cancels an operation that is running: a
test failover still executing, or any operation on its plan, makes it wait
(:class:`CleanupDeferred`, retried shortly). And a forced cleanup that fails is not dropped: the
same cleanup operation is resumed from its failed step on the next attempt (a partly
successful one is followed by a new cleanup of what is left), with a capped
exponential backoff between attempts (:func:`retry_delay_s`), every attempt audited, until one
succeeds -- a forgotten drill left running holds replica VMs and test networks indefinitely.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.engine.model import FINAL_STATUSES, OperationKind, OperationView, OpStatus
from agent.errors import TransientError

if TYPE_CHECKING:
    from agent.engine.service import Engine

BUSY = frozenset({OpStatus.RUNNING.value})
DEFER_S = 30.0
"""How long a forced cleanup waits behind a running operation before it looks again."""
RETRY_BASE_S = 60.0
RETRY_CAP_S = 3600.0


class CleanupDeferred(TransientError):
    """The forced cleanup waits: an operation on the same plan is running."""

    code = "cleanup_deferred"


def retry_delay_s(attempt: int) -> float:
    """Seconds before forced-cleanup attempt ``attempt + 1`` (attempt 1 failed: one minute,
    then doubling, never more than an hour)."""
    return min(RETRY_CAP_S, RETRY_BASE_S * 2 ** max(0, attempt - 1))


def expire_test_failover(engine: Engine, op_id: str, *, actor: str = "scheduler") -> OperationView | None:
    """Clean up test failover ``op_id`` by force; None if a cleanup already succeeded.

    Raises :class:`CleanupDeferred`, changing nothing, while an operation of its plan runs."""
    journal = engine.journal
    op = journal.operation(op_id)
    family = [o for o in journal.operations(limit=10000) if o.plan_name == op.plan_name]
    cleanups = sorted((o for o in family if o.kind == OperationKind.CLEANUP_TEST.value and o.parent_id == op_id),
                      key=lambda o: o.created_at)
    if any(o.status == OpStatus.SUCCEEDED.value for o in cleanups):
        return None
    busy = [o for o in family if o.status in BUSY or engine.is_running(o.id)]
    if busy:
        raise CleanupDeferred(
            f"test failover {op_id} is past its maximum age, but operation {busy[0].id} ({busy[0].kind}) of plan "
            f"{op.plan_name} is {busy[0].status}: the forced cleanup waits for it", operation=op_id,
            waiting_for=busy[0].id)
    # A partly successful cleanup is final: the next attempt is a new cleanup, which re-reads
    # the sites and removes only what is left (cleaning up twice is safe).
    unfinished = [o for o in cleanups if OpStatus(o.status) not in FINAL_STATUSES]
    max_age_s = engine.config.policies.test_failover_max_age.total_seconds()
    if unfinished:
        # An earlier forced cleanup failed or paused: it goes on from its journal, so a step that
        # removed something is not run twice and nothing it reserved is lost.
        child = unfinished[-1].id
        engine.store.audit(actor=actor, action="test_failover.force_cleanup_retried", operation_id=op_id,
                           details={"cleanup": child})
        view = engine.resume(child, actor=actor)
    else:
        if op.status not in (s.value for s in FINAL_STATUSES):
            journal.set_status(op_id, OpStatus.CANCELLED, result={"expired": True})
        journal.release_vms(op_id)
        engine.store.audit(actor=actor, action="test_failover.expired", operation_id=op_id,
                           details={"max_age_s": max_age_s})
        child = engine.create(OperationKind.CLEANUP_TEST, op.plan_name, parent_id=op_id, requested_by=actor)
        view = engine.run(child)
    cleaned = view.status == OpStatus.SUCCEEDED.value
    action = "test_failover.force_cleaned" if cleaned else "test_failover.force_cleanup_failed"
    engine.store.audit(actor=actor, action=action, operation_id=op_id,
                       details={"cleanup": child, "status": view.status,
                                "removed": [{"step": s.name, "changed": s.changed} for s in view.steps]})
    return view

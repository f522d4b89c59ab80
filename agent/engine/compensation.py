"""Cancel: stop scheduling new steps, then undo what is safe to undo.

* a test failover is cleaned up (the cleanup is always safe);
* a planned, unplanned or failback failover that has not been committed is rolled back from
  its snapshots: Hyper-V Replica failovers cancelled (``Stop-VMFailover``), source VMs started
  again, failover IPs, routes and DNS records put back as they were;
* reservations are kept: they are protection-time state and harmless;
* prepare, commit and reverse have nothing safe to undo.

The compensation is itself a journalled operation (kind ``cancel``, or ``cleanup_test``), so a
cancel interrupted by a crash resumes like anything else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from agent.config import AgentConfig
from agent.domain.plan import Plan
from agent.engine.actions.hyperv import FailoverCompleted
from agent.engine.journal import Journal
from agent.engine.model import ERROR_POLICY, FINAL_STATUSES, OperationKind, OpStatus, StepSpec
from agent.engine.operations import steps_for
from agent.engine.planio import plan_from_json
from agent.engine.store import OperationRow

if TYPE_CHECKING:
    from agent.engine.runner import Runner

UNDONE_BY: dict[OperationKind, OperationKind] = {
    OperationKind.TEST_FAILOVER: OperationKind.CLEANUP_TEST,
    OperationKind.PLANNED_FAILOVER: OperationKind.CANCEL,
    OperationKind.UNPLANNED_FAILOVER: OperationKind.CANCEL,
    OperationKind.FAILBACK: OperationKind.CANCEL,
}


class Undo(NamedTuple):
    kind: OperationKind
    plan: Plan
    steps: list[StepSpec]


def undo_of(config: AgentConfig, op: OperationRow) -> Undo | None:
    """The operation that would undo ``op`` (its kind, ``op``'s plan and the steps), or None
    when its kind leaves nothing safe to undo. What a cancel runs and what its preview shows."""
    kind = UNDONE_BY.get(OperationKind(op.kind))
    if op.plan is None or kind is None:
        return None
    plan = plan_from_json(op.plan)
    return Undo(kind, plan, steps_for(kind, config, plan, op.id))


def compensate(runner: Runner, op: OperationRow) -> dict[str, Any]:
    """Run (or resume, or run again) the compensation of ``op``; what it did, for the result of
    ``op``: the compensating operation, its status, and ``not_restored``, the VMs it could not
    put back as they were (an error, or a host it could not reach). Those can be tried again
    with another cancel of ``op`` (:func:`can_compensate_again`): every undo step reads the
    state and acts only on what is still to undo."""
    undo = undo_of(runner.config, op)
    if undo is None:
        return {"undone": "nothing: this kind changes nothing that is safe to undo"}
    child_kind, plan, steps = undo
    # A compensation cut off by a crash is resumed, not started a second time (a second one
    # could not even start: the first still holds the VMs). One that ended without putting
    # everything back is followed by a new one.
    earlier = [o for o in runner.journal.operations(limit=10000)
               if o.parent_id == op.id and o.kind == child_kind.value]
    if earlier and OpStatus(earlier[0].status) not in FINAL_STATUSES:
        child = earlier[0].id  # the newest: only it can be unfinished
    else:
        runner.journal.release_vms(op.id)
        child = runner.journal.create_operation(
            kind=child_kind, plan_name=op.plan_name, plan=op.plan, mode=op.mode,
            error_policy=ERROR_POLICY[child_kind], source_site=op.source_site, target_site=op.target_site,
            steps=steps, vms=[v.name for v in plan.vms], parent_id=op.id, requested_by=op.requested_by,
        )
    view = runner.run(child)
    left, completed = not_restored(runner.journal, child, view.failed_vms)
    return {"operation": child, "status": view.status, "failed_vms": view.failed_vms,
            "not_restored": left, "cannot_undo": completed}


def not_restored(journal: Journal, op_id: str, failed_vms: list[str]) -> tuple[list[str], list[str]]:
    """The VMs a compensation did not put back: those another cancel may still put back (they
    failed, or an undo was skipped because a host or router could not be reached), and those
    whose failover is completed, which no cancel undoes."""
    left, completed = set(failed_vms), set()
    for row in journal.steps(op_id):
        for it in (row.outcome or {}).get("items", []):
            if not it.get("vm"):
                continue
            if (it.get("error") or {}).get("code") == FailoverCompleted.code:
                completed.add(it["vm"])
            elif str(it.get("skipped") or "").startswith("unreachable"):
                left.add(it["vm"])
    return sorted(left - completed), sorted(completed)


def can_compensate_again(op: OperationRow) -> bool:
    """A cancelled operation whose compensation left VMs not put back may be cancelled again."""
    comp = (op.result or {}).get("compensation") or {}
    return op.status == OpStatus.CANCELLED.value and bool(comp.get("not_restored"))

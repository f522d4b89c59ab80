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

from typing import TYPE_CHECKING, Any

from agent.engine.model import ERROR_POLICY, OperationKind
from agent.engine.operations import steps_for
from agent.engine.planio import plan_from_json
from agent.engine.store import OperationRow

if TYPE_CHECKING:
    from agent.engine.runner import Runner


def compensate(runner: Runner, op: OperationRow) -> dict[str, Any]:
    kind = OperationKind(op.kind)
    if op.plan is None or kind not in (OperationKind.TEST_FAILOVER, OperationKind.PLANNED_FAILOVER,
                                       OperationKind.UNPLANNED_FAILOVER, OperationKind.FAILBACK):
        return {"undone": "nothing: this kind changes nothing that is safe to undo"}
    plan = plan_from_json(op.plan)
    child_kind = OperationKind.CLEANUP_TEST if kind == OperationKind.TEST_FAILOVER else OperationKind.CANCEL
    steps = steps_for(child_kind, runner.config, plan, op.id)
    # A compensation cut off by a crash is resumed, not started a second time (a second one
    # could not even start: the first still holds the VMs).
    earlier = [o for o in runner.journal.operations(limit=10000)
               if o.parent_id == op.id and o.kind == child_kind.value]
    if earlier:
        child = earlier[-1].id  # the oldest: there is only ever one
    else:
        runner.journal.release_vms(op.id)
        child = runner.journal.create_operation(
            kind=child_kind, plan_name=op.plan_name, plan=op.plan, mode=op.mode,
            error_policy=ERROR_POLICY[child_kind], source_site=op.source_site, target_site=op.target_site,
            steps=steps, vms=[v.name for v in plan.vms], parent_id=op.id, requested_by=op.requested_by,
        )
    view = runner.run(child)
    return {"operation": child, "status": view.status, "failed_vms": view.failed_vms}

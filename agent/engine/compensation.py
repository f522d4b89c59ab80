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

from agent.config import AgentConfig
from agent.domain.plan import MoveRoute, Plan, SetFailoverIp
from agent.engine.model import ERROR_POLICY, OperationKind, StepSpec
from agent.engine.operations import _by, _host_steps, _Steps, cleanup_test_steps
from agent.engine.planio import plan_from_json
from agent.engine.store import OperationRow

if TYPE_CHECKING:
    from agent.engine.runner import Runner


def cancel_steps(config: AgentConfig, plan: Plan, op_id: str) -> list[StepSpec]:
    b = _Steps()
    vms = list(plan.vms)
    full = config.agent.mode == "full"
    if full:
        b.add_stage(_host_steps("cancel", "cancel-failover", "hyperv.replicate", plan.target_site, vms,
                                lambda v: v.target_host, {"replica_action": "cancel"}))
        b.add_stage(_host_steps("cancel", "restart-source", "hyperv.power", plan.source_site, vms,
                                lambda v: v.source_host, {"power": "start", "tolerate_unreachable": True}))
    setips = plan.of(SetFailoverIp)
    b.add_stage([StepSpec(name=f"cancel/restore-failover-ip/{host}", action="hyperv.restore_failover", stage=0,
                          target=host, spec={"site": plan.target_site, "host": host, "scope": op_id,
                                             "items": [{"key": f"{c.vm}/{c.nic}", "vm": c.vm, "nic": c.nic} for c in cs]})
                 for host, cs in _by(setips, lambda c: c.host).items()])
    routers = sorted({r.router for m in plan.of(MoveRoute) for r in (*m.withdraw, *m.announce)})
    b.add_stage([StepSpec(name=f"cancel/restore-routes/{router}", action="routes.restore", stage=0,
                          target=f"router:{router}", spec={"router": router, "scope": op_id, "items": []})
                 for router in routers])
    zones = sorted({(c.server, c.zone) for c in plan.changes if c.kind == "dns"})
    b.add_stage([StepSpec(name=f"cancel/restore-dns/{server}/{zone}", action="dns.restore", stage=0,
                          target=f"dns:{server}", spec={"server": server, "zone": zone, "scope": op_id, "items": []})
                 for server, zone in zones])
    return b.steps


def compensate(runner: Runner, op: OperationRow) -> dict[str, Any]:
    kind = OperationKind(op.kind)
    if op.plan is None or kind not in (OperationKind.TEST_FAILOVER, OperationKind.PLANNED_FAILOVER,
                                       OperationKind.UNPLANNED_FAILOVER, OperationKind.FAILBACK):
        return {"undone": "nothing: this kind changes nothing that is safe to undo"}
    plan = plan_from_json(op.plan)
    if kind == OperationKind.TEST_FAILOVER:
        child_kind, steps = OperationKind.CLEANUP_TEST, cleanup_test_steps(runner.config, plan, op.id)
    else:
        child_kind, steps = OperationKind.CANCEL, cancel_steps(runner.config, plan, op.id)
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

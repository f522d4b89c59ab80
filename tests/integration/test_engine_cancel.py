"""Cancel: a planned failover cancelled at its manual pause is rolled back (Hyper-V Replica
failover cancelled, source VMs running again, failover IPs, routes and DNS as they were); a test
failover cancelled is cleaned up. (A cancel killed half-way: see test_engine_recovery.)"""

from __future__ import annotations

from agent.domain.model import ReplicationState
from agent.engine.model import OperationKind, OpStatus
from tests.rigs import ACTOR, normalised

VMS = ("sql01", "app01", "app02", "web01")


def test_cancelling_a_planned_failover_at_its_manual_pause_rolls_it_back(new_rig) -> None:
    rig = new_rig()
    before = rig.world.snapshot()
    view = rig.engine.start(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    assert view.status == OpStatus.WAITING.value
    during = rig.world.snapshot()
    # The pause follows the first group: sql01 is failed over and running at the recovery site,
    # with its failover IPs set; the other groups have not started.
    assert during["replications"]["sql01"]["state"] == ReplicationState.FAILED_OVER_WAITING_COMPLETION.value
    assert during["vms"]["contoso-east"]["sql01"]["power"] == "Off"
    assert during["vms"]["contoso-west"]["sql01"]["power"] == "Running"
    assert during["failover_configs"] != before["failover_configs"]

    cancelled = rig.engine.cancel(view.id, actor=ACTOR)

    assert cancelled.status == OpStatus.CANCELLED.value
    [comp] = [op for op in rig.engine.operations() if op.kind == OperationKind.CANCEL.value]
    assert (comp.parent_id, comp.status) == (view.id, OpStatus.SUCCEEDED.value)
    assert rig.engine.view(comp.id).errors == []
    after = rig.world.snapshot()
    replicating = ReplicationState.REPLICATING.value
    assert {vm: r["state"] for vm, r in after["replications"].items()} == dict.fromkeys(VMS, replicating)
    assert {vm: after["vms"]["contoso-east"][vm]["power"] for vm in VMS} == dict.fromkeys(VMS, "Running")
    assert {vm: after["vms"]["contoso-west"][vm]["power"] for vm in VMS} == dict.fromkeys(VMS, "Off")
    for part in ("failover_configs", "routes", "record_sets", "replications"):
        assert after[part] == before[part], part
    # Kept on purpose: the reservations (protection-time state, harmless and reused next time).
    assert normalised(after["grants"]["contoso-west"]) == normalised(during["grants"]["contoso-west"])
    assert rig.engine.journal.reservations(purpose="failover"), "the store still records them"
    # Nothing holds the VMs: the plan can be failed over again from the start.
    again = rig.start(OperationKind.PLANNED_FAILOVER)
    assert again.status == OpStatus.SUCCEEDED.value


def test_a_cancel_requested_while_it_runs_rolls_back_dns_and_routes_too(new_rig) -> None:
    """An operator cancels (from another process) while the last group's routes are moving:
    the runner notices before its next stage and undoes the DNS updates of the applications
    group and the routes already withdrawn."""
    rig = new_rig()
    before = rig.world.snapshot()
    view = rig.engine.start(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    requested = []

    def operator_cancels(phase: str, step: str) -> None:
        if (phase, step) == ("outcome", "web/routes-withdraw/rtr-east") and not requested:
            requested.append(step)
            rig.engine.journal.request_cancel(view.id, ACTOR)

    rig.engine.runner.crash_hook = operator_cancels  # the step-boundary seam, used here as a clock
    view = rig.engine.resume(view.id, actor=ACTOR)

    assert requested and view.status == OpStatus.CANCELLED.value
    steps = {s.name: s.status for s in view.steps}
    assert steps["applications/dns/dns-contoso/corp.contoso.example."] == "succeeded", "DNS had moved"
    assert steps["web/routes-announce/rtr-west"] == "pending", "stopped before announcing"
    after = rig.world.snapshot()
    for part in ("failover_configs", "routes", "record_sets", "replications"):
        assert after[part] == before[part], part


def test_cancelling_a_test_failover_cleans_it_up(new_rig) -> None:
    rig = new_rig()
    before = rig.world.snapshot()
    view = rig.engine.start(OperationKind.TEST_FAILOVER, "contoso-apps")
    assert view.status == OpStatus.WAITING.value
    assert rig.world.snapshot() != before

    cancelled = rig.engine.cancel(view.id, actor=ACTOR)

    assert cancelled.status == OpStatus.CANCELLED.value
    [cleanup] = [op for op in rig.engine.operations() if op.kind == OperationKind.CLEANUP_TEST.value]
    assert (cleanup.parent_id, cleanup.status) == (view.id, OpStatus.SUCCEEDED.value)
    assert rig.world.snapshot() == before
    assert rig.engine.journal.reservations(purpose="test") == []

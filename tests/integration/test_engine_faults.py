"""Faults: transient ones are ridden out by retries; a permanent one stops a planned failover at
that VM (and starting it again after the fault is fixed finishes it), while an unplanned failover
carries on with the other VMs and names the one that failed (STYLE habit 6: the error policy is
a named value per operation kind)."""

from __future__ import annotations

from agent.domain.model import ReplicationState
from agent.engine.model import ErrorPolicy, OperationKind, OpStatus, StepStatus
from tests.rigs import (
    ACTOR,
    changes,
    normalised,
)

LIFECYCLE = [OperationKind.TEST_FAILOVER, OperationKind.CLEANUP_TEST, OperationKind.PLANNED_FAILOVER,
             OperationKind.COMMIT, OperationKind.REVERSE, OperationKind.FAILBACK]


def retries_of(rig, op_id: str) -> int:
    return sum(len((s.outcome or {}).get("info", {}).get("retries", [])) for s in rig.engine.journal.steps(op_id))


def test_one_call_in_five_failing_transiently_every_operation_still_succeeds(new_rig) -> None:
    reference, flaky = new_rig(name="reference"), new_rig(name="flaky")
    flaky.world.inject({"call": "*", "fault": "transient", "rate": 0.2})
    retried = {}
    for kind in LIFECYCLE:
        ref_view = reference.start(kind)
        view = flaky.start(kind)
        assert (view.status, view.errors) == (OpStatus.SUCCEEDED.value, []), kind
        assert ref_view.status == OpStatus.SUCCEEDED.value
        retried[kind] = retries_of(flaky, view.id)
        # The same sites as without faults, after every single operation.
        assert normalised(flaky.world.snapshot()) == normalised(reference.world.snapshot()), kind

    [(rule, seen, fired)] = flaky.world.faults()
    assert seen > 100 and 0.1 * seen < fired < 0.3 * seen, "faults were really injected"
    assert sum(retried.values()) > 10, f"steps rode the faults out by retrying: {retried}"
    # Retrying neither doubled nor dropped a change: the same changes, as often, as without faults.
    assert changes(flaky.world) == changes(reference.world)


def test_a_permanent_fault_stops_a_planned_failover_at_that_vm_and_a_restart_finishes_it(new_rig) -> None:
    reference = new_rig(name="reference")
    reference.start(OperationKind.PLANNED_FAILOVER)
    rig = new_rig()
    routes_before = rig.world.snapshot()["routes"]
    rig.world.inject({"call": "hyperv.replicate.failover", "target": "app02", "fault": "permanent"})

    view = rig.start(OperationKind.PLANNED_FAILOVER)

    assert view.error_policy == ErrorPolicy.STOP_AT_FIRST_ERROR.value
    assert view.status == OpStatus.FAILED.value
    assert view.failed_vms == ["app02"]
    assert [(e["step"], e["vm"], e["code"]) for e in view.errors] == [
        ("applications/failover/hv-west-02", "app02", "injected_fault")]
    after = [s.name for s in view.steps if s.ordinal > next(x.ordinal for x in view.steps
                                                            if x.name == "applications/failover/hv-west-02")]
    # Nothing after it ran but what needs nothing of it: the next group's VMM work and failover
    # IPs, made ahead (they touch no VM's state).
    ahead = {"vmm.reserve", "vmm.connect", "hyperv.set_failover"}
    ran = [s for s in view.steps if s.name in after and s.status != StepStatus.PENDING.value]
    assert after and all(s.action in ahead and s.group == "web" for s in ran), [s.name for s in ran]
    reps = rig.world.snapshot()["replications"]
    assert reps["app02"]["state"] == ReplicationState.PREPARED_FOR_FAILOVER.value
    assert reps["web01"]["state"] == ReplicationState.REPLICATING.value, "the next group was not touched"
    assert rig.world.snapshot()["routes"] == routes_before, "the subnet's routes have not moved"

    rig.world.clear_faults()
    since = len(rig.world.calls())
    view = rig.through_pauses(rig.engine.resume(view.id, actor=ACTOR))

    assert view.status == OpStatus.SUCCEEDED.value and view.failed_vms == []
    assert normalised(rig.world.snapshot()) == normalised(reference.world.snapshot())
    redone = changes(rig.world, since)
    assert ("hyperv.replicate.failover", "hv-west-02", "app02") in redone
    assert ("hyperv.replicate.failover", "hv-west-01", "app01") not in redone, "steps that succeeded are not rerun"


def test_a_permanent_fault_in_an_unplanned_failover_fails_that_vm_and_the_others_make_it(new_rig) -> None:
    rig = new_rig()
    rig.world.inject({"call": "hyperv.replicate.failover", "target": "app02", "fault": "permanent"})

    view = rig.start(OperationKind.UNPLANNED_FAILOVER)

    assert view.error_policy == ErrorPolicy.CARRY_ON.value
    assert view.status == OpStatus.PARTIAL.value
    assert view.failed_vms == ["app02"]
    assert sorted(view.succeeded_vms) == ["app01", "sql01", "web01"]
    world = rig.world.snapshot()
    states = {vm: r["state"] for vm, r in world["replications"].items()}
    assert states == {"sql01": "FailedOverWaitingCompletion", "app01": "FailedOverWaitingCompletion",
                      "web01": "FailedOverWaitingCompletion", "app02": "Replicating"}
    west = world["vms"]["contoso-west"]
    assert {vm: west[vm]["power"] for vm in states} == {
        "sql01": "Running", "app01": "Running", "web01": "Running", "app02": "Off"}
    # Later steps skipped the failed VM: it was not started, and its DNS still points at the source.
    start = next(s for s in rig.engine.journal.steps(view.id) if s.name == "applications/start/hv-west-02")
    assert [it.get("skipped") for it in start.outcome["items"]] == ["its VM failed in an earlier step"]
    records = world["record_sets"]["dns-contoso"]["corp.contoso.example."]
    assert records["app02.corp.contoso.example. A"]["values"] == ["192.168.2.11"]
    assert records["app01.corp.contoso.example. A"]["values"] != ["192.168.2.10"], "app01's DNS moved"
    # The routes of the retained subnet moved: sql01 and web01, its VMs, made it.
    assert "192.168.1.0/24" in world["routes"]["rtr-west"]["routes"]
    assert "192.168.1.0/24" not in world["routes"]["rtr-east"]["routes"]

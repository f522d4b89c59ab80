"""Cancel: a planned failover cancelled at its manual pause is rolled back (Hyper-V Replica
failover cancelled, source VMs running again, failover IPs, routes and DNS as they were); a test
failover cancelled is cleaned up. (A cancel killed half-way: see test_engine_recovery.)"""

from __future__ import annotations

import pytest

from agent.domain.model import ReplicationState
from agent.engine.compensation import can_compensate_again
from agent.engine.model import OperationKind, OpStatus
from tests.rigs import ACTOR, Killed, kill_at, normalised

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


def east_host(rig, vm: str) -> str:
    return rig.world.snapshot()["vms"]["contoso-east"][vm]["host"]


def test_a_failover_stopped_after_prepare_is_cancelled_on_the_primary_and_the_vm_runs_again(new_rig) -> None:
    """Finding 2: the failover of sql01 fails after its source was shut down and prepared (on
    main: a test failover still running; here any failure at that point). The cancel must be
    sent to the primary host, which holds a prepared failover, and sql01 must run again there;
    on main it went to the replica host, was refused, and sql01 stayed off at both sites."""
    rig = new_rig()
    before = rig.world.snapshot()
    rig.world.inject({"call": "hyperv.replicate.failover", "target": "sql01", "fault": "permanent"})
    failed = rig.engine.start(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    assert failed.status == OpStatus.FAILED.value and failed.failed_vms == ["sql01"]
    during = rig.world.snapshot()
    assert during["replications"]["sql01"]["state"] == ReplicationState.PREPARED_FOR_FAILOVER.value
    assert during["vms"]["contoso-east"]["sql01"]["power"] == "Off"
    since = len(rig.world.calls())

    cancelled = rig.engine.cancel(failed.id, actor=ACTOR)

    assert cancelled.status == OpStatus.CANCELLED.value
    comp = rig.engine.journal.operation(failed.id).result["compensation"]
    assert (comp["status"], comp["not_restored"]) == (OpStatus.SUCCEEDED.value, [])
    after = rig.world.snapshot()
    assert after["replications"] == before["replications"]
    assert after["vms"]["contoso-east"]["sql01"]["power"] == "Running"
    assert after["vms"]["contoso-west"]["sql01"]["power"] == "Off"
    assert after["failover_configs"] == before["failover_configs"]
    cancels = [(c.kind, c.target) for c in rig.world.calls()[since:] if c.kind == "hyperv.replicate.cancel"]
    assert cancels == [("hyperv.replicate.cancel", east_host(rig, "sql01"))], "on the primary host, once"
    # The power state it put back is the one journalled before the stop.
    [snap] = rig.engine.journal.snapshots(scope=failed.id, kind="power")
    assert snap.data == {"power": "Running"}


def test_a_cancel_leaves_off_a_vm_that_was_off_before_the_failover(new_rig) -> None:
    rig = new_rig()
    rig.ports.hyperv["contoso-east"].set_power(east_host(rig, "sql01"), "stop", ["sql01"])
    view = rig.engine.start(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    assert view.status == OpStatus.WAITING.value  # sql01 failed over, the others not started

    rig.engine.cancel(view.id, actor=ACTOR)

    after = rig.world.snapshot()
    assert after["replications"]["sql01"]["state"] == ReplicationState.REPLICATING.value
    assert after["vms"]["contoso-east"]["sql01"]["power"] == "Off", "as it was before the failover"
    assert after["vms"]["contoso-west"]["sql01"]["power"] == "Off"
    [comp] = [op for op in rig.engine.operations() if op.kind == OperationKind.CANCEL.value]
    restarts = {it["vm"]: it.get("skipped") for s in rig.engine.journal.steps(comp.id)
                if "/restart-source/" in s.name for it in s.outcome["items"]}
    assert restarts["sql01"] == f"it was Off before {view.id}: left so"
    assert restarts["app01"] == f"{view.id} did not stop it: left as it is"


def test_a_failover_is_kept_while_its_primary_cannot_be_reached_and_a_second_cancel_finishes(new_rig) -> None:
    """Cancelling turns the failed-over replica off; with the primary host unreachable nobody
    could start the primary again, so the failover is kept (sql01 keeps running at the recovery
    site), the cancel says which VM it did not put back, and cancelling again once the host
    answers finishes the undo."""
    rig = new_rig()
    view = rig.engine.start(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    assert view.status == OpStatus.WAITING.value
    rig.world.inject({"call": "hyperv.*", "target": east_host(rig, "sql01"), "fault": "transient"})

    rig.engine.cancel(view.id, actor=ACTOR)

    during = rig.world.snapshot()
    assert during["replications"]["sql01"]["state"] == ReplicationState.FAILED_OVER_WAITING_COMPLETION.value
    assert during["vms"]["contoso-west"]["sql01"]["power"] == "Running"
    comp = rig.engine.journal.operation(view.id).result["compensation"]
    assert comp["status"] == OpStatus.PARTIAL.value and comp["not_restored"] == ["sql01"]
    errors = rig.engine.view(comp["operation"]).errors
    assert any("the failover of sql01 is kept, running at contoso-west" in e["message"] for e in errors)

    rig.world.clear_faults()
    again = rig.engine.cancel(view.id, actor=ACTOR)

    assert again.status == OpStatus.CANCELLED.value
    second = rig.engine.journal.operation(view.id).result["compensation"]
    assert second["operation"] != comp["operation"]
    assert (second["status"], second["not_restored"]) == (OpStatus.SUCCEEDED.value, [])
    after = rig.world.snapshot()
    assert after["replications"]["sql01"]["state"] == ReplicationState.REPLICATING.value
    assert after["vms"]["contoso-east"]["sql01"]["power"] == "Running"
    assert after["vms"]["contoso-west"]["sql01"]["power"] == "Off"


def test_a_cancel_does_not_pretend_to_undo_a_completed_failover(new_rig) -> None:
    """Someone completed sql01's failover by hand while the operation waited: the cancel says it
    cannot undo that one (fail back instead) and names it as not put back."""
    rig = new_rig()
    view = rig.engine.start(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    west_host = rig.world.snapshot()["vms"]["contoso-west"]["sql01"]["host"]
    rig.ports.hyperv["contoso-west"].replicate(west_host, "complete", ["sql01"])

    rig.engine.cancel(view.id, actor=ACTOR)

    comp = rig.engine.journal.operation(view.id).result["compensation"]
    assert (comp["not_restored"], comp["cannot_undo"]) == ([], ["sql01"])
    assert not can_compensate_again(rig.engine.journal.operation(view.id)), "no second cancel would do better"
    [error] = [e for e in rig.engine.view(comp["operation"]).errors if e["step"].startswith("cancel/cancel-failover")]
    assert error["code"] == "failover_completed" and "a cancel cannot undo it" in error["message"]
    after = rig.world.snapshot()
    assert after["replications"]["sql01"]["state"] == ReplicationState.FAILED_OVER.value
    assert after["vms"]["contoso-west"]["sql01"]["power"] == "Running", "left running where it is"
    assert after["vms"]["contoso-east"]["sql01"]["power"] == "Off", "never two copies running"


def test_a_prepared_failover_whose_primary_cannot_be_reached_is_named_not_put_back(new_rig) -> None:
    rig = new_rig()
    rig.world.inject({"call": "hyperv.replicate.failover", "target": "sql01", "fault": "permanent"})
    failed = rig.engine.start(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    rig.world.clear_faults()
    rig.world.inject({"call": "hyperv.*", "target": east_host(rig, "sql01"), "fault": "transient"})

    rig.engine.cancel(failed.id, actor=ACTOR)

    comp = rig.engine.journal.operation(failed.id).result["compensation"]
    assert comp["not_restored"] == ["sql01"]
    assert any(e["code"] == "unreachable" and e["vm"] == "sql01" for e in rig.engine.view(comp["operation"]).errors)
    assert rig.world.snapshot()["replications"]["sql01"]["state"] == ReplicationState.PREPARED_FOR_FAILOVER.value


def test_a_kill_after_the_source_was_stopped_still_restores_it_running(new_rig) -> None:
    """Killed after the stop acted but before its outcome was journalled: the re-run reads the VM
    off, yet the power state journalled before the stop (running) is the one a cancel restores."""
    rig = new_rig(crash_hook=kill_at("acted", "databases/shutdown-source/hv-east-01"))
    with pytest.raises(Killed):
        rig.engine.start(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    rig.restart()
    [view] = rig.engine.resume_unfinished()
    assert view.status == OpStatus.WAITING.value
    assert rig.world.snapshot()["vms"]["contoso-east"]["sql01"]["power"] == "Off"

    rig.engine.cancel(view.id, actor=ACTOR)

    after = rig.world.snapshot()
    assert after["vms"]["contoso-east"]["sql01"]["power"] == "Running"
    assert after["replications"]["sql01"]["state"] == ReplicationState.REPLICATING.value


def test_a_source_that_cannot_be_started_again_is_named_and_a_second_cancel_starts_it(new_rig) -> None:
    """The primary host answered when the cancel looked, then refused the start: the cancel does
    not end quietly succeeded, it names sql01 as not put back; cancelling again starts it."""
    rig = new_rig()
    view = rig.engine.start(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    rig.world.inject({"call": "hyperv.set_power.start", "target": east_host(rig, "sql01"), "fault": "transient"})

    rig.engine.cancel(view.id, actor=ACTOR)

    comp = rig.engine.journal.operation(view.id).result["compensation"]
    assert comp["status"] == OpStatus.SUCCEEDED.value and comp["not_restored"] == ["sql01"]
    assert rig.world.snapshot()["vms"]["contoso-east"]["sql01"]["power"] == "Off"
    rig.world.clear_faults()
    rig.engine.cancel(view.id, actor=ACTOR)
    assert rig.world.snapshot()["vms"]["contoso-east"]["sql01"]["power"] == "Running"
    assert rig.engine.journal.operation(view.id).result["compensation"]["not_restored"] == []

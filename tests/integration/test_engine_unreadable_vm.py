"""One VM whose Hyper-V state cannot be read while planning (finding 7): an unplanned failover
goes on for the others, naming it and why; a planned failover stops before changing anything,
naming it. Made with a simulator fault rule that refuses every read of that VM's replication."""

from __future__ import annotations

import pytest

from agent.domain.model import ReplicationState
from agent.domain.validation import PlanRefused
from agent.engine.model import OperationKind, OpStatus
from tests.rigs import DEMO_PLAN

UNREADABLE = {"call": "hyperv.get_replications", "target": "web01", "fault": "permanent"}
WAITING_COMPLETION = ReplicationState.FAILED_OVER_WAITING_COMPLETION.value


def test_an_unplanned_failover_leaves_out_the_unreadable_vm_and_fails_over_the_others(new_rig) -> None:
    rig = new_rig()
    before = rig.world.snapshot()
    rig.world.inject(UNREADABLE)

    plan = rig.engine.plan(DEMO_PLAN, "unplanned")
    assert [v.name for v in plan.vms] == ["sql01", "app01", "app02"]
    assert [vm for vm, _ in plan.excluded] == ["web01"]
    assert any(n.startswith("VM web01 is left out: its Hyper-V state cannot be read (injected_fault at hv-")
               for n in plan.notes)

    view = rig.through_pauses(rig.engine.start(OperationKind.UNPLANNED_FAILOVER, DEMO_PLAN))

    assert view.status == OpStatus.PARTIAL.value
    assert view.failed_vms == ["web01"] and view.succeeded_vms == ["sql01", "app01", "app02"]
    [error] = view.errors
    assert error["code"] == "vm_left_out" and error["vm"] == "web01"
    assert "its Hyper-V state could not be read (injected_fault" in error["message"]
    after = rig.world.snapshot()
    for vm in ("sql01", "app01", "app02"):
        assert after["replications"][vm]["state"] == WAITING_COMPLETION, vm
        assert after["vms"]["contoso-west"][vm]["power"] == "Running", vm
    assert after["replications"]["web01"] == before["replications"]["web01"], "nothing done for web01"
    assert after["vms"]["contoso-east"]["web01"]["power"] == "Running"
    assert before["failover_configs"] == {} and "web01" not in after["failover_configs"]["contoso-west"]
    records = after["record_sets"]["dns-contoso"]["corp.contoso.example."]
    assert records["web01.corp.contoso.example. A"] == before["record_sets"]["dns-contoso"][
        "corp.contoso.example."]["web01.corp.contoso.example. A"]


def test_a_planned_failover_stops_before_changing_anything_naming_the_unreadable_vm(new_rig) -> None:
    rig = new_rig()
    rig.world.inject(UNREADABLE)
    before = rig.world.snapshot()

    with pytest.raises(PlanRefused) as refused:
        rig.engine.start(OperationKind.PLANNED_FAILOVER, DEMO_PLAN)

    assert [r.code for r in refused.value.reasons] == ["vm_state_unreadable"]
    assert refused.value.reasons[0].fields["vm"] == "web01"
    assert "VM web01: its Hyper-V state cannot be read (injected_fault at hv-" in str(refused.value)
    assert rig.engine.operations() == []
    after = rig.world.snapshot()
    assert {k: v for k, v in after.items() if k != "sim"} == {k: v for k, v in before.items() if k != "sim"}


def test_a_host_that_refuses_every_read_leaves_out_all_its_vms_by_name(new_rig) -> None:
    rig = new_rig()
    host = rig.world.snapshot()["vms"]["contoso-east"]["app02"]["host"]
    rig.world.inject({"call": "hyperv.get_replications", "target": host, "fault": "permanent"})
    plan = rig.engine.plan(DEMO_PLAN, "unplanned")
    on_host = sorted(vm for vm, v in rig.world.snapshot()["vms"]["contoso-east"].items() if v["host"] == host)
    assert sorted(vm for vm, _ in plan.excluded) == on_host
    assert not {v.name for v in plan.vms} & set(on_host)

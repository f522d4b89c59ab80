"""Recovery points on the wire: engine -> PowerShell drivers -> pypsrp -> HTTP -> the PSRP test
server -> the Hyper-V handlers -> the simulated sites. The replica hosts list their points
(Get-AgentReplication), the plan resolves a named one from that list, and the failover sends it
to Invoke-AgentReplicaAction, whose handler fails the VM over to exactly that snapshot; a change
of point is the same scripts again (a cancel, then a failover to the new point)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.domain.validation import PlanRefused
from agent.drivers.sim import SimWorld
from agent.engine.model import OperationKind, OpStatus
from tests.integration.test_recovery_points import POINTS, VMS, inventory_with_points
from tests.integration.test_wire_end_to_end import WireRig
from tests.psrpserver import serving
from tests.remotesim import ALL_ROLES, over_psrp, targets_for
from tests.rigs import DEMO_PLAN, Rig, Templates, copy_demo


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[WireRig]:
    with serving(monkeypatch) as server:
        templates = Templates.build(copy_demo(tmp_path / "demo", edit=over_psrp(ALL_ROLES, port=server.port),
                                              inventory=inventory_with_points()))
        state, store = templates.copy_to(tmp_path / "rig")
        assert templates.loaded.simulator_inventory is not None
        world = SimWorld.open(templates.loaded.simulator_inventory, state)
        server.world, server.targets = world, targets_for(templates.loaded.config)
        rig = Rig(templates.loaded, state, store)
        try:
            yield WireRig(rig, world, server)
        finally:
            rig.close()


def sent_points(wire: WireRig, action: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in wire.server.received:
        if r.parameters.get("Action") == action:
            out.update(json.loads(r.parameters["PointsJson"]))
    return out


def test_an_unplanned_failover_to_a_named_point_then_a_change_of_point_over_the_wire(wire: WireRig) -> None:
    plan = wire.rig.engine.plan(DEMO_PLAN, "unplanned", recovery_point="before-patch")
    # The points came from the replica hosts over the wire, times and consistency included.
    sql01 = next(v for v in plan.vms if v.name == "sql01")
    assert (sql01.recovery_point, sql01.recovery_point_at, sql01.recovery_point_app_consistent) == (
        "before-patch", "2026-12-03T05:00:00+00:00", True)

    view = wire.rig.start(OperationKind.UNPLANNED_FAILOVER, recovery_point="before-patch",
                          expect_checksum=plan.checksum())
    assert view.status == OpStatus.SUCCEEDED.value, view.errors
    assert sent_points(wire, "failover") == dict.fromkeys(VMS, "before-patch")
    reps = wire.world.snapshot()["replications"]
    assert {vm: reps[vm].get("failover_point") for vm in VMS} == dict.fromkeys(VMS, "before-patch")

    wire.server.received.clear()
    changed = wire.rig.start(OperationKind.CHANGE_RECOVERY_POINT, recovery_point="latest_app_consistent")
    assert changed.status == OpStatus.SUCCEEDED.value, changed.errors
    wanted = {vm: POINTS[vm][0]["name"] for vm in VMS if vm != "web01"} | {"web01": "before-patch"}
    assert sent_points(wire, "failover") == wanted
    assert [r.parameters["Action"] for r in wire.server.received if "Action" in r.parameters][:1] == ["cancel"]
    reps = wire.world.snapshot()["replications"]
    assert {vm: reps[vm].get("failover_point") for vm in VMS} == wanted
    assert {vm: reps[vm]["state"] for vm in VMS} == dict.fromkeys(VMS, "FailedOverWaitingCompletion")


def test_a_point_no_replica_host_lists_is_refused_over_the_wire_before_anything_changes(wire: WireRig) -> None:
    before = wire.world.snapshot()
    with pytest.raises(PlanRefused) as refused:
        wire.rig.engine.create(OperationKind.PLANNED_FAILOVER, DEMO_PLAN, recovery_point="after-patch")
    assert set(refused.value.codes) == {"recovery_point_not_found"}
    assert "sql01 - (12/3/2026 - 07:00:00)" in refused.value.message
    assert not [r for r in wire.server.received if "Action" in r.parameters]
    assert wire.world.snapshot() == before

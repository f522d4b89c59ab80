"""Recovery points (issue 11): a failover -- test, planned or unplanned -- brings each VM up from
the latest point, the latest application-consistent one, or a named replica snapshot. The choice
is resolved against the points each replica host lists when planning (a point that is not there
is refused before anything changes, naming the VM and the points it has), shown in the plan,
pinned by its checksum, journalled in the failover step, and what the simulated Hyper-V records
is the point the VM came up from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.domain.plan import render_diff
from agent.domain.validation import PlanRefused
from agent.engine.model import OperationKind
from agent.engine.planio import plan_from_json
from agent.errors import NotFoundError, RefusedError
from tests.rigs import CONFIG_DIR, DEMO_PLAN, Rig, Templates, copy_demo

VMS = ("sql01", "app01", "app02", "web01")

# Hyper-V names replica snapshots after the VM and the time; web01's newest consistent one is the oldest.
POINTS: dict[str, list[dict[str, Any]]] = {
    vm: [
        {"name": f"{vm} - (12/3/2026 - 06:00:00)", "created": "2026-12-03T06:00:00Z", "app_consistent": vm != "web01"},
        {"name": f"{vm} - (12/3/2026 - 07:00:00)", "created": "2026-12-03T07:00:00Z"},
        {"name": "before-patch", "created": "2026-12-03T05:00:00Z", "app_consistent": True},
    ]
    for vm in VMS
}


def inventory_with_points(points: dict[str, list[dict[str, Any]]] = POINTS) -> str:
    data = yaml.safe_load((CONFIG_DIR / "demo-inventory.yaml").read_text())
    for site in data["sites"]:
        for vm in site.get("vms", []):
            if vm.get("replica") and vm["name"] in points:
                vm["replica"]["recovery_points"] = points[vm["name"]]
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="module")
def pointed(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    return Templates.build(copy_demo(tmp_path_factory.mktemp("points"), inventory=inventory_with_points()))


@pytest.fixture
def rig(pointed: Templates, new_rig: Callable[..., Rig]) -> Rig:
    return new_rig(pointed)


def replications(rig: Rig) -> dict[str, dict[str, Any]]:
    return rig.world.snapshot()["replications"]


def failover_items(rig: Rig, op_id: str, action: str) -> dict[str, str | None]:
    """What the journal says each VM was failed over to (the step specs as stored)."""
    out: dict[str, str | None] = {}
    for row in rig.engine.journal.steps(op_id):
        args = row.spec
        if row.action == "hyperv.replicate" and args["replica_action"] == action:
            out.update({it["vm"]: it.get("recovery_point") for it in args["items"]})
    return out


# ------------------------------------------------------------------------------ planning


def test_a_named_point_is_shown_per_vm_pinned_by_the_checksum_and_in_the_json(rig: Rig) -> None:
    latest = rig.engine.plan(DEMO_PLAN, "planned")
    named = rig.engine.plan(DEMO_PLAN, "planned", recovery_point="before-patch")
    consistent = rig.engine.plan(DEMO_PLAN, "planned", recovery_point="latest_app_consistent")
    assert len({latest.checksum(), named.checksum(), consistent.checksum()}) == 3
    assert all(v.recovery_point is None for v in latest.vms)
    assert {v.name: v.recovery_point for v in named.vms} == dict.fromkeys(VMS, "before-patch")
    text = render_diff(named)
    assert "recovery point: before-patch" in text
    assert "recovery point before-patch (taken 2026-12-03T05:00:00+00:00, application-consistent)" in text
    body = named.to_json()
    assert body["recovery_point"] == "before-patch"
    sql01 = next(v for v in body["vms"] if v["name"] == "sql01")
    assert sql01["recovery_point_at"] == "2026-12-03T05:00:00+00:00"
    # The stored form reads back with the same checksum (what follow-ups and resume rely on).
    assert plan_from_json(body).checksum() == named.checksum()
    assert "recovery_point" not in next(iter(latest.to_json()["vms"]))


def test_a_point_missing_on_one_vm_refuses_the_plan_naming_it_and_its_points(
        pointed: Templates, new_rig: Callable[..., Rig], tmp_path: Path) -> None:
    # app02 lacks "before-patch"; web01 has no application-consistent point at all.
    points = {**POINTS, "app02": POINTS["app02"][:2], "web01": POINTS["web01"][:2]}
    rig = new_rig(Templates.build(copy_demo(tmp_path / "cfg", inventory=inventory_with_points(points))))
    with pytest.raises(PlanRefused) as named:
        rig.engine.plan(DEMO_PLAN, "unplanned", recovery_point="before-patch")
    # Every VM without it, at once.
    assert named.value.codes == ["recovery_point_not_found"] * 2
    reason, _ = named.value.reasons
    assert {r.fields["vm"] for r in named.value.reasons} == {"app02", "web01"}
    assert reason.fields["vm"] == "app02"
    assert "app02 - (12/3/2026 - 07:00:00)" in reason.message and "app02 - (12/3/2026 - 06:00:00)" in reason.message
    with pytest.raises(PlanRefused) as consistent:
        rig.engine.plan(DEMO_PLAN, "test", recovery_point="latest_app_consistent")
    assert consistent.value.codes == ["no_app_consistent_point"]
    assert "web01" in consistent.value.message
    before = rig.world.snapshot()
    with pytest.raises(PlanRefused):
        rig.engine.create(OperationKind.PLANNED_FAILOVER, DEMO_PLAN, recovery_point="before-patch")
    assert rig.world.snapshot() == before
    assert rig.engine.operations() == []


def test_the_latest_app_consistent_point_is_the_newest_consistent_one(rig: Rig) -> None:
    plan = rig.engine.plan(DEMO_PLAN, "planned", recovery_point="latest_app_consistent")
    by_vm = {v.name: v.recovery_point for v in plan.vms}
    assert by_vm == {**{vm: f"{vm} - (12/3/2026 - 06:00:00)" for vm in ("sql01", "app01", "app02")},
                     "web01": "before-patch"}


def test_the_plan_default_comes_from_the_config_and_the_option_overrides_it(tmp_path: Path,
                                                                             new_rig: Callable[..., Rig]) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["recovery_plans"][0]["recovery_point"] = "before-patch"

    rig = new_rig(Templates.build(copy_demo(tmp_path / "cfg", edit=edit, inventory=inventory_with_points())))
    assert {v.recovery_point for v in rig.engine.plan(DEMO_PLAN, "planned").vms} == {"before-patch"}
    assert {v.recovery_point for v in rig.engine.plan(DEMO_PLAN, "planned", recovery_point="latest").vms} == {None}


def test_no_point_for_kinds_that_move_no_vm(rig: Rig) -> None:
    with pytest.raises(RefusedError, match="not for a prepare"):
        rig.engine.create(OperationKind.PREPARE, DEMO_PLAN, recovery_point="before-patch")


# ------------------------------------------------------------------------------ failing over


@pytest.mark.parametrize("kind", [OperationKind.PLANNED_FAILOVER, OperationKind.UNPLANNED_FAILOVER])
def test_a_failover_to_a_named_point_brings_each_vm_up_from_it(rig: Rig, kind: OperationKind) -> None:
    view = rig.start(kind, recovery_point="before-patch")
    assert view.status == "succeeded", view.errors
    reps = replications(rig)
    assert {vm: reps[vm].get("failover_point") for vm in VMS} == dict.fromkeys(VMS, "before-patch")
    assert failover_items(rig, view.id, "failover") == dict.fromkeys(VMS, "before-patch")
    stored = rig.engine.journal.operation(view.id).plan or {}
    assert stored["recovery_point"] == "before-patch"
    # The commit removes the other points, as Complete-VMFailover does.
    assert all(replications(rig)[vm]["recovery_points"] for vm in VMS)
    assert rig.start(OperationKind.COMMIT).status == "succeeded"
    assert all(replications(rig)[vm].get("recovery_points", []) == [] for vm in VMS)


def test_a_failover_to_the_latest_names_no_snapshot(rig: Rig) -> None:
    view = rig.start(OperationKind.PLANNED_FAILOVER)
    assert view.status == "succeeded", view.errors
    assert {replications(rig)[vm].get("failover_point") for vm in VMS} == {None}
    assert set(failover_items(rig, view.id, "failover").values()) == {None}


def test_a_test_failover_comes_up_from_the_chosen_point_and_cleanup_forgets_it(rig: Rig) -> None:
    view = rig.start(OperationKind.TEST_FAILOVER, recovery_point="latest_app_consistent")
    assert view.status == "succeeded", view.errors
    reps = replications(rig)
    assert reps["sql01"].get("failover_point") == "sql01 - (12/3/2026 - 06:00:00)"
    assert failover_items(rig, view.id, "start_test")["app01"] == "app01 - (12/3/2026 - 06:00:00)"
    assert rig.start(OperationKind.CLEANUP_TEST).status == "succeeded"
    assert {replications(rig)[vm].get("failover_point") for vm in VMS} == {None}


def test_a_point_that_went_away_after_planning_fails_that_vm_and_says_which(rig: Rig) -> None:
    op_id = rig.engine.create(OperationKind.UNPLANNED_FAILOVER, DEMO_PLAN, recovery_point="before-patch")

    rig.world.set_recovery_points("app01", POINTS["app01"][:2])  # Hyper-V pruned the oldest meanwhile
    view = rig.through_pauses(rig.engine.run(op_id))
    assert view.status == "partially_succeeded"
    [error] = [e for e in view.errors if e.get("vm") == "app01"][:1]
    assert error["code"] == "not_found" and "before-patch" in error["message"]
    reps = replications(rig)
    assert reps["app01"]["state"] == "Replicating"
    assert reps["sql01"].get("failover_point") == "before-patch"


# ------------------------------------------------------------------- changing it after failover


def test_the_point_changes_after_failover_until_the_commit(rig: Rig) -> None:
    failover = rig.start(OperationKind.UNPLANNED_FAILOVER)
    assert failover.status == "succeeded", failover.errors
    after_failover = rig.world.snapshot()["vms"]["contoso-west"]["sql01"]["nics"][0]["ip"]
    assert after_failover
    shown = rig.engine.preview(OperationKind.CHANGE_RECOVERY_POINT, DEMO_PLAN, recovery_point="before-patch",
                               strict=True)
    assert {v.recovery_point for v in shown.vms} == {"before-patch"}
    changed = rig.start(OperationKind.CHANGE_RECOVERY_POINT, recovery_point="before-patch",
                        expect_checksum=shown.checksum())
    assert changed.status == "succeeded", changed.errors
    reps = replications(rig)
    assert {vm: (reps[vm]["state"], reps[vm].get("failover_point")) for vm in VMS} == dict.fromkeys(
        VMS, ("FailedOverWaitingCompletion", "before-patch"))
    west = rig.world.snapshot()["vms"]["contoso-west"]
    # Up again at the recovery site, with the failover's addresses (its failover IPs stayed).
    assert {vm: west[vm]["power"] for vm in VMS} == dict.fromkeys(VMS, "Running")
    assert west["sql01"]["nics"][0]["ip"] == after_failover
    actions = [(r.name.split("/")[1], r.action) for r in rig.engine.journal.steps(changed.id)]
    assert actions[:3] == [("stop-failover", "hyperv.replicate"), ("failover", "hyperv.replicate"),
                           ("start", "hyperv.power")]
    assert failover_items(rig, changed.id, "failover") == dict.fromkeys(VMS, "before-patch")
    # And back to the latest state, still before the commit.
    again = rig.start(OperationKind.CHANGE_RECOVERY_POINT, recovery_point="latest")
    assert again.status == "succeeded", again.errors
    assert {replications(rig)[vm].get("failover_point") for vm in VMS} == {None}
    # The commit follows the failover, whatever point it came to.
    assert rig.start(OperationKind.COMMIT).status == "succeeded"
    with pytest.raises(RefusedError, match="commit removed its other recovery points"):
        rig.engine.create(OperationKind.CHANGE_RECOVERY_POINT, DEMO_PLAN, recovery_point="before-patch")


def test_a_change_is_refused_before_a_failover_and_without_a_point(rig: Rig) -> None:
    with pytest.raises(NotFoundError, match="a failover comes first"):
        rig.engine.create(OperationKind.CHANGE_RECOVERY_POINT, DEMO_PLAN, recovery_point="before-patch")
    assert rig.start(OperationKind.PLANNED_FAILOVER).status == "succeeded"
    with pytest.raises(RefusedError, match="names the point"):
        rig.engine.create(OperationKind.CHANGE_RECOVERY_POINT, DEMO_PLAN)
    before = rig.world.snapshot()
    with pytest.raises(PlanRefused) as refused:
        rig.engine.create(OperationKind.CHANGE_RECOVERY_POINT, DEMO_PLAN, recovery_point="no-such-point")
    assert set(refused.value.codes) == {"recovery_point_not_found"}
    assert rig.world.snapshot() == before


def test_a_change_resumed_after_a_crash_ends_with_every_vm_up_on_the_new_point(
        rig: Rig) -> None:
    from tests.rigs import Killed, kill_at

    assert rig.start(OperationKind.PLANNED_FAILOVER).status == "succeeded"
    op_id = rig.engine.create(OperationKind.CHANGE_RECOVERY_POINT, DEMO_PLAN, recovery_point="before-patch")
    first_failover = next(r.name for r in rig.engine.journal.steps(op_id) if r.name.split("/")[1] == "failover")
    rig.restart(crash_hook=kill_at("acted", first_failover))
    with pytest.raises(Killed):
        rig.engine.run(op_id)
    rig.restart()
    [view] = [v for v in rig.resume_all() if v.id == op_id]
    assert view.status == "succeeded", view.errors
    reps = replications(rig)
    assert {reps[vm].get("failover_point") for vm in VMS} == {"before-patch"}
    west = rig.world.snapshot()["vms"]["contoso-west"]
    assert {west[vm]["power"] for vm in VMS} == {"Running"}


def test_vms_moved_by_hand_after_the_change_was_created_fail_alone_saying_why(rig: Rig) -> None:
    assert rig.start(OperationKind.UNPLANNED_FAILOVER).status == "succeeded"
    op_id = rig.engine.create(OperationKind.CHANGE_RECOVERY_POINT, DEMO_PLAN, recovery_point="before-patch")
    west, east = rig.ports.hyperv["contoso-west"], rig.ports.hyperv["contoso-east"]
    west.replicate("hv-west-01", "complete", ["sql01"])  # committed by hand meanwhile
    west.replicate("hv-west-01", "cancel", ["app01"])  # and app01 taken back to a prepared failover
    east.set_power("hv-east-01", "stop", ["app01"])
    east.replicate("hv-east-01", "prepare", ["app01"])
    view = rig.through_pauses(rig.engine.run(op_id))
    assert view.status == "partially_succeeded"
    errors = {e["vm"]: e for e in view.errors}
    assert errors["sql01"]["code"] == "failover_completed" and "cannot change" in errors["sql01"]["message"]
    assert "prepared for failover, not failed over" in errors["app01"]["message"]
    reps = replications(rig)
    assert {vm: reps[vm].get("failover_point") for vm in ("app02", "web01")} == dict.fromkeys(
        ("app02", "web01"), "before-patch")



def test_network_only_shows_the_orchestrator_which_point_to_use(tmp_path: Path, new_rig: Callable[..., Rig]) -> None:
    def network_only(data: dict[str, Any]) -> None:
        data["agent"]["mode"] = "network-only"

    rig = new_rig(Templates.build(copy_demo(tmp_path / "cfg", edit=network_only, inventory=inventory_with_points())))
    named = rig.engine.plan(DEMO_PLAN, "planned", recovery_point="before-patch")
    assert any("orchestrator fails the VMs over; have it use recovery point before-patch" in n for n in named.notes)
    assert not any("orchestrator" in n for n in rig.engine.plan(DEMO_PLAN, "planned").notes)

"""Network-only mode, the default: an outside orchestrator fails the VMs over and the agent does
the network work around it, waiting for the orchestrator where the failover itself happens."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent.engine.model import OperationKind, OpStatus
from tests.rigs import ACTOR, Killed, Rig, Templates, copy_demo, kill_at, play_orchestrator

WAITING = OpStatus.WAITING.value


def network_only(cfg: dict[str, Any]) -> None:
    cfg["agent"]["mode"] = "network-only"


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    return Templates.build(copy_demo(tmp_path_factory.mktemp("network-only"), edit=network_only))


def agent_calls(rig: Rig, since: int) -> Counter[str]:
    return Counter(c.kind for c in rig.world.calls()[since:])


def test_a_planned_failover_waits_for_the_orchestrator_group_by_group(new_rig, templates: Templates) -> None:
    rig = new_rig(templates=templates)
    assert rig.config.agent.mode == "network-only"
    view = rig.engine.start(OperationKind.PLANNED_FAILOVER, "contoso-apps")

    paused: list[tuple[str | None, list[str]]] = []
    for _ in range(10):
        if view.status != WAITING:
            break
        step = next(s for s in view.steps if s.status == "waiting")
        moved = play_orchestrator(rig.engine, rig.ports, view.id) if step.action == "hyperv.await_failover" else []
        paused.append((view.waiting_for, moved))
        view = rig.engine.resume(view.id, actor=ACTOR)
    assert view.status == OpStatus.SUCCEEDED.value, view.errors

    # The first pause names the first group's VM, for the orchestrator; later ones follow the groups.
    assert paused[0][0] == ("fail over sql01 to contoso-west with your orchestrator, then resume this operation "
                            "(not yet: sql01 Replicating)")
    assert paused[0][1] == ["sql01"]
    assert sorted(vm for _, moved in paused for vm in moved) == ["app01", "app02", "sql01", "web01"]

    world = rig.world.snapshot()
    # The network followed the VMs: the retained subnet is routed to the recovery site, and DNS
    # names the changed addresses.
    prefix = "192.168.1.0/24"
    assert prefix in world["routes"]["rtr-west"]["routes"] and prefix not in world["routes"]["rtr-east"]["routes"]
    assert world["routes"]["rtr-branch"]["routes"][prefix]["next_hop"] == "10.0.0.2"
    records = world["record_sets"]["dns-contoso"]["corp.contoso.example."]
    assert records["app01.corp.contoso.example. A"]["values"] == ["172.16.1.10"]
    # Failover IPs were set on the replicas before the orchestrator failed them over.
    assert world["failover_configs"]["contoso-west"]["app01"]["nic0"][0]["address"] == "172.16.1.10"


def test_vms_already_failed_over_by_the_orchestrator_are_checked_not_waited_for(new_rig, templates) -> None:
    """When the orchestrator is ahead of the agent, each wait step reads the replication state
    of its VMs, finds them failed over and goes on: no pause at all."""
    rig = new_rig(templates=templates)
    op = rig.engine.create(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    # The orchestrator fails every VM over before the agent runs (same calls it makes at a pause).
    source = {vm.name: vm.host for vm in rig.ports.vmm["contoso-east"].read_inventory().vms}
    replica = {vm.name: vm.host for vm in rig.ports.vmm["contoso-west"].read_inventory().vms if vm.role == "replica"}
    east, west = rig.ports.hyperv["contoso-east"], rig.ports.hyperv["contoso-west"]
    for vm in ("sql01", "app01", "app02", "web01"):
        east.set_power(source[vm], "stop", [vm])
        east.replicate(source[vm], "prepare", [vm])
        west.replicate(replica[vm], "failover", [vm])
        west.set_power(replica[vm], "start", [vm])
    since = len(rig.world.calls())

    view = rig.through_pauses(rig.engine.run(op))  # answers the manual step only
    assert view.status == OpStatus.SUCCEEDED.value, view.errors
    awaited = [s for s in view.steps if s.action == "hyperv.await_failover"]
    assert [s.items for s in awaited] == [1, 2, 1] and all(s.status == "succeeded" for s in awaited)
    calls = agent_calls(rig, since)
    assert calls["hyperv.get_replications"] >= len(awaited)
    # In network-only mode the agent never drives Hyper-V Replica or VM power itself.
    assert not [k for k in calls if k.startswith(("hyperv.replicate", "hyperv.set_power"))]


def test_a_network_only_test_failover_waits_for_the_test_vms_and_cleans_up(new_rig, templates: Templates,
                                                                          tmp_path: Path) -> None:
    rig = new_rig(templates=templates)
    before = rig.world.snapshot()
    view = rig.engine.start(OperationKind.TEST_FAILOVER, "contoso-apps")
    for _ in range(10):
        if view.status != WAITING:
            break
        play_orchestrator(rig.engine, rig.ports, view.id)
        view = rig.engine.resume(view.id, actor=ACTOR)
    assert view.status == OpStatus.SUCCEEDED.value, view.errors
    assert any(vm.endswith(" - Test") for vm in rig.world.snapshot()["vms"]["contoso-west"])

    cleanup = rig.start(OperationKind.CLEANUP_TEST)
    assert cleanup.status == OpStatus.SUCCEEDED.value, cleanup.errors
    # The orchestrator deletes its test VMs; the agent took back everything it gave them.
    after = rig.world.snapshot()
    assert after["grants"] == before["grants"] and after["vm_networks"] == before["vm_networks"]
    assert after["record_sets"] == before["record_sets"]


def test_resuming_before_the_orchestrator_failed_the_vms_over_moves_nothing(new_rig, templates) -> None:
    """Finding 3: an operator (or an orchestrator) resumes at the pause although no VM failed
    over. The agent reads replication again and waits again, naming the VMs not over yet; the
    subnet's routes and DNS stay at the primary, where the VMs still run."""
    rig = new_rig(templates=templates)
    before = rig.world.snapshot()
    view = rig.engine.start(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    assert view.status == WAITING
    since = len(rig.world.calls())

    for _ in range(3):
        view = rig.engine.resume(view.id, actor=ACTOR)
        assert view.status == WAITING
        assert view.waiting_for == ("fail over sql01 to contoso-west with your orchestrator, then resume this "
                                    "operation (not yet: sql01 Replicating)")
        step = next(s for s in view.steps if s.status == "waiting")
        assert step.action == "hyperv.await_failover"

    assert agent_calls(rig, since)["hyperv.get_replications"] == 3, "each resume read replication again"
    after = rig.world.snapshot()
    for part in ("routes", "record_sets", "replications"):
        assert after[part] == before[part], part
    assert after["vms"]["contoso-east"]["sql01"]["power"] == "Running"
    # Once the orchestrator did fail sql01 over, the same resume goes on to the next pause.
    play_orchestrator(rig.engine, rig.ports, view.id)
    view = rig.engine.resume(view.id, actor=ACTOR)
    assert view.status == WAITING
    assert next(s for s in view.steps if s.status == "waiting").action == "manual"


def test_an_agent_killed_while_checking_again_checks_again_when_restarted(new_rig, templates) -> None:
    """A kill between the re-read of replication and its outcome: the restarted agent reads it
    again and still moves nothing for VMs that are not over."""
    rig = new_rig(templates=templates)
    view = rig.engine.start(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    step = next(s for s in view.steps if s.status == "waiting").name
    before = rig.world.snapshot()
    rig.restart(crash_hook=kill_at("acted", step))
    with pytest.raises(Killed):
        rig.engine.resume(view.id, actor=ACTOR)
    rig.restart()
    [resumed] = rig.engine.resume_unfinished()
    assert resumed.status == WAITING and "not yet: sql01 Replicating" in (resumed.waiting_for or "")
    after = rig.world.snapshot()
    for part in ("routes", "record_sets"):
        assert after[part] == before[part], part
    final = resumed
    for _ in range(10):
        if final.status != WAITING:
            break
        play_orchestrator(rig.engine, rig.ports, view.id)
        final = rig.engine.resume(view.id, actor=ACTOR)
    assert final.status == OpStatus.SUCCEEDED.value, final.errors
    assert "192.168.1.0/24" in rig.world.snapshot()["routes"]["rtr-west"]["routes"]

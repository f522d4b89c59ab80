"""Reserving addresses when VMM moved on since the plan: an address the plan chose freely and
someone else took meanwhile is replaced by any free one of the same pool (and the replacement is
recorded); an address that must be kept (a retained source address) is refused for that VM."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.engine.model import OperationKind, OpStatus
from agent.ports import GrantRequest
from tests.rigs import CONFIG_DIR, Rig, Templates, copy_demo

WEST = "  - name: contoso-west\n    hosts: [hv-west-01, hv-west-02]\n"
JUMP_HOST = ("    vms:\n      - name: jump01\n        host: hv-west-01\n"
             "        nics:\n          - {name: nic0, vm_network: west-mgmt, dhcp: true}\n")
"""A VM of another team at the recovery site, outside every recovery plan."""


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    inventory = (CONFIG_DIR / "demo-inventory.yaml").read_text()
    assert WEST in inventory
    where = Path(tmp_path_factory.mktemp("with-jump-host"))
    return Templates.build(copy_demo(where, inventory=inventory.replace(WEST, WEST + JUMP_HOST)))


def take(rig: Rig, pool: str, address: str) -> str:
    """The other team grants ``address`` to their VM's NIC meanwhile; returns that NIC's id."""
    vmm = rig.ports.vmm["contoso-west"]
    [nic] = [n.id for vm in vmm.read_inventory().vms if vm.name == "jump01" for n in vm.nics]
    [result] = vmm.grant_ips([GrantRequest(pool=pool, address=address, owner_id=nic)])
    assert result.ok and result.changed
    return nic


def reserve_outcome(rig: Rig, op_id: str) -> dict:
    [row] = [s for s in rig.engine.journal.steps(op_id) if s.action == "vmm.reserve"]
    return {it["key"]: it for it in row.outcome["items"]}


def test_a_freely_chosen_address_taken_meanwhile_is_replaced_by_a_free_one(new_rig, templates) -> None:
    rig = new_rig(templates=templates)
    op = rig.engine.create(OperationKind.PREPARE, "contoso-apps")
    planned = {r.vm: r.address for r in rig.engine.journal.reservations(held=None)} or None
    assert planned is None, "creating the operation reserved nothing yet"
    other = take(rig, "west-apps-pool", "172.16.1.10")  # app01's planned address

    view = rig.engine.run(op)

    assert view.status == OpStatus.SUCCEEDED.value, view.errors
    app01 = reserve_outcome(rig, op)["app01/nic0/0/failover"]
    assert app01["value"]["planned"] == "172.16.1.10"
    assert "taken meanwhile" in app01["value"]["note"]
    granted = app01["value"]["address"]
    assert granted != "172.16.1.10"
    [held] = [r for r in rig.engine.journal.reservations() if r.vm == "app01"]
    assert (held.pool, held.address) == ("west-apps-pool", granted)
    grants = rig.world.snapshot()["grants"]["contoso-west"]["west-apps-pool"]
    assert grants["172.16.1.10"]["owner_id"] == other, "the other team's grant is left alone"
    assert grants[granted]["owner_id"] == held.owner_id


def test_a_retained_address_taken_meanwhile_is_refused_for_its_vm_only(new_rig, templates) -> None:
    rig = new_rig(templates=templates)
    op = rig.engine.create(OperationKind.PREPARE, "contoso-apps")
    take(rig, "west-core-pool", "192.168.1.20")  # sql01 keeps its address across sites

    view = rig.engine.run(op)

    assert view.status == OpStatus.PARTIAL.value  # prepare carries on for the other VMs
    assert view.failed_vms == ["sql01"]
    [error] = [e for e in view.errors if e["vm"] == "sql01"]
    assert error["code"] == "address_already_granted"
    held = {(r.vm, r.address) for r in rig.engine.journal.reservations()}
    assert ("sql01", "192.168.1.20") not in held
    assert {vm for vm, _ in held} >= {"app01", "app02", "web01"}

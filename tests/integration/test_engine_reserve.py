"""Reserving addresses when VMM moved on since the plan: an address the plan chose freely and
someone else took meanwhile is replaced by any free one of the same pool (and the replacement is
recorded); an address that must be kept (a retained source address) is refused for that VM."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.domain.model import RecordChange, RecordType
from agent.domain.planning.dns import ptr_name
from agent.engine.actions.grants import DNS_DEVIATION
from agent.engine.model import OperationKind, OpStatus
from agent.ports import GrantRequest, Ports
from tests.rigs import CONFIG_DIR, Killed, Rig, Templates, copy_demo, kill_at

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


def take(ports: Ports, pool: str, address: str) -> str:
    """The other team grants ``address`` to their VM's NIC meanwhile; returns that NIC's id."""
    vmm = ports.vmm["contoso-west"]
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
    other = take(rig.ports, "west-apps-pool", "172.16.1.10")  # app01's planned address

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
    take(rig.ports, "west-core-pool", "192.168.1.20")  # sql01 keeps its address across sites

    view = rig.engine.run(op)

    assert view.status == OpStatus.PARTIAL.value  # prepare carries on for the other VMs
    assert view.failed_vms == ["sql01"]
    [error] = [e for e in view.errors if e["vm"] == "sql01"]
    assert error["code"] == "address_already_granted"
    held = {(r.vm, r.address) for r in rig.engine.journal.reservations()}
    assert ("sql01", "192.168.1.20") not in held
    assert {vm for vm, _ in held} >= {"app01", "app02", "web01"}


# ------------------------------------------------------------- what follows the grant


APPS_ZONE, APPS_REVERSE = "corp.contoso.example.", "1.16.172.in-addr.arpa."


def records(rig: Rig, vm: str, address: str) -> dict[str, object]:
    """A VM's A record and the PTR of ``address`` as the simulated DNS server holds them."""
    dns = rig.ports.dns["dns-contoso"]
    a = dns.read(APPS_ZONE, [(f"{vm}.{APPS_ZONE}", RecordType.A)])
    ptr = dns.read(APPS_REVERSE, [(ptr_name(address), RecordType.PTR)])
    return {"A": a[0].values if a else None, "PTR": ptr[0].values if ptr else None}


def failover_ip(rig: Rig, vm: str) -> list[str]:
    host = next(v.host for v in rig.ports.vmm["contoso-west"].read_inventory().vms if v.name == vm)
    [cfg] = rig.ports.hyperv["contoso-west"].get_failover_configs(host, [(vm, "nic0")])
    return [s.address for s in cfg.settings]


def granted_to(rig: Rig, vm: str) -> list[str]:
    """The addresses VMM holds for ``vm``'s replica NIC (every pool of the recovery site)."""
    inv = rig.ports.vmm["contoso-west"].read_inventory()
    nics = {n.id for v in inv.vms if v.name == vm for n in v.nics}
    return sorted(g.address for g in inv.grants if g.owner_id in nics)


def assert_journal_is_vmm(rig: Rig) -> None:
    """No grant outside the journal: what VMM holds with the agent's marker is what the journal holds."""
    inv = rig.ports.vmm["contoso-west"].read_inventory()
    marked = sorted((g.pool, g.address, g.owner_id) for g in inv.grants
                    if g.description.startswith(rig.config.agent.owner_id + " "))
    held = sorted((r.pool, r.address, r.owner_id) for r in rig.engine.journal.reservations())
    assert marked == held


def test_a_planned_failover_writes_dns_and_failover_ip_with_the_address_vmm_granted(new_rig, templates) -> None:
    rig = new_rig(templates=templates)
    op = rig.engine.create(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    take(rig.ports, "west-apps-pool", "172.16.1.10")  # app01's planned address, taken after planning

    view = rig.through_pauses(rig.engine.run(op))

    assert view.status == OpStatus.SUCCEEDED.value, view.errors
    [granted] = granted_to(rig, "app01")
    assert granted != "172.16.1.10"
    assert failover_ip(rig, "app01") == [granted]
    assert records(rig, "app01", granted) == {"A": (granted,), "PTR": ("app01.corp.contoso.example.",)}
    assert records(rig, "app01", "172.16.1.10")["PTR"] is None, "the planned address is the other team's"
    assert records(rig, "app02", "172.16.1.11") == {"A": ("172.16.1.11",), "PTR": ("app02.corp.contoso.example.",)}
    assert_journal_is_vmm(rig)
    [deviation] = [a for a in rig.store.audit_trail(op) if a.action == "vmm.grant_deviation"]
    assert deviation.details == {"vm": "app01", "nic": "nic0", "ip_index": 0, "purpose": "failover",
                                 "pool": "west-apps-pool", "planned": "172.16.1.10", "granted": granted}
    written = {a.target: a.details for a in rig.store.audit_trail(op) if a.action == DNS_DEVIATION}
    assert written["dns-contoso/app01.corp.contoso.example./A"]["preview"] == ["172.16.1.10"]
    assert written["dns-contoso/app01.corp.contoso.example./A"]["new"] == [granted]


def test_the_ptr_of_a_granted_address_holding_someone_elses_name_is_reported_not_changed(
        new_rig, templates) -> None:
    rig = new_rig(templates=templates)
    op = rig.engine.create(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    take(rig.ports, "west-apps-pool", "172.16.1.10")
    stale = ptr_name("172.16.1.12")  # the address VMM will grant app01 holds a stale PTR
    rig.ports.dns["dns-contoso"].apply(APPS_REVERSE, [RecordChange(
        zone=APPS_REVERSE, name=stale, type=RecordType.PTR, ttl=3600, expected=(), new_values=("old.example.",))])

    view = rig.through_pauses(rig.engine.run(op))

    assert view.status == OpStatus.FAILED.value
    assert view.failed_vms == ["app01"]
    [error] = [e for e in view.errors if e["vm"] == "app01"]
    assert error["code"] == "dns_foreign_change" and "old.example." in error["message"]
    assert records(rig, "app01", "172.16.1.12")["PTR"] == ("old.example.",)


def test_dns_is_never_written_from_the_plans_guess_when_the_grant_is_not_in_the_journal(new_rig, templates) -> None:
    dns_step = "applications/dns/dns-contoso/corp.contoso.example."
    rig = new_rig(templates=templates, crash_hook=kill_at("intent", dns_step))
    op = rig.engine.create(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    with pytest.raises(Killed):
        rig.through_pauses(rig.engine.run(op))
    [app01] = [r for r in rig.engine.journal.reservations() if r.vm == "app01"]
    rig.engine.journal.release_reservation(site=app01.site, pool=app01.pool, address=app01.address)
    rig.restart()

    [view] = rig.resume_all()

    assert view.status == OpStatus.FAILED.value
    [error] = [e for e in view.errors if e["vm"] == "app01"]
    assert error["code"] == "not_found" and "not written from the plan's guess" in error["message"]
    assert records(rig, "app01", "172.16.1.10")["A"] == ("192.168.2.10",), "left as it was"


def test_the_ptr_of_a_granted_address_in_a_zone_the_operation_does_not_update_is_refused_for_its_vm(
        new_rig, tmp_path: Path) -> None:
    """The granted address's reverse name falls in a delegated zone of its own: no step of this
    operation updates (or would restore) it, so the PTR is not written there and the VM fails."""
    inventory = (CONFIG_DIR / "demo-inventory.yaml").read_text().replace(WEST, WEST + JUMP_HOST)
    inventory = inventory.replace("      - name: 1.16.172.in-addr.arpa\n",
                                  "      - name: 1.16.172.in-addr.arpa\n      - name: 12.1.16.172.in-addr.arpa\n", 1)

    def edit(cfg: dict) -> None:
        cfg["dns"]["zones"].append({"name": "12.1.16.172.in-addr.arpa", "server": "dns-contoso"})

    rig = new_rig(templates=Templates.build(copy_demo(tmp_path / "delegated", edit=edit, inventory=inventory)))
    op = rig.engine.create(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    take(rig.ports, "west-apps-pool", "172.16.1.10")

    view = rig.through_pauses(rig.engine.run(op))

    assert view.status == OpStatus.FAILED.value and view.failed_vms == ["app01"]
    [error] = [e for e in view.errors if e["vm"] == "app01"]
    assert error["code"] == "dns_record_not_planned" and "12.1.16.172.in-addr.arpa." in error["message"]

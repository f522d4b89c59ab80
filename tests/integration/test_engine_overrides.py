"""Address overrides on the simulated sites: what the operator wrote down is what the replica (or
its test VM) gets, in VMM, on the Hyper-V host and in DNS."""

from __future__ import annotations

from typing import Any

import pytest

from agent.engine.model import OperationKind, OpStatus
from tests.rigs import Templates, copy_demo

OVERRIDES = [
    # app01 would get the lowest free address of west-apps-pool (172.16.1.10) without one.
    {"vm": "app01", "nic": "nic0", "ip_configuration": 0, "failover": "172.16.1.150", "test": "172.16.1.151"},
    # sql01's primary address is retained without one; its test address would be the drill pool's lowest.
    {"vm": "sql01", "nic": "nic0", "ip_configuration": 0, "test": "192.168.1.240"},
]


def nic(world: dict[str, Any], vm: str, name: str = "nic0") -> dict[str, Any]:
    return next(n for n in world["vms"]["contoso-west"][vm]["nics"] if n["name"] == name)


def granted_to(world: dict[str, Any], nic_id: str) -> list[str]:
    return sorted(a for pool in world["grants"]["contoso-west"].values() for a, g in pool.items()
                  if g["owner_id"] == nic_id)


def with_overrides(cfg: dict[str, Any]) -> None:
    cfg["address_overrides"] = OVERRIDES


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    return Templates.build(copy_demo(tmp_path_factory.mktemp("overrides"), edit=with_overrides))


def test_a_planned_failover_gives_the_replica_and_dns_the_override_address(new_rig, templates) -> None:
    rig = new_rig(templates=templates)
    view = rig.start(OperationKind.PLANNED_FAILOVER)
    assert view.status == OpStatus.SUCCEEDED.value, view.errors

    world = rig.world.snapshot()
    app01_nic = nic(world, "app01")
    assert granted_to(world, app01_nic["id"]) == ["172.16.1.150"]
    # The replica came up with it: Hyper-V applied the failover IP the agent set.
    assert app01_nic["ip"] == [["static", "172.16.1.150", 24]]
    records = world["record_sets"]["dns-contoso"]["corp.contoso.example."]
    assert records["app01.corp.contoso.example. A"]["values"] == ["172.16.1.150"]
    assert world["record_sets"]["dns-contoso"]["1.16.172.in-addr.arpa."]["150.1.16.172.in-addr.arpa. PTR"][
        "values"] == ["app01.corp.contoso.example."]
    # sql01's override gives only a test address: its failover keeps the derived (retained) ones.
    assert nic(world, "sql01")["ip"] == [["static", "192.168.1.20", 24], ["static", "192.168.1.21", 24]]


def test_a_test_override_is_what_the_test_vm_gets(new_rig, templates) -> None:
    rig = new_rig(templates=templates)
    view = rig.start(OperationKind.TEST_FAILOVER)
    assert view.status == OpStatus.SUCCEEDED.value, view.errors

    world = rig.world.snapshot()
    assert nic(world, "sql01 - Test")["ip"] == [["static", "192.168.1.240", 24], ["static", "192.168.1.201", 24]]
    assert nic(world, "app01 - Test")["ip"] == [["static", "172.16.1.151", 24]]
    assert granted_to(world, nic(world, "app01 - Test")["id"]) == ["172.16.1.151"]
    drill = rig.world.snapshot()["record_sets"]["dns-drill"]["corp.contoso.example."]
    assert drill["app01.corp.contoso.example. A"]["values"] == ["172.16.1.151"]


def test_an_override_taken_since_planning_fails_its_reservation_instead_of_taking_another(
        new_rig, templates) -> None:
    """A freely chosen address taken meanwhile is swapped for another free one; an override is
    the operator's and is never swapped."""
    rig = new_rig(templates=templates)
    op = rig.engine.create(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    from agent.ports import GrantRequest

    vmm = rig.ports.vmm["contoso-west"]
    other = next(n.id for vm in vmm.read_inventory().vms if vm.name == "web01" for n in vm.nics if n.name == "nic1")
    [taken] = vmm.grant_ips([GrantRequest(pool="west-apps-pool", address="172.16.1.150", owner_id=other,
                                          description="by hand")])
    assert taken.ok
    view = rig.through_pauses(rig.engine.run(op))
    assert view.status != OpStatus.SUCCEEDED.value
    assert "app01" in view.failed_vms
    world = rig.world.snapshot()
    assert granted_to(world, nic(world, "app01")["id"]) == []
    assert world["grants"]["contoso-west"]["west-apps-pool"]["172.16.1.150"]["owner_id"] == other


@pytest.mark.bind
def test_a_planned_failover_writes_the_override_address_to_real_bind(named: str, tmp_path, monkeypatch) -> None:
    import yaml

    from agent.configfile import load_config
    from agent.engine.service import Engine
    from agent.engine.store import Store
    from agent.wiring import connect
    from tests.bind import BindServer
    from tests.integration.test_dns_end_to_end import _zone_texts

    path = copy_demo(tmp_path, edit=with_overrides)
    inventory = yaml.safe_load((tmp_path / "demo-inventory.yaml").read_text())
    bind = BindServer(tmp_path / "named", zones=_zone_texts(inventory), named=named).start()
    monkeypatch.setenv("DEMO_TSIG_SECRET", bind.keys["agent-key"].secret)
    cfg = yaml.safe_load(path.read_text())
    cfg["agent"]["data_dir"] = str(tmp_path / "var")
    cfg["dns"]["servers"][0] = {"name": "dns-contoso", "kind": "rfc2136", "address": bind.host, "port": bind.port,
                                "tsig": {"name": "agent-key", "secret": "env:DEMO_TSIG_SECRET"}, "verify_timeout_s": 5}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    loaded = load_config(path)
    connection = connect(loaded)
    store = Store.for_path(tmp_path / "var" / "agent.sqlite")
    try:
        engine = Engine(loaded.config, connection.ports, store, sleep=lambda s: None)
        view = engine.start(OperationKind.PLANNED_FAILOVER, "contoso-apps", requested_by="test")
        while view.status == OpStatus.WAITING.value:
            view = engine.resume(view.id, actor="test")
        assert view.status == OpStatus.SUCCEEDED.value, view.errors
        assert bind.rrset("app01.corp.contoso.example.", "A") == (60, ("172.16.1.150",))
        assert bind.rrset("150.1.16.172.in-addr.arpa.", "PTR") == (60, ("app01.corp.contoso.example.",))
        # The address app01 would have had went to the next VM of the pool.
        assert bind.rrset("app02.corp.contoso.example.", "A") == (60, ("172.16.1.10",))
    finally:
        connection.close()
        store.close()
        bind.stop()

"""Failback puts the network back exactly as it was before the failover: DNS record values and
TTLs (not recomputed ones), routes, and every VM's addresses."""

from __future__ import annotations

from pathlib import Path

from agent.engine.model import OperationKind, OpStatus
from tests.rigs import CONFIG_DIR, Templates, copy_demo

ROUND_TRIP = [OperationKind.PLANNED_FAILOVER, OperationKind.COMMIT, OperationKind.REVERSE, OperationKind.FAILBACK]


def addresses(world: dict) -> dict[tuple[str, str, str], list]:
    """(site, vm, nic) -> the NIC's network and IP configuration, for running VMs."""
    return {(site, vm, nic["name"]): (nic["vm_network"], nic["vm_subnet"], nic["ip"])
            for site, vms in world["vms"].items() for vm, v in vms.items() if v["power"] == "Running"
            for nic in v["nics"]}


def distinct_ttls() -> str:
    """The demo inventory with a different TTL on each record that moves, so a failback that
    wrote any one TTL everywhere (the failover TTL, or a default) would show."""
    text = (CONFIG_DIR / "demo-inventory.yaml").read_text()
    for old, new in [
        ("{name: app01, type: A, ttl: 3600", "{name: app01, type: A, ttl: 300"),
        ("{name: app02, type: A, ttl: 3600", "{name: app02, type: A, ttl: 1800"),
        ('{name: "10", type: PTR, ttl: 3600', '{name: "10", type: PTR, ttl: 7200'),
        ('{name: "11", type: PTR, ttl: 3600', '{name: "11", type: PTR, ttl: 86400'),
    ]:
        assert text.count(old) == (2 if "type: A" in old else 1), old  # A records: production and drill DNS
        text = text.replace(old, new)
    return text


def test_failback_restores_dns_values_and_ttls_routes_and_addresses_exactly(new_rig, tmp_path: Path) -> None:
    rig = new_rig(templates=Templates.build(copy_demo(tmp_path / "ttls", inventory=distinct_ttls())))
    before = rig.world.snapshot()
    seen = {}
    for kind in ROUND_TRIP:
        view = rig.start(kind)
        assert view.status == OpStatus.SUCCEEDED.value, (kind, view.errors)
        seen[kind] = rig.world.snapshot()
    after = seen[OperationKind.FAILBACK]

    # On the way out everything moved (so "back as before" below is not vacuous) ...
    failed_over = seen[OperationKind.COMMIT]
    prod = "dns-contoso"
    assert failed_over["record_sets"][prod] != before["record_sets"][prod]
    assert failed_over["record_sets"][prod]["corp.contoso.example."]["app01.corp.contoso.example. A"] == {
        "ttl": 300, "values": ["172.16.1.10"]}, "commit gave the moved record its original TTL back"
    assert failed_over["routes"] != before["routes"]
    assert {vm for (site, vm, _) in addresses(failed_over) if site == "contoso-west"} == {
        "sql01", "app01", "app02", "web01"}

    # ... and failback put back the exact records (values and TTLs), routes and addresses.
    assert after["record_sets"] == before["record_sets"]
    assert after["routes"] == before["routes"]
    assert addresses(after) == addresses(before)
    vms = ("sql01", "app01", "app02", "web01")
    assert {vm: r["primary_site"] for vm, r in after["replications"].items()} == dict.fromkeys(
        vms, "contoso-west"), "replication reversed, then failed back"
    assert {vm: r["state"] for vm, r in after["replications"].items()} == dict.fromkeys(
        vms, "FailedOverWaitingCompletion")

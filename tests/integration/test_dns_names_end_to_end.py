"""VMs with real VMM names (a quote, a space) fail over on the simulated sites with their DNS
records, under the names the documented rule derives, in a real BIND 9.

Two VMs are added to the demo's application group: ``o'brien`` (DNS name ``obrien``) and
``web 01`` (``web-01``), whose NIC is named ``Ethernet 'prod'`` as Hyper-V allows. Their A and
PTR records are seeded in BIND like the demo's; the planned failover re-addresses them (the
``change`` strategy of east-apps) and BIND is read back with raw queries, never through the agent.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from agent.configfile import demo_dir
from agent.engine.model import OperationKind
from tests.integration.test_dns_end_to_end import FORWARD, _run, _site

pytestmark = pytest.mark.bind

NEW_VMS = {  # VMM name -> (derived DNS label, source address, NIC name)
    "o'brien": ("obrien", "192.168.2.12", "nic0"),
    "web 01": ("web-01", "192.168.2.13", "Ethernet 'prod'"),
}


def _add_vms(inventory: dict) -> None:
    east = next(s for s in inventory["sites"] if s["name"] == "contoso-east")
    for vm, (label, address, nic) in NEW_VMS.items():
        east["vms"].append({"name": vm, "host": "hv-east-01",
                            "nics": [{"name": nic, "vm_network": "east-apps", "addresses": [f"{address}/24"]}],
                            "replica": {"site": "contoso-west", "host": "hv-west-01"}})
        for server in inventory["dns_servers"]:
            for zone in server["zones"]:
                if zone["name"] == "corp.contoso.example":
                    zone.setdefault("records", []).append(
                        {"name": label, "type": "A", "ttl": 3600, "values": [address]})
                elif zone["name"] == "2.168.192.in-addr.arpa" and server["name"] == "dns-contoso":
                    last = address.rsplit(".", 1)[1]
                    zone.setdefault("records", []).append(
                        {"name": last, "type": "PTR", "ttl": 3600, "values": [f"{label}.{FORWARD}"]})


@pytest.fixture
def site(named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    inventory = yaml.safe_load((demo_dir() / "demo-inventory.yaml").read_text())
    _add_vms(inventory)
    yield from _site(named, tmp_path, monkeypatch, yaml.safe_dump(inventory, sort_keys=False),
                     edit_config=lambda cfg: cfg["recovery_plans"][0]["groups"][1]["vms"].extend(NEW_VMS))


def test_vms_named_as_vmm_names_them_fail_over_with_their_dns_records(site) -> None:
    engine, bind = site
    for label, address, _ in NEW_VMS.values():
        assert bind.rrset(f"{label}.{FORWARD}", "A") == (3600, (address,))

    failover = _run(engine, OperationKind.PLANNED_FAILOVER)
    view = engine.view(failover.id)
    assert not view.failed_vms, view.errors
    west_apps = ipaddress.ip_network("172.16.1.0/24")
    for vm, (label, old, _) in NEW_VMS.items():
        ttl, values = bind.rrset(f"{label}.{FORWARD}", "A") or (None, ())
        assert ttl == 60 and len(values) == 1, (vm, ttl, values)
        new = values[0]
        assert ipaddress.ip_address(new) in west_apps, (vm, new)
        # The new address points back at the derived name; the old one no longer does.
        reverse = ".".join(reversed(new.split("."))) + ".in-addr.arpa."
        assert bind.rrset(reverse, "PTR") == (60, (f"{label}.{FORWARD}",)), vm
        assert bind.rrset(".".join(reversed(old.split("."))) + ".in-addr.arpa.", "PTR") is None, vm
    # The demo's own VMs went the same way, in the same batches.
    assert bind.rrset(f"app01.{FORWARD}", "A") == (60, ("172.16.1.10",))

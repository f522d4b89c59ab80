"""200 prepare requests at once against one target pool: no address is granted twice, and a NIC
asked for by several requests holds exactly one grant.

The world is generated: 100 replicated VMs whose application network changes addresses at
failover (``ip_strategy: change``) into one pool at the recovery site, and 100 recovery plans of
two VMs each, overlapping (plan i holds vm i and vm i+1), every plan requested twice -- so each
NIC is asked for by four of the 200 concurrent requests, through one shared engine.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from agent.engine.model import OperationKind, OpStatus
from tests.rigs import Templates

VMS = 100
TARGET_POOL = ("172.16.0.10", "172.16.3.250")


def pool_world(where: Path) -> Templates:
    vms = [f"vm{i:03d}" for i in range(VMS)]

    def source_address(i: int) -> str:
        return f"{ipaddress.ip_address('10.1.0.10') + i}/22"

    def network(site: str, name: str, prefix: str, pool: str, first: str, last: str, gateway: str) -> dict:
        return {"name": name, "logical_network": "ln-hnv", "isolation": "WindowsNetworkVirtualization",
                "subnets": [{"name": "apps", "prefix": prefix,
                             "pools": [{"name": pool, "range": [first, last], "gateway": gateway}]}]}

    inventory = {"sites": [
        {"name": "east", "hosts": ["hv-e1", "hv-e2"], "logical_networks": ["ln-hnv"],
         "vm_networks": [network("east", "east-apps", "10.1.0.0/22", "east-pool", "10.1.0.10", "10.1.3.250",
                                 "10.1.0.1")],
         "vms": [{"name": vm, "host": f"hv-e{i % 2 + 1}",
                  "nics": [{"name": "nic0", "vm_network": "east-apps", "addresses": [source_address(i)]}],
                  "replica": {"site": "west", "host": f"hv-w{i % 2 + 1}"}} for i, vm in enumerate(vms)]},
        {"name": "west", "hosts": ["hv-w1", "hv-w2"], "logical_networks": ["ln-hnv"],
         "vm_networks": [network("west", "west-apps", "172.16.0.0/22", "west-pool", *TARGET_POOL, "172.16.0.1")]},
    ]}
    config = {
        "agent": {"site": "west", "mode": "full", "owner_id": "failover-agent-test"},
        "simulator": {"inventory": "inventory.yaml"},
        "sites": [
            {"name": "east", "vmm": {"transport": "sim"}, "hyperv_hosts": [{"name": "hv-e1"}, {"name": "hv-e2"}]},
            {"name": "west", "vmm": {"transport": "sim"}, "hyperv_hosts": [{"name": "hv-w1"}, {"name": "hv-w2"}]},
        ],
        "network_mappings": [{"source": {"site": "east", "vm_network": "east-apps"},
                              "target": {"site": "west", "vm_network": "west-apps"}, "ip_strategy": "change"}],
        "recovery_plans": [{"name": f"plan{i:03d}", "groups": [{"name": "apps", "vms": [vms[i], vms[(i + 1) % VMS]]}]}
                           for i in range(VMS)],
    }
    where.mkdir()
    (where / "inventory.yaml").write_text(yaml.safe_dump(inventory))
    (where / "agent.yaml").write_text(yaml.safe_dump(config))
    return Templates.build(where / "agent.yaml")


@pytest.mark.slow
def test_200_concurrent_prepares_grant_each_nic_one_address_and_no_address_twice(new_rig, tmp_path: Path) -> None:
    templates = pool_world(tmp_path / "pool-world")
    rig = new_rig(templates=templates)
    requests = [plan.name for plan in templates.loaded.config.recovery_plans] * 2
    assert len(requests) == 200

    with ThreadPoolExecutor(max_workers=32) as pool:
        views = list(pool.map(lambda plan: rig.engine.start(OperationKind.PREPARE, plan), requests))

    assert Counter(v.status for v in views) == {OpStatus.SUCCEEDED.value: 200}
    grants = rig.world.snapshot()["grants"]["west"]["west-pool"]
    owners = Counter(g["owner_id"] for g in grants.values())
    replicas = rig.ports.vmm["west"].read_inventory().vms
    expected = {nic.id for vm in replicas if vm.role == "replica" for nic in vm.nics}
    assert len(expected) == VMS
    assert set(owners) == expected, "every replica NIC holds a grant, nobody else does"
    assert set(owners.values()) == {1}, "one grant per NIC, however many requests asked for it"
    low, high = (ipaddress.ip_address(a) for a in TARGET_POOL)
    assert all(low <= ipaddress.ip_address(a) <= high for a in grants)  # (dict keys: no address twice)
    # The store records the same: one held reservation per NIC, every address once, matching VMM.
    held = rig.engine.journal.reservations(purpose="failover")
    assert sorted((r.address, r.owner_id) for r in held) == sorted((a, g["owner_id"]) for a, g in grants.items())
    assert len({r.address for r in held}) == len(held) == VMS
    assert {r.vm for r in held} == {f"vm{i:03d}" for i in range(VMS)}
    # Each NIC was granted by exactly one call; the other requests found its grant and reused it.
    granted = Counter(key for c in rig.world.calls("vmm.grant_ips") for key in c.changed)
    assert len(granted) == VMS and set(granted.values()) == {1}


# --------------------------------------------------------- two failovers into one pool

DNS_VMS = 30
DOMAIN = "apps.example."


def two_plan_world(where: Path, store_url: str | None = None) -> Templates:
    """30 VMs whose addresses change at failover into one pool, in two recovery plans of 15, with
    their A and PTR records on a simulated DNS server."""
    vms = [f"vm{i:03d}" for i in range(DNS_VMS)]
    source = {vm: f"10.1.0.{10 + i}" for i, vm in enumerate(vms)}

    def network(name: str, prefix: str, pool: str, first: str, last: str, gateway: str) -> dict:
        return {"name": name, "logical_network": "ln-hnv", "isolation": "WindowsNetworkVirtualization",
                "subnets": [{"name": "apps", "prefix": prefix,
                             "pools": [{"name": pool, "range": [first, last], "gateway": gateway}]}]}

    inventory = {
        "sites": [
            {"name": "east", "hosts": ["hv-e1"], "logical_networks": ["ln-hnv"],
             "vm_networks": [network("east-apps", "10.1.0.0/24", "east-pool", "10.1.0.10", "10.1.0.250", "10.1.0.1")],
             "vms": [{"name": vm, "host": "hv-e1",
                      "nics": [{"name": "nic0", "vm_network": "east-apps", "addresses": [f"{source[vm]}/24"]}],
                      "replica": {"site": "west", "host": "hv-w1"}} for vm in vms]},
            {"name": "west", "hosts": ["hv-w1"], "logical_networks": ["ln-hnv"],
             "vm_networks": [network("west-apps", "172.16.0.0/24", "west-pool", "172.16.0.10", "172.16.0.250",
                                     "172.16.0.1")]},
        ],
        "dns_servers": [{"name": "dns1", "zones": [
            {"name": "apps.example", "records": [{"name": vm, "type": "A", "ttl": 3600, "values": [source[vm]]}
                                                 for vm in vms]},
            {"name": "0.1.10.in-addr.arpa", "records": [
                {"name": source[vm].rsplit(".", 1)[1], "type": "PTR", "ttl": 3600, "values": [f"{vm}.{DOMAIN}"]}
                for vm in vms]},
            {"name": "0.16.172.in-addr.arpa"},
        ]}],
    }
    config = {
        "agent": {"site": "west", "mode": "full", "owner_id": "failover-agent-test"},
        "simulator": {"inventory": "inventory.yaml"},
        "sites": [
            {"name": "east", "vmm": {"transport": "sim"}, "hyperv_hosts": [{"name": "hv-e1"}], "dns_servers": ["dns1"]},
            {"name": "west", "vmm": {"transport": "sim"}, "hyperv_hosts": [{"name": "hv-w1"}], "dns_servers": ["dns1"]},
        ],
        "network_mappings": [{"source": {"site": "east", "vm_network": "east-apps"},
                              "target": {"site": "west", "vm_network": "west-apps"}, "ip_strategy": "change"}],
        "dns": {"servers": [{"name": "dns1", "kind": "sim"}],
                "zones": [{"name": z, "server": "dns1"} for z in
                          ("apps.example", "0.1.10.in-addr.arpa", "0.16.172.in-addr.arpa")],
                "default_domain": "apps.example"},
        "recovery_plans": [{"name": f"half{h}", "groups": [{"name": "apps", "vms": vms[h::2]}]} for h in (0, 1)],
    }
    where.mkdir()
    (where / "inventory.yaml").write_text(yaml.safe_dump(inventory))
    (where / "agent.yaml").write_text(yaml.safe_dump(config))
    return Templates.build(where / "agent.yaml", store_url=store_url)


@pytest.mark.slow
def test_two_failovers_into_one_pool_at_once_never_leave_a_record_naming_another_vms_address(
        new_rig, store_url: str, tmp_path: Path) -> None:
    from agent.domain.model import RecordType
    from agent.domain.plan import ReserveIp
    from agent.domain.planning.dns import ptr_name

    rig = new_rig(templates=two_plan_world(tmp_path / "two-plans", store_url))  # on SQLite and PostgreSQL
    # Both are planned before either reserves anything: they choose the same free addresses.
    ops = [rig.engine.create(OperationKind.PLANNED_FAILOVER, plan) for plan in ("half0", "half1")]
    planned = [{r.address for r in rig.engine.plan(plan, "planned").of(ReserveIp)} for plan in ("half0", "half1")]
    assert planned[0] & planned[1], "the two plans want the same addresses"

    with ThreadPoolExecutor(max_workers=2) as pool:
        views = list(pool.map(rig.engine.run, ops))

    assert [v.status for v in views] == [OpStatus.SUCCEEDED.value] * 2, [v.errors for v in views]
    inv = rig.ports.vmm["west"].read_inventory()
    nic_vm = {n.id: vm.name for vm in inv.vms for n in vm.nics}
    granted = {nic_vm[g.owner_id]: g.address for g in inv.grants}
    assert len(granted) == DNS_VMS and len(set(granted.values())) == DNS_VMS
    dns = rig.ports.dns["dns1"]
    forward = {r.name: r.values for r in dns.read(DOMAIN, [(f"{vm}.{DOMAIN}", RecordType.A) for vm in granted])}
    assert forward == {f"{vm}.{DOMAIN}": (address,) for vm, address in granted.items()}, \
        "every A record names its own VM's grant"
    names = [(ptr_name(f"172.16.0.{i}"), RecordType.PTR) for i in range(10, 251)]
    reverse = {r.name: r.values for r in dns.read("0.16.172.in-addr.arpa.", names)}
    assert reverse == {ptr_name(address): (f"{vm}.{DOMAIN}",) for vm, address in granted.items()}, \
        "a PTR for every grant, naming its VM, and none for an address the VM does not hold"

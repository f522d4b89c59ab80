"""Two agent processes preparing into one pool at the same moment, on one store (SQLite and
PostgreSQL): the allocation lock in the store (``agent.engine.poollock``) serialises their
plan-then-grant, so the second plans with the first's grants already made -- it never picks an
address the other is granting, and VMM never has to refuse a grant as already taken.

20 trials: two processes, each preparing one plan per round, starting every round together
(a barrier), one VM per plan, every VM's NIC into the same pool.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.configfile import load_config
from agent.engine.model import OperationKind, OpStatus
from tests.rigs import Rig, Templates

TRIALS = 20
VMS = 2 * TRIALS


def pool_world(where: Path, store_url: str) -> Templates:
    vms = [f"vm{i:03d}" for i in range(VMS)]

    def network(name: str, prefix: str, pool: str, first: str, last: str, gateway: str) -> dict:
        return {"name": name, "logical_network": "ln-hnv", "isolation": "WindowsNetworkVirtualization",
                "subnets": [{"name": "apps", "prefix": prefix,
                             "pools": [{"name": pool, "range": [first, last], "gateway": gateway}]}]}

    inventory = {"sites": [
        {"name": "east", "hosts": ["hv-e1"], "logical_networks": ["ln-hnv"],
         "vm_networks": [network("east-apps", "10.1.0.0/24", "east-pool", "10.1.0.10", "10.1.0.250", "10.1.0.1")],
         "vms": [{"name": vm, "host": "hv-e1",
                  "nics": [{"name": "nic0", "vm_network": "east-apps", "addresses": [f"10.1.0.{10 + i}/24"]}],
                  "replica": {"site": "west", "host": "hv-w1"}} for i, vm in enumerate(vms)]},
        {"name": "west", "hosts": ["hv-w1"], "logical_networks": ["ln-hnv"],
         "vm_networks": [network("west-apps", "172.16.0.0/24", "west-pool", "172.16.0.10", "172.16.0.250",
                                 "172.16.0.1")]},
    ]}
    config = {
        "agent": {"site": "west", "mode": "full", "owner_id": "failover-agent-test"},
        "simulator": {"inventory": "inventory.yaml"},
        "store": {"url": store_url},
        "sites": [
            {"name": "east", "vmm": {"transport": "sim"}, "hyperv_hosts": [{"name": "hv-e1"}]},
            {"name": "west", "vmm": {"transport": "sim"}, "hyperv_hosts": [{"name": "hv-w1"}]},
        ],
        "network_mappings": [{"source": {"site": "east", "vm_network": "east-apps"},
                              "target": {"site": "west", "vm_network": "west-apps"}, "ip_strategy": "change"}],
        "recovery_plans": [{"name": f"p{i:03d}", "groups": [{"name": "apps", "vms": [vm]}]}
                           for i, vm in enumerate(vms)],
    }
    where.mkdir()
    (where / "inventory.yaml").write_text(yaml.safe_dump(inventory))
    (where / "agent.yaml").write_text(yaml.safe_dump(config))
    return Templates.build(where / "agent.yaml", store_url=store_url)


def preparer(config: str, state: str, store: str, plans: list[str], barrier: Any, results: Any) -> None:
    """One agent process: for each plan, wait for the other process, then prepare it."""
    loaded = load_config(Path(config))
    rig = Rig(replace(loaded, simulator_state=Path(state)), Path(state), store)
    out = []
    try:
        for plan in plans:
            barrier.wait(timeout=60)  # the other process died: stop, reported below
            view = rig.engine.start(OperationKind.PREPARE, plan)
            out.append((plan, view.status, [e.get("code") for e in view.errors]))
    finally:
        rig.close()
        results.put(out)


@pytest.mark.slow
def test_two_processes_preparing_into_one_pool_at_once_never_race_for_an_address(
        store_url: str, tmp_path: Path) -> None:
    templates = pool_world(tmp_path / "world", store_url)
    state, store = templates.copy_to(tmp_path / "rig")
    spawn = multiprocessing.get_context("spawn")  # each a fresh interpreter, as a second agent is
    barrier, results = spawn.Barrier(2), spawn.Queue()
    workers = [spawn.Process(target=preparer, args=(str(templates.loaded.path), str(state), str(store),
                                                    [f"p{i:03d}" for i in range(half, VMS, 2)], barrier, results))
               for half in (0, 1)]
    for w in workers:
        w.start()
    outcomes = [row for _ in workers for row in results.get(timeout=300)]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0

    assert len(outcomes) == VMS
    assert Counter(status for _, status, _ in outcomes) == {OpStatus.SUCCEEDED.value: VMS}, outcomes
    rig = Rig(templates.loaded, state, store)
    try:
        grants = rig.world.snapshot()["grants"]["west"]["west-pool"]
        replicas = {nic.id for vm in rig.ports.vmm["west"].read_inventory().vms if vm.role == "replica"
                    for nic in vm.nics}
        owners = Counter(g["owner_id"] for g in grants.values())
        assert set(owners) == replicas and set(owners.values()) == {1}, "one address per NIC, none twice"
        calls = rig.world.calls("vmm.grant_ips")
        assert {c.pid for c in calls} == {w.pid for w in workers}, "both processes granted"
        refused = [c.errors for c in calls if c.errors]
        assert refused == [], "a process planned an address the other was granting: VMM refused it"
        held = rig.engine.journal.reservations(purpose="failover")
        assert sorted((r.address, r.owner_id) for r in held) == sorted((a, g["owner_id"]) for a, g in grants.items())
    finally:
        rig.close()

"""The simulated world as a whole: persistence, processes, the call log, faults and latency."""

from __future__ import annotations

import ipaddress
import multiprocessing
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from agent import ports
from agent.domain.model import NicFailoverConfig, RecordChange
from agent.drivers.sim import FaultRule, SimInventory, SimWorld, StateFileError, nic_id
from agent.errors import TimeoutError_, UnreachableError
from agent.ports import GrantRequest, NicConnection

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sim" / "two-sites.yaml"
WEB01_B = nic_id("site-b", "web01", "nic0")

fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork (POSIX)")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state.json"


@pytest.fixture
def world(state: Path) -> SimWorld:
    return SimWorld.open(FIXTURE, state)


def grant(world: SimWorld, address: str, owner: str = WEB01_B, pool: str = "pool-b-web"):
    [result] = world.vmm("site-b").grant_ips([GrantRequest(pool, address, owner)])
    return result


# --------------------------------------------------------------------------- persistence


def test_state_survives_reopening(world: SimWorld, state: Path) -> None:
    grant(world, "192.168.1.20")
    world.hyperv("site-b").replicate("hv-b1", "start_test", ["web01"])
    again = SimWorld.open(FIXTURE, state)
    assert again.snapshot() == world.snapshot()
    assert not grant(again, "192.168.1.20").changed


def test_state_is_the_truth_after_the_first_open(world: SimWorld, state: Path, tmp_path: Path) -> None:
    edited = tmp_path / "edited.yaml"
    edited.write_text(FIXTURE.read_text().replace("name: dc-b", "name: dc-b2"))
    reopened = SimWorld.open(edited, state)
    assert reopened.inventory_changed
    assert "dc-b" in reopened.snapshot()["vms"]["site-b"]
    reopened.reset()
    assert "dc-b2" in reopened.snapshot()["vms"]["site-b"]
    assert not reopened.inventory_changed
    assert reopened.calls() == []


def test_reset_restores_the_seeded_world(world: SimWorld, state: Path) -> None:
    fresh = world.snapshot()
    grant(world, "192.168.1.20")
    world.routes().withdraw([ports.Route(router="rtr-a", prefix="192.168.1.0/24", interface="vlan10")])
    assert world.snapshot() != fresh
    world.reset()
    assert world.snapshot() == fresh
    assert SimWorld.open(FIXTURE, state).snapshot() == fresh


def test_a_file_that_is_not_a_state_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "state.json"
    bogus.write_text('{"hello": 1}')
    with pytest.raises(StateFileError, match="not a simulator state"):
        SimWorld.open(FIXTURE, bogus)


def test_test_failover_and_cleanup_leave_the_world_as_it_was(world: SimWorld) -> None:
    before = world.snapshot()
    vmm, hv, test_dns = world.vmm("site-b"), world.hyperv("site-b"), world.dns("dns-test")
    # The drill: test network, test VM, reservation, connection, start, test DNS.
    vmm.create_test_networks([ports.TestNetworkSpec("prod-b-drill", "prod-b")])
    [started] = hv.replicate("hv-b1", "start_test", ["web01"])
    test_vm = started.value.test_vm
    test_nic = next(v for v in vmm.read_inventory().vms if v.name == test_vm).nics[0]
    [g] = vmm.grant_ips([GrantRequest("prod-b-drill/pool-b-web", "192.168.1.10", test_nic.id)])
    vmm.connect_nics([NicConnection(test_vm, "nic0", "prod-b-drill", "web", (("192.168.1.10", 24),))])
    hv.set_power("hv-b1", "start", [test_vm])
    record = ports.RecordChange(
        zone="example.com.", name="web01.example.com.", type="A", ttl=30, new_values=("192.168.1.10",)
    )
    test_dns.apply("example.com.", [record])
    assert world.snapshot() != before
    # Cleanup, in the order the engine does it.
    test_dns.apply("example.com.", [record.model_copy(update={"expected": record.new_values, "new_values": ()})])
    hv.replicate("hv-b1", "stop_test", ["web01"])
    vmm.revoke_ips([g.value])
    [deleted] = vmm.delete_test_networks(["prod-b-drill"])
    assert deleted.changed, deleted.error
    assert world.snapshot() == before


# ------------------------------------------------------------------------------ call log


def test_every_call_is_recorded_with_its_outcome(world: SimWorld) -> None:
    vmm = world.vmm("site-b")
    vmm.grant_ips(
        [GrantRequest("pool-b-web", "192.168.1.20", WEB01_B), GrantRequest("pool-b-web", "192.168.1.100", WEB01_B)]
    )
    vmm.read_inventory()
    world.hyperv("site-b").replicate("hv-b1", "failover", ["web01"])
    kinds = [c.kind for c in world.calls()]
    assert kinds == ["vmm.grant_ips", "vmm.read_inventory", "hyperv.replicate.failover"]
    [g] = world.calls("vmm.grant_ips")
    assert g.target == "site-b"
    assert g.items == ("pool-b-web:192.168.1.20", "pool-b-web:192.168.1.100")
    assert g.changed == ("pool-b-web:192.168.1.20",)
    assert g.errors == {"pool-b-web:192.168.1.100": "address_reserved"}
    assert g.pid == os.getpid() and g.seq is not None
    assert [c.target for c in world.calls("hyperv.*")] == ["hv-b1"]
    assert world.calls_path.name == "state.json.calls.jsonl"


# ----------------------------------------------------------------------------- processes


def _grab_addresses(state: str, owner: str, n: int, out) -> None:
    vmm = SimWorld.open(FIXTURE, state).vmm("site-b")
    got = []
    for _ in range(n):
        [r] = vmm.grant_ips([GrantRequest("pool-b-web", "", owner)])
        got.append(r.value.address)
    out.put(got)


@fork
def test_processes_granting_from_one_pool_never_get_the_same_address(world: SimWorld, state: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    owners = [nic_id("site-b", vm, "nic0") for vm in ("web01", "web02", "app01", "v6web01")]
    procs = [ctx.Process(target=_grab_addresses, args=(str(state), o, 10, out)) for o in owners]
    for p in procs:
        p.start()
    got = [a for _ in procs for a in out.get(timeout=30)]
    for p in procs:
        p.join(timeout=30)
    assert len(got) == 40 and len(set(got)) == 40
    held = world.snapshot()["grants"]["site-b"]["pool-b-web"]
    assert set(got) <= set(held)
    assert sum(len(c.changed) for c in world.calls("vmm.grant_ips")) == 40


def _grant_forever(state: str) -> None:
    vmm = SimWorld.open(FIXTURE, state).vmm("site-b")
    while True:
        vmm.grant_ips([GrantRequest("pool-b-web6", "", WEB01_B)])


@fork
def test_a_killed_process_leaves_a_whole_state_and_each_change_logged_once(world: SimWorld, state: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for delay in (0.05, 0.12, 0.2):
        proc = ctx.Process(target=_grant_forever, args=(str(state),))
        proc.start()
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=10)
        reopened = SimWorld.open(FIXTURE, state)  # parses: never half-written
        held = reopened.snapshot()["grants"]["site-b"].get("pool-b-web6", {})
        logged = [k for c in reopened.calls("vmm.grant_ips") for k in c.changed]
        assert sorted(logged) == sorted(f"pool-b-web6:{a}" for a in held)
    assert held, "the child never got to grant anything"


# -------------------------------------------------------------------------------- faults


def test_transient_fault_fires_count_times_and_survives_a_restart(world: SimWorld, state: Path) -> None:
    world.inject(FaultRule(call="vmm.grant_ips", target="site-b", fault="transient", count=1))
    with pytest.raises(UnreachableError):
        grant(world, "192.168.1.20")
    assert "192.168.1.20" not in world.snapshot()["grants"]["site-b"]["pool-b-web"]
    restarted = SimWorld.open(FIXTURE, state)
    assert grant(restarted, "192.168.1.20").changed
    [(rule, seen, fired)] = restarted.faults()
    assert (rule.count, seen, fired) == (1, 2, 1)
    assert [c.error for c in restarted.calls("vmm.grant_ips")] == ["unreachable", None]


@pytest.mark.parametrize("applied", [True, False])
def test_timeout_leaves_the_caller_unsure(world: SimWorld, applied: bool) -> None:
    world.inject({"call": "vmm.grant_ips", "fault": "timeout", "applied": applied, "count": 1})
    with pytest.raises(TimeoutError_):
        grant(world, "192.168.1.20")
    held = "192.168.1.20" in world.snapshot()["grants"]["site-b"]["pool-b-web"]
    assert held is applied
    retry = grant(world, "192.168.1.20")  # what the engine does: re-read/retry; idempotent either way
    assert retry.ok and retry.changed is not applied
    [first, _] = world.calls("vmm.grant_ips")
    assert first.error == "timeout" and bool(first.changed) is applied


def test_permanent_fault_hits_only_the_matching_items(world: SimWorld) -> None:
    world.inject(FaultRule(call="vmm.grant_ips", target="*:192.168.1.21", fault="permanent"))
    results = world.vmm("site-b").grant_ips(
        [GrantRequest("pool-b-web", a, WEB01_B) for a in ("192.168.1.20", "192.168.1.21", "192.168.1.22")]
    )
    assert [r.error.code if r.error else None for r in results] == [None, "injected_fault", None]
    assert [r.changed for r in results] == [True, False, True]


def test_permanent_fault_on_dns_fails_the_atomic_batch(world: SimWorld) -> None:
    world.inject(FaultRule(call="dns.apply", target="example.com.", fault="permanent", count=1))
    change = ports.RecordChange(zone="example.com.", name="x.example.com.", type="A", ttl=60, new_values=("10.0.0.1",))
    with pytest.raises(Exception) as info:
        world.dns("dns-main").apply("example.com.", [change])
    assert getattr(info.value, "code", None) == "injected_fault"
    world.dns("dns-main").apply("example.com.", [change])


def test_rate_faults_are_reproducible_from_the_seed(tmp_path: Path) -> None:
    def pattern(state: Path) -> list[bool]:
        w = SimWorld.open(FIXTURE, state)
        w.inject(FaultRule(call="hyperv.get_replications", fault="transient", rate=0.5))
        out = []
        for _ in range(20):
            try:
                w.hyperv("site-b").get_replications("hv-b1", ["web01"])
                out.append(True)
            except UnreachableError:
                out.append(False)
        return out

    first, second = pattern(tmp_path / "one.json"), pattern(tmp_path / "two.json")
    assert first == second
    assert 2 < first.count(False) < 18


def test_faults_and_latency_from_the_inventory(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(
        FIXTURE.read_text()
        + """
simulation:
  seed: 3
  latency: {calls: {"routes.*": {fixed: 0.05}}}
  faults:
    - {call: "hyperv.set_failover_configs", target: web01, fault: permanent, count: 1}
"""
    )
    world = SimWorld.open(inv, tmp_path / "state.json")
    cfg = NicFailoverConfig(
        vm="web01", nic="nic0", host="hv-b1", settings=({"address": "192.168.1.10", "prefix_length": 24},)
    )
    hv = world.hyperv("site-b")
    assert hv.set_failover_configs("hv-b1", [cfg])[0].error.code == "injected_fault"
    assert hv.set_failover_configs("hv-b1", [cfg])[0].changed
    t0 = time.monotonic()
    world.routes().read_routes("rtr-a")
    assert time.monotonic() - t0 >= 0.05
    world.clear_faults()
    assert world.faults() == []


# ------------------------------------------------------------------------------- latency


def test_latency_is_real_time_fixed_plus_per_item(world: SimWorld) -> None:
    world.set_latency("vmm.grant_ips", fixed=0.05)
    world.set_latency("hyperv.*", per_item=0.02)
    t0 = time.monotonic()
    grant(world, "192.168.1.20")
    assert time.monotonic() - t0 >= 0.05
    t0 = time.monotonic()
    world.hyperv("site-b").get_replications("hv-b1", ["web01", "web02", "v6web01"])
    assert time.monotonic() - t0 >= 0.06
    world.set_latency_scale(0)
    t0 = time.monotonic()
    grant(world, "192.168.1.21")
    assert time.monotonic() - t0 < 0.05


def test_parallel_calls_overlap_their_latency(world: SimWorld) -> None:
    world.set_latency("hyperv.set_power.*", fixed=0.3)
    hv = world.hyperv("site-a")
    threads = [threading.Thread(target=hv.set_power, args=(host, "stop", [vm])) for host, vm in
               [("hv-a1", "web01"), ("hv-a1", "web02"), ("hv-a2", "app01")]]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 0.8  # serial would be >= 0.9
    assert sum(len(c.changed) for c in world.calls("hyperv.set_power.stop")) == 3


# -------------------------------------------------------------------------------- at scale


def test_a_fresh_process_reads_a_big_site_whole(tmp_path: Path) -> None:
    """A big world round-trips through the state file: a new process sees every VM, address and
    grant. (How fast is a benchmark's business: tests/benchmarks/bench_engine.py reports the
    simulator's own time at 1,000 VMs and more.)"""

    N = 3_000

    def vm(i: int) -> dict:
        base = ipaddress.ip_address("10.1.0.0") + 10 + 3 * i
        return {
            "name": f"vm{i:05d}",
            "host": f"hv-a{i % 8}",
            "nics": [{"name": "nic0", "vm_network": "net", "addresses": [f"{base + k}/16" for k in range(3)]}],
            "replica": {"site": "b", "host": "hv-b0"},
        }

    net = {
        "name": "net",
        "logical_network": "ln",
        "isolation": "VLANNetwork",
        "subnets": [
            {"name": "s", "prefix": "10.1.0.0/16", "pools": [{"name": "p", "range": ["10.1.0.10", "10.1.255.250"]}]}
        ],
    }
    inv = SimInventory.model_validate(
        {
            "sites": [
                {
                    "name": "a",
                    "hosts": [f"hv-a{i}" for i in range(8)],
                    "logical_networks": ["ln"],
                    "vm_networks": [net],
                    "vms": [vm(i) for i in range(N)],
                },
                {"name": "b", "hosts": ["hv-b0"], "logical_networks": ["ln"]},
            ]
        }
    )
    SimWorld.open(inv, tmp_path / "big.json")
    site = SimWorld.open(inv, tmp_path / "big.json").vmm("a").read_inventory()  # a fresh process's view
    assert len(site.vms) == N
    assert sum(len(n.ip_configurations) for v in site.vms for n in v.nics) == 3 * N
    assert len(site.grants) == 3 * N
    assert {g.address for g in site.grants} == {c.address for v in site.vms for n in v.nics
                                                for c in n.ip_configurations}


def _die_before_the_change_record(state: str) -> None:
    from agent.drivers.sim.store import StateStore

    def killed(self: object, seq: int, ops: object) -> None:
        os._exit(9)  # the moment between "call record appended" and "change record appended"

    StateStore._append_change = killed  # type: ignore[assignment,method-assign]
    grant(SimWorld.open(FIXTURE, state), "192.168.1.30")


@fork
def test_a_change_cut_off_before_its_record_was_written_is_not_in_the_log(world: SimWorld, state: Path) -> None:
    proc = multiprocessing.get_context("fork").Process(target=_die_before_the_change_record, args=(str(state),))
    proc.start()
    proc.join(timeout=10)
    assert proc.exitcode == 9
    orphans = [line for line in world.calls_path.read_text().splitlines() if "192.168.1.30" in line]
    assert len(orphans) == 1  # the record was appended...
    assert world.calls("vmm.grant_ips") == []  # ...but the change never persisted
    assert "192.168.1.30" not in world.snapshot()["grants"]["site-b"]["pool-b-web"]
    assert grant(world, "192.168.1.31").changed  # the next change re-uses the orphan's version
    assert [c.changed for c in world.calls("vmm.grant_ips")] == [("pool-b-web:192.168.1.31",)]


LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy-2e96aca"


@pytest.mark.parametrize("folder", sorted(p.name for p in LEGACY.iterdir() if p.is_dir()))
def test_a_state_file_written_by_2e96aca_opens_and_its_records_still_match(tmp_path: Path, folder: str) -> None:
    state = tmp_path / "sim-state.json"
    shutil.copy(LEGACY / folder / "sim-state.json", state)
    shutil.copy(LEGACY / folder / "sim-state.json.calls.jsonl", tmp_path / "sim-state.json.calls.jsonl")
    world = SimWorld.open(LEGACY / folder / "demo-inventory.yaml", state)
    before = world.snapshot()
    assert before["vms"] and before["grants"] and world.calls()
    # Each stored value is still its own canonical text: a TTL change pinned to it applies.
    for server, zones in before["record_sets"].items():
        for zone, records in zones.items():
            changes = []
            for key, rec in records.items():
                name, _, rtype = key.rpartition(" ")
                held = tuple(rec["values"])
                ttl = rec["ttl"] + 1
                changes.append(RecordChange(zone=zone, name=name, type=rtype, ttl=ttl, expected=held, new_values=held))
            if changes:
                world.dns(server).apply(zone, changes)
    assert world.snapshot()["record_sets"] == {
        server: {
            zone: {key: {"ttl": rec["ttl"] + 1, "values": rec["values"]} for key, rec in records.items()}
            for zone, records in zones.items()
        }
        for server, zones in before["record_sets"].items()
    }

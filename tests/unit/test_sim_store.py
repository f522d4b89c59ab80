"""The simulator's state file: a snapshot and the change records appended since (agent/drivers/sim/store.py).

What a user of the simulator relies on: a change costs what it changed, whatever the size of the
world; a reader never sees half a change, also while the records are folded into a new snapshot;
a writer killed mid-record leaves the state as it was before that change, and the call log
agrees; an old state file still opens.
"""

from __future__ import annotations

import ipaddress
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

from agent import ports
from agent.domain.model import RecordChange
from agent.drivers.sim import SimInventory, SimWorld, StateFileError, nic_id, store
from agent.ports import GrantRequest

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sim" / "two-sites.yaml"
WEB01_B = nic_id("site-b", "web01", "nic0")
ZONE = "example.com."

fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork (POSIX)")


def big_inventory(n: int) -> SimInventory:
    """``n`` replicated VMs with one address each in one pool, every one with an A record."""

    def vm(i: int) -> dict:
        address = ipaddress.ip_address("10.1.0.10") + i
        return {"name": f"vm{i:05d}", "host": f"hv-a{i % 4}",
                "nics": [{"name": "nic0", "vm_network": "net", "addresses": [f"{address}/16"]}],
                "replica": {"site": "b", "host": "hv-b0"}}

    net = {"name": "net", "logical_network": "ln", "isolation": "VLANNetwork",
           "subnets": [{"name": "s", "prefix": "10.1.0.0/16",
                        "pools": [{"name": "p", "range": ["10.1.0.10", "10.1.255.250"]}]}]}
    return SimInventory.model_validate({
        "sites": [{"name": "a", "hosts": [f"hv-a{i}" for i in range(4)], "logical_networks": ["ln"],
                   "vm_networks": [net], "vms": [vm(i) for i in range(n)]},
                  {"name": "b", "hosts": ["hv-b0"], "logical_networks": ["ln"], "vm_networks": [net]}],
        "dns_servers": [{"name": "ns", "zones": [{"name": "corp.example", "records": [
            {"name": f"vm{i:05d}", "type": "A", "ttl": 3600, "values": [str(ipaddress.ip_address("10.1.0.10") + i)]}
            for i in range(n)]}]}],
    })


def bytes_per_change(world: SimWorld) -> list[int]:
    """What the state file grew by for each of a few changes, each of a kind that reads a whole
    site or zone on its way (NIC owners of a grant, the zone of a DNS update)."""

    path, grown = world.state_path, []
    changes = [
        lambda: world.hyperv("a").set_power("hv-a1", "stop", ["vm00001"]),
        lambda: world.vmm("b").grant_ips([GrantRequest("p", "10.1.0.11", nic_id("b", "vm00001", "nic0"))]),
        lambda: world.dns("ns").apply("corp.example.", [RecordChange(
            zone="corp.example.", name="vm00001.corp.example.", type="A", ttl=60, expected=("10.1.0.11",),
            new_values=("10.1.0.11",))]),
    ]
    for change in changes:
        before = path.stat().st_size
        change()
        grown.append(path.stat().st_size - before)
    return grown


def test_the_bytes_a_change_writes_do_not_grow_with_the_world(tmp_path: Path) -> None:
    small = SimWorld.open(big_inventory(20), tmp_path / "small.json")
    big = SimWorld.open(big_inventory(3_000), tmp_path / "big.json")
    assert big.state_path.stat().st_size > 50 * small.state_path.stat().st_size
    small_bytes, big_bytes = bytes_per_change(small), bytes_per_change(big)
    assert small_bytes == big_bytes
    assert all(0 < b < 1_000 for b in big_bytes), big_bytes
    assert SimWorld.open(big_inventory(3_000), tmp_path / "big.json").snapshot() == big.snapshot()


def test_a_process_whose_copy_is_current_reads_nothing_more(world: SimWorld, monkeypatch) -> None:
    other = SimWorld.open(FIXTURE, world.state_path)  # a second store on the file: another process
    read: list[int] = []
    real_open = open

    def counting_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        if str(file) == str(world.state_path) and "r" in mode:
            real_read = fh.read
            fh.read = lambda n=-1: read.append(len(data := real_read(n))) or data  # type: ignore[method-assign]
        return fh

    monkeypatch.setattr("builtins.open", counting_open)
    for _ in range(3):
        world.vmm("site-b").read_inventory()
        world.hyperv("site-b").get_replications("hv-b1", ["web01"])
    assert read and all(n <= 128 for n in read)  # the first line, each time: nothing else
    read.clear()
    [g] = other.vmm("site-b").grant_ips([GrantRequest("pool-b-web", "192.168.1.20", WEB01_B)])
    read.clear()
    held = {x.address for x in world.vmm("site-b").read_inventory().grants}
    assert "192.168.1.20" in held  # caught up with the other process ...
    assert sum(read) < 128 + 1_000  # ... from its record, not the whole file
    assert g.changed


def _records_end(world: SimWorld) -> int:
    return world.state_path.stat().st_size


@pytest.mark.parametrize("tail", [b"\x00\x02\x00\x00" + b"\x01\x02\x03\x04" + b"cut", "bad checksum"])
def test_a_torn_tail_is_ignored_and_cut_by_the_next_writer(world: SimWorld, tail: bytes | str) -> None:
    vmm = world.vmm("site-b")
    vmm.grant_ips([GrantRequest("pool-b-web", "192.168.1.20", WEB01_B)])
    whole = world.snapshot()
    end = _records_end(world)
    if tail == "bad checksum":
        # A whole record whose bytes are not what its checksum says (a write that went wrong).
        other = SimWorld.open(FIXTURE, world.state_path)
        other.vmm("site-b").grant_ips([GrantRequest("pool-b-web", "192.168.1.21", WEB01_B)])
        data = world.state_path.read_bytes()
        at = data.rindex(b"192.168.1.21")
        world.state_path.write_bytes(data[:at] + b"192.168.1.29" + data[at + 12:])  # still parses
        # the call log holds that grant with a seq the state no longer reaches: not listed
    else:
        with open(world.state_path, "ab") as fh:
            fh.write(tail)  # type: ignore[arg-type]
    reader = SimWorld.open(FIXTURE, world.state_path)
    assert reader.snapshot() == whole
    assert [c.changed for c in reader.calls("vmm.grant_ips")] == [("pool-b-web:192.168.1.20",)]
    [again] = reader.vmm("site-b").grant_ips([GrantRequest("pool-b-web", "192.168.1.22", WEB01_B)])
    assert again.changed
    fresh = SimWorld.open(FIXTURE, world.state_path)
    held = fresh.snapshot()["grants"]["site-b"]["pool-b-web"]
    assert {"192.168.1.20", "192.168.1.22"} <= set(held) and not {"192.168.1.21", "192.168.1.29"} & set(held)
    assert world.snapshot() == fresh.snapshot()  # the first process catches up past the cut
    assert [c.changed for c in fresh.calls("vmm.grant_ips")] == [("pool-b-web:192.168.1.20",),
                                                                 ("pool-b-web:192.168.1.22",)]
    assert _records_end(fresh) > end


def _die_mid_record(state: str) -> None:
    def half_then_die(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        os._exit(9)  # kill -9 in the middle of writing the change record

    store._write_all = half_then_die  # type: ignore[assignment]
    SimWorld.open(FIXTURE, state).vmm("site-b").grant_ips([GrantRequest("pool-b-web", "192.168.1.30", WEB01_B)])


@fork
def test_a_writer_killed_mid_record_leaves_the_state_before_that_change(world: SimWorld) -> None:
    before = world.snapshot()
    proc = multiprocessing.get_context("fork").Process(target=_die_mid_record, args=(str(world.state_path),))
    proc.start()
    proc.join(timeout=10)
    assert proc.exitcode == 9
    assert "192.168.1.30" in world.calls_path.read_text()  # its call record was appended ...
    assert world.calls("vmm.grant_ips") == []  # ... but the change did not persist
    assert world.snapshot() == before
    [g] = world.vmm("site-b").grant_ips([GrantRequest("pool-b-web", "192.168.1.31", WEB01_B)])
    assert g.changed
    reopened = SimWorld.open(FIXTURE, world.state_path)
    assert reopened.snapshot() == world.snapshot()
    assert [c.changed for c in reopened.calls("vmm.grant_ips")] == [("pool-b-web:192.168.1.31",)]


def _die_mid_compaction(state: str) -> None:
    def killed(src: str, dst: object) -> None:
        os._exit(9)  # the new snapshot is written, not yet in place

    store.COMPACT_MIN_BYTES = 0
    store._replace = killed  # type: ignore[assignment]
    world = SimWorld.open(FIXTURE, state)
    for i in range(100):
        world.vmm("site-b").grant_ips([GrantRequest("pool-b-web", f"192.168.1.{30 + i}", WEB01_B)])


@fork
def test_a_writer_killed_mid_compaction_leaves_every_change_it_made(world: SimWorld) -> None:
    proc = multiprocessing.get_context("fork").Process(target=_die_mid_compaction, args=(str(world.state_path),))
    proc.start()
    proc.join(timeout=20)
    assert proc.exitcode == 9
    logged = [k for c in world.calls("vmm.grant_ips") for k in c.changed]
    held = world.snapshot()["grants"]["site-b"]["pool-b-web"]
    assert logged and sorted(logged) == sorted(f"pool-b-web:{a}" for a in held if a != "192.168.1.11")
    temp = list(world.state_path.parent.glob(".state.json.*.tmp"))
    assert temp  # the dead writer's snapshot-to-be ...
    SimWorld.open(FIXTURE, world.state_path)
    assert not list(world.state_path.parent.glob(".state.json.*.tmp"))  # ... is gone at the next open


def _change_both_ttls(state: str, n: int, reads: Any) -> None:
    store.COMPACT_MIN_BYTES = 0  # a compaction every few changes
    dns = SimWorld.open(FIXTURE, state).dns("dns-main")
    for k, ttl in enumerate(range(61, 61 + n), start=1):
        dns.apply(ZONE, [RecordChange(zone=ZONE, name=f"{x}.example.com.", type="A", ttl=ttl,
                                      expected=("10.0.0.1",), new_values=("10.0.0.1",)) for x in ("x", "y")])
        # Paced by the reader (never more than one change ahead of its reads), so that on a fast
        # machine too it reads between changes and across compactions; bounded if it stalls.
        deadline = time.monotonic() + 5
        while reads.value < k and time.monotonic() < deadline:
            time.sleep(0.0005)


@fork
def test_readers_see_whole_changes_while_another_process_compacts(world: SimWorld, monkeypatch) -> None:
    monkeypatch.setattr(store, "COMPACT_MIN_BYTES", 0)
    world.dns("dns-main").apply(ZONE, [RecordChange(zone=ZONE, name=f"{x}.example.com.", type="A", ttl=60,
                                                    new_values=("10.0.0.1",)) for x in ("x", "y")])
    reads = multiprocessing.get_context("fork").Value("i", 0)
    writer = multiprocessing.get_context("fork").Process(target=_change_both_ttls,
                                                         args=(str(world.state_path), 300, reads))
    writer.start()
    reader = SimWorld.open(FIXTURE, world.state_path)
    dns, names = reader.dns("dns-main"), [("x.example.com.", "A"), ("y.example.com.", "A")]
    seen: list[int] = []
    files: set[bytes] = set()

    def read() -> None:
        x, y = dns.read(ZONE, names)
        assert x.ttl == y.ttl, "half a change"
        assert not seen or x.ttl >= seen[-1], "a change went back"
        seen.append(x.ttl)
        with open(world.state_path, "rb") as fh:  # each compaction writes a snapshot of a new token
            files.add(fh.readline().split()[1])
        with reads.get_lock():
            reads.value += 1

    while writer.is_alive():
        read()
    writer.join(timeout=30)
    assert writer.exitcode == 0
    read()
    assert seen[-1] == 360
    assert len(files) > 3, "the writer never compacted while the reader read"
    assert len(set(seen)) > 2, "the reader never read between the writer's changes"
    assert SimWorld.open(FIXTURE, world.state_path).snapshot() == reader.snapshot()


def test_a_mutation_the_change_record_missed_fails_loudly(world: SimWorld) -> None:
    """FA_SIM_VERIFY_CHANGES (set for the test suite) compares every commit with the file."""

    assert world._store.verify
    with pytest.raises(AssertionError, match="missed a mutation of \\['vms'\\]"):
        with world._mutating() as st:
            for vm in st["vms"]["site-b"].values():  # a scan: entries it hands out are not noted
                vm["power"] = "Running"
            world._store.commit(st, None)  # type: ignore[arg-type]


def test_an_old_format_file_is_converted_at_its_first_change(world: SimWorld, tmp_path: Path) -> None:
    import marshal

    state = tmp_path / "old.json"
    st = world._store.current()
    state.write_bytes(b"SIMSTATE2 00ff 7\n" + marshal.dumps(st))
    old = SimWorld.open(FIXTURE, state)
    assert old.snapshot() == world.snapshot()
    old.routes().withdraw([ports.Route(router="rtr-a", prefix="192.168.1.0/24", interface="vlan10")])
    assert state.read_bytes().startswith(b"SIMSTATE3 ")
    assert SimWorld.open(FIXTURE, state).snapshot() == old.snapshot() != world.snapshot()
    state.write_bytes(b"SIMSTATE9 00ff 7\n")
    with pytest.raises(StateFileError, match="format 9.*reset the world"):
        SimWorld.open(FIXTURE, state)


def test_what_a_process_keeps_of_a_site_follows_the_changes_of_another(world: SimWorld) -> None:
    """The NIC owners a grant checks and a site's inventory are kept while that site's VMs,
    pools and grants stand still; a VM another process created is known at the next call."""

    vmm = world.vmm("site-b")
    assert vmm.grant_ips([GrantRequest("pool-b-web", "192.168.1.20", WEB01_B)])[0].changed
    seen = vmm.read_inventory()
    other = SimWorld.open(FIXTURE, world.state_path)
    other.dns("dns-main").apply(ZONE, [RecordChange(zone=ZONE, name="z.example.com.", type="A", ttl=60,
                                                    new_values=("10.0.0.9",))])
    assert vmm.read_inventory() == seen  # a change elsewhere leaves the site as it was
    [started] = other.hyperv("site-b").replicate("hv-b1", "start_test", ["web01"])
    test_vm = next(v for v in vmm.read_inventory().vms if v.name == started.value.test_vm)
    [g] = vmm.grant_ips([GrantRequest("pool-b-web", "192.168.1.21", test_vm.nics[0].id)])
    assert g.changed, g.error
    other.vmm("site-b").revoke_ips([g.value])
    assert "192.168.1.21" not in {x.address for x in vmm.read_inventory().grants}

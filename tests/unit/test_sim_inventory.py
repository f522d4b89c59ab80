"""The simulator's inventory: what a YAML file builds, and every mistake located by line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.domain.model import PowerState
from agent.drivers.sim import SimWorld, load_inventory, nic_id
from agent.yamlfile import InvalidFileError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inv.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def line_of(path: Path, needle: str, nth: int = 1) -> int:
    """The 1-based line of the ``nth`` line containing ``needle``."""

    hits = [i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    return hits[nth - 1]


def problems(path: Path) -> list[tuple[int | None, str, str]]:
    with pytest.raises(InvalidFileError) as info:
        load_inventory(path)
    return [(p.line, p.key, p.message) for p in info.value.problems]


BASE = """
sites:
  - name: a
    hosts: [hv1]
    logical_networks: [ln]
    vm_networks:
      - name: net
        logical_network: ln
        isolation: VLANNetwork
        subnets:
          - name: s1
            prefix: 10.0.0.0/24
            pools:
              - name: p1
                range: [10.0.0.10, 10.0.0.50]
                reserved: [10.0.0.20]
"""


def test_fixture_builds_both_sites_and_derives_replicas(world: SimWorld) -> None:
    b = world.vmm("site-b").read_inventory()
    replica = next(v for v in b.vms if v.name == "web01")
    assert replica.role == "replica"
    assert replica.host == "hv-b1"
    assert replica.power_state is PowerState.OFF
    nic = replica.nics[0]
    assert nic.id == nic_id("site-b", "web01", "nic0")
    assert (nic.vm_network, nic.vm_subnet) == ("prod-b", "web")  # the inventory connected it
    assert nic.ip_configurations == ()  # nothing until failover
    unconnected = next(v for v in b.vms if v.name == "web02").nics[0]
    assert unconnected.vm_network is None


def test_static_addresses_in_a_pool_are_granted_to_their_nic(world: SimWorld) -> None:
    a = world.vmm("site-a").read_inventory()
    by_address = {g.address: g for g in a.grants}
    web02 = next(v for v in a.vms if v.name == "web02").nics[0]
    assert by_address["192.168.1.11"].owner_id == web02.id
    assert by_address["192.168.1.12"].owner_id == web02.id
    assert "10.50.0.1" not in by_address  # DHCP NICs hold no grant


def test_foreign_grants_are_kept_with_their_owner(world: SimWorld) -> None:
    grants = world.vmm("site-b").read_inventory().grants
    assert [(g.pool, g.address, g.owner_id, g.owner_type) for g in grants] == [
        ("pool-b-web", "192.168.1.11", "printer-b", "VirtualMachine")
    ]


def test_unknown_key_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "    colour: blue\n")
    assert problems(path) == [
        (line_of(path, "colour"), "sites[0].colour", "unknown key (not part of the schema; check the spelling)")
    ]


def test_overlapping_pools_name_both(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        BASE
        + """\
              - name: p2
                range: [10.0.0.40, 10.0.0.60]
""",
    )
    [(line, key, message)] = problems(path)
    assert line == line_of(path, "10.0.0.40")
    assert key == "sites[0].vm_networks[0].subnets[0].pools[1].range"
    assert "p2" in message and "overlaps pool p1" in message


def test_pools_of_separate_wnv_networks_may_overlap(tmp_path: Path) -> None:
    text = """
    sites:
      - name: a
        logical_networks: [ln]
        vm_networks:
          - name: t1
            logical_network: ln
            isolation: WindowsNetworkVirtualization
            subnets: [{name: s, prefix: 10.0.0.0/24, pools: [{name: p1, range: [10.0.0.10, 10.0.0.50]}]}]
          - name: t2
            logical_network: ln
            isolation: WindowsNetworkVirtualization
            subnets: [{name: s, prefix: 10.0.0.0/24, pools: [{name: p2, range: [10.0.0.10, 10.0.0.50]}]}]
    """
    assert len(load_inventory(write(tmp_path, text)).sites) == 1


def test_pool_outside_its_subnet_is_refused(tmp_path: Path) -> None:
    pool_range = "                range: [10.0.0.10"
    path = write(tmp_path, BASE.replace(pool_range, "                prefix: 10.0.1.0/28\n" + pool_range))
    [(line, key, message)] = problems(path)
    assert (line, key) == (line_of(path, "10.0.1.0/28"), "sites[0].vm_networks[0].subnets[0].pools[0].prefix")
    assert "10.0.1.0/28 is not a subnet of VM subnet s1 (10.0.0.0/24)" in message


def test_every_cross_reference_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        BASE
        + """\
    vms:
      - name: vm1
        host: hv9
        nics:
          - {name: nic0, vm_network: net, addresses: [10.0.0.20/24]}
          - {name: nic1, vm_network: nope}
      - name: vm1
        host: hv1
        replica: {site: b, host: hv1}
""",
    )
    found = problems(path)
    assert sorted(found) == sorted(
        [
            (line_of(path, "hv9"), "sites[0].vms[0].host", "unknown host 'hv9' at a"),
            (
                line_of(path, "10.0.0.20/24"),
                "sites[0].vms[0].nics[0].addresses[0]",
                "10.0.0.20 is in the reserved set of pool p1",
            ),
            (line_of(path, "nope"), "sites[0].vms[0].nics[1].vm_network", "unknown VM network 'nope' at a"),
            (line_of(path, "name: vm1", 2), "sites[0].vms[1].name", "duplicate VM name 'vm1' at a"),
            (line_of(path, "replica:"), "sites[0].vms[1].replica.site", "unknown site 'b'"),
        ]
    )


def test_grant_clashing_with_a_nic_address_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        BASE
        + """\
                grants: [{address: 10.0.0.30, owner_id: someone-else}]
    vms:
      - name: vm1
        host: hv1
        nics: [{name: nic0, vm_network: net, addresses: [10.0.0.30/24]}]
""",
    )
    [(line, key, message)] = problems(path)
    assert key == "sites[0].vms[0].nics[0].addresses[0]"
    assert message == "10.0.0.30 is granted to someone-else in pool p1"
    assert line == line_of(path, "10.0.0.30/24")


def test_dns_and_router_mistakes_are_located(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        BASE
        + """\
dns_servers:
  - name: d
    zones:
      - name: example.com
        records:
          - {name: web.other.org., type: A, values: [10.0.0.1]}
          - {name: web, type: AAAA, values: [10.0.0.1]}
routers:
  - {name: r, site: nowhere}
""",
    )
    found = problems(path)
    assert (
        line_of(path, "web.other.org."),
        "dns_servers[0].zones[0].records[0].name",
        "web.other.org. is not in zone example.com.",
    ) in found
    assert any(
        k == "dns_servers[0].zones[0].records[1].values[0]" and line == line_of(path, "type: AAAA")
        for line, k, _ in found
    )
    assert (line_of(path, "nowhere"), "routers[0].site", "unknown site 'nowhere'") in found
    assert len(found) == 3


def test_malformed_record_values_are_located(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        BASE
        + """\
dns_servers:
  - name: d
    zones:
      - name: 0.10.in-addr.arpa
        records:
          - {name: "20.0", type: PTR, values: [vm1.example.com.]}
          - {name: "21.0", type: PTR, values: [vm2.example.com]}
          - {name: "22.0", type: PTR, values: [vm3..example.com.]}
      - name: example.com
        records:
          - {name: vm1, type: A, values: [10.0.0.020]}
""",
    )
    found = {key: (line, message) for line, key, message in problems(path)}
    assert set(found) == {
        "dns_servers[0].zones[0].records[1].values[0]",
        "dns_servers[0].zones[0].records[2].values[0]",
        "dns_servers[0].zones[1].records[0].values[0]",
    }
    line, message = found["dns_servers[0].zones[0].records[1].values[0]"]
    assert line == line_of(path, "vm2.example.com]")
    assert message == "PTR target 'vm2.example.com' must be a fully qualified name (ending with '.')"
    assert "vm3..example.com." in found["dns_servers[0].zones[0].records[2].values[0]"][1]
    assert found["dns_servers[0].zones[1].records[0].values[0]"][1] == "'10.0.0.020' is not a valid A value"


def test_simulation_section_is_validated(tmp_path: Path) -> None:
    faults = "  faults: [{call: vmm.grant_ips, fault: permanent, count: 1, rate: 0.5}]\n"
    path = write(tmp_path, BASE + "simulation:\n" + faults)
    [(line, key, message)] = problems(path)
    assert (line, key) == (line_of(path, "rate: 0.5"), "simulation.faults[0]")
    assert "count or rate" in message


def test_vm_and_nic_names_are_taken_as_vmm_takes_them(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """\
    vms:
      - name: "o'brien"
        host: hv1
        nics: [{name: "Ethernet 'prod' #2", vm_network: net, addresses: [10.0.0.30/24]}]
      - name: web 01 (Müller)
        host: hv1
""")
    vms = {vm.name: vm for vm in load_inventory(path).sites[0].vms}
    assert set(vms) == {"o'brien", "web 01 (Müller)"}
    assert vms["o'brien"].nics[0].name == "Ethernet 'prod' #2"


def test_names_differing_only_in_case_are_one_name_to_vmm(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """\
    vms:
      - {name: SQL01, host: hv1}
      - {name: sql01, host: hv1}
""")
    assert problems(path) == [(line_of(path, "name: sql01"), "sites[0].vms[1].name", "duplicate VM name 'sql01' at a")]


def test_a_name_with_a_control_character_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """\
    vms:
      - {name: "web\\e[2J01", host: hv1}
""")
    [(_, key, message)] = problems(path)
    assert key == "sites[0].vms[0].name" and "control characters" in message and "U+001B" in message

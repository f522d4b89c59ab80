"""The simulated VMM server: IP grants, test networks and NIC connections, refused as VMM would."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import ports
from agent.domain.errors import AddressAlreadyGranted, NetworkInUse, PoolExhausted
from agent.domain.model import IpConfiguration, IpGrant, Isolation
from agent.drivers.sim import SimWorld, nic_id
from agent.ports import GrantRequest, NicConnection, Vmm

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sim" / "two-sites.yaml"
WEB01_B = nic_id("site-b", "web01", "nic0")
WEB02_B = nic_id("site-b", "web02", "nic0")
APP01_B = nic_id("site-b", "app01", "nic0")


@pytest.fixture
def vmm(world: SimWorld) -> Vmm:
    return world.vmm("site-b")


def code(result) -> str | None:
    return result.error.code if result.error is not None else None


def test_is_a_vmm_port(vmm: Vmm) -> None:
    assert isinstance(vmm, Vmm)
    assert vmm.site == "site-b"


def test_grant_then_grant_again_is_unchanged(world: SimWorld, vmm: Vmm) -> None:
    req = GrantRequest("pool-b-web", "192.168.1.10", WEB01_B, "failover-agent web01/nic0")
    [first] = vmm.grant_ips([req])
    assert first.ok and first.changed
    assert first.key == "pool-b-web:192.168.1.10"
    assert first.value == IpGrant(
        pool="pool-b-web",
        site="site-b",
        address="192.168.1.10",
        owner_id=WEB01_B,
        description="failover-agent web01/nic0",
    )
    [again] = vmm.grant_ips([req])
    assert again.ok and not again.changed and again.value == first.value
    assert first.value in vmm.read_inventory().grants
    assert [c.changed for c in world.calls("vmm.grant_ips")] == [("pool-b-web:192.168.1.10",), ()]


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("192.168.1.201", "address_outside_pool"),
        ("192.168.1.5", "address_outside_pool"),
        ("2001:db8:1::10", "address_outside_pool"),
        ("not-an-ip", "address_outside_pool"),
        ("192.168.1.100", "address_reserved"),
        ("192.168.1.11", "address_already_granted"),
    ],
)
def test_grant_refusals(vmm: Vmm, address: str, expected: str) -> None:
    [result] = vmm.grant_ips([GrantRequest("pool-b-web", address, WEB01_B)])
    assert code(result) == expected
    assert result.error.fields["pool"] == "pool-b-web"


def test_already_granted_names_the_holder(vmm: Vmm) -> None:
    [result] = vmm.grant_ips([GrantRequest("pool-b-web", "192.168.1.11", WEB02_B)])
    assert isinstance(result.error, AddressAlreadyGranted)
    assert result.error.fields["owner_id"] == "printer-b"
    assert "office printer" in result.error.message


def test_unknown_pool_and_owner_are_not_found(vmm: Vmm) -> None:
    no_pool, no_owner = vmm.grant_ips(
        [GrantRequest("nope", "192.168.1.10", WEB01_B), GrantRequest("pool-b-web", "192.168.1.10", "ghost")]
    )
    assert (code(no_pool), no_pool.error.fields["pool"]) == ("not_found", "nope")
    assert (code(no_owner), no_owner.error.fields["owner_id"]) == ("not_found", "ghost")


def test_one_refused_item_does_not_stop_the_others(vmm: Vmm) -> None:
    results = vmm.grant_ips(
        [
            GrantRequest("pool-b-web", "192.168.1.100", WEB01_B),
            GrantRequest("pool-b-web", "192.168.1.20", WEB01_B),
        ]
    )
    assert [code(r) for r in results] == ["address_reserved", None]
    assert results[1].changed


def test_grant_without_address_takes_the_lowest_free_one_until_exhausted(vmm: Vmm) -> None:
    # pool-b-app is 172.16.1.10-14: five addresses.
    results = vmm.grant_ips([GrantRequest("pool-b-app", "", APP01_B) for _ in range(6)])
    assert [r.value.address for r in results[:5]] == [f"172.16.1.{n}" for n in range(10, 15)]
    assert [r.key for r in results[:2]] == ["pool-b-app:172.16.1.10", "pool-b-app:172.16.1.11"]
    assert isinstance(results[5].error, PoolExhausted)


def test_revoke_is_idempotent_and_leaves_other_owners_alone(world: SimWorld, vmm: Vmm) -> None:
    [granted] = vmm.grant_ips([GrantRequest("pool-b-web", "192.168.1.10", WEB01_B)])
    [first] = vmm.revoke_ips([granted.value])
    [second] = vmm.revoke_ips([granted.value])
    assert (first.changed, second.changed, second.ok) == (True, False, True)
    printer = IpGrant(pool="pool-b-web", site="site-b", address="192.168.1.11", owner_id=WEB01_B)
    [foreign] = vmm.revoke_ips([printer])
    assert code(foreign) == "conflict"
    assert foreign.error.fields["owner_id"] == "printer-b"
    wrong_site = printer.model_copy(update={"site": "site-a"})
    assert code(vmm.revoke_ips([wrong_site])[0]) == "invalid_request"
    assert world.snapshot()["grants"]["site-b"]["pool-b-web"]["192.168.1.11"]["owner_id"] == "printer-b"


def test_test_network_copies_subnets_and_pools(vmm: Vmm) -> None:
    spec = ports.TestNetworkSpec("prod-b-test", "prod-b", "drill 42")
    [created] = vmm.create_test_networks([spec])
    net = created.value
    assert created.changed and net.test_network and net.isolation is Isolation.WNV
    assert [(s.name, s.prefix) for s in net.subnets] == [
        ("web", "192.168.1.0/24"),
        ("app", "172.16.1.0/24"),
        ("web6", "2001:db8:1::/64"),
    ]
    inv = vmm.read_inventory()
    copy = next(p for p in inv.pools if p.name == "prod-b-test/pool-b-web")
    orig = next(p for p in inv.pools if p.name == "pool-b-web")
    assert copy.vm_network == "prod-b-test"
    assert (copy.range_start, copy.range_end, copy.reserved, copy.gateway, copy.dns_servers) == (
        orig.range_start,
        orig.range_end,
        orig.reserved,
        orig.gateway,
        orig.dns_servers,
    )
    [again] = vmm.create_test_networks([spec])
    assert again.ok and not again.changed and again.value == net


def test_test_network_refusals(vmm: Vmm) -> None:
    vmm.create_test_networks([ports.TestNetworkSpec("t1", "prod-b")])
    missing, clash, other_copy = vmm.create_test_networks(
        [
            ports.TestNetworkSpec("t2", "nope"),
            ports.TestNetworkSpec("prod-b", "isolated-b"),
            ports.TestNetworkSpec("t1", "isolated-b"),
        ]
    )
    assert code(missing) == "not_found"
    assert code(clash) == "conflict"
    assert code(other_copy) == "conflict"
    [production] = vmm.delete_test_networks(["prod-b"])
    assert code(production) == "not_a_test_network"
    [absent] = vmm.delete_test_networks(["never-made"])
    assert absent.ok and not absent.changed


def test_a_test_network_in_use_is_not_deleted(world: SimWorld, vmm: Vmm) -> None:
    before = world.snapshot()
    vmm.create_test_networks([ports.TestNetworkSpec("t1", "prod-b")])
    [grant] = vmm.grant_ips([GrantRequest("t1/pool-b-web", "192.168.1.10", WEB01_B)])
    vmm.connect_nics([NicConnection("web01", "nic0", "t1", "web", (("192.168.1.10", 24),))])
    [busy] = vmm.delete_test_networks(["t1"])
    assert isinstance(busy.error, NetworkInUse)
    assert busy.error.fields["nics"] == ["web01/nic0"]
    assert busy.error.fields["grants"] == ["t1/pool-b-web:192.168.1.10"]
    vmm.connect_nics([NicConnection("web01", "nic0", "prod-b", "web")])
    vmm.revoke_ips([grant.value])
    [deleted] = vmm.delete_test_networks(["t1"])
    assert deleted.changed
    after = world.snapshot()
    # web01's replica NIC is back on prod-b/web, now explicitly DHCP: only that differs.
    after["vms"]["site-b"]["web01"]["nics"][0]["ip"] = []
    assert after == before


def test_connect_with_granted_addresses_makes_the_nic_static(vmm: Vmm) -> None:
    vmm.grant_ips([GrantRequest("pool-b-web", a, WEB02_B) for a in ("192.168.1.30", "192.168.1.31")])
    conn = NicConnection("web02", "nic0", "prod-b", "web", (("192.168.1.30", 24), ("192.168.1.31", 24)))
    [result] = vmm.connect_nics([conn])
    assert result.changed
    assert result.value.id == WEB02_B
    assert (result.value.vm_network, result.value.vm_subnet) == ("prod-b", "web")
    assert result.value.ip_configurations == (
        IpConfiguration(mode="static", address="192.168.1.30", prefix_length=24),
        IpConfiguration(mode="static", address="192.168.1.31", prefix_length=24),
    )
    assert not vmm.connect_nics([conn])[0].changed
    [off] = vmm.connect_nics([NicConnection("web02", "nic0", None)])
    assert off.changed and off.value.vm_network is None and off.value.ip_configurations == ()


def test_connect_without_addresses_is_dhcp_on_the_first_subnet(vmm: Vmm) -> None:
    [result] = vmm.connect_nics([NicConnection("web02", "nic0", "prod-b")])
    assert result.value.vm_subnet == "web"
    assert result.value.ip_configurations == (IpConfiguration(mode="dhcp"),)


@pytest.mark.parametrize(
    ("connection", "expected"),
    [
        (NicConnection("ghost", "nic0", "prod-b"), "not_found"),
        (NicConnection("web02", "nic9", "prod-b"), "not_found"),
        (NicConnection("web02", "nic0", "nope"), "not_found"),
        (NicConnection("web02", "nic0", "prod-b", "nope"), "not_found"),
        (NicConnection("web02", "nic0", "prod-b", "web", (("192.168.1.40", 24),)), "not_found"),  # never granted
        (NicConnection("web02", "nic0", "prod-b", "web", (("192.168.1.11", 24),)), "address_already_granted"),
        (NicConnection("web02", "nic0", "prod-b", "web", (("10.9.9.9", 24),)), "address_outside_pool"),
        (NicConnection("web02", "nic0", "prod-b", "web", (("192.168.1.30", 25),)), "invalid_setting"),
        (NicConnection("web02", "nic0", None, None, (("192.168.1.30", 24),)), "invalid_setting"),
    ],
)
def test_connect_refusals(vmm: Vmm, connection: NicConnection, expected: str) -> None:
    vmm.grant_ips([GrantRequest("pool-b-web", "192.168.1.30", WEB02_B)])
    [result] = vmm.connect_nics([connection])
    assert code(result) == expected
    web02 = next(v for v in vmm.read_inventory().vms if v.name == "web02")
    assert web02.nics[0].vm_network is None  # refused: nothing changed


def test_read_inventory_is_one_sites_view(vmm: Vmm) -> None:
    inv = vmm.read_inventory()
    assert inv.site == "site-b"
    assert {n.name for n in inv.vm_networks} == {"prod-b", "isolated-b"}
    assert {p.name for p in inv.pools} == {"pool-b-web", "pool-b-app", "pool-b-web6", "pool-b-isolated"}
    assert {v.name for v in inv.vms} == {"dc-b", "web01", "web02", "app01", "v6web01"}
    assert all(v.site == "site-b" for v in inv.vms)


OWNERS = [WEB01_B, WEB02_B, APP01_B]


@settings(max_examples=20, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["grant", "revoke"]), st.integers(8, 16), st.sampled_from(OWNERS)),
        max_size=12,
    )
)
def test_grants_behave_like_a_simple_address_book(ops: list[tuple[str, int, str]]) -> None:
    """pool-b-app is 172.16.1.10-14; 8, 9, 15 and 16 lie outside it."""

    with tempfile.TemporaryDirectory() as tmp:
        vmm = SimWorld.open(FIXTURE, Path(tmp) / "state.json").vmm("site-b")
        book: dict[str, str] = {}
        for op, last, owner in ops:
            address = f"172.16.1.{last}"
            inside = 10 <= last <= 14
            if op == "grant":
                [r] = vmm.grant_ips([GrantRequest("pool-b-app", address, owner)])
                if not inside:
                    assert code(r) == "address_outside_pool"
                elif book.get(address, owner) != owner:
                    assert code(r) == "address_already_granted"
                else:
                    assert r.ok and r.changed is (address not in book)
                    book[address] = owner
            else:
                g = IpGrant(pool="pool-b-app", site="site-b", address=address, owner_id=owner)
                [r] = vmm.revoke_ips([g])
                if address in book and book[address] != owner:
                    assert code(r) == "conflict"
                else:
                    assert r.ok and r.changed is (address in book)
                    book.pop(address, None)
        held = {g.address: g.owner_id for g in vmm.read_inventory().grants if g.pool == "pool-b-app"}
        assert held == book


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["grant", "any", "revoke"]), st.integers(10, 14), st.sampled_from(OWNERS),
                  st.booleans()),
        max_size=16,
    )
)
def test_any_address_is_the_lowest_free_one_whatever_changed_it(ops: list[tuple[str, int, str, bool]]) -> None:
    """Granting "any address" takes the lowest free one, whatever changed the pool: grants and
    revocations through this world or through another one on the same state file (another
    process, whose changes are replayed into this world's state) must all show in the next answer."""

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state.json"
        here, there = SimWorld.open(FIXTURE, state).vmm("site-b"), SimWorld.open(FIXTURE, state).vmm("site-b")
        book: dict[int, str] = {}
        for op, last, owner, elsewhere in ops:
            vmm = there if elsewhere else here
            if op == "any":
                [r] = vmm.grant_ips([GrantRequest("pool-b-app", "", owner)])
                free = sorted(set(range(10, 15)) - set(book))
                if not free:
                    assert code(r) == "pool_exhausted"
                    continue
                assert r.value.address == f"172.16.1.{free[0]}"
                book[free[0]] = owner
            elif op == "grant":
                [r] = vmm.grant_ips([GrantRequest("pool-b-app", f"172.16.1.{last}", owner)])
                if book.get(last, owner) == owner:
                    book[last] = owner
            else:
                g = IpGrant(pool="pool-b-app", site="site-b", address=f"172.16.1.{last}", owner_id=owner)
                vmm.revoke_ips([g])
                if book.get(last) == owner:
                    del book[last]
        held = {g.address: g.owner_id for g in here.read_inventory().grants if g.pool == "pool-b-app"}
        assert held == {f"172.16.1.{n}": o for n, o in book.items()}

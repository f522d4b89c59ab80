"""build_plan for test failovers: the three test-network options, the compatibility rules,
test addresses and grants, test DNS -- and that nothing of production is touched."""

from __future__ import annotations

import pytest
from test_planning_world import (
    DNS_PROD,
    A,
    B,
    World,
    config,
    mapping,
    plan,
    standard_config,
    standard_world,
)

from agent.domain.model import Isolation
from agent.domain.plan import (
    ConnectNic,
    CreateTestNetwork,
    DnsChange,
    MoveRoute,
    ReserveIp,
    SetFailoverIp,
    name_test_network,
    render_diff,
)
from agent.domain.planning import build_plan
from agent.domain.validation import PlanRefused


def refused(cfg, inv, name: str = "web") -> PlanRefused:
    with pytest.raises(PlanRefused) as info:
        build_plan(cfg, inv, name, "test")
    return info.value


def cfg_with(web_test: dict, app_test: dict | None = None, **kw):
    return standard_config(mappings=[
        mapping("prod", "prod-dr", "retain", test=web_test),
        mapping("app", "app-dr", "change", test=app_test or {"mode": "none"}),
    ], **kw)


def isolated_world(isolation: Isolation = Isolation.VLAN) -> World:
    w = standard_world()
    w.network(B, "iso", {"web": "192.168.1.0/24"}, isolation=isolation)
    w.pool(B, "iso", "web", "192.168.1.0/24", "192.168.1.20", "192.168.1.40", name="iso-pool")
    return w


def test_create_copies_the_target_network_and_keeps_the_failover_address() -> None:
    w = standard_world().grant(B, "web-pool", "192.168.1.21", "someone-else")
    p = build_plan(cfg_with({"mode": "create"}), w.inventory(), "web", "test")
    name = name_test_network("prod-dr", "web")
    assert name == "prod-dr-test-web"
    assert p.of(CreateTestNetwork) == [CreateTestNetwork(site=B, name=name, copy_of="prod-dr")]
    tests = {c.vm: c for c in p.of(ReserveIp)}
    assert set(tests) == {"web01", "web02"}  # the VM; purpose "test" says its test VM
    t1, t2 = tests["web01"], tests["web02"]
    assert (t1.purpose, t1.site, t1.pool, t1.address, t1.nic_id, t1.existing) == (
        "test", B, f"{name}/web-pool", "192.168.1.20", "", False)
    # web02's failover address is .10 (its own is granted to someone else at the target);
    # the copied pool has no grants, and the test address follows the failover address
    assert t2.address == "192.168.1.10" and t2.source_address == "192.168.1.21"
    connects = {c.vm: c for c in p.of(ConnectNic)}
    assert connects["web01"] == ConnectNic(site=B, vm="web01", nic="nic0", vm_network=name,
                                           vm_subnet="web", purpose="test", addresses=(("192.168.1.20", 24),))
    assert set(connects) == {"web01", "web02"}


def test_a_test_failover_touches_nothing_of_production() -> None:
    w = standard_world().route("r-a", "192.168.1.0/24", "10.0.0.1")
    p = build_plan(cfg_with({"mode": "create"}, {"mode": "create"}), w.inventory(), "web", "test")
    assert p.of(SetFailoverIp) == [] and p.of(MoveRoute) == []
    assert all(c.purpose == "test" for c in p.of(ReserveIp) + p.of(ConnectNic) + p.of(DnsChange))
    assert {c.vm for c in p.of(ReserveIp) + p.of(ConnectNic)} == {"web01", "web02", "app01"}


def test_one_test_network_per_target_network() -> None:
    w = standard_world()
    cfg = standard_config(mappings=[
        mapping("prod", "prod-dr", "retain", test={"mode": "create"}),
        mapping("app", "prod-dr", "change", test={"mode": "create"}),
    ])
    p = build_plan(cfg, w.inventory(), "web", "test")
    assert [c.name for c in p.of(CreateTestNetwork)] == ["prod-dr-test-web"]


def test_an_existing_auto_created_network_and_test_vm_are_reused() -> None:
    name = name_test_network("prod-dr", "web")
    w = standard_world()
    w.network(B, name, {"web": "192.168.1.0/24"}, isolation=Isolation.WNV, test_network=True)
    w.pool(B, name, "web", "192.168.1.0/24", "192.168.1.10", "192.168.1.200", name=f"{name}/web-pool")
    w.test_vm("web01", B, {"nic0": (name, "web", ["192.168.1.20/24"])})
    w.grant(B, f"{name}/web-pool", "192.168.1.20", "web01/nic0@t")
    p = build_plan(cfg_with({"mode": "create"}), w.inventory(), "web", "test")
    # kept (creating it again changes nothing) so that this test's cleanup deletes it as well
    assert p.of(CreateTestNetwork) == [CreateTestNetwork(site=B, name=name, copy_of="prod-dr")]
    assert any("exists already" in n for n in p.notes)
    tests = {c.vm: c for c in p.of(ReserveIp)}
    assert (tests["web01"].existing, tests["web01"].nic_id) == (True, "web01/nic0@t")
    assert (tests["web02"].existing, tests["web02"].nic_id) == (False, "")
    assert [c.vm for c in p.of(ConnectNic)] == ["web02"]  # web01's test VM is already connected


def test_create_refused_when_the_name_belongs_to_a_production_network() -> None:
    w = standard_world().network(B, name_test_network("prod-dr", "web"), {"web": "192.168.1.0/24"})
    err = refused(cfg_with({"mode": "create"}), w.inventory())
    assert err.codes == ["test_network_name_taken"]


def test_existing_isolated_network_gets_the_failover_address_when_free_else_another() -> None:
    w = isolated_world().grant(B, "iso-pool", "192.168.1.21", "another-test-vm")
    p = build_plan(cfg_with({"mode": "existing", "vm_network": "iso"}), w.inventory(), "web", "test")
    tests = {c.vm: (c.pool, c.address) for c in p.of(ReserveIp)}
    assert tests == {"web01": ("iso-pool", "192.168.1.20"), "web02": ("iso-pool", "192.168.1.22")}
    assert p.of(CreateTestNetwork) == []
    assert {(c.vm_network, c.vm_subnet) for c in p.of(ConnectNic)} == {("iso", "web")}


def test_existing_test_network_must_exist_and_be_isolated() -> None:
    err = refused(cfg_with({"mode": "existing", "vm_network": "nowhere"}), standard_world().inventory())
    assert err.codes == ["test_network_not_found"] and err.reasons[0].fields["mapping"] == 0
    err = refused(cfg_with({"mode": "existing", "vm_network": "iso"}),
                  isolated_world(Isolation.NO_ISOLATION).inventory())
    assert err.codes == ["test_network_not_isolated"]


def test_existing_test_network_without_a_pool_for_a_static_nic_is_refused() -> None:
    w = isolated_world()
    w.pools = [p for p in w.pools if p.name != "iso-pool"]
    err = refused(cfg_with({"mode": "existing", "vm_network": "iso"}), w.inventory())
    assert err.codes == ["no_static_pool"] and err.reasons[0].fields["purpose"] == "test"


def test_none_leaves_the_test_vm_unconnected() -> None:
    p = build_plan(cfg_with({"mode": "none"}), standard_world().inventory(), "web", "test")
    assert p.changes == ()
    assert "no test network for prod-dr: the test VM NICs are not connected: web01/nic0, web02/nic0" in p.notes


def test_dhcp_replica_on_vlan_with_a_wnv_test_network_is_refused() -> None:
    w = standard_world().vm("dh01", {"nic0": ("prod", "web", ["dhcp"])})
    for test in ({"mode": "create"},):
        err = refused(cfg_with(test, plans=[plan("web", ["dh01"])]), w.inventory())
        assert err.codes == ["test_network_needs_pools"]
        assert err.reasons[0].fields["nics"] == ["dh01/nic0"]
    w2 = isolated_world(Isolation.WNV).vm("dh01", {"nic0": ("prod", "web", ["dhcp"])})
    err = refused(cfg_with({"mode": "existing", "vm_network": "iso"}, plans=[plan("web", ["dh01"])]), w2.inventory())
    assert err.codes == ["test_network_needs_pools"]


def test_dhcp_replica_with_a_vlan_test_network_is_fine() -> None:
    w = isolated_world(Isolation.VLAN).vm("dh01", {"nic0": ("prod", "web", ["dhcp"])})
    p = build_plan(cfg_with({"mode": "existing", "vm_network": "iso"}, plans=[plan("web", ["dh01"])]), w.inventory(),
                   "web", "test")
    assert [(c.vm, c.purpose, c.addresses) for c in p.of(ConnectNic)] == [("dh01", "test", ())]


def test_no_isolation_replica_network_with_a_wnv_test_network_is_refused() -> None:
    w = World()
    w.network(A, "flat", {"s": "10.0.0.0/24"}).network(B, "flat-dr", {"s": "10.0.0.0/24"},
                                                        isolation=Isolation.NO_ISOLATION)
    w.pool(B, "flat-dr", "s", "10.0.0.0/24", "10.0.0.10", "10.0.0.90", name="flat-pool")
    w.vm("vm1", {"nic0": ("flat", "s", ["10.0.0.5/24"])})
    cfg = config(mappings=[mapping("flat", "flat-dr", "change", test={"mode": "create"})], plans=[plan("x", ["vm1"])])
    err = refused(cfg, w.inventory(), "x")
    assert err.codes == ["test_network_no_subnets"]
    assert err.reasons[0].fields == {"vm_network": "flat-dr", "site": B, "test_network": "flat-dr-test-x",
                                     "nics": ["vm1/nic0"]}


def test_test_pool_exhaustion_is_refused() -> None:
    w = isolated_world()
    w.pools = [p for p in w.pools if p.name != "iso-pool"]
    w.pool(B, "iso", "web", "192.168.1.0/24", "192.168.1.20", "192.168.1.20", name="iso-pool")
    err = refused(cfg_with({"mode": "existing", "vm_network": "iso"}), w.inventory())
    assert err.codes == ["pool_exhausted"]
    assert err.reasons[0].fields == {"pool": "iso-pool", "site": B, "nics": ["web02/nic0#0"], "purpose": "test"}


def test_failover_pools_are_still_checked_by_a_test() -> None:
    w = standard_world()
    w.pools = [p for p in w.pools if p.name != "web-pool"]
    err = refused(cfg_with({"mode": "create"}), w.inventory())
    assert err.codes[0] == "no_static_pool"


def test_test_dns_goes_to_test_servers_only() -> None:
    w = standard_world()
    w.record("corp.example.", "app01.corp.example.", "A", ("192.168.3.30",))
    p = build_plan(cfg_with({"mode": "none"}, {"mode": "create"}), w.inventory(), "web", "test")
    [a] = [c for c in p.of(DnsChange) if c.type == "A"]
    assert (a.server, a.zone, a.purpose, a.new_values) == ("ns-test", "corp.example.", "test", ("172.16.1.10",))
    assert [(c.server, c.name) for c in p.of(DnsChange) if c.type == "PTR"] == [
        ("ns-test", "10.1.16.172.in-addr.arpa."),
    ]


def test_no_test_dns_server_is_a_note() -> None:
    dns_cfg = dict(DNS_PROD, servers=[{"name": "ns-prod", "kind": "sim"}],
                   zones=[z for z in DNS_PROD["zones"] if z["server"] == "ns-prod"])
    p = build_plan(cfg_with({"mode": "none"}, {"mode": "create"}, dns=dns_cfg), standard_world().inventory(),
                   "web", "test")
    assert p.of(DnsChange) == []
    assert "no DNS server with purpose 'test' is configured: test DNS is not updated" in p.notes


def test_a_reverse_mapping_with_an_existing_test_network_connects_nothing() -> None:
    w = World()
    w.network(A, "prod", {"web": "192.168.1.0/24"}).network(B, "prod-dr", {"web": "192.168.1.0/24"})
    w.pool(A, "prod", "web", "192.168.1.0/24", "192.168.1.10", "192.168.1.200", name="prod-pool")
    w.vm("web01", {"nic0": ("prod-dr", "web", ["192.168.1.20/24"])}, src=B, dst=A)
    cfg = config(mappings=[mapping("prod", "prod-dr", "retain", test={"mode": "existing", "vm_network": "iso"})],
                 plans=[plan("web", ["web01"])])
    p = build_plan(cfg, w.inventory(), "web", "test")
    assert p.changes == ()
    assert any("used in reverse" in n for n in p.notes)


def test_the_diff_of_a_test_plan() -> None:
    p = build_plan(cfg_with({"mode": "create"}, {"mode": "create"}), standard_world().inventory(), "web", "test")
    text = render_diff(p)
    assert "test networks:\n" in text and "  + create prod-dr-test-web at bravo (isolated copy of prod-dr)\n" in text
    assert ("+ reserve 192.168.1.20 in pool prod-dr-test-web/web-pool at bravo "
            "for test VM web01 - Test nic0 ip 0, kept") in text
    assert ("~ connect test VM web01 - Test nic0 to network prod-dr-test-web subnet web at bravo "
            "with 192.168.1.20/24") in text
    assert "(test DNS)" in text
    assert text.splitlines()[-1] == p.summary()

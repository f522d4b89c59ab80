"""build_plan for planned/unplanned failovers: direction, mappings, addresses, grants, failover
IPs, refusals, determinism and the diff. Routes and DNS: test_planning_routes_dns.py; test
failovers: test_planning_test_failover.py."""

from __future__ import annotations

import pickle
import random

import pytest
from test_planning_world import (
    A,
    B,
    World,
    config,
    mapping,
    plan,
    standard_config,
    standard_world,
    whole_subnet,
)

from agent.domain.model import FailoverIpSetting, Inventory, Isolation
from agent.domain.plan import (
    ConnectNic,
    DnsChange,
    MoveRoute,
    Plan,
    ReserveIp,
    SetFailoverIp,
    render_diff,
)
from agent.domain.planning import build_plan, choose_subnet
from agent.domain.validation import PlanRefused
from agent.errors import RefusedError


def reserve(p: Plan, vm: str, nic: str = "nic0", ip_index: int = 0, purpose: str = "failover") -> ReserveIp:
    hits = [c for c in p.of(ReserveIp)
            if c.vm == vm and c.nic == nic and c.ip_index == ip_index and c.purpose == purpose]
    assert len(hits) == 1, hits
    return hits[0]


def set_ip(p: Plan, vm: str, nic: str = "nic0") -> SetFailoverIp:
    hits = [c for c in p.of(SetFailoverIp) if c.vm == vm and c.nic == nic]
    assert len(hits) == 1, hits
    return hits[0]


def refused(cfg, inv, name: str = "web", kind: str = "planned") -> PlanRefused:
    with pytest.raises(PlanRefused) as info:
        build_plan(cfg, inv, name, kind)
    return info.value


# ------------------------------------------------------------------------- direction


def test_plan_names_direction_groups_and_hosts() -> None:
    p = build_plan(standard_config(), standard_world().inventory(), "web", "planned")
    assert (p.plan, p.kind, p.source_site, p.target_site) == ("web", "planned", A, B)
    assert [(v.name, v.group, v.group_index) for v in p.vms] == [
        ("web01", "g1", 0), ("web02", "g1", 0), ("app01", "g2", 1),
    ]
    v = p.vms[0]
    assert (v.source_site, v.source_host, v.target_site, v.target_host) == (A, f"{A}-host1", B, f"{B}-host1")


def test_failback_uses_the_mapping_in_reverse() -> None:
    # web01 now runs as primary at bravo on prod-dr (replication reversed after a failover):
    # the mapping prod -> prod-dr is used backwards and the replica at alpha joins prod.
    w = World()
    w.network(A, "prod", {"web": "192.168.1.0/24"})
    w.network(B, "prod-dr", {"web": "192.168.1.0/24"})
    w.pool(A, "prod", "web", "192.168.1.0/24", "192.168.1.10", "192.168.1.200", name="prod-pool", gateway="192.168.1.1")
    w.vm("web01", {"nic0": ("prod-dr", "web", ["192.168.1.20/24"])}, src=B, dst=A)
    cfg = standard_config(mappings=[mapping("prod", "prod-dr", "retain")], plans=[plan("web", ["web01"])])
    p = build_plan(cfg, w.inventory(), "web", "planned")
    assert (p.source_site, p.target_site) == (B, A)
    r = reserve(p, "web01")
    assert (r.site, r.pool, r.address, r.nic_id) == (A, "prod-pool", "192.168.1.20", "web01/nic0@r")
    assert [(c.site, c.vm_network, c.vm_subnet) for c in p.of(ConnectNic)] == [(A, "prod", "web")]
    moves = p.of(MoveRoute)
    assert [(m.from_site, m.to_site) for m in moves] == [(B, A)]


def test_an_explicit_mapping_wins_over_the_reverse_of_another() -> None:
    w = World()
    w.network(A, "prod", {"web": "192.168.1.0/24"})
    w.network(A, "other", {"web": "192.168.1.0/24"})
    w.network(B, "prod-dr", {"web": "192.168.1.0/24"})
    w.pool(A, "other", "web", "192.168.1.0/24", "192.168.1.10", "192.168.1.200", name="other-pool")
    w.vm("web01", {"nic0": ("prod-dr", "web", ["192.168.1.20/24"])}, src=B, dst=A)
    cfg = standard_config(
        mappings=[mapping("prod", "prod-dr", "retain"), mapping("prod-dr", "other", "retain", src=B, dst=A)],
        plans=[plan("web", ["web01"])],
    )
    p = build_plan(cfg, w.inventory(), "web", "planned")
    assert reserve(p, "web01").pool == "other-pool"


# -------------------------------------------------------------------------- subnets


def test_choose_subnet_same_name_else_first() -> None:
    assert choose_subnet(["a", "web", "b"], "web") == "web"
    assert choose_subnet(["a", "b"], "web") == "a"
    assert choose_subnet([], "web") is None
    assert choose_subnet(["a"], None) == "a"


def test_replica_connects_to_the_subnet_with_the_source_subnets_name() -> None:
    w = standard_world()
    w.networks = [n for n in w.networks if n.name != "prod-dr"]
    w.network(B, "prod-dr", {"db": "192.168.2.0/24", "web": "192.168.1.0/24"})
    p = build_plan(standard_config(), w.inventory(), "web", "planned")
    web = [c for c in p.of(ConnectNic) if c.vm == "web01"]
    assert [(c.vm_network, c.vm_subnet, c.purpose) for c in web] == [("prod-dr", "web", "failover")]


def test_replica_connects_to_the_first_subnet_when_no_name_matches() -> None:
    p = build_plan(standard_config(), standard_world().inventory(), "web", "planned")
    app = [c for c in p.of(ConnectNic) if c.vm == "app01"]
    assert [(c.vm_network, c.vm_subnet) for c in app] == [("app-dr", "app-dr")]
    assert any("no subnet named app" in n for n in p.notes)


def test_replica_already_connected_needs_no_connect() -> None:
    w = standard_world()
    w.vms = [v for v in w.vms if v.name != "web01"]
    w.replications = [r for r in w.replications if r.vm != "web01"]
    w.vm("web01", {"nic0": ("prod", "web", ["192.168.1.20/24"])}, replica_connected={"nic0": ("prod-dr", "web")})
    p = build_plan(standard_config(), w.inventory(), "web", "planned")
    assert not [c for c in p.of(ConnectNic) if c.vm == "web01"]
    assert [c for c in p.of(ConnectNic) if c.vm == "web02"]


# ------------------------------------------------------------------------ strategies


def test_retain_keeps_the_source_address_when_free() -> None:
    p = build_plan(standard_config(), standard_world().inventory(), "web", "planned")
    r = reserve(p, "web01")
    assert (r.site, r.pool, r.address, r.source_address, r.existing) == (
        B, "web-pool", "192.168.1.20", "192.168.1.20", False,
    )
    assert r.nic_id == "web01/nic0@r"
    s = set_ip(p, "web01")
    assert s.host == f"{B}-host1" and s.previous == ()
    assert s.settings == (FailoverIpSetting(address="192.168.1.20", prefix_length=24, gateway="192.168.1.1",
                                            dns_servers=("192.168.1.53",)),)


def test_retain_takes_another_address_when_the_source_is_granted_to_someone_else() -> None:
    w = standard_world().grant(B, "web-pool", "192.168.1.20", "someone-else")
    p = build_plan(standard_config(), w.inventory(), "web", "planned")
    r = reserve(p, "web01")
    assert r.address == "192.168.1.10" and r.source_address == "192.168.1.20" and not r.existing
    assert reserve(p, "web02").address == "192.168.1.21"
    # the address changed, so DNS follows
    assert [c.new_values for c in p.of(DnsChange) if c.vm == "web01" and c.type == "A"] == [("192.168.1.10",)]


def test_retain_skips_the_reserved_set() -> None:
    w = standard_world()
    w.pools = [p for p in w.pools if p.name != "web-pool"]
    w.pool(B, "prod-dr", "web", "192.168.1.0/24", "192.168.1.10", "192.168.1.200", name="web-pool",
           reserved=("192.168.1.20", "192.168.1.10"))
    p = build_plan(standard_config(), w.inventory(), "web", "planned")
    assert reserve(p, "web01").address == "192.168.1.11"


def test_retain_fallback_never_takes_another_vms_source_address() -> None:
    # web01's address is taken; the lowest free one would be web02's source address, which
    # web02 keeps -- whatever order the VMs are listed in.
    w = standard_world()
    w.pools = [p for p in w.pools if p.name != "web-pool"]
    w.pool(B, "prod-dr", "web", "192.168.1.0/24", "192.168.1.20", "192.168.1.30", name="web-pool")
    w.grant(B, "web-pool", "192.168.1.20", "someone-else")
    for order in (["web01", "web02"], ["web02", "web01"]):
        cfg = standard_config(plans=[plan("web", order)])
        p = build_plan(cfg, w.inventory(), "web", "planned")
        assert reserve(p, "web02").address == "192.168.1.21"
        assert reserve(p, "web01").address == "192.168.1.22"


def test_retain_outside_the_target_pool_changes_the_address() -> None:
    w = standard_world()
    w.pools = [p for p in w.pools if p.name != "web-pool"]
    w.pool(B, "prod-dr", "web", "192.168.9.0/24", "192.168.9.10", "192.168.9.20", name="web-pool")
    p = build_plan(standard_config(), w.inventory(), "web", "planned")
    assert reserve(p, "web01").address == "192.168.9.10"
    assert reserve(p, "web02").address == "192.168.9.11"
    assert any("does not cover 192.168.1.20" in n for n in p.notes)
    assert not p.of(MoveRoute)  # nothing stays in 192.168.1.0/24


def test_change_takes_the_lowest_free_address() -> None:
    w = standard_world().grant(B, "app-pool", "172.16.1.10", "someone-else")
    p = build_plan(standard_config(), w.inventory(), "web", "planned")
    r = reserve(p, "app01")
    assert (r.pool, r.address, r.source_address) == ("app-pool", "172.16.1.11", "192.168.3.30")
    assert set_ip(p, "app01").settings == (
        FailoverIpSetting(address="172.16.1.11", prefix_length=24, gateway="172.16.1.1", dns_servers=("172.16.1.53",)),
    )


def test_change_ignores_the_source_address_even_if_it_lies_in_the_pool() -> None:
    w = World()
    w.network(A, "n", {"s": "10.0.0.0/24"}).network(B, "n-dr", {"s": "10.0.0.0/24"})
    w.pool(B, "n-dr", "s", "10.0.0.0/24", "10.0.0.10", "10.0.0.50", name="p")
    w.vm("vm1", {"nic0": ("n", "s", ["10.0.0.30/24"])})
    cfg = config(mappings=[mapping("n", "n-dr", "change")], plans=[plan("x", ["vm1"])])
    assert reserve(build_plan(cfg, w.inventory(), "x", "planned"), "vm1").address == "10.0.0.10"


def test_dhcp_ip_configuration_is_left_alone_but_connected() -> None:
    w = standard_world().vm("dh01", {"nic0": ("prod", "web", ["dhcp"])})
    cfg = standard_config(plans=[plan("web", ["web01", "web02", "dh01"])])
    p = build_plan(cfg, w.inventory(), "web", "planned")
    assert not [c for c in p.changes if isinstance(c, (ReserveIp, SetFailoverIp)) and c.vm == "dh01"]
    assert [(c.vm_network, c.vm_subnet) for c in p.of(ConnectNic) if c.vm == "dh01"] == [("prod-dr", "web")]
    assert any("dh01" in n and "DHCP" in n for n in p.notes)


def test_dhcp_strategy_leaves_static_addresses_alone() -> None:
    cfg = standard_config(mappings=[mapping("prod", "prod-dr", "dhcp"), mapping("app", "app-dr", "change")])
    p = build_plan(cfg, standard_world().inventory(), "web", "planned")
    assert {c.vm for c in p.of(ReserveIp)} == {"app01"}
    assert {c.vm for c in p.of(SetFailoverIp)} == {"app01"}
    assert {c.vm for c in p.of(ConnectNic)} == {"web01", "web02", "app01"}
    assert any("says dhcp" in n and "web01" in n for n in p.notes)
    assert not p.of(MoveRoute)


def test_mixed_static_and_dhcp_configurations_on_one_nic() -> None:
    w = standard_world().vm("mix01", {"nic0": ("app", "app", ["dhcp", "192.168.3.40/24"])})
    cfg = standard_config(plans=[plan("web", ["mix01"])])
    p = build_plan(cfg, w.inventory(), "web", "planned")
    assert [(c.ip_index, c.address) for c in p.of(ReserveIp)] == [(1, "172.16.1.10")]
    assert [s.address for s in set_ip(p, "mix01").settings] == ["172.16.1.10"]


def test_several_ip_configurations_and_ipv6_on_one_nic() -> None:
    w = standard_world()
    w.pool(B, "prod-dr", "web", "2001:db8:1::/64", "2001:db8:1::10", "2001:db8:1::ff", name="web-pool-v6",
           gateway="2001:db8:1::1")
    w.vm("multi01", {"nic0": ("prod", "web", ["192.168.1.30/24", "192.168.1.31/24", "2001:db8:1::30/64"]),
                     "nic1": ("app", "app", ["192.168.3.31/24"])})
    cfg = standard_config(subnets=[whole_subnet("192.168.1.0/24"), whole_subnet("2001:db8:1::/64")],
                          plans=[plan("web", ["web01", "web02", "multi01"])])
    p = build_plan(cfg, w.inventory(), "web", "planned")
    got = [(c.nic, c.ip_index, c.pool, c.address) for c in p.of(ReserveIp) if c.vm == "multi01"]
    assert got == [
        ("nic0", 0, "web-pool", "192.168.1.30"),
        ("nic0", 1, "web-pool", "192.168.1.31"),
        ("nic0", 2, "web-pool-v6", "2001:db8:1::30"),
        ("nic1", 0, "app-pool", "172.16.1.10"),
    ]
    settings = set_ip(p, "multi01", "nic0").settings
    assert [(s.address, s.prefix_length, s.gateway) for s in settings] == [
        ("192.168.1.30", 24, "192.168.1.1"), ("192.168.1.31", 24, "192.168.1.1"),
        ("2001:db8:1::30", 64, "2001:db8:1::1"),
    ]
    assert [s.address for s in set_ip(p, "multi01", "nic1").settings] == ["172.16.1.10"]
    assert {m.prefix for m in p.of(MoveRoute)} == {"192.168.1.0/24", "2001:db8:1::/64"}


def test_ipv6_change_takes_the_lowest_free_ipv6_address() -> None:
    w = World()
    w.network(A, "v6", {"s": "2001:db8:a::/64"}).network(B, "v6-dr", {"s": "2001:db8:b::/64"})
    w.pool(B, "v6-dr", "s", "2001:db8:b::/64", "2001:db8:b::100", "2001:db8:b::1ff", name="p6",
           reserved=("2001:db8:b::100",))
    w.vm("vm6", {"nic0": ("v6", "s", ["2001:db8:a::5/64"])})
    cfg = config(mappings=[mapping("v6", "v6-dr", "change")], plans=[plan("x", ["vm6"])])
    p = build_plan(cfg, w.inventory(), "x", "planned")
    assert reserve(p, "vm6").address == "2001:db8:b::101"
    assert set_ip(p, "vm6").settings[0].prefix_length == 64


def test_a_pool_of_the_other_family_is_not_used() -> None:
    # an IPv6 configuration on a subnet with only an IPv4 pool: refused, not squeezed in
    w = standard_world()
    w.vm("v6only", {"nic0": ("prod", "web", ["2001:db8:1::30/64"])})
    cfg = standard_config(plans=[plan("web", ["v6only"])])
    err = refused(cfg, w.inventory())
    assert err.codes == ["no_static_pool"]
    assert err.reasons[0].fields["family"] == 6


# --------------------------------------------------------------------------- grants


def test_planning_twice_reuses_grants_and_never_doubles_them() -> None:
    w = standard_world().grant(B, "web-pool", "192.168.1.20", "someone-else")
    cfg = standard_config()
    first = build_plan(cfg, w.inventory(), "web", "planned")
    assert first.counts()["reserve"] == 3
    w.apply_grants(first.of(ReserveIp))
    second = build_plan(cfg, w.inventory(), "web", "planned")
    assert [(c.vm, c.address) for c in second.of(ReserveIp)] == [(c.vm, c.address) for c in first.of(ReserveIp)]
    assert all(c.existing for c in second.of(ReserveIp))
    assert second.counts()["reserve"] == 0
    w.apply_grants(second.of(ReserveIp))
    assert len(w.grants) == 4  # 3 of ours + the foreign one


def test_existing_grants_match_the_same_address_first_then_in_order() -> None:
    w = standard_world()
    w.vm("two01", {"nic0": ("prod", "web", ["192.168.1.40/24", "192.168.1.41/24"])})
    # the NIC already holds .41 (config 1's source) and .99 (from an earlier fallback)
    w.grant(B, "web-pool", "192.168.1.99", "two01/nic0@r").grant(B, "web-pool", "192.168.1.41", "two01/nic0@r")
    cfg = standard_config(plans=[plan("web", ["web01", "web02", "two01"])])
    p = build_plan(cfg, w.inventory(), "web", "planned")
    assert (reserve(p, "two01", ip_index=0).address, reserve(p, "two01", ip_index=0).existing) == ("192.168.1.99", True)
    assert (reserve(p, "two01", ip_index=1).address, reserve(p, "two01", ip_index=1).existing) == ("192.168.1.41", True)
    assert [c.vm for c in p.of(ReserveIp) if not c.existing] == ["web01", "web02"]


def test_an_existing_grant_elsewhere_in_the_pool_is_reused_not_doubled() -> None:
    w = standard_world().grant(B, "web-pool", "192.168.1.77", "web01/nic0@r")
    p = build_plan(standard_config(), w.inventory(), "web", "planned")
    r = reserve(p, "web01")
    assert (r.address, r.existing) == ("192.168.1.77", True)
    assert not [c for c in p.of(ReserveIp) if c.address == "192.168.1.20"]


def test_surplus_and_foreign_pool_grants_are_noted_and_left_alone() -> None:
    w = standard_world()
    w.grant(B, "web-pool", "192.168.1.20", "web01/nic0@r").grant(B, "web-pool", "192.168.1.88", "web01/nic0@r")
    w.grant(B, "db-pool", "192.168.2.50", "web01/nic0@r")
    p = build_plan(standard_config(), w.inventory(), "web", "planned")
    assert reserve(p, "web01").address == "192.168.1.20"
    assert any("192.168.1.88" in n and "left alone" in n for n in p.notes)
    assert any("192.168.2.50" in n and "db-pool" in n for n in p.notes)


# ---------------------------------------------------------------------- failover IP


def test_failover_ip_already_set_is_not_set_again() -> None:
    w = standard_world()
    w.failover_config("web01", "nic0", f"{B}-host1", [("192.168.1.20", 24, "192.168.1.1", ("192.168.1.53",))])
    w.failover_config("web02", "nic0", f"{B}-host1", [("192.168.1.99", 24, None, ())])
    p = build_plan(standard_config(), w.inventory(), "web", "planned")
    assert not [c for c in p.of(SetFailoverIp) if c.vm == "web01"]
    s = set_ip(p, "web02")
    assert [x.address for x in s.previous] == ["192.168.1.99"]
    assert [x.address for x in s.settings] == ["192.168.1.21"]


def test_a_second_plan_after_success_has_nothing_to_do() -> None:
    w = standard_world()
    w.route("r-a", "192.168.1.0/24", "10.0.0.1").route("r-c", "192.168.1.0/24", "10.9.0.1")
    cfg = standard_config()
    first = build_plan(cfg, w.inventory(), "web", "planned")
    assert first.counts()["route"] == 1 and first.counts()["dns"] > 0
    # apply every change to the world the way the engine would
    w.apply_grants(first.of(ReserveIp))
    for c in first.of(SetFailoverIp):
        w.failover_config(c.vm, c.nic, c.host,
                          [(s.address, s.prefix_length, s.gateway, s.dns_servers) for s in c.settings])
    replicas = {(v.site, v.name): v for v in w.vms if v.role == "replica"}
    for c in first.of(ConnectNic):
        vm = replicas[(c.site, c.vm)]
        nics = tuple(n.model_copy(update={"vm_network": c.vm_network, "vm_subnet": c.vm_subnet})
                     if n.name == c.nic else n for n in vm.nics)
        w.vms[w.vms.index(vm)] = replicas[(c.site, c.vm)] = vm.model_copy(update={"nics": nics})
    for m in first.of(MoveRoute):
        gone = {(r.router, r.next_hop) for r in m.withdraw}
        w.routes = [r for r in w.routes if (r.router, r.next_hop) not in gone]
        w.routes += list(m.announce)
    for c in first.of(DnsChange):
        w.record_sets = [r for r in w.record_sets if (r.zone, r.name, r.type) != (c.zone, c.name, c.type)]
        if c.new_values:
            w.record(c.zone, c.name, c.type.value, c.new_values, c.ttl)
    second = build_plan(cfg, w.inventory(), "web", "planned")
    assert all(c.existing for c in second.of(ReserveIp))
    assert [c for c in second.changes if not isinstance(c, ReserveIp)] == []
    assert second.counts() == dict.fromkeys(second.counts(), 0)


# ------------------------------------------------------------------------- refusals


def test_unknown_plan_is_refused() -> None:
    err = refused(standard_config(), standard_world().inventory(), name="nope")
    assert isinstance(err, RefusedError) and err.code == "plan_refused"
    assert err.codes == ["unknown_plan"]
    assert "nope" in err.reasons[0].message and "web" in err.reasons[0].message


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        build_plan(standard_config(), standard_world().inventory(), "web", "sideways")  # type: ignore[arg-type]


def test_vm_missing_unreplicated_or_without_replica_is_refused() -> None:
    w = standard_world()
    w.vm("lonely", {"nic0": ("prod", "web", ["192.168.1.60/24"])}, replicated=False)
    w.vm("noreplica", {"nic0": ("prod", "web", ["192.168.1.61/24"])})
    w.vms = [v for v in w.vms if not (v.name == "noreplica" and v.site == B)]
    cfg = standard_config(subnets=[whole_subnet("192.168.1.0/24", stretched=True)],
                          plans=[plan("web", ["web01", "ghost", "lonely", "noreplica"])])
    err = refused(cfg, w.inventory())
    assert err.codes == ["vm_not_found", "vm_not_replicated", "replica_not_found"]
    assert [r.fields["vm"] for r in err.reasons] == ["ghost", "lonely", "noreplica"]


def test_replica_without_the_nic_is_refused() -> None:
    w = standard_world()
    w.vm("twonic", {"nic0": ("prod", "web", ["192.168.1.60/24"]), "nic1": ("prod", "web", ["192.168.1.61/24"])})
    replica = next(v for v in w.vms if v.name == "twonic" and v.site == B)
    w.vms[w.vms.index(replica)] = replica.model_copy(update={"nics": replica.nics[:1]})
    cfg = standard_config(subnets=[whole_subnet("192.168.1.0/24", stretched=True)], plans=[plan("web", ["twonic"])])
    err = refused(cfg, w.inventory())
    assert err.codes == ["replica_nic_not_found"] and err.reasons[0].fields["nic"] == "nic1"


def test_vms_going_in_different_directions_are_refused() -> None:
    w = standard_world()
    w.network(B, "app-b", {"s": "10.5.0.0/24"})
    w.vm("back01", {"nic0": ("app-b", "s", ["dhcp"])}, src=B, dst=A)
    cfg = standard_config(plans=[plan("web", ["web01", "web02", "back01"])])
    err = refused(cfg, w.inventory())
    assert "mixed_directions" in err.codes
    r = err.reasons[err.codes.index("mixed_directions")]
    assert r.fields["directions"] == {f"{A}->{B}": ["web01", "web02"], f"{B}->{A}": ["back01"]}


def test_static_nic_without_mapping_is_refused_with_the_documented_message() -> None:
    w = standard_world()
    w.network(A, "lab", {"s": "10.7.0.0/24"})
    w.vm("lab01", {"nic0": ("lab", "s", ["10.7.0.5/24"])})
    cfg = standard_config(plans=[plan("web", ["lab01"])])
    err = refused(cfg, w.inventory())
    assert err.codes == ["no_network_mapping"]
    assert err.reasons[0].message == (
        "VM lab01 NIC nic0 on network lab has no network mapping: the replica would not be connected"
    )
    assert err.reasons[0].fields == {"vm": "lab01", "nic": "nic0", "vm_network": "lab", "site": A}


def test_dhcp_nic_without_mapping_is_only_a_note() -> None:
    w = standard_world()
    w.network(A, "lab", {"s": "10.7.0.0/24"})
    w.vm("lab01", {"nic0": ("lab", "s", ["dhcp"]), "nic1": (None, None, [])})
    cfg = standard_config(plans=[plan("web", ["lab01"])])
    p = build_plan(cfg, w.inventory(), "web", "planned")
    assert p.changes == ()
    assert "VM lab01 NIC nic0 on network lab has no network mapping: the replica would not be connected" in p.notes
    assert any("lab01 NIC nic1 is not connected" in n for n in p.notes)


def test_mapped_target_network_missing_is_refused() -> None:
    w = standard_world()
    w.networks = [n for n in w.networks if n.name != "app-dr"]
    err = refused(standard_config(), w.inventory())
    assert err.codes == ["target_network_not_found"]
    assert err.reasons[0].fields["nics"] == ["app01/nic0"]


def test_static_nic_on_a_target_network_without_pool_is_refused() -> None:
    w = standard_world()
    w.pools = [p for p in w.pools if p.name != "web-pool"]
    err = refused(standard_config(), w.inventory())
    assert err.codes == ["no_static_pool"]
    r = err.reasons[0]
    assert "IP address allocation will fail" in r.message and "prod-dr" in r.message
    assert r.fields["nics"] == ["web01/nic0#0", "web02/nic0#0"]


def test_wnv_target_without_pool_is_refused_even_for_dhcp() -> None:
    w = World()
    w.network(A, "n", {"s": "10.0.0.0/24"}).network(B, "wnv", {"s": "10.0.0.0/24"}, isolation=Isolation.WNV)
    w.vm("d1", {"nic0": ("n", "s", ["dhcp"])})
    cfg = config(mappings=[mapping("n", "wnv", "retain")], plans=[plan("x", ["d1"])])
    err = refused(cfg, w.inventory(), "x")
    assert err.codes == ["wnv_target_without_pool"]
    assert err.reasons[0].fields["vm_network"] == "wnv"


def test_vlan_target_without_pool_is_fine_for_dhcp() -> None:
    w = World()
    w.network(A, "n", {"s": "10.0.0.0/24"}).network(B, "vlan", {"s": "10.0.0.0/24"})
    w.vm("d1", {"nic0": ("n", "s", ["dhcp"])})
    cfg = config(mappings=[mapping("n", "vlan", "retain")], plans=[plan("x", ["d1"])])
    assert len(build_plan(cfg, w.inventory(), "x", "planned").of(ConnectNic)) == 1


def test_exhausted_pool_is_refused_naming_the_pool_and_the_nics_left_without() -> None:
    w = World()
    w.network(A, "n", {"s": "10.0.0.0/24"}).network(B, "n-dr", {"s": "172.16.0.0/24"})
    w.pool(B, "n-dr", "s", "172.16.0.0/24", "172.16.0.10", "172.16.0.12", name="tiny", reserved=("172.16.0.11",))
    for i in range(4):
        w.vm(f"vm{i}", {"nic0": ("n", "s", [f"10.0.0.{10 + i}/24"])})
    cfg = config(mappings=[mapping("n", "n-dr", "change")], plans=[plan("x", [f"vm{i}" for i in range(4)])])
    err = refused(cfg, w.inventory(), "x")
    assert err.codes == ["pool_exhausted"]
    r = err.reasons[0]
    assert r.fields["pool"] == "tiny" and r.fields["nics"] == ["vm2/nic0#0", "vm3/nic0#0"]
    assert "tiny" in r.message and "vm2/nic0#0" in r.message


def test_ambiguous_reverse_mapping_is_refused() -> None:
    w = World()
    w.network(A, "a1", {"s": "10.0.0.0/24"}).network(A, "a2", {"s": "10.0.1.0/24"})
    w.network(B, "shared", {"s": "10.0.0.0/24"})
    w.vm("vm1", {"nic0": ("shared", "s", ["dhcp"])}, src=B, dst=A)
    cfg = config(mappings=[mapping("a1", "shared", "change"), mapping("a2", "shared", "change")],
                 plans=[plan("x", ["vm1"])])
    err = refused(cfg, w.inventory(), "x")
    assert err.codes == ["ambiguous_reverse_mapping"] and err.reasons[0].fields["mappings"] == [0, 1]


def test_every_refusal_is_reported_at_once() -> None:
    w = standard_world()
    w.pools = [p for p in w.pools if p.name != "app-pool"]
    w.network(A, "lab", {"s": "10.7.0.0/24"})
    w.vm("lab01", {"nic0": ("lab", "s", ["10.7.0.5/24"])})
    w.vm("web03", {"nic0": ("prod", "web", ["192.168.1.23/24"])})
    cfg = standard_config(plans=[plan("web", ["web01", "web02", "ghost"], ["app01", "lab01"])])
    err = refused(cfg, w.inventory())
    assert err.codes == ["vm_not_found", "no_static_pool", "no_network_mapping", "partial_subnet_failover"]
    assert err.message.count("\n- [") == 4
    assert err.to_dict()["code"] == "plan_refused"
    assert [r["code"] for r in err.to_dict()["reasons"]] == err.codes


def test_plan_refused_survives_pickling() -> None:
    err = refused(standard_config(), standard_world().inventory(), name="nope")
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, PlanRefused) and again.codes == err.codes and again.to_dict() == err.to_dict()


# ---------------------------------------------------------------- determinism, output


def _shuffled(inv: Inventory, seed: int) -> Inventory:
    rnd = random.Random(seed)

    def mix(items):
        items = list(items)
        rnd.shuffle(items)
        return tuple(items)

    # Order of VM networks' subnets and of pools is meaningful (the "first subnet" rule), the
    # order of everything else is not.
    return inv.model_copy(update={
        "vms": mix(inv.vms), "grants": mix(inv.grants), "replications": mix(inv.replications),
        "record_sets": mix(inv.record_sets), "routes": mix(inv.routes), "failover_configs": mix(inv.failover_configs),
        "vm_networks": mix(inv.vm_networks),
    })


def test_same_input_same_plan_and_checksum_whatever_the_inventory_order() -> None:
    w = standard_world().grant(B, "web-pool", "192.168.1.20", "someone-else")
    w.route("r-a", "192.168.1.0/24", "10.0.0.1")
    w.record("corp.example.", "app01.corp.example.", "A", ("192.168.3.30",))
    inv, cfg = w.inventory(), standard_config()
    first = build_plan(cfg, inv, "web", "planned")
    assert build_plan(cfg, inv, "web", "planned") == first
    for seed in range(5):
        again = build_plan(cfg, _shuffled(inv, seed), "web", "planned")
        assert again.checksum() == first.checksum()
        assert again.notes == first.notes


def test_changes_are_sorted_and_the_json_form_is_complete() -> None:
    p = build_plan(standard_config(), standard_world().inventory(), "web", "unplanned")
    assert p.changes == Plan.sort_changes(list(reversed(p.changes)))
    body = p.to_json()
    assert body["kind"] == "unplanned" and len(body["changes"]) == len(p.changes)
    assert body["summary"] == p.summary() and body["checksum"].startswith("sha256:")


def test_diff_shows_every_change_grouped_by_group_and_vm_with_the_summary_last() -> None:
    w = standard_world().grant(B, "web-pool", "192.168.1.21", "someone-else")
    w.grant(B, "web-pool", "192.168.1.20", "web01/nic0@r")
    w.route("r-a", "192.168.1.0/24", "10.0.0.1").route("r-c", "192.168.1.0/24", "10.9.0.1")
    w.record("corp.example.", "app01.corp.example.", "A", ("192.168.3.30",), ttl=3600)
    w.failover_config("app01", "nic0", f"{B}-host1", [("172.16.1.49", 24, None, ())])
    p = build_plan(standard_config(), w.inventory(), "web", "planned")
    text = render_diff(p)
    lines = text.splitlines()
    assert lines[-1] == p.summary()
    assert lines[0] == f"planned failover of plan web: {A} -> {B}"
    assert text.index("group 1 'g1'") < text.index("VM web01") < text.index("VM web02") < text.index("group 2 'g2'")
    assert text.index("group 2 'g2'") < text.index("VM app01")
    assert "= reuse existing grant 192.168.1.20 in pool web-pool" in text and "kept" in text
    assert "+ reserve 192.168.1.10 in pool web-pool at bravo for nic0 ip 0, changed from 192.168.1.21" in text
    assert "failover IP of nic0 on bravo-host1: 172.16.1.49/24 -> 172.16.1.10/24 gw 172.16.1.1 dns 172.16.1.53" in text
    assert ("~ dns A app01.corp.example. in zone corp.example. on ns-prod: 192.168.3.30 -> 172.16.1.10 "
            "(ttl 3600 -> 60)") in text
    assert "- withdraw on r-a: 192.168.1.0/24 via 10.0.0.1 metric 256" in text
    assert "+ announce on r-b: 192.168.1.0/24 via 10.0.1.1 metric 256" in text
    assert ("- withdraw on r-c: 192.168.1.0/24 via 10.9.0.1" in text
            and "+ announce on r-c: 192.168.1.0/24 via 10.9.1.1" in text)
    for c in p.changes:
        if isinstance(c, ReserveIp):
            assert f"{c.address} in pool {c.pool}" in text
        elif isinstance(c, DnsChange):
            assert f"dns {c.type.value} {c.name}" in text
        elif isinstance(c, SetFailoverIp):
            assert f"failover IP of {c.nic} on {c.host}" in text
        elif isinstance(c, ConnectNic):
            assert f"connect replica {c.nic} to network {c.vm_network} subnet {c.vm_subnet}" in text
    for n in p.notes:
        assert f"  - {n}" in text


def test_sort_changes_orders_exactly_as_type_key_then_canonical_json() -> None:
    from agent.domain.plan import _ORDER, _canonical, change_to_json

    p = build_plan(standard_config(), standard_world().grant(B, "web-pool", "192.168.1.20", "x").inventory(),
                   "web", "planned")
    # ties on (type, sort_key) that only the JSON form breaks
    ties = [ReserveIp(site=B, pool=f"p{i}", address=f"10.0.0.{i}", vm="web01", nic="nic0", nic_id="n", ip_index=0)
            for i in (3, 1, 2)]
    changes = list(p.changes) + ties
    rnd = random.Random(7)
    for _ in range(5):
        rnd.shuffle(changes)
        expected = tuple(sorted(changes, key=lambda c: (_ORDER[c.kind], c.sort_key, _canonical(change_to_json(c)))))
        assert Plan.sort_changes(changes) == expected

"""build_plan: whole-subnet route moves and the partial-subnet rule; DNS (A, AAAA, PTR);
check_config_against_inventory."""

from __future__ import annotations

import dns.reversename
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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
    whole_subnet,
)

from agent.domain.model import Route
from agent.domain.plan import DnsChange, MoveRoute
from agent.domain.planning import build_plan, host_name, ptr_name
from agent.domain.validation import ConfigIssue, PlanRefused, check_config_against_inventory


def refused(cfg, inv, name: str = "web", kind: str = "planned") -> PlanRefused:
    with pytest.raises(PlanRefused) as info:
        build_plan(cfg, inv, name, kind)
    return info.value


def dns_changes(p, type_: str | None = None) -> list[DnsChange]:
    return [c for c in p.of(DnsChange) if type_ is None or c.type == type_]


# --------------------------------------------------------------------------- routes


def test_a_retained_subnet_moves_whole_with_third_site_repointed() -> None:
    w = standard_world()
    w.route("r-a", "192.168.1.0/24", "10.0.0.1").route("r-c", "192.168.1.0/24", "10.9.0.1")
    p = build_plan(standard_config(), w.inventory(), "web", "planned")
    [move] = p.of(MoveRoute)
    assert (move.prefix, move.from_site, move.to_site) == ("192.168.1.0/24", A, B)
    assert move.withdraw == (Route(router="r-a", prefix="192.168.1.0/24", next_hop="10.0.0.1"),
                             Route(router="r-c", prefix="192.168.1.0/24", next_hop="10.9.0.1"))
    assert move.announce == (Route(router="r-b", prefix="192.168.1.0/24", next_hop="10.0.1.1"),
                             Route(router="r-c", prefix="192.168.1.0/24", next_hop="10.9.1.1"))


def test_route_parts_that_already_hold_are_left_out() -> None:
    w = standard_world()
    # r-a already withdrawn, r-b already announced; only the third site is left to repoint
    w.route("r-b", "192.168.1.0/24", "10.0.1.1").route("r-c", "192.168.1.0/24", "10.9.0.1")
    [move] = build_plan(standard_config(), w.inventory(), "web", "unplanned").of(MoveRoute)
    assert [(r.router, r.next_hop) for r in move.withdraw] == [("r-c", "10.9.0.1")]
    assert [(r.router, r.next_hop) for r in move.announce] == [("r-c", "10.9.1.1")]


def test_routes_already_moved_need_no_change() -> None:
    w = standard_world()
    w.route("r-b", "192.168.1.0/24", "10.0.1.1").route("r-c", "192.168.1.0/24", "10.9.1.1")
    p = build_plan(standard_config(), w.inventory(), "web", "planned")
    assert p.of(MoveRoute) == []
    assert "subnet 192.168.1.0/24: routes already point at bravo" in p.notes


def test_interface_routes_and_metrics_are_carried() -> None:
    sub = {"prefix": "192.168.1.0/24",
           "announcements": {A: [{"router": "r-a", "interface": "vlan10", "metric": 10}],
                             B: [{"router": "r-b", "interface": "vlan20", "metric": 20}]}}
    w = standard_world().route("r-a", "192.168.1.0/24", interface="vlan10", metric=10)
    [move] = build_plan(standard_config(subnets=[sub]), w.inventory(), "web", "planned").of(MoveRoute)
    assert move.withdraw == (Route(router="r-a", prefix="192.168.1.0/24", interface="vlan10", metric=10),)
    assert move.announce == (Route(router="r-b", prefix="192.168.1.0/24", interface="vlan20", metric=20),)


def test_only_subnets_holding_retained_addresses_move() -> None:
    p = build_plan(standard_config(), standard_world().inventory(), "web", "planned")
    assert [m.prefix for m in p.of(MoveRoute)] == ["192.168.1.0/24"]  # not the db subnet, not app's


def test_a_stretched_subnet_needs_no_route_and_may_fail_over_in_part() -> None:
    cfg = standard_config(subnets=[whole_subnet("192.168.1.0/24", stretched=True)], plans=[plan("web", ["web01"])])
    p = build_plan(cfg, standard_world().inventory(), "web", "planned")
    assert p.of(MoveRoute) == []
    assert [c.address for c in p.changes if getattr(c, "address", None)] == ["192.168.1.20"]


def test_partial_failover_of_a_retained_subnet_is_refused_naming_the_vms_left_behind() -> None:
    w = standard_world()
    w.vm("web03", {"nic0": ("prod", "web", ["192.168.1.23/24"])})
    w.vm("infra", {"nic0": ("prod", "web", ["dhcp"]), "nic1": ("prod", "web", ["192.168.1.5/24"])}, replicated=False)
    # not left behind: DHCP only; at the other site; a replica; a test VM
    w.vm("dh", {"nic0": ("prod", "web", ["dhcp"])})
    w.vm("elsewhere", {"nic0": ("prod-dr", "web", ["192.168.1.99/24"])}, src=B, dst=A)
    w.test_vm("web01", A, {"nic0": ("iso", "web", ["192.168.1.20/24"])})
    cfg = standard_config(plans=[plan("web", ["web01"])])
    err = refused(cfg, w.inventory())
    assert err.codes == ["partial_subnet_failover"]
    r = err.reasons[0]
    assert r.fields["prefix"] == "192.168.1.0/24" and r.fields["site"] == A
    assert r.fields["vms"] == ["web02", "web03", "infra"]
    assert r.fields["moving"] == ["web01"]
    assert "web02, web03, infra" in r.message


def test_the_partial_subnet_rule_is_not_applied_to_test_failovers() -> None:
    cfg = standard_config(plans=[plan("web", ["web01"])],
                          mappings=[mapping("prod", "prod-dr", "retain", test={"mode": "create"})])
    p = build_plan(cfg, standard_world().inventory(), "web", "test")
    assert p.of(MoveRoute) == []


def test_a_retained_address_in_an_undeclared_subnet_is_refused() -> None:
    w = standard_world()
    w.vm("db01", {"nic0": ("prod", "db", ["192.168.2.20/24"])})
    cfg = standard_config(subnets=[whole_subnet("192.168.1.0/24")], plans=[plan("web", ["web01", "web02", "db01"])])
    err = refused(cfg, w.inventory())
    assert err.codes == ["retained_subnet_undeclared"]
    r = err.reasons[0]
    assert r.fields["prefix"] == "192.168.2.0/24"
    assert "declare 192.168.2.0/24 with its routes" in r.message and "db01" in r.message


def test_a_changed_address_needs_no_declared_subnet() -> None:
    cfg = standard_config(subnets=[], plans=[plan("web", ["app01"])])
    p = build_plan(cfg, standard_world().inventory(), "web", "planned")
    assert p.of(MoveRoute) == []


# ------------------------------------------------------------------------------ DNS


def test_changed_address_updates_a_and_ptr_with_the_failover_ttl() -> None:
    w = standard_world()
    w.record("corp.example.", "app01.corp.example.", "A", ("192.168.3.30",), ttl=3600)
    w.record("168.192.in-addr.arpa.", "30.3.168.192.in-addr.arpa.", "PTR", ("app01.corp.example.",), ttl=3600)
    p = build_plan(standard_config(), w.inventory(), "web", "planned")
    [a] = dns_changes(p, "A")
    assert (a.server, a.zone, a.name, a.vm, a.purpose) == (
        "ns-prod", "corp.example.", "app01.corp.example.", "app01", "failover",
    )
    assert (a.old_values, a.new_values, a.ttl, a.old_ttl) == (("192.168.3.30",), ("172.16.1.10",), 60, 3600)
    ptrs = {c.name: c for c in dns_changes(p, "PTR")}
    gone = ptrs["30.3.168.192.in-addr.arpa."]
    assert (gone.zone, gone.old_values, gone.new_values) == ("168.192.in-addr.arpa.", ("app01.corp.example.",), ())
    new = ptrs["10.1.16.172.in-addr.arpa."]
    assert (new.zone, new.old_values, new.new_values, new.ttl, new.old_ttl) == (
        "16.172.in-addr.arpa.", (), ("app01.corp.example.",), 60, None)


def test_a_retained_address_needs_no_dns_change() -> None:
    p = build_plan(standard_config(plans=[plan("web", ["web01", "web02"])]), standard_world().inventory(),
                   "web", "planned")
    assert dns_changes(p) == []


def test_a_record_set_holds_every_new_address_of_its_family() -> None:
    w = standard_world()
    w.pool(B, "app-dr", "app-dr", "2001:db8:16::/64", "2001:db8:16::10", "2001:db8:16::ff", name="app-pool-v6")
    w.vm("dual01", {"nic0": ("app", "app", ["192.168.3.40/24", "192.168.3.41/24", "2001:db8:3::40/64"])})
    w.record("corp.example.", "dual01.corp.example.", "A", ("192.168.3.40", "192.168.3.41"))
    cfg = standard_config(plans=[plan("web", ["dual01"])])
    p = build_plan(cfg, w.inventory(), "web", "planned")
    [a] = dns_changes(p, "A")
    assert a.new_values == ("172.16.1.10", "172.16.1.11") and a.old_values == ("192.168.3.40", "192.168.3.41")
    [aaaa] = dns_changes(p, "AAAA")
    assert (aaaa.old_values, aaaa.new_values, aaaa.old_ttl) == ((), ("2001:db8:16::10",), None)
    ptr6 = [c for c in dns_changes(p, "PTR") if c.name.endswith("ip6.arpa.")]
    # the old IPv6 address has no PTR record: only the new one is added
    assert [(c.name, c.new_values) for c in ptr6] == [
        (dns.reversename.from_address("2001:db8:16::10").to_text(), ("dual01.corp.example.",))]
    assert len(dns_changes(p, "PTR")) == 3


def test_ipv6_ptr_in_a_configured_reverse_zone() -> None:
    w = World()
    w.network(A, "v6", {"s": "2001:db8:a::/64"}).network(B, "v6-dr", {"s": "2001:db8:b::/64"})
    w.pool(B, "v6-dr", "s", "2001:db8:b::/64", "2001:db8:b::100", "2001:db8:b::1ff", name="p6")
    w.vm("vm6", {"nic0": ("v6", "s", ["2001:db8:a::5/64"])})
    cfg = config(mappings=[mapping("v6", "v6-dr", "change")], plans=[plan("x", ["vm6"])], dns=DNS_PROD)
    p = build_plan(cfg, w.inventory(), "x", "planned")
    [aaaa] = dns_changes(p, "AAAA")
    assert aaaa.new_values == ("2001:db8:b::100",)
    [ptr] = dns_changes(p, "PTR")
    assert ptr.name == dns.reversename.from_address("2001:db8:b::100").to_text()
    assert ptr.zone == "8.b.d.0.1.0.0.2.ip6.arpa." and ptr.new_values == ("vm6.corp.example.",)


def test_self_registering_vms_are_left_alone() -> None:
    dns_cfg = dict(DNS_PROD, self_registering_vms=["app01"])
    p = build_plan(standard_config(dns=dns_cfg), standard_world().inventory(), "web", "planned")
    assert dns_changes(p) == []
    assert "VMs that register themselves in DNS, records left alone: app01" in p.notes
    assert [v.self_registering for v in p.vms] == [False, False, True]


def test_host_name_from_hostnames_else_default_domain_and_the_longest_zone_wins() -> None:
    dns_cfg = dict(DNS_PROD, hostnames={"app01": "App-One.DR.corp.example"},
                   zones=DNS_PROD["zones"] + [{"name": "dr.corp.example", "server": "ns-prod"}])
    cfg = standard_config(dns=dns_cfg)
    assert host_name(cfg, "app01") == "app-one.dr.corp.example."
    assert host_name(cfg, "Web01") == "web01.corp.example."
    [a] = dns_changes(build_plan(cfg, standard_world().inventory(), "web", "planned"), "A")
    assert (a.name, a.zone) == ("app-one.dr.corp.example.", "dr.corp.example.")


def test_a_name_in_no_configured_zone_is_a_note() -> None:
    dns_cfg = dict(DNS_PROD, hostnames={"app01": "app01.elsewhere.example"})
    p = build_plan(standard_config(dns=dns_cfg), standard_world().inventory(), "web", "planned")
    assert dns_changes(p, "A") == []
    assert "names in no configured production DNS zone, DNS not updated: app01.elsewhere.example. (app01)" in p.notes
    assert len(dns_changes(p, "PTR")) == 1  # the reverse zone is configured


def test_no_host_name_is_a_note() -> None:
    dns_cfg = {k: v for k, v in DNS_PROD.items() if k != "default_domain"}
    p = build_plan(standard_config(dns=dns_cfg), standard_world().inventory(), "web", "planned")
    assert dns_changes(p) == []
    assert any("no host name" in n for n in p.notes)


def test_dns_that_already_holds_is_not_changed_again() -> None:
    w = standard_world()
    w.record("corp.example.", "app01.corp.example.", "A", ("172.16.1.10",), ttl=60)
    w.record("16.172.in-addr.arpa.", "10.1.16.172.in-addr.arpa.", "PTR", ("app01.corp.example.",), ttl=60)
    assert dns_changes(build_plan(standard_config(), w.inventory(), "web", "planned")) == []


def test_a_foreign_ptr_on_the_old_address_is_left_alone() -> None:
    w = standard_world()
    w.record("168.192.in-addr.arpa.", "30.3.168.192.in-addr.arpa.", "PTR", ("someone.corp.example.",))
    p = build_plan(standard_config(), w.inventory(), "web", "planned")
    assert [c.name for c in dns_changes(p, "PTR")] == ["10.1.16.172.in-addr.arpa."]


def test_test_dns_servers_are_not_used_by_a_real_failover() -> None:
    dns_cfg = dict(DNS_PROD, zones=[{"name": "corp.example", "server": "ns-test"}])
    p = build_plan(standard_config(dns=dns_cfg), standard_world().inventory(), "web", "planned")
    assert dns_changes(p) == []


@settings(max_examples=60, deadline=None)
@given(st.ip_addresses())
def test_ptr_name_matches_dnspython(address) -> None:
    assert ptr_name(str(address)) == dns.reversename.from_address(str(address)).to_text()


# ------------------------------------------------------------- config vs inventory


def test_check_config_against_inventory_reports_key_paths() -> None:
    w = standard_world()
    w.network(B, "open", {"s": "10.0.0.0/24"})
    from agent.domain.model import Isolation
    w.networks[-1] = w.networks[-1].model_copy(update={"isolation": Isolation.NO_ISOLATION})
    w.vm("lonely", {"nic0": ("prod", "web", ["dhcp"])}, replicated=False)
    cfg = config(
        mappings=[
            mapping("prod", "prod-dr", "retain"),
            mapping("nosuch", "nowhere", "change"),
            mapping("app", "app-dr", "change", test={"mode": "existing", "vm_network": "missing-iso"}),
            mapping("prod-x", "prod-dr", "change", test={"mode": "existing", "vm_network": "open"}),
        ],
        plans=[plan("p", ["web01", "ghost"], ["lonely"])],
    )
    issues = check_config_against_inventory(cfg, w.inventory())
    assert all(isinstance(i, ConfigIssue) for i in issues)
    assert [i.path for i in issues] == [
        "network_mappings[1].source.vm_network",
        "network_mappings[1].target.vm_network",
        "network_mappings[2].test_network.vm_network",
        "network_mappings[3].source.vm_network",
        "network_mappings[3].test_network.vm_network",
        "recovery_plans[0].groups[0].vms[1]",
        "recovery_plans[0].groups[1].vms[0]",
    ]
    messages = {i.path: i.message for i in issues}
    assert "'nosuch' does not exist at site alpha" in messages["network_mappings[1].source.vm_network"]
    assert "not isolated" in messages["network_mappings[3].test_network.vm_network"]
    assert "no Hyper-V Replica" in messages["recovery_plans[0].groups[1].vms[0]"]


def test_check_config_against_inventory_is_quiet_when_all_is_well() -> None:
    assert check_config_against_inventory(standard_config(), standard_world().inventory()) == []


def test_a_vm_without_a_valid_dns_name_refuses_the_plan_before_anything_is_built() -> None:
    # A config built in code skips the load-time check; the planner still refuses, every VM named.
    cfg = standard_config()
    too_long = ".".join(["c" * 63] * 4) + "."
    cfg = cfg.model_copy(update={"dns": cfg.dns.model_copy(update={"default_domain": too_long})})
    reasons = refused(cfg, standard_world().inventory()).reasons
    assert {r.code for r in reasons} == {"invalid_dns_name"}
    assert {r.fields["vm"] for r in reasons} == {"web01", "web02", "app01"}
    assert all("over the 253" in r.message and "dns.hostnames" in r.message for r in reasons)

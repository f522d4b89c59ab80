"""build_plan with address overrides: the override is the address, in the pool that holds it;
grants are reused, never doubled; failbacks and test networks without addresses say why an
override does not apply; the stored plan keeps its checksum."""

from __future__ import annotations

import pytest
from test_planning_world import A, B, World, mapping, plan, standard_config, standard_world

from agent.config import AgentConfig
from agent.domain.plan import ReserveIp, change_to_json, render_diff
from agent.domain.planning import build_plan
from agent.domain.validation import PlanRefused
from agent.engine.operations import _reserve_items
from agent.engine.planio import plan_from_json


def with_overrides(cfg: AgentConfig, *overrides: dict) -> AgentConfig:
    return AgentConfig.model_validate({**cfg.model_dump(mode="json"), "address_overrides": list(overrides)})


def reserve(p, vm: str, purpose: str = "failover", ip_index: int = 0) -> ReserveIp:
    [hit] = [c for c in p.of(ReserveIp) if c.vm == vm and c.purpose == purpose and c.ip_index == ip_index]
    return hit


def refused(cfg, inv, name: str = "web", kind: str = "planned") -> PlanRefused:
    with pytest.raises(PlanRefused) as info:
        build_plan(cfg, inv, name, kind)
    return info.value


def test_an_override_is_reserved_exactly_and_never_swapped() -> None:
    cfg = with_overrides(standard_config(), {"vm": "app01", "nic": "nic0", "failover": "172.16.1.40"})
    p = build_plan(cfg, standard_world().inventory(), "web", "planned")
    r = reserve(p, "app01")
    assert (r.pool, r.address, r.override, r.existing) == ("app-pool", "172.16.1.40", True, False)
    [item] = _reserve_items([r], test=False)
    assert item.flexible is False
    assert "172.16.1.40 in pool app-pool" in render_diff(p) and "from an address override" in render_diff(p)
    # without the override, the lowest free address, chosen freely
    plain = reserve(build_plan(standard_config(), standard_world().inventory(), "web", "planned"), "app01")
    assert (plain.address, plain.override) == ("172.16.1.10", False)
    assert _reserve_items([plain], test=False)[0].flexible is True


def test_the_pool_whose_range_holds_the_override_is_taken() -> None:
    w = standard_world()
    w.pool(B, "app-dr", "app-dr", "172.16.1.0/24", "172.16.1.100", "172.16.1.120", name="app-pool-2")
    cfg = with_overrides(standard_config(), {"vm": "app01", "nic": "nic0", "failover": "172.16.1.110"})
    assert reserve(build_plan(cfg, w.inventory(), "web", "planned"), "app01").pool == "app-pool-2"


def test_planning_again_after_a_run_reuses_the_override_grant() -> None:
    w = standard_world()
    cfg = with_overrides(standard_config(), {"vm": "app01", "nic": "nic0", "failover": "172.16.1.40"})
    first = build_plan(cfg, w.inventory(), "web", "planned")
    w.apply_grants(first.of(ReserveIp))
    again = build_plan(cfg, w.inventory(), "web", "planned")
    r = reserve(again, "app01")
    assert (r.address, r.existing) == ("172.16.1.40", True)
    assert again.counts()["reserve"] == 0


def test_an_override_set_after_a_reservation_leaves_the_old_grant_alone_and_says_so() -> None:
    w = standard_world().grant(B, "app-pool", "172.16.1.10", "app01/nic0@r")
    cfg = with_overrides(standard_config(), {"vm": "app01", "nic": "nic0", "failover": "172.16.1.40"})
    p = build_plan(cfg, w.inventory(), "web", "planned")
    assert reserve(p, "app01").address == "172.16.1.40"
    assert any("172.16.1.10" in n and "app01/nic0@r" in n and "left alone" in n for n in p.notes), p.notes


def test_an_address_held_by_a_vm_at_the_target_site_is_refused() -> None:
    w = standard_world()
    w.vm("native", {"nic0": ("app-dr", "app-dr", ["172.16.1.40/24"])}, src=B, replicated=False)
    cfg = with_overrides(standard_config(), {"vm": "app01", "nic": "nic0", "failover": "172.16.1.40"})
    r = refused(cfg, w.inventory())
    assert r.codes == ["override_taken"]
    assert r.reasons[0].fields["pool"] == "app-pool"
    assert "is the address of VM native" in r.reasons[0].message
    # The same address on another VM network is another address space (WNV, isolated networks).
    w = standard_world()
    w.network(B, "lab", {"lab": "172.16.1.0/24"})
    w.vm("native", {"nic0": ("lab", "lab", ["172.16.1.40/24"])}, src=B, replicated=False)
    assert reserve(build_plan(cfg, w.inventory(), "web", "planned"), "app01").address == "172.16.1.40"


def test_an_ipv6_override_and_one_of_the_other_family() -> None:
    w = World()
    w.network(A, "prod", {"web": "2001:db8:1::/64"})
    w.network(B, "prod-dr", {"web": "2001:db8:2::/64"})
    w.pool(B, "prod-dr", "web", "2001:db8:2::/64", "2001:db8:2::10", "2001:db8:2::ff", name="v6-pool")
    w.vm("web01", {"nic0": ("prod", "web", ["2001:db8:1::20/64"])})
    base = standard_config(mappings=[mapping("prod", "prod-dr", "change")], subnets=[], plans=[plan("web", ["web01"])])
    good = with_overrides(base, {"vm": "web01", "nic": "nic0", "failover": "2001:db8:2::0042"})
    assert reserve(build_plan(good, w.inventory(), "web", "planned"), "web01").address == "2001:db8:2::42"
    bad = with_overrides(base, {"vm": "web01", "nic": "nic0", "failover": "10.0.0.1"})
    assert refused(bad, w.inventory()).codes == ["override_family_mismatch"]


def test_a_failback_derives_its_addresses_and_notes_the_override() -> None:
    w = World()
    w.network(A, "prod", {"web": "192.168.1.0/24"})
    w.network(B, "prod-dr", {"web": "192.168.1.0/24"})
    w.pool(A, "prod", "web", "192.168.1.0/24", "192.168.1.10", "192.168.1.200", name="prod-pool")
    w.vm("web01", {"nic0": ("prod-dr", "web", ["192.168.1.20/24"])}, src=B, dst=A)
    base = standard_config(mappings=[mapping("prod", "prod-dr", "retain")], plans=[plan("web", ["web01"])])
    cfg = with_overrides(base, {"vm": "web01", "nic": "nic0", "failover": "192.168.1.99"})
    p = build_plan(cfg, w.inventory(), "web", "planned")
    assert (reserve(p, "web01").address, reserve(p, "web01").override) == ("192.168.1.20", False)
    assert any("applies to failovers through network_mappings[0] in its own direction" in n for n in p.notes)


def test_a_test_override_without_a_test_network_is_refused() -> None:
    cfg = with_overrides(standard_config(), {"vm": "web01", "nic": "nic0", "test": "192.168.1.150"})
    r = refused(cfg, standard_world().inventory(), kind="test")
    assert r.codes == ["override_not_applicable"]
    assert "test network is 'none'" in r.reasons[0].message
    # a failover does not look at it
    build_plan(cfg, standard_world().inventory(), "web", "planned")


def test_a_test_override_takes_the_test_pool_holding_it() -> None:
    cfg = with_overrides(
        standard_config(mappings=[mapping("prod", "prod-dr", "retain"),
                                  mapping("app", "app-dr", "change", test={"mode": "create"})]),
        {"vm": "app01", "nic": "nic0", "test": "172.16.1.33"})
    p = build_plan(cfg, standard_world().inventory(), "web", "test")
    r = reserve(p, "app01", "test")
    assert (r.address, r.override) == ("172.16.1.33", True)
    assert r.pool.endswith("/app-pool")
    wrong = with_overrides(cfg, {"vm": "app01", "nic": "nic0", "test": "fd00::1"})
    assert refused(wrong, standard_world().inventory(), kind="test").codes == ["override_family_mismatch"]


def test_a_dhcp_mapping_or_a_vm_outside_the_plan() -> None:
    cfg = with_overrides(
        standard_config(mappings=[mapping("prod", "prod-dr", "retain"), mapping("app", "app-dr", "dhcp")]),
        {"vm": "app01", "nic": "nic0", "failover": "172.16.1.40"},
        {"vm": "elsewhere", "nic": "nic0", "failover": "172.16.1.41"})
    r = refused(cfg, standard_world().inventory())
    assert r.codes == ["override_not_applicable"] and "ip_strategy dhcp" in r.reasons[0].message


def test_a_stored_plan_without_overrides_keeps_its_json_and_one_with_reads_back() -> None:
    plain = build_plan(standard_config(), standard_world().inventory(), "web", "planned")
    assert all("override" not in change_to_json(c) for c in plain.changes)
    cfg = with_overrides(standard_config(), {"vm": "app01", "nic": "nic0", "failover": "172.16.1.40"})
    p = build_plan(cfg, standard_world().inventory(), "web", "planned")
    back = plan_from_json(p.to_json())
    assert back.checksum() == p.checksum() and reserve(back, "app01").override is True


def test_an_override_granted_to_another_nic_names_that_nic() -> None:
    w = standard_world().grant(B, "app-pool", "172.16.1.40", "web02/nic0@r").grant(B, "app-pool", "172.16.1.41", "gone")
    cfg = with_overrides(standard_config(), {"vm": "app01", "nic": "nic0", "failover": "172.16.1.40"})
    r = refused(cfg, w.inventory())
    assert r.codes == ["override_taken"] and "granted to another NIC (VM web02 NIC nic0)" in r.reasons[0].message
    cfg = with_overrides(standard_config(), {"vm": "app01", "nic": "nic0", "failover": "172.16.1.41"})
    assert "granted to another NIC (NIC id gone)" in refused(cfg, w.inventory()).reasons[0].message

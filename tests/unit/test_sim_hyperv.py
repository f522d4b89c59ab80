"""The simulated Hyper-V hosts: the Replica state machine, failover IPs and power."""

from __future__ import annotations

import pytest

from agent.domain.errors import InvalidReplicationState
from agent.domain.model import FailoverIpSetting, IpConfiguration, NicFailoverConfig, PowerState, ReplicationState
from agent.drivers.sim import SimWorld
from agent.ports import GrantRequest, HyperV, NicConnection

S = ReplicationState


@pytest.fixture
def hv_a(world: SimWorld) -> HyperV:
    return world.hyperv("site-a")


@pytest.fixture
def hv_b(world: SimWorld) -> HyperV:
    return world.hyperv("site-b")


def code(result) -> str | None:
    return result.error.code if result.error is not None else None


def step(hv: HyperV, host: str, action: str, vm: str = "web01"):
    [result] = hv.replicate(host, action, [vm])  # type: ignore[arg-type]
    return result


def vm_at(world: SimWorld, site: str, name: str):
    return next(v for v in world.vmm(site).read_inventory().vms if v.name == name)


def setting(address: str, prefix: int = 24, gateway: str | None = None, dns: tuple[str, ...] = ()) -> FailoverIpSetting:
    return FailoverIpSetting(address=address, prefix_length=prefix, gateway=gateway, dns_servers=dns)


def config(vm: str, nic: str, host: str, *settings: FailoverIpSetting) -> NicFailoverConfig:
    return NicFailoverConfig(vm=vm, nic=nic, host=host, settings=settings)


def test_is_a_hyperv_port(hv_b: HyperV) -> None:
    assert isinstance(hv_b, HyperV)
    assert hv_b.site == "site-b"


def test_planned_failover_complete_reverse(world: SimWorld, hv_a: HyperV, hv_b: HyperV) -> None:
    assert code(step(hv_a, "hv-a1", "prepare")) == "vm_running"
    hv_a.set_power("hv-a1", "stop", ["web01"])
    prepared = step(hv_a, "hv-a1", "prepare")
    assert prepared.changed and prepared.value.state is S.PREPARED_FOR_FAILOVER
    assert not step(hv_a, "hv-a1", "prepare").changed
    failed_over = step(hv_b, "hv-b1", "failover")
    assert failed_over.value.state is S.FAILED_OVER_WAITING_COMPLETION
    assert not step(hv_b, "hv-b1", "failover").changed
    assert step(hv_b, "hv-b1", "complete").value.state is S.FAILED_OVER
    assert not step(hv_b, "hv-b1", "complete").changed
    reversed_ = step(hv_b, "hv-b1", "reverse").value
    assert (reversed_.state, reversed_.primary_host, reversed_.replica_host) == (S.REPLICATING, "hv-b1", "hv-a1")
    assert (reversed_.primary_site, reversed_.replica_site) == ("site-b", "site-a")
    assert not step(hv_b, "hv-b1", "reverse").changed  # sent again after a crash: already holds
    assert vm_at(world, "site-b", "web01").role == "primary"
    assert vm_at(world, "site-a", "web01").role == "replica"


def test_failback_runs_the_same_machine_the_other_way(world: SimWorld, hv_a: HyperV, hv_b: HyperV) -> None:
    hv_a.set_power("hv-a1", "stop", ["web01"])
    for hv, host, action in [(hv_a, "hv-a1", "prepare"), (hv_b, "hv-b1", "failover"), (hv_b, "hv-b1", "complete")]:
        assert step(hv, host, action).ok
    assert step(hv_b, "hv-b1", "reverse").ok
    hv_b.set_power("hv-b1", "start", ["web01"])
    # Now site-b is primary: prepare there needs the VM off, failover runs at site-a.
    assert code(step(hv_b, "hv-b1", "prepare")) == "vm_running"
    hv_b.set_power("hv-b1", "stop", ["web01"])
    for hv, host, action in [
        (hv_b, "hv-b1", "prepare"),
        (hv_a, "hv-a1", "failover"),
        (hv_a, "hv-a1", "complete"),
        (hv_a, "hv-a1", "reverse"),
    ]:
        assert step(hv, host, action).ok, action
    rep = hv_a.get_replications("hv-a1", ["web01"])[0]
    assert (rep.primary_site, rep.replica_site, rep.state) == ("site-a", "site-b", S.REPLICATING)


def test_unplanned_failover_from_replicating(hv_b: HyperV) -> None:
    # The primary site is lost: no prepare, the primary is still "Running" as far as anyone knows.
    result = step(hv_b, "hv-b1", "failover")
    assert result.changed and result.value.state is S.FAILED_OVER_WAITING_COMPLETION


def test_reverse_needs_the_old_primary_off(hv_a: HyperV, hv_b: HyperV) -> None:
    step(hv_b, "hv-b1", "failover")
    step(hv_b, "hv-b1", "complete")
    refused = step(hv_b, "hv-b1", "reverse")
    assert code(refused) == "vm_running"
    assert refused.error.fields["host"] == "hv-a1"
    hv_a.set_power("hv-a1", "stop", ["web01"])
    assert step(hv_b, "hv-b1", "reverse").changed


@pytest.mark.parametrize(
    ("site", "host", "action", "expected_host"),
    [
        ("site-b", "hv-b1", "prepare", "hv-a1"),
        ("site-a", "hv-a1", "failover", "hv-b1"),
        ("site-a", "hv-a1", "start_test", "hv-b1"),
        ("site-a", "hv-a2", "complete", "hv-b1"),
        ("site-b", "hv-b2", "stop_test", "hv-b1"),
    ],
)
def test_wrong_host_names_the_right_one(world: SimWorld, site: str, host: str, action: str, expected_host: str) -> None:
    result = step(world.hyperv(site), host, action)
    assert isinstance(result.error, InvalidReplicationState)
    assert result.error.fields["expected_host"] == expected_host
    assert expected_host in result.error.message


def test_out_of_order_actions_are_refused(hv_a: HyperV, hv_b: HyperV) -> None:
    assert code(step(hv_b, "hv-b1", "complete")) == "invalid_replication_state"
    assert code(step(hv_b, "hv-b1", "reverse")) == "invalid_replication_state"
    step(hv_b, "hv-b1", "failover")
    step(hv_b, "hv-b1", "complete")
    assert code(step(hv_b, "hv-b1", "cancel")) == "invalid_replication_state"  # completed: too late
    assert code(step(hv_b, "hv-b1", "failover")) == "invalid_replication_state"
    assert code(step(hv_b, "hv-b1", "start_test")) == "invalid_replication_state"


def test_cancel_a_prepare_on_the_primary(hv_a: HyperV) -> None:
    hv_a.set_power("hv-a1", "stop", ["web01"])
    step(hv_a, "hv-a1", "prepare")
    cancelled = step(hv_a, "hv-a1", "cancel")
    assert cancelled.changed and cancelled.value.state is S.REPLICATING
    assert not step(hv_a, "hv-a1", "cancel").changed


def test_cancel_a_failover_turns_the_replica_off_and_undoes_its_addresses(world: SimWorld, hv_b: HyperV) -> None:
    hv_b.set_failover_configs(
        "hv-b1", [config("web01", "nic0", "hv-b1", setting("192.168.1.10", gateway="192.168.1.1"))]
    )
    step(hv_b, "hv-b1", "failover")
    hv_b.set_power("hv-b1", "start", ["web01"])
    assert vm_at(world, "site-b", "web01").nics[0].ip_configurations != ()
    cancelled = step(hv_b, "hv-b1", "cancel")
    assert cancelled.value.state is S.REPLICATING
    replica = vm_at(world, "site-b", "web01")
    assert replica.power_state is PowerState.OFF
    assert replica.nics[0].ip_configurations == ()


def test_test_failover_creates_and_deletes_an_unconnected_test_vm(world: SimWorld, hv_b: HyperV) -> None:
    before = world.snapshot()
    started = step(hv_b, "hv-b1", "start_test")
    assert started.changed and started.value.test_vm == "web01 - Test"
    assert started.value.state is S.REPLICATING
    test_vm = vm_at(world, "site-b", "web01 - Test")
    replica = vm_at(world, "site-b", "web01")
    assert (test_vm.role, test_vm.host, test_vm.power_state) == ("test", "hv-b1", PowerState.OFF)
    assert [n.name for n in test_vm.nics] == [n.name for n in replica.nics]
    assert {n.id for n in test_vm.nics}.isdisjoint({n.id for n in replica.nics})
    assert all(n.vm_network is None and n.ip_configurations == () for n in test_vm.nics)
    again = step(hv_b, "hv-b1", "start_test")
    assert code(again) == "test_failover_running"
    assert code(step(hv_b, "hv-b1", "failover")) == "test_failover_running"
    assert step(hv_b, "hv-b1", "stop_test").changed
    assert not step(hv_b, "hv-b1", "stop_test").changed
    assert world.snapshot() == before


def test_test_vm_gets_what_vmm_gave_it(world: SimWorld, hv_b: HyperV) -> None:
    step(hv_b, "hv-b1", "start_test")
    vmm = world.vmm("site-b")
    test_nic = vm_at(world, "site-b", "web01 - Test").nics[0]
    [grant] = vmm.grant_ips([GrantRequest("pool-b-isolated", "192.168.1.10", test_nic.id)])
    [conn] = vmm.connect_nics([NicConnection("web01 - Test", "nic0", "isolated-b", "web", (("192.168.1.10", 24),))])
    assert conn.ok, conn.error
    [started] = hv_b.set_power("hv-b1", "start", ["web01 - Test"])
    assert started.value.power_state is PowerState.RUNNING
    assert started.value.nics[0].ip_configurations == (
        IpConfiguration(mode="static", address="192.168.1.10", prefix_length=24),
    )


def test_replica_starts_only_after_failover_and_comes_up_with_its_failover_ips(world: SimWorld, hv_b: HyperV) -> None:
    [refused] = hv_b.set_power("hv-b1", "start", ["web02"])
    assert code(refused) == "invalid_replication_state"
    ips = (setting("192.168.1.11", gateway="192.168.1.1"), setting("192.168.1.12"))
    [set_] = hv_b.set_failover_configs("hv-b1", [config("web02", "nic0", "hv-b1", *ips)])
    assert set_.changed
    step(hv_b, "hv-b1", "failover", "web02")
    [started] = hv_b.set_power("hv-b1", "start", ["web02"])
    assert started.changed and started.value.power_state is PowerState.RUNNING
    assert started.value.nics[0].ip_configurations == (
        IpConfiguration(mode="static", address="192.168.1.11", prefix_length=24),
        IpConfiguration(mode="static", address="192.168.1.12", prefix_length=24),
    )
    assert not hv_b.set_power("hv-b1", "start", ["web02"])[0].changed


def test_failover_configs_round_trip_and_are_idempotent(hv_b: HyperV) -> None:
    cfg = config("web01", "nic0", "hv-b1", setting("192.168.1.10", gateway="192.168.1.1", dns=("192.168.1.2",)))
    assert hv_b.get_failover_configs("hv-b1", [("web01", "nic0")]) == [config("web01", "nic0", "hv-b1")]
    assert hv_b.set_failover_configs("hv-b1", [cfg])[0].changed
    assert not hv_b.set_failover_configs("hv-b1", [cfg])[0].changed
    assert hv_b.get_failover_configs("hv-b1", [("web01", "nic0"), ("ghost", "nic0")]) == [cfg]
    assert hv_b.clear_failover_configs("hv-b1", [("web01", "nic0")])[0].changed
    assert not hv_b.clear_failover_configs("hv-b1", [("web01", "nic0")])[0].changed
    assert hv_b.get_failover_configs("hv-b1", [("web01", "nic0")]) == [config("web01", "nic0", "hv-b1")]


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (config("web01", "nic0", "hv-b1"), "invalid_setting"),  # no settings at all
        (config("web01", "nic0", "hv-b1", setting("192.168.1.10", 33)), "invalid_setting"),
        (config("web01", "nic0", "hv-b1", setting("192.168.1.10", 0)), "invalid_setting"),
        (config("web01", "nic0", "hv-b1", setting("192.168.1.10", gateway="2001:db8:1::1")), "invalid_setting"),
        (config("web01", "nic0", "hv-b1", setting("192.168.1.10", dns=("2001:db8:1::53",))), "invalid_setting"),
        (config("web01", "nic0", "hv-b1", setting("192.168.1.10"), setting("192.168.1.10")), "invalid_setting"),
        (config("web01", "nic0", "hv-b2", setting("192.168.1.10")), "invalid_setting"),  # names another host
        (config("web01", "nic9", "hv-b1", setting("192.168.1.10")), "not_found"),
        (config("ghost", "nic0", "hv-b1", setting("192.168.1.10")), "not_found"),
        (config("app01", "nic0", "hv-b1", setting("172.16.1.10")), "not_found"),  # lives on hv-b2
        (config("dc-b", "nic0", "hv-b1", setting("192.168.1.5")), "not_found"),
    ],
)
def test_failover_config_refusals(hv_b: HyperV, cfg: NicFailoverConfig, expected: str) -> None:
    [result] = hv_b.set_failover_configs("hv-b1", [cfg])
    assert code(result) == expected


def test_failover_configs_need_replication(hv_b: HyperV) -> None:
    [result] = hv_b.set_failover_configs("hv-b2", [config("dc-b", "nic0", "hv-b2", setting("192.168.1.5"))])
    assert code(result) == "replication_not_enabled"
    assert code(step(hv_b, "hv-b2", "failover", "dc-b")) == "replication_not_enabled"


def test_a_host_taking_one_address_per_family_refuses_two(hv_b: HyperV) -> None:
    two = config("app01", "nic0", "hv-b2", setting("172.16.1.10"), setting("172.16.1.11"))
    assert code(hv_b.set_failover_configs("hv-b2", [two])[0]) == "invalid_setting"
    dual = config("app01", "nic0", "hv-b2", setting("172.16.1.10"), setting("2001:db8:1::20", 64))
    assert hv_b.set_failover_configs("hv-b2", [dual])[0].changed


def test_unknown_host_fails_the_call(hv_b: HyperV) -> None:
    from agent.errors import NotFoundError

    with pytest.raises(NotFoundError, match="hv-a1"):
        hv_b.replicate("hv-a1", "failover", ["web01"])
    with pytest.raises(NotFoundError):
        hv_b.get_replications("nope", ["web01"])


def test_get_replications_from_either_host_leaves_unknown_vms_out(hv_a: HyperV, hv_b: HyperV) -> None:
    from_a = hv_a.get_replications("hv-a1", ["web01", "web02", "local01", "ghost"])
    assert [r.vm for r in from_a] == ["web01", "web02"]
    assert hv_b.get_replications("hv-b1", ["web01"]) == [from_a[0]]
    assert hv_b.get_replications("hv-b2", ["web01"]) == []  # not a host of that pair

"""The PowerShell-backed Hyper-V driver against the simulated one: the same calls through
:class:`SimHyperV` and through :class:`PsHyperV` + the handlers over :class:`SimRemote` give
the same results and leave equal worlds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import Endpoint
from agent.domain.model import FailoverIpSetting, NicFailoverConfig, VirtualMachine
from agent.drivers.ps.hyperv import PsHyperV
from agent.drivers.sim import SimWorld
from agent.errors import AgentError, NotFoundError
from agent.ports import HyperV, ItemResult
from tests.remotesim import SimRemote, Target
from tests.rigs import normalised
from tests.unit.conftest import TWO_SITES

HOSTS = {"site-a": ("hv-a1", "hv-a2"), "site-b": ("hv-b1", "hv-b2")}


def endpoint(host: str) -> Endpoint:
    return Endpoint(transport="psrp", address=f"{host}.sim.test", username="agent",
                    credential="env:FA_SIM_PASSWORD", auth="basic", ssl=False)


def remote_for(world: SimWorld) -> SimRemote:
    return SimRemote(world, {f"{h}.sim.test": Target("hyperv", site, h) for site, hs in HOSTS.items() for h in hs})


def ps_hyperv(remote: SimRemote, site: str) -> PsHyperV:
    return PsHyperV(remote, site, {h: endpoint(h) for h in HOSTS[site]},
                    sites_by_host={h: s for s, hs in HOSTS.items() for h in hs}, sites=list(HOSTS))


def plain(value: Any) -> Any:
    """A result as a user sees it (a VM's NICs are VMM's to report, not Hyper-V's)."""
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, ItemResult):
        return (value.key, value.changed, plain(value.value), None if value.error is None else value.error.code)
    if isinstance(value, VirtualMachine):
        return value.model_dump(mode="json", exclude={"nics"})
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def setting(address: str, prefix: int = 24, gateway: str | None = None, dns: tuple[str, ...] = ()) -> FailoverIpSetting:
    return FailoverIpSetting(address=address, prefix_length=prefix, gateway=gateway, dns_servers=dns)


def scenario(a: HyperV, b: HyperV) -> list[Any]:
    """Every port method, through errors, drift and a whole test + planned failover."""
    cfg = NicFailoverConfig(vm="web01", nic="nic0", host="hv-b1",
                            settings=(setting("172.16.1.10", 24, "172.16.1.1", ("172.16.1.2",)),))
    two = NicFailoverConfig(vm="app01", nic="nic0", host="hv-b2",
                            settings=(setting("172.16.1.20"), setting("172.16.1.21")))
    out: list[Any] = [
        b.get_failover_configs("hv-b1", [("web01", "nic0"), ("nope", "nic0"), ("web01", "nic9")]),
        b.set_failover_configs("hv-b1", [cfg, NicFailoverConfig(vm="ghost", nic="nic0", host="hv-b1",
                                                                settings=cfg.settings)]),
        b.set_failover_configs("hv-b1", [cfg]),  # drift: none left
        b.set_failover_configs("hv-b2", [two]),  # invalid_setting: hv-b2 takes one per family
        b.set_failover_configs("hv-b1", [cfg.model_copy(update={"host": "hv-b2"})]),
        b.get_failover_configs("hv-b1", [("web01", "nic0")]),
        a.clear_failover_configs("hv-a1", [("local01", "nic0")]),  # replication_not_enabled
        b.get_replications("hv-b1", ["web01", "web02", "nope"]),
        a.get_replications("hv-a1", ["web01"]),
        b.replicate("hv-b1", "start_test", ["web01", "web02"]),
        b.replicate("hv-b1", "start_test", ["web01"]),  # test_failover_running
        b.get_replications("hv-b1", ["web01"]),
        b.replicate("hv-b1", "failover", ["web01"]),  # test_failover_running
        b.set_power("hv-b1", "start", ["web01 - Test"]),
        b.set_power("hv-b1", "start", ["web01 - Test"]),
        b.set_power("hv-b1", "stop", ["web01 - Test", "ghost"]),
        b.replicate("hv-b1", "stop_test", ["web01", "web02"]),
        b.replicate("hv-b1", "stop_test", ["web01"]),
        a.replicate("hv-a1", "prepare", ["web01"]),  # vm_running
        b.replicate("hv-b1", "prepare", ["web01"]),  # wrong host
        b.set_power("hv-b1", "start", ["web01"]),  # replica before failover
        a.set_power("hv-a1", "stop", ["web01"]),
        a.replicate("hv-a1", "prepare", ["web01"]),
        a.replicate("hv-a1", "prepare", ["web01"]),
        b.replicate("hv-b1", "failover", ["web01"]),
        b.set_power("hv-b1", "start", ["web01"]),
        b.replicate("hv-b1", "cancel", ["web01"]),
        b.replicate("hv-b1", "failover", ["web01"]),
        b.replicate("hv-b1", "complete", ["web01"]),
        b.replicate("hv-b1", "complete", ["web01"]),
        b.replicate("hv-b1", "cancel", ["web01"]),  # completed
        b.replicate("hv-b1", "reverse", ["web01"]),
        b.replicate("hv-b1", "reverse", ["web01"]),
        b.get_replications("hv-b1", ["web01"]),
        b.clear_failover_configs("hv-b1", [("web01", "nic0"), ("web01", "nic9")]),
        b.clear_failover_configs("hv-b1", [("web01", "nic0")]),
    ]
    return out


def test_every_method_matches_the_simulated_driver(tmp_path: Path) -> None:
    sim_world = SimWorld.open(TWO_SITES, tmp_path / "sim.json")
    ps_world = SimWorld.open(TWO_SITES, tmp_path / "ps.json")
    remote = remote_for(ps_world)
    expected = plain(scenario(sim_world.hyperv("site-a"), sim_world.hyperv("site-b")))
    got = plain(scenario(ps_hyperv(remote, "site-a"), ps_hyperv(remote, "site-b")))
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want, f"call {i} of the scenario"
    assert normalised(ps_world.snapshot()) == normalised(sim_world.snapshot())
    # Batch-shaped: one script run per call, at the host the call names.
    assert len(remote.calls) == len(expected)
    assert {address for address, _, _ in remote.calls} <= {f"{h}.sim.test" for hs in HOSTS.values() for h in hs}


def test_drift_answers_changed_false_and_sends_the_batch_once(tmp_path: Path) -> None:
    remote = remote_for(SimWorld.open(TWO_SITES, tmp_path / "ps.json"))
    hv = ps_hyperv(remote, "site-b")
    cfg = NicFailoverConfig(vm="web02", nic="nic0", host="hv-b1", settings=(setting("172.16.1.30"),))
    [first] = hv.set_failover_configs("hv-b1", [cfg])
    [again] = hv.set_failover_configs("hv-b1", [cfg])
    assert first.changed and not again.changed and again.value == cfg
    assert [name for _, name, _ in remote.calls] == ["hyperv/Set-AgentFailoverConfig"] * 2
    # The batch travels as one JSON string, never as PowerShell text.
    assert json.loads(remote.calls[0][2]["ConfigsJson"])[0]["settings"][0]["address"] == "172.16.1.30"


def test_partial_failure_carries_on_per_item(tmp_path: Path) -> None:
    hv = ps_hyperv(remote_for(SimWorld.open(TWO_SITES, tmp_path / "ps.json")), "site-b")
    results = hv.replicate("hv-b1", "start_test", ["ghost", "web01", "web02"])
    assert [(r.key, r.ok) for r in results] == [("ghost", False), ("web01", True), ("web02", True)]
    assert results[0].error is not None and results[0].error.code == "not_found"
    [rep] = hv.get_replications("hv-b1", ["web01"])
    assert rep.test_vm == results[1].value.test_vm  # type: ignore[union-attr]


def test_unknown_host_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    remote = remote_for(SimWorld.open(TWO_SITES, tmp_path / "ps.json"))
    hv = ps_hyperv(remote, "site-b")
    with pytest.raises(NotFoundError):
        hv.probe("hv-zz")
    assert remote.calls == []
    assert "hv-b2" in hv.probe("hv-b2")


def test_site_without_hosts_reaches_them_through_its_vmm(tmp_path: Path) -> None:
    world = SimWorld.open(TWO_SITES, tmp_path / "ps.json")
    remote = SimRemote(world, {"vmm-b.sim.test": Target("vmm", "site-b", "site-b")})
    hv = PsHyperV(remote, "site-b", {}, via=endpoint("vmm-b"), sites=list(HOSTS))
    [rep] = hv.get_replications("hv-b1", ["web01"])
    assert (rep.primary_site, rep.replica_site, rep.replica_host) == ("site-a", "site-b", "hv-b1")
    assert remote.calls[0][0] == "vmm-b.sim.test" and remote.calls[0][2]["ComputerName"] == "hv-b1"
    with pytest.raises(AgentError) as refused:
        hv.probe("hv-zz")
    assert refused.value.code == "not_found"


def test_test_vm_found_through_the_relationship_not_its_name(tmp_path: Path) -> None:
    world = SimWorld.open(TWO_SITES, tmp_path / "ps.json")
    hv = ps_hyperv(remote_for(world), "site-b")
    hv.replicate("hv-b1", "start_test", ["web01"])
    [rep] = hv.get_replications("hv-b1", ["web01"])
    assert rep.test_vm is not None
    [stopped] = hv.replicate("hv-b1", "stop_test", ["web01"])
    assert stopped.changed and stopped.value is not None and stopped.value.test_vm is None
    assert rep.test_vm not in world.snapshot()["vms"]["site-b"]



def test_wiring_sends_a_site_without_hosts_through_its_vmm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from agent.configfile import load_config
    from agent.wiring import DRIVERS, connect
    from tests.remotesim import over_psrp, sim_remote
    from tests.rigs import copy_demo

    def edit(data: dict[str, Any]) -> None:
        over_psrp(("vmm",))(data)
        data["sites"][0].pop("hyperv_hosts")  # contoso-east: its hosts reached through its VMM

    monkeypatch.setenv("FA_SIM_PASSWORD", "not-used-in-process")
    loaded = load_config(copy_demo(tmp_path / "config", edit=edit))
    remote = sim_remote(loaded)
    # VMM itself stays simulated here (its PowerShell driver is another task's).
    table = replace(DRIVERS, vmm={**DRIVERS.vmm, "psrp": lambda ctx, site: ctx.simulator().vmm(site.name)})
    with connect(loaded, table=table, remotes={"psrp": remote}) as connection:
        east = connection.ports.hyperv["contoso-east"]
        assert isinstance(east, PsHyperV)
        [rep] = east.get_replications("hv-east-02", ["web01"])
    assert (rep.primary_site, rep.primary_host, rep.replica_site) == ("contoso-east", "hv-east-02", "contoso-west")
    assert remote.calls[-1][0] == "vmm-contoso-east.sim.test"
    assert remote.calls[-1][2] == {"ComputerName": "hv-east-02", "VmName": ["web01"]}

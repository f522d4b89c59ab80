"""The PowerShell VMM driver against the simulated VMM server's scripts (``tests/remotesim/vmm.py``):
every port method gives what the ``sim`` driver gives, one script call per batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.config import Endpoint
from agent.drivers.ps.vmm import PsVmm
from agent.drivers.remoting import load_script
from agent.drivers.sim import SimWorld, nic_id
from agent.ports import GrantRequest, ItemResult, NicConnection, Vmm
from agent.ports import TestNetworkSpec as NetSpec
from tests.remotesim import SimRemote, Target

TWO_SITES = Path(__file__).parents[1] / "fixtures" / "sim" / "two-sites.yaml"
ADDRESS = "vmm-site-b.sim.test"
ENDPOINT = Endpoint(transport="psrp", address=ADDRESS, ssl=False, auth="basic", username="agent",
                    credential="env:FA_SIM_PASSWORD")
WEB01_B = nic_id("site-b", "web01", "nic0")
WEB02_B = nic_id("site-b", "web02", "nic0")
MARK = "failover-agent "


def ps_vmm(world: SimWorld, marker: str = MARK) -> tuple[PsVmm, SimRemote]:
    remote = SimRemote(world, {ADDRESS: Target("vmm", "site-b", "site-b")})
    return PsVmm(remote, ENDPOINT, "site-b", marker=marker), remote


def outcome(results: list[ItemResult[Any]]) -> list[tuple[Any, ...]]:
    return [(r.key, r.changed, r.value, None if r.error is None else (r.error.code, r.error.message))
            for r in results]


def scenario(vmm: Vmm) -> list[Any]:
    """Every port method, with drift, refusals and partial failures among the items."""
    inv = vmm.read_inventory()
    steps: list[Any] = [inv]
    grants = [GrantRequest("pool-b-web", "192.168.1.10", WEB01_B, MARK + "op=1 vm=web01"),
              GrantRequest("pool-b-web", "192.168.1.250", WEB01_B, MARK + "op=1"),  # outside the pool
              GrantRequest("no-such-pool", "192.168.1.11", WEB01_B, MARK + "op=1"),
              GrantRequest("pool-b-web", "", WEB02_B, MARK + "op=1 vm=web02")]
    steps.append(outcome(vmm.grant_ips(grants)))
    steps.append(outcome(vmm.grant_ips(grants[:1])))  # already granted: unchanged
    steps.append(outcome(vmm.grant_ips([GrantRequest("pool-b-web", "192.168.1.10", WEB02_B, MARK)])))
    specs = [NetSpec("test-prod-b", "prod-b", "test failover"), NetSpec("prod-b", "prod-b"),
             NetSpec("test-x", "no-such-network")]
    steps.append(outcome(vmm.create_test_networks(specs)))
    steps.append(outcome(vmm.create_test_networks(specs[:1])))
    test_grant = GrantRequest("test-prod-b/pool-b-web", "192.168.1.20", WEB01_B, MARK + "purpose=test")
    steps.append(outcome(vmm.grant_ips([test_grant])))
    conns = [NicConnection("web01", "nic0", "test-prod-b", "web", (("192.168.1.20", 24),)),
             NicConnection("web01", "nic9", "test-prod-b"),
             NicConnection("web02", "nic0", "test-prod-b", "web", (("192.168.1.20", 24),)),  # another NIC's
             NicConnection("web02", "nic0", None, "web")]
    steps.append(outcome(vmm.connect_nics(conns)))
    steps.append(outcome(vmm.connect_nics(conns[:1])))
    steps.append(outcome(vmm.delete_test_networks(["test-prod-b", "prod-b", "gone"])))  # in use, not a test net
    after = vmm.read_inventory()
    steps.append(after)
    steps.append(outcome(vmm.connect_nics([NicConnection("web01", "nic0", None)])))
    mine = [g for g in after.grants if g.description.startswith(MARK)]
    steps.append(outcome(vmm.revoke_ips(mine)))
    steps.append(outcome(vmm.revoke_ips(mine)))  # gone: unchanged
    steps.append(outcome(vmm.delete_test_networks(["test-prod-b"])))
    steps.append(vmm.read_inventory())
    steps.append(vmm.probe())
    return steps


def test_every_port_method_matches_the_sim_driver(tmp_path: Path) -> None:
    sim_world = SimWorld.open(TWO_SITES, tmp_path / "sim.json")
    ps_world = SimWorld.open(TWO_SITES, tmp_path / "ps.json")
    driver, remote = ps_vmm(ps_world)
    assert isinstance(driver, Vmm)
    expected = scenario(sim_world.vmm("site-b"))
    got = scenario(driver)
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want, f"step {i}"
    assert ps_world.snapshot() == sim_world.snapshot()
    # One script call per port call, and none with a value spliced into the script text.
    assert len(remote.calls) == len(expected)
    assert {name for _, name, _ in remote.calls} == {
        "vmm/Get-AgentInventory", "vmm/Grant-AgentIPAddress", "vmm/New-AgentTestNetwork",
        "vmm/Set-AgentNicConnection", "vmm/Remove-AgentTestNetwork", "vmm/Revoke-AgentIPAddress",
        "vmm/Test-AgentVmm"}


def test_a_batch_is_one_call_with_one_json_parameter(tmp_path: Path) -> None:
    driver, remote = ps_vmm(SimWorld.open(TWO_SITES, tmp_path / "w.json"))
    driver.grant_ips([GrantRequest("pool-b-web", "192.168.1.10", WEB01_B, MARK),
                      GrantRequest("pool-b-web", "192.168.1.11", WEB02_B, MARK)])
    [(address, name, params)] = remote.calls
    assert (address, name, sorted(params)) == (ADDRESS, "vmm/Grant-AgentIPAddress", ["RequestJson"])
    assert "192.168.1.10" not in load_script(name).text


def test_a_retried_grant_finds_the_earlier_one_unchanged(tmp_path: Path) -> None:
    world = SimWorld.open(TWO_SITES, tmp_path / "w.json")
    driver, _ = ps_vmm(world)
    req = GrantRequest("pool-b-web", "192.168.1.10", WEB01_B, MARK + "op=7 vm=web01 nic=nic0 ip=0 purpose=failover")
    [first] = driver.grant_ips([req])
    [again] = driver.grant_ips([req])
    assert first.changed and not again.changed and again.value == first.value
    held = [g for g in driver.read_inventory().grants if g.description == req.description]
    assert [g.address for g in held] == ["192.168.1.10"]


def test_revoke_leaves_an_address_the_agent_did_not_grant(tmp_path: Path) -> None:
    world = SimWorld.open(TWO_SITES, tmp_path / "w.json")
    driver, _ = ps_vmm(world)
    [theirs] = driver.grant_ips([GrantRequest("pool-b-web", "192.168.1.30", WEB01_B, "granted by an operator")])
    [ours] = driver.grant_ips([GrantRequest("pool-b-web", "192.168.1.31", WEB01_B, MARK + "op=1")])
    assert theirs.value is not None and ours.value is not None
    results = driver.revoke_ips([theirs.value, ours.value])
    assert [(r.key, r.changed, r.error and r.error.code) for r in results] == [
        ("pool-b-web:192.168.1.30", False, "conflict"), ("pool-b-web:192.168.1.31", True, None)]
    left = {g.address for g in driver.read_inventory().grants if g.pool == "pool-b-web"}
    assert "192.168.1.30" in left and "192.168.1.31" not in left


def test_a_grant_of_another_site_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    world = SimWorld.open(TWO_SITES, tmp_path / "w.json")
    driver, remote = ps_vmm(world)
    grant = world.vmm("site-a").read_inventory().grants[0]
    [result] = driver.revoke_ips([grant])
    assert result.error is not None and result.error.code == "invalid_request"
    assert remote.calls == []

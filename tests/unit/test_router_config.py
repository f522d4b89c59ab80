"""Router kinds in the config, as a site admin writes them: what each kind takes is refused at
its key and line when wrong, all at once; configs using ``bgp`` and ``script`` routers load,
wire and read their routes through the PowerShell-backed drivers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.configfile import load_config
from agent.domain.model import Route
from agent.inventory import gather_inventory
from agent.wiring import check_available, connect
from agent.yamlfile import InvalidFileError
from tests.remotesim import over_psrp, sim_remote
from tests.rigs import copy_demo

pytestmark = pytest.mark.usefixtures("cli_env")

CISCO = {"path": "routers/cisco.ps1", "parameters": {"Device": "10.0.0.254"}, "timeout_s": 30}


def endpoint(name: str) -> dict[str, Any]:
    return {"transport": "psrp", "address": f"{name}.sim.test", "ssl": False, "auth": "basic",
            "username": "agent", "credential": "env:FA_SIM_PASSWORD"}


def bgp_and_script(data: dict[str, Any]) -> None:
    """The demo with BGP speakers at both sites and the branch router driven by a script."""
    over_psrp(("router",))(data)
    for site in data["sites"]:
        for router in site["routers"]:
            router["kind"] = "bgp"
    data["subnets"][0]["announcements"] = {"contoso-east": [{"router": "rtr-east"}],
                                           "contoso-west": [{"router": "rtr-west"}]}
    data["third_sites"][0]["routers"][0].update(kind="script", script=CISCO)


def problems(tmp_path: Path, edit: Any) -> dict[str, str]:
    with pytest.raises(InvalidFileError) as caught:
        load_config(copy_demo(tmp_path / "cfg", edit=edit))
    found = {p.key: p.message for p in caught.value.problems}
    assert all(p.line is not None for p in caught.value.problems), caught.value.problems
    return found


def test_a_config_with_bgp_and_script_routers_loads_wires_and_reads(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FA_SIM_PASSWORD", "not-used-in-process")
    loaded = load_config(copy_demo(tmp_path / "cfg", edit=bgp_and_script))
    check_available(loaded)
    remote = sim_remote(loaded)
    with connect(loaded, remotes={"psrp": remote}) as connection:
        inventory = gather_inventory(loaded.config, connection.ports)
    # rtr-east announces the subnet as a network; the branch's static route came from its script.
    assert set(inventory.routes) == {Route(router="rtr-east", prefix="192.168.1.0/24"),
                                     Route(router="rtr-branch", prefix="192.168.1.0/24", next_hop="10.0.0.1",
                                           metric=100)}
    scripts = {(address, name) for address, name, _ in remote.calls}
    assert scripts == {("rtr-east.sim.test", "routes/Get-AgentBgpRoute"),
                       ("rtr-west.sim.test", "routes/Get-AgentBgpRoute"),
                       ("rtr-branch.sim.test", "scripts/Invoke-AgentPlanScript")}


def test_what_a_bgp_router_cannot_take_is_refused_at_its_key(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["sites"][0]["routers"][0]["kind"] = "bgp"
        data["third_sites"][0]["routers"][0]["kind"] = "bgp"

    found = problems(tmp_path, edit)
    # The demo announces through next hops and repoints the branch: neither means anything to BGP.
    assert "as its own network" in found["subnets[0].announcements.contoso-east[0].next_hop"]
    assert "no next hop to repoint" in found["subnets[0].third_site_routes[0].router"]


def test_a_metric_on_a_bgp_announcement_is_refused(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["sites"][0]["routers"][0]["kind"] = "bgp"
        data["subnets"][0]["announcements"]["contoso-east"] = [{"router": "rtr-east", "metric": 10}]

    assert "metric" in problems(tmp_path, edit).get("subnets[0].announcements.contoso-east[0].metric", "")


def test_a_static_route_needs_exactly_one_target(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["subnets"][0]["announcements"]["contoso-east"] = [{"router": "rtr-east"}]
        data["subnets"][0]["announcements"]["contoso-west"] = [
            {"router": "rtr-west", "next_hop": "10.20.0.1", "interface": "vlan20"}]

    found = problems(tmp_path, edit)
    assert found["subnets[0].announcements.contoso-east[0]"] == "give exactly one of next_hop or interface"
    assert found["subnets[0].announcements.contoso-west[0]"] == "give exactly one of next_hop or interface"


def test_a_script_router_needs_its_script_and_only_it_takes_one(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["sites"][0]["routers"][0]["kind"] = "script"
        data["sites"][1]["routers"][0]["script"] = CISCO
        data["third_sites"][0]["routers"][0].update(kind="script", script={
            "path": "x.ps1", "parameters": {"Prefix": "10.0.0.0/8", "metric": 1, "Device": "d"}})

    found = problems(tmp_path, edit)
    assert "needs script" in found["sites[0].routers[0].script"]
    assert "only a router of kind script" in found["sites[1].routers[0].script"]
    # The agent binds the route itself: a config value of the same name (any case) would be lost.
    assert "bound by the agent" in found["third_sites[0].routers[0].script.parameters.Prefix"]
    assert "bound by the agent" in found["third_sites[0].routers[0].script.parameters.metric"]
    assert not any(k.endswith("Device") for k in found)


def test_a_script_timeout_is_bounded(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["third_sites"][0]["routers"][0].update(kind="script", script={**CISCO, "timeout_s": 7200})

    assert any(k == "third_sites[0].routers[0].script.timeout_s" for k in problems(tmp_path, edit))

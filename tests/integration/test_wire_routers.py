"""Router kinds ``bgp`` and ``script`` end to end on the wire: engine -> PsBgpRoutes / ScriptRoutes
-> psrp -> pypsrp -> HTTP -> the PSRP test server -> the handlers -> the simulated sites. Both
sites' routers are BGP speakers announcing the retained subnet; the branch router is driven by
the operator's script, run by the constant wrapper at its endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.configfile import DEMO_PLAN
from agent.domain.plan import render_diff
from agent.drivers.ps.routerscript import RouterScriptError
from agent.drivers.remoting import load_script
from agent.drivers.sim import SimWorld
from agent.engine.model import OperationKind, OpStatus
from tests.integration.test_wire_end_to_end import WireRig
from tests.psrpserver import serving
from tests.remotesim import ALL_ROLES, over_psrp, targets_for
from tests.rigs import Rig, Templates, copy_demo, run_cli

PREFIX = "192.168.1.0/24"


def bgp_sites_scripted_branch(port: int, script: str) -> Any:
    def edit(data: dict[str, Any]) -> None:
        over_psrp(ALL_ROLES, port=port)(data)
        for site in data["sites"]:
            for router in site["routers"]:
                router["kind"] = "bgp"
        data["subnets"][0]["announcements"] = {"contoso-east": [{"router": "rtr-east"}],
                                               "contoso-west": [{"router": "rtr-west"}]}
        data["third_sites"][0]["routers"][0].update(kind="script", script={
            "path": script, "parameters": {"Device": "10.0.0.254"}, "timeout_s": 30})

    return edit


def _rig(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, script: str) -> Iterator[WireRig]:
    with serving(monkeypatch) as server:
        templates = Templates.build(copy_demo(tmp_path / "demo", edit=bgp_sites_scripted_branch(server.port, script)))
        state, store = templates.copy_to(tmp_path / "rig")
        inventory = templates.loaded.simulator_inventory
        assert inventory is not None, "the demo keeps its simulator section: the handlers answer from it"
        world = SimWorld.open(inventory, state)
        server.world, server.targets = world, targets_for(templates.loaded.config)
        rig = Rig(templates.loaded, state, store)
        try:
            yield WireRig(rig, world, server)
        finally:
            rig.close()


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[WireRig]:
    yield from _rig(monkeypatch, tmp_path, "C:/routers/cisco.ps1")


def holders(wire: WireRig) -> dict[str, Any]:
    """Per router, what its table holds for the subnet (read from the world, not the agent)."""
    routes = wire.world.snapshot()["routes"]
    return {name: r["routes"].get(PREFIX) for name, r in routes.items()}


def test_a_planned_failover_moves_the_announcement_and_repoints_the_branch(wire: WireRig) -> None:
    assert holders(wire)["rtr-west"] is None and holders(wire)["rtr-east"] is not None
    preview = render_diff(wire.rig.engine.plan(DEMO_PLAN, "planned"))
    assert f"- withdraw on rtr-east: {PREFIX} (announced network)" in preview
    assert f"+ announce on rtr-west: {PREFIX} (announced network)" in preview
    assert f"+ announce on rtr-branch: {PREFIX} via 10.0.0.2 metric 100" in preview
    view = wire.rig.start(OperationKind.PLANNED_FAILOVER)
    assert view.status == OpStatus.SUCCEEDED.value, view.errors
    trail = {(row.target, repr(row.details)) for row in wire.rig.engine.journal.store.audit_trail(view.id)}
    assert any(target == f"rtr-west/{PREFIX}" and "'announced'" in details for target, details in trail), trail
    moved = holders(wire)
    assert moved["rtr-east"] is None, "withdrawn at the old site (Remove-BgpCustomRoute)"
    assert moved["rtr-west"] == {"next_hop": None, "interface": None, "metric": 256}, "announced as a network"
    assert moved["rtr-branch"] == {"next_hop": "10.0.0.2", "interface": None, "metric": 100}
    sent = {(wire.server.targets[r.host].name, r.script_text) for r in wire.server.received}
    assert ("rtr-west", load_script("routes/Set-AgentBgpRoute").text) in sent
    assert ("rtr-east", load_script("routes/Set-AgentBgpRoute").text) in sent
    assert ("rtr-branch", load_script("scripts/Invoke-AgentPlanScript").text) in sent

    for kind in (OperationKind.COMMIT, OperationKind.REVERSE, OperationKind.FAILBACK):
        view = wire.rig.start(kind)
        assert view.status == OpStatus.SUCCEEDED.value, (kind, view.errors)
    back = holders(wire)
    assert back["rtr-west"] is None and back["rtr-east"] == {"next_hop": None, "interface": None, "metric": 256}
    assert back["rtr-branch"] == {"next_hop": "10.0.0.1", "interface": None, "metric": 100}


@pytest.fixture
def malformed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[WireRig]:
    yield from _rig(monkeypatch, tmp_path, "C:/routers/cisco-malformed.ps1")


def test_a_malformed_router_script_answer_is_refused_before_the_failover_changes_anything(
        malformed: WireRig) -> None:
    """Reading the branch router (before anything changes) meets a script that does not answer
    the documented document: a permanent error naming router and script; nothing recorded, nothing
    changed at any site."""
    before = malformed.world.snapshot()
    with pytest.raises(RouterScriptError) as caught:
        malformed.rig.start(OperationKind.PLANNED_FAILOVER)
    assert caught.value.category == "permanent"
    assert "the script C:/routers/cisco-malformed.ps1 of router rtr-branch" in caught.value.message
    assert "routes: Input should be a valid list" in caught.value.message
    assert malformed.world.snapshot() == before
    assert malformed.rig.engine.operations() == []


@pytest.mark.usefixtures("cli_env")
def test_validate_deep_probes_bgp_and_script_routers_read_only(wire: WireRig) -> None:
    before = wire.world.snapshot()
    result = run_cli("validate", "--deep", "--config", str(wire.rig.loaded.path))
    assert result.exit_code == 0, result.output
    assert "sites[0].routers[0].endpoint (rtr-east.sim.test): reachable" in result.output
    assert "RemoteAccess" in result.output.splitlines()[3], "a bgp router's endpoint needs RemoteAccess"
    assert "third_sites[0].routers[0].endpoint (rtr-branch.sim.test): reachable" in result.output
    assert "3 routers" in result.output
    assert wire.world.snapshot() == before
    received = {(wire.server.targets[r.host].name, r.script_text) for r in wire.server.received}
    assert ("rtr-east", load_script("routes/Get-AgentBgpRoute").text) in received
    assert ("rtr-branch", load_script("scripts/Invoke-AgentPlanScript").text) in received

"""The PowerShell-backed routers against the simulated ones: the same calls through
:class:`SimRoutes` and through :class:`PsRoutes` + the handlers over :class:`SimRemote` give the
same results and leave equal worlds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import Endpoint
from agent.domain.model import Route
from agent.drivers.ps.routes import PsRoutes
from agent.drivers.sim import SimWorld
from agent.errors import AgentError, NotFoundError
from agent.ports import ItemResult, Routes
from tests.remotesim import SimRemote, Target
from tests.rigs import normalised
from tests.unit.conftest import TWO_SITES

ROUTERS = {"rtr-a": "site-a", "rtr-b": "site-b", "rtr-c": "site-c"}


def endpoint(router: str) -> Endpoint:
    return Endpoint(transport="psrp", address=f"{router}.sim.test", username="agent", auth="basic", ssl=False,
                    credential="env:FA_SIM_PASSWORD")


def remote_for(world: SimWorld) -> SimRemote:
    return SimRemote(world, {f"{r}.sim.test": Target("router", site, r) for r, site in ROUTERS.items()})


def ps_routes(remote: SimRemote) -> PsRoutes:
    return PsRoutes(remote, {r: endpoint(r) for r in ROUTERS})


def plain(value: Any) -> Any:
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, ItemResult):
        return (value.key, value.changed, plain(value.value), None if value.error is None else value.error.code)
    if isinstance(value, Route):
        return value.model_dump(mode="json")
    return value


def route(router: str, prefix: str, *, hop: str | None = None, dev: str | None = None, metric: int = 256) -> Route:
    return Route(router=router, prefix=prefix, next_hop=hop, interface=dev, metric=metric)


def scenario(r: Routes) -> list[Any]:
    moved = route("rtr-b", "172.16.1.0/24", dev="vlan20")
    return [
        r.read_routes("rtr-a"),
        r.read_routes("rtr-c", ["192.168.1.0/24", "10.9.0.0/16"]),
        r.announce([moved, route("rtr-b", "192.168.1.0/24", hop="10.1.0.1")]),
        r.announce([moved]),  # drift: none left
        r.announce([moved.model_copy(update={"metric": 10})]),  # a new metric is a change
        r.announce([route("rtr-a", "192.168.1.0/24", dev="vlan99"),  # routed elsewhere: not ours
                    route("rtr-a", "10.5.0.0/16", hop="10.0.0.9")]),
        r.read_routes("rtr-b"),
        r.withdraw([route("rtr-a", "192.168.1.0/24", dev="vlan10"), route("rtr-a", "10.6.0.0/16", dev="x")]),
        r.withdraw([route("rtr-a", "192.168.1.0/24", dev="vlan10")]),
        r.withdraw([route("rtr-c", "192.168.1.0/24", hop="10.0.0.2")]),  # route_conflict, left alone
        r.announce([route("rtr-zz", "10.0.0.0/8", dev="x")]),  # not_found per item
        r.read_routes("rtr-a"),
        r.read_routes("rtr-c"),
        r.announce([]),
    ]


def test_every_method_matches_the_simulated_driver(tmp_path: Path) -> None:
    sim_world = SimWorld.open(TWO_SITES, tmp_path / "sim.json")
    ps_world = SimWorld.open(TWO_SITES, tmp_path / "ps.json")
    remote = remote_for(ps_world)
    expected = plain(scenario(sim_world.routes()))
    got = plain(scenario(ps_routes(remote)))
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want, f"call {i} of the scenario"
    assert normalised(ps_world.snapshot()) == normalised(sim_world.snapshot())
    # Batch-shaped: one script run per call that names a known router, at that router.
    assert len(remote.calls) == len(expected) - 2
    assert {name for _, name, _ in remote.calls} == {"routes/Get-AgentNetRoute", "routes/Set-AgentNetRoute"}


def test_drift_answers_changed_false_and_sends_the_batch_once(tmp_path: Path) -> None:
    remote = remote_for(SimWorld.open(TWO_SITES, tmp_path / "ps.json"))
    routes = ps_routes(remote)
    wanted = route("rtr-b", "172.16.1.0/24", hop="10.1.0.1", metric=30)
    [first] = routes.announce([wanted])
    [again] = routes.announce([wanted])
    assert first.changed and not again.changed and again.value == wanted
    assert [name for _, name, _ in remote.calls] == ["routes/Set-AgentNetRoute"] * 2
    assert {address for address, _, _ in remote.calls} == {"rtr-b.sim.test"}
    # The batch travels as one JSON string, never as PowerShell text.
    assert json.loads(remote.calls[0][2]["RoutesJson"]) == [
        {"prefix": "172.16.1.0/24", "next_hop": "10.1.0.1", "interface": None, "metric": 30}]


def test_partial_failure_carries_on_per_item(tmp_path: Path) -> None:
    world = SimWorld.open(TWO_SITES, tmp_path / "ps.json")
    routes = ps_routes(remote_for(world))
    results = routes.announce([route("rtr-a", "192.168.1.0/24", dev="vlan99"),
                               route("rtr-a", "10.5.0.0/16", hop="10.0.0.9")])
    assert [(r.key, r.ok, r.changed) for r in results] == [
        ("rtr-a:192.168.1.0/24", False, False), ("rtr-a:10.5.0.0/16", True, True)]
    assert results[0].error is not None and results[0].error.code == "route_conflict"
    # The refused route was left alone; the other one holds.
    assert [(r.prefix, r.interface, r.next_hop) for r in routes.read_routes("rtr-a")] == [
        ("192.168.1.0/24", "vlan10", None), ("10.5.0.0/16", None, "10.0.0.9")]


def test_refused_before_anything_is_sent(tmp_path: Path) -> None:
    remote = remote_for(SimWorld.open(TWO_SITES, tmp_path / "ps.json"))
    routes = ps_routes(remote)
    with pytest.raises(NotFoundError):
        routes.probe("rtr-zz")
    with pytest.raises(AgentError) as two:
        routes.withdraw([route("rtr-a", "10.0.0.0/8", dev="x"), route("rtr-b", "10.0.0.0/8", dev="x")])
    assert two.value.code == "invalid_request"
    with pytest.raises(AgentError) as bad:
        routes.read_routes("rtr-a", ["not-a-prefix"])
    assert bad.value.code == "invalid_request"
    assert remote.calls == []
    assert "rtr-c answers (1 static routes)" in routes.probe("rtr-c")


def test_a_route_the_router_does_not_show_after_announce_is_an_item_error(tmp_path: Path) -> None:
    """The script reads back what it added; the driver reports its verdict, never success."""

    class Unverified(SimRemote):
        def run(self, endpoint: Endpoint, script: Any, parameters: Any, *, timeout_s: float | None = None) -> Any:
            document = super().run(endpoint, script, parameters, timeout_s=timeout_s)
            for item in document["items"]:
                item.update(changed=False, after=None, error={
                    "id": "Agent.route_not_visible", "message": f"{item['key']} is not visible after announce",
                    "code": "route_not_visible"})
            return document

    world = SimWorld.open(TWO_SITES, tmp_path / "ps.json")
    routes = PsRoutes(Unverified(world, remote_for(world).targets), {"rtr-b": endpoint("rtr-b")})
    [result] = routes.announce([route("rtr-b", "172.16.1.0/24", dev="vlan20")])
    assert not result.ok and result.value is None and not result.changed
    assert result.error is not None and result.error.code == "route_not_visible"


def test_wiring_gives_each_netroute_router_its_own_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.configfile import load_config
    from agent.wiring import connect
    from tests.remotesim import over_psrp, sim_remote
    from tests.rigs import copy_demo

    monkeypatch.setenv("FA_SIM_PASSWORD", "not-used-in-process")
    loaded = load_config(copy_demo(tmp_path / "config", edit=over_psrp(("router",))))
    remote = sim_remote(loaded)
    with connect(loaded, remotes={"psrp": remote}) as connection:
        routes = connection.ports.routes
        sim = connection.simulator
        assert sim is not None
        assert routes.read_routes("rtr-branch") == sim.routes().read_routes("rtr-branch")
        [moved] = sim.routes().read_routes("rtr-branch", ["192.168.1.0/24"])
        [result] = routes.announce([moved])
        assert result.ok and not result.changed
    assert [(address, name) for address, name, _ in remote.calls] == [
        ("rtr-branch.sim.test", "routes/Get-AgentNetRoute"), ("rtr-branch.sim.test", "routes/Set-AgentNetRoute")]

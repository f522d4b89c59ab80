"""The ``bgp`` routers (RemoteAccess BGP custom routes) through :class:`PsBgpRoutes` and the
handlers over :class:`SimRemote`: a route is an announced network, read, changed and verified by
prefix; check, apply, apply again; what the router then holds is read from the simulated world,
not from the driver's answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import Endpoint
from agent.domain.model import Route
from agent.drivers.ps.routes import PsBgpRoutes
from agent.drivers.remoting import load_script
from agent.drivers.sim import SimWorld
from agent.errors import AgentError, NotFoundError
from tests.remotesim import SimRemote, Target
from tests.unit.conftest import TWO_SITES

ROUTERS = {"rtr-a": "site-a", "rtr-b": "site-b", "rtr-c": "site-c"}


def endpoint(router: str) -> Endpoint:
    return Endpoint(transport="psrp", address=f"{router}.sim.test", username="agent", auth="basic", ssl=False,
                    credential="env:FA_SIM_PASSWORD")


@pytest.fixture
def world(tmp_path: Path) -> SimWorld:
    return SimWorld.open(TWO_SITES, tmp_path / "ps.json")


@pytest.fixture
def remote(world: SimWorld) -> SimRemote:
    return SimRemote(world, {f"{r}.sim.test": Target("router", site, r) for r, site in ROUTERS.items()})


@pytest.fixture
def bgp(remote: SimRemote) -> PsBgpRoutes:
    return PsBgpRoutes(remote, {r: endpoint(r) for r in ROUTERS})


def network(router: str, prefix: str) -> Route:
    return Route(router=router, prefix=prefix)


def held(world: SimWorld, router: str) -> dict[str, dict[str, object]]:
    return dict(world.snapshot()["routes"][router]["routes"])


def test_reads_announced_networks_as_prefixes_only(bgp: PsBgpRoutes, remote: SimRemote) -> None:
    # rtr-c's table holds the prefix via a next hop: as a BGP speaker it announces the network.
    assert bgp.read_routes("rtr-c") == [network("rtr-c", "192.168.1.0/24")]
    assert bgp.read_routes("rtr-c", ["10.9.0.0/16"]) == []
    assert bgp.read_routes("rtr-c", []) == []
    assert "rtr-c answers (1 announced networks)" in bgp.probe("rtr-c")
    assert [(name, params) for _, name, params in remote.calls] == [
        ("routes/Get-AgentBgpRoute", {"Router": "rtr-c", "Prefix": []}),
        ("routes/Get-AgentBgpRoute", {"Router": "rtr-c", "Prefix": ["10.9.0.0/16"]}),
        ("routes/Get-AgentBgpRoute", {"Router": "rtr-c", "Prefix": []})]


def test_check_apply_apply_again(bgp: PsBgpRoutes, world: SimWorld, remote: SimRemote) -> None:
    moved = network("rtr-b", "192.168.1.0/24")
    assert bgp.read_routes("rtr-b", [moved.prefix]) == []  # check: not announced yet
    [first] = bgp.announce([moved])
    assert first.ok and first.changed and first.value == moved
    assert held(world, "rtr-b") == {"192.168.1.0/24": {"next_hop": None, "interface": None, "metric": 256}}
    [again] = bgp.announce([moved])
    assert again.ok and not again.changed and again.value == moved
    # One script run per call, the networks as a typed list: nothing spliced into text.
    sets = [params for _, name, params in remote.calls if name == "routes/Set-AgentBgpRoute"]
    assert sets == [{"Router": "rtr-b", "Action": "announce", "Prefix": ["192.168.1.0/24"]}] * 2

    [gone] = bgp.withdraw([network("rtr-a", "192.168.1.0/24")])
    assert gone.ok and gone.changed and held(world, "rtr-a") == {}
    [absent] = bgp.withdraw([network("rtr-a", "192.168.1.0/24")])
    assert absent.ok and not absent.changed


def test_a_batch_answers_per_network_in_order(bgp: PsBgpRoutes, world: SimWorld) -> None:
    results = bgp.announce([network("rtr-c", "192.168.1.0/24"), network("rtr-c", "10.5.0.0/16"),
                            network("rtr-c", "2001:db8:5::/48")])
    assert [(r.key, r.ok, r.changed) for r in results] == [
        ("rtr-c:192.168.1.0/24", True, False), ("rtr-c:10.5.0.0/16", True, True),
        ("rtr-c:2001:db8:5::/48", True, True)]
    assert set(held(world, "rtr-c")) == {"192.168.1.0/24", "10.5.0.0/16", "2001:db8:5::/48"}


def test_refused_before_anything_is_sent(bgp: PsBgpRoutes, remote: SimRemote) -> None:
    with pytest.raises(AgentError) as hop:
        bgp.announce([Route(router="rtr-b", prefix="10.0.0.0/8", next_hop="10.1.0.1")])
    assert hop.value.code == "invalid_request" and "bgp router" in hop.value.message
    with pytest.raises(AgentError) as two:
        bgp.withdraw([network("rtr-a", "10.0.0.0/8"), network("rtr-b", "10.0.0.0/8")])
    assert two.value.code == "invalid_request"
    with pytest.raises(NotFoundError):
        bgp.read_routes("rtr-zz")
    [unknown] = bgp.announce([network("rtr-zz", "10.0.0.0/8")])
    assert unknown.error is not None and unknown.error.code == "not_found"
    assert remote.calls == []


def test_a_network_the_speaker_does_not_show_after_announce_is_an_item_error(world: SimWorld) -> None:
    """The script reads back what it added; the driver reports its verdict, never success."""

    class Unverified(SimRemote):
        def run(self, endpoint: Endpoint, script: object, parameters: object, *,
                timeout_s: float | None = None) -> object:
            document = super().run(endpoint, script, parameters, timeout_s=timeout_s)  # type: ignore[arg-type]
            for item in document["items"]:
                item.update(changed=False, after=None, before=None, error={
                    "id": "Agent.route_not_visible", "code": "route_not_visible",
                    "message": f"{item['key']} on rtr-b is not announced after Add-BgpCustomRoute"})
            return document

    remote = Unverified(world, {"rtr-b.sim.test": Target("router", "site-b", "rtr-b")})
    [result] = PsBgpRoutes(remote, {"rtr-b": endpoint("rtr-b")}).announce([network("rtr-b", "172.16.1.0/24")])
    assert not result.ok and result.value is None and not result.changed
    assert result.error is not None and result.error.code == "route_not_visible"


def test_the_scripts_call_the_remoteaccess_cmdlets_module_qualified() -> None:
    """Another module's function of the same name must not run in their place; Remove prompts."""
    get, put = load_script("routes/Get-AgentBgpRoute").text, load_script("routes/Set-AgentBgpRoute").text
    assert "RemoteAccess\\Get-BgpCustomRoute" in get
    assert "RemoteAccess\\Add-BgpCustomRoute -Network $network\n" in put
    assert "RemoteAccess\\Remove-BgpCustomRoute -Network $network -Force" in put


def test_a_netroute_router_refuses_an_announced_network_before_sending(world: SimWorld, remote: SimRemote) -> None:
    from agent.drivers.ps.routes import PsRoutes

    with pytest.raises(AgentError) as caught:
        PsRoutes(remote, {"rtr-b": endpoint("rtr-b")}).announce([network("rtr-b", "10.0.0.0/8")])
    assert caught.value.code == "invalid_request" and "next hop or an interface" in caught.value.message
    assert remote.calls == []

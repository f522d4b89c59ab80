"""Ports that send each call to the driver of its host or router (a config mixing drivers)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.domain.errors import InvalidRequest
from agent.domain.model import Route
from agent.drivers.dispatch import HyperVByHost, RoutesByRouter, ScriptsByHost
from agent.errors import NotFoundError
from agent.ports import ScriptResult


class Recorder:
    """Stands in for one driver: records every call and the host or router it named."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any) -> Any:
            self.calls.append((method, args[0]))
            if method == "run_script":
                return ScriptResult(host=args[0], path=args[1], succeeded=True)
            return []
        return call


def test_each_hyperv_call_goes_to_the_driver_of_its_host() -> None:
    psrp, winrm = Recorder("psrp"), Recorder("winrm")
    hv = HyperVByHost("west", {"hv-1": psrp, "hv-2": winrm})  # type: ignore[dict-item]
    hv.get_replications("hv-1", ["sql01"])
    hv.replicate("hv-2", "failover", ["app01"])
    hv.set_power("hv-2", "start", ["app01"])
    hv.get_failover_configs("hv-1", [("sql01", "nic0")])
    hv.set_failover_configs("hv-1", [])
    hv.clear_failover_configs("hv-2", [])
    assert psrp.calls == [("get_replications", "hv-1"), ("get_failover_configs", "hv-1"),
                          ("set_failover_configs", "hv-1")]
    assert winrm.calls == [("replicate", "hv-2"), ("set_power", "hv-2"), ("clear_failover_configs", "hv-2")]
    with pytest.raises(NotFoundError, match="hv-9 is not configured at site west"):
        hv.get_replications("hv-9", ["x"])


def test_each_route_call_goes_to_the_driver_of_its_router_and_one_call_names_one_router() -> None:
    bgp, static = Recorder("bgp"), Recorder("static")
    routes = RoutesByRouter({"r-bgp": bgp, "r-static": static})  # type: ignore[dict-item]

    def route(router: str) -> Route:
        return Route(router=router, prefix="192.168.1.0/24", next_hop="10.0.0.1")

    routes.read_routes("r-static")
    routes.announce([route("r-bgp")])
    routes.withdraw([route("r-static")])
    assert routes.announce([]) == [] and routes.withdraw([]) == []
    assert bgp.calls == [("announce", [route("r-bgp")])]
    assert static.calls == [("read_routes", "r-static"), ("withdraw", [route("r-static")])]
    with pytest.raises(InvalidRequest, match="one router per call"):
        routes.announce([route("r-bgp"), route("r-static")])
    with pytest.raises(NotFoundError, match="router r-x is not configured"):
        routes.withdraw([route("r-x")])


def test_a_script_runs_through_the_driver_of_its_host() -> None:
    east, west = Recorder("east"), Recorder("west")
    scripts = ScriptsByHost({"hv-east": east, "hv-west": west})  # type: ignore[dict-item]
    result = scripts.run_script("hv-west", r"C:\DR\check.ps1", {"Url": "http://x"}, 30)
    assert result.succeeded and west.calls == [("run_script", "hv-west")] and east.calls == []
    with pytest.raises(NotFoundError, match="no host hv-9"):
        scripts.run_script("hv-9", r"C:\DR\check.ps1", {}, 30)


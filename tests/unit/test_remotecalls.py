"""The remote-call observation seam: which endpoint a call is said to go to, and one wrapping
only, however often an engine is built on the same ports."""

from __future__ import annotations

from typing import Any

from agent.domain.model import Route
from agent.remotecalls import observed_ports, remote_call_observers


def test_routes_calls_name_their_router_and_ports_are_observed_once(new_rig) -> None:
    rig = new_rig()
    ports = observed_ports(observed_ports(rig.ports))
    heard: list[tuple[Any, ...]] = []
    remote_call_observers.append(lambda *call: heard.append(call))
    try:
        ports.routes.announce([])  # an empty batch goes nowhere in particular
        route = Route(router="rtr-branch", prefix="10.77.0.0/16", next_hop="10.0.0.9")
        [done] = ports.routes.announce([route])
        assert done.changed
        ports.routes.withdraw([route])
        assert ports.vmm["contoso-west"].site == "contoso-west"  # not a call: passed through
    finally:
        remote_call_observers.clear()
    assert [(endpoint, kind, call, ok) for endpoint, kind, call, _s, ok in heard] == [
        ("", "routes", "routes.announce", True),
        ("rtr-branch", "routes", "routes.announce", True),
        ("rtr-branch", "routes", "routes.withdraw", True),
    ], "each call once: the second wrapping added nothing"

"""The composition root: drivers chosen per config entry from one table, refused before anything
is contacted when missing, and the inventory read through the ports in batches."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.configfile import load_config
from agent.domain.model import Route
from agent.errors import NotFoundError
from agent.inventory import gather_inventory
from agent.ports import Dns, Ports, Routes
from agent.wiring import DRIVERS, NotAvailableYet, WiringContext, check_available, connect
from tests.rigs import copy_demo, sim_of

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("cli_env")


def test_the_demo_gets_simulated_ports_for_every_site_server_and_router() -> None:
    loaded = load_config(None)
    with connect(loaded) as connection:
        ports = connection.ports
        assert isinstance(ports, Ports)
        assert set(ports.vmm) == set(ports.hyperv) == {"contoso-east", "contoso-west"}
        assert set(ports.dns) == {"dns-contoso", "dns-drill"}
        assert all(isinstance(d, Dns) for d in ports.dns.values())
        assert ports.routes.read_routes("rtr-branch", ["192.168.1.0/24"])
        assert connection.simulator is not None
    assert loaded.simulator_state is not None and loaded.simulator_state.is_file()


def test_the_template_asks_only_for_drivers_this_version_has() -> None:
    loaded = load_config(REPO / "config" / "site-template.yaml")
    check_available(loaded)  # bgp and script routers included: nothing left for a later version
    kinds = {r.kind for s in (*loaded.config.sites, *loaded.config.third_sites) for r in s.routers}
    assert kinds == {"bgp", "script"}, "the template shows the router kinds that need most explaining"


def test_a_router_kind_over_a_transport_it_lacks_is_refused_before_anything_is_contacted(tmp_path: Path) -> None:
    loaded = load_config(_demo_with_a_router_driver_this_version_lacks(tmp_path))
    with pytest.raises(NotAvailableYet) as caught:
        connect(loaded)
    [problem] = caught.value.problems
    assert problem.key == "third_sites[0].routers[0].kind"
    assert "router kind 'bgp' over transport 'sim' is not available yet" in problem.message
    assert "bgp/psrp" in problem.message and "script/winrm" in problem.message
    assert caught.value.code == "not_available_yet" and caught.value.category == "refused"
    with pytest.raises(NotAvailableYet):
        check_available(loaded)
    assert not (tmp_path / "cfg" / "var").exists()


def test_gather_inventory_reads_everything_in_one_call_per_endpoint() -> None:
    loaded = load_config(None)
    with connect(loaded) as connection:
        inventory = gather_inventory(loaded.config, connection.ports)
        records = sim_of(connection).calls()
    calls = Counter((c.kind, c.target) for c in records if c.kind != "dns.read")
    assert max(calls.values()) == 1, calls  # batched: never two calls of a kind to one endpoint
    # The Dns port reads one zone per call: one call per (server, configured zone).
    zones = Counter(z.server for z in loaded.config.dns.zones)
    assert Counter(c.target for c in records if c.kind == "dns.read") == zones
    kinds = Counter(kind for kind, _ in calls)
    assert kinds["vmm.read_inventory"] == 2
    assert kinds["hyperv.get_replications"] == 4  # every host holding a VM
    assert kinds["hyperv.get_failover_configs"] == 2  # the hosts holding replicas
    assert kinds["routes.read_routes"] == 3  # rtr-east, rtr-west, rtr-branch

    assert {r.vm for r in inventory.replications} == {"sql01", "app01", "app02", "web01"}
    assert len(inventory.replications) == 4
    assert {(r.router, r.next_hop) for r in inventory.routes} == {("rtr-east", "10.10.0.1"), ("rtr-branch", "10.0.0.1")}
    names = {(r.zone, r.name, r.type.value) for r in inventory.record_sets}
    assert ("corp.contoso.example.", "app01.corp.contoso.example.", "A") in names
    assert ("2.168.192.in-addr.arpa.", "10.2.168.192.in-addr.arpa.", "PTR") in names


def test_planning_reads_only_the_dns_servers_of_its_purpose() -> None:
    loaded = load_config(None)
    with connect(loaded) as connection:
        test = gather_inventory(loaded.config, connection.ports, dns_purpose="test")
        production = gather_inventory(loaded.config, connection.ports, dns_purpose="production")
    # The drill server holds sql01 but no PTR of the application network.
    assert not any(r.zone == "2.168.192.in-addr.arpa." for r in test.record_sets)
    assert any(r.zone == "2.168.192.in-addr.arpa." for r in production.record_sets)


def test_a_failing_closer_does_not_stop_the_others() -> None:
    closed: list[str] = []

    def boom() -> None:
        closed.append("boom")
        raise OSError("socket already gone")

    ctx = WiringContext(load_config(None))
    ctx.on_close(lambda: closed.append("first"))
    ctx.on_close(boom)
    with pytest.raises(OSError):
        ctx.close()
    assert closed == ["boom", "first"]
    ctx.close()  # idempotent


# ------------------------------------------------------------------ a new driver is one entry


class RecordingRoutes:
    """A routes driver of a kind this version lacks, standing in for a real one."""

    def __init__(self, routers: Sequence[Any]) -> None:
        self.routers = [r.name for r in routers]
        self.calls: list[tuple[str, str]] = []

    def read_routes(self, router: str, prefixes: Sequence[str] | None = None) -> list[Route]:
        self.calls.append(("read", router))
        return []

    def announce(self, routes: Sequence[Route]) -> list[Any]:
        self.calls.append(("announce", routes[0].router))
        return []

    def withdraw(self, routes: Sequence[Route]) -> list[Any]:
        return []


def _demo_with_a_router_driver_this_version_lacks(tmp_path: Path) -> Path:
    """The branch router a BGP speaker the simulator stands in for: no driver is ``bgp/sim``."""

    def edit(cfg: dict[str, Any]) -> None:
        cfg["third_sites"][0]["routers"][0] = {"name": "rtr-branch", "kind": "bgp"}
        cfg["subnets"][0]["third_site_routes"] = []
        cfg["subnets"][0]["announcements"]["contoso-east"].append({"router": "rtr-branch"})

    return copy_demo(tmp_path / "cfg", edit=edit)


def test_a_driver_this_version_lacks_is_refused_naming_its_line(tmp_path: Path) -> None:
    loaded = load_config(_demo_with_a_router_driver_this_version_lacks(tmp_path))
    with pytest.raises(NotAvailableYet) as caught:
        connect(loaded)
    [problem] = caught.value.problems
    assert problem.key == "third_sites[0].routers[0].kind" and problem.line is not None
    assert yaml.safe_load(loaded.path.read_text())["third_sites"][0]["routers"][0]["kind"] == "bgp"


def test_a_new_driver_is_one_table_entry_and_each_router_gets_its_own(tmp_path: Path) -> None:
    loaded = load_config(_demo_with_a_router_driver_this_version_lacks(tmp_path))
    made: list[RecordingRoutes] = []

    def bgp(ctx: WiringContext, routers: Sequence[Any]) -> Routes:
        made.append(RecordingRoutes(routers))
        return made[-1]

    table = replace(DRIVERS, routes={**DRIVERS.routes, "bgp/sim": bgp})
    with connect(loaded, table=table) as connection:
        routes = connection.ports.routes
        assert routes.read_routes("rtr-branch", ["192.168.1.0/24"]) == []
        assert routes.read_routes("rtr-east", ["192.168.1.0/24"])  # still the simulated router
        announced = Route(router="rtr-branch", prefix="192.168.1.0/24")
        routes.announce([announced])
        with pytest.raises(NotFoundError):
            routes.read_routes("rtr-nowhere")
    [driver] = made
    assert driver.routers == ["rtr-branch"]
    assert driver.calls == [("read", "rtr-branch"), ("announce", "rtr-branch")]


def test_a_stale_simulated_world_is_reported_and_the_demo_resets_its_own(tmp_path: Path) -> None:
    config = copy_demo(tmp_path / "cfg")
    loaded = load_config(config)
    connect(loaded).close()  # seeds the state
    inventory = config.parent / "demo-inventory.yaml"
    inventory.write_text(inventory.read_text() + "\n# edited\n")
    with connect(loaded) as connection:
        assert connection.notices and "changed since the simulated world" in connection.notices[0]
    with connect(loaded, reset_simulator=True) as connection:
        assert not connection.notices

"""What the CLI stands on: drivers chosen per config entry, and the inventory read in batches."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agent.configfile import ENV_CONFIG, ENV_DATA_DIR, load_config
from agent.drivers import Drivers, NotAvailableYet, build_drivers, check_available
from agent.drivers.sim import SimWorld
from agent.inventory import gather_inventory

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_CONFIG, raising=False)
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "data"))


def test_the_demo_gets_simulated_drivers_for_every_site_server_and_router() -> None:
    loaded = load_config(None)
    with build_drivers(loaded) as drivers:
        assert isinstance(drivers, Drivers)
        assert set(drivers.vmm) == set(drivers.hyperv) == {"contoso-east", "contoso-west"}
        assert set(drivers.dns) == {"dns-contoso", "dns-drill"}
        assert drivers.routes.read_routes("rtr-branch", ["192.168.1.0/24"])
    assert loaded.simulator_state is not None and loaded.simulator_state.is_file()


def test_later_drivers_are_refused_before_anything_is_contacted(tmp_path: Path) -> None:
    loaded = load_config(REPO / "config" / "site-template.yaml")
    with pytest.raises(NotAvailableYet) as caught:
        build_drivers(loaded)
    keys = [p.key for p in caught.value.problems]
    assert "sites[0].vmm.transport" in keys and "sites[1].routers[0].kind" in keys
    assert all(p.line and "not available yet in this version" in p.message for p in caught.value.problems)
    assert caught.value.code == "not_available_yet" and caught.value.category == "refused"
    with pytest.raises(NotAvailableYet):
        check_available(loaded)
    assert not (tmp_path / "data").exists()


def test_gather_inventory_reads_everything_in_one_call_per_endpoint() -> None:
    loaded = load_config(None)
    with build_drivers(loaded) as drivers:
        inventory = gather_inventory(loaded.config, drivers)
    world = SimWorld.open(loaded.simulator_inventory, loaded.simulator_state)
    records = world.calls()
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
    with build_drivers(loaded) as drivers:
        test = gather_inventory(loaded.config, drivers, dns_purpose="test")
        production = gather_inventory(loaded.config, drivers, dns_purpose="production")
    # The drill server holds sql01 but no PTR of the application network.
    assert not any(r.zone == "2.168.192.in-addr.arpa." for r in test.record_sets)
    assert any(r.zone == "2.168.192.in-addr.arpa." for r in production.record_sets)


def test_a_failing_closer_does_not_stop_the_others() -> None:
    closed: list[str] = []

    def boom() -> None:
        closed.append("boom")
        raise OSError("socket already gone")

    drivers = Drivers(vmm={}, hyperv={}, dns={}, routes=None)  # type: ignore[arg-type]
    drivers._closers += [lambda: closed.append("first"), boom]
    with pytest.raises(OSError):
        drivers.close()
    assert closed == ["boom", "first"]
    drivers.close()  # idempotent

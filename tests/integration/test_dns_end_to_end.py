"""End to end on the demo sites with a real BIND 9 as the production DNS server.

The demo's production DNS server is switched from the simulator to RFC 2136 against a named on
127.0.0.1 seeded with the demo's records. A planned failover must change the records in BIND
(checked with raw queries, never through the agent), commit must give back the original TTLs,
and failback must restore the original record sets exactly.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from agent.configfile import demo_dir, load_config
from agent.engine.model import OperationKind
from agent.engine.service import Engine, RecordNotManaged
from agent.engine.store import Store
from agent.wiring import connect
from tests.bind import BindServer

pytestmark = pytest.mark.bind

PLAN = "contoso-apps"
HOSTS = ["sql01", "web01", "app01", "app02"]
FORWARD = "corp.contoso.example."


def _zone_texts(inventory: dict) -> dict[str, str]:
    soa = ("@ IN SOA ns1.corp.contoso.example. hostmaster.corp.contoso.example. ( 1 3600 600 86400 60 )\n"
           "  IN NS ns1.corp.contoso.example.\n")
    server = next(s for s in inventory["dns_servers"] if s["name"] == "dns-contoso")
    zones = {}
    for zone in server["zones"]:
        lines = ["$TTL 3600\n", soa]
        if zone["name"] == "corp.contoso.example":
            lines.append("ns1 IN A 127.0.0.1\n")
        for r in zone.get("records", []):
            for v in r["values"]:
                lines.append(f"{r['name']} {r['ttl']} IN {r['type']} {v}\n")
        zones[zone["name"] + "."] = "".join(lines)
    return zones


@pytest.fixture
def site(named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    yield from _site(named, tmp_path, monkeypatch)


def _site(named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inventory_text: str | None = None,
          edit_config: Callable[[dict], None] | None = None):
    """The demo with its production DNS server in a real BIND seeded from ``inventory_text`` (else
    the demo's inventory); ``edit_config`` changes the demo config before it is loaded."""
    for name in ("demo.yaml", "demo-inventory.yaml"):
        shutil.copy(demo_dir() / name, tmp_path / name)
    if inventory_text is not None:
        (tmp_path / "demo-inventory.yaml").write_text(inventory_text)
    inventory = yaml.safe_load((tmp_path / "demo-inventory.yaml").read_text())
    bind = BindServer(tmp_path / "named", zones=_zone_texts(inventory), named=named).start()
    monkeypatch.setenv("DEMO_TSIG_SECRET", bind.keys["agent-key"].secret)
    cfg = yaml.safe_load((tmp_path / "demo.yaml").read_text())
    cfg["agent"]["data_dir"] = str(tmp_path / "var")
    if edit_config is not None:
        edit_config(cfg)
    for server in cfg["dns"]["servers"]:
        if server["name"] == "dns-contoso":
            server.clear()
            server.update({"name": "dns-contoso", "kind": "rfc2136", "address": bind.host, "port": bind.port,
                           "tsig": {"name": "agent-key", "secret": "env:DEMO_TSIG_SECRET"},
                           "verify_timeout_s": 5})
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    loaded = load_config(tmp_path / "demo.yaml")
    connection = connect(loaded)
    store = Store.for_path(tmp_path / "var" / "agent.sqlite")
    engine = Engine(loaded.config, connection.ports, store, sleep=lambda s: None)
    try:
        yield engine, bind
    finally:
        connection.close()
        store.close()
        bind.stop()


def _records(bind: BindServer) -> dict[str, object]:
    out = {}
    for host in HOSTS:
        out[f"{host} A"] = bind.rrset(f"{host}.{FORWARD}", "A")
    for ptr in ("20.1.168.192.in-addr.arpa.", "30.1.168.192.in-addr.arpa.", "10.2.168.192.in-addr.arpa.",
                "11.2.168.192.in-addr.arpa.", "10.1.16.172.in-addr.arpa.", "11.1.16.172.in-addr.arpa."):
        out[f"{ptr} PTR"] = bind.rrset(ptr, "PTR")
    return out


def _run(engine: Engine, kind: OperationKind):
    view = engine.start(kind, PLAN, requested_by="test")
    while view.status == "waiting_for_manual_action":
        view = engine.resume(view.id, actor="test")
    assert view.status == "succeeded", (kind, view.errors)
    return view


def test_planned_failover_updates_bind_and_failback_restores_it_exactly(site) -> None:
    engine, bind = site
    before = _records(bind)
    assert before["app01 A"] == (3600, ("192.168.2.10",))

    failover = _run(engine, OperationKind.PLANNED_FAILOVER)
    after = _records(bind)
    # The re-addressed application servers point at their new addresses with the low TTL ...
    assert after["app01 A"] == (60, ("172.16.1.10",))
    assert after["app02 A"] == (60, ("172.16.1.11",))
    assert after["10.1.16.172.in-addr.arpa. PTR"] == (60, ("app01.corp.contoso.example.",))
    assert after["10.2.168.192.in-addr.arpa. PTR"] is None
    # ... and the VMs that keep their addresses (whole-subnet move) are left alone.
    assert after["sql01 A"] == before["sql01 A"]
    assert after["web01 A"] == before["web01 A"]
    verified = [s for s in engine.view(failover.id).steps if s.action == "dns.apply" and s.changed]
    assert verified, "the DNS steps changed records"
    step_rows = {r.name: r for r in engine.journal.steps(failover.id)}
    for s in verified:
        report = step_rows[s.name].outcome["info"]["verification"]
        assert report["ok"] is True, report

    _run(engine, OperationKind.COMMIT)
    # Commit gives the new records the TTL the old ones had, a moved PTR the one it replaces.
    assert bind.rrset(f"app01.{FORWARD}", "A") == (3600, ("172.16.1.10",))
    assert bind.rrset("10.1.16.172.in-addr.arpa.", "PTR") == (3600, ("app01.corp.contoso.example.",))

    _run(engine, OperationKind.REVERSE)
    _run(engine, OperationKind.FAILBACK)
    assert _records(bind) == before


def test_a_record_changed_by_someone_else_is_reported_not_overwritten(site) -> None:
    engine, bind = site
    update = bind.foreign_update(FORWARD)
    update.replace("app02", 3600, "A", "192.168.2.99")
    bind.send_update(update)

    # app02's A record now holds an address that is not app02's: not the agent's to change.
    with pytest.raises(RecordNotManaged) as refused:
        engine.start(OperationKind.PLANNED_FAILOVER, PLAN, requested_by="test")
    assert "app02.corp.contoso.example." in str(refused.value)
    assert bind.rrset(f"app02.{FORWARD}", "A") == (3600, ("192.168.2.99",))

    # Taken over explicitly, it is changed (and the take-over is audited).
    op = engine.create(OperationKind.PLANNED_FAILOVER, PLAN, requested_by="test", take_over=True)
    view = engine.run(op)
    while view.status == "waiting_for_manual_action":
        view = engine.resume(view.id, actor="test")
    assert view.status == "succeeded", view.errors
    assert bind.rrset(f"app02.{FORWARD}", "A") == (60, ("172.16.1.11",))
    assert any(a.action == "dns.take_over" for a in engine.store.audit_trail())


def test_lowering_ttls_before_a_planned_failover_waits_out_the_old_ttl(site, tmp_path: Path) -> None:
    engine, bind = site
    waits: list[float] = []
    cfg = engine.config.model_copy(update={"dns": engine.config.dns.model_copy(
        update={"ttl": engine.config.dns.ttl.model_copy(update={"lower_before_planned": True})})})
    engine = Engine(cfg, engine.ports, engine.store, sleep=waits.append)
    plan = engine.plan(PLAN, "planned")
    assert any("waits 3600 s" in n for n in plan.notes), plan.notes

    _run(engine, OperationKind.PLANNED_FAILOVER)
    # The old TTL (3600 s) was waited out once, after the TTLs were lowered and before any change.
    assert any(w > 3500 for w in waits), waits
    assert bind.rrset(f"app01.{FORWARD}", "A") == (60, ("172.16.1.10",))


@pytest.fixture
def site_with_jump_host(named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from tests.integration.test_engine_reserve import JUMP_HOST, WEST

    inventory = (demo_dir() / "demo-inventory.yaml").read_text()
    yield from _site(named, tmp_path, monkeypatch, inventory.replace(WEST, WEST + JUMP_HOST))


def test_dns_in_bind_follows_the_address_vmm_granted_when_the_planned_one_was_taken(site_with_jump_host) -> None:
    from tests.integration.test_engine_reserve import take

    engine, bind = site_with_jump_host
    op = engine.create(OperationKind.PLANNED_FAILOVER, PLAN, requested_by="test")
    take(engine.ports, "west-apps-pool", "172.16.1.10")  # app01's planned address, taken after planning
    view = engine.run(op)
    while view.status == "waiting_for_manual_action":
        view = engine.resume(view.id, actor="test")
    assert view.status == "succeeded", view.errors

    [granted] = [r.address for r in engine.journal.reservations() if r.vm == "app01"]
    assert granted != "172.16.1.10"
    assert bind.rrset(f"app01.{FORWARD}", "A") == (60, (granted,))
    reverse = ".".join(reversed(granted.split("."))) + ".in-addr.arpa."
    assert bind.rrset(reverse, "PTR") == (60, ("app01.corp.contoso.example.",))
    assert bind.rrset("10.1.16.172.in-addr.arpa.", "PTR") is None, "the planned address is not app01's"
    assert bind.rrset("10.2.168.192.in-addr.arpa.", "PTR") is None, "app01's old PTR is gone"

    _run(engine, OperationKind.COMMIT)
    assert bind.rrset(f"app01.{FORWARD}", "A") == (3600, (granted,))
    assert bind.rrset(reverse, "PTR") == (3600, ("app01.corp.contoso.example.",))

"""An unplanned failover when the primary site has gone dark: nothing there answers.

The agent must still plan (from the last good read of the dark site, saying so in the plan),
skip and record what it cannot reach there, and carry on with everything at the recovery site.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from agent.configfile import demo_dir, load_config
from agent.engine.model import OperationKind
from agent.engine.service import Engine
from agent.engine.store import Store
from agent.errors import TransientError
from agent.wiring import connect
from tests.rigs import sim_of

PLAN = "contoso-apps"
DARK = [("*", "contoso-east"), ("*", "hv-east-*"), ("*", "rtr-east")]


@pytest.fixture
def demo(tmp_path: Path):
    for name in ("demo.yaml", "demo-inventory.yaml"):
        shutil.copy(demo_dir() / name, tmp_path / name)
    cfg = yaml.safe_load((tmp_path / "demo.yaml").read_text())
    cfg["agent"]["data_dir"] = str(tmp_path / "var")
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    loaded = load_config(tmp_path / "demo.yaml")
    connection = connect(loaded)
    store = Store.for_path(tmp_path / "var" / "agent.sqlite")
    engine = Engine(loaded.config, connection.ports, store, sleep=lambda s: None)
    yield engine, sim_of(connection)
    connection.close()
    store.close()


def _go_dark(world) -> None:
    for call, target in DARK:
        world.inject({"call": call, "target": target, "fault": "transient"})


def test_unplanned_failover_of_a_dark_site_plans_from_the_last_read_and_carries_on(demo) -> None:
    engine, world = demo
    engine.plan(PLAN, "planned")  # the agent read both sites while they were up (as validate/plan do)
    _go_dark(world)

    plan = engine.plan(PLAN, "unplanned")
    assert any("contoso-east is unreachable" in n and "last read" in n for n in plan.notes), plan.notes

    view = engine.start(OperationKind.UNPLANNED_FAILOVER, PLAN, requested_by="test")
    while view.status == "waiting_for_manual_action":
        view = engine.resume(view.id, actor="test")
    # Every VM made it: what could not be reached at the dark site was skipped and recorded.
    assert view.status == "succeeded", view.errors
    steps = {r.name: r for r in engine.journal.steps(view.id)}
    shutdowns = [r for name, r in steps.items() if "shutdown-source" in name]
    assert shutdowns and all(
        it.get("skipped", "").startswith("unreachable") for r in shutdowns for it in r.outcome["items"])
    withdraw_east = [r for name, r in steps.items() if name.endswith("routes-withdraw/rtr-east")]
    assert withdraw_east and all(it.get("skipped") for it in withdraw_east[0].outcome["items"])

    snap = world.snapshot()
    for vm in ("sql01", "app01", "app02", "web01"):
        assert snap["replications"][vm]["state"] == "FailedOverWaitingCompletion", vm
    # The subnet is announced at the recovery site and the branch router follows it.
    assert "192.168.1.0/24" in snap["routes"]["rtr-west"]["routes"]
    assert snap["routes"]["rtr-branch"]["routes"]["192.168.1.0/24"]["next_hop"] == "10.0.0.2"


def test_a_planned_failover_never_plans_from_stale_data(demo) -> None:
    engine, world = demo
    engine.plan(PLAN, "planned")
    _go_dark(world)
    with pytest.raises(TransientError):
        engine.plan(PLAN, "planned")


def test_without_any_earlier_read_a_dark_site_cannot_be_planned(demo) -> None:
    engine, world = demo
    _go_dark(world)
    with pytest.raises(TransientError):
        engine.plan(PLAN, "unplanned")

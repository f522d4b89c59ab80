"""A DNS step killed after the server applied its update but before the journal said so.

The resumed step finds the new records already in place. It must still record them as the
agent's own writing, or a later cancel/failback would not put the originals back.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
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


class Killed(BaseException):
    """Stops the engine where it stands, as kill -9 would (not an Exception: nothing catches it)."""


class DiesAfterApply:
    """The DNS driver, except that the agent dies right after the server accepted an update."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name

    def read(self, zone, names):
        return self.inner.read(zone, names)

    def apply(self, zone, changes):
        self.inner.apply(zone, changes)
        raise Killed

    def verify(self, zone, changes):
        return self.inner.verify(zone, changes)


class _Agent:
    """An engine on the demo copy in ``tmp_path``, its DNS server dying after each update if asked."""

    def __init__(self, tmp_path: Path, *, die: bool, driver: type[DiesAfterApply] = DiesAfterApply) -> None:
        loaded = load_config(tmp_path / "demo.yaml")
        self.connection = connect(loaded)
        ports = self.connection.ports
        if die:
            ports = replace(ports, dns={**ports.dns, "dns-contoso": driver(ports.dns["dns-contoso"])})
        self.store = Store.for_path(tmp_path / "var" / "agent.sqlite")
        self.engine = Engine(loaded.config, ports, self.store, sleep=lambda s: None)
        self.world = sim_of(self.connection)

    def close(self) -> None:
        self.connection.close()
        self.store.close()


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    for name in ("demo.yaml", "demo-inventory.yaml"):
        shutil.copy(demo_dir() / name, tmp_path / name)
    cfg = yaml.safe_load((tmp_path / "demo.yaml").read_text())
    cfg["agent"]["data_dir"] = str(tmp_path / "var")
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return tmp_path


def test_records_written_just_before_a_crash_are_still_restored_by_cancel(config_dir: Path) -> None:
    agent = _Agent(config_dir, die=False)
    original = agent.world.snapshot()["record_sets"]
    agent.close()

    agent = _Agent(config_dir, die=True)
    engine = agent.engine
    with pytest.raises(Killed):
        view = engine.start(OperationKind.PLANNED_FAILOVER, PLAN, requested_by="test")
        while view.status == "waiting_for_manual_action":
            view = engine.resume(view.id, actor="test")
    op_id = engine.journal.operations(limit=1)[0].id
    agent.close()

    agent = _Agent(config_dir, die=False)
    engine = agent.engine
    [view] = engine.resume_unfinished()
    while view.status == "waiting_for_manual_action":
        view = engine.resume(view.id, actor="test")
    assert view.id == op_id and view.status == "succeeded", view.errors
    assert agent.world.snapshot()["record_sets"] != original

    # Roll the failover back through its snapshots: every record must come back, including
    # those whose update landed just before the crash.
    from agent.engine.model import ERROR_POLICY
    from agent.engine.operations import cancel_steps
    from agent.engine.planio import plan_from_json

    op = engine.journal.operation(op_id)
    plan = plan_from_json(op.plan)
    engine.journal.release_vms(op_id)
    undo = engine.journal.create_operation(
        kind=OperationKind.CANCEL, plan_name=PLAN, plan=op.plan, mode=op.mode,
        error_policy=ERROR_POLICY[OperationKind.CANCEL], source_site=op.source_site, target_site=op.target_site,
        steps=[s for s in cancel_steps(engine.config, plan, op_id) if s.action == "dns.restore"],
        vms=[v.name for v in plan.vms], parent_id=op_id)
    assert engine.run(undo).status == "succeeded"
    assert agent.world.snapshot()["record_sets"] == original
    agent.close()


class DiesAfterPartOfApply(DiesAfterApply):
    """The agent dies after the server applied only the first set of an update."""

    def apply(self, zone, changes):
        self.inner.apply(zone, changes[:1])
        raise Killed


class Unreachable(DiesAfterApply):
    """The DNS server reads but takes no update: every write times out."""

    writes = 0

    def apply(self, zone, changes):
        Unreachable.writes += 1
        raise TransientError("the DNS server did not answer", server=self.name)


def test_a_set_found_written_is_the_agents_even_when_the_rest_of_its_zone_cannot_be_written(
        config_dir: Path) -> None:
    """A resumed DNS step finds part of its zone written by the attempt that was killed, and
    cannot write the rest: the part found is still journalled as the agent's, so the cancel
    puts the original back."""
    agent = _Agent(config_dir, die=False)
    original = agent.world.snapshot()["record_sets"]
    agent.close()

    agent = _Agent(config_dir, die=True, driver=DiesAfterPartOfApply)
    with pytest.raises(Killed):
        view = agent.engine.start(OperationKind.PLANNED_FAILOVER, PLAN, requested_by="test")
        while view.status == "waiting_for_manual_action":
            view = agent.engine.resume(view.id, actor="test")
    op_id = agent.engine.journal.operations(limit=1)[0].id
    assert agent.world.snapshot()["record_sets"] != original  # one set of the zone is written
    agent.close()

    agent = _Agent(config_dir, die=True, driver=Unreachable)
    [view] = agent.engine.resume_unfinished()
    assert view.status == "failed" and Unreachable.writes > 0, view.errors
    agent.close()

    agent = _Agent(config_dir, die=False)
    engine = agent.engine
    from agent.engine.model import ERROR_POLICY
    from agent.engine.operations import cancel_steps
    from agent.engine.planio import plan_from_json

    op = engine.journal.operation(op_id)
    plan = plan_from_json(op.plan)
    engine.journal.release_vms(op_id)
    undo = engine.journal.create_operation(
        kind=OperationKind.CANCEL, plan_name=PLAN, plan=op.plan, mode=op.mode,
        error_policy=ERROR_POLICY[OperationKind.CANCEL], source_site=op.source_site, target_site=op.target_site,
        steps=[s for s in cancel_steps(engine.config, plan, op_id) if s.action == "dns.restore"],
        vms=[v.name for v in plan.vms], parent_id=op_id)
    assert engine.run(undo).status == "succeeded"
    assert agent.world.snapshot()["record_sets"] == original
    agent.close()

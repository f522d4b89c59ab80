"""An upgraded agent resumes what an older one journalled, and refuses what it cannot run as
journalled -- before changing anything.

``tests/fixtures/legacy-2e96aca`` holds the files of agents of commit 2e96aca (before the typed
step contract) with an unfinished operation each: paused at a manual step, killed in the middle
of a step, a test failover, and a network-only failover waiting for its orchestrator. Today's
agent must finish each one and leave the simulated sites exactly as that version did when it
resumed the same files.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from agent.configfile import load_config
from agent.engine.journal import StepSequenceChanged
from agent.engine.model import OperationKind, OpStatus
from agent.engine.service import Engine
from agent.engine.steps import IncompatibleStep
from agent.engine.store import Store
from agent.wiring import connect
from tests.rigs import ACTOR, normalised, play_orchestrator, sim_of

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy-2e96aca"
SCENARIOS = ("waiting-full", "killed-full", "test-waiting-full", "waiting-network-only")


class Agent:
    """Today's agent on a copy of one legacy folder."""

    def __init__(self, folder: Path) -> None:
        self.loaded = load_config(folder / "agent.yaml")
        self.connection = connect(self.loaded)
        self.store = Store.for_path(folder / "agent.sqlite")
        self.engine = Engine(self.loaded.config, self.connection.ports, self.store, sleep=lambda s: None)

    def finish_everything(self) -> None:
        """Start-up resume, then every pause answered as its operator or orchestrator would."""
        self.engine.resume_unfinished()
        for _ in range(20):
            waiting = self.engine.operations(status=[OpStatus.WAITING.value])
            if not waiting:
                return
            for op in waiting:
                play_orchestrator(self.engine, self.connection.ports, op.id)
                self.engine.resume(op.id, actor=ACTOR)
        raise AssertionError("operations keep waiting")

    def close(self) -> None:
        self.connection.close()
        self.store.close()


def legacy_copy(name: str, tmp_path: Path) -> Path:
    folder = tmp_path / name
    shutil.copytree(LEGACY / name, folder)
    return folder


@pytest.mark.parametrize("name", SCENARIOS)
def test_an_operation_journalled_by_2e96aca_resumes_to_the_same_end(name: str, tmp_path: Path) -> None:
    folder = legacy_copy(name, tmp_path)
    with sqlite3.connect(folder / "agent.sqlite") as db:
        [(unfinished,)] = db.execute("SELECT id FROM operations").fetchall()
    expected = json.loads((folder / "expected-after-resume.json").read_text())

    agent = Agent(folder)
    try:
        agent.finish_everything()
        view = agent.engine.view(unfinished)
        assert view.status == OpStatus.SUCCEEDED.value, view.errors
        ops = sorted(({"kind": o.kind, "status": o.status} for o in agent.engine.operations(limit=100)),
                     key=lambda o: o["kind"])
        assert ops == expected["operations"]
        assert normalised(sim_of(agent.connection).snapshot()) == expected["world"]
    finally:
        agent.close()
    with sqlite3.connect(folder / "agent.sqlite") as db:
        versions = dict(db.execute("SELECT spec_version, count(*) FROM steps GROUP BY spec_version").fetchall())
    assert set(versions) == {1}, "the old steps keep the schema version they were written in"


def test_a_journal_this_agent_would_not_write_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    """The config lost the manual step the paused failover waits at: resuming it would run steps
    nobody reviewed. It is refused, naming the step, and neither the store nor the sites move."""
    folder = legacy_copy("waiting-full", tmp_path)
    config = yaml.safe_load((folder / "agent.yaml").read_text())
    config["recovery_plans"][0]["groups"][0]["after"] = []
    (folder / "agent.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    agent = Agent(folder)
    try:
        [op] = agent.engine.operations(status=[OpStatus.WAITING.value])
        before = sim_of(agent.connection).snapshot()
        calls = len(sim_of(agent.connection).calls())
        with pytest.raises(StepSequenceChanged) as caught:
            agent.engine.resume(op.id, actor=ACTOR)
        assert "databases/after/0/manual" in caught.value.message
        assert f"ops cancel {op.id}" in caught.value.message
        assert agent.engine.view(op.id).status == OpStatus.WAITING.value
        assert sim_of(agent.connection).snapshot() == before
        assert len(sim_of(agent.connection).calls()) == calls
    finally:
        agent.close()


@pytest.mark.parametrize(("change", "said"), [
    ("UPDATE steps SET spec_version = 99 WHERE name = 'applications/reserve'", "schema version 99"),
    ("UPDATE steps SET spec = replace(spec, '\"site\": \"contoso-west\", ', '') WHERE name = 'applications/reserve'",
     "applications/reserve: its journalled arguments do not fit (schema version 1): site"),
    ("UPDATE steps SET action = 'vmm.teleport' WHERE name = 'applications/reserve'", "vmm.teleport"),
])
def test_steps_this_agent_cannot_read_are_refused_before_anything_runs(change: str, said: str,
                                                                        tmp_path: Path) -> None:
    folder = legacy_copy("waiting-full", tmp_path)
    Store.for_path(folder / "agent.sqlite").close()  # migrated, as the upgraded agent's first start does
    with sqlite3.connect(folder / "agent.sqlite") as db:
        assert db.execute(change).rowcount == 1
    agent = Agent(folder)
    try:
        [op] = agent.engine.operations(status=[OpStatus.WAITING.value])
        calls = len(sim_of(agent.connection).calls())
        with pytest.raises((IncompatibleStep, StepSequenceChanged)) as caught:
            agent.engine.resume(op.id, actor=ACTOR)
        assert said in caught.value.message
        assert agent.engine.view(op.id).status == OpStatus.WAITING.value
        assert len(sim_of(agent.connection).calls()) == calls
    finally:
        agent.close()


def test_new_operations_are_journalled_in_the_current_schema(tmp_path: Path) -> None:
    from agent.engine.steps import SPEC_VERSION

    agent = Agent(legacy_copy("waiting-full", tmp_path))
    try:
        [old] = agent.engine.operations(status=[OpStatus.WAITING.value])
        agent.engine.cancel(old.id, actor=ACTOR)  # the old one holds the VMs
        new = agent.engine.create(OperationKind.PREPARE, "contoso-apps")
        rows = agent.engine.journal.steps(new)
        assert rows and {(r.spec_version, r.stage is not None) for r in rows} == {(SPEC_VERSION, True)}
        assert all("stage" not in r.spec for r in rows)
    finally:
        agent.close()

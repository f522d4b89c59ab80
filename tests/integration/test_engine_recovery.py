"""Durable execution, proved by counting (STYLE habits 10 and 11, DBOS/Temporal recovery tests).

A planned failover of the demo plan is killed at every step boundary -- after its intent is
journalled, after it acted, after its outcome is journalled -- and a new agent on the same store
and simulator files resumes it. Whatever the moment, the sites must end exactly as after an
uninterrupted run, and every change in the simulator must have happened exactly once (a
recorded outcome is replayed, never re-executed; a step cut off mid-way runs again and finds
nothing left to do).

Two more kills are real ``SIGKILL``s of a separate agent process: one at a step boundary, one
in the middle of a step whose Hyper-V call took effect but answered with a timeout.

The one effect that may happen twice is a recovery-plan script: the engine cannot know whether
a script it was running when it died had finished, so a script step cut off between running
and recording runs again (at least once, like a retried call). Every other effect is exactly once.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.engine.model import OperationKind, OpStatus, StepStatus
from tests.rigs import (
    ACTOR,
    Effect,
    Killed,
    Rig,
    Templates,
    changes,
    copy_demo,
    kill_at,
    normalised,
)

PHASES = ("intent", "acted", "outcome")
SWEEP = pytest.mark.usefixtures("untraced")
"""The sweeps run without coverage's tracing (see the fixture): the single kills below trace the
same paths."""
AT_LEAST_ONCE = "script.run"
"""Scripts are not idempotent by contract: one cut off between running and recording re-runs."""


@functools.cache
def _demo_steps() -> dict[OperationKind, list[tuple[str, str]]]:
    """(step name, action) of a planned failover, a test failover and its cleanup of the demo
    plan, in order -- read from operations created (not run) on a throwaway copy of the demo."""
    with tempfile.TemporaryDirectory() as tmp:
        templates = Templates.build(copy_demo(Path(tmp) / "demo"))
        state, store = templates.copy_to(Path(tmp) / "rig")
        rig = Rig(templates.loaded, state, store)
        try:
            ops = {}
            for kind in (OperationKind.PLANNED_FAILOVER, OperationKind.TEST_FAILOVER):
                ops[kind] = rig.engine.create(kind, "contoso-apps")
                rig.engine.journal.release_vms(ops[kind])  # never to run
            ops[OperationKind.CLEANUP_TEST] = rig.engine.create(
                OperationKind.CLEANUP_TEST, parent_id=ops[OperationKind.TEST_FAILOVER])
            return {kind: [(s.name, s.action) for s in rig.engine.journal.steps(op_id)] for kind, op_id in ops.items()}
        finally:
            rig.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "boundary" in metafunc.fixturenames or "drill_boundary" in metafunc.fixturenames:
        steps = _demo_steps()
    if "boundary" in metafunc.fixturenames:
        cases = [(i, name, action, phase) for i, (name, action) in enumerate(steps[OperationKind.PLANNED_FAILOVER])
                 for phase in PHASES]
        metafunc.parametrize("boundary", cases, ids=[f"{i:02d}-{name}-{phase}" for i, name, _, phase in cases])
    if "drill_boundary" in metafunc.fixturenames:
        # The drill is killed where it hurts most: after a step acted, before its outcome is journalled.
        cases = [(kind, name, action) for kind in (OperationKind.TEST_FAILOVER, OperationKind.CLEANUP_TEST)
                 for name, action in steps[kind]]
        metafunc.parametrize("drill_boundary", cases, ids=[f"{kind}-{name}" for kind, name, _ in cases])


@dataclass
class Created:
    """Templates with the operation every test of a sweep runs already created (creating it
    only reads the sites and journals it), and its id."""

    templates: Templates
    op_id: str


@pytest.fixture(scope="module")
def planned(demo: Templates, tmp_path_factory: pytest.TempPathFactory) -> Created:
    return Created(*demo.after(tmp_path_factory.mktemp("planned"), lambda rig: rig.engine.create(
        OperationKind.PLANNED_FAILOVER, "contoso-apps")))


class Uninterrupted:
    """The reference: the same planned failover, never killed."""

    def __init__(self, rig: Rig, op_id: str) -> None:
        view = rig.through_pauses(rig.engine.run(op_id))
        assert view.status == OpStatus.SUCCEEDED.value, view.errors
        self.steps = [s.name for s in view.steps]
        self.world = normalised(rig.world.snapshot())
        self.effects: Counter[Effect] = changes(rig.world)


@pytest.fixture(scope="module")
def uninterrupted(planned: Created, tmp_path_factory: pytest.TempPathFactory) -> Uninterrupted:
    # What the run finds on a rig of its own, never interrupted: what every killed run must match.
    _, ref = planned.templates.after(tmp_path_factory.mktemp("uninterrupted"),
                                     lambda rig: Uninterrupted(rig, planned.op_id))
    # The reference itself must be worth comparing with: every kind of change of a failover.
    kinds = {kind for kind, _, _ in ref.effects}
    assert {"vmm.grant_ips", "vmm.connect_nics", "hyperv.set_power.stop", "hyperv.replicate.prepare",
            "hyperv.set_failover_configs", "hyperv.replicate.failover", "hyperv.set_power.start",
            "dns.apply", "routes.withdraw", "routes.announce", "script.run"} <= kinds
    assert max(ref.effects.values()) == 1, "an uninterrupted failover changes nothing twice"
    return ref


def assert_effects_once(effects: Counter[Effect], reference: Counter[Effect], *, script_reran: bool) -> None:
    """The same changes as the uninterrupted run, each as often (once; a re-run script twice)."""
    want = Counter({e: (2 if script_reran and e[0] == AT_LEAST_ONCE else n) for e, n in reference.items()})
    assert effects == want, f"differs from the uninterrupted run: {(effects - want) + (want - effects)}"


def assert_same_as_uninterrupted(rig: Rig, ref: Uninterrupted, *, script_reran: bool = False) -> None:
    [op] = rig.engine.operations()
    assert (op.kind, op.status) == (OperationKind.PLANNED_FAILOVER.value, OpStatus.SUCCEEDED.value)
    assert normalised(rig.world.snapshot()) == ref.world
    assert_effects_once(changes(rig.world), ref.effects, script_reran=script_reran)


# ----------------------------------------------------------------- every step boundary


@SWEEP
def test_killed_at_every_step_boundary_resumes_to_the_same_world_changing_everything_once(
        new_rig, planned: Created, uninterrupted: Uninterrupted, boundary: tuple[int, str, str, str]) -> None:
    ordinal, step, action, phase = boundary
    assert uninterrupted.steps[ordinal] == step, "the step list is a pure function of the plan"

    rig = new_rig(templates=planned.templates, crash_hook=kill_at(phase, step))
    with pytest.raises(Killed):
        rig.through_pauses(rig.engine.run(planned.op_id))
    [op] = rig.engine.operations()
    assert op.status == OpStatus.RUNNING.value, "killed, not stopped: nobody recorded an end"
    # A step taken ahead may be killed while a manual pause is already waiting, the operation
    # finishing the steps begun beside it: that pause is asked again after the restart.
    waiting = {s.name for s in rig.engine.journal.steps(op.id) if s.status == "waiting"}

    rig.restart()  # a new agent: new engine, drivers and store on the same two files
    rig.resume_all()

    assert_same_as_uninterrupted(rig, uninterrupted, script_reran=(action == "script" and phase == "acted"))
    # The step with a recorded outcome was replayed, not run again; one cut off ran once more.
    # (A manual pause recorded as waiting is asked again: it does nothing but wait.)
    attempts = {s.name: s.attempts for s in rig.engine.journal.steps(op.id)}
    reran = phase != "outcome" or action == "manual"
    assert attempts == {name: 2 if (name == step and reran) or name in waiting else 1
                        for name in uninterrupted.steps}
    assert any(a.action == "operation.interrupted" for a in rig.store.audit_trail(op.id))


class UninterruptedDrill:
    """The reference drill: a test failover (through its pause) and its cleanup, never killed."""

    def __init__(self, rig: Rig) -> None:
        self.before = rig.world.snapshot()
        test = rig.start(OperationKind.TEST_FAILOVER)
        assert test.status == OpStatus.SUCCEEDED.value, test.errors
        self.during = normalised(rig.world.snapshot())
        self.test_effects = changes(rig.world)
        since = len(rig.world.calls())
        cleanup = rig.start(OperationKind.CLEANUP_TEST, parent_id=test.id)
        assert cleanup.status == OpStatus.SUCCEEDED.value, cleanup.errors
        assert rig.world.snapshot() == self.before
        self.cleanup_effects = changes(rig.world, since)


@pytest.fixture(scope="module")
def uninterrupted_drill(demo: Templates, tmp_path_factory: pytest.TempPathFactory) -> UninterruptedDrill:
    _, ref = demo.after(tmp_path_factory.mktemp("uninterrupted-drill"), UninterruptedDrill)
    assert max(n for e, n in ref.test_effects.items() if e[0] != AT_LEAST_ONCE) == 1
    assert max(ref.cleanup_effects.values()) == 1
    return ref


@pytest.fixture(scope="module")
def drill_created(demo: Templates, tmp_path_factory: pytest.TempPathFactory) -> Created:
    return Created(*demo.after(tmp_path_factory.mktemp("drill-created"), lambda rig: rig.engine.create(
        OperationKind.TEST_FAILOVER, "contoso-apps")))


@pytest.fixture(scope="module")
def drill_done(drill_created: Created, uninterrupted_drill: UninterruptedDrill,
               tmp_path_factory: pytest.TempPathFactory) -> Created:
    """The drill run to its end, never killed (the same as the reference's), before its cleanup."""

    def run(rig: Rig) -> str:
        test = rig.through_pauses(rig.engine.run(drill_created.op_id))
        assert test.status == OpStatus.SUCCEEDED.value, test.errors
        assert normalised(rig.world.snapshot()) == uninterrupted_drill.during
        return test.id

    return Created(*drill_created.templates.after(tmp_path_factory.mktemp("drill-done"), run))


@SWEEP
def test_a_drill_killed_after_any_step_acted_resumes_and_cleans_up_changing_everything_once(
        new_rig, uninterrupted_drill: UninterruptedDrill, drill_created: Created, drill_done: Created,
        drill_boundary: tuple[OperationKind, str, str]) -> None:
    kind, step, action = drill_boundary
    ref = uninterrupted_drill
    if kind == OperationKind.TEST_FAILOVER:
        rig = new_rig(templates=drill_created.templates, crash_hook=kill_at("acted", step))
        with pytest.raises(Killed):
            rig.through_pauses(rig.engine.run(drill_created.op_id))
        rig.restart()
        [test] = [v for v in rig.resume_all() if v.status != OpStatus.WAITING.value]
        assert test.status == OpStatus.SUCCEEDED.value, test.errors
        assert normalised(rig.world.snapshot()) == ref.during
        assert_effects_once(changes(rig.world), ref.test_effects, script_reran=action == "script")
        since = len(rig.world.calls())
        cleanup = rig.start(OperationKind.CLEANUP_TEST, parent_id=test.id)
    else:
        rig = new_rig(templates=drill_done.templates, crash_hook=kill_at("acted", step))
        since = len(rig.world.calls())
        with pytest.raises(Killed):
            rig.start(OperationKind.CLEANUP_TEST, parent_id=drill_done.op_id)
        rig.restart()
        [cleanup] = rig.resume_all()
    assert cleanup.status == OpStatus.SUCCEEDED.value, cleanup.errors
    assert rig.world.snapshot() == ref.before
    assert_effects_once(changes(rig.world, since), ref.cleanup_effects, script_reran=False)


# ---------------------------------------------------------------------- real SIGKILL

CHILD = textwrap.dedent('''
    """A separate agent process: runs a planned failover of the demo plan (answering its manual
    pause), SIGKILLing itself at (phase, step) when one is given."""
    import dataclasses, os, signal, sys, time
    from pathlib import Path

    from agent.configfile import load_config
    from agent.engine.model import OperationKind
    from agent.engine.service import Engine
    from agent.engine.store import Store
    from agent.wiring import connect

    config, state, store_path, phase, step = sys.argv[1:6]

    def hook(p, s):
        if (p, s) == (phase, step):
            os.kill(os.getpid(), signal.SIGKILL)

    loaded = dataclasses.replace(load_config(config), simulator_state=Path(state))
    store = Store.open(store_path) if "://" in store_path else Store.for_path(Path(store_path))
    engine = Engine(loaded.config, connect(loaded).ports, store, crash_hook=hook,
                    sleep=time.sleep)
    view = engine.start(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    while view.status == "waiting_for_manual_action":
        view = engine.resume(view.id, actor="child")
    print(view.status)
''')


def start_child(tmp_path: Path, rig: Rig, phase: str = "", step: str = "") -> subprocess.Popen:
    script = tmp_path / "agent_child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, str(script), str(rig.loaded.path), str(rig.state_path), str(rig.store_path), phase, step],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)


def test_a_real_sigkill_at_a_step_boundary_is_resumed_by_the_next_agent(
        new_rig, store_demo: Templates, uninterrupted: Uninterrupted, tmp_path: Path) -> None:
    rig = new_rig(store_demo)  # on SQLite and on PostgreSQL
    rig.close()  # the child process is the agent now
    # Killed while the other host's failover, in the same stage, may be mid-call.
    child = start_child(tmp_path, rig, "acted", "applications/failover/hv-west-01")
    _, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]

    rig.restart()
    [view] = rig.engine.resume_unfinished()  # the pause was answered before the kill
    assert view.status == OpStatus.SUCCEEDED.value
    assert_same_as_uninterrupted(rig, uninterrupted)
    pids = {c.pid for c in rig.world.calls()}
    assert child.pid in pids and os.getpid() in pids, "both agents did part of the work"


def test_a_real_sigkill_mid_step_after_a_call_took_effect_but_timed_out(
        new_rig, uninterrupted: Uninterrupted, tmp_path: Path) -> None:
    """The ambiguous case: Hyper-V failed sql01 over, but the agent saw a timeout and was killed
    while waiting to ask again. The next agent runs the step again; Hyper-V is already there."""
    rig = new_rig()
    effect = ("hyperv.replicate.failover", "hv-west-01", "sql01")
    rig.world.set_latency("hyperv.replicate.failover", fixed=0.3)
    rig.world.inject({"call": "hyperv.replicate.failover", "target": "sql01", "fault": "timeout",
                      "applied": True, "count": 1})
    rig.close()
    child = start_child(tmp_path, rig)  # no crash hook: killed from outside
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and child.poll() is None:
            if any(c.error == "timeout" and "sql01" in c.changed for c in rig.world.calls(effect[0])):
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"the child never reached the timed-out failover: {child.communicate()[1].decode()[-2000:]}")
        child.send_signal(signal.SIGKILL)  # during the retry backoff (0.5 s or more) after the timeout
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    rig.restart()
    rig.world.clear_latency()
    steps = {s.name: s for s in rig.engine.journal.steps(rig.engine.operations()[0].id)}
    assert steps["databases/failover/hv-west-01"].status == StepStatus.RUNNING.value, "killed mid-step"
    rig.resume_all()

    assert_same_as_uninterrupted(rig, uninterrupted)
    calls = [c for c in rig.world.calls(effect[0]) if "sql01" in c.items]
    assert [(c.error, "sql01" in c.changed) for c in calls] == [("timeout", True), (None, False)], \
        "one call took effect (and timed out), the repeat after the restart found it done"


# --------------------------------------------------------------- a killed compensation


@pytest.mark.parametrize("kind, step", [
    (OperationKind.PLANNED_FAILOVER, "cancel/restart-source/hv-east-01"),
    (OperationKind.TEST_FAILOVER, "revoke-test-reservations"),
])
def test_a_cancel_killed_half_way_is_resumed_not_started_twice(new_rig, kind: OperationKind, step: str) -> None:
    rig = new_rig()
    before = normalised(rig.world.snapshot())
    view = rig.engine.start(kind, "contoso-apps")
    assert view.status == OpStatus.WAITING.value
    rig.restart(crash_hook=kill_at("acted", step))
    with pytest.raises(Killed):
        rig.engine.cancel(view.id, actor=ACTOR)
    since = len(rig.world.calls())

    rig.restart()
    rig.engine.resume_unfinished()

    child, parent = rig.engine.operations()  # newest first
    assert (parent.id, parent.status) == (view.id, OpStatus.CANCELLED.value)
    assert (child.parent_id, child.status) == (view.id, OpStatus.SUCCEEDED.value), \
        "one compensation, resumed -- not a second one"
    assert not [e for e, n in changes(rig.world, since).items() if n > 1]
    if kind == OperationKind.TEST_FAILOVER:
        assert normalised(rig.world.snapshot()) == before
    else:  # reservations are kept (protection-time state); everything else is back
        after = normalised(rig.world.snapshot())
        for part in ("replications", "failover_configs", "record_sets", "routes"):
            assert after[part] == before[part], part

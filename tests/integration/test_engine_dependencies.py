"""A failover runs each step as soon as the steps it needs have finished, and keeps its promises.

Judged from the simulator's call log: ``seq`` is the state version a changing call produced,
so it orders the changes as they took effect at the sites -- not wall time. The world is the
engine benchmark's, small: 3 groups of 6 VMs over 2 Hyper-V hosts per site, each group with a
subnet that moves whole (its routes) and addresses that change (their DNS records).

The overlap is forced, not hoped for: a crash hook holds a step at its intent until another one
has finished, which the stage-by-stage runner could never do (it would wait forever; the hook
gives up after a minute and fails the run).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path

import pytest

from agent.engine.model import OperationKind, OpStatus, StepStatus
from agent.engine.runner import stage_of
from agent.engine.store import StepRow
from tests.benchmarks.bench_engine import PLAN, generate
from tests.rigs import Rig, Templates


@pytest.fixture(autouse=True)
def schedule_by_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent journals no needs for now (agent.engine.journal.SCHEDULE_BY_NEEDS says why):
    these tests judge the runner and the declared needs as they will be once it is on."""
    monkeypatch.setattr("agent.engine.journal.SCHEDULE_BY_NEEDS", True)


GROUPS, PER_GROUP, HOSTS = 3, 6, 2
GIVE_UP_S = 60.0
"""How long a held step waits for the one it is held for: a deadlock guard, not a measurement."""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    where = Path(tmp_path_factory.mktemp("dependency-world"))
    return Templates.build(generate(where, n_vms=GROUPS * PER_GROUP, groups=GROUPS, hosts=HOSTS, retain_per_group=2))


def group_of(rig: Rig) -> dict[str, int]:
    [plan] = [p for p in rig.config.recovery_plans if p.name == PLAN]
    return {vm: g for g, group in enumerate(plan.groups) for vm in group.vms}


def effects(rig: Rig) -> dict[str, dict[str, int]]:
    """call kind -> changed item -> the seq of the change (the last, if changed twice)."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for c in rig.world.calls():
        if c.seq is not None:
            for key in c.changed:
                out[c.kind][key] = c.seq
    return out


class Holds:
    """A crash hook holding steps at their intent until other steps have their outcome."""

    def __init__(self, holds: dict[str, list[str]]) -> None:
        self.holds = holds
        self.done: dict[str, threading.Event] = defaultdict(threading.Event)
        self.lock = threading.Lock()
        self.held: list[str] = []

    def __call__(self, phase: str, step: str) -> None:
        with self.lock:
            event = self.done[step]
        if phase == "outcome":
            event.set()
        elif phase == "intent" and step in self.holds:
            for other in self.holds[step]:
                with self.lock:
                    wanted = self.done[other]
                if not wanted.wait(GIVE_UP_S):
                    raise AssertionError(f"{step} was held for {other}, which never finished meanwhile")
            self.held.append(step)


def test_groups_keep_their_order_each_vm_its_sequence_and_the_rest_overlaps(new_rig, world: Templates) -> None:
    hook = Holds({
        # The next group's reservation and this group's failover IPs are made while its sources
        # are still up: the first shutdown waits for them.
        "g0/shutdown-source/a-hv1": ["g1/reserve", "g0/set-failover-ip/b-hv1", "g0/set-failover-ip/b-hv2"],
        # DNS does not wait for the routes.
        "g0/routes-withdraw/r-a": ["g0/dns/ns/corp.example."],
    })
    rig = new_rig(templates=world, crash_hook=hook)

    view = rig.start(OperationKind.PLANNED_FAILOVER, PLAN)

    assert view.status == OpStatus.SUCCEEDED.value, view.errors
    assert sorted(hook.held) == ["g0/routes-withdraw/r-a", "g0/shutdown-source/a-hv1"]
    seq = effects(rig)
    group = group_of(rig)
    vms = sorted(group)
    stop, start = seq["hyperv.set_power.stop"], seq["hyperv.set_power.start"]
    assert set(stop) == set(start) == set(vms)
    for g in range(GROUPS - 1):
        up = max(start[vm] for vm in vms if group[vm] == g)
        assert min(stop[vm] for vm in vms if group[vm] == g + 1) > up, f"a VM of g{g + 1} went down before g{g} was up"
    prepare, failover = seq["hyperv.replicate.prepare"], seq["hyperv.replicate.failover"]
    set_ip = seq["hyperv.set_failover_configs"]
    # The VMs that keep their addresses keep their names too: the others' A records move.
    named = {vm: seq["dns.apply"][f"{vm}.corp.example. A"] for vm in vms if f"{vm}.corp.example. A" in seq["dns.apply"]}
    assert {group[vm] for vm in named} == set(range(GROUPS))
    for vm in vms:
        assert stop[vm] < prepare[vm] < failover[vm] < start[vm], vm
        assert set_ip[f"{vm}/nic0"] < failover[vm], vm
        assert named.get(vm, start[vm] + 1) > start[vm], f"{vm}'s name moved before it was up"
    # The overlap really happened: g1's addresses were granted before g0's VMs were up (the
    # grants are keyed pool:address), and g0's names moved before its subnet left r-a.
    g1_grants = {f"{r.pool}:{r.address}" for r in rig.engine.journal.reservations(purpose="failover")
                 if group[r.vm] == 1}
    assert g1_grants and max(seq["vmm.grant_ips"][k] for k in g1_grants) < max(
        start[vm] for vm in vms if group[vm] == 0)
    assert max(named[vm] for vm in named if group[vm] == 0) < seq["routes.withdraw"]["r-a:10.10.0.0/24"]
    for g in range(GROUPS):  # a subnet moves once its last VM is up
        assert seq["routes.withdraw"][f"r-a:10.10.{g}.0/24"] > max(start[vm] for vm in vms if group[vm] == g)


def test_a_stop_at_the_first_error_leaves_the_next_group_running_at_the_source(new_rig, world: Templates) -> None:
    rig = new_rig(templates=world)
    rig.world.inject({"call": "hyperv.replicate.failover", "target": "vm0001", "fault": "permanent"})

    view = rig.start(OperationKind.PLANNED_FAILOVER, PLAN)

    assert view.status == OpStatus.FAILED.value and view.failed_vms == ["vm0001"]
    group = group_of(rig)
    later = {vm for vm, g in group.items() if g > 0}
    changed = effects(rig)
    for kind in ("hyperv.set_power.stop", "hyperv.replicate.prepare", "hyperv.replicate.failover",
                 "hyperv.set_power.start"):
        assert not later & set(changed[kind]), f"{kind} reached a later group"
    assert not any(k.startswith(tuple(f"{vm}." for vm in later)) for k in changed["dns.apply"])
    assert not changed["routes.withdraw"] and not changed["routes.announce"]

    rig.world.clear_faults()
    view = rig.through_pauses(rig.engine.resume(view.id, actor="alice@test"))
    assert view.status == OpStatus.SUCCEEDED.value, view.errors


def test_an_operation_journalled_without_needs_runs_stage_by_stage(new_rig, world: Templates) -> None:
    """An agent before revision 0007 wrote no needs: its operations resume as it ran them, each
    stage after every step of the stages before it has finished."""
    rig = new_rig(templates=world)
    op_id = rig.engine.create(OperationKind.PLANNED_FAILOVER, PLAN)
    with rig.store.session() as s:
        for row in s.query(StepRow).filter(StepRow.operation_id == op_id):
            assert row.needs is not None, "this agent journals what each step needs"
            row.needs = None
    rows = rig.engine.journal.steps(op_id)
    stage = {r.name: stage_of(r) for r in rows}
    early: list[tuple[str, list[str]]] = []

    def check(phase: str, step: str) -> None:
        if phase == "intent":
            unfinished = [r.name for r in rig.engine.journal.steps(op_id) if stage[r.name] < stage[step]
                          and r.status not in (StepStatus.SUCCEEDED.value, StepStatus.SKIPPED.value)]
            if unfinished:
                early.append((step, unfinished))

    rig.engine.runner.crash_hook = check
    view = rig.through_pauses(rig.engine.run(op_id))

    assert view.status == OpStatus.SUCCEEDED.value, view.errors
    assert early == [], "a step started before an earlier stage had finished"
    assert len({stage[n] for n in stage}) > GROUPS * 5, "the barrier is judged on many stages"


@pytest.fixture(scope="module")
def one_per_host(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    where = Path(tmp_path_factory.mktemp("one-per-host"))
    config = generate(where, n_vms=GROUPS * PER_GROUP, groups=GROUPS, hosts=HOSTS, retain_per_group=2)
    data = json.loads(config.read_text())
    data["policies"] = {"concurrency": {"per_host": 1}}
    config.write_text(json.dumps(data))
    return Templates.build(config)


def test_a_step_taken_ahead_never_takes_a_hosts_slot_before_the_critical_path(new_rig, one_per_host: Templates) -> None:
    """One call at a time per target: the site's VMM is wanted by every group's reservation at
    once, and the first group's NIC connections (what its failover waits for) go before the
    later groups' reservations. What the journal shows running at a target is really talking
    to it: never more steps than the target's limit, none queued behind another as running."""
    rig = new_rig(templates=one_per_host)
    op_id = rig.engine.create(OperationKind.PLANNED_FAILOVER, PLAN)
    target = {r.name: r.target for r in rig.engine.journal.steps(op_id)}
    order: list[str] = []
    crowded: list[tuple[str, list[str]]] = []

    def watch(phase: str, step: str) -> None:
        if phase == "intent":
            running = [r.name for r in rig.engine.journal.steps(op_id)
                       if r.status == StepStatus.RUNNING.value and r.target == target[step]]
            if running != [step]:
                crowded.append((step, running))
            if target[step] == "vmm:site-b":
                order.append(step)

    rig.engine.runner.crash_hook = watch
    view = rig.through_pauses(rig.engine.run(op_id))

    assert view.status == OpStatus.SUCCEEDED.value, view.errors
    assert crowded == []
    assert order[:3] == ["g0/reserve", "g0/connect", "g1/reserve"]

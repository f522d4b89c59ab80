"""The best schedule an operation's steps allow, from their declared dependencies.

The engine benchmark judges the engine's wall time against this: the same steps, each lasting
what its recorded calls cost in the latency model, run as early as their dependencies and the
engine's concurrency limits let them. Nothing here knows the engine's own schedule, so a needless
barrier in the runner shows up as wall time above the schedule instead of hiding inside the bound.

Dependencies are read as the journal declares them: a step row's ``needs`` is the list of the
ordinals of the steps it needs; ``None`` (the column absent, or NULL) is the older barrier
semantic, "every step of the previous stage".

Two figures come out. :func:`longest_path` ignores the limits: no schedule of these steps can be
shorter, however many threads. :func:`best_schedule` is a list schedule under the limits (each step
holds one slot of its target and one of the global limit for its whole duration, as
``agent.engine.runner.HostLimits`` does); the optimum under limits is NP-hard in general, so it
tries a few priority rules and keeps the shortest. It is a real schedule, so the optimum lies
between the two; when they are equal it is the optimum.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    id: int
    """The step's ordinal."""
    duration: float
    needs: frozenset[int] = frozenset()
    target: str | None = None
    """What the per-target limit counts (the step row's ``target``); None shares one slot set, as in the runner."""


@dataclass
class Schedule:
    makespan: float
    start: dict[int, float] = field(default_factory=dict)
    rule: str = ""
    """The priority rule that gave this schedule."""

    def finish(self, tasks: Mapping[int, Task], tid: int) -> float:
        return self.start[tid] + tasks[tid].duration


def declared_needs(rows: Iterable[Any], stage_of: Callable[[Any], int] | None = None) -> dict[int, frozenset[int]]:
    """Ordinal -> the ordinals that step needs, from journalled step rows.

    A row whose ``needs`` is None (or that has no such attribute: a journal from before the
    column) needs every step of the stage before its own; the first stage needs nothing."""
    if stage_of is None:
        from agent.engine.runner import stage_of as _stage_of

        stage_of = _stage_of
    rows = list(rows)
    by_stage: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        by_stage[stage_of(r)].append(r.ordinal)
    stages = sorted(by_stage)
    previous = {s: frozenset(by_stage[stages[i - 1]]) if i else frozenset() for i, s in enumerate(stages)}
    out: dict[int, frozenset[int]] = {}
    for r in rows:
        needs = getattr(r, "needs", None)
        out[r.ordinal] = previous[stage_of(r)] if needs is None else frozenset(int(n) for n in needs)
    return out


def tasks_from(needs: Mapping[int, frozenset[int]], duration: Mapping[int, float],
               target: Mapping[int, str | None] | None = None) -> dict[int, Task]:
    """Tasks keyed by ordinal; refuses a need that names no step, and a cycle."""
    tasks = {i: Task(i, float(duration.get(i, 0.0)), frozenset(n), (target or {}).get(i)) for i, n in needs.items()}
    for t in tasks.values():
        unknown = t.needs - tasks.keys()
        if unknown:
            raise ValueError(f"step {t.id} needs steps that do not exist: {sorted(unknown)}")
        if t.id in t.needs:
            raise ValueError(f"step {t.id} needs itself")
    topological(tasks)
    return tasks


def topological(tasks: Mapping[int, Task]) -> list[int]:
    """Ordinals in an order where every step comes after those it needs (ValueError on a cycle)."""
    waiting = {i: len(t.needs) for i, t in tasks.items()}
    users = _users(tasks)
    ready = sorted(i for i, n in waiting.items() if n == 0)
    order: list[int] = []
    while ready:
        i = ready.pop()
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if len(order) != len(tasks):
        raise ValueError(f"the dependencies have a cycle among steps {sorted(set(tasks) - set(order))}")
    return order


def _users(tasks: Mapping[int, Task]) -> dict[int, list[int]]:
    users: dict[int, list[int]] = {i: [] for i in tasks}
    for t in tasks.values():
        for n in t.needs:
            users[n].append(t.id)
    return users


def earliest_finish(tasks: Mapping[int, Task]) -> dict[int, float]:
    """Each step's finish with unlimited concurrency: as soon as all it needs have finished."""
    finish: dict[int, float] = {}
    for i in topological(tasks):
        t = tasks[i]
        finish[i] = max((finish[n] for n in t.needs), default=0.0) + t.duration
    return finish


def longest_path(tasks: Mapping[int, Task]) -> float:
    """The absolute lower bound: the heaviest chain of dependencies, with no resource limit."""
    return max(earliest_finish(tasks).values(), default=0.0)


def critical_path(tasks: Mapping[int, Task]) -> list[int]:
    """The ordinals of one heaviest chain, first to last."""
    finish = earliest_finish(tasks)
    if not finish:
        return []
    path = [max(finish, key=lambda i: (finish[i], -i))]
    while tasks[path[-1]].needs:
        path.append(max(tasks[path[-1]].needs, key=lambda n: (finish[n], -n)))
    return path[::-1]


def bottom_levels(tasks: Mapping[int, Task]) -> dict[int, float]:
    """Each step's duration plus the heaviest chain of the steps that (transitively) need it."""
    users = _users(tasks)
    level: dict[int, float] = {}
    for i in reversed(topological(tasks)):
        level[i] = tasks[i].duration + max((level[u] for u in users[i]), default=0.0)
    return level


def list_schedule(tasks: Mapping[int, Task], priority: Mapping[int, float], *, per_target: int | None = None,
                  global_limit: int | None = None, rule: str = "") -> Schedule:
    """Greedy list scheduling: whenever a slot is free, start the ready step of highest priority
    whose target has a free slot (a step waiting for a busy target does not hold up others)."""
    users = _users(tasks)
    waiting = {i: len(t.needs) for i, t in tasks.items()}
    ready = [(-priority[i], i) for i, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    running: list[tuple[float, int]] = []
    busy: dict[str, int] = defaultdict(int)
    start: dict[int, float] = {}
    now = 0.0
    while ready or running:
        held: list[tuple[float, int]] = []
        while ready and (global_limit is None or len(running) < global_limit):
            entry = heapq.heappop(ready)
            t = tasks[entry[1]]
            key = t.target or ""
            if per_target is not None and busy[key] >= per_target:
                held.append(entry)
                continue
            busy[key] += 1
            start[t.id] = now
            heapq.heappush(running, (now + t.duration, t.id))
        for entry in held:
            heapq.heappush(ready, entry)
        if not running:
            break  # nothing can start and nothing runs: only possible with a limit of 0
        now = running[0][0]
        while running and running[0][0] <= now:
            _, i = heapq.heappop(running)
            busy[tasks[i].target or ""] -= 1
            for u in users[i]:
                waiting[u] -= 1
                if waiting[u] == 0:
                    heapq.heappush(ready, (-priority[u], u))
    if len(start) != len(tasks):
        raise ValueError("limits of 0 let no step start")
    makespan = max((start[i] + tasks[i].duration for i in tasks), default=0.0)
    return Schedule(makespan, start, rule)


def best_schedule(tasks: Mapping[int, Task], *, per_target: int | None = None,
                  global_limit: int | None = None) -> Schedule:
    """The shorter of two list schedules: by heaviest remaining chain (the usual rule; ties in
    the plan's order), and in the plan's order (what a runner without lookahead would do)."""
    level = bottom_levels(tasks)
    rules: Sequence[tuple[str, Mapping[int, float]]] = (
        ("heaviest remaining chain", level),
        ("plan order", {i: -float(i) for i in tasks}),
    )
    schedules = [list_schedule(tasks, p, per_target=per_target, global_limit=global_limit, rule=name)
                 for name, p in rules]
    return min(schedules, key=lambda s: s.makespan)

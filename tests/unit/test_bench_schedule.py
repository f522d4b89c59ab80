"""The engine benchmark's yardstick (tests/benchmarks/schedule.py) on handmade dependency graphs
whose best schedules are known: the judgement "engine wall <= 1.15x the dependency-respecting
schedule" is only as honest as this computation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.benchmarks.schedule import (
    Task,
    best_schedule,
    critical_path,
    declared_needs,
    list_schedule,
    longest_path,
    tasks_from,
)


def row(ordinal: int, stage: int, needs: list[int] | None = None, target: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(ordinal=ordinal, stage=stage, needs=needs, target=target, spec={}, spec_version=2)


def graph(spec: dict[int, tuple[float, set[int], str | None]]) -> dict[int, Task]:
    return tasks_from({i: frozenset(n) for i, (_, n, _) in spec.items()}, {i: d for i, (d, _, _) in spec.items()},
                      {i: t for i, (_, _, t) in spec.items()})


def test_a_chain_lasts_the_sum_of_its_steps() -> None:
    tasks = graph({1: (1.0, set(), "h"), 2: (2.0, {1}, "h"), 3: (3.0, {2}, "h")})
    assert longest_path(tasks) == 6.0
    assert best_schedule(tasks, per_target=1, global_limit=1).makespan == 6.0
    assert critical_path(tasks) == [1, 2, 3]


def test_independent_branches_overlap_and_the_heavier_one_is_the_bound() -> None:
    # a -> (b 5 s | c 2 s) -> d: b and c run side by side.
    tasks = graph({1: (1.0, set(), "x"), 2: (5.0, {1}, "y"), 3: (2.0, {1}, "z"), 4: (1.0, {2, 3}, "x")})
    assert longest_path(tasks) == 7.0
    assert critical_path(tasks) == [1, 2, 4]
    sched = best_schedule(tasks, per_target=4, global_limit=16)
    assert sched.makespan == 7.0
    assert sched.start[2] == sched.start[3] == 1.0


def test_the_per_target_and_global_limits_serialise_steps() -> None:
    same = graph({i: (1.0, set(), "h1") for i in range(4)})
    assert longest_path(same) == 1.0
    assert best_schedule(same, per_target=2, global_limit=16).makespan == 2.0
    assert best_schedule(same, per_target=4, global_limit=1).makespan == 4.0
    spread = graph({i: (1.0, set(), f"h{i}") for i in range(4)})
    assert best_schedule(spread, per_target=1, global_limit=16).makespan == 1.0
    assert best_schedule(spread, per_target=1, global_limit=3).makespan == 2.0


def test_a_step_waiting_for_a_busy_target_does_not_hold_up_another_target() -> None:
    tasks = graph({1: (3.0, set(), "a"), 2: (3.0, set(), "a"), 3: (1.0, set(), "b")})
    sched = best_schedule(tasks, per_target=1, global_limit=16)
    assert sched.start[3] == 0.0
    assert sched.makespan == 6.0


def test_the_heaviest_remaining_chain_goes_first_where_plan_order_would_lose() -> None:
    # One slot on host x: step 0 has nothing after it, step 1 feeds a 5 s step on host y.
    tasks = graph({0: (1.0, set(), "x"), 1: (1.0, set(), "x"), 2: (5.0, {1}, "y")})
    plan_order = list_schedule(tasks, {i: -float(i) for i in tasks}, per_target=1)
    assert plan_order.makespan == 7.0
    best = best_schedule(tasks, per_target=1)
    assert best.makespan == 6.0 == longest_path(tasks)
    assert best.rule == "heaviest remaining chain"


def test_rows_without_declared_needs_wait_for_the_whole_previous_stage() -> None:
    # Stage 0: a 1 s and a 3 s step; stage 1: a 2 s step. The barrier makes it 3 + 2.
    rows = [row(0, 0, target="h0"), row(1, 0, target="h1"), row(2, 1, target="h0")]
    needs = declared_needs(rows)
    assert needs == {0: frozenset(), 1: frozenset(), 2: frozenset({0, 1})}
    tasks = tasks_from(needs, {0: 1.0, 1: 3.0, 2: 2.0}, {r.ordinal: r.target for r in rows})
    assert best_schedule(tasks, per_target=4, global_limit=16).makespan == 5.0


def test_rows_of_a_journal_without_the_column_read_as_barriers() -> None:
    old = [SimpleNamespace(ordinal=i, stage=s, spec={}, spec_version=2) for i, s in ((0, 0), (1, 0), (2, 1), (3, 2))]
    assert declared_needs(old) == {0: frozenset(), 1: frozenset(), 2: frozenset({0, 1}), 3: frozenset({2})}


def test_declared_needs_replace_the_barrier() -> None:
    # Same steps, but step 2 declares that it needs only step 0: it starts after 1 s, done at 3 s.
    rows = [row(0, 0, [], "h0"), row(1, 0, [], "h1"), row(2, 1, [0], "h0")]
    tasks = tasks_from(declared_needs(rows), {0: 1.0, 1: 3.0, 2: 2.0}, {r.ordinal: r.target for r in rows})
    assert longest_path(tasks) == 3.0
    assert best_schedule(tasks, per_target=4, global_limit=16).makespan == 3.0
    # An empty list is a declaration too: needs nothing, unlike NULL.
    assert declared_needs([row(0, 0, []), row(1, 1, [])]) == {0: frozenset(), 1: frozenset()}


def test_a_null_row_after_declared_rows_waits_for_all_of_the_previous_stage() -> None:
    rows = [row(0, 0, []), row(1, 1, [0]), row(2, 1, []), row(3, 2, None)]
    assert declared_needs(rows)[3] == frozenset({1, 2})


def test_the_barrier_schedule_is_the_sum_over_stages_of_the_slowest_step() -> None:
    # Ten stages of four hosts' steps, the old bound's shape: both figures agree with it.
    rows, dur = [], {}
    for s in range(10):
        for h in range(4):
            o = s * 4 + h
            rows.append(row(o, s, None, f"h{h}"))
            dur[o] = 0.1 * (h + 1) + 0.01 * s
    tasks = tasks_from(declared_needs(rows), dur, {r.ordinal: r.target for r in rows})
    expected = sum(0.4 + 0.01 * s for s in range(10))
    assert longest_path(tasks) == pytest.approx(expected)
    assert best_schedule(tasks, per_target=4, global_limit=16).makespan == pytest.approx(expected)


def test_a_need_that_names_no_step_or_a_cycle_is_refused() -> None:
    with pytest.raises(ValueError, match="do not exist"):
        tasks_from({0: frozenset({7})}, {0: 1.0})
    with pytest.raises(ValueError, match="cycle"):
        tasks_from({0: frozenset({1}), 1: frozenset({0})}, {0: 1.0, 1: 1.0})

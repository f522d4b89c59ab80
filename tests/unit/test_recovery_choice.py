"""Resolving a recovery-point choice against a replica's points (``agent.domain.recovery``):
pure, so every case is cheap to state."""

from __future__ import annotations

from datetime import UTC, datetime

from agent.domain.model import RecoveryPoint
from agent.domain.recovery import LATEST, LATEST_APP_CONSISTENT, resolve_point
from agent.domain.validation import Refusal


def point(name: str, hour: int, consistent: bool = False) -> RecoveryPoint:
    return RecoveryPoint(name=name, created=datetime(2026, 12, 3, hour, tzinfo=UTC), app_consistent=consistent)


POINTS = [point("p7", 7), point("p5", 5, True), point("p6", 6, True)]  # in no particular order


def test_latest_names_no_snapshot_even_when_there_are_points() -> None:
    assert resolve_point("vm", LATEST, POINTS) is None
    assert resolve_point("vm", LATEST, []) is None


def test_latest_app_consistent_is_the_newest_consistent_point() -> None:
    assert resolve_point("vm", LATEST_APP_CONSISTENT, POINTS) == POINTS[2]


def test_a_name_matches_case_insensitively_as_hyper_v_compares_names() -> None:
    assert resolve_point("vm", "P5", POINTS) == POINTS[1]


def test_a_replica_without_points_is_refused_saying_so() -> None:
    refused = resolve_point("web01", "before-patch", [])
    assert isinstance(refused, Refusal) and refused.code == "recovery_point_not_found"
    assert "web01 has no recovery point named 'before-patch'; it has no recovery points" in refused.message
    none = resolve_point("web01", LATEST_APP_CONSISTENT, [point("p7", 7)])
    assert isinstance(none, Refusal) and none.code == "no_app_consistent_point"
    assert none.fields["points"] == ["p7"]
    assert "p7 (2026-12-03 07:00:00 UTC, crash-consistent)" in none.message

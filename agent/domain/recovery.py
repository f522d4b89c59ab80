"""Recovery points: which of its replica's points each VM of a failover comes up from.

The source documents let the operator choose, for test, planned and unplanned failover, the
latest point (the default), the latest application-consistent one, or a named one, and change
it after failover until the commit removes the other points. Hyper-V keeps the points as replica
snapshots (``Get-VMSnapshot -SnapshotType Replica`` / ``AppConsistentReplica``) and fails over to
one with ``Start-VMFailover -VMRecoverySnapshot``; without one it uses the latest.

A choice is resolved per VM when planning, against the points the replica host lists: the plan
names the snapshot each VM uses (none for ``latest``), so the operator reviews -- and the
checksum pins -- the exact point in time, and a point that is not there is refused before
anything changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.domain.matching import fold
from agent.domain.model import RecoveryPoint
from agent.domain.validation import NO_APP_CONSISTENT_POINT, RECOVERY_POINT_NOT_FOUND, Refusal, names

LATEST = "latest"
LATEST_APP_CONSISTENT = "latest_app_consistent"
MAX_CHOICE_LENGTH = 256


def resolve_point(vm: str, choice: str, points: Sequence[RecoveryPoint]) -> RecoveryPoint | Refusal | None:
    """The point ``choice`` names among ``points`` (a replica's, any order); None for ``latest``
    (Hyper-V's own default, which also covers the final changes a planned failover sends); a
    :class:`Refusal` naming the VM and the points it has when there is no such point."""
    if choice == LATEST:
        return None
    ordered = sorted(points, key=lambda p: p.created)
    if choice == LATEST_APP_CONSISTENT:
        consistent = [p for p in ordered if p.app_consistent]
        if consistent:
            return consistent[-1]
        return Refusal(NO_APP_CONSISTENT_POINT,
                       f"VM {vm} has no application-consistent recovery point; it has {_listing(ordered)}",
                       {"vm": vm, "recovery_point": choice, "points": [p.name for p in ordered]})
    found = [p for p in ordered if fold(p.name) == fold(choice)]
    if found:
        return found[-1]
    return Refusal(RECOVERY_POINT_NOT_FOUND,
                   f"VM {vm} has no recovery point named {choice!r}; it has {_listing(ordered)}",
                   {"vm": vm, "recovery_point": choice, "points": [p.name for p in ordered]})


def describe_point(point: RecoveryPoint) -> str:
    """A point as the operator reads it: its name, when it was taken, and whether it is
    application-consistent."""
    kind = "application-consistent" if point.app_consistent else "crash-consistent"
    return f"{point.name} ({point.created:%Y-%m-%d %H:%M:%S} UTC, {kind})"


def _listing(points: Sequence[RecoveryPoint]) -> str:
    if not points:
        return "no recovery points (only the latest state; is recovery history enabled on its replication?)"
    return "the recovery points " + names([describe_point(p) for p in points], limit=20)

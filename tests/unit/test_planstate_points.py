"""When a failover's recovery point may change (``change_recovery_point``): while its VMs are
failed over and the failover is not committed, in full mode only; otherwise refused, saying
why and what would make it valid."""

from __future__ import annotations

import pytest

from agent.domain.model import ReplicationState
from agent.engine.model import OperationKind as K
from agent.engine.planstate import KindNotValidNow, kinds_allowed, refusal
from tests.unit.test_planstate import op, rep, state

CHANGE = K.CHANGE_RECOVERY_POINT
WAITING = ReplicationState.FAILED_OVER_WAITING_COMPLETION


def failed_over(*, ops=None):
    return state([rep("a", WAITING), rep("b", WAITING)],
                 ops=ops if ops is not None else [op(1, K.UNPLANNED_FAILOVER)])


def test_allowed_while_failed_over_and_not_committed() -> None:
    status = failed_over()
    assert refusal(CHANGE, status, full_mode=True) is None
    assert CHANGE.value in kinds_allowed(status, full_mode=True)


def test_refused_once_committed_the_other_points_being_gone() -> None:
    status = state([rep("a", ReplicationState.FAILED_OVER), rep("b", ReplicationState.FAILED_OVER)],
                   ops=[op(1, K.PLANNED_FAILOVER), op(2, K.COMMIT, parent="op-000000000001")])
    refused = refusal(CHANGE, status, full_mode=True)
    assert isinstance(refused, KindNotValidNow)
    assert "removed its other recovery points" in refused.message
    assert CHANGE.value not in kinds_allowed(status, full_mode=True)


def test_refused_when_the_vms_were_committed_by_hand() -> None:
    status = state([rep("a", ReplicationState.FAILED_OVER), rep("b", WAITING)], ops=[op(1, K.PLANNED_FAILOVER)])
    refused = refusal(CHANGE, status, full_mode=True)
    assert refused is not None and "a: committed" in refused.message
    assert "point of a committed failover cannot change" in refused.message


@pytest.mark.parametrize(("ops", "words"), [
    ([], "follows a failover, and the plan has none"),
    ([op(1, K.PLANNED_FAILOVER, status="cancelled")], "was cancelled"),
    ([op(1, K.PLANNED_FAILOVER, status="failed")], "is failed: finish it"),
])
def test_refused_without_a_failover_that_ended_well(ops, words) -> None:
    refused = refusal(CHANGE, failed_over(ops=ops), full_mode=True)
    assert refused is not None and words in refused.message


def test_refused_before_any_failover_naming_the_command() -> None:
    refused = refusal(CHANGE, state([rep("a"), rep("b")], ops=[op(1, K.PLANNED_FAILOVER)]), full_mode=True)
    assert refused is not None and "Nothing is failed over" in refused.message


def test_network_only_leaves_it_to_the_orchestrator() -> None:
    refused = refusal(CHANGE, failed_over(), full_mode=False)
    assert isinstance(refused, KindNotValidNow) and "orchestrator" in refused.message

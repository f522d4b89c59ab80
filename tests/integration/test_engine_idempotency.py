"""Check, apply, apply again (STYLE habit 13), for every operation kind: the run changes the
sites (read back independently from the simulator), and running it again changes nothing.

For the kinds that move VMs (test failover, planned/unplanned failover, failback) "again" is
refused before anything is recorded: the VMs are not where such an operation starts from any
more, and a second operation would fail half-way at Hyper-V while holding the VMs -- and
cancelling *it* would roll back the first one's failover. For the follow-ups (cleanup, commit,
reverse) and prepare, "again" runs and finds nothing to do.
"""

from __future__ import annotations

import pytest

from agent.domain.plan import ReserveIp
from agent.engine.model import OperationKind as K
from agent.engine.model import OpStatus
from agent.engine.service import AlreadyFailedOver, UncleanedTestFailover
from agent.errors import RefusedError
from tests.rigs import changes

RUN_AGAIN = {
    K.PREPARE: [],
    K.CLEANUP_TEST: [K.TEST_FAILOVER],
    K.COMMIT: [K.PLANNED_FAILOVER],
    K.REVERSE: [K.PLANNED_FAILOVER, K.COMMIT],
}
REFUSED_AGAIN = {
    K.TEST_FAILOVER: ([], UncleanedTestFailover),
    K.PLANNED_FAILOVER: ([], AlreadyFailedOver),
    K.UNPLANNED_FAILOVER: ([], AlreadyFailedOver),
    K.FAILBACK: ([K.PLANNED_FAILOVER, K.COMMIT, K.REVERSE], AlreadyFailedOver),
}


def run_all(rig, kinds: list[K]) -> None:
    for kind in kinds:
        assert rig.start(kind).status == OpStatus.SUCCEEDED.value, kind


@pytest.mark.parametrize("kind", list(RUN_AGAIN), ids=str)
def test_apply_again_changes_nothing(new_rig, kind: K) -> None:
    rig = new_rig()
    run_all(rig, RUN_AGAIN[kind])
    start = len(rig.world.calls())

    first = rig.start(kind)
    middle = len(rig.world.calls())
    world = rig.world.snapshot()
    assert changes(rig.world, start), "the first run changed the sites"
    second = rig.start(kind)

    assert first.status == second.status == OpStatus.SUCCEEDED.value
    assert changes(rig.world, middle) == {}, "the second run changed nothing ..."
    assert sum(s.changed for s in second.steps) == 0, "... and reports that it changed nothing"
    assert rig.world.snapshot() == world


def test_prepare_check_shows_the_change_apply_makes_it_and_check_again_shows_none(new_rig) -> None:
    rig = new_rig()

    def to_reserve() -> list[ReserveIp]:
        plan = rig.engine.plan("contoso-apps", "planned")
        return [r for r in plan.of(ReserveIp) if not r.existing and r.purpose == "failover"]

    planned = to_reserve()
    assert len(planned) == 5  # sql01 (2), app01, app02, web01 -- web01's DHCP NIC is not ours
    view = rig.start(K.PREPARE)
    grants = rig.world.snapshot()["grants"]["contoso-west"]
    assert {(r.pool, r.address) for r in planned} == {(pool, a) for pool, held in grants.items() for a in held}
    assert view.steps[0].changed == 5
    assert to_reserve() == [], "planned again, nothing is left to reserve"


@pytest.mark.parametrize("kind", list(REFUSED_AGAIN), ids=str)
def test_moving_the_vms_again_is_refused_before_anything_is_recorded(new_rig, kind: K) -> None:
    before, refusal = REFUSED_AGAIN[kind]
    rig = new_rig()
    run_all(rig, before)
    first = rig.start(kind)
    assert first.status == OpStatus.SUCCEEDED.value
    ops, calls = len(rig.engine.operations()), len(rig.world.calls())

    with pytest.raises(refusal) as refused:
        rig.engine.start(kind, "contoso-apps")

    assert isinstance(refused.value, RefusedError)
    assert set(refused.value.fields["vms"]) and all(
        any(vm in entry for entry in refused.value.fields["vms"]) for vm in ("sql01", "app01", "app02", "web01"))
    assert len(rig.engine.operations()) == ops, "nothing recorded, no VM held"
    assert changes(rig.world, calls) == {}
    # The first operation's follow-up still works: nothing holds its VMs.
    follow_up = K.CLEANUP_TEST if kind == K.TEST_FAILOVER else K.COMMIT
    assert rig.start(follow_up).status == OpStatus.SUCCEEDED.value

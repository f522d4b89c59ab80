"""The simulated Hyper-V's recovery points: the replica host lists them (the primary none), a
failover or test failover comes up from the one named and records it, another point while a
failover is pending is refused until it is cancelled, and the commit removes them."""

from __future__ import annotations

import pytest

from agent.domain.model import ReplicationState
from agent.drivers.sim import SimWorld
from agent.errors import NotFoundError

POINTS = [{"name": "web01 - (12/3/2026 - 06:00:00)", "created": "2026-12-03T06:00:00Z", "app_consistent": True},
          {"name": "web01 - (12/3/2026 - 07:00:00)", "created": "2026-12-03T07:00:00+01:00"}]


@pytest.fixture
def pointed(world: SimWorld) -> SimWorld:
    world.set_recovery_points("web01", POINTS)
    return world


def test_only_the_replica_host_lists_the_points(pointed: SimWorld) -> None:
    [at_replica] = pointed.hyperv("site-b").get_replications("hv-b1", ["web01"])
    assert [(p.name, p.app_consistent) for p in at_replica.recovery_points] == [
        ("web01 - (12/3/2026 - 06:00:00)", True), ("web01 - (12/3/2026 - 07:00:00)", False)]
    assert at_replica.recovery_points[1].created.isoformat() == "2026-12-03T06:00:00+00:00"  # kept in UTC
    [at_primary] = pointed.hyperv("site-a").get_replications("hv-a1", ["web01"])
    assert at_primary.recovery_points == ()


def test_a_failover_to_a_point_records_it_and_another_point_waits_for_a_cancel(pointed: SimWorld) -> None:
    hv = pointed.hyperv("site-b")
    [done] = hv.replicate("hv-b1", "failover", ["web01"], {"web01": "WEB01 - (12/3/2026 - 06:00:00)"})
    assert done.changed and done.value is not None
    assert done.value.failover_point == "web01 - (12/3/2026 - 06:00:00)"  # its own spelling
    [again] = hv.replicate("hv-b1", "failover", ["web01"], {"web01": "web01 - (12/3/2026 - 06:00:00)"})
    assert again.ok and not again.changed
    [other] = hv.replicate("hv-b1", "failover", ["web01"])
    assert other.error is not None and other.error.code == "invalid_replication_state"
    assert "cancel that failover first" in other.error.message and "its latest state" in other.error.message
    [cancelled] = hv.replicate("hv-b1", "cancel", ["web01"])
    assert cancelled.value is not None and cancelled.value.failover_point is None
    [latest] = hv.replicate("hv-b1", "failover", ["web01"])
    assert latest.changed and latest.value is not None and latest.value.failover_point is None
    [committed] = hv.replicate("hv-b1", "complete", ["web01"])
    assert committed.value is not None and committed.value.state is ReplicationState.FAILED_OVER
    assert committed.value.recovery_points == ()


def test_a_point_the_replica_lacks_is_not_found_for_that_vm(pointed: SimWorld) -> None:
    hv = pointed.hyperv("site-b")
    [missing] = hv.replicate("hv-b1", "start_test", ["web01"], {"web01": "after-patch"})
    assert missing.error is not None and missing.error.code == "not_found"
    assert "web01 - (12/3/2026 - 07:00:00)" in missing.error.message
    [started] = hv.replicate("hv-b1", "start_test", ["web01"], {"web01": "web01 - (12/3/2026 - 07:00:00)"})
    assert started.value is not None and started.value.failover_point == "web01 - (12/3/2026 - 07:00:00)"
    [stopped] = hv.replicate("hv-b1", "stop_test", ["web01"])
    assert stopped.value is not None and stopped.value.failover_point is None


def test_points_are_set_only_for_a_replicated_vm_and_checked(world: SimWorld) -> None:
    with pytest.raises(NotFoundError):
        world.set_recovery_points("no-such-vm", POINTS)
    with pytest.raises(ValueError):
        world.set_recovery_points("web01", [{"name": "x", "created": "2026-12-03T06:00:00"}])  # no time zone


def test_a_reversed_relationship_starts_with_no_points(pointed: SimWorld) -> None:
    a, b = pointed.hyperv("site-a"), pointed.hyperv("site-b")
    a.set_power("hv-a1", "stop", ["web01"])
    for hv, host, action in ((a, "hv-a1", "prepare"), (b, "hv-b1", "failover"), (b, "hv-b1", "complete"),
                             (b, "hv-b1", "reverse")):
        [r] = hv.replicate(host, action, ["web01"])  # type: ignore[arg-type]
        assert r.ok, r.error
    [now] = a.get_replications("hv-a1", ["web01"])
    assert now.replica_host == "hv-a1" and now.recovery_points == ()

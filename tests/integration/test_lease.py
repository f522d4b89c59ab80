"""The leader lease on SQLite and on PostgreSQL: one holder at a time, a token that only grows,
and a process that lost the lease cannot write to the store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from agent.engine.journal import Journal
from agent.engine.lease import Lease, LeaseLost, Renewer
from agent.engine.store import NoteRow, Store, utcnow
from tests.stores import store_url  # noqa: F401  the fixture

LATER = timedelta(seconds=100)


@pytest.fixture
def stores(store_url: str) -> Iterator[tuple[Store, Store]]:  # noqa: F811
    """Two agent processes' views of one store (each its own engine, as separate processes have)."""
    a, b = Store.open(store_url), Store.open(store_url)
    yield a, b
    a.close()
    b.close()


def test_one_holder_at_a_time_and_a_released_lease_goes_to_the_next_with_a_higher_token(stores) -> None:
    a, b = stores
    first, second = Lease(a, lease_s=15), Lease(b, lease_s=15)
    assert first.acquire().holder == first.holder_id and first.holds
    held = second.acquire()
    assert not second.holds
    assert (held.holder, held.pid, held.host, held.token) == (first.holder_id, first.pid, first.host, 1)
    assert "pid" in held.describe() and "lease until" in held.describe()
    assert first.acquire().token == 1, "the holder renews, keeping its token"
    first.release()
    assert second.acquire().token == 2 and second.holds
    assert Lease(a, lease_s=15).current().holder == second.holder_id  # type: ignore[union-attr]


def test_of_many_acquiring_at_once_exactly_one_wins(stores) -> None:
    a, b = stores
    for trial in range(20):
        leases = [Lease(s, lease_s=15) for s in (a, b, a, b)]
        barrier = threading.Barrier(len(leases))

        def bid(lease: Lease, barrier: threading.Barrier) -> None:
            barrier.wait()
            lease.acquire()

        threads = [threading.Thread(target=bid, args=(lease, barrier)) for lease in leases]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [lease for lease in leases if lease.holds]
        assert len(winners) == 1, f"trial {trial}: {len(winners)} holders"
        assert winners[0].token == trial + 1, "one change of holder, one token"
        winners[0].release()


def test_a_process_whose_lease_was_taken_over_cannot_write_and_nothing_it_wrote_lands(stores) -> None:
    a, b = stores
    old = Lease(a, lease_s=15)
    old.acquire()
    Journal(a).store.audit(actor="old", action="test.before")  # allowed while it holds the lease
    # The old holder was paused past its expiry: the standby's clock is past it.
    new = Lease(b, lease_s=15, clock=lambda: utcnow() + LATER)
    assert new.acquire().token == 2 and new.holds
    with pytest.raises(LeaseLost) as lost:
        Journal(a).store.audit(actor="old", action="test.after")
    assert lost.value.code == "lease_lost" and "another agent took it" in lost.value.message
    assert old.lost.is_set() and not old.holds
    assert not old.renew(), "a lost lease is not renewed back"
    actions = [r.action for r in Journal(b).store.audit_trail()]
    assert "test.before" in actions and "test.after" not in actions


def test_an_expired_lease_refuses_writes_even_when_nobody_took_it(stores) -> None:
    a, b = stores
    now = [utcnow()]
    lease = Lease(a, lease_s=15, clock=lambda: now[0])
    lease.acquire()
    op = Journal(b).operations()  # a reader beside the leader needs no lease
    assert op == []
    now[0] += LATER
    with pytest.raises(LeaseLost, match="expired"):
        a.audit(actor="x", action="test.late")
    with b.session() as s:
        assert s.query(NoteRow).count() == 0
    assert all(r.action != "test.late" for r in b.audit_trail())


def test_the_renewer_keeps_a_lease_past_its_duration(stores) -> None:
    a, b = stores
    lease = Lease(a, lease_s=1.2)
    lease.acquire()
    renewer = Renewer(lease).start()
    try:
        threading.Event().wait(3)  # 2.5 lease times
        assert lease.holds
        assert Lease(b, lease_s=1.2).acquire().holder == lease.holder_id
        a.audit(actor="x", action="test.renewed")
    finally:
        renewer.stop()
        lease.release()


def _until(check, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.01)


def test_in_process_leaders_one_leads_and_resumes_the_other_stands_by_then_takes_over(new_rig) -> None:
    from agent.engine.leader import Leader
    from agent.engine.model import OperationKind, OpStatus
    from agent.engine.service import Engine
    from tests.rigs import DEMO_PLAN

    rig = new_rig()
    op_id = rig.engine.create(OperationKind.PREPARE, DEMO_PLAN)  # recorded, left for a leader to run
    said_a: list[str] = []
    said_b: list[str] = []
    a = Leader(rig.engine, Lease(rig.store, lease_s=1), say=said_a.append)
    ta = threading.Thread(target=a.run)
    ta.start()
    other = Store.for_path(rig.store_path)
    b = Leader(Engine(rig.config, rig.ports, other), Lease(other, lease_s=1), say=said_b.append)
    tb = threading.Thread(target=b.run)
    try:
        _until(lambda: any("resumed" in line for line in said_a))
        assert rig.engine.view(op_id).status == OpStatus.SUCCEEDED.value
        tb.start()
        _until(lambda: b.role == "standby")
        assert a.role == "leader" and f"pid {a.lease.pid}" in said_b[0]
        a.stop()
        ta.join()
        _until(lambda: b.role == "leader")
        assert a.role == "stopped" and b.terms == 1 and b.lease.token == 2
    finally:
        a.stop()
        b.stop()
        ta.join()
        if tb.is_alive():
            tb.join()
        other.close()

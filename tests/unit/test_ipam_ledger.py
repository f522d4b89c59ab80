"""The incremental allocator (agent.domain.ipam.PoolLedger) chooses exactly what the allocator it
replaced chose (tests/ipam_reference.py: the used set rebuilt from every grant on every call),
so a plan's addresses -- and its checksum -- do not change.

Each example is a pool (IPv4 or IPv6, a narrow range or a /64-wide one), a reserved set, grants
(some stale: outside the range, at a reserved address, of the other family) and a sequence of
steps: allocations of a few requests (owners holding grants, preferred addresses taken or free),
grants made elsewhere, and revocations. After every step the ledger must answer what the
reference answers given the grants as they are by then.
"""

from __future__ import annotations

import ipaddress
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.domain.ipam import AddressRequest, PoolLedger, allocate, to_int
from agent.domain.model import StaticIpPool
from agent.domain.planning import build_plan
from tests.benchmarks.bench_planning import generate
from tests.ipam_reference import ReferencePoolAllocator, reference_allocate

BASES = {4: ipaddress.ip_address("10.0.0.0"), 6: ipaddress.ip_address("2001:db8::")}
OTHER = {4: "2001:db8::5", 6: "10.0.0.5"}
OWNERS = ["nic-a", "nic-b", "nic-c", "nic-d", ""]


def addr(family: int, offset: int) -> str:
    return str(BASES[family] + offset)


@st.composite
def worlds(draw):
    family = draw(st.sampled_from([4, 6]))
    start = draw(st.integers(0, 40))
    wide = family == 6 and draw(st.booleans())
    end = 2**64 - 1 if wide else draw(st.integers(start, start + 24))
    prefix = "2001:db8::/64" if family == 6 else "10.0.0.0/24"
    window = list(range(max(0, start - 3), min(end, start + 27) + 3))  # where everything happens
    in_range = [o for o in window if start <= o <= end]
    reserved = draw(st.sets(st.sampled_from(in_range), max_size=len(in_range) // 3))
    granted = draw(st.lists(st.sampled_from(window), unique=True, max_size=14))
    grants = {addr(family, o): draw(st.sampled_from(OWNERS)) for o in granted}
    if draw(st.booleans()):
        grants[OTHER[family]] = draw(st.sampled_from(OWNERS))
    pool = StaticIpPool(name="p", site="s", vm_network="n", vm_subnet="sn", prefix=prefix,
                        range_start=addr(family, start), range_end=addr(family, end),
                        reserved=tuple(addr(family, o) for o in sorted(reserved)))
    address = st.one_of(st.sampled_from(window).map(lambda o: addr(family, o)), st.just(OTHER[family]))
    request_lists = st.lists(
        st.tuples(st.sampled_from(OWNERS), st.one_of(st.none(), address)), min_size=1, max_size=6)
    step = st.one_of(
        st.tuples(st.just("allocate"), request_lists),
        st.tuples(st.just("grant"), st.tuples(address, st.sampled_from(OWNERS))),
        st.tuples(st.just("release"), address),
    )
    steps = draw(st.lists(step, max_size=14))
    return pool, grants, steps


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_the_ledger_chooses_what_the_rebuilding_allocator_chooses(world) -> None:
    pool, grants, steps = world
    ledger = PoolLedger(pool, list(grants.items()))
    family = pool.family
    serial = 0
    for kind, arg in steps:
        if kind == "allocate":
            requests = []
            for owner, preferred in arg:
                serial += 1
                requests.append(AddressRequest(key=(serial,), owner=owner, preferred=preferred))
            expected = reference_allocate(pool, requests, list(grants.items()))
            assert ledger.allocate(requests) == expected
            owner_of = {r.key: r.owner for r in requests}
            for a in expected.allocations.values():
                if a.address is not None and not a.existing:
                    grants[a.address] = owner_of[a.key]
        elif kind == "grant":
            address, owner = arg
            ledger.grant(address, owner)
            grants[address] = owner
        else:
            known = arg in grants and to_int(arg)[0] == family
            assert ledger.release(arg) == known
            grants.pop(arg, None)
        reference = ReferencePoolAllocator(pool, grants)
        assert ledger.free_count() == reference.free_count()
        probe = [AddressRequest(key=("probe",))]
        assert PoolLedger(pool, list(grants.items())).allocate(probe) == reference_allocate(pool, probe, grants.items())


@settings(max_examples=150, deadline=None)
@given(worlds())
def test_a_bulk_allocation_is_the_reference_one(world) -> None:
    pool, grants, steps = world
    requests = [AddressRequest(key=(i,), owner=owner, preferred=preferred)
                for i, (owner, preferred) in enumerate(r for kind, arg in steps if kind == "allocate" for r in arg)]
    assert allocate(pool, requests, grants.items()) == reference_allocate(pool, requests, grants.items())


def test_an_address_given_back_is_the_lowest_free_one_again() -> None:
    pool = StaticIpPool(name="p", site="s", vm_network="n", vm_subnet="sn", prefix="10.0.0.0/24",
                        range_start="10.0.0.10", range_end="10.0.0.12", reserved=("10.0.0.11",))
    ledger = PoolLedger(pool, [("10.0.0.10", "nic-a")])
    [got] = ledger.allocate([AddressRequest(key=(1,), owner="nic-b")]).allocations.values()
    assert got.address == "10.0.0.12" and ledger.free_count() == 0
    [none] = ledger.allocate([AddressRequest(key=(2,), owner="nic-c")]).allocations.values()
    assert none.address is None
    assert ledger.release("10.0.0.10") and not ledger.release("10.0.0.10")
    assert not ledger.release("10.0.0.11"), "a reserved address is never a grant to give back"
    [again] = ledger.allocate([AddressRequest(key=(3,), owner="nic-c")]).allocations.values()
    assert again.address == "10.0.0.10" and not again.existing
    # the same owner asking again is given what it holds, not another address
    [same] = ledger.allocate([AddressRequest(key=(4,), owner="nic-c")]).allocations.values()
    assert same.address == "10.0.0.10" and same.existing
    assert ledger.grants_of("nic-c") == ["10.0.0.10"] and ledger.grants_of("nic-a") == []


def test_the_ledger_is_its_own_record_of_the_grants_it_was_given() -> None:
    # A caller that keeps changing its list (the inventory it read) does not change the ledger.
    pool = StaticIpPool(name="p", site="s", vm_network="n", vm_subnet="sn", prefix="10.0.0.0/24",
                        range_start="10.0.0.10", range_end="10.0.0.20")
    grants = [("10.0.0.10", "nic-a")]
    ledger = PoolLedger(pool, grants)
    grants.append(("10.0.0.11", "nic-b"))
    grants[0] = ("10.0.0.12", "nic-a")
    result = ledger.allocate([AddressRequest(key=(1,), owner="nic-a"), AddressRequest(key=(2,), owner="nic-b")])
    assert [(a.address, a.existing) for a in result.allocations.values()] == [("10.0.0.10", True), ("10.0.0.11", False)]


@pytest.mark.parametrize("kind", ["planned", "test"])
def test_a_plan_allocated_by_the_ledger_has_the_checksum_the_old_allocator_gave_it(kind: str) -> None:
    # The planning benchmark's world at 400 VMs: retained and changed addresses, grants reused and
    # held by others, IPv4 and IPv6 pools -- every branch of the allocator, through the planner.
    config, inventory = generate(400)
    plan = build_plan(config, inventory, "all", kind)
    with mock.patch("agent.domain.planning.overrides.allocate", reference_allocate):
        before = build_plan(config, inventory, "all", kind)
    assert plan.checksum() == before.checksum()
    assert plan.changes == before.changes

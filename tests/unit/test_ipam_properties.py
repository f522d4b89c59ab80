"""Properties of the address allocator (agent.domain.ipam), proved with hypothesis on small
pools where collisions, reserved addresses, existing grants and exhaustion are all likely."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.domain.ipam import AddressRequest, PoolAllocator, PrefixIndex, allocate, to_int, to_text
from agent.domain.model import StaticIpPool

BASES = {4: ipaddress.ip_address("10.0.0.0"), 6: ipaddress.ip_address("2001:db8::")}
PREFIXES = {4: "10.0.0.0/24", 6: "2001:db8::/120"}
OWNERS = ["nic-a", "nic-b", "nic-c", "someone-else"]

MODEST = settings(max_examples=150, deadline=None)


def addr(family: int, offset: int) -> str:
    return str(BASES[family] + offset)


@st.composite
def worlds(draw):
    """A pool (range inside a /24 or /120), its reserved set, existing grants and requests."""
    family = draw(st.sampled_from([4, 6]))
    start = draw(st.integers(0, 200))
    end = draw(st.integers(start, min(255, start + 30)))
    in_range = list(range(start, end + 1))
    reserved = draw(st.sets(st.sampled_from(in_range), max_size=len(in_range) // 3))
    # Grants may also lie outside the range (stale ones); VMM never grants a reserved address.
    grantable = [o for o in range(max(0, start - 3), min(255, end + 3) + 1) if o not in reserved]
    granted = draw(st.lists(st.sampled_from(grantable), unique=True, max_size=12))
    grants = [(addr(family, o), draw(st.sampled_from(OWNERS))) for o in granted]
    n = draw(st.integers(0, 40))
    requests = []
    for i in range(n):
        owner = draw(st.sampled_from([*OWNERS[:3], ""]))
        pref = draw(st.one_of(st.none(), st.integers(max(0, start - 3), min(255, end + 3))))
        requests.append(AddressRequest(key=(i,), owner=owner, preferred=None if pref is None else addr(family, pref)))
    pool = StaticIpPool(name="p", site="s", vm_network="n", vm_subnet="sn", prefix=PREFIXES[family],
                        range_start=addr(family, start), range_end=addr(family, end),
                        reserved=tuple(addr(family, o) for o in sorted(reserved)))
    return pool, grants, requests


def _ints(addresses) -> set[int]:
    return {to_int(a)[1] for a in addresses}


@MODEST
@given(worlds())
def test_allocations_are_unique_in_range_and_respect_reserved_and_foreign_grants(world) -> None:
    pool, grants, requests = world
    result = allocate(pool, requests, grants)
    got = [a for a in result.allocations.values() if a.address is not None]
    assert len({a.address for a in got}) == len(got), "an address was handed out twice"
    lo, hi = to_int(pool.range_start)[1], to_int(pool.range_end)[1]
    reserved = _ints(pool.reserved)
    granted = dict(grants)
    owner_of = {r.key: r.owner for r in requests}
    for a in got:
        value = to_int(a.address)[1]
        if a.existing:
            # reused: exactly a grant this request's owner already holds
            assert granted.get(a.address) == owner_of[a.key] and owner_of[a.key]
        else:
            assert lo <= value <= hi, "outside the pool's range"
            assert value not in reserved, "from the reserved set"
            assert a.address not in granted, "an address granted to someone already"


@MODEST
@given(worlds())
def test_existing_grants_are_reused_before_anything_new(world) -> None:
    pool, grants, requests = world
    result = allocate(pool, requests, grants)
    family = pool.family
    for r in requests:
        a = result.allocations[r.key]
        if r.owner and not a.existing:
            # a new address for this owner means every grant it held was already in use here
            held = {g for g, o in grants if o == r.owner and to_int(g)[0] == family}
            reused = {x.address for x in result.allocations.values()
                      if x.existing and owner_of(requests, x.key) == r.owner}
            assert held <= reused
    unused = {g for g, _ in result.unused_grants}
    reused_all = {x.address for x in result.allocations.values() if x.existing}
    owners = {r.owner for r in requests if r.owner}
    assert unused == {g for g, o in grants if o in owners} - reused_all


def owner_of(requests, key) -> str:
    return next(r.owner for r in requests if r.key == key)


@MODEST
@given(worlds())
def test_the_preferred_address_is_given_when_free(world) -> None:
    pool, grants, requests = world
    result = allocate(pool, requests, grants)
    lo, hi = to_int(pool.range_start)[1], to_int(pool.range_end)[1]
    taken = _ints(pool.reserved) | _ints(g for g, _ in grants)
    by_key = result.allocations
    for r in requests:
        if r.preferred is None:
            continue
        a = by_key[r.key]
        if a.existing:
            continue
        value = to_int(r.preferred)[1]
        free = lo <= value <= hi and value not in taken
        if free and a.address != r.preferred:
            # only an earlier request that preferred the same address may have it instead
            winner = next(k for k, x in by_key.items() if x.address == r.preferred)
            rival = next(q for q in requests if q.key == winner)
            assert rival.preferred == r.preferred and rival.key < r.key
        if a.address == r.preferred:
            assert a.preferred


@MODEST
@given(worlds())
def test_fallbacks_take_the_lowest_free_addresses_and_exhaustion_means_full(world) -> None:
    pool, grants, requests = world
    result = allocate(pool, requests, grants)
    lo, hi = to_int(pool.range_start)[1], to_int(pool.range_end)[1]
    used = _ints(pool.reserved) | _ints(g for g, _ in grants)
    used |= {to_int(a.address)[1] for a in result.allocations.values() if a.address}
    fallbacks = sorted(to_int(a.address)[1] for a in result.allocations.values()
                       if a.address and not a.existing and not a.preferred)
    if fallbacks:
        # nothing below the highest fallback was left free
        assert all(v in used for v in range(lo, fallbacks[-1] + 1))
    if result.exhausted:
        assert all(v in used for v in range(lo, hi + 1)), "refused while the pool still had room"


@MODEST
@given(worlds(), st.randoms(use_true_random=False))
def test_the_result_depends_on_the_requests_not_their_order(world, rnd) -> None:
    pool, grants, requests = world
    first = allocate(pool, requests, grants)
    shuffled = list(requests)
    rnd.shuffle(shuffled)
    grants_shuffled = list(grants)
    rnd.shuffle(grants_shuffled)
    again = allocate(pool, shuffled, grants_shuffled)
    assert again.allocations == first.allocations
    assert again.unused_grants == first.unused_grants
    assert allocate(pool, requests, grants) == first


def test_duplicate_request_keys_are_a_programming_error() -> None:
    pool = StaticIpPool(name="p", site="s", vm_network="n", vm_subnet="sn", prefix="10.0.0.0/24",
                        range_start="10.0.0.10", range_end="10.0.0.20")
    with pytest.raises(ValueError):
        allocate(pool, [AddressRequest(key=(1,)), AddressRequest(key=(1,))])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**128 - 1))
def test_integer_and_text_forms_round_trip_like_ipaddress(v4: int, v6: int) -> None:
    assert to_text(4, v4) == str(ipaddress.IPv4Address(v4))
    assert to_text(6, v6) == str(ipaddress.IPv6Address(v6))
    assert to_int(to_text(6, v6)) == (6, v6) and to_int(to_text(4, v4)) == (4, v4)


def test_to_int_refuses_what_is_not_an_address() -> None:
    for bad in ("10.0.0", "10.0.0.256", "2001:db8:::1", "x"):
        with pytest.raises(ValueError):
            to_int(bad)


def test_pool_allocator_hands_out_every_free_address_once_in_order() -> None:
    pool = StaticIpPool(name="p", site="s", vm_network="n", vm_subnet="sn", prefix="10.0.0.0/24",
                        range_start="10.0.0.10", range_end="10.0.0.20", reserved=("10.0.0.12",))
    alloc = PoolAllocator(pool, used=["10.0.0.10", "10.0.0.99", "2001:db8::1"])
    assert alloc.free_count() == 9
    assert alloc.take(to_int("10.0.0.15")[1]) and not alloc.take(to_int("10.0.0.15")[1])
    assert not alloc.take(to_int("10.0.0.12")[1]) and not alloc.take(to_int("10.0.0.21")[1])
    got = []
    while (v := alloc.take_lowest()) is not None:
        got.append(alloc.text(v))
    assert got == ["10.0.0.11", "10.0.0.13", "10.0.0.14", "10.0.0.16", "10.0.0.17", "10.0.0.18", "10.0.0.19",
                   "10.0.0.20"]
    assert alloc.free_count() == 0


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 32)), min_size=1, max_size=12),
       st.lists(st.integers(0, 2**32 - 1), max_size=20), st.randoms(use_true_random=False))
def test_prefix_index_is_a_longest_prefix_match(prefixes, probes, rnd: random.Random) -> None:
    nets = {ipaddress.ip_network((v, plen), strict=False) for v, plen in prefixes}
    index: PrefixIndex[str] = PrefixIndex()
    for net in nets:
        index.add(str(net), str(net))
    for net in nets:
        probes.append(int(net.network_address) + rnd.randrange(net.num_addresses))
    for value in probes:
        ip = ipaddress.IPv4Address(value)
        holding = [n for n in nets if ip in n]
        expected = str(max(holding, key=lambda n: n.prefixlen)) if holding else None
        assert index.lookup(4, value) == expected
        assert index.lookup(6, value) is None

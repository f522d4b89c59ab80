"""Address allocation from VMM static IP pools, and prefix lookups -- on integers, no I/O.

The planner asks for thousands of addresses per plan, and a served agent asks for one at a time
from pools that hold tens of thousands of grants, so everything here works on ``int`` forms of
addresses, and the bookkeeping of a pool is built once and then kept: a :class:`PoolLedger`
holds the used set (reserved set + every grant), each owner's grants, and a cursor below which
every address is used except the few freed since (a heap). "Lowest free" is then amortised
O(1) and a single allocation costs microseconds, however many grants the pool holds.

:func:`allocate` (one bulk call over a fresh ledger) is what the planner uses;
:meth:`PoolLedger.allocate` serves the same requests the same way against the ledger's current
grants and records what it hands out. Their contract, proved by
``tests/unit/test_ipam_properties.py`` and, against the rebuild-every-call allocator this replaced
(``tests/ipam_reference.py``), by ``tests/unit/test_ipam_ledger.py``:

* no address is handed out twice, none outside the pool's range, none from its reserved set,
  none already granted to someone else;
* an owner's existing grants are reused before anything new is taken (the same address first,
  then the remaining grants in address order), so planning twice never doubles a reservation;
* a request's preferred address (the source address when retaining) is given when it is free;
* the result depends only on the set of requests, never on the order they are passed in:
  requests are served in the order of their ``key``.

Only the range, the reserved set and the grants decide what is free: the pool's gateway and its
subnet's network and broadcast addresses are not excluded by themselves (they never were, and the
plan's checksum depends on it); a pool whose range covers them lists them in its reserved set.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import socket
import struct
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from agent.domain.model import IpGrant, StaticIpPool

T = TypeVar("T")


def to_int(address: str) -> tuple[int, int]:
    """``(version, integer)`` of an address in text form.

    ``inet_pton`` is a pure conversion (no I/O) and ~10x faster than ``ipaddress``, which
    matters at 30,000+ addresses a plan; it is as strict (no shorthand, no leading zeros).
    """
    try:
        if ":" in address:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, address), "big")
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big")
    except OSError:
        raise ValueError(f"{address!r} is not an IP address") from None


def to_text(version: int, value: int) -> str:
    """Canonical text of an integer address (the form :data:`~agent.domain.model.Address` holds)."""
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    # ipaddress, not inet_ntop: libc's IPv6 text form differs from ipaddress's in corner cases
    # (IPv4-mapped addresses), and Address values are canonical in ipaddress's form.
    return str(ipaddress.IPv6Address(value))


class PoolAllocator:
    """Free/used bookkeeping of one static pool, kept up to date as addresses are taken and freed.

    ``used`` are addresses already granted (by anyone); the pool's reserved set is added here.
    Addresses outside the range may be passed as used (a stale grant): they are simply never
    candidates. Every address of ``[start, cursor)`` is used except those in ``_holes`` (freed
    after the cursor passed them), so the lowest free address is the least live hole, or else
    the first unused one from the cursor on -- and the cursor never moves back.
    """

    __slots__ = ("pool", "version", "start", "end", "_reserved", "_used", "_cursor", "_holes", "_in_range")

    def __init__(self, pool: StaticIpPool, used: Iterable[str] = ()) -> None:
        self.pool = pool
        self.version, self.start = to_int(pool.range_start)
        _, self.end = to_int(pool.range_end)
        self._reserved = frozenset(to_int(a)[1] for a in pool.reserved)
        taken = set(self._reserved)
        for address in used:
            version, value = to_int(address)
            if version == self.version:
                taken.add(value)
        self._used = taken
        self._cursor = self.start
        self._holes: list[int] = []
        # Counted on the first free_count() and kept from then on: a bulk allocation never asks.
        self._in_range: int | None = None

    def in_range(self, value: int) -> bool:
        return self.start <= value <= self.end

    def is_reserved(self, value: int) -> bool:
        return value in self._reserved

    def is_free(self, value: int) -> bool:
        return self.start <= value <= self.end and value not in self._used

    def take(self, value: int) -> bool:
        """Claim ``value`` if it is free; False (and nothing claimed) otherwise."""
        if not self.is_free(value):
            return False
        self._used.add(value)
        if self._in_range is not None:
            self._in_range += 1
        return True

    def take_lowest(self) -> int | None:
        """Claim the lowest free address; None when the pool is exhausted."""
        used, holes = self._used, self._holes
        while holes:
            value = heapq.heappop(holes)
            if value not in used:  # else taken by address since it was freed
                used.add(value)
                if self._in_range is not None:
                    self._in_range += 1
                return value
        cursor, end = self._cursor, self.end
        while cursor <= end and cursor in used:
            cursor += 1
        if cursor > end:
            self._cursor = cursor
            return None
        self._cursor = cursor + 1
        used.add(cursor)
        if self._in_range is not None:
            self._in_range += 1
        return cursor

    def free(self, value: int) -> bool:
        """Give ``value`` back (a grant revoked); False when it was not used or is reserved."""
        if value in self._reserved or value not in self._used:
            return False
        self._used.discard(value)
        if self.start <= value <= self.end:
            if self._in_range is not None:
                self._in_range -= 1
            if value < self._cursor:
                heapq.heappush(self._holes, value)
        return True

    def free_count(self) -> int:
        if self._in_range is None:
            self._in_range = sum(1 for v in self._used if self.start <= v <= self.end)
        return self.end - self.start + 1 - self._in_range

    def text(self, value: int) -> str:
        return to_text(self.version, value)


@dataclass(frozen=True, slots=True)
class AddressRequest:
    """One address wanted from a pool.

    ``key`` orders the requests (and names the result): earlier keys are served first.
    ``owner`` is the NIC id whose existing grants in the pool may be reused ("" = not known yet:
    nothing to reuse). ``preferred`` is the address to give if it is free (retain: the source
    address; test failover: the failover address).
    """

    key: Hashable
    owner: str = ""
    preferred: str | None = None


@dataclass(frozen=True, slots=True)
class Allocation:
    key: Hashable
    address: str | None
    """None: the pool is exhausted for this request."""
    existing: bool = False
    """A grant the owner already holds is reused."""
    preferred: bool = False
    """The preferred address was given."""


@dataclass(frozen=True, slots=True)
class AllocationResult:
    allocations: dict[Hashable, Allocation]
    unused_grants: tuple[tuple[str, str], ...]
    """``(address, owner)`` grants of requesting owners that no request needed (left alone)."""

    @property
    def exhausted(self) -> list[Hashable]:
        return [k for k, a in self.allocations.items() if a.address is None]


class PoolLedger:
    """One pool's grants, kept: requests are served against them and what is handed out is
    recorded, so the next request costs what it serves, not what the pool holds.

    ``grants`` are ``(address, owner_id)``; those of the other address family are ignored (as
    VMM keeps them apart). VMM holds one grant per address, and so does the ledger once it has
    been changed (:meth:`grant`, :meth:`release`).
    """

    __slots__ = ("pool", "version", "_alloc", "_values", "_grants", "_extra", "_by_owner", "_owner_of")

    def __init__(self, pool: StaticIpPool, grants: Iterable[tuple[str, str]] = ()) -> None:
        alloc = PoolAllocator(pool)
        self.pool, self.version, self._alloc = pool, alloc.version, alloc
        grants = tuple(grants)  # kept until indexed: a caller's list may change after (a tuple is not copied)
        values, of_family = _decode(grants, alloc.version)
        alloc._used.update(values)
        # The grants as they came (values[i] is the address of of_family[i]), and those recorded
        # since, until the first question about an owner indexes them: a bulk allocation only
        # looks up the owners it serves, and indexing every owner would cost more than it does.
        self._values: Sequence[int] | None = values
        self._grants: Sequence[tuple[str, str]] | None = of_family
        self._extra: list[tuple[int, str]] = []
        self._by_owner: dict[str, set[int]] | None = None
        self._owner_of: dict[int, str] | None = None

    # ------------------------------------------------------------------ questions

    def is_free(self, address: str) -> bool:
        version, value = to_int(address)
        return version == self.version and self._alloc.is_free(value)

    def is_reserved(self, address: str) -> bool:
        version, value = to_int(address)
        return version == self.version and self._alloc.is_reserved(value)

    def free_count(self) -> int:
        return self._alloc.free_count()

    def grants_of(self, owner: str) -> list[str]:
        """The addresses ``owner`` holds in the pool, lowest first."""
        return [self._alloc.text(v) for v in sorted(self._index().get(owner, ()))]

    # ------------------------------------------------------------------ changes

    def grant(self, address: str, owner: str) -> None:
        """Record a grant made elsewhere (another agent, an operator, VMM itself)."""
        version, value = to_int(address)
        if version != self.version:
            return
        alloc = self._alloc
        if value not in alloc._used:
            alloc._used.add(value)
            if alloc._in_range is not None and alloc.in_range(value):
                alloc._in_range += 1
        held = self._holders().get(value)
        if held is not None and held != owner:  # granted again: VMM revoked the old one first
            self._forget(value, held)
        self._record(value, owner)

    def release(self, address: str) -> bool:
        """Forget the grant of ``address`` (revoked): it is free again unless reserved. False when
        the ledger knew no grant of it."""
        version, value = to_int(address)
        if version != self.version:
            return False
        owner = self._holders().pop(value, None)
        if owner is None:
            return False
        self._forget(value, owner)
        self._alloc.free(value)
        return True

    def allocate(self, requests: Sequence[AddressRequest]) -> AllocationResult:
        """Serve ``requests`` against the current grants, exactly as :func:`allocate` would with
        them, and record every new address as granted to its request's owner."""
        ordered = _ordered(self.pool, requests)
        index = self._index()
        owned = {o: sorted(index[o]) for o in {r.owner for r in ordered if r.owner} if o in index}
        return self._serve(ordered, owned)

    def _serve(self, ordered: list[AddressRequest], owned: dict[str, list[int]]) -> AllocationResult:
        """The four passes, each over the requests in key order (``owned``: the grants of the
        requesting owners, lowest first):

        1. an owner's existing grant at the request's preferred address is reused;
        2. the owner's remaining grants are handed to its remaining requests, lowest address first;
        3. a free preferred address is claimed -- for *all* requests before any fallback, so one
           request's fallback never takes another's preferred address;
        4. everything left gets the lowest free address (or None: exhausted).
        """
        alloc = self._alloc
        text = alloc.text
        preferred = _preferred_values(ordered, self.version)

        result: dict[Hashable, Allocation] = {}
        if owned:
            owned_sets = {owner: set(values) for owner, values in owned.items()}
            for r in ordered:
                wanted = preferred[r.key]
                mine = owned_sets.get(r.owner)
                if wanted is not None and mine and wanted in mine:
                    mine.discard(wanted)
                    result[r.key] = Allocation(r.key, text(wanted), existing=True, preferred=True)
            for r in ordered:
                if r.key in result:
                    continue
                mine = owned_sets.get(r.owner)
                if mine:
                    reused = next(v for v in owned[r.owner] if v in mine)
                    mine.discard(reused)
                    result[r.key] = Allocation(r.key, text(reused), existing=True, preferred=reused == preferred[r.key])
            unused = tuple(
                (text(v), owner) for owner in sorted(owned) for v in owned[owner] if v in owned_sets[owner]
            )
        else:
            unused = ()

        record = self._record
        for r in ordered:
            wanted = preferred[r.key]
            if r.key not in result and wanted is not None and alloc.take(wanted):
                result[r.key] = Allocation(r.key, text(wanted), preferred=True)
                record(wanted, r.owner)
        for r in ordered:
            if r.key not in result:
                lowest = alloc.take_lowest()
                if lowest is not None:
                    record(lowest, r.owner)
                result[r.key] = Allocation(r.key, None if lowest is None else text(lowest))
        return AllocationResult(allocations={r.key: result[r.key] for r in ordered}, unused_grants=unused)

    # ------------------------------------------------------------------ owners

    def _owned_by(self, owners: set[str]) -> dict[str, list[int]]:
        """The grants of ``owners`` alone, lowest first, without indexing every owner."""
        if self._values is None or self._grants is None:
            index = self._index()
            return {o: sorted(index[o]) for o in owners if o in index}
        owned: dict[str, list[int]] = {}
        for value, grant in zip(self._values, self._grants, strict=True):
            if grant[1] in owners:
                owned.setdefault(grant[1], []).append(value)
        for value, owner in self._extra:
            if owner in owners:
                owned.setdefault(owner, []).append(value)
        for values in owned.values():
            values.sort()
        return owned

    def _index(self) -> dict[str, set[int]]:
        index = self._by_owner
        if index is None:
            index = self._by_owner = {}
            pairs = zip(self._values or (), (owner for _, owner in self._grants or ()), strict=True)
            for value, owner in itertools.chain(pairs, self._extra):
                mine = index.get(owner)
                if mine is None:
                    index[owner] = {value}
                else:
                    mine.add(value)
            self._values = self._grants = None
            self._extra = []
        return index

    def _holders(self) -> dict[int, str]:
        if self._owner_of is None:
            self._owner_of = {v: owner for owner, values in self._index().items() for v in values}
        return self._owner_of

    def _record(self, value: int, owner: str) -> None:
        index = self._by_owner
        if index is None:
            self._extra.append((value, owner))
            return
        mine = index.get(owner)
        if mine is None:
            index[owner] = {value}
        else:
            mine.add(value)
        if self._owner_of is not None:
            self._owner_of[value] = owner

    def _forget(self, value: int, owner: str) -> None:
        index = self._index()
        mine = index[owner]
        mine.discard(value)
        if not mine:
            del index[owner]


def pool_usage(pools: Iterable[StaticIpPool], grants: Iterable[IpGrant]) -> list[tuple[StaticIpPool, int, int]]:
    """(pool, used, free) for each pool: grants are grouped once, not filtered again per pool."""
    by_pool: dict[tuple[str, str], list[str]] = {}
    for g in grants:
        by_pool.setdefault((g.site, g.pool), []).append(g.address)
    out = []
    for pool in pools:
        used = by_pool.get((pool.site, pool.name), [])
        out.append((pool, len(used), PoolAllocator(pool, used).free_count()))
    return out


def allocate(
    pool: StaticIpPool,
    requests: Sequence[AddressRequest],
    grants: Iterable[tuple[str, str]] = (),
) -> AllocationResult:
    """Serve ``requests`` from ``pool`` given its existing ``grants`` (``(address, owner_id)``):
    what :meth:`PoolLedger.allocate` serves from a ledger of those grants."""
    ordered = _ordered(pool, requests)
    ledger = PoolLedger(pool, grants)
    return ledger._serve(ordered, ledger._owned_by({r.owner for r in ordered if r.owner}))


def _ordered(pool: StaticIpPool, requests: Sequence[AddressRequest]) -> list[AddressRequest]:
    ordered = sorted(requests, key=_sort_key) if len(requests) > 1 else list(requests)
    if len({r.key for r in ordered}) != len(ordered):
        raise ValueError(f"pool {pool.name}: duplicate request keys")
    return ordered


def _decode(
    grants: Sequence[tuple[str, str]], version: int
) -> tuple[Sequence[int], Sequence[tuple[str, str]]]:
    """The grants of the pool's family and their integer values, in the same order; refuses
    (ValueError) an address that is none, of either family, as :func:`to_int` does."""
    try:
        if version == 4:
            # One C-level pass when every address is IPv4 (the usual case): several times
            # faster than converting one by one, and it is the whole setup of a bulk allocation.
            pton, family = socket.inet_pton, socket.AF_INET
            blob = b"".join([pton(family, address) for address, _ in grants])
            return struct.unpack(f">{len(grants)}I", blob), grants
        pton, family, from_bytes = socket.inet_pton, socket.AF_INET6, int.from_bytes
        return [from_bytes(pton(family, address), "big") for address, _ in grants], grants
    except OSError:
        pass  # an address of the other family among them (or no address): one by one
    values: list[int] = []
    of_family: list[tuple[str, str]] = []
    for grant in grants:
        family_of, value = to_int(grant[0])
        if family_of == version:
            values.append(value)
            of_family.append(grant)
    return values, of_family


def _preferred_values(ordered: Sequence[AddressRequest], version: int) -> dict[Hashable, int | None]:
    """Per request key, its preferred address as an integer; None when it has none of the pool's family."""
    preferred: dict[Hashable, int | None] = {}
    for r in ordered:
        value: int | None = None
        if r.preferred is not None:
            family, value = to_int(r.preferred)
            if family != version:
                value = None
        preferred[r.key] = value
    return preferred


def _sort_key(request: AddressRequest) -> tuple:
    # Keys are caller-defined tuples; repr breaks ties between keys of unorderable mixed types.
    key = request.key
    return (0, key) if isinstance(key, tuple) else (1, repr(key))


class PrefixIndex(Generic[T]):
    """Longest-prefix match of addresses against a set of prefixes, by integer masking.

    One dict per (family, prefix length): a lookup costs one probe per distinct prefix length,
    not one per prefix, which keeps the partial-subnet check linear in the number of addresses.
    """

    __slots__ = ("_tables",)

    def __init__(self) -> None:
        self._tables: dict[int, list[tuple[int, int, dict[int, T]]]] = {4: [], 6: []}

    def add(self, prefix: str, value: T) -> None:
        net = ipaddress.ip_network(prefix)
        tables = self._tables[net.version]
        for plen, _, table in tables:
            if plen == net.prefixlen:
                table[int(net.network_address)] = value
                return
        bits = 32 if net.version == 4 else 128
        mask = ((1 << bits) - 1) ^ ((1 << (bits - net.prefixlen)) - 1)
        tables.append((net.prefixlen, mask, {int(net.network_address): value}))
        tables.sort(key=lambda t: -t[0])

    def lookup(self, version: int, value: int) -> T | None:
        for _, mask, table in self._tables[version]:
            hit = table.get(value & mask)
            if hit is not None:
                return hit
        return None

    def __bool__(self) -> bool:
        return bool(self._tables[4] or self._tables[6])


def network_contains(prefix: str, version: int, value: int) -> bool:
    net = ipaddress.ip_network(prefix)
    return net.version == version and int(net.network_address) <= value <= int(net.broadcast_address)


__all__ = [
    "AddressRequest",
    "Allocation",
    "AllocationResult",
    "PoolAllocator",
    "PoolLedger",
    "PrefixIndex",
    "allocate",
    "network_contains",
    "to_int",
    "to_text",
]

"""Address allocation from VMM static IP pools, and prefix lookups -- on integers, no I/O.

The planner asks for thousands of addresses per plan, so everything here works on ``int`` forms
of addresses: a pool is a range ``[start, end]``, a set of used integers (reserved set + every
existing grant) and a cursor for "lowest free". Addresses are never returned to a pool during
one allocation, so everything below the cursor stays used and "lowest free" is amortised O(1).

:func:`allocate` is the one entry point the planner uses. Its contract, proved by
``tests/unit/test_ipam_properties.py``:

* no address is handed out twice, none outside the pool's range, none from its reserved set,
  none already granted to someone else;
* an owner's existing grants are reused before anything new is taken (the same address first,
  then the remaining grants in address order), so planning twice never doubles a reservation;
* a request's preferred address (the source address when retaining) is given when it is free;
* the result depends only on the set of requests, never on the order they are passed in:
  requests are served in the order of their ``key``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from agent.domain.model import StaticIpPool

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
    """Free/used bookkeeping of one static pool.

    ``used`` are addresses already granted (by anyone); the pool's reserved set is added here.
    Addresses outside the range may be passed as used (a stale grant): they are simply never
    candidates.
    """

    __slots__ = ("pool", "version", "start", "end", "_reserved", "_used", "_cursor")

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
        return True

    def take_lowest(self) -> int | None:
        """Claim the lowest free address; None when the pool is exhausted."""
        cursor, used, end = self._cursor, self._used, self.end
        while cursor <= end and cursor in used:
            cursor += 1
        self._cursor = cursor
        if cursor > end:
            return None
        used.add(cursor)
        return cursor

    def free_count(self) -> int:
        in_range = sum(1 for v in self._used if self.start <= v <= self.end)
        return self.end - self.start + 1 - in_range

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


def allocate(
    pool: StaticIpPool,
    requests: Sequence[AddressRequest],
    grants: Iterable[tuple[str, str]] = (),
) -> AllocationResult:
    """Serve ``requests`` from ``pool`` given its existing ``grants`` (``(address, owner_id)``).

    Four passes, each over the requests in key order:

    1. an owner's existing grant at the request's preferred address is reused;
    2. the owner's remaining grants are handed to its remaining requests, lowest address first;
    3. a free preferred address is claimed -- for *all* requests before any fallback, so one
       request's fallback never takes another's preferred address;
    4. everything left gets the lowest free address (or None: exhausted).
    """
    ordered = sorted(requests, key=_sort_key)
    if len({r.key for r in ordered}) != len(ordered):
        raise ValueError(f"pool {pool.name}: duplicate request keys")
    grants = list(grants)
    alloc = PoolAllocator(pool, (address for address, _ in grants))
    version = alloc.version

    owned = _owned_grants(grants, {r.owner for r in ordered if r.owner}, version)
    preferred = _preferred_values(ordered, version)

    result: dict[Hashable, Allocation] = {}
    if owned:
        owned_sets = {owner: set(values) for owner, values in owned.items()}
        for r in ordered:
            wanted = preferred[r.key]
            mine = owned_sets.get(r.owner)
            if wanted is not None and mine and wanted in mine:
                mine.discard(wanted)
                result[r.key] = Allocation(r.key, alloc.text(wanted), existing=True, preferred=True)
        for r in ordered:
            if r.key in result:
                continue
            mine = owned_sets.get(r.owner)
            if mine:
                reused = next(v for v in owned[r.owner] if v in mine)
                mine.discard(reused)
                result[r.key] = Allocation(
                    r.key, alloc.text(reused), existing=True, preferred=reused == preferred[r.key]
                )
        unused = tuple(
            (alloc.text(v), owner) for owner in sorted(owned) for v in owned[owner] if v in owned_sets[owner]
        )
    else:
        unused = ()

    for r in ordered:
        wanted = preferred[r.key]
        if r.key not in result and wanted is not None and alloc.take(wanted):
            result[r.key] = Allocation(r.key, alloc.text(wanted), preferred=True)
    for r in ordered:
        if r.key not in result:
            lowest = alloc.take_lowest()
            result[r.key] = Allocation(r.key, None if lowest is None else alloc.text(lowest))
    return AllocationResult(allocations={r.key: result[r.key] for r in ordered}, unused_grants=unused)


def _owned_grants(grants: Iterable[tuple[str, str]], owners: set[str], version: int) -> dict[str, list[int]]:
    """Per requesting owner, the addresses of the pool's family it holds, lowest first."""
    owned: dict[str, list[int]] = {}
    for address, owner in grants:
        if owner in owners:
            family, value = to_int(address)
            if family == version:
                owned.setdefault(owner, []).append(value)
    for values in owned.values():
        values.sort()
    return owned


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
    "PrefixIndex",
    "allocate",
    "network_contains",
    "to_int",
    "to_text",
]

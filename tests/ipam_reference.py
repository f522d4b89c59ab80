"""The address allocator as it was before it kept its state (main at 9514867): every call builds
the used set from the pool's reserved set and every grant, then serves the requests.

Kept verbatim as the oracle of the incremental allocator (``tests/unit/test_ipam_ledger.py``
proves both choose the same addresses) and as the "before" of ``tests/benchmarks/bench_ipam.py``.
It shares the request and result types with :mod:`agent.domain.ipam`, so results compare equal.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

from agent.domain.ipam import AddressRequest, Allocation, AllocationResult, to_int, to_text
from agent.domain.model import StaticIpPool


class ReferencePoolAllocator:
    """Free/used bookkeeping of one static pool, built from scratch."""

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

    def is_free(self, value: int) -> bool:
        return self.start <= value <= self.end and value not in self._used

    def take(self, value: int) -> bool:
        if not self.is_free(value):
            return False
        self._used.add(value)
        return True

    def take_lowest(self) -> int | None:
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


def reference_allocate(
    pool: StaticIpPool,
    requests: Sequence[AddressRequest],
    grants: Iterable[tuple[str, str]] = (),
) -> AllocationResult:
    ordered = sorted(requests, key=_sort_key)
    if len({r.key for r in ordered}) != len(ordered):
        raise ValueError(f"pool {pool.name}: duplicate request keys")
    grants = list(grants)
    alloc = ReferencePoolAllocator(pool, (address for address, _ in grants))
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
    key = request.key
    return (0, key) if isinstance(key, tuple) else (1, repr(key))

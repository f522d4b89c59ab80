"""Pool choice: which static pool an IP configuration draws from at its target or test subnet.

Every IP configuration asks, so the pools of a subnet per address family, and each pool's
range and subnet as integers, are worked out once per plan and cached.
"""

from __future__ import annotations

import ipaddress

from agent.domain.model import StaticIpPool
from agent.domain.planning.index import InventoryIndex

PoolKey = tuple[str, str]
"""(site, pool name): how grants name a pool."""


class TargetPools:
    """The pools of the inventory, plus those of test networks the plan will create."""

    def __init__(self, index: InventoryIndex) -> None:
        self._pools_by_subnet = index.pools_by_subnet
        self._planned: dict[tuple[str, str, str], list[StaticIpPool]] = {}
        self._of_family: dict[tuple[str, str, str, int], list[StaticIpPool]] = {}
        self._ranges: dict[PoolKey, tuple[int, int]] = {}
        self._subnets: dict[PoolKey, tuple[int, int, int, int]] = {}

    def add_planned(self, pool: StaticIpPool) -> None:
        """A pool of a network that does not exist yet: it replaces the inventory's pools of
        that subnet (there are none: the network is new)."""
        self._planned.setdefault((pool.site, pool.vm_network, pool.vm_subnet), []).append(pool)

    def of_subnet(self, site: str, network: str, subnet: str, version: int) -> list[StaticIpPool]:
        key = (site, network, subnet, version)
        hit = self._of_family.get(key)
        if hit is None:
            planned = self._planned.get((site, network, subnet))
            pools = planned if planned is not None else self._pools_by_subnet.get((site, network, subnet), [])
            hit = self._of_family[key] = [p for p in pools if p.family == version]
        return hit

    def for_address(
        self, site: str, network: str, subnet: str, version: int, value: int, strategy: str
    ) -> StaticIpPool | None:
        """The subnet's first pool of the family -- or, retaining, the one whose range holds the
        source address, so the address can be kept."""
        pools = self.of_subnet(site, network, subnet, version)
        if not pools:
            return None
        if strategy == "retain" and len(pools) > 1:
            for p in pools:
                lo, hi = self._range(p)
                if lo <= value <= hi:
                    return p
        return pools[0]

    def in_range(self, pool: StaticIpPool, value: int) -> bool:
        """Whether the address (of the pool's family) lies in the pool's allocatable range."""
        lo, hi = self._range(pool)
        return lo <= value <= hi

    def covers(self, pool: StaticIpPool, version: int, value: int) -> bool:
        """Whether ``pool``'s subnet (not just its range) holds the address."""
        family, first, last, _ = self._subnets.get((pool.site, pool.name)) or self._remember_subnet(pool)
        return family == version and first <= value <= last

    def prefix_length(self, pool: StaticIpPool) -> int:
        return (self._subnets.get((pool.site, pool.name)) or self._remember_subnet(pool))[3]

    def _range(self, pool: StaticIpPool) -> tuple[int, int]:
        key = (pool.site, pool.name)
        hit = self._ranges.get(key)
        if hit is None:
            start, end = ipaddress.ip_address(pool.range_start), ipaddress.ip_address(pool.range_end)
            hit = self._ranges[key] = (int(start), int(end))
        return hit

    def _remember_subnet(self, pool: StaticIpPool) -> tuple[int, int, int, int]:
        """(family, first address, last address, prefix length) of the pool's subnet, kept for the next ask."""
        net = pool.network
        hit = self._subnets[(pool.site, pool.name)] = (
            net.version, int(net.network_address), int(net.broadcast_address), net.prefixlen
        )
        return hit

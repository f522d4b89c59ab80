"""Address arithmetic of the simulated sites, and the address rules Hyper-V applies to failover settings.

Shared by the inventory checks, the seeding of the state and the VMM and Hyper-V drivers, so the
inventory refuses exactly what the simulated systems would refuse at run time.
"""

from __future__ import annotations

import heapq
import ipaddress
import socket
from functools import lru_cache
from typing import Any

from agent.domain.model import FailoverIpSetting


def ip_int(text: str) -> tuple[int, int]:
    """``(family, integer)`` of an address; ``ValueError`` if it is none. The socket functions
    do in microseconds what ``ipaddress`` does in tens, which counts at 30,000 addresses."""

    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError:
        pass
    try:
        return 6, int(ipaddress.IPv6Address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None


@lru_cache(maxsize=4096)
def prefix_int(prefix: str) -> tuple[int, int, int]:
    """``(family, network integer, prefix length)`` of a canonical prefix."""

    net = ipaddress.ip_network(prefix)
    return net.version, int(net.network_address), net.prefixlen


def in_prefix(family: int, value: int, prefix: str) -> bool:
    pf, base, plen = prefix_int(prefix)
    bits = 32 if pf == 4 else 128
    return family == pf and (value >> (bits - plen)) == (base >> (bits - plen))


def interface_text(value: str) -> str:
    """An address with its prefix length, checked and in canonical text:
    ``"2001:DB8::0010/64"`` -> ``"2001:db8::10/64"``."""

    address, slash, length = value.strip().partition("/")
    if not slash:
        raise ValueError(f"{value!r} needs a prefix length, e.g. {address}/24")
    family, number = ip_int(address)
    if not length.isdigit() or not 0 <= int(length) <= (32 if family == 4 else 128):
        raise ValueError(f"{value!r}: prefix length {length!r} is out of range for IPv{family}")
    if family == 4:
        text = socket.inet_ntop(socket.AF_INET, number.to_bytes(4, "big"))
    else:
        text = str(ipaddress.IPv6Address(number))
    return f"{text}/{int(length)}"


def split_interface(value: str) -> tuple[str, int]:
    """``"192.168.1.10/24"`` (already validated) -> ``("192.168.1.10", 24)``."""

    address, _, length = value.partition("/")
    return address, int(length)


def failover_setting_problem(setting: FailoverIpSetting) -> str | None:
    """Why Hyper-V would reject one failover IP setting, or None."""

    ip = ipaddress.ip_address(setting.address)
    top = 32 if ip.version == 4 else 128
    if not 1 <= setting.prefix_length <= top:
        return f"prefix length {setting.prefix_length} is out of range for IPv{ip.version} (1-{top})"
    if setting.gateway is not None:
        gw = ipaddress.ip_address(setting.gateway)
        if gw.version != ip.version:
            return f"gateway {gw} is not IPv{ip.version} like address {ip}"
        if gw == ip:
            return f"gateway {gw} is the address itself"
    for dns in setting.dns_servers:
        if ipaddress.ip_address(dns).version != ip.version:
            return f"DNS server {dns} is not IPv{ip.version} like address {ip}"
    return None


class FreeAddresses:
    """The lowest free address of one simulated pool: every address of ``[start, next)`` is
    taken (granted or reserved) except those in ``holes``, revoked after ``next`` passed them.
    Kept from call to call (:func:`free_addresses`), so granting "any address" costs the same
    in a pool of 60,000 grants as in an empty one, instead of a pass over every grant."""

    __slots__ = ("_pool", "_granted", "_shape", "size", "start", "end", "next", "cls", "reserved", "taken", "holes")

    def __init__(self, pool: dict[str, Any], granted: dict[str, Any]) -> None:
        family, self.start = ip_int(pool["range_start"])
        self.end = ip_int(pool["range_end"])[1]
        self.next = self.start
        self.cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
        self.reserved = {ip_int(a)[1] for a in pool["reserved"]}
        self.taken = {ip_int(a)[1] for a in granted} | self.reserved
        self.holes: list[int] = []
        # What the structure was built from: the same objects, of the size last seen, for it to hold.
        self._pool, self._granted, self._shape, self.size = pool, granted, _shape(pool), len(granted)

    def take(self) -> str | None:
        """Claim the lowest free address (the caller then grants it); None when the pool is full."""
        taken, holes = self.taken, self.holes
        while holes:
            n = heapq.heappop(holes)
            if n not in taken:  # else granted by address since it was revoked
                taken.add(n)
                return str(self.cls(n))
        n, end = self.next, self.end
        while n <= end and n in taken:
            n += 1
        self.next = n + 1
        if n > end:
            return None
        taken.add(n)
        return str(self.cls(n))

    def granted(self, address: str) -> None:
        self.taken.add(ip_int(address)[1])
        self.size = len(self._granted)

    def revoked(self, address: str) -> None:
        n = ip_int(address)[1]
        if n not in self.reserved and n in self.taken:
            self.taken.discard(n)
            if self.start <= n < self.next:
                heapq.heappush(self.holes, n)
        self.size = len(self._granted)

    def holds_for(self, pool: dict[str, Any], granted: dict[str, Any]) -> bool:
        return (self._granted is granted and self._pool is pool and self.size == len(granted)
                and self._shape == _shape(pool))


def _shape(pool: dict[str, Any]) -> tuple[Any, ...]:
    return pool["range_start"], pool["range_end"], tuple(pool["reserved"])


_KEPT: dict[tuple[str, str], FreeAddresses] = {}
"""Per (site, pool), the structure of the grants dict it was built from. The simulator changes a
grants dict only in :class:`~agent.drivers.sim.vmm.SimVmm`, which reports each change here
(:func:`note_granted`, :func:`note_revoked`); a state loaded again (another process changed it, a
failed call was rolled back) is made of new objects, so the identity check sends it to a rebuild."""


def free_addresses(site: str, name: str, pool: dict[str, Any], granted: dict[str, Any]) -> FreeAddresses:
    """The kept structure of the pool whose state is ``pool`` and ``granted``, rebuilt when it is
    not the one kept (a state loaded again, a pool made anew, a change it was not told of)."""
    kept = _KEPT.get((site, name))
    if kept is not None and kept.holds_for(pool, granted):
        return kept
    fresh = FreeAddresses(pool, granted)
    if len(_KEPT) >= 1024:  # one entry per pool of the worlds of this process: tests open many
        _KEPT.clear()
    _KEPT[(site, name)] = fresh
    return fresh


def note_granted(site: str, name: str, pool: dict[str, Any], granted: dict[str, Any], address: str) -> None:
    """``address`` was just added to ``granted``, the grants dict of ``pool``."""
    kept = _KEPT.get((site, name))
    if kept is None:
        return
    if kept._granted is not granted and kept._pool is pool and not kept._granted and len(granted) == 1:
        # The pool held no grant (its structure was built from an empty stand-in) and this first
        # one made its dict: the same state, one grant on.
        kept._granted = granted
    if kept._granted is granted and kept.size == len(granted) - 1:
        kept.granted(address)
    else:
        _KEPT.pop((site, name), None)


def note_revoked(site: str, name: str, granted: dict[str, Any], address: str) -> None:
    """``address`` was just removed from ``granted``, the grants dict of the pool."""
    kept = _KEPT.get((site, name))
    if kept is None:
        return
    if kept._granted is granted and kept.size == len(granted) + 1:
        kept.revoked(address)
    else:
        _KEPT.pop((site, name), None)

"""Address arithmetic of the simulated sites, and the address rules Hyper-V applies to failover settings.

Shared by the inventory checks, the seeding of the state and the VMM and Hyper-V drivers, so the
inventory refuses exactly what the simulated systems would refuse at run time.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
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
    """The lowest free address of one simulated pool, for the grants of one call: every address
    of ``[start, next)`` is taken (granted or reserved). Built once per call and pool, so a batch
    granting "any address" to many NICs makes one pass over the pool's grants, not one per NIC.
    Not kept across calls: another process's changes are replayed into the same state objects,
    so a structure kept from an earlier call could offer an address granted since."""

    __slots__ = ("end", "next", "cls", "taken")

    def __init__(self, pool: Mapping[str, Any], granted: Iterable[str]) -> None:
        family, self.next = ip_int(pool["range_start"])
        self.end = ip_int(pool["range_end"])[1]
        self.cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
        self.taken = {ip_int(a)[1] for a in granted} | {ip_int(a)[1] for a in pool["reserved"]}

    def take(self) -> str | None:
        """Claim the lowest free address (the caller then grants it); None when the pool is full."""
        n, end, taken = self.next, self.end, self.taken
        while n <= end and n in taken:
            n += 1
        self.next = n + 1
        if n > end:
            return None
        taken.add(n)
        return str(self.cls(n))

    def granted(self, address: str) -> None:
        """``address`` was granted by address in this call: no longer free."""
        self.taken.add(ip_int(address)[1])

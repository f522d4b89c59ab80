"""How the simulated DNS servers spell names and record values: the keys of their zones.

Values are made canonical by :mod:`agent.dns.names`, as every DNS driver's are; the wrapper here
keeps the two places where a server is stricter or spells differently (see
:func:`canonical_value`). Names are compared as plain lower-case text: a name that does not parse
is simply one no zone holds (NOTZONE), never a crash on the lookup.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from agent.dns import names


def fqdn(name: str) -> str:
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def record_fqdn(name: str, zone: str) -> str:
    """``web01`` in ``example.com.`` -> ``web01.example.com.``; ``@`` -> the zone; absolute kept."""

    name = name.strip().lower()
    if name == "@":
        return zone
    return name if name.endswith(".") else f"{name}.{zone}"


def in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


# Cached: dnspython takes ~100 us to parse a PTR target (the old text check took 1), and opening a
# world parses every value of its inventory twice (the inventory check, then the seed).
@lru_cache(maxsize=65536)
def canonical_value(rtype: str, value: str) -> str:
    """The canonical text of one record value as :func:`agent.dns.names.canonical_value` gives
    it; ``ValueError`` when it is not valid for the type. Two differences, both kept on purpose:

    * A PTR target must be fully qualified (end with ``.``) and not the root: ``agent.dns.names``
      takes ``host.example`` as absolute because the agent always writes whole names, but a
      simulated server stands for the real one, which would store a relative target under its
      zone, so it refuses rather than guess.
    * AAAA text is :mod:`ipaddress`'s, the form of :data:`agent.domain.model.Address` and of every
      value already in a state file: dnspython writes IPv4-mapped and -compatible addresses as
      ``::ffff:1.2.3.4`` where ``ipaddress`` writes ``::ffff:102:304``.
    """

    if rtype == "PTR":
        target = value.strip()
        if not target.endswith(".") or target == ".":
            raise ValueError(f"PTR target {value!r} must be a fully qualified name (ending with '.')")
    text = names.canonical_value(rtype, value)
    return str(ipaddress.IPv6Address(text)) if rtype == "AAAA" else text

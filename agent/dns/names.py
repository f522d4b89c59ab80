"""Canonical text for DNS names and record values, and PTR names for addresses.

Pure functions on dnspython's parsers: no I/O. Every DNS driver and the verifier compare record
sets through these, so ``"2001:DB8:0::1"`` and ``"2001:db8::1"``, or ``"Host1.Example.Test"`` and
``"host1.example.test."``, are the same value everywhere.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA

from agent.domain.model import RecordType
from agent.domain.planning import ptr_name

_ADDRESS_TYPES: dict[str, type[dns.rdtypes.IN.A.A] | type[dns.rdtypes.IN.AAAA.AAAA]] = {
    "A": dns.rdtypes.IN.A.A,
    "AAAA": dns.rdtypes.IN.AAAA.AAAA,
}


def canonical_name(name: str | dns.name.Name) -> str:
    """Fully qualified, lower case, trailing dot: ``"Host1.Example.Test"`` -> ``"host1.example.test."``.

    A name without a trailing dot is taken as fully qualified (relative to the root), never
    relative to some zone: the agent always writes whole names.
    """
    return to_dns_name(name).to_text()


def to_dns_name(name: str | dns.name.Name) -> dns.name.Name:
    """The lower-cased absolute :class:`dns.name.Name` of ``name``; ``ValueError`` if malformed."""
    if isinstance(name, dns.name.Name):
        parsed = name if name.is_absolute() else name.concatenate(dns.name.root)
    else:
        text = name.strip()
        try:
            if "\\" not in text:  # no escapes: lower-casing the text is canonicalising it
                return dns.name.from_text(text.lower(), origin=dns.name.root)
            parsed = dns.name.from_text(text, origin=dns.name.root)
        except dns.exception.DNSException as exc:
            raise ValueError(f"{name!r} is not a valid DNS name: {exc}") from exc
    return parsed.canonicalize()


def parse_value(rtype: RecordType | str, value: str) -> dns.rdata.Rdata:
    """``value`` as dnspython rdata of ``rtype``; ``ValueError`` if it is not one.

    PTR targets without a trailing dot are fully qualified (origin = root), like record names.
    """
    return parse_canonical(rtype, value)[1]


def parse_canonical(rtype: RecordType | str, value: str) -> tuple[str, dns.rdata.Rdata]:
    """``value``'s canonical text (see :func:`canonical_rdata`) and rdata in that form: what a
    driver compares, and what it sends."""
    rtype = str(rtype)
    text = value.strip()
    if rtype in _ADDRESS_TYPES:
        # Addresses go straight to dnspython's A/AAAA constructors, which are strict (no leading
        # zeros, no IPv4 in an AAAA) and store the canonical text; skipping its text tokenizer
        # halves the cost of a change in a 1,000-change apply.
        try:
            address = _ADDRESS_TYPES[rtype](dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text)
        except dns.exception.DNSException as exc:
            raise ValueError(f"{value!r} is not a valid {rtype} value") from exc
        return address.address, address
    try:
        # relativize=False: else dnspython stores the target relative to the origin, and a
        # message would append its zone to it.
        rd = dns.rdata.from_text(
            dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text, origin=dns.name.root, relativize=False
        )
    except dns.exception.DNSException as exc:
        raise ValueError(f"{value!r} is not a valid {rtype} value") from exc
    target = getattr(rd, "target", None)
    if isinstance(target, dns.name.Name):  # PTR (and any name-valued type): lower case
        rd = rd.replace(target=target.canonicalize())
    return canonical_rdata(rd), rd


def canonical_rdata(rd: dns.rdata.Rdata) -> str:
    """Canonical text of one rdata: compressed lower-case IPv6 (RFC 5952, as dnspython prints
    it), dotted-quad IPv4, absolute lower-case PTR targets."""
    target = getattr(rd, "target", None)
    if isinstance(target, dns.name.Name):
        return to_dns_name(target).to_text()
    return rd.to_text()


def canonical_value(rtype: RecordType | str, value: str) -> str:
    return parse_canonical(rtype, value)[0]


def canonical_values(rtype: RecordType | str, values: Iterable[str]) -> tuple[str, ...]:
    """Sorted, de-duplicated canonical texts (the form :class:`~agent.domain.model.RecordSet`
    holds)."""
    return tuple(sorted({canonical_value(rtype, v) for v in values}))


def reverse_name(address: str) -> str:
    """The PTR owner name of an address: ``192.0.2.10`` -> ``10.2.0.192.in-addr.arpa.``,
    ``2001:db8::1`` -> the 32 nibbles under ``ip6.arpa.`` (RFC 3596 section 2.5).

    The planner's :func:`agent.domain.planning.ptr_name` makes the name (the same one the
    inventory reads and the plan writes); the address is checked with :mod:`ipaddress` first
    for a clear error.
    """
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError as exc:
        raise ValueError(f"{address!r} is not an IPv4 or IPv6 address") from exc
    return ptr_name(str(parsed))


def record_label(name: str, rtype: RecordType | str) -> str:
    """How errors and reports name one RRset: ``"host1.example.test. A"``."""
    return f"{name} {rtype}"

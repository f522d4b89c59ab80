"""Pinning RFC 2136 changes: each :class:`~agent.domain.model.RecordChange` parsed and checked
once, then written into an update message as a prerequisite on the RRset it expects plus the
delete-and-add that replaces it (the rules are in :mod:`agent.drivers.rfc2136`'s docstring).

Signing is not decided here: :func:`update_message` takes whatever key the driver negotiated
(an HMAC TSIG key or a GSS-TSIG context, both as a ``dns.tsig.Key``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dns.name
import dns.rdata
import dns.rdatatype
import dns.tsig
import dns.update

from agent.dns.names import parse_canonical, record_label, to_dns_name
from agent.domain.errors import DnsInvalidRequest
from agent.domain.model import RecordChange, RecordSet, RecordType

_MAX_TTL = 2**31 - 1  # RFC 2181 section 8


@dataclass(frozen=True, slots=True)
class Pinned:
    """One change, parsed: canonical texts for comparing, rdata for the message."""

    name: dns.name.Name
    type: RecordType
    rdtype: dns.rdatatype.RdataType
    ttl: int
    expected: tuple[str, ...]
    new: tuple[str, ...]
    expected_rdata: tuple[dns.rdata.Rdata, ...]
    new_rdata: tuple[dns.rdata.Rdata, ...]

    @property
    def key(self) -> tuple[dns.name.Name, dns.rdatatype.RdataType]:
        return (self.name, self.rdtype)

    @property
    def label(self) -> str:
        return record_label(self.name.to_text(), self.type)

    def holds(self, current: RecordSet | None) -> bool:
        """The change's outcome is already in place (values and TTL)."""
        if not self.new:
            return current is None
        return current is not None and current.values == self.new and current.ttl == self.ttl

    def expected_holds(self, current: RecordSet | None) -> bool:
        if not self.expected:
            return current is None
        return current is not None and current.values == self.expected


def _where(index: int, change: RecordChange) -> str:
    return f"changes[{index}] ({change.name} {change.type})"


def conflict(change: Pinned, found: RecordSet | None) -> dict[str, Any]:
    """How a conflict is reported: the RRset, what the change was pinned to, what is there."""
    return {
        "record": change.label,
        "expected": list(change.expected),
        "found": list(found.values) if found else [],
        "found_ttl": found.ttl if found else None,
    }


def pin(zone: dns.name.Name, changes: Sequence[RecordChange], fields: dict[str, Any]) -> list[Pinned]:
    """Parse and check every change; all problems are reported together."""
    problems: list[str] = []
    pinned: list[Pinned] = []
    # Hot path of a 1,000-change apply: texts are parsed once per distinct zone and type,
    # and duplicates are found by text (a dns.name.Name hashes label by label).
    seen: set[tuple[str, str]] = set()
    zones: dict[str, dns.name.Name] = {}
    rdtypes: dict[str, dns.rdatatype.RdataType] = {}
    for i, change in enumerate(changes):
        where = functools.partial(_where, i, change)  # the text is built only for a problem
        try:
            name = to_dns_name(change.name)
            change_zone = zones.get(change.zone) or zones.setdefault(change.zone, to_dns_name(change.zone))
        except ValueError as exc:
            problems.append(f"{where()}: {exc}")
            continue
        if change_zone != zone:
            problems.append(f"{where()}: belongs to zone {change_zone}, not {zone}")
        if not name.is_subdomain(zone):
            problems.append(f"{where()}: {name} is not in zone {zone}")
        if change.ttl > _MAX_TTL:
            problems.append(f"{where()}: ttl {change.ttl} is over {_MAX_TTL}")
        rtype = RecordType(change.type)
        rdtype = rdtypes.get(rtype) or rdtypes.setdefault(rtype, dns.rdatatype.from_text(rtype))
        text = name.to_text()
        if (text, rtype) in seen:
            problems.append(f"{where()}: the same record set is changed twice in one call")
        seen.add((text, rtype))
        try:
            expected, expected_rdata = canonical_set(rtype, change.expected)
            new, new_rdata = canonical_set(rtype, change.new_values)
        except ValueError as exc:
            problems.append(f"{where()}: {exc}")
            continue
        pinned.append(
            Pinned(
                name=name,
                type=rtype,
                rdtype=rdtype,
                ttl=change.ttl,
                expected=expected,
                new=new,
                expected_rdata=expected_rdata,
                new_rdata=new_rdata,
            )
        )
    if problems:
        raise DnsInvalidRequest(
            f"{len(problems)} problem(s) in the changes for zone {zone}: " + "; ".join(problems),
            zone=zone.to_text(),
            problems=problems,
            **fields,
        )
    return pinned



def canonical_set(rtype: RecordType, values: Iterable[str]) -> tuple[tuple[str, ...], tuple[dns.rdata.Rdata, ...]]:
    """Sorted canonical texts and their rdata. Keyed by canonical text, so "2001:DB8::1" and
    "2001:db8::1" count once."""
    if isinstance(values, (tuple, list)) and len(values) == 1:  # the common case, without sorting
        text, rd = parse_canonical(rtype, values[0])
        return (text,), (rd,)
    unique: dict[str, dns.rdata.Rdata] = {}
    for value in values:
        text, rd = parse_canonical(rtype, value)  # rd is sent in the lower-case form compared
        unique.setdefault(text, rd)
    texts = tuple(sorted(unique))
    return texts, tuple(unique[k] for k in texts)


def update_message(zone: dns.name.Name, batch: list[Pinned], key: dns.tsig.Key) -> dns.update.UpdateMessage:
    message = dns.update.UpdateMessage(zone, keyring=key, keyname=key.name, keyalgorithm=key.algorithm)
    for c in batch:
        if c.expected:
            message.present(c.name, *c.expected_rdata)
            message.delete(c.name, c.rdtype)
        else:
            message.absent(c.name, c.rdtype)
        if c.new:
            message.add(c.name, c.ttl, *c.new_rdata)
    return message

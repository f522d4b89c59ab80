"""A simulated authoritative DNS server (:class:`agent.ports.Dns`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from agent.domain.errors import DnsNotAuthoritative, DnsPrerequisiteFailed, DnsRefused
from agent.domain.model import RecordChange, RecordSet, RecordType
from agent.drivers.sim.dnsnames import canonical_value, fqdn, in_zone
from agent.drivers.sim.state import State, record_value

if TYPE_CHECKING:
    from agent.drivers.sim.world import SimWorld
    from agent.ports import Dns, DnsVerification

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class SimVerification:
    """What :meth:`SimDns.verify` found (an :class:`agent.ports.DnsVerification`)."""

    zone: str
    server: str
    stale: tuple[str, ...]
    """Each record set that does not answer the new data, with what it answers."""

    @property
    def ok(self) -> bool:
        return not self.stale

    def summary(self) -> str:
        if self.ok:
            return f"zone {self.zone}: simulated server {self.server} answers the new data"
        return f"zone {self.zone}: simulated server {self.server} still answers " + "; ".join(self.stale)

    def to_dict(self) -> dict[str, Any]:
        return {"zone": self.zone, "ok": self.ok,
                "servers": [{"server": self.server, "converged": self.ok, "stale": list(self.stale)}]}


class SimDns:
    """One DNS server of the inventory, serving its zones.

    Like a real server it answers only for its zones (``dns_not_authoritative``, also for a name
    outside the zone: NOTZONE), compares names case-insensitively, stores A/AAAA values in
    canonical form and PTR targets fully qualified (malformed values: ``dns_refused``), and
    treats an RRset's values as a set. ``apply`` is all-or-nothing per call: every change not
    already in effect must find exactly its ``expected`` values, else ``dns_prerequisite_failed``
    names each record that differs and what it holds, and nothing is applied. Two changes to one
    RRset in a call are ``dns_refused``.
    """

    def __init__(self, world: SimWorld, name: str) -> None:
        self._world = world
        self.name = name

    def _zone(self, st: State, zone: str) -> tuple[str, dict[str, Any]]:
        z = fqdn(zone)
        data = st["dns"][self.name].get(z)
        if data is None:
            raise DnsNotAuthoritative(f"DNS server {self.name} is not authoritative for {z}", zone=z, server=self.name)
        return z, data

    def _name(self, name: str, zone: str) -> str:
        n = name.strip().lower()
        if not n.endswith(".") or not in_zone(n, zone):
            raise DnsNotAuthoritative(
                f"{name} is not a fully qualified name in zone {zone} (NOTZONE)",
                zone=zone,
                record=name,
                server=self.name,
            )
        return n

    def read(self, zone: str, names: Sequence[tuple[str, RecordType]]) -> list[RecordSet]:
        def run(st: State) -> tuple[list[RecordSet], Sequence[str]]:
            z, data = self._zone(st, zone)
            out = []
            for name, rtype in names:
                key = self._key(name, RecordType(rtype), z)
                rec = data.get(key)
                if rec is not None:
                    out.append(record_value(z, key, rec))
            return out, ()

        return self._world._single(
            "dns.read",
            self.name,
            [fqdn(zone), *(n for n, _ in names)],
            run,
            mutating=False,
            items=len(names),
            keys=[f"{n} {RecordType(t).value}" for n, t in names],
        )

    def apply(self, zone: str, changes: Sequence[RecordChange]) -> None:
        def run(st: State) -> tuple[None, Sequence[str]]:
            z, data = self._zone(st, zone)
            todo: list[tuple[str, int, list[str]]] = []
            mismatches: list[tuple[str, list[str], list[str]]] = []
            seen: set[str] = set()
            for ch in changes:
                if fqdn(ch.zone) != z:
                    raise DnsNotAuthoritative(
                        f"change for {ch.name} names zone {ch.zone}; this update is for {z}",
                        zone=ch.zone,
                        record=ch.name,
                    )
                key = self._key(ch.name, ch.type, z)
                if key in seen:
                    raise DnsRefused(f"two changes to {key} in one update", zone=z, record=key)
                seen.add(key)
                new = self._values(ch.type.value, ch.new_values, key)
                expected = self._values(ch.type.value, ch.expected, key)
                current = data.get(key)
                if _in_effect(current, new, ch.ttl):
                    continue  # left out of the update, not a failed prerequisite
                found = current["values"] if current else []
                if expected != found:
                    mismatches.append((key, expected, found))
                todo.append((key, ch.ttl, new))
            if mismatches:
                detail = "; ".join(
                    f"{k}: expected {', '.join(e) or 'no record'}, found {', '.join(f) or 'no record'}"
                    for k, e, f in mismatches
                )
                first = mismatches[0]
                raise DnsPrerequisiteFailed(
                    f"zone {z} on {self.name} changed since it was read, nothing applied: {detail}",
                    zone=z,
                    record=first[0],
                    found=list(first[2]),
                    records=[m[0] for m in mismatches],
                )
            for key, ttl, new in todo:
                if new:
                    data[key] = {"ttl": ttl, "values": new}
                else:
                    data.pop(key, None)
            return None, [key for key, _, _ in todo]

        self._changes_call("dns.apply", zone, changes, run, mutating=True)

    def verify(self, zone: str, changes: Sequence[RecordChange]) -> SimVerification | None:
        """Read the changed record sets back, as a real server's verification asks it: the
        simulated server is its own only authoritative server, so it either answers the new data
        or names what it answers instead (e.g. after a fault rule on ``dns.apply`` that acted
        but reported a timeout, then another change)."""

        if not changes:
            return None

        def run(st: State) -> tuple[SimVerification, Sequence[str]]:
            z, data = self._zone(st, zone)
            stale = []
            for ch in changes:
                key = self._key(ch.name, ch.type, z)
                current = data.get(key)
                if not _in_effect(current, self._values(ch.type.value, ch.new_values, key), ch.ttl):
                    stale.append(f"{key} -> [{', '.join(current['values'])}]" if current else f"{key} -> nothing")
            return SimVerification(zone=z, server=self.name, stale=tuple(stale)), ()

        return self._changes_call("dns.verify", zone, changes, run, mutating=False)

    def _changes_call(
        self,
        kind: str,
        zone: str,
        changes: Sequence[RecordChange],
        run: Callable[[State], tuple[R, Sequence[str]]],
        *,
        mutating: bool,
    ) -> R:
        """Runs a call about ``changes`` to ``zone``: fault rules match the zone and the record
        names, the call record lists each change's record set."""

        return self._world._single(
            kind,
            self.name,
            [fqdn(zone), *(c.name for c in changes)],
            run,
            mutating=mutating,
            items=len(changes),
            keys=[f"{c.name.strip().lower()} {c.type.value}" for c in changes],
        )

    def _key(self, name: str, rtype: RecordType, zone: str) -> str:
        """The zone's key of one record set, ``"<fully qualified name> <TYPE>"``."""

        return f"{self._name(name, zone)} {rtype.value}"

    def _values(self, rtype: str, values: Sequence[str], key: str) -> list[str]:
        try:
            return sorted({canonical_value(rtype, v) for v in values})
        except ValueError as exc:
            raise DnsRefused(f"{key}: {exc}", record=key, server=self.name) from None

    def probe(self, zone: str) -> str:
        """The simulated server signs nothing: it answers for the zones it holds
        (``dns_not_authoritative`` for another); fault rules match ``dns.probe``, the server
        and the zone."""

        def run(st: State) -> tuple[str, Sequence[str]]:
            z, data = self._zone(st, zone)
            return f"simulated DNS server {self.name} answers for zone {z} ({len(data)} record sets)", ()

        return self._world._single("dns.probe", self.name, [fqdn(zone)], run, mutating=False)


def _in_effect(current: dict[str, Any] | None, new: list[str], ttl: int) -> bool:
    """The zone already holds what a change asks for: its values with its TTL, or, for a
    deletion, no record set at all."""

    if current is None:
        return not new
    return bool(current["values"] == new and current["ttl"] == ttl)


if TYPE_CHECKING:
    # Nothing else names these classes as the ports they implement, so mypy checks it here.
    _port: type[Dns] = SimDns
    _verification: type[DnsVerification] = SimVerification

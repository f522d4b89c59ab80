"""One Windows DNS server through the DnsServer cmdlets (:class:`agent.ports.Dns`).

Each port method is one script run at the server's endpoint (``powershell/dns/``), with the
server as ``-ComputerName``. The DnsServer cmdlets have no transaction, so ``apply`` keeps the
port's promise in two steps inside one script: every record set is read and compared with what
the change is pinned to, and only when all hold is any changed -- a set that differs refuses the
whole call (``dns_prerequisite_failed``) with nothing changed. After that each set is changed on
its own, like one update message each: one refused set leaves the others applied and ``apply``
raises ``dns_batch_failed`` naming it (a transient error of its first code when every failure is
transient, so that the engine retries the call). The behaviour each method keeps is the simulated
driver's (``agent/drivers/sim/dns.py``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.config import DnsServer
from agent.dns.names import canonical_value
from agent.dns.verify import VerifyReport, host_port
from agent.dns.verify import verify as verify_dns
from agent.domain.errors import DnsBatchError, DnsNotAuthoritative, DnsPrerequisiteFailed, DnsRefused
from agent.domain.model import RecordChange, RecordSet, RecordType
from agent.drivers.ps import PsDriver, item_error
from agent.drivers.remoting import Remote, RemoteItem, RemoteScriptError
from agent.errors import AgentError, make_error

if TYPE_CHECKING:
    from agent.ports import Dns, DnsVerification

__all__ = ["PsWindowsDns", "WindowsDnsVerification"]

# FullyQualifiedErrorId prefixes of the DnsServer cmdlets (Win32 DNS error numbers).
_ERRORS = {"WIN32 9601": "dns_not_authoritative", "WIN32 5,": "dns_refused", "AccessDenied": "dns_refused",
           "WIN32 9711": "dns_rejected", "WIN32 9709": "dns_rejected", "InvalidArgument": "dns_invalid_request",
           "ParameterArgumentValidationError": "dns_invalid_request"}
_NO_ZONE = "WIN32 9601"
# Faults of the moment inside one record's change (RPC timeout, server busy): the item's error is
# transient, so retrying the whole call is safe -- what applied is in effect and left out.
_TRANSIENT = {"WIN32 1460": "timeout", "WIN32 1722": "unreachable", "WIN32 1726": "unreachable",
              "WIN32 9002": "dns_servfail"}
_TRANSIENT_CODES = frozenset({"timeout", "unreachable", "dns_servfail"})


def _fqdn(name: str) -> str:
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


@dataclass(frozen=True, slots=True)
class WindowsDnsVerification:
    """What :meth:`PsWindowsDns.verify` found (an :class:`agent.ports.DnsVerification`): the
    changed record sets read back from the server through the DnsServer cmdlets."""

    zone: str
    server: str
    stale: tuple[str, ...]
    """Each record set that does not answer the new data, with what it answers."""

    @property
    def ok(self) -> bool:
        return not self.stale

    def summary(self) -> str:
        if self.ok:
            return f"zone {self.zone}: Windows DNS server {self.server} answers the new data"
        return f"zone {self.zone}: Windows DNS server {self.server} still answers " + "; ".join(self.stale)

    def to_dict(self) -> dict[str, Any]:
        return {"zone": self.zone, "ok": self.ok,
                "servers": [{"server": self.server, "converged": self.ok, "stale": list(self.stale)}]}


class PsWindowsDns:
    """The Windows DNS server ``server`` (kind ``windows``), reached at its ``endpoint``.

    Names are compared case-insensitively, A/AAAA values in canonical form, PTR targets fully
    qualified (a malformed value or a relative target: ``dns_refused``, before anything is sent),
    values as a set; a name outside the zone is ``dns_not_authoritative`` (NOTZONE), as is a
    zone the server does not hold."""

    def __init__(self, remote: Remote, server: DnsServer, *, zones: Sequence[str] = ()) -> None:
        if server.kind != "windows" or server.endpoint is None:
            raise ValueError(f"DNS server {server.name} is not a windows server with an endpoint")
        self.name: str = server.name
        self.zones = tuple(_fqdn(z) for z in zones)
        self._verify = server.verify_timeout_s > 0
        self._server = server
        self._computer = server.endpoint.address or server.name
        self._ps = PsDriver(remote, server.endpoint, timeout_s=server.timeout_s)

    # ----------------------------------------------------------------------- common

    @contextmanager
    def _zone_held(self, zone: str) -> Iterator[None]:
        """Around a script run: a zone the server does not hold (the scripts' terminating
        ``Get-DnsServerZone`` error, WIN32 9601) is ``dns_not_authoritative``; another known
        DnsServer error (access denied: ``dns_refused``) gets its code, still permanent."""
        try:
            yield
        except RemoteScriptError as exc:
            error_id = str(exc.fields.get("fully_qualified_error_id") or "")
            if error_id.startswith(_NO_ZONE):
                raise DnsNotAuthoritative(f"DNS server {self.name} is not authoritative for {zone}",
                                          zone=zone, server=self.name, fully_qualified_error_id=error_id) from None
            code = next((mapped for prefix, mapped in _ERRORS.items() if error_id.startswith(prefix)), None)
            if code is None:
                raise
            raise make_error(code, "permanent", f"DNS server {self.name}, zone {zone}: {exc.message}",
                             zone=zone, server=self.name, fully_qualified_error_id=error_id) from None

    def _relative(self, name: str, zone: str) -> str:
        n = name.strip().lower()
        if not n.endswith(".") or not (n == zone or n.endswith("." + zone)):
            raise DnsNotAuthoritative(f"{name} is not a fully qualified name in zone {zone} (NOTZONE)",
                                      zone=zone, record=name, server=self.name)
        return "@" if n == zone else n[: -len(zone) - 1]

    @staticmethod
    def _absolute(name: str, zone: str) -> str:
        return zone if name == "@" else f"{name.lower()}.{zone}"

    def _values(self, rtype: RecordType, values: Sequence[str], key: str) -> list[str]:
        try:
            return sorted({_canonical(rtype, v) for v in values})
        except ValueError as exc:
            raise DnsRefused(f"{key}: {exc}", record=key, server=self.name) from None

    def _set(self, zone: str, raw: Mapping[str, Any]) -> RecordSet:
        rtype = RecordType(raw["type"])
        values = raw["values"] if isinstance(raw["values"], list) else [raw["values"]]  # ConvertTo-Json unwraps
        return RecordSet(zone=zone, name=self._absolute(raw["name"], zone), type=rtype, ttl=int(raw["ttl"]),
                         values=tuple(sorted({_canonical(rtype, v) for v in values})))

    def _failed(self, items: list[RemoteItem]) -> None:
        failed = [it for it in items if it.error_id is not None]
        if failed:
            raise item_error(failed[0], _ERRORS)

    # ------------------------------------------------------------------------- port

    def read(self, zone: str, names: Sequence[tuple[str, RecordType]]) -> list[RecordSet]:
        z = _fqdn(zone)
        wanted = [{"name": self._relative(n, z), "type": RecordType(t).value} for n, t in names]
        if not wanted:
            return []
        with self._zone_held(z):
            items = self._ps.call("dns/Get-AgentDnsRecord", ComputerName=self._computer, ZoneName=z.rstrip("."),
                                  NamesJson=json.dumps(wanted))
        self._failed(items)
        by_key = {it.key.lower(): self._set(z, it.after) for it in items if it.after is not None}
        out: list[RecordSet] = []
        for w in wanted:
            found = by_key.get(f"{w['name']}/{w['type']}".lower())
            if found is not None and found not in out:
                out.append(found)
        return out

    def _pin(self, zone: str, changes: Sequence[RecordChange]) -> list[dict[str, Any]]:
        """Each change as the script takes it; refused here, before anything is sent, when it
        names another zone, a name outside the zone, a set twice or a malformed value."""
        pinned: list[dict[str, Any]] = []
        seen: set[str] = set()
        for ch in changes:
            if _fqdn(ch.zone) != zone:
                raise DnsNotAuthoritative(f"change for {ch.name} names zone {ch.zone}; this update is for {zone}",
                                          zone=ch.zone, record=ch.name)
            name = self._relative(ch.name, zone)
            key = f"{self._absolute(name, zone)} {ch.type.value}"
            if key in seen:
                raise DnsRefused(f"two changes to {key} in one update", zone=zone, record=key)
            seen.add(key)
            pinned.append({"name": name, "type": ch.type.value, "ttl": ch.ttl,
                           "expected": self._values(ch.type, ch.expected, key),
                           "new": self._values(ch.type, ch.new_values, key)})
        return pinned

    def apply(self, zone: str, changes: Sequence[RecordChange]) -> None:
        z = _fqdn(zone)
        pinned = self._pin(z, changes)
        if not pinned:
            return
        with self._zone_held(z):
            items = self._ps.call("dns/Set-AgentDnsRecord", ComputerName=self._computer, ZoneName=z.rstrip("."),
                                  ChangesJson=json.dumps(pinned))
        labels = {f"{p['name']}/{p['type']}".lower(): f"{self._absolute(p['name'], z)} {p['type']}" for p in pinned}
        mismatched = [it for it in items if it.error_code == "dns_prerequisite_failed"]
        if mismatched:
            found = {it.key: [] if it.after is None else list(self._set(z, it.after).values) for it in mismatched}
            expected = {f"{p['name']}/{p['type']}".lower(): p["expected"] for p in pinned}
            detail = "; ".join(f"{labels[it.key.lower()]}: expected "
                               f"{', '.join(expected[it.key.lower()]) or 'no record'}, "
                               f"found {', '.join(found[it.key]) or 'no record'}" for it in mismatched)
            first = mismatched[0]
            raise DnsPrerequisiteFailed(
                f"zone {z} on {self.name} changed since it was read, nothing applied: {detail}",
                zone=z, record=labels[first.key.lower()], found=found[first.key],
                records=[labels[it.key.lower()] for it in mismatched])
        failures: list[AgentError] = []
        for it in items:
            if it.error_id is not None:
                err = item_error(it, {**_TRANSIENT, **_ERRORS})
                records = [labels.get(it.key.lower(), it.key)]
                if err.code in _TRANSIENT_CODES:
                    err = make_error(err.code, "transient", err.message, **err.fields)
                err.fields["records"] = records
                failures.append(err)
        if not failures:
            return
        if len(pinned) == 1:
            raise failures[0]
        if all(f.transient for f in failures):
            # Raised as a TransientError of the first code, not as a transient dns_batch_failed:
            # the engine's retry loop retries TransientError only, and the same call again is safe
            # (what applied is in effect and left out, the rest still holds what it is pinned to).
            head = failures[0]
            raise make_error(head.code, "transient",
                             f"{len(failures)} of {len(pinned)} record sets of zone {z} on DNS server {self.name} "
                             f"failed for a passing reason ({head.message}); the others were applied: retry",
                             zone=z, server=self.name, records=[r for f in failures for r in f.fields["records"]],
                             failures=[f.to_dict() for f in failures])
        raise DnsBatchError(
            f"{len(failures)} of {len(pinned)} record sets of zone {z} on DNS server {self.name} were refused "
            f"({', '.join(sorted({f.code for f in failures}))}); the others were applied and stay applied: "
            "re-read before deciding",
            failures=failures, applied_batches=len(pinned) - len(failures), zone=z, server=self.name,
            batches=len(pinned))

    def verify(self, zone: str, changes: Sequence[RecordChange]) -> WindowsDnsVerification | VerifyReport | None:
        """With ``verify_servers`` configured (the zone's other domain controllers, which AD
        replication reaches later): ask each of them over DNS until it answers the new data or
        ``verify_timeout_s`` passes (:func:`agent.dns.verify.verify`), and the
        ``verify_resolvers`` once. Without: read the changed record sets back from this server
        through the DnsServer cmdlets. ``None`` when not verifying; never raises for a server
        that lags or cannot be read back, it is reported."""
        if not changes or not self._verify:
            return None
        z = _fqdn(zone)
        if self._server.verify_servers:
            return verify_dns(z, changes, servers=[host_port(s, 53) for s in self._server.verify_servers],
                              resolvers=[host_port(s, 53) for s in self._server.verify_resolvers],
                              timeout_s=self._server.verify_timeout_s,
                              query_timeout_s=min(2.0, self._server.timeout_s))
        try:
            current = {(rs.name, rs.type): rs for rs in self.read(z, [(c.name, c.type) for c in changes])}
        except AgentError as exc:
            return WindowsDnsVerification(z, self.name, (f"not read back: {exc.code} ({exc.message})",))
        stale = []
        for ch in changes:
            key = (_fqdn(ch.name), ch.type)
            rs = current.get(key)
            new = sorted({_canonical(ch.type, v) for v in ch.new_values})
            held = rs is not None and list(rs.values) == new and rs.ttl == ch.ttl
            if not (held or (rs is None and not new)):
                label = f"{key[0]} {ch.type.value}"
                stale.append(f"{label} -> [{', '.join(rs.values)}]" if rs else f"{label} -> nothing")
        return WindowsDnsVerification(z, self.name, tuple(stale))

    def probe(self, zone: str) -> str:
        z = _fqdn(zone)
        with self._zone_held(z):
            items = self._ps.call("dns/Get-AgentDnsZoneProbe", ComputerName=self._computer, ZoneName=z.rstrip("."))
        if not items:
            raise RemoteScriptError(f"DNS server {self.name} answered the probe of {z} with nothing", zone=z)
        self._failed(items)
        a = items[0].after
        kind = "AD-integrated " if a["ad_integrated"] else ""
        return (f"Windows DNS server {self.name} answers for zone {z} ({kind}{a['zone_type']}, dynamic updates "
                f"{a['dynamic_update']})")


def _canonical(rtype: RecordType | str, value: str) -> str:
    """A value as the server stores it: PTR targets must be fully qualified (the server would
    put a relative one under its zone), AAAA text is :mod:`ipaddress`'s."""
    kind = RecordType(rtype).value
    if kind == "PTR":
        target = value.strip()
        if not target.endswith(".") or target == ".":
            raise ValueError(f"PTR target {value!r} must be a fully qualified name (ending with '.')")
    text = canonical_value(kind, value)
    return str(ipaddress.IPv6Address(text)) if kind == "AAAA" else text


if TYPE_CHECKING:
    _port: type[Dns] = PsWindowsDns
    _verification: type[DnsVerification] = WindowsDnsVerification

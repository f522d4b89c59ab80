"""What a Windows DNS server answers to each ``powershell/dns/`` script, computed from the
simulated DNS server of the same name: names relative to the zone as the DnsServer cmdlets take
them, no aging (the simulator keeps no timestamps: every record reads as static), a zone the
server does not hold failing the script as ``Get-DnsServerZone`` does (``WIN32 9601``).

``Set-AgentDnsRecord`` does what the script does: read every set, refuse the whole call when one
holds other values than expected, else change each set on its own (one simulated update per set),
so a fault rule naming one record fails that item only."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from agent.domain.errors import DnsNotAuthoritative
from agent.domain.model import RecordChange, RecordSet, RecordType
from agent.drivers.sim.dns import SimDns
from agent.drivers.sim.dnsnames import canonical_value, fqdn
from agent.errors import AgentError
from tests.remotesim import Call, Handler, ScriptFailed

T = TypeVar("T")


def _server(call: Call) -> tuple[SimDns, str]:
    if call.target.role != "dns":
        raise ScriptFailed("CommandNotFoundException", "Get-DnsServerZone: the DnsServer module is not on this server")
    return call.world.dns(call.target.name), fqdn(call.parameters["ZoneName"])


def _whole(run: Callable[[], T]) -> T:
    try:
        return run()
    except DnsNotAuthoritative as exc:
        raise ScriptFailed("WIN32 9601,Get-DnsServerZone", f"The zone was not found on the server. {exc.message}") \
            from None


def _absolute(name: str, zone: str) -> str:
    return zone if name == "@" else f"{name.lower()}.{zone}"


def _view(name: str, rs: RecordSet | None) -> dict[str, Any] | None:
    if rs is None:
        return None
    return {"name": name, "type": rs.type.value, "ttl": rs.ttl, "timestamp": None, "values": list(rs.values)}


def _item(key: str, *, changed: bool = False, before: Any = None, after: Any = None,
          error: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"key": key, "changed": changed, "before": before, "after": after, "error": error}


def _document(call: Call, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schema": call.script.schema_id, "items": items}


def _read(dns: SimDns, zone: str, wanted: list[dict[str, Any]]) -> dict[str, RecordSet]:
    sets = dns.read(zone, [(_absolute(w["name"], zone), RecordType(w["type"])) for w in wanted])
    return {f"{rs.name} {rs.type.value}": rs for rs in sets}


def get_dns_record(call: Call) -> dict[str, Any]:
    dns, zone = _server(call)
    wanted = json.loads(call.parameters["NamesJson"])
    _whole(lambda: dns.read(zone, []))  # Get-DnsServerZone
    found = _whole(lambda: _read(dns, zone, wanted))
    items = []
    for w in wanted:
        rs = found.get(f"{_absolute(w['name'], zone)} {w['type']}")
        if rs is not None:
            items.append(_item(f"{w['name']}/{w['type']}", after=_view(w["name"], rs)))
    return _document(call, items)


def set_dns_record(call: Call) -> dict[str, Any]:
    dns, zone = _server(call)
    changes = json.loads(call.parameters["ChangesJson"])
    _whole(lambda: dns.read(zone, []))
    found = _whole(lambda: _read(dns, zone, changes))

    def values(c: dict[str, Any], which: str) -> list[str]:
        return sorted({canonical_value(c["type"], v) for v in c[which]})

    pending, mismatched = set(), set()
    for c in changes:
        rs = found.get(f"{_absolute(c['name'], zone)} {c['type']}")
        held = list(rs.values) if rs else []
        new = values(c, "new")
        if (rs is None and not new) or (rs is not None and held == new and rs.ttl == c["ttl"]):
            continue
        pending.add(f"{c['name']}/{c['type']}")
        if held != values(c, "expected"):
            mismatched.add(f"{c['name']}/{c['type']}")
    items = []
    for c in changes:
        key, name = f"{c['name']}/{c['type']}", _absolute(c["name"], zone)
        before = _view(c["name"], found.get(f"{name} {c['type']}"))
        if key not in pending:
            items.append(_item(key, before=before, after=before))
        elif mismatched:
            error = {"id": "Agent.dns_prerequisite_failed", "code": "dns_prerequisite_failed",
                     "message": f"{key} holds other values than expected"} if key in mismatched else None
            items.append(_item(key, before=before, after=before, error=error))
        else:
            change = RecordChange(zone=zone, name=name, type=RecordType(c["type"]), ttl=c["ttl"],
                                  expected=tuple(c["expected"]), new_values=tuple(c["new"]))
            try:
                dns.apply(zone, [change])
            except AgentError as exc:
                # One simulated update per set is atomic: a refused set still holds what it held.
                items.append(_item(key, before=before, after=before, error={
                    "id": f"Agent.{exc.code}", "message": exc.message, "code": exc.code}))
                continue
            after = _read(dns, zone, [c]).get(f"{name} {c['type']}")
            items.append(_item(key, changed=True, before=before, after=_view(c["name"], after)))
    return _document(call, items)


def get_dns_zone_probe(call: Call) -> dict[str, Any]:
    dns, zone = _server(call)
    key = call.parameters["ZoneName"]
    try:
        dns.probe(zone)
    except DnsNotAuthoritative as exc:
        return _document(call, [_item(key, error={"id": "WIN32 9601,Get-DnsServerZone", "code": "dns_not_authoritative",
                                                  "message": f"The zone was not found on the server. {exc.message}"})])
    return _document(call, [_item(key, after={"zone": key, "zone_type": "Primary", "ad_integrated": True,
                                              "dynamic_update": "Secure"})])


HANDLERS: dict[str, Handler] = {
    "Get-AgentDnsRecord": get_dns_record,
    "Set-AgentDnsRecord": set_dns_record,
    "Get-AgentDnsZoneProbe": get_dns_zone_probe,
}

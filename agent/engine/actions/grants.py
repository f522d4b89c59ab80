"""DNS follows what VMM granted, never the plan's guess.

A planned address can be taken between planning and the reserve step (another team, another
plan failing over into the same pool, an operator pausing between groups); VMM then grants
another one, which the reserve step journals. The DNS steps carry, per record, which of its
values are reserved addresses (:class:`agent.engine.steps.AddressSource`); before writing, every
such value is replaced by the journalled grant:

* an A/AAAA record gets the granted address instead of the planned one;
* the PTR of the planned address no longer gains the VM's host name (that address is somebody
  else's now) and the PTR of the granted address gains it instead -- written in the same zone
  step when it falls in that zone, refused for the VM when it does not (no step of this
  operation would put it back on cancel or failback), and pinned to what is there now: a PTR
  holding other names the agent does not manage is reported, not changed.

A value whose grant is not in the journal is never written from the plan: the item fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.domain.errors import DnsRecordNotPlanned
from agent.domain.model import RecordSet
from agent.domain.planning.dns import Zones, ptr_name
from agent.engine.actions.base import ActionContext, error_json
from agent.engine.model import ItemOutcome
from agent.engine.steps import AddressSource, RecordItem

DNS_DEVIATION = "dns.deviation"
"""Audit action of a DNS record written otherwise than the preview said (it follows a grant)."""


@dataclass(frozen=True, slots=True)
class MovedPtr:
    """A host name that goes to the PTR of the granted address instead of the planned one."""

    name: str
    host: str
    vm: str
    ttl: int
    planned: str
    granted: str

    @property
    def key(self) -> str:
        return f"{self.name}/PTR"


@dataclass
class Followed:
    """The batch's items with their grants applied, outcomes of items that are done with (or
    refused), the PTRs that move to another name, and per item key what the preview said."""

    items: list[RecordItem]
    outcomes: list[ItemOutcome] = field(default_factory=list)
    moved: list[MovedPtr] = field(default_factory=list)
    deviations: dict[str, dict[str, Any]] = field(default_factory=dict)


def _source_key(s: AddressSource) -> tuple[str, str, int, str]:
    return (s.vm, s.nic, s.ip_index, s.purpose)


def follow_grants(ctx: ActionContext, items: list[RecordItem]) -> Followed:
    """``items`` with every reserved address replaced by what this operation's reserve step
    journalled for it."""
    sourced = [it for it in items if it.sources]
    if not sourced:
        return Followed(items=items)
    vms = {s.vm for it in sourced for s in it.sources}
    granted = {(r.vm, r.nic, r.ip_index, r.purpose): r.address
               for r in ctx.journal.reservations(operation_id=ctx.op_id, vms=vms)}
    out = Followed(items=[])
    for it in items:
        missing = [s for s in it.sources if _source_key(s) not in granted and s.vm not in ctx.failed_vms]
        if missing:
            s = missing[0]
            out.outcomes.append(ItemOutcome(key=it.key, vm=it.vm, error={
                "code": "not_found", "category": "permanent", "vm": s.vm,
                "message": f"{it.name} {it.type}: no grant of {s.vm}/{s.nic} (IP configuration {s.ip_index}) is "
                           "journalled in this operation; not written from the plan's guess"}))
            continue
        if it.type == "PTR":
            _follow_ptr(it, granted, out)
            continue
        swap = {s.planned: granted[_source_key(s)] for s in it.sources if _source_key(s) in granted}
        new = tuple(sorted({swap.get(v, v) for v in it.new_values}))
        if new != tuple(sorted(it.new_values)):
            out.deviations[it.key] = {"preview": list(it.new_values), "written": list(new)}
            it = it.model_copy(update={"new_values": new})
        out.items.append(it)
    return out


def _follow_ptr(it: RecordItem, granted: dict[tuple[str, str, int, str], str], out: Followed) -> None:
    hosts = set(it.new_values)
    moved = []
    for s in it.sources:
        address = granted.get(_source_key(s))
        if address is None:  # its VM failed earlier: it has no address to name
            hosts.discard(s.host or "")
            continue
        if address != s.planned and s.host:
            hosts.discard(s.host)
            moved.append(MovedPtr(name=ptr_name(address), host=s.host, vm=s.vm, ttl=it.ttl, planned=s.planned,
                                  granted=address))
    out.moved += moved
    new = tuple(sorted(hosts))
    if new == tuple(sorted(it.new_values)):
        out.items.append(it)
        return
    out.deviations[it.key] = {"preview": list(it.new_values), "written": list(new)}
    if set(new) == set(it.old_values):
        # All this PTR was to gain went to another address: leave it as it is.
        out.outcomes.append(ItemOutcome(key=it.key, vm=it.vm, skipped="the address it names was granted to "
                                        "another NIC; the PTR of the granted address is written instead"))
        return
    out.items.append(it.model_copy(update={"new_values": new}))


def moved_ptrs(ctx: ActionContext, server: str, zone: str, moved: list[MovedPtr], batch: list[RecordItem],
               current: dict[tuple[str, str], RecordSet]) -> tuple[list[RecordItem], list[ItemOutcome]]:
    """The items that write the PTRs of granted addresses in ``zone`` (pinned to what the
    server holds now), and the refusals for those that cannot be written here: in another zone
    (no step of this operation would put it back), or a name the ``batch`` already changes."""
    if not moved:
        return [], []
    taken = {it.name for it in batch}
    cfg = ctx.config.dns
    purpose = {s.name: s.purpose for s in cfg.servers}
    zones: dict[str, str] = {}
    for z in cfg.zones:
        if purpose.get(z.server) == purpose.get(server):
            zones.setdefault(z.name, z.server)
    zone_of = Zones(zones)
    managed = ctx.journal.managed_records()
    items: list[RecordItem] = []
    refused: list[ItemOutcome] = []
    for m in moved:
        where = zone_of(m.name)
        if (where, zones.get(where or "")) != (zone, server) or m.name in taken:
            refused.append(ItemOutcome(key=m.key, vm=m.vm, error=error_json(DnsRecordNotPlanned(
                f"VMM granted {m.granted} to {m.vm} instead of {m.planned}; its PTR {m.name} (zone "
                f"{where or 'none configured'}) is not one this step can write besides its planned records in "
                f"{zone}: not written", vm=m.vm, record=m.name, zone=zone))))
            continue
        now = current.get((m.name, "PTR"))
        values = set(now.values) if now is not None else set()
        foreign = sorted(values - {m.host})
        if foreign and (zone, m.name, "PTR") not in managed:
            refused.append(ItemOutcome(key=m.key, vm=m.vm, error={
                "code": "dns_foreign_change", "category": "permanent", "vm": m.vm, "record": m.name, "type": "PTR",
                "zone": zone, "server": server,
                "message": f"VMM granted {m.granted} to {m.vm} instead of {m.planned}; its PTR {m.name} holds "
                           f"{foreign}, data the agent does not manage: not changed"}))
            continue
        items.append(RecordItem(key=m.key, vm=m.vm, name=m.name, type="PTR", ttl=m.ttl,
                                old_values=tuple(sorted(values)), new_values=tuple(sorted(values | {m.host}))))
    return items, refused


def moved_deviation(m: MovedPtr) -> dict[str, Any]:
    """What the step outcome and the audit trail say of a PTR written in place of the preview's."""
    return {"preview_record": ptr_name(m.planned), "planned_address": m.planned, "granted_address": m.granted}

"""Step actions on DNS: write a zone's planned record sets, put them back, give them their TTL
back after commit, and wait out an old TTL.

Every write is pinned to the record set the plan (or the agent's own earlier write) saw: a
record someone else changed meanwhile is reported, never overwritten. Before the first change to
a record set its values and TTL are snapshotted (first write wins) and, once written, what the
agent wrote is recorded beside them, so cleanup, cancel and failback restore the exact original
and can tell the agent's data from anybody else's. After each write the DNS port verifies that
the zone's servers answer it; a lagging server is reported with the step, not failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agent.domain.model import RecordChange, RecordSet, RecordType
from agent.engine.actions.base import ActionContext, action, error_json, log
from agent.engine.actions.grants import DNS_DEVIATION, follow_grants, moved_deviation, moved_ptrs
from agent.engine.model import ItemOutcome, StepResult
from agent.engine.steps import DnsApplyArgs, DnsRestoreArgs, RecordItem, WaitTtlArgs
from agent.engine.store import SnapshotRow, utcnow
from agent.errors import AgentError


def dns_snapshot_key(server: str, zone: str, name: str, rtype: str) -> str:
    """How a DNS record set's snapshot is keyed (apply, restore and failback must agree)."""
    return f"{server}|{zone}|{name}|{rtype}"


def _name_type(key: str) -> tuple[str, str]:
    """(name, type) of a snapshot key made by :func:`dns_snapshot_key`."""
    _, _, name, rtype = key.split("|")
    return name, rtype


def _values(current: RecordSet | None) -> tuple[str, ...]:
    return tuple(sorted(current.values)) if current else ()


def _written_in_zone(ctx: ActionContext, server: str, zone: str, scope: str,
                     keep: Callable[[SnapshotRow], bool]) -> list[tuple[SnapshotRow, str, str, RecordSet | None]]:
    """The record sets operation ``scope`` wrote in ``zone`` (their snapshots, filtered by
    ``keep``), each with what the server holds now: (snapshot, name, type, current or None)."""
    prefix = dns_snapshot_key(server, zone, "", "")[:-1]
    snaps = [s for s in ctx.journal.snapshots(scope=scope, kind="dns")
             if s.key.startswith(prefix) and s.written and keep(s)]
    if not snaps:
        return []
    keys = [_name_type(s.key) for s in snaps]
    dns = ctx.ports.dns[server]
    current = {(r.name, r.type.value): r for r in ctx.call(
        f"dns.read@{server}", lambda: dns.read(zone, [(n, RecordType(t)) for n, t in keys]))}
    return [(snap, name, rtype, current.get((name, rtype))) for snap, (name, rtype) in zip(snaps, keys, strict=True)]


def _send(ctx: ActionContext, server: str, zone: str, changes: list[RecordChange]) -> dict[str, Any] | None:
    """One atomic update of ``zone``. Transient errors propagate (the runner retries the step);
    a permanent refusal is returned as the error of every change in it."""
    try:
        ctx.call(f"dns.apply@{server}", lambda: ctx.ports.dns[server].apply(zone, changes))
    except AgentError as exc:
        if exc.transient:
            raise
        return error_json(exc)
    return None


def _verify(ctx: ActionContext, server: str, zone: str, changes: list[RecordChange]) -> dict[str, Any]:
    """What the zone's servers answer after an update, for the step's record. A verification
    that fails is reported the same way: the update itself is in place."""
    info: dict[str, Any] = {}
    try:
        report = ctx.ports.dns[server].verify(zone, changes)
    except AgentError as exc:
        log.warning("could not verify a DNS update", zone=zone, server=server, code=exc.code, error=exc.message)
        return {"verification": {"zone": zone, "ok": False, "error": error_json(exc)}}
    if report is not None:
        if not report.ok:
            log.warning("DNS servers lag behind the update", zone=zone, server=server, summary=report.summary())
        info["verification"] = report.to_dict()
    return info


def _foreign_change(zone: str, server: str, name: str, rtype: str, message: str) -> dict[str, Any]:
    return {"code": "dns_foreign_change", "category": "permanent", "message": message,
            "zone": zone, "record": name, "type": rtype, "server": server}


@action("dns.apply", DnsApplyArgs)
def apply(ctx: ActionContext, args: DnsApplyArgs) -> StepResult:
    """Write the planned record sets of one zone in one atomic batch, pinned to what is there.

    A record set that already holds the new values is left alone (idempotent). One that holds
    neither the planned old values nor the new ones was changed by someone else since planning:
    it is reported, never clobbered. What was there first is snapshotted for cleanup/failback.
    """
    server, zone = args.server, args.zone
    dns = ctx.ports.dns[server]
    items, skipped = ctx.live(args.items)
    if not items:
        return StepResult(items=skipped)
    followed = follow_grants(ctx, items)
    items = followed.items
    if not items and not followed.moved:
        return StepResult(items=list(skipped) + followed.outcomes)
    names = [(it.name, RecordType(it.type)) for it in items] + [
        (m.name, RecordType.PTR) for m in followed.moved if m.name.endswith("." + zone)]
    current = {(r.name, r.type.value): r for r in ctx.call(f"dns.read@{server}", lambda: dns.read(zone, names))}
    added, refused_moves = moved_ptrs(ctx, server, zone, followed.moved, items, current)
    items += added
    deviations = followed.deviations | {m.key: moved_deviation(m) for m in followed.moved}
    done: list[ItemOutcome] = list(skipped) + followed.outcomes + refused_moves
    snaps: dict[str, Any] = {}
    in_place: set[str] = set()
    for it in items:
        now = current.get((it.name, it.type))
        key = dns_snapshot_key(server, zone, it.name, it.type)
        snaps.setdefault(key, {"values": list(_values(now)), "ttl": now.ttl if now else None})
        if _holds(now, it.ttl, tuple(sorted(it.new_values))):
            in_place.add(key)
    # Durable before the write it guards; the originals are read only of the sets already in
    # place (a re-run may find its own earlier write there), not of every set just snapshotted.
    originals = ctx.journal.snapshot_originals(scope=ctx.op_id, kind="dns", data=snaps, wanted=in_place)
    marks = _Marks()
    changes, pending = [], []
    for it in items:
        now = current.get((it.name, it.type))
        now_values = _values(now)
        new = tuple(sorted(it.new_values))
        if _holds(now, it.ttl, new):
            first = originals.get(dns_snapshot_key(server, zone, it.name, it.type))
            if first is not None and (tuple(first["values"]) != now_values
                                      or (new and now is not None and first["ttl"] != now.ttl)):
                # This operation wrote it and was cut off before journalling that: record it now,
                # or a later restore would not know the record is the agent's to put back.
                marks.add(zone, it.name, it.type, {"values": list(new), "ttl": it.ttl})
            done.append(ItemOutcome(key=it.key, vm=it.vm))
            continue
        if now_values != tuple(sorted(it.old_values)) and not it.force:
            done.append(ItemOutcome(key=it.key, vm=it.vm, error=_foreign_change(
                zone, server, it.name, it.type,
                f"{it.name} {it.type} holds {list(now_values)} but the plan expected {list(it.old_values)}: "
                "changed by someone else since planning; not overwritten")))
            continue
        changes.append(RecordChange(zone=zone, name=it.name, type=RecordType(it.type), ttl=it.ttl,
                                    expected=now_values, new_values=new))
        pending.append(it)
    # Whatever happens to the write, what is the agent's is journalled after it, all in one
    # transaction: the sets found in place (even when the write then fails) and those written.
    written: list[tuple[RecordItem, RecordChange]] | None = []
    try:
        if changes:
            written = _write(ctx, server, zone, changes, pending, done)
        for it, ch in written or []:
            marks.add(zone, ch.name, ch.type.value, {"values": list(ch.new_values), "ttl": ch.ttl})
            if it.key in deviations:
                # The step's ports audit each write; what differs from the preview is recorded beside it.
                marks.audit.append((f"{server}/{it.name}/{it.type}", {
                    "new": list(ch.new_values), **{k: v for k, v in deviations[it.key].items() if k != "written"}}))
    finally:
        ctx.journal.mark_written(
            scope=ctx.op_id, kind="dns", managed=marks.managed, audit=(ctx.owner, DNS_DEVIATION, marks.audit),
            written={dns_snapshot_key(server, zone, n, t): v for (n, t), v in marks.written.items()})
    if not changes:
        return _with_deviations(StepResult(items=done), deviations)
    if written is None:
        return StepResult(items=done)
    done += [ItemOutcome(key=it.key, vm=it.vm, changed=True) for it, _ in written]
    # Verified only once the write is journalled: a crash while waiting on a slow secondary must
    # not leave the agent unsure whose record it is.
    return _with_deviations(StepResult(items=done, info=_verify(ctx, server, zone, changes)), deviations)


@dataclass
class _Marks:
    """What a DNS step journals as the agent's after its write: per (name, type) what it wrote,
    the record sets it now manages, and the audit records of writes that differ from the preview."""

    written: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    managed: list[tuple[str, str, str]] = field(default_factory=list)
    audit: list[tuple[str | None, Any]] = field(default_factory=list)

    def add(self, zone: str, name: str, rtype: str, value: dict[str, Any]) -> None:
        self.written[(name, rtype)] = value
        self.managed.append((zone, name, rtype))


def _write(ctx: ActionContext, server: str, zone: str, changes: list[RecordChange], pending: list[RecordItem],
           done: list[ItemOutcome]) -> list[tuple[RecordItem, RecordChange]] | None:
    """Send the zone's batch: the (item, change) pairs in effect after it, or None when none is
    (the refusal is then each pending item's outcome, added to ``done``)."""
    refused = _send(ctx, server, zone, changes)
    written = list(zip(pending, changes, strict=True))
    if refused is None:
        return written
    if refused.get("code") != "dns_batch_failed":
        done += [ItemOutcome(key=it.key, vm=it.vm, error=refused) for it in pending]
        return None
    # Part of the batch failed, and what succeeded stays applied (the port's promise): what
    # the zone holds now decides which sets are the agent's to put back. Journalling them
    # all as unwritten left a cleanup that did not restore the ones in effect.
    dns = ctx.ports.dns[server]
    after = {(r.name, r.type.value): r for r in ctx.call(
        f"dns.read@{server}", lambda: dns.read(zone, [(ch.name, ch.type) for ch in changes]))}
    held = [(it, ch) for it, ch in written
            if _holds(after.get((ch.name, ch.type.value)), ch.ttl, tuple(ch.new_values))]
    done += [ItemOutcome(key=it.key, vm=it.vm, error=refused) for it, ch in written if (it, ch) not in held]
    return held or None


def _holds(now: RecordSet | None, ttl: int, new_values: tuple[str, ...]) -> bool:
    """Whether a record set read holds ``new_values`` (sorted), and ``ttl`` when it holds any."""
    return _values(now) == new_values and (not new_values or (now is not None and now.ttl == ttl))


def _with_deviations(result: StepResult, deviations: dict[str, dict[str, Any]]) -> StepResult:
    """Each record written otherwise than the preview said (it follows a grant) says so in its outcome."""
    for out in result.items:
        if out.key in deviations and out.error is None:
            out.value = deviations[out.key]
    return result


@action("dns.restore", DnsRestoreArgs)
def restore(ctx: ActionContext, args: DnsRestoreArgs) -> StepResult:
    """Put back the record sets operation ``scope`` changed in one zone, exactly (values and
    TTL), pinned to what the agent wrote: a record someone changed since is reported, not
    clobbered."""
    server, zone = args.server, args.zone
    done, changes, pending = [], [], []
    for snap, name, rtype, now in _written_in_zone(ctx, server, zone, args.scope, keep=lambda s: True):
        now_values = _values(now)
        original = tuple(sorted(snap.data["values"]))
        key = f"{name}/{rtype}"
        if now_values == original and (not original or (now is not None and now.ttl == snap.data["ttl"])):
            done.append(ItemOutcome(key=key))
            continue
        if now_values != tuple(sorted(snap.written["values"])):
            done.append(ItemOutcome(key=key, error=_foreign_change(
                zone, server, name, rtype,
                f"{name} {rtype} holds {list(now_values)}, not what the agent wrote ({snap.written['values']}): "
                "changed by someone else; not restored")))
            continue
        changes.append(RecordChange(zone=zone, name=name, type=RecordType(rtype),
                                    ttl=snap.data["ttl"] if snap.data["ttl"] is not None else 0,
                                    expected=now_values, new_values=original))
        pending.append(key)
    if not changes:
        return StepResult(items=done)
    refused = _send(ctx, server, zone, changes)
    if refused is not None:
        return StepResult(items=done + [ItemOutcome(key=k, error=refused) for k in pending])
    done += [ItemOutcome(key=k, changed=True) for k in pending]
    return StepResult(items=done, info=_verify(ctx, server, zone, changes))


@action("dns.restore_ttl", DnsRestoreArgs)
def restore_ttl(ctx: ActionContext, args: DnsRestoreArgs) -> StepResult:
    """After commit: the records a failover wrote with the low failover TTL get their normal TTL
    back (values unchanged), pinned to what the agent wrote: a record that existed its own TTL, a
    PTR that moved (the VM's host name left one address's PTR for another's) the TTL of the PTR
    it replaces, any other new record ``dns.ttl.record_ttl``."""
    server, zone = args.server, args.zone
    low = ctx.config.dns.ttl.failover_ttl
    committed = _committed_ttls(ctx, args.scope)
    lowered = _written_in_zone(ctx, server, zone, args.scope, keep=lambda s: bool(
        s.written["values"] and s.written["ttl"] == low and committed(s) != low))
    done, changes, pending = [], [], []
    for snap, name, rtype, now in lowered:
        key = f"{name}/{rtype}"
        written = tuple(sorted(snap.written["values"]))
        if now is None or tuple(sorted(now.values)) != written:
            done.append(ItemOutcome(key=key, skipped="changed since the failover wrote it; TTL left alone"))
            continue
        ttl = committed(snap)
        if now.ttl == ttl:
            done.append(ItemOutcome(key=key))
            continue
        changes.append(RecordChange(zone=zone, name=name, type=RecordType(rtype), ttl=ttl,
                                    expected=written, new_values=written))
        pending.append(key)
    if changes:
        refused = _send(ctx, server, zone, changes)
        if refused is not None:
            return StepResult(items=done + [ItemOutcome(key=k, error=refused) for k in pending])
        ctx.journal.audit_many(actor=ctx.owner, action="dns.restore_ttl", operation_id=ctx.op_id, entries=[
            (f"{server}/{ch.name}/{ch.type.value}", {"values": list(ch.new_values), "from_ttl": low, "ttl": ch.ttl})
            for ch in changes])
        done += [ItemOutcome(key=k, changed=True) for k in pending]
    return StepResult(items=done)


def _committed_ttls(ctx: ActionContext, scope: str) -> Callable[[SnapshotRow], int]:
    """The TTL a record operation ``scope`` wrote gets at commit (see :func:`restore_ttl`)."""
    replaced: dict[str, int] = {}
    for s in ctx.journal.snapshots(scope=scope, kind="dns"):
        if s.written is not None and s.data["ttl"] is not None and _name_type(s.key)[1] == "PTR":
            for host in set(s.data["values"]) - set(s.written["values"]):
                replaced.setdefault(host, s.data["ttl"])
    default = ctx.config.dns.ttl.record_ttl

    def ttl(snap: SnapshotRow) -> int:
        if snap.data["ttl"] is not None:
            return int(snap.data["ttl"])
        if _name_type(snap.key)[1] == "PTR":
            moved = [replaced[h] for h in sorted(snap.written["values"]) if h in replaced]
            if moved:
                return moved[0]
        return default

    return ttl


@action("dns.wait_ttl", WaitTtlArgs)
def wait_ttl(ctx: ActionContext, args: WaitTtlArgs) -> StepResult:
    """Wait out the old TTL after lowering it, so no resolver still caches the old answer for
    longer than the new TTL. The deadline is journalled on the first attempt, so a restarted
    agent waits only for what is left."""
    ctx.journal.snapshot(scope=ctx.op_id, kind="deadline", key=args.key,
                         data=(utcnow() + timedelta(seconds=args.seconds)).isoformat())
    deadline = datetime.fromisoformat(next(s.data for s in ctx.journal.snapshots(scope=ctx.op_id, kind="deadline")
                                           if s.key == args.key))
    left = (deadline - utcnow()).total_seconds()
    if left > 0:
        log.info("waiting out the old DNS TTL", operation=ctx.op_id, seconds=round(left, 1))
        ctx.sleep(left)
    return StepResult(info={"waited_s": max(0.0, round(left, 3)), "ttl_s": args.seconds})


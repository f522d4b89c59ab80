"""The periodic preflight: what would fail if a recovery plan were run now, found before a
disaster rather than during one.

Every ``policies.preflight_interval`` the leader's scheduler (:mod:`agent.scheduler`) runs
:func:`run_preflight`, which only reads -- the sites through the engine's ports, the journal --
and records nothing but its report:

* **plans**: every recovery plan is planned for the kinds that apply to it now (test failover,
  planned failover, failback; per its state, :func:`agent.engine.planstate.kinds_allowed`) as
  ``Engine.preview`` plans them. Each refusal is one problem with the planner's code (an
  exhausted pool is ``pool_exhausted``, naming the pool; a test network that cannot work, a
  missing replica ...), so is any other planning error (a site that does not answer) and a DNS
  record the plan would change that holds data the agent does not manage
  (``dns_record_not_managed``: the operation would be refused when created);
* **reservations**: every address the journal says the agent holds must be granted in VMM to
  the same NIC (``reservation_missing``, ``reservation_differs``), and every grant in VMM that
  carries the agent's marker must be one the journal holds (``reservation_unrecorded``);
* **DNS**: every record set the agent wrote and has not put back since must still hold what it
  wrote (``dns_record_changed``): someone changed it behind the agent's back, and a cleanup or
  failback would refuse to restore it.

The report is kept in the store as the audit event ``preflight.report`` (:func:`latest_report`
reads the last one, for ``GET /v1/preflight``) and handed to ``on_problems`` when it has any.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select

from agent.domain.model import RecordType
from agent.domain.validation import PlanRefused
from agent.engine.model import OperationKind
from agent.engine.planstate import kinds_allowed
from agent.engine.retrying import retrying_ports
from agent.engine.store import AuditRow, OperationRow, SnapshotRow, utcnow
from agent.errors import AgentError

if TYPE_CHECKING:
    from agent.engine.service import Engine
    from agent.engine.store import Store

log = structlog.get_logger("agent.preflight")

REPORT_ACTION = "preflight.report"
ACTOR = "scheduler"

PLANNED_KINDS = (OperationKind.TEST_FAILOVER, OperationKind.PLANNED_FAILOVER, OperationKind.FAILBACK)
"""The kinds planned from live inventory whose plan can fail: the others follow a stored plan."""

RESERVATION_MISSING = "reservation_missing"
RESERVATION_DIFFERS = "reservation_differs"
RESERVATION_UNRECORDED = "reservation_unrecorded"
DNS_RECORD_CHANGED = "dns_record_changed"

_IN_PROGRESS = frozenset({"pending", "running"})
"""An operation at work now: what it writes is not yet what it will leave."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing that would fail (or has drifted): ``plan`` and ``kind`` it concerns (None when
    it is not one plan's, or not one kind's), a stable ``code``, a sentence, and ``where`` (the
    pool, the address, the record) for an operator to look."""

    plan: str | None
    kind: str | None
    code: str
    message: str
    where: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "kind": self.kind, "code": self.code, "message": self.message,
                "where": self.where}


@dataclass(frozen=True)
class PreflightReport:
    at: datetime
    plans: tuple[str, ...]
    """Every recovery plan checked."""
    problems: tuple[Problem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "ok": self.ok, "plans": list(self.plans),
                "problems": [p.to_dict() for p in self.problems]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreflightReport:
        return cls(at=datetime.fromisoformat(d["at"]), plans=tuple(d["plans"]),
                   problems=tuple(Problem(**p) for p in d["problems"]))


# ----------------------------------------------------------------------------- running


def run_preflight(engine: Engine) -> PreflightReport:
    """Check every recovery plan, the agent's reservations and its DNS records (see the module).
    Reads only; records nothing (:func:`record` keeps the report)."""
    problems: list[Problem] = []
    plans = [p.name for p in engine.config.recovery_plans]
    for name in plans:
        problems += _plan_problems(engine, name)
    problems += _reservation_problems(engine)
    problems += _dns_problems(engine)
    return PreflightReport(at=utcnow(), plans=tuple(plans), problems=tuple(problems))


def _plan_problems(engine: Engine, plan: str) -> list[Problem]:
    status = engine.status(plan)  # a site that cannot be read is in its stale list, not raised
    out: list[Problem] = []
    allowed = kinds_allowed(status, full_mode=engine.config.agent.mode == "full")
    for kind in PLANNED_KINDS:
        if kind.value not in allowed:
            continue  # not a next step from where the plan stands: nothing to plan
        try:
            planned = engine.preview(kind, plan, strict=True)
            # Creating the operation would refuse a plan that changes DNS data the agent does not
            # manage; without take-over this check only reads.
            engine._check_dns_ownership(planned, take_over=False, actor=ACTOR)
        except PlanRefused as exc:
            out += [Problem(plan, kind.value, r.code, r.message, _where(r.fields)) for r in exc.reasons]
        except AgentError as exc:
            out.append(Problem(plan, kind.value, exc.code, exc.message, _where(exc.fields)))
    return out


def _where(fields: dict[str, Any]) -> str:
    """The place a refusal is about, from its structured fields (pool at site, a VM ...)."""
    parts = [str(fields[k]) for k in ("site", "host", "server", "router", "pool", "vm_network", "vm", "nic", "prefix")
             if isinstance(fields.get(k), str) and fields[k]]
    return "/".join(parts)


def _plans_of(engine: Engine) -> dict[str, str]:
    """VM -> the first recovery plan naming it."""
    out: dict[str, str] = {}
    for plan in engine.config.recovery_plans:
        for group in plan.groups:
            for vm in group.vms:
                out.setdefault(vm, plan.name)
    return out


def _reservation_problems(engine: Engine) -> list[Problem]:
    ports = retrying_ports(engine.ports, engine.config.policies.retry, engine.runner.sleep)
    held = engine.journal.reservations(held=True)
    busy = {op.id for op in engine.journal.operations(status=_IN_PROGRESS, limit=10_000)}
    plan_of = _plans_of(engine)
    marker = f"{engine.config.agent.owner_id} op="
    out: list[Problem] = []
    for site in engine.config.sites:
        try:
            grants = ports.vmm[site.name].read_inventory().grants
        except AgentError as exc:
            out.append(Problem(None, None, exc.code, f"VMM at {site.name} could not be read to check the agent's "
                                                     f"reservations: {exc.message}", site.name))
            continue
        in_vmm = {(g.pool, g.address): g for g in grants}
        mine = [r for r in held if r.site == site.name]
        journalled = {(r.pool, r.address) for r in mine}
        for r in mine:
            if r.operation_id in busy:
                continue
            where = f"{site.name}/{r.pool}/{r.address}"
            whose = f"{r.vm}/{r.nic} ({r.purpose}, {r.operation_id})"
            grant = in_vmm.get((r.pool, r.address))
            if grant is None:
                out.append(Problem(plan_of.get(r.vm), None, RESERVATION_MISSING,
                                   f"the agent's reservation of {r.address} in pool {r.pool} at {site.name} for "
                                   f"{whose} is no longer in VMM", where))
            elif grant.owner_id != r.owner_id:
                out.append(Problem(plan_of.get(r.vm), None, RESERVATION_DIFFERS,
                                   f"{r.address} in pool {r.pool} at {site.name}, reserved by the agent for {whose}, "
                                   f"is now granted to {grant.owner_id} in VMM", where))
        for g in grants:
            if g.description.startswith(marker) and (g.pool, g.address) not in journalled \
                    and not any(f"op={op} " in g.description for op in busy):
                out.append(Problem(_vm_plan(g.description, plan_of), None, RESERVATION_UNRECORDED,
                                   f"{g.address} in pool {g.pool} at {site.name} carries the agent's marker "
                                   f"({g.description}) but the journal does not hold it",
                                   f"{site.name}/{g.pool}/{g.address}"))
    return out


def _vm_plan(description: str, plan_of: dict[str, str]) -> str | None:
    words = dict(w.split("=", 1) for w in description.split() if "=" in w)
    return plan_of.get(words.get("vm", ""))


def _undone(ops: Iterable[OperationRow]) -> set[str]:
    """Operations whose DNS writes were put back (cancelled: undone; a test failover a cleanup
    took over) or are still being made: not what the records must hold now."""
    ops = list(ops)
    out = {op.id for op in ops if op.status == "cancelled" or op.status in _IN_PROGRESS}
    out |= {op.parent_id for op in ops
            if op.kind == OperationKind.CLEANUP_TEST.value and op.parent_id and op.status != "cancelled"}
    return out


def _dns_problems(engine: Engine) -> list[Problem]:
    ops = {op.id: op for op in engine.journal.operations(limit=100_000)}
    undone = _undone(ops.values())
    with engine.store.session() as s:
        snaps = list(s.scalars(select(SnapshotRow).where(SnapshotRow.kind == "dns").order_by(SnapshotRow.id)))
    latest: dict[str, SnapshotRow] = {}
    for snap in snaps:
        if snap.written is not None and snap.scope in ops:
            latest[snap.key] = snap  # the last operation to write a record set says what it holds
    by_zone: dict[tuple[str, str], list[tuple[str, str, SnapshotRow]]] = defaultdict(list)
    for key, snap in latest.items():
        server, zone, name, rtype = key.split("|")
        if snap.scope not in undone and server in engine.ports.dns:
            by_zone[(server, zone)].append((name, rtype, snap))
    ports = retrying_ports(engine.ports, engine.config.policies.retry, engine.runner.sleep)
    out: list[Problem] = []
    for (server, zone), wanted in sorted(by_zone.items()):
        try:
            found = ports.dns[server].read(zone, [(n, RecordType(t)) for n, t, _ in wanted])
        except AgentError as exc:
            out.append(Problem(None, None, exc.code, f"DNS server {server} could not be read to check the records "
                                                     f"the agent wrote in {zone}: {exc.message}", f"{server}/{zone}"))
            continue
        now = {(r.name, r.type.value): sorted(r.values) for r in found}
        for name, rtype, snap in wanted:
            written, holds = sorted(snap.written["values"]), now.get((name, rtype), [])
            if written == holds:
                continue
            op = ops[snap.scope]
            out.append(Problem(op.plan_name, op.kind, DNS_RECORD_CHANGED,
                               f"{name} {rtype} at {server} holds {holds or 'nothing'}, not what the agent wrote "
                               f"({written or 'nothing'}, {op.kind} {op.id}): changed behind its back",
                               f"{server}/{name}/{rtype}"))
    return out


# ----------------------------------------------------------------------------- keeping


def record(store: Store, report: PreflightReport) -> None:
    store.audit(actor=ACTOR, action=REPORT_ACTION, details=report.to_dict())


def latest_report(store: Store) -> PreflightReport | None:
    """The last report recorded (``GET /v1/preflight``); None before the first."""
    with store.session() as s:
        details = s.scalars(select(AuditRow.details).where(AuditRow.action == REPORT_ACTION)
                            .order_by(AuditRow.id.desc()).limit(1)).first()
    return PreflightReport.from_dict(details) if details else None


def run_and_record(engine: Engine, *, on_problems: Callable[[PreflightReport], None] | None = None
                   ) -> PreflightReport:
    """The scheduler's job: run, keep the report, log it, and hand it on when it has problems."""
    report = run_preflight(engine)
    record(engine.store, report)
    if report.ok:
        log.info("preflight: no problems", plans=len(report.plans))
    else:
        log.warning("preflight found problems", plans=len(report.plans), problems=len(report.problems),
                    codes=sorted({p.code for p in report.problems}))
        if on_problems is not None:
            on_problems(report)
    return report


__all__ = ["Problem", "PreflightReport", "latest_report", "record", "run_and_record",
           "run_preflight"]

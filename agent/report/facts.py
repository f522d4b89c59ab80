"""The facts of a drill report, read from the store: what ran, when, what it changed, what went
wrong, who confirmed what. Pure reading -- no site is contacted, nothing is written, no lease is
needed -- so a report can be made while a ``serve`` leader runs, and from a store alone.

Achieved recovery time (:data:`RECOVERY_DEFINITION`) is measured on the journal's own clock:

* the operation's **start** is when it was recorded (``operations.created_at``): the moment the
  failover was asked for, before any step ran;
* a **group's recovery time** runs from that start to the end of the group's last step (its VMs
  started at the recovery site, their failover addresses set, their DNS records and routes
  moved, its scripts and manual checks done). Known only once every step of the group ended
  well (succeeded, or skipped by the error policy);
* the **operation's achieved recovery time** runs from that start to the end of the last step of
  its recovery-plan groups -- groups run in order, so: when the last group was back. Known only
  when the operation ended ``succeeded`` or ``partially_succeeded`` (then it is the time of the
  VMs that came back; the ones that did not are named). Manual pauses count: a real recovery
  waits for them too, and the time spent waiting is given beside it. Steps of no group (a test
  network made first) count only when the plan has no group at all.

Only failovers bring VMs up (test, planned, unplanned failover, failback); for the other kinds
no recovery time is given, and the report says why.

Follow-ups: a report lists the operations that follow this one up (a test failover's cleanup, a
failover's commit or reverse: ``parent_id``) with their status and every change they made -- the
evidence that a drill was cleaned up belongs with the drill. One level: a follow-up's own
follow-ups are in its own report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from agent.engine.journal import Journal
from agent.engine.model import OperationKind, OpStatus, StepStatus
from agent.engine.store import AuditRow, StepRow, Store, utcnow
from agent.engine.storecheck import audit_entries, children, read_operation

RECOVERY_KINDS = frozenset({OperationKind.TEST_FAILOVER.value, OperationKind.PLANNED_FAILOVER.value,
                            OperationKind.UNPLANNED_FAILOVER.value, OperationKind.FAILBACK.value})
"""The kinds that bring VMs up at the recovery site, and so have a recovery time."""

RECOVERY_DEFINITION = (
    "Achieved recovery time: from the operation's start (when it was recorded) to the end of the last "
    "step of its last recovery-plan group -- that group's VMs started at the recovery site, their failover "
    "addresses set, DNS records and routes moved, its scripts and manual checks done. A group's recovery "
    "time runs from the same start to the end of that group's last step, once all its steps ended well. "
    "Given only for an operation that succeeded (or partially succeeded: then for the VMs that came back); "
    "manual pauses are included, and their total is shown beside it.")

PLAN_WIDE = "(plan-wide)"
"""The group name shown for steps that belong to no group (test networks, DNS restores ...)."""

_DONE = frozenset({StepStatus.SUCCEEDED.value, StepStatus.SKIPPED.value})
_MAX_AUDIT = 1_000_000


@dataclass(frozen=True, slots=True)
class ErrorFact:
    step: str
    code: str
    message: str
    target: str | None
    vm: str | None


@dataclass(frozen=True, slots=True)
class StepFact:
    ordinal: int
    name: str
    group: str
    action: str
    target: str | None
    status: str
    attempts: int
    items: int
    changed: int
    started_at: datetime | None
    finished_at: datetime | None
    errors: list[ErrorFact]
    instruction: str | None = None
    """For a manual step: what the operator was asked to do."""
    confirmed_by: str | None = None
    """For a manual step: who said it was done."""

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class GroupFact:
    name: str
    vms: list[str]
    status: str
    """``succeeded`` when every step ended well, else the first step status that did not."""
    started_at: datetime | None
    finished_at: datetime | None
    recovery_time_s: float | None
    """From the operation's start to the end of the group's last step (None: not all ended well)."""
    manual_wait_s: float
    steps: list[StepFact]


@dataclass(frozen=True, slots=True)
class AddressFact:
    """One IP configuration of a VM: what it had at the source and what it got at the target."""

    vm: str
    group: str | None
    nic: str
    ip_configuration: int
    purpose: str
    """``failover`` or ``test``."""
    site: str
    pool: str
    before: str | None
    """The address at the source site."""
    planned: str | None
    granted: str | None
    """What VMM granted (None: not reserved, see ``problem``)."""
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class ChangeFact:
    """A change made to an outside system, as the audit trail records it."""

    operation_id: str
    at: datetime
    actor: str
    step: str | None
    action: str
    category: str
    target: str | None
    before: Any
    after: Any
    result: str
    error: str | None
    note: str | None


@dataclass(frozen=True, slots=True)
class ScriptRun:
    step: str
    host: str
    path: str
    succeeded: bool
    error: str | None
    duration_s: float
    parameters: dict[str, Any]
    stdout: str
    stderr: str
    stdout_truncated: dict[str, int] | None
    stderr_truncated: dict[str, int] | None


@dataclass(frozen=True, slots=True)
class EventFact:
    """An operator action or lifecycle event of the audit trail (create, resume, note ...)."""

    at: datetime
    actor: str
    action: str
    target: str | None
    details: Any


@dataclass(frozen=True, slots=True)
class NoteFact:
    at: datetime
    author: str
    text: str


@dataclass(frozen=True, slots=True)
class FollowUp:
    id: str
    kind: str
    status: str
    created_at: datetime | None
    finished_at: datetime | None
    changes: list[ChangeFact]
    errors: list[ErrorFact]


@dataclass(frozen=True, slots=True)
class DrillReport:
    """Every fact of one operation's report; rendered by :mod:`agent.report.render`."""

    id: str
    kind: str
    plan: str
    status: str
    mode: str
    error_policy: str
    source_site: str
    target_site: str
    requested_by: str
    plan_checksum: str | None
    plan_summary: str | None
    plan_notes: list[str]
    parent_id: str | None
    created_at: datetime
    finished_at: datetime | None
    generated_at: datetime
    elapsed_s: float
    """From the start to the end (or to ``generated_at`` while it is unfinished)."""
    recovery_time_s: float | None
    recovery_note: str
    """Why no recovery time is given, or which VMs it does not cover; empty when it is complete."""
    manual_wait_s: float
    vms_done: list[str]
    vms_failed: list[str]
    groups: list[GroupFact]
    addresses: list[AddressFact]
    changes: list[ChangeFact]
    scripts: list[ScriptRun]
    errors: list[ErrorFact]
    events: list[EventFact]
    notes: list[NoteFact]
    follow_ups: list[FollowUp]
    unreadable: list[str] = field(default_factory=list)
    """Audit entries that cannot be read (damaged rows), named; they are left out, not guessed."""

    @property
    def steps(self) -> list[StepFact]:
        return sorted((s for g in self.groups for s in g.steps), key=lambda s: s.ordinal)

    @property
    def confirmations(self) -> list[StepFact]:
        """The manual steps an operator confirmed."""
        return [s for s in self.steps if s.confirmed_by]

    def to_json(self) -> dict[str, Any]:
        """The facts as JSON-ready values (times as ISO 8601 text)."""
        return _jsonable(asdict(self))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


# ------------------------------------------------------------------------------ reading


def build_report(store: Store, op_id: str, *, now: datetime | None = None) -> DrillReport:
    """The report of operation ``op_id`` (its whole id), read from ``store``.

    Raises ``agent.errors.NotFoundError`` (code ``not_found``) for an id the store does not hold,
    and ``agent.engine.storecheck.UnreadableOperation`` naming the cells when the operation's
    rows cannot be read. ``now`` (default: the clock) ends the elapsed time of an unfinished
    operation."""

    journal = Journal(store)
    view, row = read_operation(store, op_id, lambda: (journal.view(op_id), journal.operation(op_id)))
    steps = read_operation(store, op_id, lambda: journal.steps(op_id))
    now = now or utcnow()
    rows, bad = audit_entries(store, op_id, _MAX_AUDIT)
    plan = row.plan or {}
    vm_group = {v["name"]: v.get("group") for v in plan.get("vms", [])}

    facts = [_step(s) for s in steps]
    groups = _groups(facts, vm_group, row.created_at)
    recovery, recovery_note = _recovery(row.kind, row.status, groups, row.created_at, view.failed_vms)
    changes = [_change(a) for a in rows if a.key is not None]
    return DrillReport(
        id=row.id, kind=row.kind, plan=row.plan_name, status=row.status, mode=row.mode,
        error_policy=row.error_policy, source_site=row.source_site, target_site=row.target_site,
        requested_by=row.requested_by, plan_checksum=row.plan_checksum, plan_summary=plan.get("summary"),
        plan_notes=[str(n) for n in plan.get("notes", [])], parent_id=row.parent_id,
        created_at=row.created_at, finished_at=row.finished_at, generated_at=now,
        elapsed_s=((row.finished_at or now) - row.created_at).total_seconds(),
        recovery_time_s=recovery, recovery_note=recovery_note,
        manual_wait_s=sum(g.manual_wait_s for g in groups),
        vms_done=view.succeeded_vms, vms_failed=view.failed_vms, groups=groups,
        addresses=_addresses(plan, steps, vm_group), changes=changes, scripts=_scripts(steps),
        errors=[e for s in facts for e in s.errors],
        events=[EventFact(at=a.at, actor=a.actor, action=a.action, target=a.target, details=a.details)
                for a in rows if a.key is None],
        notes=[NoteFact(at=n.created_at, author=n.author, text=n.text) for n in journal.notes(op_id)],
        follow_ups=[_follow_up(store, journal, child) for child, _, _ in children(store, op_id)],
        unreadable=[str(c) for c in bad],
    )


def _error(step: str, target: str | None, e: dict[str, Any]) -> ErrorFact:
    return ErrorFact(step=step, code=str(e.get("code", "error")), message=str(e.get("message", "")),
                     target=e.get("target") or target, vm=e.get("vm"))


def _step(r: StepRow) -> StepFact:
    outcome = r.outcome or {}
    items = outcome.get("items", [])
    manual = r.action == "manual"
    return StepFact(
        ordinal=r.ordinal, name=r.name, group=r.group_name or PLAN_WIDE, action=r.action, target=r.target,
        status=r.status, attempts=r.attempts, items=len(items), changed=sum(1 for it in items if it.get("changed")),
        started_at=r.started_at, finished_at=r.finished_at,
        errors=[_error(r.name, r.target, e) for e in (r.errors or []) if isinstance(e, dict)],
        instruction=outcome.get("waiting") if manual else None,
        confirmed_by=outcome.get("resumed_by") if manual else None)


def _groups(steps: list[StepFact], vm_group: dict[str, str | None], start: datetime) -> list[GroupFact]:
    order: dict[str, list[StepFact]] = {}
    for s in steps:
        order.setdefault(s.group, []).append(s)
    out = []
    for name, members in order.items():
        began = [s.started_at for s in members if s.started_at]
        ended = [s.finished_at for s in members if s.finished_at]
        unfinished = [s.status for s in members if s.status not in _DONE]
        finished_at = max(ended) if ended else None
        out.append(GroupFact(
            name=name, vms=[vm for vm, g in vm_group.items() if g == name],
            status=unfinished[0] if unfinished else StepStatus.SUCCEEDED.value,
            started_at=min(began) if began else None, finished_at=finished_at,
            recovery_time_s=(finished_at - start).total_seconds() if finished_at and not unfinished else None,
            manual_wait_s=sum(s.duration_s or 0.0 for s in members if s.action == "manual"),
            steps=members))
    return out


def _recovery(kind: str, status: str, groups: list[GroupFact], start: datetime,
              failed: list[str]) -> tuple[float | None, str]:
    """(achieved recovery time, what to say about it): see the module."""
    if kind not in RECOVERY_KINDS:
        return None, f"not applicable: a {kind} brings no VM up at the recovery site"
    if status not in (OpStatus.SUCCEEDED.value, OpStatus.PARTIAL.value):
        return None, f"not achieved: the operation is {status}"
    planned = [g for g in groups if g.name != PLAN_WIDE] or groups
    ends = [g.finished_at for g in planned if g.finished_at]
    if not ends:
        return None, "not achieved: no step of the plan ran"
    took = (max(ends) - start).total_seconds()
    if failed:
        return took, "covers the VMs that came back; these failed: " + ", ".join(failed)
    return took, ""


_CATEGORIES = (
    ("vmm.grant_ips", "IP reservation"), ("vmm.revoke_ips", "IP reservation"),
    ("vmm.connect_nics", "NIC connection"), ("vmm.create_test_networks", "test network"),
    ("vmm.delete_test_networks", "test network"), ("hyperv.set_failover_configs", "failover IP"),
    ("hyperv.clear_failover_configs", "failover IP"), ("hyperv.replicate", "replication"),
    ("hyperv.set_power", "power"), ("dns.", "DNS record"), ("routes.", "route"), ("script.", "script"),
)


def category(action: str) -> str:
    """What kind of outside thing an audited action changed, in an auditor's words."""
    return next((word for prefix, word in _CATEGORIES if action.startswith(prefix)), action.split(".")[0])


def _change(a: AuditRow) -> ChangeFact:
    d = a.details if isinstance(a.details, dict) else {}
    return ChangeFact(operation_id=a.operation_id or "", at=a.at, actor=a.actor, step=d.get("step"),
                      action=a.action, category=category(a.action), target=a.target, before=d.get("before"),
                      after=d.get("after"), result=str(d.get("result", "")), error=d.get("error"),
                      note=d.get("note"))


def _addresses(plan: dict[str, Any], steps: list[StepRow], vm_group: dict[str, str | None]) -> list[AddressFact]:
    """Each reserved IP configuration of the plan, with what the reserve steps got from VMM."""
    got: dict[str, dict[str, Any]] = {}
    for r in steps:
        if r.action == "vmm.reserve":
            for it in (r.outcome or {}).get("items", []):
                got[str(it.get("key"))] = it
    out = []
    # In the order the plan recovers them: group by group, then as the plan lists them.
    rank = {name: i for i, name in enumerate(dict.fromkeys(vm_group.values()))}
    reserves = sorted((c for c in plan.get("changes", []) if c.get("kind") == "reserve"),
                      key=lambda c: rank.get(vm_group.get(c["vm"]), len(rank)))
    for c in reserves:
        item = got.get(f"{c['vm']}/{c['nic']}/{c.get('ip_index', 0)}/{c.get('purpose', 'failover')}")
        value = (item or {}).get("value")
        granted = value.get("address") if isinstance(value, dict) else None
        if item is None:
            problem = "not reserved: its step did not run"
        elif item.get("error"):
            problem = f"not reserved: {item['error'].get('code', 'error')}: {item['error'].get('message', '')}"
        elif item.get("skipped"):
            problem = f"skipped: {item['skipped']}"
        else:
            problem = None
        out.append(AddressFact(vm=c["vm"], group=vm_group.get(c["vm"]), nic=c["nic"],
                               ip_configuration=int(c.get("ip_index", 0)), purpose=str(c.get("purpose", "failover")),
                               site=str(c.get("site", "")), pool=str(c.get("pool", "")),
                               before=c.get("source_address"), planned=c.get("address"), granted=granted,
                               problem=problem))
    return out


def _scripts(steps: list[StepRow]) -> list[ScriptRun]:
    out = []
    for r in steps:
        if r.action != "script":
            continue
        for it in (r.outcome or {}).get("items", []):
            rec = it.get("value")
            if not isinstance(rec, dict):
                continue
            out.append(ScriptRun(
                step=r.name, host=str(rec.get("host", "")), path=str(rec.get("path", "")),
                succeeded=bool(rec.get("succeeded")), error=rec.get("error"),
                duration_s=float(rec.get("duration_s") or 0.0), parameters=dict(rec.get("parameters") or {}),
                stdout=str(rec.get("stdout") or ""), stderr=str(rec.get("stderr") or ""),
                stdout_truncated=rec.get("stdout_truncated"), stderr_truncated=rec.get("stderr_truncated")))
    return out


def _follow_up(store: Store, journal: Journal, op_id: str) -> FollowUp:
    view = read_operation(store, op_id, lambda: journal.view(op_id))
    rows, _ = audit_entries(store, op_id, _MAX_AUDIT)
    return FollowUp(id=view.id, kind=view.kind, status=view.status, created_at=view.created_at,
                    finished_at=view.finished_at, changes=[_change(a) for a in rows if a.key is not None],
                    errors=[_error(e["step"], None, e) for e in view.errors])

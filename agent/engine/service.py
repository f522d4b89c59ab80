"""The operations engine as the CLI and the API use it: plan, create, run, resume, cancel.

``Engine`` computes each operation's plan from live inventory (or, for follow-ups, takes its
parent's stored plan), turns it into journalled steps, and runs them. Keyword-only service
functions; no I/O of its own beyond the drivers and the store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from agent.config import AgentConfig
from agent.domain.matching import same_name
from agent.domain.model import Inventory, RecordType
from agent.domain.plan import Change, DnsChange, Plan, PlanKind, ReserveIp
from agent.domain.planning import build_plan, host_name
from agent.domain.recovery import LATEST
from agent.domain.validation import PlanRefused, unknown_plan
from agent.engine.actions.dns import dns_snapshot_key
from agent.engine.compensation import can_compensate_again, compensate, undo_of
from agent.engine.expiry import expire_test_failover
from agent.engine.journal import Journal
from agent.engine.model import (
    ERROR_POLICY,
    FINAL_STATUSES,
    OperationKind,
    OperationView,
    OpStatus,
    StepSpec,
    StepStatus,
)
from agent.engine.operations import steps_for
from agent.engine.planio import plan_from_json
from agent.engine.planstate import (  # the refusals are caught from here too
    AlreadyFailedOver,  # noqa: F401
    PlanStatus,
    UncleanedTestFailover,  # noqa: F401
    derive,
    refusal,
)
from agent.engine.poollock import allocation_lock
from agent.engine.reading import Reading, reviewed_reading
from agent.engine.repoint import repoint
from agent.engine.retrying import retrying_ports
from agent.engine.runner import HostLimits, Runner
from agent.engine.store import OperationRow, Store, StoreUnavailable, store_error, utcnow
from agent.errors import AgentError, ConflictError, NotFoundError, RefusedError
from agent.events import MAX_LISTED, EventKind, EventSink, emit_safely, operation_event
from agent.inventory import VmStates, gather_inventory, read_vm_states
from agent.ports import Ports
from agent.remotecalls import observed_ports

if TYPE_CHECKING:
    from agent.scheduler import Scheduler

log = structlog.get_logger("agent.engine")

FAILOVER_KINDS = (OperationKind.PLANNED_FAILOVER, OperationKind.UNPLANNED_FAILOVER, OperationKind.FAILBACK)
PLAN_KIND: dict[OperationKind, PlanKind] = {
    OperationKind.PREPARE: "planned",
    OperationKind.TEST_FAILOVER: "test",
    OperationKind.PLANNED_FAILOVER: "planned",
    OperationKind.UNPLANNED_FAILOVER: "unplanned",
    OperationKind.FAILBACK: "planned",
}
FOLLOW_UP_OF: dict[OperationKind, tuple[OperationKind, ...]] = {
    OperationKind.CLEANUP_TEST: (OperationKind.TEST_FAILOVER,),
    OperationKind.COMMIT: FAILOVER_KINDS,
    OperationKind.REVERSE: FAILOVER_KINDS,
    OperationKind.CHANGE_RECOVERY_POINT: FAILOVER_KINDS,
}

# Address allocation is serialised in the store (``agent.engine.poollock``), across processes: a
# prepare plans and grants under that lock, so two concurrent prepares never pick the same free
# address. The pools are known only once planned, so the scope is the store's whole allocation.
# Failover reservations rely on VMM's own refusal of a double grant plus re-allocation of freely
# chosen addresses (``vmm.reserve``).
ALLOCATION_SCOPE = ("prepare",)

STARTS = frozenset({OpStatus.PENDING.value, OpStatus.FAILED.value, OpStatus.INTERRUPTED.value})
"""An operation that runs from one of these has started (again); from a pause it goes on."""
ENDS: dict[str, EventKind] = {
    OpStatus.FAILED.value: "operation.failed",
    OpStatus.SUCCEEDED.value: "operation.succeeded",
    OpStatus.PARTIAL.value: "operation.partially_succeeded",
}


POINTED = (OperationKind.TEST_FAILOVER, *FAILOVER_KINDS, OperationKind.CHANGE_RECOVERY_POINT)
"""The kinds that fail VMs over to a recovery point (``agent.domain.recovery``)."""


def refuse_point_for(kind: OperationKind, recovery_point: str | None) -> None:
    if recovery_point is not None and kind not in POINTED:
        raise RefusedError(f"a recovery point is chosen for a test, planned or unplanned failover, a failback or "
                           f"a change_recovery_point, not for a {kind.value}", kind=kind.value,
                           recovery_point=recovery_point)


def point_for(kind: OperationKind, recovery_point: str | None) -> str | None:
    """What a kind's plan resolves: a prepare moves no VM, so no recovery point can refuse it."""
    return recovery_point if kind in POINTED else LATEST


class PlanChanged(RefusedError):
    code = "plan_changed"


class RecordNotManaged(RefusedError):
    """The plan would change DNS data the agent does not manage; take it over explicitly."""

    code = "dns_record_not_managed"


class Engine:
    def __init__(self, config: AgentConfig, ports: Ports, store: Store, *, sleep: Callable[[float], None] = time.sleep,
                 limits: HostLimits | None = None, on_progress: Callable[[str], None] | None = None,
                 scheduler: Scheduler | None = None, crash_hook: Callable[[str, str], None] | None = None,
                 events: EventSink | None = None) -> None:
        self.config = config
        self.ports = observed_ports(ports)  # one log event per remote call, whoever makes it
        self.store = store
        self.journal = Journal(store, actor=config.agent.owner_id)
        self.runner = Runner(self.journal, config, self.ports, limits=limits, sleep=sleep, on_progress=on_progress,
                             crash_hook=crash_hook)
        self.scheduler = scheduler
        self.events = events
        """Where the operations' events go (:mod:`agent.events`); None: nowhere."""
        self._running: dict[str, int] = {}
        self._running_lock = threading.Lock()

    # ----------------------------------------------------------------------- planning

    def inventory(self, kind: PlanKind = "planned") -> Inventory:
        # A test failover writes only the test DNS servers; a real one only the production ones.
        # Only an unplanned failover may plan from the last known state of a site gone dark.
        # Planning reads retry transient errors like a step's calls do (one flaky read must not
        # refuse the whole operation); a site still unreachable after that falls back, as above.
        ports = retrying_ports(self.ports, self.config.policies.retry, self.runner.sleep)
        return gather_inventory(self.config, ports, dns_purpose="test" if kind == "test" else "production",
                                memory=self.journal, fallback=kind == "unplanned", limits=self.runner.limits)

    def plan(self, plan_name: str, kind: PlanKind, recovery_point: str | None = None) -> Plan:
        return self._plan(plan_name, kind, recovery_point=recovery_point)[0]

    def _plan(self, plan_name: str, kind: PlanKind, inventory: Inventory | None = None,
              recovery_point: str | None = None) -> tuple[Plan, Inventory]:
        inventory = inventory if inventory is not None else self.inventory(kind)
        plan = build_plan(self.config, inventory, plan_name, kind, recovery_point)
        if inventory.stale:
            plan = replace(plan, notes=(*plan.notes, *inventory.stale), _checksum=[])
        return plan, inventory

    # --------------------------------------------------------------------- operations

    def create(self, kind: OperationKind, plan_name: str | None = None, *, parent_id: str | None = None,
               requested_by: str = "cli", expect_checksum: str | None = None, take_over: bool = False,
               recovery_point: str | None = None, reading: Reading | None = None) -> str:
        """Record a new operation with its steps (nothing outside changes yet).

        ``take_over``: the operator takes over DNS record sets the plan would change that hold
        data the agent does not manage (refused otherwise, naming them). ``recovery_point``: a
        failover's (``agent.domain.recovery``; None: the recovery plan's ``recovery_point``).
        ``reading``: :meth:`review`'s, planned from rather than read again (``reviewed_reading``)."""
        reused, states = reviewed_reading(kind, plan_name, reading, expect_checksum)
        if kind == OperationKind.CANCEL:
            raise RefusedError("cancel an operation with Engine.cancel(operation id)")
        refuse_point_for(kind, recovery_point)
        if kind in FOLLOW_UP_OF:
            parent = self._parent(kind, plan_name, parent_id)
            if kind != OperationKind.CLEANUP_TEST:
                self._refuse_if_in_progress(kind, self.status(parent.plan_name, states=states))
            plan = self._followed_plan(kind, parent, recovery_point)
            # A change of point pins its own plan (the failover's, repointed); the others their parent's.
            pinned = plan.checksum() if kind == OperationKind.CHANGE_RECOVERY_POINT else parent.plan_checksum
            if expect_checksum and pinned != expect_checksum:
                raise PlanChanged(
                    f"the {kind.value} of plan {parent.plan_name} would follow {parent.id}, whose plan is "
                    f"{pinned}, not the reviewed {expect_checksum}; preview it again",
                    plan=parent.plan_name, expected=expect_checksum, actual=pinned)
            if kind == OperationKind.CLEANUP_TEST:
                self._supersede_test(parent, actor=requested_by)
            steps = steps_for(kind, self.config, plan, parent.id)
            parent_id = parent.id
        else:
            if plan_name is None:
                raise RefusedError(f"{kind.value} needs a recovery plan name")
            inventory = reused if reused is not None else self.inventory(PLAN_KIND[kind])
            if self.config.plan(plan_name) is not None:  # else the planner says it is unknown
                self._refuse_if_in_progress(kind, self.status(plan_name, inventory))
            plan, inventory = self._plan(plan_name, PLAN_KIND[kind], inventory, point_for(kind, recovery_point))
            if kind == OperationKind.FAILBACK:
                plan = self._restore_original_dns(plan)
            if expect_checksum and plan.checksum() != expect_checksum:
                raise PlanChanged(
                    f"the plan for {plan_name} changed since it was reviewed "
                    f"(reviewed {expect_checksum}, now {plan.checksum()}); preview it again",
                    plan=plan_name, expected=expect_checksum, actual=plan.checksum())
            self._check_dns_ownership(plan, take_over=take_over, actor=requested_by)
            steps = steps_for(kind, self.config, plan, None)
        # What can fail is computed before the operation is recorded (the expiry of a test failover).
        expires = (utcnow() + self.config.policies.test_failover_max_age
                   if kind == OperationKind.TEST_FAILOVER and self.scheduler is not None else None)
        op_id = self.journal.create_operation(
            kind=kind, plan_name=plan.plan, plan=plan.to_json(), mode=self.config.agent.mode,
            error_policy=ERROR_POLICY[kind], source_site=plan.source_site, target_site=plan.target_site,
            steps=steps, vms=[v.name for v in plan.vms], parent_id=parent_id, requested_by=requested_by,
        )
        log.info("operation created", operation=op_id, kind=kind.value, plan=plan.plan, steps=len(steps),
                 summary=plan.summary())
        if expires is not None and self.scheduler is not None:
            try:
                self.scheduler.schedule_expiry(op_id, expires)
                if self.config.notifications.wants("test_failover.expiring"):
                    self._schedule_expiry_warning(op_id, expires)
            except Exception as exc:
                # A recorded operation nobody started must not be left for the next command to run
                # silently (a drill without its forced cleanup): it ends cancelled, saying why.
                self._abandon(op_id, exc, actor=requested_by)
                mapped = store_error(exc, str(self.store.engine.url))
                if mapped is None:
                    raise
                raise mapped from exc
        return op_id

    def _abandon(self, op_id: str, exc: Exception, *, actor: str) -> None:
        reason = f"not started: scheduling its forced cleanup failed ({type(exc).__name__}: {exc})"
        self.journal.set_status(op_id, OpStatus.CANCELLED, result={"abandoned": reason})  # lets go of its VMs
        self.store.audit(actor=actor, action="operation.abandoned", operation_id=op_id, details={"reason": reason})

    def _refuse_if_in_progress(self, kind: OperationKind, status: PlanStatus) -> None:
        """Every kind starts only from the states it applies to (``planstate.refusal``): a
        planned failover during a test would shut production down and then fail at Hyper-V; a
        reverse before the commit would fail and hold the VMs the commit needs. Refused before
        anything is recorded, naming the VMs and the command that would clear the way."""
        refused = refusal(kind, status, full_mode=self.config.agent.mode == "full")
        if refused is not None:
            raise refused

    def status(self, plan_name: str, inventory: Inventory | None = None, states: VmStates | None = None) -> PlanStatus:
        """Where recovery plan ``plan_name`` stands: its journal, confirmed against what Hyper-V
        Replica reports now (from ``inventory`` or ``states`` when given; else read here, a site
        that cannot be read said in ``stale``)."""
        recovery_plan = self.config.plan(plan_name)
        if recovery_plan is None:
            reason = unknown_plan(plan_name, [p.name for p in self.config.recovery_plans])
            raise PlanRefused(f"no status for plan {plan_name}:\n- [{reason.code}] {reason.message}", [reason],
                              plan=plan_name)
        unread: list[str] = []
        if inventory is None:
            states = states if states is not None else self.vm_states(plan_name)
            replications, machines, unread = list(states.replications), list(states.machines), list(states.unread)
            stale = [f"{site} could not be read: its VMs are shown as the other site reports them" for site in unread]
        else:
            replications, machines, stale = list(inventory.replications), list(inventory.vms), list(inventory.stale)
        primary, recovery = (s.name for s in self.config.sites)
        return derive(plan=plan_name, vms=recovery_plan.vms, sites=(primary, recovery),
                      operations=self.journal.operations(limit=100_000),
                      reservations=self.journal.reservations(vms=recovery_plan.vms), replications=replications,
                      machines=machines, stale=stale, unread_sites=unread)

    def vm_states(self, plan_name: str) -> VmStates:
        """The VMs of ``plan_name`` and their replications as the sites report them now."""
        plan = self.config.plan(plan_name)
        ports = retrying_ports(self.ports, self.config.policies.retry, self.runner.sleep)
        return read_vm_states(self.config, ports, plan.vms if plan else [], limits=self.runner.limits)

    def _supersede_test(self, parent: OperationRow, *, actor: str) -> None:
        """A cleanup takes over a test failover that stopped before its end (waiting at a pause,
        failed, interrupted): it ends ``cancelled`` and lets go of its VMs, so the cleanup can hold
        them. One still running is refused: cancelling it stops it and runs this same cleanup."""
        if OpStatus(parent.status) in FINAL_STATUSES:
            return
        if parent.status == OpStatus.RUNNING.value:
            raise ConflictError(f"test failover {parent.id} is running: cancel it instead (that stops it "
                                "and cleans it up)", operation=parent.id)
        self.journal.set_status(parent.id, OpStatus.CANCELLED, result={"superseded_by": "cleanup_test"})
        self.store.audit(actor=actor, action="test_failover.superseded_by_cleanup", operation_id=parent.id,
                         details={"was": parent.status})

    def _check_dns_ownership(self, plan: Plan, *, take_over: bool, actor: str) -> None:
        """The agent changes only DNS data it manages: a VM's own records (holding only that VM's
        source addresses, or only its host name for a PTR), records it wrote before, and records
        an operator took over. Anything else is refused before anything changes."""
        own_addresses: dict[str, set[str]] = {}
        for r in plan.of(ReserveIp):
            if r.source_address:
                own_addresses.setdefault(r.vm, set()).add(r.source_address)
        managed = self.journal.managed_records()
        foreign = []
        for c in plan.of(DnsChange):
            key = (c.zone, c.name, str(c.type))
            if not c.old_values or key in managed:
                continue
            if c.type == "PTR":
                host = host_name(self.config, c.vm)
                mine = {host} if host else set()
            else:
                mine = own_addresses.get(c.vm, set())
            others = sorted(set(c.old_values) - mine)
            if others:
                foreign.append((c, others))
        if not foreign:
            return
        if take_over:
            for c, others in foreign:
                self.journal.manage_record(c.zone, c.name, str(c.type), "taken_over")
                self.store.audit(actor=actor, action="dns.take_over", target=f"{c.server}/{c.name}/{c.type}",
                                 details={"foreign_values": others})
            return
        listing = "; ".join(f"{c.name} {c.type} holds {', '.join(o)}" for c, o in foreign)
        raise RecordNotManaged(
            f"the plan would change DNS records the agent does not manage: {listing}. "
            "Check them, then take them over explicitly (--take-over) or fix them by hand",
            records=[f"{c.name}/{c.type}" for c, _ in foreign], plan=plan.plan)

    def _parent(self, kind: OperationKind, plan_name: str | None, parent_id: str | None) -> OperationRow:
        wanted = {k.value for k in FOLLOW_UP_OF[kind]}
        if parent_id:
            parent = self.journal.operation(parent_id)
            if parent.kind not in wanted:
                raise RefusedError(f"{kind.value} follows a {' or '.join(sorted(wanted))}, "
                                   f"not {parent.kind} ({parent_id})", operation=parent_id)
            return parent
        for op in self.journal.operations(limit=1000):
            if op.kind in wanted and (plan_name is None or same_name(op.plan_name, plan_name)):
                return op
        first = "test" if kind == OperationKind.CLEANUP_TEST else "planned"
        raise NotFoundError(f"no {' or '.join(sorted(wanted))} operation of plan {plan_name} for a {kind.value} "
                            f"to follow up; a {first.replace('planned', 'failover')} comes first: "
                            f"failover-agent run --plan {plan_name} --kind {first}", plan=plan_name)

    def _restore_original_dns(self, plan: Plan) -> Plan:
        """Failback writes back the exact records (values and TTL) the original failover found,
        from its snapshots, rather than values computed afresh."""
        original = next((op for op in self.journal.operations(limit=1000)
                         if op.kind in (OperationKind.PLANNED_FAILOVER.value, OperationKind.UNPLANNED_FAILOVER.value)
                         and op.plan_name == plan.plan and op.target_site == plan.source_site), None)
        if original is None:
            return plan
        snaps = {s.key: s for s in self.journal.snapshots(scope=original.id, kind="dns") if s.written}
        changes: list[Change] = []
        covered: set[str] = set()
        for c in plan.changes:
            key = dns_snapshot_key(c.server, c.zone, c.name, str(c.type)) if isinstance(c, DnsChange) else None
            if isinstance(c, DnsChange) and key in snaps:
                snap = snaps[key]
                covered.add(key)
                c = replace(c, new_values=tuple(sorted(snap.data["values"])),
                            ttl=snap.data["ttl"] if snap.data["ttl"] is not None else c.ttl)
            changes.append(c)
        vm_of = {c.name: c.vm for c in plan.of(DnsChange)}
        for key, snap in snaps.items():
            if key in covered:
                continue
            server, zone, name, rtype = key.split("|")
            ttl = snap.data["ttl"] if snap.data["ttl"] is not None else self.config.dns.ttl.failover_ttl
            changes.append(DnsChange(server=server, zone=zone, name=name, type=RecordType(rtype), ttl=ttl,
                                     old_values=tuple(sorted(snap.written["values"])),
                                     new_values=tuple(sorted(snap.data["values"])), vm=vm_of.get(name, "")))
        return replace(plan, changes=Plan.sort_changes(changes), _checksum=[])

    def preview(self, kind: OperationKind, plan_name: str, *, strict: bool = False,
                recovery_point: str | None = None) -> Plan:
        """The plan ``create(kind, plan_name)`` would execute if called now, for an operator to
        review; pass its checksum as ``expect_checksum`` to execute exactly that plan. Follow-up
        kinds (cleanup, commit, reverse) execute the stored plan of the operation they follow:
        that plan is their preview (:meth:`follow_up` gives its steps). A kind the plan's state
        does not allow now is refused (``strict``) or said so in the plan's first note (notes
        are not part of the checksum)."""
        return self.review(kind, plan_name, strict=strict, recovery_point=recovery_point)[0]

    def review(self, kind: OperationKind, plan_name: str, *, strict: bool = False,
               recovery_point: str | None = None) -> tuple[Plan, Reading]:
        """:meth:`preview` and the reading it planned from, for :meth:`create` to plan it from too."""
        if kind == OperationKind.CANCEL:
            raise RefusedError("a cancel undoes the operation it follows: 'failover-agent ops cancel OP' shows "
                               "what it would undo")
        refuse_point_for(kind, recovery_point)
        full = self.config.agent.mode == "full"
        began = time.monotonic()
        if kind in FOLLOW_UP_OF:
            parent = self._parent(kind, plan_name, None)
            states = None if kind == OperationKind.CLEANUP_TEST else self.vm_states(parent.plan_name)
            reading = Reading(kind, plan_name, began, states=states)
            refused = None if states is None else refusal(kind, self.status(parent.plan_name, states=states),
                                                          full_mode=full)
            if refused is not None and strict:
                raise refused
            plan = self._followed_plan(kind, parent, recovery_point)
        else:
            inventory = self.inventory(PLAN_KIND[kind])
            reading = Reading(kind, plan_name, began, inventory=inventory)
            refused = None if self.config.plan(plan_name) is None else refusal(
                kind, self.status(plan_name, inventory), full_mode=full)
            if refused is not None and strict:
                raise refused
            try:
                plan = self._plan(plan_name, PLAN_KIND[kind], inventory, point_for(kind, recovery_point))[0]
            except RefusedError:
                # The state says why better than the planner tripping over its consequences.
                if refused is not None:
                    raise refused from None
                raise
            if kind == OperationKind.FAILBACK:
                plan = self._restore_original_dns(plan)
        if refused is not None:
            plan = replace(plan, notes=(f"refused now: {refused.message}", *plan.notes))
        return plan, reading

    def follow_up(self, kind: OperationKind, plan_name: str,
                  recovery_point: str | None = None) -> tuple[OperationRow, list[StepSpec]]:
        """The operation a cleanup, commit, reverse or change of recovery point of ``plan_name``
        would follow, and the steps it would run: what it will change, for an operator to review."""
        parent = self._parent(kind, plan_name, None)
        return parent, steps_for(kind, self.config, self._followed_plan(kind, parent, recovery_point), parent.id)

    def _followed_plan(self, kind: OperationKind, parent: OperationRow, recovery_point: str | None) -> Plan:
        plan = plan_from_json(parent.plan)
        if kind != OperationKind.CHANGE_RECOVERY_POINT:
            return plan
        return repoint(plan, recovery_point, retrying_ports(self.ports, self.config.policies.retry, self.runner.sleep))

    def cancel_steps(self, op_id: str) -> list[StepSpec]:
        """The steps cancelling ``op_id`` would run to undo it (the compensation
        ``engine.compensation`` runs: a test failover's cleanup, a failover's rollback), for an
        operator to review; none when its kind leaves nothing safe to undo."""
        undo = undo_of(self.config, self.journal.operation(op_id))
        return undo.steps if undo is not None else []

    def run(self, op_id: str) -> OperationView:
        before = self._started(op_id) if self.events is not None else None
        with self._running_lock:
            self._running[op_id] = self._running.get(op_id, 0) + 1
        try:
            view = self.runner.run(op_id)
        finally:
            with self._running_lock:
                self._running[op_id] -= 1
        if before is not None:
            self._ended(before, view)
        op = self.journal.operation(op_id, plan=False)
        if view.status in (OpStatus.SUCCEEDED.value, OpStatus.PARTIAL.value):
            # Only a complete cleanup ends the drill's expiry: after a partial one the forced
            # cleanup still comes, for what was left behind.
            if (op.kind == OperationKind.CLEANUP_TEST.value and self.scheduler is not None and op.parent_id
                    and view.status == OpStatus.SUCCEEDED.value):
                self.scheduler.cancel_expiry(op.parent_id)
            if op.kind == OperationKind.REVERSE.value:
                # Reprotect: mirror reservations in the old primary's pools for the way back.
                child = self.create(OperationKind.PREPARE, op.plan_name, parent_id=op_id, requested_by=op.requested_by)
                self.run(child)
        return view

    # ---------------------------------------------------------------------- events

    def _started(self, op_id: str) -> OperationView:
        """Before a run: ``operation.started`` if it starts (again); the view it starts from."""
        before = self.journal.view(op_id)
        if before.status in STARTS:
            resumed = {} if before.status == OpStatus.PENDING.value else {"resumed_from": before.status}
            emit_safely(self.events, operation_event(
                "operation.started", operation_id=op_id, plan=before.plan, operation_kind=before.kind,
                status=OpStatus.RUNNING.value, **resumed))
        return before

    def _ended(self, before: OperationView, view: OperationView) -> None:
        """After a run: the event of the status it stopped in. A wait is a new pause only when a
        step waits that was not waiting before the run (a wait resumed that goes on waiting at the
        same step is the same pause; the next manual step is a new one)."""
        common = {"operation_id": view.id, "plan": view.plan, "operation_kind": view.kind, "status": view.status}
        if view.status == OpStatus.WAITING.value:
            was = {s.name for s in before.steps if s.status == StepStatus.WAITING.value}
            waiting = [s for s in view.steps if s.status == StepStatus.WAITING.value]
            if any(s.name not in was for s in waiting):
                emit_safely(self.events, operation_event(
                    "operation.paused", **common, instruction=view.waiting_for, steps=[s.name for s in waiting],
                    manual=any(s.action == "manual" for s in waiting)))
            return
        kind = ENDS.get(view.status)
        if kind is None:  # cancelled: whoever cancelled it knows
            return
        errors = view.errors
        emit_safely(self.events, operation_event(
            kind, **common, failed_vms=view.failed_vms, succeeded_vms=view.succeeded_vms,
            errors=errors[:MAX_LISTED], error_count=len(errors)))

    def _schedule_expiry_warning(self, op_id: str, expires: datetime) -> None:
        assert self.scheduler is not None
        warn_at = self.config.notifications.expiry_warning_at(utcnow(), expires)
        try:
            self.scheduler.schedule_expiry_warning(op_id, warn_at, expires)
        except Exception as exc:  # a missing warning must not cost the drill its forced cleanup
            log.error("test failover expiry warning not scheduled", operation=op_id, error=type(exc).__name__)

    def start(self, kind: OperationKind, plan_name: str | None = None, **kwargs: Any) -> OperationView:
        """Create and run an operation to its end (or to a manual pause)."""
        if kind == OperationKind.PREPARE:
            with allocation_lock(self.store, [ALLOCATION_SCOPE]):
                return self.run(self.create(kind, plan_name, **kwargs))
        return self.run(self.create(kind, plan_name, **kwargs))

    def resume_unfinished(self, *, on_failure: Callable[[str, AgentError], None] | None = None
                          ) -> list[OperationView]:
        """At start-up: every operation a stopped agent left unfinished runs on from its journal.
        Operations waiting for an operator stay waiting; failed ones wait to be started again.

        Each is resumed on its own: one that cannot be (its journal no longer fits this agent's
        config, a step it cannot read) is logged, audited and handed to ``on_failure``, and the
        rest go on -- before, the first such operation left every later one unresumed. A store
        that cannot be used stops them all: nothing could be journalled."""
        self.journal.mark_interrupted()
        views = []
        for op in sorted(self.journal.operations(status=[OpStatus.INTERRUPTED.value, OpStatus.PENDING.value],
                                                 limit=10000), key=lambda o: o.created_at):
            log.info("resuming operation", operation=op.id, kind=op.kind, status=op.status)
            try:
                self._check_resumable(op)
                views.append(self.run(op.id))
            except StoreUnavailable:
                raise
            except AgentError as exc:
                log.error("operation not resumed; the others go on", operation=op.id, error=exc.to_dict())
                self.store.audit(actor=self.journal.actor, action="operation.resume_failed", operation_id=op.id,
                                 details=exc.to_dict())
                if on_failure is not None:
                    on_failure(op.id, exc)
        return views

    def _check_resumable(self, op: OperationRow) -> None:
        """An operation runs on only if its journal still says what this agent would do: the
        same steps, each with arguments this version reads. Refused before anything changes."""
        if op.plan is None:
            return
        expected = steps_for(OperationKind(op.kind), self.config, plan_from_json(op.plan), op.parent_id)
        rows = self.journal.steps(op.id)
        self.journal.check_sequence(op.id, expected, rows)
        Runner.check_arguments(rows)

    def resume(self, op_id: str, *, actor: str) -> OperationView:
        """Continue after a manual pause, or start a failed operation again from its failed step."""
        self.begin_resume(op_id, actor=actor)
        return self.run(op_id)

    def begin_resume(self, op_id: str, *, actor: str) -> None:
        """All of :meth:`resume` but running it: refused if it cannot run on; an operator's
        manual step is marked done. The served agent then runs it in a worker of its own."""
        op = self.journal.operation(op_id)
        if OpStatus(op.status) in FINAL_STATUSES:
            raise ConflictError(f"operation {op_id} is {op.status}; it cannot run again", operation=op_id)
        self._check_resumable(op)
        # Only an operator's pause is done because someone says so: a wait for the orchestrator
        # stays waiting and runs again, re-reading replication before anything moves.
        if op.status == OpStatus.WAITING.value and any(
                r.status == StepStatus.WAITING.value and r.action == "manual" for r in self.journal.steps(op_id)):
            self.journal.complete_manual(op_id, actor)
        self.store.audit(actor=actor, action="operation.resume", operation_id=op_id)

    def cancel(self, op_id: str, *, actor: str, compensate_now: bool = True) -> OperationView:
        """Ask ``op_id`` to stop and be undone. Its runner, if one is running it, compensates at
        the next step; else this caller does, unless ``compensate_now`` is false (the served agent
        then runs it in a worker: :meth:`run` compensates an operation whose cancel was asked)."""
        op = self.journal.operation(op_id)
        if can_compensate_again(op):
            # The first undo left VMs not put back (a host down, an error fixed since): again.
            self.store.audit(actor=actor, action="operation.cancel_again", operation_id=op_id)
            info = compensate(self.runner, op)
            self.journal.set_status(op_id, OpStatus.CANCELLED, result={**(op.result or {}), "compensation": info})
            return self.journal.view(op_id)
        if OpStatus(op.status) in FINAL_STATUSES:
            raise ConflictError(f"operation {op_id} is already {op.status}", operation=op_id)
        self.journal.request_cancel(op_id, actor)
        if op.status != OpStatus.RUNNING.value and compensate_now:
            # Nobody is running it: compensate now, in this caller.
            return self.runner.run(op_id)
        return self.journal.view(op_id)

    def expire_test_failover(self, op_id: str) -> OperationView | None:
        """The scheduler's job: a test failover past its maximum age is cleaned up by force,
        with an audit record of what was removed (:mod:`agent.engine.expiry`)."""
        return expire_test_failover(self, op_id)

    def is_running(self, op_id: str) -> bool:
        """Whether this process is executing ``op_id`` right now."""
        with self._running_lock:
            return self._running.get(op_id, 0) > 0

    def view(self, op_id: str) -> OperationView:
        return self.journal.view(op_id)

    def operations(self, *, status: Iterable[str] | None = None, limit: int = 100) -> list[OperationRow]:
        return self.journal.operations(status=status, limit=limit)


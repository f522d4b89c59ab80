"""Where a recovery plan stands: the state of each of its VMs and of the plan as a whole.

Hyper-V Replica is the truth for the VMs: a VM's state is what its replication relationship
says as read from the sites (replicating which way, a test VM running, prepared, failed over
awaiting completion, failed over for good), with the sites it is powered on at. The journal adds
what the sites cannot say: which operation started a test failover and when, the failover that
awaits a commit, the last drill that succeeded, the reservations held.

Everything here is a pure function of journal rows and site reads, so it can be tested without
sites; :func:`check_kind` is the gate every operation kind passes before anything is recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from agent.config import AgentConfig
from agent.domain.model import PowerState, Replication, ReplicationState, VirtualMachine
from agent.engine.model import OperationKind, StepSpec
from agent.engine.store import OperationRow, ReservationRow, StepRow
from agent.errors import RefusedError


class VmState(StrEnum):
    PROTECTED = "protected"
    """Replicating from the primary site (the first site of the config) to the recovery site."""
    TEST_FAILOVER = "test_failover_running"
    FAILOVER_STARTED = "failover_started"
    """Prepared for a planned failover (source shut down, changes sent) but not failed over."""
    FAILED_OVER = "failed_over"
    """Running at its replica, awaiting commit (the recovery points are still there)."""
    COMMITTED = "committed"
    REVERSED = "reversed"
    """Replicating from the recovery site back to the primary one (after commit and reverse)."""
    UNKNOWN = "unknown"
    """No replication of the VM could be read."""


PREPARED = "prepared"
"""Plan state: protected, with the failover addresses reserved ahead by a ``prepare``."""
MIXED = "mixed"
"""Plan state: its VMs are not all in the same state."""

VM_WORDS = {
    VmState.PROTECTED: "protected",
    VmState.TEST_FAILOVER: "test failover running",
    VmState.FAILOVER_STARTED: "failover started, not finished",
    VmState.FAILED_OVER: "failed over, awaiting commit",
    VmState.COMMITTED: "committed",
    VmState.REVERSED: "reversed (replicating back)",
    VmState.UNKNOWN: "unknown (replication not read)",
}
PLAN_WORDS = {**{s.value: w for s, w in VM_WORDS.items()}, PREPARED: "prepared (addresses reserved)",
              MIXED: "mixed"}

FAILOVER_KINDS = frozenset({OperationKind.PLANNED_FAILOVER.value, OperationKind.UNPLANNED_FAILOVER.value,
                            OperationKind.FAILBACK.value})
DONE = frozenset({"succeeded", "partially_succeeded"})
FINAL = DONE | {"cancelled"}


class AlreadyFailedOver(RefusedError):
    """The plan's VMs are failed over already (by an earlier operation, or by hand)."""

    code = "already_failed_over"


class UncleanedTestFailover(RefusedError):
    """A test failover of the plan's VMs has not been cleaned up yet."""

    code = "test_failover_not_cleaned_up"


class KindNotValidNow(RefusedError):
    """The operation does not apply to the state the plan's VMs (or its journal) are in."""

    code = "kind_not_valid_in_state"


@dataclass(frozen=True, slots=True)
class OpRef:
    id: str
    kind: str
    status: str
    at: datetime
    """When it was created."""
    finished_at: datetime | None = None

    @classmethod
    def of(cls, op: OperationRow) -> OpRef:
        return cls(op.id, op.kind, op.status, op.created_at, op.finished_at)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "status": self.status, "created_at": self.at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None}


@dataclass(frozen=True, slots=True)
class VmStatus:
    vm: str
    state: VmState
    replication: str | None
    """The Hyper-V Replica state as read (``FailedOverWaitingCompletion`` ...)."""
    primary_site: str | None
    replica_site: str | None
    test_vm: str | None
    running_at: tuple[str, ...]
    """The sites where the VM (not its test VM) is powered on."""
    unread: tuple[str, ...] = ()
    """Sites that could not be read: the VM may run there."""

    @property
    def off_everywhere(self) -> bool:
        """Powered off at both sites: a service is down."""
        return not self.running_at and not self.unread and self.state != VmState.UNKNOWN

    def to_json(self) -> dict[str, Any]:
        return {"vm": self.vm, "state": self.state.value, "replication": self.replication,
                "primary_site": self.primary_site, "replica_site": self.replica_site, "test_vm": self.test_vm,
                "running_at": list(self.running_at), "off_everywhere": self.off_everywhere}


@dataclass(frozen=True, slots=True)
class HeldAddress:
    vm: str
    nic: str
    site: str
    pool: str
    address: str
    purpose: str
    operation: str

    def to_json(self) -> dict[str, Any]:
        return {"vm": self.vm, "nic": self.nic, "site": self.site, "pool": self.pool, "address": self.address,
                "purpose": self.purpose, "operation": self.operation}


@dataclass(frozen=True, slots=True)
class PlanStatus:
    plan: str
    state: str
    """A :class:`VmState` value shared by every VM, :data:`PREPARED` or :data:`MIXED`."""
    primary_site: str
    recovery_site: str
    vms: tuple[VmStatus, ...]
    test_failover: OpRef | None
    """The test failover whose test VMs run now."""
    last_test: OpRef | None
    """The last test failover that succeeded."""
    failover: OpRef | None
    """The last failover (planned, unplanned or failback) of the plan, in whatever status."""
    committed_by: OpRef | None
    """The commit that made ``failover`` final."""
    unfinished: tuple[OpRef, ...]
    reservations: tuple[HeldAddress, ...]
    stale: tuple[str, ...] = ()

    def in_state(self, *states: VmState) -> list[str]:
        return [v.vm for v in self.vms if v.state in states]

    def by_state(self) -> dict[VmState, list[str]]:
        out: dict[VmState, list[str]] = {}
        for v in self.vms:
            out.setdefault(v.state, []).append(v.vm)
        return out

    def to_json(self) -> dict[str, Any]:
        def ref(r: OpRef | None) -> dict[str, Any] | None:
            return r.to_json() if r else None

        return {"plan": self.plan, "state": self.state, "primary_site": self.primary_site,
                "recovery_site": self.recovery_site, "vms": [v.to_json() for v in self.vms],
                "test_failover": ref(self.test_failover), "last_test_failover": ref(self.last_test),
                "failover": ref(self.failover), "committed_by": ref(self.committed_by),
                "unfinished": [r.to_json() for r in self.unfinished],
                "reservations": [r.to_json() for r in self.reservations], "stale": list(self.stale)}


# --------------------------------------------------------------------------- deriving


def vm_status(vm: str, rep: Replication | None, primary_site: str, machines: Iterable[VirtualMachine],
              unread: tuple[str, ...] = ()) -> VmStatus:
    running = tuple(sorted({m.site for m in machines if m.name == vm and m.role != "test"
                            and m.power_state == PowerState.RUNNING}))
    if rep is None:
        return VmStatus(vm, VmState.UNKNOWN, None, None, None, None, running, unread)
    if rep.test_vm:
        state = VmState.TEST_FAILOVER
    elif rep.state == ReplicationState.REPLICATING:
        state = VmState.PROTECTED if rep.primary_site == primary_site else VmState.REVERSED
    elif rep.state == ReplicationState.PREPARED_FOR_FAILOVER:
        state = VmState.FAILOVER_STARTED
    elif rep.state == ReplicationState.FAILED_OVER_WAITING_COMPLETION:
        state = VmState.FAILED_OVER
    else:
        state = VmState.COMMITTED
    return VmStatus(vm, state, rep.state.value, rep.primary_site, rep.replica_site, rep.test_vm, running, unread)


def derive(*, plan: str, vms: Sequence[str], sites: tuple[str, str], operations: Iterable[OperationRow],
           reservations: Iterable[ReservationRow], replications: Iterable[Replication],
           machines: Iterable[VirtualMachine], stale: Iterable[str] = (),
           unread_sites: Iterable[str] = ()) -> PlanStatus:
    """The state of recovery plan ``plan`` (its VMs ``vms``) from the journal's operations and
    held reservations and what the sites report. ``sites``: (primary, recovery) as configured;
    ``stale``: what could not be read, said; ``unread_sites``: the sites not read at all."""
    primary, recovery = sites
    machines = list(machines)
    reps: dict[str, Replication] = {}
    for r in replications:
        reps.setdefault(r.vm, r)
    unread = tuple(sorted(unread_sites))
    statuses = tuple(vm_status(vm, reps.get(vm), primary, machines, unread) for vm in vms)
    ops = sorted((o for o in operations if o.plan_name == plan), key=lambda o: o.created_at, reverse=True)
    tests = [o for o in ops if o.kind == OperationKind.TEST_FAILOVER.value]
    running_test = next((OpRef.of(o) for o in tests), None) if any(
        s.state == VmState.TEST_FAILOVER for s in statuses) else None
    last_test = next((OpRef.of(o) for o in tests if o.status == "succeeded"), None)
    failover = next((o for o in ops if o.kind in FAILOVER_KINDS), None)
    commit = next((o for o in ops if failover is not None and o.kind == OperationKind.COMMIT.value
                   and o.parent_id == failover.id and o.status in DONE), None)
    names = set(vms)
    prepares = {o.id for o in ops if o.kind == OperationKind.PREPARE.value}
    held = tuple(HeldAddress(r.vm, r.nic, r.site, r.pool, r.address, r.purpose, r.operation_id)
                 for r in reservations if r.vm in names and r.held)
    kinds = {s.state for s in statuses}
    if len(kinds) != 1:
        state = MIXED
    else:
        state = kinds.pop().value
        if state == VmState.PROTECTED and any(h.operation in prepares and h.site == recovery for h in held):
            state = PREPARED
    return PlanStatus(
        plan=plan, state=state, primary_site=primary, recovery_site=recovery, vms=statuses,
        test_failover=running_test, last_test=last_test, failover=OpRef.of(failover) if failover else None,
        committed_by=OpRef.of(commit) if commit else None,
        unfinished=tuple(OpRef.of(o) for o in ops if o.status not in FINAL), reservations=held,
        stale=tuple(stale))


# ------------------------------------------------------------------------------ gating


ALLOWED: dict[OperationKind, frozenset[VmState]] = {
    # Reserving ahead changes no VM: it fits any state a failover may still start from.
    OperationKind.PREPARE: frozenset({VmState.PROTECTED, VmState.REVERSED, VmState.TEST_FAILOVER,
                                      VmState.UNKNOWN}),
    OperationKind.TEST_FAILOVER: frozenset({VmState.PROTECTED, VmState.REVERSED, VmState.UNKNOWN}),
    OperationKind.PLANNED_FAILOVER: frozenset({VmState.PROTECTED, VmState.UNKNOWN}),
    # The site a reversed plan runs at may be the one that went dark.
    OperationKind.UNPLANNED_FAILOVER: frozenset({VmState.PROTECTED, VmState.REVERSED, VmState.UNKNOWN}),
    OperationKind.FAILBACK: frozenset({VmState.REVERSED, VmState.UNKNOWN}),
    OperationKind.COMMIT: frozenset({VmState.FAILED_OVER, VmState.COMMITTED}),
    OperationKind.REVERSE: frozenset({VmState.COMMITTED, VmState.REVERSED}),
    # Only until the commit: it removes every other recovery point.
    OperationKind.CHANGE_RECOVERY_POINT: frozenset({VmState.FAILED_OVER}),
}


def _run(plan: str, kind: str) -> str:
    return f"failover-agent run --plan {plan} --kind {kind}"


def _remedy(status: PlanStatus, kind: OperationKind, state: VmState) -> str:
    """The command that takes VMs in ``state`` to where ``kind`` can start."""
    plan = status.plan
    op = status.failover.id if status.failover else "OP"
    if state == VmState.TEST_FAILOVER:
        return f"clean the test failover up first: {_run(plan, 'cleanup')}"
    if state == VmState.FAILOVER_STARTED:
        return (f"finish or undo the failover that was started: failover-agent ops resume {op} "
                f"(or failover-agent ops cancel {op})")
    if state == VmState.FAILED_OVER:
        return (f"make the failover final first: {_run(plan, 'commit')} "
                f"(or undo it: failover-agent ops cancel {op})")
    if state == VmState.COMMITTED and kind == OperationKind.CHANGE_RECOVERY_POINT:
        return "the commit removed the other recovery points: the point of a committed failover cannot change"
    if state == VmState.COMMITTED:
        return f"reverse replication first: {_run(plan, 'reverse')}"
    if state == VmState.REVERSED:
        return f"to return to {status.primary_site}: {_run(plan, 'failback')}"
    if kind in (OperationKind.COMMIT, OperationKind.REVERSE, OperationKind.CHANGE_RECOVERY_POINT):
        return f"nothing is failed over; a failover comes first: {_run(plan, 'planned')}"
    return f"nothing to fail back: the VMs run at {status.primary_site}"


def _error_class(kind: OperationKind, blocking: set[VmState]) -> type[RefusedError]:
    if VmState.TEST_FAILOVER in blocking:
        return UncleanedTestFailover
    moving = kind in (OperationKind.TEST_FAILOVER, OperationKind.PLANNED_FAILOVER,
                      OperationKind.UNPLANNED_FAILOVER, OperationKind.FAILBACK)
    if moving and blocking & {VmState.FAILED_OVER, VmState.COMMITTED}:
        return AlreadyFailedOver
    return KindNotValidNow


def refusal(kind: OperationKind, status: PlanStatus, *, full_mode: bool) -> RefusedError | None:
    """Why ``kind`` cannot start on the plan in ``status`` (None: it can). Each VM in a state the
    kind does not start from is named, with the command that would make the request valid.

    In network-only mode the orchestrator moves the VMs and the agent follows, so VMs already
    failed over (or running a test) are normal there: only the journal's order is checked."""
    label = kind.value.replace("_", " ")
    if kind == OperationKind.CHANGE_RECOVERY_POINT and not full_mode:
        return KindNotValidNow(f"in network-only mode the orchestrator runs Hyper-V Replica: change the recovery "
                               f"point of plan {status.plan} there", plan=status.plan, kind=kind.value)
    journal = _journal_refusal(kind, status, label)
    if journal is not None or not full_mode or kind not in ALLOWED:
        return journal
    allowed = ALLOWED[kind]
    blocking = {s: vms for s, vms in status.by_state().items() if s not in allowed}
    if kind == OperationKind.COMMIT and status.in_state(VmState.FAILED_OVER, VmState.COMMITTED):
        # A failover that got only some VMs over (unplanned, carrying on) is committed for those.
        blocking = {}
    if not blocking:
        return None
    test_vms = {v.vm: v.test_vm for v in status.vms if v.test_vm}
    parts = [", ".join(f"{vm} ({test_vms[vm]})" if vm in test_vms else vm for vm in vms) + f": {VM_WORDS[s]}"
             for s, vms in blocking.items()]
    if status.test_failover is not None and VmState.TEST_FAILOVER in blocking:
        t = status.test_failover
        parts[list(blocking).index(VmState.TEST_FAILOVER)] += f" ({t.id}, since {t.at:%Y-%m-%d %H:%M:%S} UTC)"
    remedies = "; ".join(dict.fromkeys(_remedy(status, kind, s) for s in blocking))
    cls = _error_class(kind, set(blocking))
    vms = sorted(vm for names in blocking.values() for vm in names)
    return cls(f"a {label} of plan {status.plan} cannot start: {'; '.join(parts)}. {remedies[0].upper()}"
               f"{remedies[1:]}", plan=status.plan, kind=kind.value, vms=vms,
               states={s.value: names for s, names in blocking.items()})


def _journal_refusal(kind: OperationKind, status: PlanStatus, label: str) -> RefusedError | None:
    """Follow-ups of a failover need that failover to have ended well (and a reverse, its commit;
    a change of its recovery point, no commit yet)."""
    if kind not in (OperationKind.COMMIT, OperationKind.REVERSE, OperationKind.CHANGE_RECOVERY_POINT):
        return None
    f, plan = status.failover, status.plan
    if f is None:
        return KindNotValidNow(f"a {label} of plan {plan} follows a failover, and the plan has none; "
                               f"a failover comes first: {_run(plan, 'planned')}", plan=plan, kind=kind.value)
    if f.status == "cancelled":
        return KindNotValidNow(f"the last failover of plan {plan}, {f.id} ({f.kind}), was cancelled: there is "
                               f"nothing to {kind.value}", plan=plan, kind=kind.value, operation=f.id)
    if f.status not in DONE:
        return KindNotValidNow(f"the last failover of plan {plan}, {f.id} ({f.kind}), is {f.status}: finish it "
                               f"(failover-agent ops resume {f.id}) or undo it (failover-agent ops cancel {f.id}) "
                               f"before a {label}", plan=plan, kind=kind.value, operation=f.id)
    if kind == OperationKind.CHANGE_RECOVERY_POINT and status.committed_by is not None:
        return KindNotValidNow(f"the failover {f.id} of plan {plan} is committed ({status.committed_by.id}): the "
                               "commit removed its other recovery points, so its point cannot change any more",
                               plan=plan, kind=kind.value, operation=f.id)
    if kind == OperationKind.REVERSE and status.committed_by is None:
        return KindNotValidNow(f"the failover {f.id} of plan {plan} is not committed: a reverse replicates back "
                               f"from VMs whose failover is final. Commit it first: {_run(plan, 'commit')}",
                               plan=plan, kind=kind.value, operation=f.id)
    return None


def kinds_allowed(status: PlanStatus, *, full_mode: bool) -> list[str]:
    """The kinds that can start now, in the order of :class:`OperationKind`: those
    :func:`refusal` lets start while no unfinished operation holds the VMs, and a cleanup whenever
    test VMs run."""
    allowed = {k for k in ALLOWED if refusal(k, status, full_mode=full_mode) is None}
    # Run again they would find nothing to do: not a next step.
    if not status.in_state(VmState.FAILED_OVER):
        allowed.discard(OperationKind.COMMIT)
    if not status.in_state(VmState.COMMITTED):
        allowed.discard(OperationKind.REVERSE)
    if status.unfinished:
        # They hold the VMs: only a cleanup may take over a test failover that is not running.
        allowed = set()
    if status.in_state(VmState.TEST_FAILOVER) and all(
            u.kind == OperationKind.TEST_FAILOVER.value and u.status != "running" for u in status.unfinished):
        allowed.add(OperationKind.CLEANUP_TEST)
    return [k.value for k in OperationKind if k in allowed]


def vms_through(steps: Sequence[StepSpec], statuses: Sequence[str]) -> list[str]:
    """The VMs every step of which (``steps``, as built from the operation's stored plan, with
    their journalled ``statuses`` in the same order) succeeded: done, as far as the journal says."""
    ok: dict[str, bool] = {}
    for spec, status in zip(steps, statuses, strict=True):
        for item in spec.args.items:
            if item.vm:
                ok[item.vm] = ok.get(item.vm, True) and status == "succeeded"
    return [vm for vm, done in ok.items() if done]


def done_in_journal(config: AgentConfig, op: OperationRow, rows: Sequence[StepRow]) -> list[str]:
    """The VMs of operation ``op`` (journalled steps ``rows``) all of whose steps succeeded."""
    from agent.engine.operations import steps_for
    from agent.engine.planio import plan_from_json

    if op.plan is None:
        return []
    specs = steps_for(OperationKind(op.kind), config, plan_from_json(op.plan), op.parent_id)
    if [s.name for s in specs] != [r.name for r in rows]:
        return []  # not the steps this agent builds (the journal's check says so when it runs)
    return vms_through(specs, [r.status for r in rows])

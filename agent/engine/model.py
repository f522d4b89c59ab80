"""Value types of the operations engine: kinds, statuses, error policies, step specs, progress."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from agent.engine.steps import StepArgs


class OperationKind(StrEnum):
    PREPARE = "prepare"
    TEST_FAILOVER = "test_failover"
    CLEANUP_TEST = "cleanup_test"
    PLANNED_FAILOVER = "planned_failover"
    UNPLANNED_FAILOVER = "unplanned_failover"
    COMMIT = "commit"
    REVERSE = "reverse"
    FAILBACK = "failback"
    CANCEL = "cancel"
    """Compensates a cancelled operation: undoes what is safe to undo, from its snapshots."""
    CHANGE_RECOVERY_POINT = "change_recovery_point"
    """After a failover, before its commit: bring the VMs up from another recovery point."""


class OpStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting_for_manual_action"
    SUCCEEDED = "succeeded"
    PARTIAL = "partially_succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    """Was running when the agent stopped; resumed automatically when it starts."""
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({OpStatus.SUCCEEDED, OpStatus.PARTIAL, OpStatus.CANCELLED})
"""An operation in one of these states never runs again. ``failed`` is not final: the same
operation can be started again and resumes at the step that failed."""


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    WAITING = "waiting"


class ErrorPolicy(StrEnum):
    """What an item error does to the rest of the operation (a named value, never an accident)."""

    STOP_AT_FIRST_ERROR = "stop_at_first_error"
    """Planned failover, failback, test failover: stop; the operation can be started again."""
    CARRY_ON = "carry_on"
    """Unplanned failover, cleanup: skip the failed VM in later steps, do everything else,
    report every error; the operation ends ``partially_succeeded`` naming the VMs that failed."""


ERROR_POLICY: dict[OperationKind, ErrorPolicy] = {
    OperationKind.PREPARE: ErrorPolicy.CARRY_ON,
    OperationKind.TEST_FAILOVER: ErrorPolicy.STOP_AT_FIRST_ERROR,
    OperationKind.CLEANUP_TEST: ErrorPolicy.CARRY_ON,
    OperationKind.PLANNED_FAILOVER: ErrorPolicy.STOP_AT_FIRST_ERROR,
    OperationKind.UNPLANNED_FAILOVER: ErrorPolicy.CARRY_ON,
    OperationKind.COMMIT: ErrorPolicy.CARRY_ON,
    OperationKind.REVERSE: ErrorPolicy.STOP_AT_FIRST_ERROR,
    OperationKind.FAILBACK: ErrorPolicy.STOP_AT_FIRST_ERROR,
    OperationKind.CANCEL: ErrorPolicy.CARRY_ON,
    # A VM stopped for the change must come up again even when another one's point fails.
    OperationKind.CHANGE_RECOVERY_POINT: ErrorPolicy.CARRY_ON,
}


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One journalled step: one action against one target, for a batch of items.

    ``needs`` names the steps of the same operation this one waits for (it starts as soon as
    every one of them has finished); ``None`` is the stage barrier: every step of the previous
    stage. ``stage`` is the display order and, among steps ready at once, the priority.
    ``args`` is the action's typed arguments (``agent.engine.steps``), fixed when the operation
    is created, so a resumed operation does exactly what was planned.
    """

    name: str
    action: str
    stage: int
    target: str | None
    args: StepArgs
    group: str | None = None
    needs: tuple[str, ...] | None = None


def needed_ordinals(steps: Sequence[StepSpec]) -> list[list[int] | None]:
    """Each step's ``needs`` as the ordinals the journal keeps. A step may only need steps listed
    before it: the order is then a schedule the runner can always finish, never a cycle."""
    ordinal = {st.name: i for i, st in enumerate(steps)}
    out: list[list[int] | None] = []
    for i, st in enumerate(steps):
        if st.needs is None:
            out.append(None)
            continue
        wrong = [n for n in st.needs if ordinal.get(n, i) >= i]
        if wrong:
            raise ValueError(f"step {st.name} needs steps that are not listed before it: {sorted(wrong)}")
        out.append(sorted({ordinal[n] for n in st.needs}))
    return out


@dataclass(slots=True)
class ItemOutcome:
    key: str
    vm: str | None = None
    changed: bool = False
    error: dict[str, Any] | None = None
    value: Any = None
    skipped: str | None = None
    """Why the item was not attempted (e.g. its VM failed earlier, source site unreachable)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "changed": self.changed}
        for name in ("vm", "error", "value", "skipped"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(slots=True)
class StepResult:
    items: list[ItemOutcome] = field(default_factory=list)
    waiting: str | None = None
    """Set when the step waits for an operator: the instruction to show."""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [dict(i.error, key=i.key, vm=i.vm) for i in self.items if i.error]

    def to_json(self) -> dict[str, Any]:
        return {"items": [i.to_json() for i in self.items], "info": self.info, "waiting": self.waiting}


@dataclass(frozen=True, slots=True)
class StepView:
    ordinal: int
    name: str
    action: str
    group: str | None
    target: str | None
    status: str
    attempts: int
    items: int
    changed: int
    errors: list[dict[str, Any]]
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class OperationView:
    """What an operator sees: status, counts, percent, elapsed time, errors with code and target."""

    id: str
    kind: str
    plan: str
    status: str
    mode: str
    error_policy: str
    source_site: str
    target_site: str
    created_at: datetime
    finished_at: datetime | None
    steps: list[StepView]
    failed_vms: list[str]
    succeeded_vms: list[str]
    waiting_for: str | None
    notes: list[dict[str, Any]]
    parent_id: str | None

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.steps:
            out[s.status] = out.get(s.status, 0) + 1
        return out

    @property
    def percent(self) -> float:
        if not self.steps:
            return 100.0
        done = sum(1 for s in self.steps if s.status in ("succeeded", "skipped"))
        return round(100.0 * done / len(self.steps), 1)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [dict(e, step=s.name) for s in self.steps for e in s.errors]

    def elapsed_s(self, now: datetime) -> float:
        return ((self.finished_at or now) - self.created_at).total_seconds()

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "plan": self.plan, "status": self.status, "mode": self.mode,
            "error_policy": self.error_policy, "source_site": self.source_site, "target_site": self.target_site,
            "parent_id": self.parent_id,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "elapsed_s": round(self.elapsed_s(now), 3), "percent": self.percent, "counts": self.counts,
            "failed_vms": self.failed_vms, "succeeded_vms": self.succeeded_vms,
            "waiting_for": self.waiting_for, "errors": self.errors, "notes": self.notes,
            "steps": [
                {"ordinal": s.ordinal, "name": s.name, "action": s.action, "group": s.group, "target": s.target,
                 "status": s.status, "attempts": s.attempts, "items": s.items, "changed": s.changed,
                 "errors": s.errors,
                 "started_at": s.started_at.isoformat() if s.started_at else None,
                 "finished_at": s.finished_at.isoformat() if s.finished_at else None}
                for s in self.steps
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OperationView:
        """The view again from :meth:`to_json` (the API's answer), for the renderers of the CLI
        working against a running agent."""

        def at(text: str | None) -> datetime | None:
            return datetime.fromisoformat(text) if text else None

        def when(text: str) -> datetime:
            return datetime.fromisoformat(text)

        steps = [StepView(s["ordinal"], s["name"], s["action"], s.get("group"), s.get("target"), s["status"],
                          s["attempts"], s["items"], s["changed"], list(s.get("errors") or []),
                          at(s.get("started_at")), at(s.get("finished_at")))
                 for s in data.get("steps", [])]
        return cls(id=data["id"], kind=data["kind"], plan=data["plan"], status=data["status"], mode=data["mode"],
                   error_policy=data["error_policy"], source_site=data["source_site"],
                   target_site=data["target_site"], created_at=when(data["created_at"]),
                   finished_at=at(data.get("finished_at")), steps=steps, failed_vms=list(data["failed_vms"]),
                   succeeded_vms=list(data["succeeded_vms"]), waiting_for=data.get("waiting_for"),
                   notes=list(data.get("notes") or []), parent_id=data.get("parent_id"))

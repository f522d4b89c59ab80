"""The API's request and response bodies, as published in its OpenAPI document.

Responses carry the same keys as the CLI's ``--json`` (``OperationView.to_json``,
``PlanStatus.to_json``, ``Plan.to_json``): one vocabulary for scripts on either side. The main
fields are typed here; nested details are objects whose keys the CLI's documentation lists.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.domain.model import RecoveryPointChoice
from agent.engine.model import OperationKind

StartableKind = Literal["prepare", "test_failover", "cleanup_test", "planned_failover", "unplanned_failover",
                        "commit", "reverse", "failback", "change_recovery_point"]
PlanKindName = Literal["test", "planned", "unplanned"]
assert set(StartableKind.__args__) == {k.value for k in OperationKind} - {"cancel"}  # type: ignore[attr-defined]


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class StartOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    take_over_dns: bool = False
    """Take over DNS record sets the plan would change that hold data the agent does not manage."""
    confirmed: Literal["yes", "terminal"] | None = None
    """How the caller's operator confirmed a change to production (``--yes``, or an answer at the
    terminal after the preview), for the audit trail (``operation.confirmed``)."""
    recovery_point: RecoveryPointChoice | None = None
    """A failover's recovery point: ``latest``, ``latest_app_consistent`` or a replica snapshot's
    name (default: the recovery plan's ``recovery_point``)."""


class StartOperation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: StartableKind
    plan: str = Field(min_length=1, max_length=128)
    options: StartOptions = StartOptions()
    plan_checksum: str | None = Field(default=None, max_length=80, pattern=r"^sha256:[0-9a-f]{64}$")
    """The checksum of the plan the caller reviewed (``preview``): refused (409) if it changed."""


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=10000)


class Preview(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: StartableKind
    strict: bool = False
    """Refuse (409) a kind the plan's state does not allow now; otherwise its first note says so."""
    recovery_point: RecoveryPointChoice | None = None


class Step(Open):
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
    started_at: str | None
    finished_at: str | None


class Operation(Open):
    id: str
    kind: str
    plan: str
    status: str
    mode: str
    source_site: str
    target_site: str
    parent_id: str | None
    created_at: str
    finished_at: str | None
    elapsed_s: float
    percent: float
    counts: dict[str, int]
    failed_vms: list[str]
    succeeded_vms: list[str]
    waiting_for: str | None
    """The instruction of the manual step the operation waits for (resume it when done)."""
    errors: list[dict[str, Any]]
    notes: list[dict[str, Any]]
    steps: list[Step]


class Operations(BaseModel):
    operations: list[Operation]


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    role: str


class Ready(BaseModel):
    ready: bool
    role: str
    checks: dict[str, dict[str, Any]]


class PlanSummary(Open):
    plan: str
    state: str
    kinds_allowed: list[str]


class Plans(BaseModel):
    mode: str
    """The agent's ``agent.mode``: ``full`` or ``network-only``."""
    plans: list[PlanSummary]


class AuditEntry(BaseModel):
    id: int
    at: str
    operation_id: str | None
    actor: str
    action: str
    target: str | None
    details: Any


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_after: int | None
    """Pass as ``after`` for the next page; null at the end."""


class Problem(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str
    code: str

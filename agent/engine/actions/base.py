"""What every step action shares: the registry of actions, the context an action runs in, and
turning a port's per-item results into journalled outcomes.

An action is a function ``(ActionContext, <its StepArgs model>) -> StepResult`` registered under
its name with the model of its arguments (``@action("vmm.reserve", ReserveArgs)``); the runner
reads a step's journalled arguments into that model before calling it. Every action must be
idempotent: it reads current state (or relies on an idempotent port) and acts only on drift, so
re-running a step that was cut off mid-way changes nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog

from agent.config import AgentConfig, RetryPolicy
from agent.engine.journal import Journal
from agent.engine.model import ItemOutcome, StepResult
from agent.engine.retrying import call_with_retries
from agent.engine.steps import Item, StepArgs
from agent.engine.store import OperationRow
from agent.errors import AgentError, TransientError
from agent.ports import ItemResult, Ports

log = structlog.get_logger("agent.engine")

A = TypeVar("A", bound=StepArgs)
I = TypeVar("I", bound=Item)  # noqa: E741 -- the usual name for an item type
R = TypeVar("R")


@dataclass(frozen=True)
class Action(Generic[A]):
    name: str
    args: type[A]
    run: Callable[[ActionContext, A], StepResult]


ACTIONS: dict[str, Action[Any]] = {}


def action(name: str, args: type[A]) -> Callable[[Callable[[ActionContext, A], StepResult]],
                                                  Callable[[ActionContext, A], StepResult]]:
    """Register a step action with the model of its arguments."""

    def register(fn: Callable[[ActionContext, A], StepResult]) -> Callable[[ActionContext, A], StepResult]:
        if name in ACTIONS:
            raise ValueError(f"step action {name} is registered twice")
        ACTIONS[name] = Action(name, args, fn)
        return fn

    return register


@dataclass
class ActionContext:
    """What an action may use: the ports, the journal, the config, and the operation."""

    op: OperationRow
    journal: Journal
    config: AgentConfig
    ports: Ports
    retry: RetryPolicy
    failed_vms: set[str]
    sleep: Callable[[float], None]
    retries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def op_id(self) -> str:
        return self.op.id

    @property
    def owner(self) -> str:
        """Who the agent is in VMM descriptions and the audit trail."""
        return self.config.agent.owner_id

    def call(self, what: str, fn: Callable[[], R]) -> R:
        """Call a port with retries for transient errors (each retry is journalled with the step)."""

        def note(attempt: int, exc: TransientError) -> None:
            self.retries.append({"call": what, "attempt": attempt, "code": exc.code})

        return call_with_retries(what, fn, self.retry, self.sleep, note)

    def live(self, items: Sequence[I]) -> tuple[list[I], list[ItemOutcome]]:
        """Split items into those to act on and those skipped because their VM failed earlier."""
        keep: list[I] = []
        skipped: list[ItemOutcome] = []
        for it in items:
            if it.vm in self.failed_vms:
                skipped.append(ItemOutcome(key=it.key, vm=it.vm, skipped="its VM failed in an earlier step"))
            else:
                keep.append(it)
        return keep, skipped


def error_json(exc: AgentError) -> dict[str, Any]:
    return exc.to_dict()


def outcomes(items: Sequence[Item], results: Sequence[ItemResult[Any]]) -> list[ItemOutcome]:
    """One outcome per (item, result), in order."""
    return [ItemOutcome(key=it.key, vm=it.vm, changed=res.changed, error=error_json(res.error) if res.error else None)
            for it, res in zip(items, results, strict=True)]


def tolerant(ctx: ActionContext, tolerate_unreachable: bool, items: Sequence[Item], what: str,
             fn: Callable[[], Sequence[ItemResult[Any]]]) -> list[ItemOutcome]:
    """Make the step's one port call and turn its results into outcomes.

    Unplanned failover: the source site may be gone. When the step tolerates an unreachable
    target and the call still fails transiently after retries, every item is recorded as skipped
    (with the reason) instead of failing its VM."""
    try:
        return outcomes(items, ctx.call(what, fn))
    except TransientError as exc:
        if not tolerate_unreachable:
            raise
        return [ItemOutcome(key=it.key, vm=it.vm, skipped=f"unreachable: {exc.code}: {exc.message}") for it in items]

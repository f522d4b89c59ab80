"""Runs a journalled operation: stage after stage, the steps of a stage concurrently.

The runner owns no state of its own: everything it knows comes from the journal, so a runner
started on a store left by a killed agent continues exactly where the dead one stopped.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import structlog

from agent.config import AgentConfig
from agent.engine.actions import ACTIONS, ActionContext
from agent.engine.actions.base import error_json
from agent.engine.audit import StepAudit, audited_ports
from agent.engine.journal import Journal
from agent.engine.model import (
    FINAL_STATUSES,
    ErrorPolicy,
    ItemOutcome,
    OperationView,
    OpStatus,
    StepResult,
    StepStatus,
)
from agent.engine.steps import StepArgs, parse_args, upgrade
from agent.engine.store import OperationRow, StepRow
from agent.errors import AgentError, PermanentError
from agent.ports import Ports

log = structlog.get_logger("agent.engine")

class HostLimits:
    """Process-wide concurrency limits: per target host and overall, shared by all operations."""

    def __init__(self, per_host: int, global_limit: int) -> None:
        self.per_host = per_host
        self._global = threading.BoundedSemaphore(global_limit)
        self._hosts: dict[str, threading.BoundedSemaphore] = defaultdict(lambda: threading.BoundedSemaphore(per_host))
        self._lock = threading.Lock()

    def slot(self, target: str | None) -> _Both:
        with self._lock:
            host = self._hosts[target or ""]
        return _Both(self._global, host)


@dataclass
class _Both:
    a: threading.BoundedSemaphore
    b: threading.BoundedSemaphore

    def __enter__(self) -> None:
        self.b.acquire()
        self.a.acquire()

    def __exit__(self, *exc: object) -> None:
        self.a.release()
        self.b.release()


class Runner:
    def __init__(self, journal: Journal, config: AgentConfig, ports: Ports, limits: HostLimits | None = None,
                 sleep: Callable[[float], None] = time.sleep, on_progress: Callable[[str], None] | None = None,
                 crash_hook: Callable[[str, str], None] | None = None) -> None:
        self.journal = journal
        self.config = config
        self.ports = ports
        self.stopping = threading.Event()
        """Set when the agent stops: operations end at their next stage boundary, interrupted."""
        pol = config.policies.concurrency
        self.limits = limits or HostLimits(pol.per_host, pol.global_limit)
        self.sleep = sleep
        self.on_progress = on_progress or (lambda op_id: None)
        # Recovery tests kill the engine at a step boundary through this seam:
        # ("intent" | "acted" | "outcome", step name).
        self.crash_hook = crash_hook or (lambda phase, step: None)

    def run(self, op_id: str) -> OperationView:
        # Every log line while the operation runs carries its id, whichever module logs it.
        with structlog.contextvars.bound_contextvars(operation=op_id):
            return self._run(op_id)

    def _run(self, op_id: str) -> OperationView:
        op = self.journal.operation(op_id, plan=False)  # the steps carry what they need of it
        if OpStatus(op.status) in FINAL_STATUSES:
            return self.journal.view(op_id)
        policy = ErrorPolicy(op.error_policy)
        self.journal.set_status(op_id, OpStatus.RUNNING)
        rows = self.journal.steps(op_id, lean=True)  # each step's spec is read when it runs
        failed_vms = self._replayed_failures(rows)
        # A step that failed without naming a VM (a test network VMM would not delete, a route
        # the router refused) leaves the operation partly done just as a failed VM does.
        failed_steps = {r.name for r in rows if r.status == StepStatus.FAILED.value}
        stages: dict[int, list[StepRow]] = defaultdict(list)
        for r in rows:
            stages[stage_of(r)].append(r)
        log.info("operation running", operation=op_id, kind=op.kind, steps=len(rows))

        for stage in sorted(stages):
            if self.journal.cancel_requested(op_id):
                return self._cancel(op_id, op)
            if self.stopping.is_set():
                # A graceful stop of the agent: the steps begun are finished and journalled, the
                # rest wait for the next leader, which resumes interrupted operations.
                log.info("operation interrupted by the agent's stop", operation=op_id, stage=stage)
                self.journal.set_status(op_id, OpStatus.INTERRUPTED)
                return self.journal.view(op_id)
            todo = [r for r in stages[stage] if r.status not in (StepStatus.SUCCEEDED.value, StepStatus.SKIPPED.value)]
            if not todo:
                continue
            ctx = ActionContext(op=op, journal=self.journal, config=self.config, ports=self.ports,
                                retry=self.config.policies.retry, failed_vms=set(failed_vms), sleep=self.sleep)
            if len(todo) == 1:
                results = [self._run_step(ctx, todo[0])]
            else:
                with ThreadPoolExecutor(max_workers=len(todo), thread_name_prefix=f"{op_id}-s{stage}") as pool:
                    # A worker thread does not inherit the submitter's context variables: each
                    # step runs in a copy of this one, so its log lines name the operation.
                    futures = [pool.submit(contextvars.copy_context().run, self._run_step, ctx, row)
                               for row in todo]
                    results = [f.result() for f in futures]
            self.on_progress(op_id)
            stage_failed = False
            for row, (status, result) in zip(todo, results, strict=True):
                if status == StepStatus.WAITING:
                    self.journal.set_status(op_id, OpStatus.WAITING)
                    log.info("operation waiting for an operator", operation=op_id, step=row.name,
                             instruction=result.waiting)
                    return self.journal.view(op_id)
                for item in result.items:
                    if item.error and item.vm:
                        failed_vms.add(item.vm)
                if status == StepStatus.FAILED:
                    stage_failed = True
                    failed_steps.add(row.name)
                else:
                    failed_steps.discard(row.name)
            if stage_failed and policy == ErrorPolicy.STOP_AT_FIRST_ERROR:
                self.journal.set_status(op_id, OpStatus.FAILED, result={"failed_vms": sorted(failed_vms)})
                log.error("operation stopped at the first error", operation=op_id, failed_vms=sorted(failed_vms))
                return self.journal.view(op_id)

        final = OpStatus.PARTIAL if failed_vms or failed_steps else OpStatus.SUCCEEDED
        outcome: dict[str, Any] = {"failed_vms": sorted(failed_vms)}
        if failed_steps:
            outcome["failed_steps"] = sorted(failed_steps)
        self.journal.set_status(op_id, final, result=outcome)
        log.info("operation finished", operation=op_id, status=final.value, **outcome)
        return self.journal.view(op_id)

    @staticmethod
    def check_arguments(rows: Sequence[StepRow]) -> None:
        """Every journalled step still to run has arguments this agent reads (raises
        :class:`~agent.engine.steps.IncompatibleStep` naming the first that does not). Their
        actions are known: the journal matched the steps this agent builds."""
        for row in rows:
            if row.status not in (StepStatus.SUCCEEDED.value, StepStatus.SKIPPED.value):
                parse_args(ACTIONS[row.action].args, row.spec, row.spec_version, step=row.name)

    @staticmethod
    def _replayed_failures(rows: list[StepRow]) -> set[str]:
        failed: set[str] = set()
        for r in rows:
            if r.status in (StepStatus.SUCCEEDED.value, StepStatus.FAILED.value) and r.outcome:
                failed |= {it["vm"] for it in r.outcome.get("items", []) if it.get("error") and it.get("vm")}
        # A failed step is re-run when the operation is started again: its VMs get another chance.
        failed -= {it["vm"] for r in rows if r.status == StepStatus.FAILED.value
                   for it in (r.outcome or {}).get("items", []) if it.get("vm")}
        return failed

    def _run_step(self, ctx: ActionContext, row: StepRow) -> tuple[StepStatus, StepResult]:
        with structlog.contextvars.bound_contextvars(operation=ctx.op_id, step=row.name):
            log.info("step started", action=row.action, target=row.target)
            started = time.monotonic()
            status, result = self._step(ctx, row)
            log.info("step finished", action=row.action, status=status.value,
                     duration_ms=round((time.monotonic() - started) * 1000, 1),
                     items=len(result.items), failed=sum(1 for i in result.items if i.error))
            return status, result

    def _step(self, ctx: ActionContext, row: StepRow) -> tuple[StepStatus, StepResult]:
        # Every outside change the step makes is audited by its ports, before its outcome.
        audit = StepAudit(self.journal.store, ctx.op_id, ctx.owner, row.ordinal, row.name)
        ctx = replace(ctx, retries=[], ports=audited_ports(ctx.ports, audit))
        args: StepArgs | None = None
        with self.limits.slot(row.target):
            self.journal.mark_intent(row.id)
            self.crash_hook("intent", row.name)
            try:
                act = ACTIONS.get(row.action)
                if act is None:
                    raise PermanentError(f"step {row.name}: unknown action {row.action}", step=row.name)
                args = parse_args(act.args, self.journal.step_spec(row.id), row.spec_version, step=row.name)
                result = act.run(ctx, args)
            except Exception as exc:
                if not isinstance(exc, AgentError):
                    log.exception("step crashed", operation=ctx.op_id, step=row.name)
                    exc = PermanentError(f"internal error in step {row.name}: {exc!r}", step=row.name)
                    exc.code = "internal_error"  # type: ignore[misc]
                err = error_json(exc)
                items = [ItemOutcome(key=it.key, vm=it.vm, error=err)
                         for it in (args.items if args is not None else ())] or [ItemOutcome(key=row.name, error=err)]
                result = StepResult(items=items, info={"call_error": err})
                log.error("step failed", operation=ctx.op_id, step=row.name, code=exc.code, error=exc.message)
            if ctx.retries:
                result.info.setdefault("retries", list(ctx.retries))
            if result.waiting is not None:
                status = StepStatus.WAITING
            elif any(i.error for i in result.items):
                status = StepStatus.FAILED
            else:
                status = StepStatus.SUCCEEDED
            self.crash_hook("acted", row.name)
            self.journal.record_outcome(row.id, status, result)
            self.crash_hook("outcome", row.name)
        return status, result

    def _cancel(self, op_id: str, op: OperationRow) -> OperationView:
        from agent.engine.compensation import compensate

        info = compensate(self, self.journal.operation(op_id))  # with its plan: the undo follows it
        self.journal.set_status(op_id, OpStatus.CANCELLED, result={"compensation": info})
        log.info("operation cancelled", operation=op_id)
        return self.journal.view(op_id)


def stage_of(row: StepRow) -> int:
    """The stage of a journalled step, wherever its schema version keeps it."""
    if row.stage is not None:
        return row.stage
    stage, _ = upgrade(row.spec, row.spec_version)
    return int(stage if stage is not None else row.ordinal)

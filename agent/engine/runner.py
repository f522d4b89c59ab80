"""Runs a journalled operation: each step as soon as the steps it needs have finished.

The runner owns no state of its own: everything it knows comes from the journal, so a runner
started on a store left by a killed agent continues exactly where the dead one stopped.
"""

from __future__ import annotations

import contextvars
import heapq
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from enum import StrEnum
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


WAKE_S = 0.25
"""How often the runner looks up from the steps in hand when none finishes."""


class Runner:
    def __init__(self, journal: Journal, config: AgentConfig, ports: Ports, limits: HostLimits | None = None,
                 sleep: Callable[[float], None] = time.sleep, on_progress: Callable[[str], None] | None = None,
                 crash_hook: Callable[[str, str], None] | None = None) -> None:
        self.journal = journal
        self.config = config
        self.ports = ports
        self.stopping = threading.Event()
        """Set when the agent stops: operations start no new step, finish the ones begun, and
        end interrupted."""
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
        self.journal.set_status(op_id, OpStatus.RUNNING)
        rows = self.journal.steps(op_id, lean=True)  # each step's spec is read when it runs
        log.info("operation running", operation=op_id, kind=op.kind, steps=len(rows))
        run = _Schedule(rows, ErrorPolicy(op.error_policy), self._replayed_failures(rows))
        workers = max(1, self.config.policies.concurrency.global_limit)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=op_id) as pool:
            running: dict[Future[tuple[StepStatus, StepResult]], StepRow] = {}
            crashed: BaseException | None = None
            while True:
                if run.halt is None and run.pending:
                    if self.journal.cancel_requested(op_id):
                        run.halt = _Halt.CANCEL
                    elif self.stopping.is_set():
                        run.halt = _Halt.STOPPING
                if run.halt is None and crashed is None:
                    batch = run.take(set(running.values()), self.limits.per_host, workers - len(running))
                    if batch:
                        self.journal.mark_intents([r.id for r in batch])
                    for row in batch:
                        ctx = ActionContext(op=op, journal=self.journal, config=self.config, ports=self.ports,
                                            retry=self.config.policies.retry, failed_vms=set(run.failed_vms),
                                            sleep=self.sleep)
                        # A worker thread does not inherit the submitter's context variables: each
                        # step runs in a copy of this one, so its log lines name the operation.
                        running[pool.submit(contextvars.copy_context().run, self._run_step, ctx, row)] = row
                if not running:
                    break
                # Bounded, so that a cancel or a stop is seen while a long step runs, and an
                # interruption sent to this thread (agent.cli.stopping) lands at once: pending while
                # it blocks, it slows every thread of the process.
                finished, _ = wait(running, timeout=WAKE_S, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: (stage_of(running[f]), running[f].ordinal)):
                    row = running.pop(future)
                    try:
                        status, result = future.result()
                    except BaseException as exc:  # a kill, a lost store: the others finish, then it is raised
                        crashed = crashed or exc
                        continue
                    run.finished(row, status, result)
                    self.on_progress(op_id)
            if crashed is not None:
                raise crashed
        return self._conclude(op_id, op, run)

    def _conclude(self, op_id: str, op: OperationRow, run: _Schedule) -> OperationView:
        failed_vms = sorted(run.failed_vms)
        if run.halt == _Halt.CANCEL:
            return self._cancel(op_id, op)
        if run.halt == _Halt.STOPPING:
            # A graceful stop of the agent: the steps begun are finished and journalled, the
            # rest wait for the next leader, which resumes interrupted operations.
            log.info("operation interrupted by the agent's stop", operation=op_id, pending=len(run.pending))
            self.journal.set_status(op_id, OpStatus.INTERRUPTED)
            return self.journal.view(op_id)
        if run.halt == _Halt.WAITING:
            self.journal.set_status(op_id, OpStatus.WAITING)
            log.info("operation waiting for an operator", operation=op_id, step=run.waiting_step,
                     instruction=run.waiting_for)
            return self.journal.view(op_id)
        if run.halt == _Halt.FAILED:
            self.journal.set_status(op_id, OpStatus.FAILED, result={"failed_vms": failed_vms})
            log.error("operation stopped at the first error", operation=op_id, failed_vms=failed_vms)
            return self.journal.view(op_id)
        if run.pending:
            raise RuntimeError(f"operation {op_id}: steps {sorted(r.name for r in run.pending.values())} "
                               "wait for steps that can never finish")
        final = OpStatus.PARTIAL if run.failed_vms or run.failed_steps else OpStatus.SUCCEEDED
        outcome: dict[str, Any] = {"failed_vms": failed_vms}
        if run.failed_steps:
            outcome["failed_steps"] = sorted(run.failed_steps)
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
        # The runner journalled the intent before handing the step over (with the others that
        # started with it): the slot only decides when the host is talked to.
        with self.limits.slot(row.target):
            self.crash_hook("intent", row.name)
            # The store failing under this read is not the step's failure: it is retried as a
            # call is, and if the store stays away the operation stops for the resume path.
            spec = ctx.call("read the step's arguments", lambda: self.journal.step_spec(row.id))
            try:
                act = ACTIONS.get(row.action)
                if act is None:
                    raise PermanentError(f"step {row.name}: unknown action {row.action}", step=row.name)
                args = parse_args(act.args, spec, row.spec_version, step=row.name)
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


class _Halt(StrEnum):
    CANCEL = "cancel"
    STOPPING = "stopping"
    WAITING = "waiting"
    FAILED = "failed"


_DONE = (StepStatus.SUCCEEDED.value, StepStatus.SKIPPED.value)


class _Schedule:
    """Which journalled steps may start: a step is ready once every step it needs has finished
    -- succeeded or skipped, or failed when the policy carries on (its actions then skip the
    failed VMs' items). A step without journalled ``needs`` needs every step of the previous
    stage: the barrier of agents before revision 0007. Ready steps start lowest (stage, ordinal)
    first, and never more than ``per_host`` of this operation's at one target, so a step taken
    ahead of its stage never holds a host slot the critical path is about to want."""

    def __init__(self, rows: Sequence[StepRow], policy: ErrorPolicy, failed_vms: set[str]) -> None:
        self.policy = policy
        self.failed_vms = failed_vms
        # A step that failed without naming a VM (a test network VMM would not delete, a route
        # the router refused) leaves the operation partly done just as a failed VM does.
        self.failed_steps = {r.name for r in rows if r.status == StepStatus.FAILED.value}
        self.halt: _Halt | None = None
        self.waiting_step: str | None = None
        self.waiting_for: str | None = None
        done = {r.ordinal for r in rows if r.status in _DONE}
        self.pending = {r.ordinal: r for r in rows if r.status not in _DONE}
        # The barrier waits for the nearest earlier stage with a step still to run: the stages
        # between are done, and that stage's steps wait in turn for theirs -- so a step journalled
        # without needs starts after every earlier step, as the stage-by-stage runner ran it.
        open_stages: dict[int, set[int]] = defaultdict(set)
        for o, r in self.pending.items():
            open_stages[stage_of(r)].add(o)
        order = sorted(open_stages)
        barrier = {stage: open_stages[before] for before, stage in zip(order, order[1:], strict=False)}
        self._blocked: dict[int, set[int]] = {}
        self._dependents: dict[int, list[int]] = defaultdict(list)
        self._ready: list[tuple[int, int]] = []
        for o, r in self.pending.items():
            stage = stage_of(r)
            needs = set(r.needs) if r.needs is not None else barrier.get(stage, set())
            self._blocked[o] = needs - done
            for n in self._blocked[o]:
                self._dependents[n].append(o)
            if not self._blocked[o]:
                heapq.heappush(self._ready, (stage, o))

    def take(self, running: set[StepRow], per_host: int, room: int) -> list[StepRow]:
        """The ready steps to start now, best first, within the per-target and overall room."""
        busy = Counter(r.target or "" for r in running)
        out: list[StepRow] = []
        held: list[tuple[int, int]] = []
        while self._ready and len(out) < room:
            key = heapq.heappop(self._ready)
            row = self.pending[key[1]]
            target = row.target or ""
            if busy[target] >= per_host:
                held.append(key)
                continue
            busy[target] += 1
            out.append(row)
        for key in held:
            heapq.heappush(self._ready, key)
        for row in out:
            del self.pending[row.ordinal]
        return out

    def finished(self, row: StepRow, status: StepStatus, result: StepResult) -> None:
        """A step's outcome is journalled: what it releases, or why the operation stops."""
        for item in result.items:
            if item.error and item.vm:
                self.failed_vms.add(item.vm)
        if status == StepStatus.WAITING:
            if self.halt is None:
                self.halt, self.waiting_step, self.waiting_for = _Halt.WAITING, row.name, result.waiting
            return
        if status == StepStatus.FAILED:
            self.failed_steps.add(row.name)
            if self.policy == ErrorPolicy.STOP_AT_FIRST_ERROR:
                self.halt = self.halt or _Halt.FAILED
                return
        else:
            self.failed_steps.discard(row.name)
        for o in self._dependents.pop(row.ordinal, ()):
            blocked = self._blocked[o]
            blocked.discard(row.ordinal)
            if not blocked:
                heapq.heappush(self._ready, (stage_of(self.pending[o]), o))


def stage_of(row: StepRow) -> int:
    """The stage of a journalled step, wherever its schema version keeps it."""
    if row.stage is not None:
        return row.stage
    stage, _ = upgrade(row.spec, row.spec_version)
    return int(stage if stage is not None else row.ordinal)

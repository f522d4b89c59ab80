"""APScheduler jobs: the forced cleanup of test failovers past their maximum age, and the
warning (``test_failover.expiring``, :mod:`agent.events`) that comes before it; the periodic
preflight (:mod:`agent.preflight_job`).

The job store lives in the agent's own database, so a scheduled cleanup survives restarts; a
job that fell due while the agent was down runs right after start-up. That needs
``misfire_grace_time=None`` ("run however late"): APScheduler's default of one second silently
*drops* a one-shot job that is late, which would leave a forgotten test failover running
forever (cmdlets-and-libraries.md section 7, observed with APScheduler 3.11).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED

from agent.engine.expiry import DEFER_S, CleanupDeferred, retry_delay_s
from agent.engine.model import OperationKind, OpStatus
from agent.errors import AgentError
from agent.events import emit_safely, test_failover_expiring

if TYPE_CHECKING:
    from agent.engine.service import Engine
    from agent.engine.store import Store
    from agent.preflight_job import PreflightReport

log = structlog.get_logger("agent.scheduler")

_ENGINE: Engine | None = None
"""The engine the jobs of this process act on (one agent per process)."""

WARNING = "test-expiry-warning:"
"""The id prefix of expiry warnings (not a prefix of the expiries' own ``test-expiry:``)."""

_JOB = threading.local()
"""Which test failover the expiry job running in this thread is about."""


def run_expiry(op_id: str, attempt: int = 0) -> None:
    """Job function, referenced by name in the job store (so it must stay importable here).

    ``attempt`` counts forced cleanups that failed so far. One that cannot run yet (an operation
    of the plan is running) or that fails is scheduled again -- a one-shot job is gone from the
    job store once it fires, so without this a failed forced cleanup was never tried again."""
    if _ENGINE is None:
        log.error("test failover expiry fell due with no engine running", operation=op_id)
        return
    engine = _ENGINE
    log.warning("test failover exceeded its maximum age: cleaning up by force", operation=op_id, attempt=attempt)
    _JOB.operation = op_id
    try:
        view = engine.expire_test_failover(op_id)
    except CleanupDeferred as exc:
        log.info("forced cleanup waits for a running operation", operation=op_id,
                 waiting_for=exc.fields.get("waiting_for"))
        _retry(engine, op_id, attempt, DEFER_S, failed=False)
        return
    except AgentError as exc:
        log.error("forced cleanup failed", operation=op_id, attempt=attempt + 1, error=exc.to_dict())
        engine.store.audit(actor="scheduler", action="test_failover.force_cleanup_failed", operation_id=op_id,
                           details={"attempt": attempt + 1, "error": exc.to_dict()})
        _retry(engine, op_id, attempt + 1, retry_delay_s(attempt + 1), failed=True)
        return
    finally:
        _JOB.operation = None
    if view is not None and view.status != "succeeded":
        log.error("forced cleanup did not finish", operation=op_id, cleanup=view.id, status=view.status,
                  attempt=attempt + 1)
        _retry(engine, op_id, attempt + 1, retry_delay_s(attempt + 1), failed=True)


def run_expiry_warning(op_id: str, expires_at: str) -> None:
    """Job function: tell that test failover ``op_id`` will be cleaned up by force at
    ``expires_at`` -- unless it is cleaned up already, or that time has passed (a warning that
    fell due while the agent was down comes too late to be one)."""
    engine = _ENGINE
    if engine is None or engine.events is None:
        log.info("test failover expiry warning fell due with nothing to send it", operation=op_id)
        return
    expires = datetime.fromisoformat(expires_at)
    try:
        op = engine.journal.operation(op_id)
        cleaned = any(o.kind == OperationKind.CLEANUP_TEST.value and o.parent_id == op_id
                      and o.status == OpStatus.SUCCEEDED.value for o in engine.journal.operations(limit=10000))
    except AgentError as exc:
        log.error("test failover expiry warning not sent", operation=op_id, error=exc.to_dict())
        return
    if cleaned or datetime.now(UTC) >= expires:
        return
    emit_safely(engine.events, test_failover_expiring(
        operation_id=op_id, plan=op.plan_name, status=op.status, expires_at=expires,
        max_age_s=engine.config.policies.test_failover_max_age.total_seconds()))


def _retry(engine: Engine, op_id: str, attempt: int, delay_s: float, *, failed: bool) -> None:
    if engine.scheduler is None:
        return
    when = datetime.now(UTC) + timedelta(seconds=delay_s)
    engine.scheduler.schedule_expiry(op_id, when, attempt=attempt, retry=True)
    if failed:
        engine.store.audit(actor="scheduler", action="test_failover.force_cleanup_scheduled", operation_id=op_id,
                           details={"attempt": attempt + 1, "due": when.isoformat(), "delay_s": delay_s})


PREFLIGHT_JOB = "preflight"

_ON_PROBLEMS: Callable[[PreflightReport], None] | None = None
"""Who hears of a preflight report with problems (the lead's event sink); not in the job store."""


def run_preflight_job() -> None:
    """Job function of the periodic preflight, referenced by name in the job store."""
    if _ENGINE is None:
        log.error("the preflight fell due with no engine running")
        return
    from agent.preflight_job import run_and_record

    try:
        run_and_record(_ENGINE, on_problems=_ON_PROBLEMS)
    except AgentError as exc:  # the store itself: the next run tries again
        log.error("preflight failed", error=exc.to_dict())


class _BackgroundScheduler(BackgroundScheduler):
    def _process_jobs(self):
        # On shutdown APScheduler 3.11 wakes its thread once more and processes the due jobs
        # after the executors are gone: the submission fails, tracebacks go to stderr, and the
        # one-shot job may be removed unrun. A due expiry must wait for the next start instead.
        if self.state == STATE_STOPPED:
            return None
        return super()._process_jobs()


class Scheduler:
    def __init__(self, store: Store) -> None:
        self._scheduler = _BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=store.engine, tablename="apscheduler_jobs")},
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
            timezone="UTC",
        )

    def start(self, engine: Engine, *, paused: bool = False) -> None:
        """``paused``: keep the job store (expiries can be scheduled, cancelled and listed) but
        run no job: a command line runs the expiries already due itself, in the foreground,
        rather than beside its own operation on the same VMs."""
        global _ENGINE
        _ENGINE = engine
        self._scheduler.start(paused=paused)

    def schedule_expiry(self, op_id: str, when: datetime, *, attempt: int = 0, retry: bool = False) -> None:
        # A retry gets its own job id: it is added from inside the job that fired, while
        # APScheduler may still be removing that one-shot job by its id.
        job_id = f"test-expiry:{op_id}:{when.timestamp():.6f}" if retry else f"test-expiry:{op_id}"
        self._scheduler.add_job("agent.scheduler:run_expiry", trigger="date", run_date=when, args=[op_id, attempt],
                                id=job_id, replace_existing=True, misfire_grace_time=None)
        log.info("test failover cleanup scheduled", operation=op_id, due=when.isoformat(), attempt=attempt)

    def schedule_expiry_warning(self, op_id: str, when: datetime, expires: datetime) -> None:
        self._scheduler.add_job("agent.scheduler:run_expiry_warning", trigger="date", run_date=when,
                                args=[op_id, expires.isoformat()], id=f"{WARNING}{op_id}", replace_existing=True,
                                misfire_grace_time=None)
        log.info("test failover expiry warning scheduled", operation=op_id, due=when.isoformat())

    def cancel_expiry(self, op_id: str) -> None:
        if getattr(_JOB, "operation", None) == op_id:
            # Called by that very job (its cleanup succeeded): a one-shot job is out of the job
            # store once it fires, and asking for it from the job's thread deadlocks against a
            # shutdown that holds the job stores while it waits for this thread to end.
            return
        for job in self._scheduler.get_jobs():
            if job.id in (f"test-expiry:{op_id}", f"{WARNING}{op_id}") or job.id.startswith(f"test-expiry:{op_id}:"):
                with contextlib.suppress(JobLookupError):
                    self._scheduler.remove_job(job.id)

    def schedule_preflight(self, interval: timedelta, *,
                           on_problems: Callable[[PreflightReport], None] | None = None,
                           first: datetime | None = None) -> None:
        """Run the preflight every ``interval`` (0: never, and a job left by an earlier config is
        removed), first at ``first`` (default: now, so a report exists soon after a start).
        ``on_problems`` hears of each report that has problems."""
        global _ON_PROBLEMS
        _ON_PROBLEMS = on_problems
        if interval <= timedelta(0):
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(PREFLIGHT_JOB)
            return
        self._scheduler.add_job("agent.scheduler:run_preflight_job", trigger="interval",
                                seconds=interval.total_seconds(), id=PREFLIGHT_JOB, replace_existing=True,
                                next_run_time=first or datetime.now(UTC))
        log.info("preflight scheduled", every_s=interval.total_seconds())

    def due(self) -> list[tuple[str, datetime]]:
        return [(j.args[0], j.next_run_time) for j in self._scheduler.get_jobs() if j.id.startswith("test-expiry:")]

    def shutdown(self) -> None:
        global _ENGINE, _ON_PROBLEMS
        self._scheduler.shutdown(wait=True)
        _ENGINE, _ON_PROBLEMS = None, None

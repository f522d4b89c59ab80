"""APScheduler jobs: the forced cleanup of test failovers past their maximum age.

The job store lives in the agent's own database, so a scheduled cleanup survives restarts; a
job that fell due while the agent was down runs right after start-up. That needs
``misfire_grace_time=None`` ("run however late"): APScheduler's default of one second silently
*drops* a one-shot job that is late, which would leave a forgotten test failover running
forever (cmdlets-and-libraries.md section 7, observed with APScheduler 3.11).
"""

from __future__ import annotations

import contextlib
import threading
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED

if TYPE_CHECKING:
    from agent.engine.service import Engine
    from agent.engine.store import Store

log = structlog.get_logger("agent.scheduler")

_ENGINE: Engine | None = None
"""The engine the jobs of this process act on (one agent per process)."""

_JOB = threading.local()
"""Which test failover the expiry job running in this thread is about."""


def run_expiry(op_id: str) -> None:
    """Job function, referenced by name in the job store (so it must stay importable here)."""
    if _ENGINE is None:
        log.error("test failover expiry fell due with no engine running", operation=op_id)
        return
    log.warning("test failover exceeded its maximum age: cleaning up by force", operation=op_id)
    _JOB.operation = op_id
    try:
        _ENGINE.expire_test_failover(op_id)
    finally:
        _JOB.operation = None


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

    def schedule_expiry(self, op_id: str, when: datetime) -> None:
        self._scheduler.add_job("agent.scheduler:run_expiry", trigger="date", run_date=when, args=[op_id],
                                id=f"test-expiry:{op_id}", replace_existing=True, misfire_grace_time=None)
        log.info("test failover cleanup scheduled", operation=op_id, due=when.isoformat())

    def cancel_expiry(self, op_id: str) -> None:
        if getattr(_JOB, "operation", None) == op_id:
            # Called by that very job (its cleanup succeeded): a one-shot job is out of the job
            # store once it fires, and asking for it from the job's thread deadlocks against a
            # shutdown that holds the job stores while it waits for this thread to end.
            return
        with contextlib.suppress(JobLookupError):
            self._scheduler.remove_job(f"test-expiry:{op_id}")

    def due(self) -> list[tuple[str, datetime]]:
        return [(j.args[0], j.next_run_time) for j in self._scheduler.get_jobs() if j.id.startswith("test-expiry:")]

    def shutdown(self) -> None:
        global _ENGINE
        self._scheduler.shutdown(wait=True)
        _ENGINE = None

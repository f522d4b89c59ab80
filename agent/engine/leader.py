"""The long-running agent's role on a store: leader (executes its operations) or standby.

:class:`Leader` loops trying to take the store's lease. As standby it waits, saying who leads.
On becoming leader it resumes every unfinished operation, each on its own
(``Engine.resume_unfinished``), and starts the scheduler; losing the lease (a refused renewal
or journal write) stops both and it goes back to standby. :meth:`Leader.stop` (SIGTERM,
SIGINT) ends the loop and releases the lease, so a standby need not wait for its expiry.

Everything it does is in-process and driven by one thread (:meth:`run`), so tests run a leader
and a standby side by side on one store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import structlog

from agent.engine.lease import Holder, Lease, LeaseLost, Renewer
from agent.engine.store import StoreUnavailable
from agent.errors import AgentError

if TYPE_CHECKING:
    from agent.engine.service import Engine
    from agent.scheduler import Scheduler

log = structlog.get_logger("agent.leader")

Role = Literal["starting", "standby", "leader", "stopped"]


class Leader:
    """One agent process's bid to execute a store's operations (see the module docstring).

    ``say`` gets the lines an operator watching the console should read (role changes, who
    leads); ``scheduler`` (optional) is made per term as leader, since a stopped APScheduler
    cannot start again."""

    def __init__(self, engine: Engine, lease: Lease, *, scheduler: Callable[[], Scheduler] | None = None,
                 say: Callable[[str], None] = print, poll_s: float | None = None,
                 drain: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.lease = lease
        self.new_scheduler = scheduler
        self.say = say
        self.drain = drain
        """Called at the end of each term as leader, lease still held: the served agent stops
        the operations its API started there (each starts no new step and ends once the steps
        in hand are journalled)."""
        self.poll_s = poll_s if poll_s is not None else min(1.0, lease.lease_s / 5)
        self.role: Role = "starting"
        self.terms = 0
        self.executing = False
        """True while operations are being executed (resumed): what a stop must interrupt."""
        """How many times this process became leader."""
        self.accepting = False
        """True while leader and past resuming what an earlier leader left: new operations
        (the API's) may start; before that, one could be resumed and started twice."""
        self.last_holder: str | None = None
        """Who holds the lease, as last seen by this standby."""
        self._stop = threading.Event()
        self._last_holder: tuple[str | None, int] | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to end (it releases the lease); safe from a signal handler."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Standby or lead until :meth:`stop`."""
        try:
            while not self._stop.is_set():
                try:
                    holder = self.lease.acquire()
                except StoreUnavailable as exc:
                    self.say(f"standby: the store cannot be used ({exc.message}); trying again")
                    self._stop.wait(self.poll_s)
                    continue
                if not self.lease.holds:
                    self._standby(holder)
                    self._stop.wait(self.poll_s)
                    continue
                self._lead()
        finally:
            self.lease.release()
            self.role = "stopped"
            self.say("stopped: the lease is released")

    def _standby(self, holder: Holder) -> None:
        key = (holder.holder, holder.token)
        if self.role != "standby" or key != self._last_holder:
            self.say(f"standby: the store's operations are run by {holder.describe()}; "
                     "this agent takes over if that one stops renewing its lease")
        self.role = "standby"
        self._last_holder = key
        self.last_holder = holder.describe()

    def _lead(self) -> None:
        self.role = "leader"
        self.terms += 1
        self.say(f"leader: this agent (pid {self.lease.pid} on host {self.lease.host}) runs the store's "
                 f"operations (lease token {self.lease.token}, renewed every {self.lease.lease_s / 3:g} s)")
        renewer = Renewer(self.lease).start()
        scheduler = None
        try:
            failed: list[tuple[str, AgentError]] = []
            self.executing = True
            try:
                views = self.engine.resume_unfinished(on_failure=lambda op_id, exc: failed.append((op_id, exc)))
            finally:
                self.executing = False
            for view in views:
                self.say(f"leader: {view.id} {view.kind} resumed: {view.status}")
            for op_id, exc in failed:
                self.say(f"leader: {op_id} not resumed: {exc.message}")
            if self.new_scheduler is not None and self.lease.holds:
                made = self.new_scheduler()
                made.start(self.engine)
                scheduler = made
            self.accepting = self.lease.holds
            while not self._stop.is_set() and self.lease.holds:
                self.lease.lost.wait(self.poll_s)
            if not self.lease.holds:
                raise LeaseLost("the lease was lost")
        except LeaseLost as exc:
            self.say(f"standby: the lease was lost ({exc.message}); stopped executing, nothing more written")
            self.role = "standby"
        except StoreUnavailable as exc:
            self.say(f"standby: the store cannot be used ({exc.message}); giving the lease up")
            self.role = "standby"
        finally:
            self.accepting = False
            if self.drain is not None:
                self.drain()
            if scheduler is not None:
                scheduler.shutdown()
            renewer.stop()
            if self.role == "standby":
                self.lease.release()

"""``failover-agent serve``: the long-running agent on a store, leader or standby.

Several may run on one store (PostgreSQL, for a site that outlives the machine the agent runs
on): one leads -- it resumes the operations left unfinished and runs the scheduler -- and the
others wait to take over when its lease is not renewed. The HTTP API joins this command later.

:func:`run_served` is the whole of it, for this command and for the Windows service
(:mod:`agent.winservice`), which has no signals: it stops it through a :class:`StopRequest`,
the way SIGTERM does here.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from rich.markup import escape

from agent.cli.app import EXIT_CODES_HELP, ConfigOption, app, err, read_config, reporting
from agent.cli.vocabulary import current_time, utc_time

if TYPE_CHECKING:
    from agent.engine.leader import Leader


@app.command(
    "serve",
    help="Run the agent: take the store's lease and execute its operations (resume the ones left "
    "unfinished, run the scheduled cleanups of test failovers), or wait as a standby while another "
    "agent holds it and take over when that one stops renewing it (store.lease_s). Says which role it "
    "has. SIGTERM or Ctrl-C stops it and releases the lease; an operation cut off is resumed from its "
    "journal by the next leader.\n\n" + EXIT_CODES_HELP,
)
def serve(config: ConfigOption = None) -> None:
    with reporting():
        run_served(config)


def _say(text: str) -> None:
    err.print(f"{utc_time(current_time())} {escape(text)}")


class StopRequest:
    """Stops a :func:`run_served` from another thread, as SIGTERM stops the command: the leader
    ends its loop and, if it is executing, the step in hand is interrupted (it stays journalled
    as started and the next leader runs it again). Safe to call before the leader exists (the
    config still loading): it then never starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested = threading.Event()
        self._leader: Leader | None = None
        self._thread: int | None = None
        self._say: Callable[[str], None] = _say

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def stop(self, why: str = "stop requested") -> None:
        with self._lock:
            self._requested.set()
            if self._leader is not None:
                thread = self._thread
                _stop(self._leader, why, self._say, interrupt=lambda: _interrupt(thread))

    @contextmanager
    def serving(self, leader: Leader, say: Callable[[str], None]) -> Iterator[None]:
        """While the calling thread runs ``leader``: a stop reaches it. An interruption that
        arrives here ends the block quietly, and one still pending on the way out is dropped, so
        it cannot land in what the caller does next."""
        with self._lock:
            self._leader, self._thread, self._say = leader, threading.get_ident(), say
            if self._requested.is_set():
                leader.stop()
        try:
            try:
                yield
            except KeyboardInterrupt:
                if not self._requested.is_set():
                    raise
        finally:
            with self._lock:
                self._leader = None
                _interrupt(self._thread, clear=True)


def _interrupt(thread: int | None, *, clear: bool = False) -> None:
    """Raise KeyboardInterrupt in ``thread`` at its next bytecode (what a signal does to the main
    thread; a blocking call it is in ends first), or drop one still pending (``clear``)."""
    if thread is not None:
        exc = None if clear else ctypes.py_object(KeyboardInterrupt)
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), exc)


def _stop(leader: Leader, why: str, say: Callable[[str], None], *, interrupt: Callable[[], None]) -> None:
    """The one way the agent is stopped, by a signal or a service stop. Idle, the leader ends within
    a poll; executing, the step in hand is interrupted once (a second stop does not cut into the
    way out, which releases the lease)."""
    first = not leader.stopping
    leader.stop()
    say(f"{why}: stopping")
    if leader.executing and first:
        interrupt()


def run_served(config: Path | None, stop: StopRequest | None = None, *,
               say: Callable[[str], None] = _say) -> None:
    """Load ``config``, open its store and sites and be leader or standby on the store until
    stopped (SIGTERM or SIGINT when called on the main thread; ``stop`` from any thread). The
    agent's errors (a bad config, a store that cannot be opened) are raised for the caller to
    report; on the way out the lease is released and the store closed."""

    from agent.cli.session import _open_store
    from agent.cli.sites import open_sites
    from agent.engine.leader import Leader
    from agent.engine.lease import Lease
    from agent.engine.service import Engine
    from agent.scheduler import Scheduler

    stop = stop if stop is not None else StopRequest()
    loaded = read_config(config)
    store = _open_store(loaded)
    try:
        with open_sites(loaded, read_inventory=False) as sites:
            engine = Engine(loaded.config, sites.ports, store)
            lease = Lease(store, lease_s=loaded.config.store.lease_s)

            def scheduler() -> Scheduler:
                made = Scheduler(store)
                engine.scheduler = made
                return made

            leader = Leader(engine, lease, scheduler=scheduler, say=say)
            with stop.serving(leader, say), _stopped_by_signals(leader, say):
                leader.run()
    finally:
        store.close()


@contextmanager
def _stopped_by_signals(leader: Leader, say: Callable[[str], None] = _say) -> Iterator[None]:
    """SIGTERM and SIGINT end the loop. Idle, it ends within a poll; executing, the signal interrupts
    the step in hand, which stays journalled as started (the next leader runs it again: every
    step is idempotent), and the lease is released on the way out."""

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        def interrupt() -> None:
            raise KeyboardInterrupt

        _stop(leader, signal.Signals(signum).name, say, interrupt=interrupt)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except KeyboardInterrupt:
        pass
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

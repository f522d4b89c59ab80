"""``failover-agent serve``: the long-running agent on a store, leader or standby.

Several may run on one store (PostgreSQL, for a site that outlives the machine the agent runs
on): one leads -- it resumes the operations left unfinished and runs the scheduler -- and the
others wait to take over when its lease is not renewed. The HTTP API joins this command later.

:func:`run_served` is the whole of it, for this command and for the Windows service
(:mod:`agent.winservice`), which has no signals: it stops it through a
:class:`agent.cli.stopping.StopRequest`, the way SIGTERM does here.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from rich.markup import escape

from agent.cli.app import EXIT_CODES_HELP, ConfigOption, app, err, read_config, reporting
from agent.cli.stopping import StopRequest, stop_leader
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

        stop_leader(leader, signal.Signals(signum).name, say, interrupt=interrupt)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except KeyboardInterrupt:
        pass
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

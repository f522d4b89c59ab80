"""``failover-agent serve``: the long-running agent on a store, leader or standby.

Several may run on one store (PostgreSQL, for a site that outlives the machine the agent runs
on): one leads -- it resumes the operations left unfinished and runs the scheduler -- and the
others wait to take over when its lease is not renewed. The HTTP API joins this command later.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

from rich.markup import escape

from agent.cli.app import EXIT_CODES_HELP, ConfigOption, app, err, read_config, reporting
from agent.cli.vocabulary import current_time, utc_time

if TYPE_CHECKING:
    from agent.engine.leader import Leader


NOTIFY_DRAIN_S = 10.0
"""At shutdown, how long notifications still queued may take to go out."""


@app.command(
    "serve",
    help="Run the agent: take the store's lease and execute its operations (resume the ones left "
    "unfinished, run the scheduled cleanups of test failovers), or wait as a standby while another "
    "agent holds it and take over when that one stops renewing it (store.lease_s). Says which role it "
    "has. SIGTERM or Ctrl-C stops it and releases the lease; an operation cut off is resumed from its "
    "journal by the next leader.\n\n" + EXIT_CODES_HELP,
)
def serve(config: ConfigOption = None) -> None:
    from agent.cli.session import _open_store
    from agent.cli.sites import open_sites
    from agent.engine.leader import Leader
    from agent.engine.lease import Lease
    from agent.engine.service import Engine
    from agent.notify import Notifier
    from agent.scheduler import Scheduler

    with reporting():
        loaded = read_config(config)
        store = _open_store(loaded)
        try:
            with open_sites(loaded, read_inventory=False) as sites:
                notifier = Notifier(loaded.config.notifications, agent=loaded.config.agent.owner_id)
                engine = Engine(loaded.config, sites.ports, store, events=notifier)
                lease = Lease(store, lease_s=loaded.config.store.lease_s)

                def scheduler() -> Scheduler:
                    made = Scheduler(store)
                    engine.scheduler = made
                    return made

                leader = Leader(engine, lease, scheduler=scheduler, say=_say)
                try:
                    with _stopped_by_signals(leader):
                        leader.run()
                finally:
                    notifier.close(timeout_s=NOTIFY_DRAIN_S)
        finally:
            store.close()


def _say(text: str) -> None:
    err.print(f"{utc_time(current_time())} {escape(text)}")


@contextmanager
def _stopped_by_signals(leader: Leader) -> Iterator[None]:
    """SIGTERM and SIGINT end the loop. Idle, it ends within a poll; executing, the signal interrupts
    the step in hand, which stays journalled as started (the next leader runs it again: every
    step is idempotent), and the lease is released on the way out."""

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        first = not leader.stopping
        leader.stop()
        _say(f"{signal.Signals(signum).name}: stopping")
        if leader.executing and first:
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except KeyboardInterrupt:
        pass
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

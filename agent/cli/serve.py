"""``failover-agent serve``: the long-running agent on a store, leader or standby, with its API.

Several may run on one store (PostgreSQL, for a site that outlives the machine the agent runs
on): one leads -- it resumes the operations left unfinished, runs the scheduler and executes what
API callers start -- and the others wait to take over when its lease is not renewed, answering
reads meanwhile. The HTTP API (``agent.api``) runs under uvicorn in a thread of this process;
the leader loop keeps the calling thread, where signals arrive.

:func:`run_served` is the whole of it, for this command and for the Windows service
(:mod:`agent.winservice`), which has no signals: it stops it through a
:class:`agent.cli.stopping.StopRequest`, the way SIGTERM does here.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from agent.cli.app import EXIT_CODES_HELP, ConfigOption, app, console_log_level, err, read_config, reporting
from agent.cli.stopping import StopRequest, stop_leader
from agent.cli.vocabulary import current_time, utc_time
from agent.configapi import is_loopback
from agent.errors import RefusedError

if TYPE_CHECKING:
    import uvicorn

    from agent.api.auth import Tokens
    from agent.api.served import Served
    from agent.configfile import LoadedConfig
    from agent.engine.leader import Leader
    from agent.events import EventSink
    from agent.preflight_job import PreflightReport

STOP_GRACE_S = 30.0
"""How long a stop waits for the operations the API started to journal the steps in hand."""

DEMO_TOKEN_FILE = "demo-api-token"


NOTIFY_DRAIN_S = 10.0
"""At shutdown, how long notifications still queued may take to go out."""


@app.command(
    "serve",
    help="Run the agent: its HTTP API (api.host:api.port, loopback by default; OpenAPI at /docs) and, "
    "holding the store's lease, the execution of its operations (resume the ones left unfinished, run "
    "what API callers start, run the scheduled cleanups of test failovers); or wait as a standby while "
    "another agent holds the lease (answering reads) and take over when that one stops renewing it "
    "(store.lease_s). Says which role it has. SIGTERM or Ctrl-C stops it: running operations end at their "
    "next step boundary, journalled, and the next leader resumes them. Without a config it serves the "
    "simulated demo sites and writes a token for them.\n\n" + EXIT_CODES_HELP,
)
def serve(config: ConfigOption = None,
          host: Annotated[str | None, typer.Option(help="Listen here instead of api.host.")] = None,
          port: Annotated[int | None, typer.Option(min=0, max=65535,
                                                   help="Listen here instead of api.port (0: any free port).")] = None,
          ) -> None:
    with reporting():
        run_served(config, host=host, port=port)


def _say(text: str) -> None:
    err.print(f"{utc_time(current_time())} {escape(text)}")


def run_served(config: Path | None, stop: StopRequest | None = None, *, say: Callable[[str], None] = _say,
               host: str | None = None, port: int | None = None, console_level: str | None = None,
               log_handlers: Sequence[logging.Handler] = ()) -> None:
    """Load ``config``, open its store and sites, serve the API and be leader or standby on the
    store until stopped (SIGTERM or SIGINT when called on the main thread; ``stop`` from any
    thread). The agent's errors (a bad config, a store that cannot be opened, a port taken) are
    raised for the caller to report; on the way out the lease is released and the store closed.
    Logs go where the config's ``logging`` section says, and to ``log_handlers`` (the Windows
    service's event log); the console at ``console_level`` (default: the command line's)."""

    from agent.api.served import Served
    from agent.cli.session import _open_store
    from agent.cli.sites import open_sites
    from agent.configlog import configure_service_logging
    from agent.engine.leader import Leader
    from agent.engine.lease import Lease
    from agent.engine.service import Engine
    from agent.gcpause import freeze_survivors
    from agent.notify import Notifier
    from agent.scheduler import Scheduler

    stop = stop if stop is not None else StopRequest()
    loaded = read_config(config)
    api = loaded.config.api
    host = host or api.host
    if api.enabled and api.tls is None and not is_loopback(host):
        raise RefusedError(f"--host {host} is not a loopback address: serving the API beyond this machine "
                           "needs api.tls (cert and key) in the config", host=host)
    log_file = configure_service_logging(loaded, console_level=console_level or console_log_level(),
                                         extra_handlers=log_handlers)
    say(f"logging to {log_file}")
    store = _open_store(loaded)
    try:
        with open_sites(loaded, read_inventory=False) as sites:
            notifier = Notifier(loaded.config.notifications, agent=loaded.config.agent.owner_id)
            engine = Engine(loaded.config, sites.ports, store, events=notifier)
            lease = Lease(store, lease_s=loaded.config.store.lease_s)

            def scheduler() -> Scheduler:
                made = Scheduler(store)
                engine.scheduler = made
                made.schedule_preflight(loaded.config.policies.preflight_interval,
                                        on_problems=lambda report: _preflight_problems(notifier, loaded, report))
                return made

            served = Served(loaded, store, engine, None)
            leader = Leader(engine, lease, scheduler=scheduler, say=say, drain=lambda: _drain(served, say))
            served.leader = leader
            try:
                with _serving_api(loaded, served, host, api.port if port is None else port, say):
                    with stop.serving(leader, say), _stopped_by_signals(leader, say):
                        freeze_survivors()  # started: what lives now lives as long as the process
                        leader.run()
            finally:
                notifier.close(timeout_s=NOTIFY_DRAIN_S)
    finally:
        store.close()


def _preflight_problems(sink: EventSink, loaded: LoadedConfig, report: PreflightReport) -> None:
    from agent.events import emit_safely, preflight_problems

    if report.problems:
        emit_safely(sink, preflight_problems(report.problems, site=loaded.config.agent.site))


def _drain(served: Served, say: Callable[[str], None]) -> None:
    left = served.stop(STOP_GRACE_S)
    if left:
        say(f"stopping: {', '.join(left)} still in a step after {STOP_GRACE_S:g} s; its step is journalled "
             "as begun and runs again under the next leader")


@contextmanager
def _serving_api(loaded: LoadedConfig, served: Served, host: str, port: int,
                 say: Callable[[str], None]) -> Iterator[None]:
    if not loaded.config.api.enabled:
        say("API: off (api.enabled: false)")
        yield
        return
    import uvicorn

    from agent.api.app import create_app

    sock = _listening_socket(host, port)
    tokens = _tokens(loaded, sock.getsockname()[1], say)
    access = logging.getLogger("uvicorn.access")
    quiet = QuietPolls()
    access.addFilter(quiet)
    server = uvicorn.Server(_uvicorn_config(loaded, create_app(served, tokens=tokens)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="api", daemon=True)
    thread.start()
    bound = sock.getsockname()
    scheme = "https" if loaded.config.api.tls else "http"
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    say(f"API: {scheme}://{shown}:{bound[1]}/ (OpenAPI: /docs, /openapi.json)")
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        access.removeFilter(quiet)
        if served.views is not None:
            served.views.close()  # the event loop's own connection to the store


class QuietPolls(logging.Filter):
    """Keeps answered polls of one operation out of the access log: an orchestrator polling every
    second writes 86,400 lines a day of the same GET, and at 200 requests/s writing them cost
    the server more CPU than answering them. Every other request is logged, and so is a poll
    that was refused or failed (any status but 200 and 304)."""

    PREFIX = "/v1/operations/"

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args  # uvicorn's: client, method, path with query, HTTP version, status
        if not (isinstance(args, tuple) and len(args) == 5 and args[1] == "GET" and args[4] in (200, 304)):
            return True
        path = str(args[2]).split("?", 1)[0]
        rest = path[len(self.PREFIX):] if path.startswith(self.PREFIX) else ""
        return not rest or "/" in rest


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on a transport whose socket
    # says TCP, and an accepted socket says what the listening one does. With Nagle on, the last
    # segment of an answer over one segment long (a 1,000-VM view is 66 KB) waited for the
    # client's delayed ACK: 40 ms added to a tenth of the answers even with nothing running.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    if os.name != "nt":  # on Windows SO_REUSEADDR lets a second process steal the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise RefusedError(f"the API cannot listen on {host}:{port}: {exc.strerror or exc} (api.host / api.port, "
                           "or --host / --port)", host=host, port=port) from exc
    return sock


def _uvicorn_config(loaded: LoadedConfig, application: Any) -> uvicorn.Config:
    import uvicorn

    kwargs: dict[str, Any] = {}
    tls = loaded.config.api.tls
    if tls is not None:
        base = loaded.path.parent
        kwargs.update(ssl_certfile=str(base / tls.cert), ssl_keyfile=str(base / tls.key))
        if tls.client_ca is not None:
            kwargs.update(ssl_ca_certs=str(base / tls.client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    # log_config=None: uvicorn's loggers go through the agent's logging (JSON, secrets redacted).
    return uvicorn.Config(application, log_config=None, access_log=True, lifespan="off", server_header=False,
                          timeout_graceful_shutdown=5, **kwargs)


def _tokens(loaded: LoadedConfig, port: int, say: Callable[[str], None]) -> Tokens:
    from agent.api.auth import Tokens, new_token, token_hash

    api = loaded.config.api
    if not loaded.is_demo:
        if not api.tokens:
            say("API: no api.tokens in the config, so every call but /v1/health is refused; create one with "
                 "'failover-agent token create --name NAME --scope operate' and add the line it prints")
        return Tokens(api)
    token = new_token()
    path = loaded.data_dir / DEMO_TOKEN_FILE
    _write_private(path, token + "\n")
    say("=" * 78)
    say("DEMO: serving the SIMULATED demo sites (no config given): nothing real is touched.")
    say(f"DEMO: an admin token for this run is in {path}; e.g.")
    say(f"DEMO:   curl -H \"Authorization: Bearer $(cat {path})\" http://127.0.0.1:{port}/v1/plans")
    say("DEMO: for real sites: 'failover-agent config template', then 'failover-agent token create'.")
    say("=" * 78)
    return Tokens(api, extra={token_hash(token): ("demo", frozenset({"admin"}))})


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)  # an older file keeps its mode through O_CREAT


@contextmanager
def _stopped_by_signals(leader: Leader, say: Callable[[str], None] = _say) -> Iterator[None]:
    """SIGTERM and SIGINT end the loop (:func:`agent.cli.stopping.stop_leader`): operations the
    API started start no new step and end once the steps in hand are journalled; the leader's
    own resume is interrupted at the step in hand, which stays journalled as started (the next leader runs it
    again: every step is idempotent); the lease is released on the way out."""

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

"""What the Windows service does, on any OS: ``service/failover_agent_service.py`` is only the
pywin32 shell around it (the Service Control Manager's callbacks, the registry read), so all of
this is tested where pywin32 is absent.

- :class:`ServeInvocation`: the serve command the service runs, from its start arguments and its
  registry parameters (``HKLM\\SYSTEM\\CurrentControlSet\\Services\\failover-agent\\Parameters``,
  written by ``service/install-service.ps1``). A service never falls back to the demo config.
- :class:`ServiceRunner`: :func:`agent.cli.serve.run_served` in a thread of its own; a stop is the
  one SIGTERM makes (:class:`agent.cli.serve.StopRequest`), waited for up to a bound while the
  SCM is told, tick by tick, that the stop is still in progress.
- :class:`ServiceExit`: how the service ends, and whether the SCM should restart it. The SCM
  has no RestartPreventExitStatus: it runs the failure actions (restart) when a service stops
  with a non-zero Win32 exit code (``sc.exe failureflag``). pywin32's host reports one
  (ERROR_SERVICE_SPECIFIC_ERROR) when ``SvcRun`` raises and 0 when it returns, so the shell
  raises for what a restart may cure and returns for a clean stop and for a bad config, which a
  restart cannot fix; an Error event says why, with the agent's exit code.
- :func:`event_log_handler`: the Application event log through pywin32 when it is there.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Protocol

import structlog

from agent.cli.app import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, escaped_store_error, exit_code_for
from agent.cli.serve import run_served
from agent.cli.stopping import StopRequest
from agent.errors import AgentError, RefusedError
from agent.logging import LEVELS, configure_logging

log = structlog.get_logger("agent.service")

SERVICE_NAME = "failover-agent"
DISPLAY_NAME = "failover-agent (network side of Hyper-V / VMM disaster recovery)"
DESCRIPTION = ("Reserves IPs in VMM pools, sets failover IPs, builds test networks, moves routes and updates DNS "
               "for site failovers; runs 'failover-agent serve'.")
PARAMETERS_KEY = rf"HKLM\SYSTEM\CurrentControlSet\Services\{SERVICE_NAME}\Parameters"
DEFAULT_LOG_LEVEL = "info"
"""A service has nobody watching its console: its role changes (info) belong in the event log."""

STOP_BOUND_S = 150.0
"""How long a stop waits for the step in hand to end before the service reports stopped anyway
(the step stays journalled as started; the next leader runs it again). Under the 180 s Windows
gives a service that accepts pre-shutdown notifications."""
STOP_TICK_S = 1.0


# --------------------------------------------------------------------------- the serve invocation


@dataclass(frozen=True)
class ServeInvocation:
    config: Path
    log_level: str = DEFAULT_LOG_LEVEL

    def argv(self) -> list[str]:
        """The same run as a command line (``failover-agent`` + these), for the logs and the docs."""
        return ["--log-level", self.log_level, "serve", "--config", str(self.config)]

    @classmethod
    def from_service(cls, args: Sequence[str], parameters: Mapping[str, object]) -> ServeInvocation:
        """From the start arguments (``sc.exe start failover-agent --config X`` wins for one run)
        and the registry values ``ConfigPath`` and ``LogLevel``. Refused, naming where to look, when
        the config path is missing or not absolute (a service's working directory is System32) or
        an argument is unknown."""
        given = _parse_args(args)
        config = given.get("config") or parameters.get("ConfigPath")
        if not isinstance(config, str) or not config.strip():
            raise RefusedError(f"the service has no config: set {PARAMETERS_KEY}\\ConfigPath (install-service.ps1 "
                               "-ConfigPath does) or start it with --config PATH", key="ConfigPath")
        config = config.strip()
        if not (PureWindowsPath(config).is_absolute() or Path(config).is_absolute()):
            raise RefusedError(f"the service's config path {config!r} is not absolute ({PARAMETERS_KEY}\\ConfigPath)",
                               key="ConfigPath")
        level = given.get("log_level") or parameters.get("LogLevel") or DEFAULT_LOG_LEVEL
        if not isinstance(level, str) or level.lower() not in LEVELS:
            raise RefusedError(f"the service's log level {level!r} is not one of {', '.join(LEVELS)} "
                               f"({PARAMETERS_KEY}\\LogLevel or --log-level)", key="LogLevel")
        return cls(Path(config), level.lower())


_OPTIONS = {"--config": "config", "-c": "config", "--log-level": "log_level"}


def _parse_args(args: Sequence[str]) -> dict[str, str]:
    given: dict[str, str] = {}
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        name, eq, value = arg.partition("=")
        if name not in _OPTIONS:
            raise RefusedError(f"unknown service start argument {arg!r}: use --config PATH or --log-level LEVEL",
                               key="args")
        if not eq:
            if not rest:
                raise RefusedError(f"the service start argument {name} has no value", key="args")
            value = rest.pop(0)
        given[_OPTIONS[name]] = value
    return given


# ---------------------------------------------------------------------------------- exit codes


@dataclass(frozen=True)
class ServiceExit:
    """How the service ends: the agent's exit code (as the CLI's) and why."""

    code: int
    message: str

    @property
    def restart(self) -> bool:
        """Whether the SCM should run the failure actions: not for a stop that was asked, nor for
        a bad config (exit code 2)."""
        return self.code not in (EXIT_OK, EXIT_REFUSED)


def outcome_of(exc: BaseException) -> ServiceExit:
    """The exit for an error that ended the serving: the CLI's exit code for it (2 a bad config
    or refused store, 3 a store that cannot be reached, 1 anything else: a bug)."""
    mapped = exc if isinstance(exc, AgentError) else escaped_store_error(exc)
    if mapped is not None:
        return ServiceExit(exit_code_for(mapped), mapped.message)
    return ServiceExit(EXIT_FAILED, f"unexpected {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------- the runner


class Serve(Protocol):
    def __call__(self, config: Path | None, stop: StopRequest | None = None, *,
                 say: Callable[[str], None] = ..., console_level: str | None = ...,
                 log_handlers: Sequence[logging.Handler] = ...) -> None: ...


def _say(text: str) -> None:
    log.info(text)


class ServiceRunner:
    """:func:`run_served` in a thread, stopped as SIGTERM stops it (see the module docstring)."""

    def __init__(self, invocation: ServeInvocation, *, serve: Serve = run_served,
                 stop_bound_s: float = STOP_BOUND_S, tick_s: float = STOP_TICK_S,
                 say: Callable[[str], None] = _say, clock: Callable[[], float] = time.monotonic) -> None:
        self.invocation = invocation
        self.stop_bound_s = stop_bound_s
        self.tick_s = tick_s
        self._serve = serve
        self._say = say
        self._clock = clock
        self._stop = StopRequest()
        self._stop_at: float | None = None
        self._exit: ServiceExit | None = None
        self._thread = threading.Thread(target=self._main, name="failover-agent-serve", daemon=True)
        self.log_handlers: Sequence[logging.Handler] = ()
        """Kept when the served agent sets up its own logging (the event log)."""

    def start(self) -> None:
        self._thread.start()

    def request_stop(self, why: str = "service stop") -> None:
        """Quick, from the SCM's control thread: the waiting is :meth:`wait`'s."""
        if self._stop_at is None:
            self._stop_at = self._clock()
        self._stop.stop(why)

    def wait(self, stopping: Callable[[int], None] = lambda wait_hint_ms: None) -> ServiceExit:
        """Until the serving ends; once a stop is asked, ``stopping(wait hint in ms)`` each tick, and
        no longer than the bound: the thread is then left to die with the process."""
        while True:
            self._thread.join(self.tick_s)
            if not self._thread.is_alive():
                break
            if self._stop_at is None:
                continue
            left = self.stop_bound_s - (self._clock() - self._stop_at)
            if left <= 0:
                message = (f"the agent did not stop within {self.stop_bound_s:g} s; the step in hand stays "
                           "journalled as started and the next leader runs it again")
                log.warning(message)
                return ServiceExit(EXIT_OK, message)
            stopping(int(left * 1000))
        assert self._exit is not None  # _main always sets it before ending
        return self._exit

    def _main(self) -> None:
        log.info("serving", argv=self.invocation.argv())
        try:
            self._serve(self.invocation.config, self._stop, say=self._say, console_level=self.invocation.log_level,
                        log_handlers=self.log_handlers)
        except KeyboardInterrupt:  # a stop's interruption that reached past the serving
            self._exit = self._ended_by_itself() if not self._stop.requested else ServiceExit(EXIT_OK, "stopped")
        except BaseException as exc:  # whatever ended it is the service's exit code
            self._exit = outcome_of(exc)
            if self._exit.code == EXIT_FAILED and not isinstance(exc, AgentError):
                log.exception("the agent stopped on an unexpected error: a bug, please report it")
            else:
                log.error("the agent stopped", error=self._exit.message, exit_code=self._exit.code)
        else:
            self._exit = ServiceExit(EXIT_OK, "stopped") if self._stop.requested else self._ended_by_itself()

    def _ended_by_itself(self) -> ServiceExit:
        message = "the agent stopped without being asked to"
        log.error(message)
        return ServiceExit(EXIT_FAILED, message)


# ---------------------------------------------------------------------------- the host


class ServiceHost:
    """One service run as the SCM drives it: :meth:`run` from the service's main thread,
    :meth:`stop` from its control handler (possibly before :meth:`run` has a runner)."""

    def __init__(self, args: Sequence[str], parameters: Mapping[str, object], *,
                 log_handler: Callable[[], logging.Handler | None] | None = None,
                 runner: Callable[[ServeInvocation], ServiceRunner] = ServiceRunner) -> None:
        self.args = list(args)
        self.parameters = dict(parameters)
        self._log_handler = log_handler or (lambda: event_log_handler(SERVICE_NAME))
        self._new_runner = runner
        self._lock = threading.Lock()
        self._runner: ServiceRunner | None = None
        self._stop_asked = False

    def run(self, *, running: Callable[[], None], stopping: Callable[[int], None]) -> ServiceExit:
        handler = self._log_handler()
        handlers = [handler] if handler is not None else []
        try:
            invocation = ServeInvocation.from_service(self.args, self.parameters)
        except RefusedError as exc:
            configure_logging(DEFAULT_LOG_LEVEL, extra_handlers=handlers)
            log.error("the service cannot start: bad configuration; it is not restarted", error=exc.message)
            return ServiceExit(EXIT_REFUSED, exc.message)
        configure_logging(invocation.log_level, extra_handlers=handlers)
        runner = self._new_runner(invocation)
        runner.log_handlers = handlers
        with self._lock:
            self._runner = runner
            if self._stop_asked:
                runner.request_stop()
        runner.start()
        running()
        return runner.wait(stopping)

    def stop(self, why: str = "service stop") -> None:
        with self._lock:
            self._stop_asked = True
            runner = self._runner
        if runner is not None:
            runner.request_stop(why)


# ---------------------------------------------------------------------------- the event log


def _has_pywin32() -> bool:
    try:
        importlib.import_module("win32evtlogutil")
    except ImportError:
        return False
    return True


def event_log_handler(source: str, *, has_pywin32: Callable[[], bool] | None = None) -> logging.Handler | None:
    """A handler writing to the Application event log under ``source`` when pywin32 is installed
    (the ``service`` extra), else None: the logs then stay on stderr. The stdlib's handler does
    the writing; registering the source needs an administrator, which the install script is."""
    if not (has_pywin32 or _has_pywin32)():
        return None
    from logging.handlers import NTEventLogHandler

    return NTEventLogHandler(source)

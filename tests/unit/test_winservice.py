"""The Windows service's logic (agent.winservice), where pywin32 is absent: the serve invocation
from the service's registry values and start arguments, stopping as SIGTERM does (the real serve
machinery in a thread, a real SQLite store, an operation cut off and resumed), the SCM exit
codes (a bad config is not restarted) and the event log handler (with a fake pywin32)."""

from __future__ import annotations

import logging
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent import winservice
from agent.cli import app
from agent.cli.serve import run_served
from agent.cli.stopping import StopRequest
from agent.engine.lease import Lease
from agent.engine.model import FINAL_STATUSES, OperationKind, OpStatus
from agent.engine.service import Engine
from agent.engine.store import Store
from agent.errors import RefusedError, UnreachableError
from agent.logging import configure_logging
from agent.winservice import ServeInvocation, ServiceExit, ServiceHost, ServiceRunner
from agent.wiring import connect
from tests.rigs import DEMO_PLAN, copy_demo, sim_of

CONFIG = r"C:\ProgramData\failover-agent\config.yaml"


@pytest.fixture(autouse=True)
def _logging_back() -> Any:
    yield
    configure_logging("warning")


# ------------------------------------------------------------------------- the invocation


def test_the_registry_config_path_makes_a_serve_invocation_the_cli_accepts() -> None:
    inv = ServeInvocation.from_service([], {"ConfigPath": CONFIG, "LogLevel": None})
    assert inv == ServeInvocation(Path(CONFIG), "info")
    assert inv.argv() == ["--log-level", "info", "serve", "--config", CONFIG]
    result = CliRunner().invoke(app, [*inv.argv(), "--help"])
    assert result.exit_code == 0, result.output
    assert "--config" in result.output


@pytest.mark.parametrize("args", [
    ["--config", "D:\\other.yaml"], ["--config=D:\\other.yaml"], ["-c", "D:\\other.yaml"]])
def test_start_arguments_win_over_the_registry(args: list[str]) -> None:
    inv = ServeInvocation.from_service([*args, "--log-level", "DEBUG"], {"ConfigPath": CONFIG, "LogLevel": "error"})
    assert inv == ServeInvocation(Path("D:\\other.yaml"), "debug")


def test_a_posix_absolute_path_is_accepted_too() -> None:
    assert ServeInvocation.from_service([], {"ConfigPath": "/etc/failover-agent/config.yaml"}).config == \
        Path("/etc/failover-agent/config.yaml")


@pytest.mark.parametrize(("args", "parameters", "expected"), [
    ([], {}, r"Services\failover-agent\Parameters\ConfigPath"),
    ([], {"ConfigPath": "  "}, "has no config"),
    ([], {"ConfigPath": "config.yaml"}, "not absolute"),
    ([], {"ConfigPath": CONFIG, "LogLevel": "loud"}, "log level 'loud'"),
    (["--frobnicate"], {"ConfigPath": CONFIG}, "unknown service start argument '--frobnicate'"),
    (["--config"], {}, "--config has no value"),
])
def test_a_service_without_a_usable_config_is_refused_naming_where(args: list[str], parameters: dict[str, Any],
                                                                     expected: str) -> None:
    with pytest.raises(RefusedError) as caught:
        ServeInvocation.from_service(args, parameters)
    assert expected in caught.value.message


# ------------------------------------------------------------------------------ exit codes


@pytest.mark.parametrize(("code", "restart"), [
    (0, False),
    (2, False),  # a bad config: a restart cannot fix it
    (1, True),
    (3, True),  # the store not reachable yet: try again
])
def test_which_exits_the_scm_restarts(code: int, restart: bool) -> None:
    assert ServiceExit(code, "").restart is restart


def test_errors_map_to_the_clis_exit_codes() -> None:
    from sqlalchemy.exc import OperationalError

    assert winservice.outcome_of(RefusedError("bad key")).code == 2
    assert winservice.outcome_of(UnreachableError("no store")).code == 3
    assert winservice.outcome_of(OperationalError("x", {}, Exception("database is locked"))).code == 3
    bug = winservice.outcome_of(ValueError("boom"))
    assert bug.code == 1 and bug.restart and "ValueError: boom" in bug.message


# ------------------------------------------------------------------ the runner (fake serve)


def _runner(serve: Any, **kwargs: Any) -> ServiceRunner:
    return ServiceRunner(ServeInvocation(Path(CONFIG)), serve=serve, **kwargs)


def test_a_stop_ends_the_serving_cleanly() -> None:
    def serve(config: Path | None, stop: StopRequest | None = None, **_: Any) -> None:
        assert config == Path(CONFIG) and stop is not None
        while not stop.requested:
            time.sleep(0.01)

    runner = _runner(serve, tick_s=0.02)
    runner.start()
    runner.request_stop()
    assert runner.wait() == ServiceExit(0, "stopped")


def test_a_stop_that_takes_too_long_is_reported_as_pending_then_given_up() -> None:
    release = threading.Event()

    def serve(config: Path | None, stop: StopRequest | None = None, **_: Any) -> None:
        release.wait(30)  # a call that will not return in time

    hints: list[int] = []
    runner = _runner(serve, stop_bound_s=0.3, tick_s=0.05)
    runner.start()
    runner.request_stop()
    started = time.monotonic()
    try:
        done = runner.wait(hints.append)
    finally:
        release.set()
    assert time.monotonic() - started < 5
    assert done.code == 0 and not done.restart and "did not stop within 0.3 s" in done.message
    assert len(hints) >= 2 and hints == sorted(hints, reverse=True) and all(0 < h <= 300 for h in hints)


@pytest.mark.parametrize(("raised", "code", "restart"), [
    (RefusedError("config.yaml:3: store.url: bad"), 2, False),
    (UnreachableError("the store cannot be reached"), 3, True),
    (ZeroDivisionError("a bug"), 1, True),
])
def test_what_ended_the_serving_is_the_services_exit(raised: BaseException, code: int, restart: bool) -> None:
    def serve(*_: Any, **__: Any) -> None:
        raise raised

    runner = _runner(serve, tick_s=0.02)
    runner.start()
    done = runner.wait()
    assert (done.code, done.restart) == (code, restart)


def test_serving_that_ends_unasked_is_a_failure_to_restart() -> None:
    runner = _runner(lambda *a, **k: None, tick_s=0.02)
    runner.start()
    done = runner.wait()
    assert done.code == 1 and done.restart and "without being asked" in done.message


# --------------------------------------------------------------- the real serve machinery


def _site(tmp: Path, *, latency: float = 0.0) -> tuple[Path, str]:
    url = f"sqlite:///{tmp / 'store.sqlite'}"

    def edit(data: dict[str, Any]) -> None:
        data["store"] = {"url": url, "lease_s": 2.0}
        data["api"] = {"port": 0}  # several agents in the suite at once: each its own free port
        data["simulator"]["state"] = str(tmp / "sim-state.json")
        for group in data["recovery_plans"][0]["groups"]:
            group.pop("after", None)  # no manual pause, no script: the operation runs to its end

    config = copy_demo(tmp / "cfg", edit=edit)
    from agent.configfile import load_config

    conn = connect(load_config(config))
    sim_of(conn).set_latency("*", fixed=latency)
    conn.close()
    Store.open(url).close()
    return config, url


class Said:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str) -> None:
        self.lines.append(text)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline, self.lines
            time.sleep(0.02)


def _holder(url: str) -> str | None:
    store = Store.open(url)
    try:
        current = Lease(store, lease_s=2).current()
        return current.holder if current is not None else None
    finally:
        store.close()


def _with_engine(config: Path, url: str, do: Any) -> Any:
    from agent.configfile import load_config

    loaded = load_config(config)
    conn = connect(loaded)
    engine = Engine(loaded.config, conn.ports, Store.open(url))
    try:
        return do(engine)
    finally:
        engine.store.close()
        conn.close()


def test_the_service_runs_serve_leads_and_a_stop_releases_the_lease(tmp_path: Path) -> None:
    config, url = _site(tmp_path)
    said = Said()
    runner = ServiceRunner(ServeInvocation(config), say=said, tick_s=0.05)
    runner.start()
    said.wait_for("leader: this agent")
    assert _holder(url) is not None
    runner.request_stop()
    assert runner.wait() == ServiceExit(0, "stopped")
    assert _holder(url) is None, "the lease is released on the way out: a standby need not wait"
    assert any("service stop: stopping" in line for line in said.lines)


def test_a_service_stop_cuts_the_step_in_hand_and_the_next_leader_finishes_it(tmp_path: Path) -> None:
    config, url = _site(tmp_path, latency=0.15)
    op_id = _with_engine(config, url, lambda e: e.create(OperationKind.UNPLANNED_FAILOVER, DEMO_PLAN))
    said = Said()
    runner = ServiceRunner(ServeInvocation(config), say=said, tick_s=0.05)
    runner.start()

    def steps_done(engine: Engine) -> int:
        return sum(1 for s in engine.journal.steps(op_id) if s.status == "succeeded")

    deadline = time.monotonic() + 60
    while _with_engine(config, url, steps_done) < 2:
        assert time.monotonic() < deadline, said.lines
        time.sleep(0.05)
    runner.request_stop()
    done = runner.wait()
    assert done == ServiceExit(0, "stopped"), said.lines
    status = _with_engine(config, url, lambda e: e.view(op_id).status)
    assert OpStatus(status) not in FINAL_STATUSES, "the stop cut the operation off, it did not run on"
    assert _holder(url) is None

    again = Said()
    second = ServiceRunner(ServeInvocation(config), say=again, tick_s=0.05)
    second.start()
    again.wait_for(f"{op_id} unplanned_failover resumed: succeeded")
    second.request_stop()
    assert second.wait().code == 0
    twice = _with_engine(config, url, lambda e: [s.name for s in e.journal.steps(op_id) if s.attempts > 2])
    assert twice == []


def test_a_stop_before_the_leader_exists_means_it_never_leads(tmp_path: Path) -> None:
    config, url = _site(tmp_path)
    stop = StopRequest()
    stop.stop()
    said = Said()
    run_served(config, stop, say=said)  # returns: it was stopped before it began
    assert not any("leader:" in line for line in said.lines)
    assert _holder(url) is None


def test_a_bad_config_stops_the_service_without_restart(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("agent: {unknown_key: 1}\n")
    runner = ServiceRunner(ServeInvocation(config), tick_s=0.02)
    runner.start()
    done = runner.wait()
    assert (done.code, done.restart) == (2, False)
    assert "unknown_key" in done.message


# ----------------------------------------------------------------------------- the host


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_the_host_refuses_a_service_without_config_and_says_so_in_its_log() -> None:
    captured = Captured()
    started: list[bool] = []
    host = ServiceHost([], {"ConfigPath": None}, log_handler=lambda: captured)
    done = host.run(running=lambda: started.append(True), stopping=lambda ms: None)
    assert (done.code, done.restart) == (2, False)
    assert started == [], "never reported running"
    assert any("not restarted" in line and "ConfigPath" in line for line in captured.lines), captured.lines


def test_the_host_runs_the_invocation_and_a_stop_asked_before_it_is_kept(tmp_path: Path) -> None:
    made: list[ServeInvocation] = []

    def serve(config: Path | None, stop: StopRequest | None = None, *, say: Any, **_: Any) -> None:
        assert stop is not None
        say("leader: this agent runs the store's operations")
        while not stop.requested:
            time.sleep(0.01)

    def runner(inv: ServeInvocation) -> ServiceRunner:
        made.append(inv)
        return ServiceRunner(inv, serve=serve, tick_s=0.02)

    captured = Captured()
    host = ServiceHost(["--log-level", "debug"], {"ConfigPath": CONFIG}, log_handler=lambda: captured, runner=runner)
    host.stop()
    started: list[bool] = []
    assert host.run(running=lambda: started.append(True), stopping=lambda ms: None) == ServiceExit(0, "stopped")
    assert made == [ServeInvocation(Path(CONFIG), "debug")] and started == [True]
    assert any('"serving"' in line for line in captured.lines), captured.lines
    assert any("leader: this agent" in line and '"level": "info"' in line for line in captured.lines), \
        "the role changes a console would show go to the event log"


# -------------------------------------------------------------------------- the event log


def test_without_pywin32_there_is_no_event_log_handler() -> None:
    assert winservice.event_log_handler("failover-agent") is None  # pywin32 is not installed here
    assert winservice.event_log_handler("failover-agent", has_pywin32=lambda: False) is None


def test_the_event_log_gets_redacted_json_lines_with_the_event_type(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[tuple[Any, ...]] = []
    evtlog = types.SimpleNamespace(EVENTLOG_ERROR_TYPE=1, EVENTLOG_WARNING_TYPE=2, EVENTLOG_INFORMATION_TYPE=4)
    evtlogutil = types.ModuleType("win32evtlogutil")
    evtlogutil.__file__ = r"C:\venv\Lib\site-packages\win32\lib\win32evtlogutil.py"
    evtlogutil.AddSourceToRegistry = lambda *a, **k: reported.append(("registered", *a))  # type: ignore[attr-defined]
    evtlogutil.ReportEvent = lambda *a, **k: reported.append(("event", *a))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "win32evtlogutil", evtlogutil)
    monkeypatch.setitem(sys.modules, "win32evtlog", evtlog)

    handler = winservice.event_log_handler("failover-agent")
    assert handler is not None and reported[0][:2] == ("registered", "failover-agent")
    configure_logging("info", extra_handlers=[handler])
    logging.getLogger("agent.test").info("plain stdlib record")
    winservice.log.warning("lease lost", password="s3cret", token="abc")
    events = [r for r in reported if r[0] == "event"]
    assert len(events) == 2 and events[0][4] == 4
    events = events[1:]
    for _, source, _id, _category, event_type, strings in events:
        assert source == "failover-agent" and event_type == 2
        assert "s3cret" not in strings[0] and "abc" not in strings[0]
    assert '"password": "***"' in events[0][5][0]


def test_an_interruption_nobody_asked_for_is_not_swallowed() -> None:
    class Idle:
        stopping = False
        executing = False

        def stop(self) -> None:
            self.stopping = True

    with pytest.raises(KeyboardInterrupt):
        with StopRequest().serving(Idle(), print):  # type: ignore[arg-type]
            raise KeyboardInterrupt


@pytest.mark.parametrize(("asked", "code"), [(True, 0), (False, 1)])
def test_an_interruption_past_the_serving_is_a_clean_stop_only_when_asked(asked: bool, code: int) -> None:
    def serve(config: Path | None, stop: StopRequest | None = None, **_: Any) -> None:
        assert stop is not None
        while asked and not stop.requested:
            time.sleep(0.01)
        raise KeyboardInterrupt  # as when a stop's interruption lands just after the leader ended

    runner = _runner(serve, tick_s=0.02)
    runner.start()
    time.sleep(0.1)  # the runner ticks before any stop is asked
    if asked:
        runner.request_stop()
        runner.request_stop()  # a second stop (the SCM asks again) changes nothing
    assert runner.wait().code == code


def test_the_host_passes_a_stop_to_the_running_agent() -> None:
    def serve(config: Path | None, stop: StopRequest | None = None, **_: Any) -> None:
        assert stop is not None
        while not stop.requested:
            time.sleep(0.01)

    running = threading.Event()
    host = ServiceHost([], {"ConfigPath": CONFIG}, log_handler=lambda: None,
                       runner=lambda inv: ServiceRunner(inv, serve=serve, tick_s=0.02))
    done: list[ServiceExit] = []
    thread = threading.Thread(target=lambda: done.append(host.run(running=running.set, stopping=lambda ms: None)))
    thread.start()
    assert running.wait(10)
    host.stop()
    thread.join(10)
    assert done == [ServiceExit(0, "stopped")]


def test_the_command_stops_on_sigterm_as_the_service_does(tmp_path: Path) -> None:
    import os
    import signal

    config, url = _site(tmp_path)

    def terminate_once_leading() -> None:
        deadline = time.monotonic() + 60
        while _holder(url) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_once_leading, daemon=True)
    killer.start()
    result = CliRunner().invoke(app, ["serve", "--config", str(config)])
    killer.join(10)
    assert result.exit_code == 0, result.output
    assert "SIGTERM: stopping" in result.output and "stopped: the lease is released" in result.output
    assert _holder(url) is None

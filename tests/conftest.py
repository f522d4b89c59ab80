"""Fixtures shared by the whole suite. Helpers they build on: ``tests/rigs.py`` (engine rigs)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import leakcheck
from tests.rigs import Rig, Templates, copy_demo
from tests.stores import store_url  # noqa: F401  (a fixture, for every test)

# Every simulator commit re-reads its state file and compares it with the state in memory, in
# this process and the ones tests start: a driver mutation the change record missed fails the
# test that made it (agent/drivers/sim/changes.py), instead of a process that resumes later.
os.environ.setdefault("FA_SIM_VERIFY_CHANGES", "1")


@pytest.fixture
def untraced() -> Iterator[None]:
    """The test runs without coverage's tracer (or any other), in its thread and in the threads it
    starts; the tracer is put back afterwards.

    For the recovery sweeps: they run the same code a hundred times over, cut at another point
    each time, which proves recovery but adds nothing to what coverage measures (single runs of
    the same paths are traced), while tracing doubled their time. pytest-cov's own ``no_cover``
    marker does not pause the tracer in xdist workers (pytest-cov 7.1: the test thread keeps it)."""

    trace, thread_trace = sys.gettrace(), threading.gettrace()
    sys.settrace(None)
    threading.settrace(None)  # type: ignore[arg-type]  # None removes it, as documented
    try:
        yield
    finally:
        threading.settrace(thread_trace)  # type: ignore[arg-type]
        sys.settrace(trace)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    """The shipped demo (config/demo.yaml + demo-inventory.yaml), copied and loaded once."""
    return Templates.build(copy_demo(tmp_path_factory.mktemp("demo")))


@pytest.fixture
def store_demo(store_url: str, tmp_path: Path) -> Templates:  # noqa: F811  (the fixture)
    """The demo with its store at ``store_url``: the representative journal, recovery and
    concurrency tests take it instead of ``demo`` to run on SQLite and on PostgreSQL. Rigs made
    from it share that one store."""
    return Templates.build(copy_demo(tmp_path / "store-demo", store_url=store_url), store_url=store_url)


@pytest.fixture
def new_rig(demo: Templates, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """``new_rig(templates=demo, name="a", **rig_options)``: a rig on fresh copies of the
    templates under this test's ``tmp_path``. Closed at the end of the test."""

    rigs: list[Rig] = []

    def make(templates: Templates = demo, name: str = "rig", **kwargs: Any) -> Rig:
        state, store = templates.copy_to(tmp_path / name)
        rig = Rig(templates.loaded, state, store, **kwargs)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        with contextlib.suppress(Exception):  # best effort: a test may have closed it already
            rig.close()


# ------------------------------------------------------------------------------ the command line


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The environment of a site admin running ``failover-agent`` on a fresh machine: no config or
    log level set, and a data directory (returned) of this test's own. Logging is put back after
    the test, because every command configures it onto the stream it writes to.

    Whoever runs the suite, the commands find nobody to ask unless a test puts an operator there.

    For the CLI tests: ``pytestmark = pytest.mark.usefixtures("cli_env")``."""

    # Imported here, not above: only the CLI tests need the CLI (and structlog).
    import logging

    import structlog

    from agent.cli import ENV_LOG_LEVEL, session
    from agent.configfile import ENV_CONFIG, ENV_DATA_DIR

    monkeypatch.setattr(session, "is_interactive", lambda: False)

    data_dir = tmp_path / "data"
    # No running agent to talk to either, whatever the shell that runs the suite has set.
    from agent.cli.remote import ENV_CLIENT_FILE, ENV_TOKEN, ENV_URL

    for name in (ENV_URL, ENV_TOKEN, ENV_CLIENT_FILE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "user-config"))
    monkeypatch.delenv(ENV_CONFIG, raising=False)
    monkeypatch.delenv(ENV_LOG_LEVEL, raising=False)
    monkeypatch.setenv(ENV_DATA_DIR, str(data_dir))
    yield data_dir
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_failover_agent", False):
            root.removeHandler(handler)
    structlog.reset_defaults()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Every test fails if its captured output holds a secret (``tests/leakcheck.py``)."""
    outcome = yield
    report = outcome.get_result()
    if report.passed and report.when == "call":
        leakcheck.check(item, report)

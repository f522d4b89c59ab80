"""Where the log goes: the console at its level (or not at all), the file, and the handlers a
service adds (the Windows event log) -- each with the same redacted events."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from agent.logging import configure_logging, get_logger


class Collect(logging.Handler):
    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(autouse=True)
def put_back() -> Iterator[None]:
    yield
    configure_logging("warning")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_failover_agent", False):
            root.removeHandler(handler)
    structlog.reset_defaults()


def test_an_extra_handler_gets_the_same_redacted_json_events(tmp_path: Path) -> None:
    console = io.StringIO()
    event_log = Collect(logging.WARNING)
    configure_logging("error", json=True, stream=console, file=tmp_path / "a.log", file_level="info",
                      extra_handlers=[event_log])
    with structlog.contextvars.bound_contextvars(operation="op-1"):
        get_logger("agent.test").warning("lease lost", password="hunter2-x")
        get_logger("agent.test").info("not for the event log")
    [line] = event_log.lines
    event = json.loads(line)
    assert (event["event"], event["operation"], event["password"]) == ("lease lost", "op-1", "***")
    assert console.getvalue() == "", "the console is at error"
    assert [json.loads(x)["event"] for x in (tmp_path / "a.log").read_text().splitlines()] == [
        "lease lost", "not for the event log"]


def test_a_handler_with_its_own_formatter_keeps_it_and_its_level_lowers_the_roots() -> None:
    own = Collect(logging.DEBUG)
    own.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    configure_logging("warning", console=False, extra_handlers=[own])
    logging.getLogger("pypsrp").debug("a %s record", "foreign")
    assert own.lines == ["DEBUG a foreign record"]


def test_a_positional_secret_argument_of_a_foreign_record_is_scrubbed() -> None:
    console = io.StringIO()
    configure_logging("info", json=True, stream=console)
    logging.getLogger("requests").info("sent %s to %s", {"Authorization": "Bearer abc-123"}, "vmm01")
    logging.getLogger("requests").info("sent %(headers)s", {"headers": {"token": "abc-123"}})
    text = console.getvalue()
    assert "abc-123" not in text and "vmm01" in text and text.count("***") == 2


def test_an_unknown_level_is_refused_naming_the_levels() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'; use one of debug, info, warning, error"):
        configure_logging("warning", file=Path("/nonexistent/x.log"), file_level="loud")
    assert not Path("/nonexistent").exists()

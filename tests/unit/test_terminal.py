"""Text made safe for a terminal (agent.terminal), and the places that print through it."""

from __future__ import annotations

import io
import json

import pytest

from agent.logging import configure_logging, get_logger
from agent.terminal import is_safe, visible

pytestmark = pytest.mark.usefixtures("cli_env")  # puts logging back afterwards


@pytest.mark.parametrize(("raw", "shown"), [
    ("\x1b[2J", "\\x1b[2J"),                 # clear screen
    ("\x9b31m", "\\x9b31m"),                 # the one-byte CSI
    ("a\rb\bc\x07\td\x7f", "a\\rb\\x08c\\x07\\td\\x7f"),
    ("\u202etxt.exe\u2066\u200b", "\\u202etxt.exe\\u2066\\u200b"),  # bidi override, isolate, zero width
    ("x\u2028y", "x\\u2028y"),               # a line separator is not a line break here
    ("tag\U000e0041", "tag\\U000e0041"),
    ("two\nlines, o'brien, Müller, 日本", "two\nlines, o'brien, Müller, 日本"),  # kept as they are
])
def test_control_characters_are_written_as_escapes(raw: str, shown: str) -> None:
    assert visible(raw) == shown
    assert is_safe(shown)
    assert is_safe(raw) == (raw == shown)


def test_console_logs_show_control_characters_and_json_logs_keep_them_exact() -> None:
    stream = io.StringIO()
    configure_logging("info", json=False, stream=stream)
    get_logger("t").warning("vm \x1b[2Jweb01", note="\x9b\u202e")
    text = stream.getvalue()
    assert "\x1b[2J" not in text and "\x9b" not in text and "\u202e" not in text
    assert "vm \\x1b[2Jweb01" in text and "\\x9b\\u202e" in text

    stream = io.StringIO()
    configure_logging("info", json=True, stream=stream)
    get_logger("t").warning("vm \x1b[2Jweb01", note="\x9b\u202e")
    line = json.loads(stream.getvalue())
    assert line["event"] == "vm \x1b[2Jweb01" and line["note"] == "\x9b\u202e"
    assert is_safe(stream.getvalue())


def test_the_cli_consoles_show_control_characters_in_tables_and_text_too() -> None:
    from rich.table import Table
    from rich.text import Text

    from agent.cli.app import SafeConsole

    buffer = io.StringIO()
    console = SafeConsole(file=buffer, force_terminal=True, width=80, emoji=False)
    table = Table.grid()
    table.add_row(Text("vm \x1b[2Jweb01 \u202etxt", style="bold"))
    console.print(table)
    console.print("[red]refused:[/] o'brien \x9b31m")
    text = buffer.getvalue()
    # A table cell is laid out before its text is escaped: the longer text may be cut at the
    # cell's edge (the live footer), never obeyed.
    assert "vm \\x1b[2Jweb01" in text and "o'brien \\x9b31m" in text
    assert "\x1b[2J" not in text and "\u202e" not in text and "\x9b" not in text
    assert "\x1b[" in text  # rich's own styles still reach a terminal

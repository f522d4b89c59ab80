"""The words and styles the operation commands share, so the display, run/ops and the demo speak
alike: operation kinds and statuses, their styles, and the small formatters for times, counts
and command lines."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.cli.remote import RemoteAgent
    from agent.configfile import LoadedConfig

OPERATION_KINDS = ("prepare", "test_failover", "cleanup_test", "planned_failover", "unplanned_failover",
                   "commit", "reverse", "failback", "change_recovery_point")
"""What 'run --kind' accepts (``agent.engine.model.OperationKind`` without ``cancel``, which is
'ops cancel')."""
KIND_ALIASES = {"test": "test_failover", "cleanup": "cleanup_test", "planned": "planned_failover",
                "unplanned": "unplanned_failover", "change_point": "change_recovery_point"}
REAL_FAILOVERS = ("planned_failover", "unplanned_failover", "failback")
"""They change production: previewed and confirmed (or --yes) before anything runs."""
FOLLOW_UPS = ("cleanup_test", "commit", "reverse")
"""They execute the stored plan of the operation they follow, not a fresh one."""
CONFIRMED = (*REAL_FAILOVERS, "commit", "reverse", "change_recovery_point")
"""They change production: their preview is shown and confirmed (or --yes) before they run."""

WAITING = "waiting_for_manual_action"
FINAL = ("succeeded", "partially_succeeded", "cancelled")
UNFINISHED = ("running", "interrupted", "pending")
STATUS_ALIASES = {"waiting": WAITING, "partial": "partially_succeeded"}
STATUSES = ("pending", "running", WAITING, "succeeded", "partially_succeeded", "failed", "interrupted",
            "cancelled")

OP_STYLE = {"succeeded": "green", "partially_succeeded": "yellow", "failed": "bold red", WAITING: "bold yellow",
            "cancelled": "magenta", "running": "cyan", "interrupted": "yellow", "pending": "dim"}
STEP_WORD = {"succeeded": "ok", "failed": "FAILED", "skipped": "skipped", "waiting": "WAITING",
             "running": "running", "pending": "pending"}
POLICY_WORDS = {"stop_at_first_error": "stops at the first error", "carry_on": "carries on past errors"}
STEP_STYLE = {"succeeded": "green", "failed": "bold red", "skipped": "dim", "waiting": "bold yellow",
              "running": "cyan", "pending": "dim"}


def kind_option(value: str | None) -> str | None:
    """A '--kind' as typed (a kind, or one of its short names) as the kind it names."""

    import typer

    if value is None:
        return None
    kind = KIND_ALIASES.get(value.lower().replace("-", "_"), value.lower().replace("-", "_"))
    if kind not in OPERATION_KINDS:
        raise typer.BadParameter(
            f"{value!r} is not a kind; use one of {', '.join(OPERATION_KINDS)} "
            f"(or {', '.join(KIND_ALIASES)})"
        )
    return kind


def wrapped(text: str, indent: str = "  ", *, hanging: str = "    ", width: int = 80) -> list[str]:
    """``text`` as lines of at most ``width`` characters (words are not broken: an id stays whole)."""

    import textwrap

    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=hanging,
                         break_long_words=False, break_on_hyphens=False) or [indent]


def command_line(where: LoadedConfig | RemoteAgent, args: str) -> str:
    """A command line to show the operator, with the same config (or the same agent) as this one."""

    from agent.cli.remote import RemoteAgent

    if isinstance(where, RemoteAgent):
        return f"failover-agent {where.repeat_options}{args}"
    extra = f" --config {where.path}" if where.source == "option" else ""
    return f"failover-agent {args}{extra}"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def utc_time(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else "-"


def current_time() -> datetime:
    """The store's clock (UTC), imported only when asked: the store pulls in SQLAlchemy."""

    from agent.engine.store import utcnow

    return utcnow()


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def age(delta: timedelta) -> str:
    """A policy's age limit as configured (``7 days``), or as a duration when not whole days."""

    days = delta.total_seconds() / 86400
    return plural(int(days), "day") if days >= 1 and days == int(days) else duration(delta.total_seconds())


Cell = str | tuple[str, str]
"""A cell of :func:`columns`: text, or (text, style)."""


def columns(headers: list[str], rows: list[list[Cell]]) -> list[str]:
    """Plain aligned columns (rich markup): the same on a terminal and in a pipe (never wrapped or cut)."""

    from rich.markup import escape

    cells = [[c if isinstance(c, tuple) else (str(c), "") for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i][0]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["[bold]" + escape("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()) + "[/]"]
    for r in cells:
        parts = []
        for (text, style), w in zip(r, widths, strict=True):
            padded = escape(text.ljust(w))
            parts.append(f"[{style}]{padded}[/]" if style else padded)
        lines.append("  ".join(parts).rstrip())
    return lines

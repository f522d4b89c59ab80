"""What the operator watches while the engine runs an operation: the live display, and the step,
skip and error lines that ``ops show`` and the outcome reports print the same way."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.markup import escape

from agent.cli.app import out
from agent.cli.vocabulary import POLICY_WORDS, STEP_STYLE, STEP_WORD, current_time, duration, plural

if TYPE_CHECKING:
    from agent.engine.journal import Journal
    from agent.engine.model import OperationView, StepView
    from agent.engine.service import Engine
    from agent.engine.store import StepRow


class Display:
    """Shows operations while the engine runs them.

    Every step that ends gets one line (status, name, target, items changed, time) with its
    errors (code, target, message) under it, so the scrollback is a record of what happened. On a
    terminal a live footer below those lines shows what runs now: a progress bar, percent, step
    counts, failures, elapsed time and the running steps. Without a terminal (a pipe, a log) the
    lines alone are printed, as each stage ends. ``quiet`` (for --json) prints nothing.
    """

    def __init__(self, console: Console, style: str) -> None:
        self.console = console
        self.style = style
        self.engine: Engine | None = None
        """Set by the session once the engine exists (the engine is built with ``progress``)."""
        self.source: Callable[[str], OperationView] | None = None
        """Where the views come from when no engine runs here (the CLI against a running agent:
        the last snapshot of its event stream); the items skipped are then not shown."""
        self._lock = threading.RLock()
        self._owner = threading.current_thread()
        self._headed: set[str] = set()
        self._shown: dict[tuple[str, int], tuple[str, int]] = {}
        self._views: dict[str, OperationView] = {}
        self._current: str | None = None
        self._followed: list[str] = []

    @classmethod
    def for_output(cls, as_json: bool) -> Display:
        return cls(out, "quiet" if as_json else "live" if out.is_terminal else "lines")

    # The engine's on_progress callback: after each stage of any operation it runs.
    def progress(self, op_id: str) -> None:
        if self.style == "quiet" or threading.current_thread() is not self._owner:
            return  # the scheduler's jobs run in their own thread; reported at the end
        try:
            self._progress(op_id)
        except Exception:  # the display must never stop the operation
            from agent.logging import get_logger

            get_logger("agent.cli").debug("progress display failed", exc_info=True)

    def _progress(self, op_id: str) -> None:
        with self._lock:
            if op_id != self._current:
                if self._current is not None:
                    self._refresh(self._current)
                self._current = op_id
                if op_id not in self._followed:
                    self._followed.append(op_id)
            if self.style == "lines":
                self._refresh(op_id)

    @contextmanager
    def following(self, op_id: str | None) -> Iterator[None]:
        """Show ``op_id`` (and whatever the engine starts meanwhile) while the body runs it."""

        if self.style == "quiet":
            yield
            return
        with self._lock:
            self._followed = []
            self._current = op_id
            if op_id is not None:
                self._followed.append(op_id)
                self._refresh(op_id)
        if self.style != "live":
            try:
                yield
            finally:
                self._final()
            return

        from rich.live import Live

        stop = threading.Event()
        poller = threading.Thread(target=self._poll, args=(stop,), name="progress", daemon=True)
        with Live(_Footer(self), console=self.console, refresh_per_second=8, transient=True,
                  redirect_stdout=False, redirect_stderr=False):
            poller.start()
            try:
                yield
            finally:
                stop.set()
                poller.join()
                self._final()

    def _final(self) -> None:
        with self._lock:
            for op_id in self._followed:
                self._refresh(op_id)

    def _poll(self, stop: threading.Event) -> None:
        while not stop.wait(0.15):
            try:
                with self._lock:
                    if self._current is not None:
                        self._refresh(self._current)
            except Exception:  # the display must never stop the operation
                from agent.logging import get_logger

                get_logger("agent.cli").debug("progress display could not read the store", exc_info=True)

    def _refresh(self, op_id: str) -> OperationView:
        engine = self.engine
        if self.source is not None:
            view = self.source(op_id)
        else:
            assert engine is not None, "the session sets the engine before anything runs"
            view = engine.view(op_id)
        self._views[op_id] = view
        if op_id not in self._headed:
            self._headed.add(op_id)
            self._print(_op_heading(view))
        width = min(max((len(s.name) for s in view.steps), default=10), 64)
        due = [s for s in view.steps if s.status not in ("pending", "running")
               and self._shown.get((op_id, s.ordinal)) != (s.status, s.attempts)]
        skipped = skipped_items(engine.journal, op_id) if due and engine is not None else {}
        for step in due:
            self._shown[(op_id, step.ordinal)] = (step.status, step.attempts)
            # On a terminal, lines fit its width; in a pipe or a log they are never wrapped.
            limit = self.console.width if self.style == "live" else None
            for line in _step_lines(view, step, width, skipped.get(step.ordinal, []), limit=limit):
                self._print(line)
        return view

    def _print(self, text: str) -> None:
        # Output that cannot be written (a closed pipe, a terminal gone with its SSH session) must
        # not stop a failover half-way: the display falls silent, the operation runs on.
        if self.style == "quiet":
            return
        try:
            self.console.print(text)
        except (OSError, ValueError, SystemExit):  # rich turns a broken pipe into SystemExit
            self.style = "quiet"

    def current_view(self) -> OperationView | None:
        # No lock here: rich calls this while holding its own lock, and the poller holds ours
        # while printing (which takes rich's). Reading a dict entry is atomic.
        current = self._current
        return self._views.get(current) if current else None


class _Footer:
    """The live part of the display (redrawn by rich several times a second)."""

    def __init__(self, display: Display) -> None:
        from rich.spinner import Spinner

        self.display = display
        self.spinner = Spinner("dots", style="cyan")

    def __rich__(self) -> RenderableType:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        view = self.display.current_view()
        if view is None:
            return Text("")
        now = current_time()
        total = len(view.steps)
        done = sum(1 for s in view.steps if s.status in ("succeeded", "skipped"))
        failed = sum(1 for s in view.steps if s.status == "failed")
        running = [s for s in view.steps if s.status == "running"]
        row = Table.grid(padding=(0, 1))
        wide = self.display.console.width >= 110
        row.add_row(
            self.spinner, Text(f"{view.kind} {view.id}" if wide else view.kind, style="bold"),
            ProgressBar(total=100, completed=view.percent, width=30 if wide else 16, complete_style="cyan",
                        finished_style="green"),
            Text(f"{view.percent:3.0f}%  {done}/{total} steps"),
            Text(f"{failed} failed", style="bold red") if failed else Text(""),
            Text(duration(view.elapsed_s(now)), style="dim"),
        )
        lines: list[RenderableType] = [row]
        for s in running[:4]:
            since = f", {duration((now - s.started_at).total_seconds())}" if s.started_at else ""
            lines.append(Text(f"    running {s.name} ({s.target or 'agent'}{since})", style="cyan"))
        if len(running) > 4:
            lines.append(Text(f"    and {len(running) - 4} more running", style="cyan"))
        from rich.console import Group

        return Group(*lines)


def _op_heading(view: OperationView) -> str:
    return (f"[bold]{escape(view.id)}[/] {escape(view.kind)} of plan {escape(view.plan)}: "
            f"{escape(view.source_site)} -> {escape(view.target_site)}, {plural(len(view.steps), 'step')} "
            f"({POLICY_WORDS.get(view.error_policy, view.error_policy)})")


def skipped_items(journal: Journal, op_id: str) -> dict[int, list[dict[str, Any]]]:
    """Per step ordinal, the items it did not attempt, with the reason (a VM failed earlier, the
    old site is unreachable ...). Not part of the engine's view, so read from the journal."""

    return skipped_in(journal.steps(op_id))


def skipped_in(steps: list[StepRow]) -> dict[int, list[dict[str, Any]]]:
    """:func:`skipped_items` of step rows already read."""

    found: dict[int, list[dict[str, Any]]] = {}
    for row in steps:
        items = [it for it in (row.outcome or {}).get("items", []) if it.get("skipped")]
        if items:
            found[row.ordinal] = items
    return found


def skip_lines(items: list[dict[str, Any]]) -> list[str]:
    """The items a step skipped, a line per reason (many VMs skipped for one reason read as one)."""

    by_reason: dict[str, list[str]] = {}
    for it in items:
        by_reason.setdefault(str(it["skipped"]), []).append(str(it.get("vm") or it.get("key")))
    lines = []
    for reason, names in by_reason.items():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        lines.append(f"[yellow]skipped {escape(shown)}:[/] {escape(reason)}")
    return lines


def _step_lines(view: OperationView, step: StepView, width: int, skipped: list[dict[str, Any]] | None = None, *,
                limit: int | None = None) -> list[str]:
    total = len(view.steps)
    number = f"{step.ordinal + 1:>{len(str(total))}}/{total}"
    word = STEP_WORD.get(step.status, step.status)
    style = STEP_STYLE.get(step.status, "")
    target = step.target or "agent"
    skipped = skipped or []
    if step.items:
        what = f"{step.changed} of {plural(step.items, 'item')} changed"
        if skipped:
            what += f", {len(skipped)} skipped"
    else:
        what = ""
    took = ""
    if step.started_at and step.finished_at:
        took = duration((step.finished_at - step.started_at).total_seconds())
    attempts = f"  (attempt {step.attempts})" if step.attempts > 1 else ""
    columns = f"{step.name:<{width}}  {target:<20} {what:<24} {took}{attempts}".rstrip()
    if limit is not None and len(number) + 12 + len(columns) > limit:
        # Too wide for this terminal: the same facts without the column padding.
        rest = ", ".join(x for x in (what, took + attempts) if x)
        lines = [f"  {number} [{style}]{word}[/] {escape(step.name)} [dim]{escape(target)}[/]"
                 + (f" {escape(rest)}" if rest else "")]
    else:
        lines = [f"  {number} [{style}]{word:<8}[/] {escape(step.name):<{width}}  {escape(target):<20} "
                 f"{what:<24} {took}{attempts}".rstrip()]
    for e in step.errors:
        lines.append("          " + error_text(e, step.target))
    lines += ["          " + line for line in skip_lines(skipped)]
    return lines


def error_text(e: dict[str, Any], target: str | None) -> str:
    """One error of a step as every report shows it: what it is about, its code and target, then
    the message (so an operator can grep a log for a code or a VM)."""

    about = e.get("vm") or e.get("key") or ""
    where = f" at {target}" if target else ""
    head = f"{about}: " if about else ""
    code = str(e.get("code", "error"))
    return f"[red]{escape(head)}{escape(code)}{escape(where)}:[/] {escape(str(e.get('message', '')))}"

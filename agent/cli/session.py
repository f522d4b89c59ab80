"""Running operations for a command, the same way for every command: a session (store, engine
and test-failover expiry scheduler wired to the sites), driving an operation with the display on
(asking the operator at a manual pause or before a real failover), and reporting how it ended,
with its exit code. Also the store alone, for the commands that only read it."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

import typer
from rich.markup import escape

from agent.cli.app import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_WAITING, echo, err, out, print_json
from agent.cli.progress import Display, error_text
from agent.cli.sites import OpenSites, open_sites
from agent.cli.vocabulary import (
    OP_STYLE,
    REAL_FAILOVERS,
    UNFINISHED,
    WAITING,
    age,
    command_line,
    current_time,
    duration,
    plural,
)
from agent.configfile import LoadedConfig
from agent.errors import AgentError, RefusedError

if TYPE_CHECKING:
    from agent.cli.remote import RemoteAgent
    from agent.engine.journal import Journal
    from agent.engine.lease import Holder, LeaseHeld
    from agent.engine.model import OperationView
    from agent.engine.reading import Reading
    from agent.engine.service import Engine
    from agent.engine.store import OperationRow, Store
    from agent.scheduler import Scheduler

_T = TypeVar("_T")

STORE_NAME = "agent.sqlite"


class NotConfirmed(RefusedError):
    code = "not_confirmed"


class Operator(Protocol):
    """Who a command talks to while it runs an operation (here or through a running agent)."""

    as_json: bool

    @property
    def can_ask(self) -> bool: ...

    def say(self, text: str = "") -> None: ...


# ---------------------------------------------------------------------- the operator


def is_interactive() -> bool:
    """Whether someone can answer a question (stdin is a terminal). Looked up by name at every
    call, so a test can stand in for the operator by replacing it here."""

    return sys.stdin is not None and sys.stdin.isatty()


def current_user() -> str:
    """Who is asking, for the journal and the audit trail."""

    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no user name (a container without a passwd entry)
        return "operator"


def _ask(question: str) -> bool:
    try:
        return typer.confirm(question, default=False)
    except typer.Abort:  # end of input (Ctrl-D) at the prompt: a no
        out.print()
        return False


# ----------------------------------------------------------------------------- store


def _store_url(loaded: LoadedConfig, path: Path | None = None) -> str:
    if path is not None:
        return f"sqlite:///{path.resolve()}"
    return loaded.config.store.url or f"sqlite:///{(loaded.data_dir / STORE_NAME).resolve()}"


def store_location(url: str) -> str:
    """The store as the operator may see it: a file path, or the URL without its password."""

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        return parsed.database or url
    return parsed.render_as_string(hide_password=True)


def _open_store(loaded: LoadedConfig, path: Path | None = None) -> Store:
    from sqlalchemy.exc import SQLAlchemyError

    from agent.cli.app import new_store_asked
    from agent.engine.store import store_error
    from agent.engine.storemark import open_marked
    from agent.errors import UnreachableError

    url = _store_url(loaded, path)
    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return open_marked(url, loaded.data_dir, new_store=new_store_asked(), actor=current_user())
    except (SQLAlchemyError, OSError) as exc:
        if isinstance(exc, OSError):
            mapped = store_error(exc, url)
            if mapped is not None:
                raise mapped from exc
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        if url.startswith("sqlite"):
            raise RefusedError(f"cannot open the store {store_location(url)}: {reason}",
                               hint="check the path and its permissions (agent.data_dir, store.url)") from exc
        raise UnreachableError(f"cannot reach the store {store_location(url)}: {reason}") from exc


def remove_store(path: Path) -> None:
    """A SQLite store and the files SQLite keeps beside it, so a fresh one starts empty (and is
    not taken for one that went missing: its marker in the data directory is dropped too)."""

    from agent.engine.storemark import forget

    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    forget(path.parent, f"sqlite:///{path.resolve()}")


@contextmanager
def open_journal(loaded: LoadedConfig) -> Iterator[Journal]:
    """The store alone, for the commands that only read it (or add a note): no site is contacted."""

    from agent.engine.journal import Journal

    store = _open_store(loaded)
    try:
        yield Journal(store, actor=loaded.config.agent.owner_id)
    finally:
        store.close()


@contextmanager
def open_engine(loaded: LoadedConfig, store: Store | None = None) -> Iterator[Engine]:
    """Store, sites and an engine for the commands that only look (status, plan): no scheduler,
    no due expiry run, nothing resumed -- they change nothing. A command that holds the store
    already passes it (opening it again would check its marker twice); it stays open."""

    from agent.engine.service import Engine

    own = store is None
    opened = _open_store(loaded) if store is None else store
    try:
        with open_sites(loaded, read_inventory=False) as sites:
            yield Engine(loaded.config, sites.ports, opened)
    finally:
        if own:
            opened.close()


# --------------------------------------------------------------------------- session


@dataclass
class Session:
    """What a command that runs operations works with, opened by :func:`open_session`."""

    loaded: LoadedConfig
    engine: Engine
    display: Display
    sites: OpenSites
    as_json: bool

    @property
    def journal(self) -> Journal:
        return self.engine.journal

    @property
    def can_ask(self) -> bool:
        """Whether the operator can be asked (a terminal, and stdout is not JSON for a program)."""

        return is_interactive() and not self.as_json

    def say(self, text: str = "") -> None:
        """A notice: on stdout, or on stderr when stdout carries JSON."""

        (err if self.as_json else out).print(text)


@contextmanager
def open_session(loaded: LoadedConfig, *, as_json: bool, store_path: Path | None = None) -> Iterator[Session]:
    """Sites, store, engine and the test-failover expiry scheduler, for one command; closed on the
    way out. Test failovers past their maximum age are cleaned up first."""

    from agent.engine.lease import holding
    from agent.engine.service import Engine
    from agent.scheduler import Scheduler

    display = Display.for_output(as_json)
    store = _open_store(loaded, store_path)
    try:
        # The lease before anything else: another process executing this store's operations
        # would otherwise have its running operation taken here "as interrupted" and run twice.
        with holding(store, lease_s=loaded.config.store.lease_s, refused=partial(_lease_refusal, loaded, store)), \
                open_sites(loaded, read_inventory=False) as sites:
            scheduler = Scheduler(store)
            engine = Engine(loaded.config, sites.ports, store, on_progress=display.progress, scheduler=scheduler)
            display.engine = engine
            # A forgotten test failover is cleaned up even if no agent runs as a service: the
            # expiries already due run first, in the foreground, before this command's own work
            # (not beside it, on the same VMs). The scheduler stays paused: it keeps the job
            # store, so a new test failover gets its expiry and a cleanup cancels it.
            scheduler.start(engine, paused=True)
            try:
                sess = Session(loaded, engine, display, sites, as_json)
                _run_due_expiries(sess, scheduler)
                yield sess
            finally:
                scheduler.shutdown()
    finally:
        store.close()


def refuse_if_led(loaded: LoadedConfig) -> None:
    """Refuse at once, naming it, when another live process holds the store's lease: before a
    command's checks (preflight, plan state), which would otherwise refuse it for a reason that
    hides the one that matters. The lease itself is taken by :func:`open_session`."""

    from agent.engine.lease import Lease

    store = _open_store(loaded)
    try:
        holder = Lease(store, lease_s=loaded.config.store.lease_s).current()
        if holder is not None and holder.live():
            raise _lease_refusal(loaded, store, holder)
    finally:
        store.close()


def request_cancel_of_led(loaded: LoadedConfig, op_id: str, kind: str, *, yes: bool) -> str | None:
    """Cancel an operation another live process is running: ask it to, through the store, and
    say who will act. None when no other process leads (the caller cancels by itself).

    Only the request is written -- the flag the leader's runner reads between stages, and the
    audit record -- so no lease is needed: this process executes nothing."""

    from agent.engine.journal import Journal
    from agent.engine.lease import Lease

    store = _open_store(loaded)
    try:
        holder = Lease(store, lease_s=loaded.config.store.lease_s).current()
        journal = Journal(store, actor=loaded.config.agent.owner_id)
        if holder is None or not holder.live() or journal.operation(op_id).status != "running":
            return None
        if kind in REAL_FAILOVERS and not yes:
            raise NotConfirmed(f"cancelling {kind.replace('_', ' ')} {op_id} rolls the failover back, and it is being "
                               f"run by {holder.describe()}: there is no preview from here; review it with "
                               f"{command_line(loaded, f'ops show {op_id}')}, then run again with --yes",
                               operation=op_id)
        journal.request_cancel(op_id, current_user())
        return holder.describe()
    finally:
        store.close()


def _lease_refusal(loaded: LoadedConfig, store: Store, holder: Holder) -> LeaseHeld:
    from agent.engine.journal import Journal
    from agent.engine.lease import LeaseHeld

    running = [op.id for op in Journal(store).operations(status=["running"], limit=10)]
    who = f"being run by {holder.describe()}"
    if running:
        what = f"operation {', '.join(running)} {'is' if len(running) == 1 else 'are'} {who}"
        watch = f"; watch it with {command_line(loaded, f'ops show {running[0]}')}"
    else:
        what = f"the operations of this store are {who}"
        watch = f"; see them with {command_line(loaded, 'ops list')}"
    return LeaseHeld(f"{what}{watch}. Nothing was changed: run this again once it is done, or stop that agent"
                     f"{_through_api(loaded, holder)}",
                     holder_host=holder.host, holder_pid=holder.pid, operations=running,
                     lease_until=holder.expires_at.isoformat(timespec="seconds") if holder.expires_at else None)


def _through_api(loaded: LoadedConfig, holder: Holder) -> str:
    """How to do it anyway when the holder is 'failover-agent serve': through its API, at the
    address the config gives it (the lease does not say which command holds it)."""

    import socket

    from agent.configapi import is_loopback

    api = loaded.config.api
    if not api.enabled:
        return ""
    here = holder.host in (None, socket.gethostname())
    host = api.host
    if host in ("0.0.0.0", "::"):  # every address: this machine's loopback, or the holder's name
        host = "127.0.0.1" if here else (holder.host or host)
    elif is_loopback(host) and not here:
        return (f". If that is 'failover-agent serve', its API listens on {host} of {holder.host} only: on that "
                f"machine, run the command with --agent-url {_url(api.tls is not None, host, api.port)}")
    return (f". If that is 'failover-agent serve', run the command through it: failover-agent --agent-url "
            f"{_url(api.tls is not None, host, api.port)} COMMAND (the token from $FAILOVER_AGENT_TOKEN or --token)")


def _url(tls: bool, host: str, port: int) -> str:
    return f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"


def _run_due_expiries(sess: Session, scheduler: Scheduler) -> None:
    now = current_time()
    due = sorted(op for op, when in scheduler.due() if when is not None and when <= now)
    if not due:
        return
    max_age = age(sess.loaded.config.policies.test_failover_max_age)
    for op_id in due:
        sess.say(f"[yellow]Test failover {op_id} is past its maximum age ({max_age}): cleaning it up by force "
                 "first.[/]")
        try:
            # A cleanup that ends well removes the expiry; otherwise it stays due for the next start.
            view = run_shown(sess, None, partial(sess.engine.expire_test_failover, op_id))
        except AgentError as exc:  # this command's own work may matter more: go on with it
            sess.say(f"  [red]could not clean it up now:[/] {escape(exc.message)}; tried again at the next "
                     "start ('run', 'ops resume', 'ops cancel' or the agent service)")
            continue
        if view is not None:
            sess.say(f"  {view.id} {view.kind}: [{OP_STYLE.get(view.status, '')}]{view.status}[/]")
    sess.say()


def drive(sess: Session, op_id: str, start: Callable[[], OperationView], *,
          answer_manual: bool = False) -> OperationView:
    """Run an operation with the display on; at a manual pause show the instruction and, when
    someone can answer, ask whether it is done (the demo answers itself: ``answer_manual``)."""

    view = run_shown(sess, op_id, start)
    while view.status == WAITING:
        _show_waiting(sess, view)
        if answer_manual:
            sess.say("[yellow]demo: answering the manual step[/] (an operator would do it, then answer y)")
        elif not sess.can_ask or not _ask("Done?"):
            return view
        view = run_shown(sess, op_id, lambda: sess.engine.resume(op_id, actor=current_user()))
    return view


@contextmanager
def _survive_hangup() -> Iterator[None]:
    """A lost terminal (an SSH session dropped) must not stop an operation half-way: SIGHUP is
    ignored while the engine runs and the operation goes on to its end or its next pause; the
    display falls silent and 'ops show' tells how it ended. Ctrl-C still stops it (resumable)."""

    import signal

    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def run_shown(sess: Session, op_id: str | None, start: Callable[[], _T]) -> _T:
    """``start()`` with the display following ``op_id`` (and whatever the engine runs meanwhile);
    on Ctrl-C, how to continue the operation left running."""

    try:
        with _survive_hangup(), sess.display.following(op_id):
            return start()
    except KeyboardInterrupt:
        if op_id is not None:
            err.print(f"\n{op_id} was left running; {command_line(sess.loaded, f'ops resume {op_id}')} continues it "
                      "from its journal (so does the next 'run').")
        raise


def _show_waiting(sess: Operator, view: OperationView) -> None:
    step = next((s for s in view.steps if s.status == "waiting"), None)
    sess.say()
    sess.say(f"[bold yellow]paused for a manual action[/] (step {escape(step.name if step else '?')}):")
    sess.say(f"  {escape(view.waiting_for or '(no instruction recorded)')}")


def resume_unfinished(sess: Session) -> None:
    """Finish what an agent left when it stopped, before this command's own work on the same VMs."""

    left = sorted(sess.engine.operations(status=list(UNFINISHED), limit=1000), key=lambda o: o.created_at)
    if not left:
        return
    sess.say(f"Resuming {plural(len(left), 'unfinished operation')} found in the store first "
             "(an agent stopped while running them):")
    for op in left:
        sess.say(f"  {op.id} {op.kind} of plan {escape(op.plan_name)} ({op.status})")
    not_resumed: list[tuple[str, AgentError]] = []
    views = run_shown(sess, left[0].id, lambda: sess.engine.resume_unfinished(
        on_failure=lambda op_id, exc: not_resumed.append((op_id, exc))))
    for view in views:
        sess.say(f"  {view.id}: [{OP_STYLE.get(view.status, '')}]{view.status}[/]"
                 + (f" -- resume it with {command_line(sess.loaded, f'ops resume {view.id}')}"
                    if view.status in (WAITING, "failed") else ""))
    for op_id, exc in not_resumed:
        sess.say(f"  {op_id}: [bold red]not resumed[/]: {escape(exc.message)}")
    sess.say()


def review(sess: Session, kind: str, plan_name: str, *, yes: bool, checksum: str | None,
           recovery_point: str | None = None) -> tuple[str | None, Reading | None]:
    """An operation that changes production is previewed and confirmed before anything changes;
    returns the checksum to pin it to (the plan the operator saw or named) and what that plan was
    read from, for the operation to be planned from the same read."""

    from agent.cli.preview import preview
    from agent.engine.service import PlanChanged

    if yes and checksum is None:
        return None, None  # reviewed elsewhere (or accepted blind, as asked): plan once, at create
    shown = preview(sess.engine, kind, plan_name, strict=True, recovery_point=recovery_point)
    actual = shown.checksum
    if checksum is not None and checksum != actual:
        raise PlanChanged(f"the plan for {plan_name} changed since it was reviewed (reviewed {checksum}, "
                          f"now {actual}); preview it again with "
                          f"'failover-agent plan --plan {plan_name} --kind {kind}'",
                          plan=plan_name, expected=checksum, actual=actual)
    if yes:
        return actual, shown.reading  # the plan line is printed once the operation is created
    label = kind.replace("_", " ")
    _confirm(sess, lambda: shown.text,
             f"Run this {label} of {plan_name} now ({len(shown.plan.vms)} VMs, "
             f"{shown.plan.source_site} -> {shown.plan.target_site})?",
             f"a {label} changes production and needs a confirmation",
             f"Review it {f'with failover-agent plan --kind {kind}' if sess.as_json else 'above'}, then run again "
             f"with --yes --checksum {actual}")
    return actual, shown.reading


def confirm_cancel(sess: Session, op: OperationRow, *, yes: bool) -> None:
    """Cancelling a failover changes production (it rolls the failover back): shown and asked
    like a failover, unless ``yes``."""

    from agent.cli.preview import cancel_preview

    if yes:
        return
    _confirm(sess, lambda: cancel_preview(sess.engine, op), f"Cancel {op.id} and undo it now?",
             f"cancelling {op.kind.replace('_', ' ')} {op.id} changes production (it rolls the failover back) and "
             "needs a confirmation",
             f"Review what it undoes {'without --json' if sess.as_json else 'above'}, then run again with --yes",
             operation=op.id)


def _confirm(sess: Operator, shown: Callable[[], str], question: str, needs: str, instead: str,
             **fields: Any) -> None:
    """Show what would change and ask. With --json the preview stays off stdout (one document)
    and is not even computed; with nobody to ask, refused with how to review and confirm instead."""

    if not sess.as_json:
        echo(shown(), nl=False)
        out.print()
    if not sess.can_ask:
        raise NotConfirmed(f"{needs}, and there is nobody to ask (stdin is not a terminal"
                           f"{' or --json' if sess.as_json else ''}). {instead}", **fields)
    if not _ask(question):
        raise NotConfirmed("not confirmed", **fields)


def create_operation(sess: Session, kind: str, plan_name: str, expect: str | None, *,
                     take_over: bool = False, recovery_point: str | None = None,
                     reading: Reading | None = None) -> str:
    """A new operation in the store (its id); a VM already busy, or nothing to follow up, is
    refused with the command that would clear the way. ``reading``: the review's, which the
    operation is planned from (the sites are read once per run)."""

    from agent.engine.journal import VmBusy
    from agent.engine.model import OperationKind
    from agent.errors import ConflictError, NotFoundError

    try:
        return sess.engine.create(OperationKind(kind), plan_name, requested_by=current_user(),
                                  expect_checksum=expect, take_over=take_over, recovery_point=recovery_point,
                                  reading=reading)
    except VmBusy as exc:
        ops = exc.fields.get("operations") or ["OP"]
        first = ops[0]
        raise RefusedError(
            f"{exc.message}. Finish {'it' if len(ops) == 1 else 'them'} first "
            f"({command_line(sess.loaded, f'ops resume {first}')}) or cancel {'it' if len(ops) == 1 else 'them'} "
            f"({command_line(sess.loaded, f'ops cancel {first}')}; cancelling a test failover cleans it up)") from exc
    except (NotFoundError, ConflictError) as exc:  # e.g. no test failover to clean up; nothing changed
        raise RefusedError(exc.message, **exc.fields) from exc


def outcome_exit_code(view: OperationView) -> int:
    """The documented exit code for how an operation ended (3 when only unreachable systems failed it)."""

    if view.status == "succeeded":
        return EXIT_OK
    if view.status == WAITING:
        return EXIT_WAITING
    if view.status == "failed" and view.errors and all(e.get("category") == "transient" for e in view.errors):
        return EXIT_UNREACHABLE
    return EXIT_FAILED


def conclude(sess: Session, view: OperationView, *, extra: dict[str, Any] | None = None) -> NoReturn:
    """Report how an operation ended and leave with its exit code."""

    if sess.as_json:
        print_json({**view.to_json(current_time()), **(extra or {})})
    else:
        print_outcome(sess.loaded, view)
    raise typer.Exit(outcome_exit_code(view))


def print_outcome(loaded: LoadedConfig | RemoteAgent, view: OperationView) -> None:
    """How an operation ended, what failed and why, and the command to run next (with the same
    config, or through the same running agent)."""

    op = view.id
    took = duration(view.elapsed_s(current_time()))
    style = OP_STYLE.get(view.status, "")
    head = f"[{style}]{view.status.replace('_', ' ')}[/]: {view.kind} {op} of plan {escape(view.plan)}"
    out.print()
    if view.status == WAITING:
        out.print(f"[{style}]paused[/]: {view.kind} {op} of plan {escape(view.plan)} waits for the manual action "
                  f"above ({view.percent:.0f}% done).")
        out.print(f"When it is done: {command_line(loaded, f'ops resume {op}')}   (to undo instead: "
                  f"{command_line(loaded, f'ops cancel {op}')})")
        return
    vms = view.succeeded_vms
    out.print(f"{head} after {took}, {plural(len(view.steps), 'step')}"
              + (f"; VMs: {escape(', '.join(vms))}" if vms and view.status == "succeeded" else ""))
    if view.failed_vms:
        out.print(f"  [red]VMs that failed:[/] {escape(', '.join(view.failed_vms))}")
        if view.status == "partially_succeeded" and vms:
            out.print(f"  VMs that succeeded: {escape(', '.join(vms))}")
    targets = {s.name: s.target for s in view.steps}
    for e in view.errors:
        out.print(f"  - {error_text(e, targets.get(e.get('step', '')))}  [dim](step {escape(e.get('step', ''))})[/]")
    for hint in _next_steps(loaded, view):
        out.print(hint)


def _next_steps(loaded: LoadedConfig | RemoteAgent, view: OperationView) -> list[str]:
    op, plan = view.id, view.plan
    if view.status == "failed":
        return [f"Fix the cause, then start it again from the failed step: {command_line(loaded, f'ops resume {op}')}",
                f"or undo what it did: {command_line(loaded, f'ops cancel {op}')}"]
    if view.status not in ("succeeded", "partially_succeeded"):
        return []
    if view.kind == "test_failover":
        max_age = age(loaded.config.policies.test_failover_max_age) if isinstance(loaded, LoadedConfig) \
            else "its maximum age (policies.test_failover_max_age of the agent's config)"
        return [f"The test VMs run in isolated networks. When the drill is over: "
                f"{command_line(loaded, f'run --plan {plan} --kind cleanup')}",
                f"(a test failover left alone is cleaned up by force after {max_age})."]
    hints = []
    if view.failed_vms:
        hints.append("The VMs that failed need attention (the errors above; "
                     f"{command_line(loaded, f'ops show {op}')}).")
    if view.kind in (*REAL_FAILOVERS, "change_recovery_point"):
        hints.append("Once the VMs are checked, make it final: "
                     f"{command_line(loaded, f'run --plan {plan} --kind commit')}")
    elif view.kind == "commit":
        hints.append(f"Then protect the way back: {command_line(loaded, f'run --plan {plan} --kind reverse')}")
    elif view.kind == "reverse":
        hints.append(f"The VMs replicate back to {view.source_site}. To return there, when it is time: "
                     f"{command_line(loaded, f'run --plan {plan} --kind failback')}")
    return hints

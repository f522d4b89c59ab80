"""The ``failover-agent`` command line: check a config, preview a failover, run operations and
look after them (``ops``), try the demo.

Results go to stdout, problems and logs to stderr, so ``--json`` output can be piped as is.
Exit codes (also in ``--help`` and the README) follow what the caller does next:

* 0 -- done;
* 1 -- the operation failed or partially succeeded (an outside system refused a call, or a bug:
  see the message, which names the VMs that failed);
* 2 -- bad config or refused input: fix the file or the request and run again (nothing changed);
* 3 -- an outside system could not be reached or did not answer in time: try again later;
* 4 -- an operation is paused for a manual action: do it, then ``failover-agent ops resume OP``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from agent import __version__
from agent.errors import AgentError, RefusedError, TransientError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_UNREACHABLE = 3
EXIT_WAITING = 4

ENV_LOG_LEVEL = "FAILOVER_AGENT_LOG_LEVEL"

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 the operation failed (or partially succeeded: the VMs that failed are "
    "named); 2 bad config or refused request "
    "(nothing changed; every problem is listed with file, line and key); "
    "3 a VMM, Hyper-V, DNS or router endpoint could not be reached (try again later); "
    "4 the operation is paused for a manual action (do it, then 'failover-agent ops resume OP')."
)

app = typer.Typer(
    name="failover-agent",
    help=(
        "The network side of disaster recovery for Hyper-V / System Center VMM sites: reserves "
        "IP addresses in VMM static pools, sets failover IPs on replica NICs, builds isolated "
        "test networks, moves subnet routes and updates DNS.\n\n"
        "Start with 'failover-agent demo' (two simulated sites, nothing real is touched). "
        "'plan' previews a failover, 'run' carries one out with live progress, 'ops' looks after "
        "the operations recorded in the store. "
        "Commands read the config given by --config, else the file named by "
        "$FAILOVER_AGENT_CONFIG, else the demo config shipped with the agent.\n\n"
        + EXIT_CODES_HELP
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(
    help="Work with the config file format (JSON Schema for editors, a template for a real site).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(config_app, name="config")
ops_app = typer.Typer(
    help="Look after the operations recorded in the agent's store: list them, show one (steps, "
    "errors, notes), resume one paused for a manual action or stopped by an error, cancel one "
    "(undoing what is safe to undo), add a note, read the audit trail. Commands that only read "
    "work even when the sites cannot be reached.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(ops_app, name="ops")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Kind(StrEnum):
    test = "test"
    planned = "planned"
    unplanned = "unplanned"


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="PATH",
        help="Config file (YAML). Default: $FAILOVER_AGENT_CONFIG, else the shipped demo config.",
        dir_okay=False,
        show_default=False,
    ),
]


# -------------------------------------------------------------------------- plumbing


def _version(value: bool) -> None:
    if value:
        typer.echo(f"failover-agent {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level",
            envvar=ENV_LOG_LEVEL,
            metavar="LEVEL",
            help="Log detail on stderr: debug, info, warning or error. Logs are JSON lines when "
            "stderr is not a terminal.",
        ),
    ] = "warning",
) -> None:
    from agent.logging import LEVELS, configure_logging

    if log_level.lower() not in LEVELS:
        raise typer.BadParameter(f"use one of {', '.join(LEVELS)}", param_hint="--log-level")
    configure_logging(log_level.lower())


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an error."""

    if isinstance(exc, RefusedError):
        return EXIT_REFUSED
    if isinstance(exc, TransientError):
        return EXIT_UNREACHABLE
    return EXIT_FAILED


@dataclass
class _Mode:
    json: bool = False


@contextmanager
def _reporting(mode: _Mode) -> Iterator[None]:
    """Turn the agent's errors into a readable report and the documented exit code."""

    try:
        yield
    except typer.Exit:
        raise
    except AgentError as exc:
        _report_error(exc, mode)
        raise typer.Exit(exit_code_for(exc)) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:  # a bug: say so plainly, keep the traceback for the logs
        from agent.logging import get_logger

        get_logger("agent.cli").exception("unexpected error")
        if mode.json:
            _json_out({"error": {"code": "internal_error", "category": "permanent", "message": str(exc)}})
        err.print(
            f"error: unexpected {type(exc).__name__}: {escape(str(exc))}\n"
            "This is a bug in failover-agent; run again with --log-level debug and report the log."
        )
        raise typer.Exit(EXIT_FAILED) from None


def _report_error(exc: AgentError, mode: _Mode) -> None:
    from agent.domain.validation import PlanRefused
    from agent.yamlfile import InvalidFileError

    if mode.json:
        body = exc.to_dict()
        if isinstance(exc, InvalidFileError):
            body["problems"] = [p.to_dict() for p in exc.problems]
        _json_out({"error": body})
    if isinstance(exc, InvalidFileError):
        _print_problems(exc)
    elif isinstance(exc, PlanRefused):
        head = exc.message.splitlines()[0]
        err.print(f"[bold red]refused:[/] {escape(head)}")
        for r in exc.reasons:
            # The structured facts the sentence does not already say (a NIC, a network ...).
            about = ", ".join(
                f"{k}={v}" for k, v in r.fields.items() if isinstance(v, (str, int)) and str(v) not in r.message
            )
            suffix = f"  ({escape(about)})" if about else ""
            err.print(f"  - {escape(f'[{r.code}]')} {escape(r.message)}{suffix}")
        err.print("Nothing was changed. Fix the inventory or the config and plan again.")
    else:
        label = {EXIT_REFUSED: "refused", EXIT_UNREACHABLE: "unreachable"}.get(exit_code_for(exc), "failed")
        err.print(f"[bold red]{label}:[/] {escape(exc.message)}")
        details = {
            k: v for k, v in exc.fields.items() if isinstance(v, (str, int, float)) and str(v) not in exc.message
        }
        if details:
            err.print("  " + escape(", ".join(f"{k}={v}" for k, v in details.items())))
        if isinstance(exc, TransientError):
            err.print("Nothing was changed by this command; try again when the system answers.")


def _print_problems(exc: Any) -> None:
    problems = exc.problems
    files = sorted({p.file for p in problems})
    noun = "problem" if len(problems) == 1 else "problems"
    err.print(f"[bold red]{len(problems)} {noun}[/] in {escape(', '.join(files))}:")
    for p in problems:
        where = f"{p.file}:{p.line}" if p.line else p.file
        key = f"[cyan]{escape(p.key)}[/]: " if p.key else ""
        err.print(f"  {escape(where)}: {key}{escape(p.message)}")
    hint = getattr(exc, "hint", None)
    if hint:
        err.print(escape(hint))


def _json_out(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


# ------------------------------------------------------------------------ the steps


def _load(config: Path | None) -> Any:
    from agent.configfile import ENV_CONFIG, load_config, resolve_config_path

    path, source = resolve_config_path(config)
    if source == "env" and not path.exists():
        # Otherwise the admin sees a path they never typed and no hint where it came from.
        raise RefusedError(f"${ENV_CONFIG} names {path}, which does not exist", file=str(path))
    return load_config(path, source=source)


@dataclass
class _World:
    loaded: Any
    drivers: Any
    inventory: Any


@contextmanager
def _open_world(loaded: Any, *, reset_sim: bool = False, dns_purpose: str | None = None,
                read_inventory: bool = True) -> Iterator[_World]:
    """Drivers for ``loaded`` and the inventory they read (unless ``read_inventory`` is false: the
    engine reads its own); closed on the way out."""

    from agent.drivers import build_drivers
    from agent.inventory import gather_inventory

    _check_sim_inventory(loaded)
    _prepare_sim_state(loaded, reset=reset_sim)
    drivers = build_drivers(loaded)
    try:
        inventory = (gather_inventory(loaded.config, drivers, dns_purpose=dns_purpose)  # type: ignore[arg-type]
                     if read_inventory else None)
        yield _World(loaded, drivers, inventory)
    finally:
        drivers.close()


def _check_sim_inventory(loaded: Any) -> None:
    # The simulator reads its inventory only when it seeds a new state file; a broken inventory
    # must be reported every time, not only on the first run.
    if loaded.simulator_inventory is None:
        return
    from agent.drivers.sim.inventory import load_inventory

    load_inventory(loaded.simulator_inventory)


def _prepare_sim_state(loaded: Any, *, reset: bool) -> None:
    """The demo's world is disposable: start it afresh when asked or when the shipped inventory
    changed (an upgrade). Any other config only gets a warning: its state may matter."""

    if loaded.simulator_inventory is None or loaded.simulator_state is None:
        return
    if not loaded.simulator_state.exists():
        return
    from agent.drivers.sim import SimWorld

    world = SimWorld.open(loaded.simulator_inventory, loaded.simulator_state)
    if reset or (loaded.is_demo and world.inventory_changed):
        world.reset()
    elif world.inventory_changed:
        err.print(
            f"[yellow]warning:[/] {escape(str(loaded.simulator_inventory))} changed since the simulated "
            f"world in {escape(str(loaded.simulator_state))} was created from it; the world still "
            "shows the old inventory (delete the state file to start afresh)."
        )


def _summary(loaded: Any, inventory: Any | None = None) -> str:
    cfg = loaded.config
    primary, recovery = (s.name for s in cfg.sites)
    plans = ", ".join(
        f"{p.name} ({len(p.vms)} VM{'s' if len(p.vms) != 1 else ''} in {len(p.groups)} "
        f"group{'s' if len(p.groups) != 1 else ''})"
        for p in cfg.recovery_plans
    ) or "none"
    lines = [
        f"sites: {primary} <-> {recovery}; this agent runs at {cfg.agent.site} in {cfg.agent.mode} mode",
        f"network mappings: {len(cfg.network_mappings)} "
        f"({_count(m.ip_strategy for m in cfg.network_mappings)})",
        f"subnets failing over whole: {', '.join(s.prefix for s in cfg.subnets if not s.stretched) or 'none'}",
        f"DNS: {len(cfg.dns.servers)} server{'s' if len(cfg.dns.servers) != 1 else ''}, "
        f"{len(cfg.dns.zones)} zone{'s' if len(cfg.dns.zones) != 1 else ''}",
        f"recovery plans: {plans}",
    ]
    if inventory is not None:
        replicated = {r.vm for r in inventory.replications}
        lines.append(
            f"inventory: {len(replicated)} replicated VMs, {len(inventory.vm_networks)} VM networks, "
            f"{len(inventory.pools)} static pools, {len(inventory.record_sets)} DNS record sets, "
            f"{len(inventory.routes)} routes read"
        )
    return "\n".join("  " + line for line in lines)


def _count(items: Any) -> str:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in counts.items()) or "none"


def _where(loaded: Any) -> str:
    how = {"option": "--config", "env": "$FAILOVER_AGENT_CONFIG", "demo": "the shipped demo"}[loaded.source]
    return f"{loaded.path} (from {how})"


def _validate(loaded: Any, *, reset_sim: bool = False) -> None:
    from agent.configfile import validate_against_inventory
    from agent.drivers import NotAvailableYet, check_available

    try:
        check_available(loaded)
    except NotAvailableYet:
        # Say what did pass: someone filling in the site template can check the file today.
        err.print(
            f"the file itself is valid (format and internal references): {escape(str(loaded.path))}\n"
            "but it cannot be checked against the sites yet:"
        )
        raise
    with _open_world(loaded, reset_sim=reset_sim) as world:
        validate_against_inventory(loaded, world.inventory)
        out.print(f"config OK: {escape(_where(loaded))}")
        out.print(escape(_summary(loaded, world.inventory)))


def _plan(loaded: Any, plan_name: str, kind: str) -> Any:
    from agent.domain.planning import build_plan

    # A test failover writes only to test DNS servers, the others only to production ones.
    with _open_world(loaded, dns_purpose="test" if kind == "test" else "production") as world:
        return build_plan(loaded.config, world.inventory, plan_name, kind)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- commands


@app.command(
    help="Check a config file: its format, its internal references (sites, routers, hosts, DNS "
    "servers), and that the VM networks and VMs it names exist at the sites. Prints 'config OK' "
    "with a short summary, or every problem found with file, line and key.\n\n" + EXIT_CODES_HELP
)
def validate(config: ConfigOption = None) -> None:
    with _reporting(_Mode()):
        _validate(_load(config))


@app.command(
    help="Preview what a failover of a recovery plan would change, without changing anything: "
    "IP reservations in VMM pools, failover IPs on replica NICs, test networks, route moves and "
    "DNS records, per group and VM, then a summary line. A plan that breaks a rule (a subnet "
    "left half behind, a test network that cannot work, an exhausted pool ...) is refused with "
    "every reason.\n\n" + EXIT_CODES_HELP
)
def plan(
    plan_name: Annotated[
        str, typer.Option("--plan", "-p", metavar="NAME", help="Recovery plan name (recovery_plans[].name).")
    ],
    kind: Annotated[
        Kind,
        typer.Option(
            "--kind",
            "-k",
            help="test: a drill in isolated networks, production untouched. planned: source VMs "
            "shut down first, no data loss. unplanned: the primary site is lost.",
            case_sensitive=False,
        ),
    ],
    config: ConfigOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the plan as JSON on stdout (nothing else goes to stdout).")
    ] = False,
) -> None:
    mode = _Mode(json=as_json)
    with _reporting(mode):
        result = _plan(_load(config), plan_name, kind.value)
        if as_json:
            _json_out(result.to_json())
        else:
            from agent.domain.plan import render_diff

            typer.echo(render_diff(result), nl=False)


@config_app.command("schema", help="Print the JSON Schema of the config file, for editors (e.g. the "
                    "YAML extension of VS Code: '# yaml-language-server: $schema=<file>').")
def config_schema() -> None:
    with _reporting(_Mode(json=True)):
        from agent.config import AgentConfig

        schema = AgentConfig.model_json_schema()
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "failover-agent config",
            **{k: v for k, v in schema.items() if k != "title"},
        }
        _json_out(schema)


@config_app.command("template", help="Print a commented config template for a real pair of sites "
                    "(PowerShell remoting to VMM and Hyper-V, RFC 2136 DNS). Save it, fill it in, "
                    "then run 'failover-agent validate --config FILE'.")
def config_template() -> None:
    with _reporting(_Mode()):
        from agent.configfile import demo_dir

        typer.echo((demo_dir() / "site-template.yaml").read_text(encoding="utf-8"), nl=False)


# ----------------------------------------------------------------------- operations

STORE_NAME = "agent.sqlite"
DEMO_STORE_NAME = "demo-operations.sqlite"
"""The demo keeps its operations apart from 'failover-agent run' on the demo config."""

OPERATION_KINDS = ("prepare", "test_failover", "cleanup_test", "planned_failover", "unplanned_failover",
                   "commit", "reverse", "failback")
"""What 'run --kind' accepts (``agent.engine.model.OperationKind`` without ``cancel``, which is
'ops cancel')."""
KIND_ALIASES = {"test": "test_failover", "cleanup": "cleanup_test", "planned": "planned_failover",
                "unplanned": "unplanned_failover"}
REAL_FAILOVERS = ("planned_failover", "unplanned_failover", "failback")
"""They change production: previewed and confirmed (or --yes) before anything runs."""
FOLLOW_UPS = ("cleanup_test", "commit", "reverse")
"""They execute the stored plan of the operation they follow, not a fresh one."""

WAITING = "waiting_for_manual_action"
FINAL = ("succeeded", "partially_succeeded", "cancelled")
UNFINISHED = ("running", "interrupted", "pending")
STATUS_ALIASES = {"waiting": WAITING, "partial": "partially_succeeded"}
STATUSES = ("pending", "running", WAITING, "succeeded", "partially_succeeded", "failed", "interrupted",
            "cancelled")

_OP_STYLE = {"succeeded": "green", "partially_succeeded": "yellow", "failed": "bold red", WAITING: "bold yellow",
             "cancelled": "magenta", "running": "cyan", "interrupted": "yellow", "pending": "dim"}
_STEP_WORD = {"succeeded": "ok", "failed": "FAILED", "skipped": "skipped", "waiting": "WAITING",
              "running": "running", "pending": "pending"}
_POLICY_WORDS = {"stop_at_first_error": "stops at the first error", "carry_on": "carries on past errors"}
_STEP_STYLE = {"succeeded": "green", "failed": "bold red", "skipped": "dim", "waiting": "bold yellow",
               "running": "cyan", "pending": "dim"}


class UnknownOperation(RefusedError):
    code = "unknown_operation"


class NotConfirmed(RefusedError):
    code = "not_confirmed"


def _interactive() -> bool:
    """Whether the operator can be asked (stdin is a terminal). Tests replace this."""

    return sys.stdin is not None and sys.stdin.isatty()


def _actor() -> str:
    """Who is asking, for the journal and the audit trail."""

    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no user name (a container without a passwd entry)
        return "operator"


def _kind_option(value: str | None) -> str | None:
    if value is None:
        return None
    kind = KIND_ALIASES.get(value.lower().replace("-", "_"), value.lower().replace("-", "_"))
    if kind not in OPERATION_KINDS:
        raise typer.BadParameter(
            f"{value!r} is not a kind; use one of {', '.join(OPERATION_KINDS)} "
            f"(or {', '.join(KIND_ALIASES)})"
        )
    return kind


def _status_option(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out_ = []
    for value in values:
        status = STATUS_ALIASES.get(value.lower(), value.lower())
        if status not in STATUSES:
            raise typer.BadParameter(f"{value!r} is not a status; use one of {', '.join(STATUSES)} "
                                     f"(or waiting, partial)")
        out_.append(status)
    return out_


def _cmd(loaded: Any, args: str) -> str:
    """A command line to show the operator, with the same config as this one."""

    extra = f" --config {loaded.path}" if loaded.source == "option" else ""
    return f"failover-agent {args}{extra}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _when(at: Any) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else "-"


def _now() -> Any:
    from agent.engine.store import utcnow

    return utcnow()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# ---------------------------------------------------------------------------- store


def _store_url(loaded: Any, path: Path | None = None) -> str:
    if path is not None:
        return f"sqlite:///{path.resolve()}"
    return loaded.config.store.url or f"sqlite:///{(loaded.data_dir / STORE_NAME).resolve()}"


def _shown_url(url: str) -> str:
    """The store as the operator may see it: a file path, or the URL without its password."""

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        return parsed.database or url
    return parsed.render_as_string(hide_password=True)


def _open_store(loaded: Any, path: Path | None = None) -> Any:
    from sqlalchemy.exc import SQLAlchemyError

    from agent.engine.store import Store
    from agent.errors import UnreachableError

    url = _store_url(loaded, path)
    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return Store.open(url)
    except (SQLAlchemyError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        if url.startswith("sqlite"):
            raise RefusedError(f"cannot open the store {_shown_url(url)}: {reason}",
                               hint="check the path and its permissions (agent.data_dir, store.url)") from exc
        raise UnreachableError(f"cannot reach the store {_shown_url(url)}: {reason}") from exc


def _remove_store(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextmanager
def _journal(loaded: Any) -> Iterator[Any]:
    """The store alone, for the commands that only read it (or add a note): no site is contacted."""

    from agent.engine.journal import Journal

    store = _open_store(loaded)
    try:
        yield Journal(store, actor=loaded.config.agent.owner_id)
    finally:
        store.close()


def _resolve_op(journal: Any, text: str) -> str:
    """An operation id as typed: the whole id or a unique prefix (``op-3f2a`` or ``3f2a``)."""

    from agent.errors import NotFoundError

    try:
        return journal.operation(text).id
    except NotFoundError:
        pass
    ids = [o.id for o in journal.operations(limit=100_000)]
    # At least 4 characters of the id itself: 'op-' alone must not pick "the only operation".
    long_enough = len(text.removeprefix("op-")) >= 4
    matches = [i for i in ids if i.startswith(text) or i.startswith("op-" + text)] if long_enough else []
    if len(matches) == 1:
        return matches[0]
    where = _shown_url(str(journal.store.engine.url))
    if matches:
        raise UnknownOperation(f"{text!r} matches {len(matches)} operations ({', '.join(matches[:5])}"
                               f"{' ...' if len(matches) > 5 else ''}); give more of the id", operation=text)
    raise UnknownOperation(f"no operation {text!r} in the store {where}; 'failover-agent ops list' shows "
                           "the operations it holds (is this the same --config?)", operation=text)


# -------------------------------------------------------------------------- display


class _Display:
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
        self.engine: Any = None
        self._lock = threading.RLock()
        self._owner = threading.current_thread()
        self._headed: set[str] = set()
        self._shown: dict[tuple[str, int], tuple[str, int]] = {}
        self._views: dict[str, Any] = {}
        self._current: str | None = None
        self._followed: list[str] = []

    @classmethod
    def for_output(cls, as_json: bool) -> _Display:
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

    def _refresh(self, op_id: str) -> Any:
        view = self.engine.view(op_id)
        self._views[op_id] = view
        if op_id not in self._headed:
            self._headed.add(op_id)
            self._print(_op_heading(view))
        width = min(max((len(s.name) for s in view.steps), default=10), 64)
        due = [s for s in view.steps if s.status not in ("pending", "running")
               and self._shown.get((op_id, s.ordinal)) != (s.status, s.attempts)]
        skipped = _skipped_items(self.engine.journal, op_id) if due else {}
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

    def current_view(self) -> Any:
        # No lock here: rich calls this while holding its own lock, and the poller holds ours
        # while printing (which takes rich's). Reading a dict entry is atomic.
        current = self._current
        return self._views.get(current) if current else None


class _Footer:
    """The live part of the display (redrawn by rich several times a second)."""

    def __init__(self, display: _Display) -> None:
        from rich.spinner import Spinner

        self.display = display
        self.spinner = Spinner("dots", style="cyan")

    def __rich__(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        view = self.display.current_view()
        if view is None:
            return Text("")
        now = _now()
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
            Text(_duration(view.elapsed_s(now)), style="dim"),
        )
        lines: list[Any] = [row]
        for s in running[:4]:
            since = f", {_duration((now - s.started_at).total_seconds())}" if s.started_at else ""
            lines.append(Text(f"    running {s.name} ({s.target or 'agent'}{since})", style="cyan"))
        if len(running) > 4:
            lines.append(Text(f"    and {len(running) - 4} more running", style="cyan"))
        from rich.console import Group

        return Group(*lines)


def _op_heading(view: Any) -> str:
    return (f"[bold]{escape(view.id)}[/] {escape(view.kind)} of plan {escape(view.plan)}: "
            f"{escape(view.source_site)} -> {escape(view.target_site)}, {_plural(len(view.steps), 'step')} "
            f"({_POLICY_WORDS.get(view.error_policy, view.error_policy)})")


def _skipped_items(journal: Any, op_id: str) -> dict[int, list[dict[str, Any]]]:
    """Per step ordinal, the items it did not attempt, with the reason (a VM failed earlier, the
    old site is unreachable ...). Not part of the engine's view, so read from the journal."""

    found: dict[int, list[dict[str, Any]]] = {}
    for row in journal.steps(op_id):
        items = [it for it in (row.outcome or {}).get("items", []) if it.get("skipped")]
        if items:
            found[row.ordinal] = items
    return found


def _skip_lines(items: list[dict[str, Any]]) -> list[str]:
    by_reason: dict[str, list[str]] = {}
    for it in items:
        by_reason.setdefault(str(it["skipped"]), []).append(str(it.get("vm") or it.get("key")))
    lines = []
    for reason, names in by_reason.items():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        lines.append(f"[yellow]skipped {escape(shown)}:[/] {escape(reason)}")
    return lines


def _step_lines(view: Any, step: Any, width: int, skipped: list[dict[str, Any]] | None = None, *,
                limit: int | None = None) -> list[str]:
    total = len(view.steps)
    number = f"{step.ordinal + 1:>{len(str(total))}}/{total}"
    word = _STEP_WORD.get(step.status, step.status)
    style = _STEP_STYLE.get(step.status, "")
    target = step.target or "agent"
    skipped = skipped or []
    if step.items:
        what = f"{step.changed} of {_plural(step.items, 'item')} changed"
        if skipped:
            what += f", {len(skipped)} skipped"
    else:
        what = ""
    took = ""
    if step.started_at and step.finished_at:
        took = _duration((step.finished_at - step.started_at).total_seconds())
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
        lines.append("          " + _error_text(e, step.target))
    lines += ["          " + line for line in _skip_lines(skipped)]
    return lines


def _error_text(e: dict[str, Any], target: str | None) -> str:
    about = e.get("vm") or e.get("key") or ""
    where = f" at {target}" if target else ""
    head = f"{about}: " if about else ""
    return f"[red]{escape(head)}{escape(str(e.get('code', 'error')))}{escape(where)}:[/] {escape(str(e.get('message', '')))}"


# ---------------------------------------------------------------------------- session


@dataclass
class _Session:
    loaded: Any
    engine: Any
    display: _Display
    drivers: Any
    as_json: bool

    @property
    def journal(self) -> Any:
        return self.engine.journal

    def say(self, text: str = "") -> None:
        """A notice: on stdout, or on stderr when stdout carries JSON."""

        (err if self.as_json else out).print(text)


@contextmanager
def _session(loaded: Any, *, as_json: bool, store_path: Path | None = None) -> Iterator[_Session]:
    """Drivers, store, engine and the test-failover expiry scheduler, for one command."""

    from agent.engine.service import Engine
    from agent.scheduler import Scheduler

    display = _Display.for_output(as_json)
    store = _open_store(loaded, store_path)
    try:
        with _open_world(loaded, read_inventory=False) as world:
            scheduler = Scheduler(store)
            engine = Engine(loaded.config, world.drivers, store, on_progress=display.progress, scheduler=scheduler)
            display.engine = engine
            # A forgotten test failover is cleaned up even if no agent runs as a service: the
            # expiries already due run first, in the foreground, before this command's own work
            # (not beside it, on the same VMs). The scheduler stays paused: it keeps the job
            # store, so a new test failover gets its expiry and a cleanup cancels it.
            scheduler.start(engine, paused=True)
            try:
                sess = _Session(loaded, engine, display, world.drivers, as_json)
                _run_due_expiries(sess, scheduler)
                yield sess
            finally:
                scheduler.shutdown()
    finally:
        store.close()


def _run_due_expiries(sess: _Session, scheduler: Any) -> None:
    now = _now()
    due = sorted(op for op, when in scheduler.due() if when is not None and when <= now)
    if not due:
        return
    age = _age(sess.loaded.config.policies.test_failover_max_age)
    for op_id in due:
        sess.say(f"[yellow]Test failover {op_id} is past its maximum age ({age}): cleaning it up by force "
                 "first.[/]")
        try:
            # A cleanup that ends well removes the expiry; otherwise it stays due for the next start.
            view = _shown_run(sess, None, lambda op_id=op_id: sess.engine.expire_test_failover(op_id))
        except AgentError as exc:  # this command's own work may matter more: go on with it
            sess.say(f"  [red]could not clean it up now:[/] {escape(exc.message)}; tried again at the next "
                     "start ('run', 'ops resume', 'ops cancel' or the agent service)")
            continue
        if view is not None:
            sess.say(f"  {view.id} {view.kind}: [{_OP_STYLE.get(view.status, '')}]{view.status}[/]")
    sess.say()


def _drive(sess: _Session, op_id: str, start: Callable[[], Any], *, interactive: bool,
           answer_manual: bool = False) -> Any:
    """Run an operation with the display on; at a manual pause show the instruction and, when
    someone can answer, ask whether it is done."""

    view = _shown_run(sess, op_id, start)
    while view.status == WAITING:
        _show_waiting(sess, view)
        if answer_manual:
            sess.say("[yellow]demo: answering the manual step[/] (an operator would do it, then answer y)")
        elif not interactive or not _ask("Done?"):
            return view
        view = _shown_run(sess, op_id, lambda: sess.engine.resume(op_id, actor=_actor()))
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


def _shown_run(sess: _Session, op_id: str | None, start: Callable[[], Any]) -> Any:
    try:
        with _survive_hangup(), sess.display.following(op_id):
            return start()
    except KeyboardInterrupt:
        if op_id is not None:
            err.print(f"\n{op_id} was left running; {_cmd(sess.loaded, f'ops resume {op_id}')} continues it "
                      "from its journal (so does the next 'run').")
        raise


def _ask(question: str) -> bool:
    try:
        return typer.confirm(question, default=False)
    except typer.Abort:  # end of input (Ctrl-D) at the prompt: a no
        out.print()
        return False


def _show_waiting(sess: _Session, view: Any) -> None:
    step = next((s for s in view.steps if s.status == "waiting"), None)
    sess.say()
    sess.say(f"[bold yellow]paused for a manual action[/] (step {escape(step.name if step else '?')}):")
    sess.say(f"  {escape(view.waiting_for or '(no instruction recorded)')}")


def _resume_unfinished(sess: _Session) -> None:
    left = sorted(sess.engine.operations(status=list(UNFINISHED), limit=1000), key=lambda o: o.created_at)
    if not left:
        return
    sess.say(f"Resuming {_plural(len(left), 'unfinished operation')} found in the store first "
             "(an agent stopped while running them):")
    for op in left:
        sess.say(f"  {op.id} {op.kind} of plan {escape(op.plan_name)} ({op.status})")
    views = _shown_run(sess, left[0].id, sess.engine.resume_unfinished)
    for view in views:
        sess.say(f"  {view.id}: [{_OP_STYLE.get(view.status, '')}]{view.status}[/]"
                 + (f" -- resume it with {_cmd(sess.loaded, f'ops resume {view.id}')}"
                    if view.status in (WAITING, "failed") else ""))
    sess.say()


def _review(sess: _Session, kind: str, plan_name: str, *, yes: bool, checksum: str | None,
            interactive: bool) -> str | None:
    """A real failover is previewed and confirmed before anything changes; returns the checksum
    to pin the operation to (the plan the operator saw or named)."""

    from agent.domain.plan import render_diff
    from agent.engine.model import OperationKind
    from agent.engine.service import PlanChanged

    if yes and checksum is None:
        return None  # reviewed elsewhere (or accepted blind, as asked): plan once, at create
    plan = sess.engine.preview(OperationKind(kind), plan_name)
    actual = plan.checksum()
    if checksum is not None and checksum != actual:
        raise PlanChanged(f"the plan for {plan_name} changed since it was reviewed (reviewed {checksum}, "
                          f"now {actual}); preview it again with 'failover-agent plan'",
                          plan=plan_name, expected=checksum, actual=actual)
    if yes:
        return actual  # the plan line is printed once the operation is created
    if not sess.as_json:
        typer.echo(render_diff(plan), nl=False)
        out.print()
    if not interactive:
        raise NotConfirmed(
            f"a {kind.replace('_', ' ')} changes production and needs a confirmation, and there is "
            f"nobody to ask (stdin is not a terminal{' or --json' if sess.as_json else ''}). Review the plan "
            f"{'with failover-agent plan' if sess.as_json else 'above'}, then run again with "
            f"--yes --checksum {actual}")
    if not _ask(f"Run this {kind.replace('_', ' ')} of {plan_name} now ({len(plan.vms)} VMs, "
                f"{plan.source_site} -> {plan.target_site})?"):
        raise NotConfirmed("not confirmed")
    return actual


def _create(sess: _Session, kind: str, plan_name: str, expect: str | None, *, take_over: bool = False) -> str:
    from agent.engine.journal import VmBusy
    from agent.engine.model import OperationKind
    from agent.errors import ConflictError, NotFoundError

    try:
        return sess.engine.create(OperationKind(kind), plan_name, requested_by=_actor(), expect_checksum=expect,
                                  take_over=take_over)
    except VmBusy as exc:
        ops = exc.fields.get("operations") or ["OP"]
        first = ops[0]
        raise RefusedError(
            f"{exc.message}. Finish {'it' if len(ops) == 1 else 'them'} first "
            f"({_cmd(sess.loaded, f'ops resume {first}')}) or cancel {'it' if len(ops) == 1 else 'them'} "
            f"({_cmd(sess.loaded, f'ops cancel {first}')}; cancelling a test failover cleans it up)") from exc
    except (NotFoundError, ConflictError) as exc:  # e.g. no test failover to clean up; nothing changed
        raise RefusedError(exc.message, **exc.fields) from exc


def _exit_for(view: Any) -> int:
    if view.status == "succeeded":
        return EXIT_OK
    if view.status == WAITING:
        return EXIT_WAITING
    if view.status == "failed" and view.errors and all(e.get("category") == "transient" for e in view.errors):
        return EXIT_UNREACHABLE
    return EXIT_FAILED


def _conclude(sess: _Session, view: Any, *, extra: dict[str, Any] | None = None) -> None:
    """Report how an operation ended and leave with its exit code."""

    if sess.as_json:
        _json_out({**view.to_json(_now()), **(extra or {})})
    else:
        _print_outcome(sess, view)
    raise typer.Exit(_exit_for(view))


def _print_outcome(sess: _Session, view: Any) -> None:
    loaded, op = sess.loaded, view.id
    took = _duration(view.elapsed_s(_now()))
    style = _OP_STYLE.get(view.status, "")
    head = f"[{style}]{view.status.replace('_', ' ')}[/]: {view.kind} {op} of plan {escape(view.plan)}"
    out.print()
    if view.status == WAITING:
        out.print(f"[{style}]paused[/]: {view.kind} {op} of plan {escape(view.plan)} waits for the manual action "
                  f"above ({view.percent:.0f}% done).")
        out.print(f"When it is done: {_cmd(loaded, f'ops resume {op}')}   (to undo instead: "
                  f"{_cmd(loaded, f'ops cancel {op}')})")
        return
    vms = view.succeeded_vms
    out.print(f"{head} after {took}, {_plural(len(view.steps), 'step')}"
              + (f"; VMs: {escape(', '.join(vms))}" if vms and view.status == "succeeded" else ""))
    if view.failed_vms:
        out.print(f"  [red]VMs that failed:[/] {escape(', '.join(view.failed_vms))}")
        if view.status == "partially_succeeded" and vms:
            out.print(f"  VMs that succeeded: {escape(', '.join(vms))}")
    targets = {s.name: s.target for s in view.steps}
    for e in view.errors:
        out.print(f"  - {_error_text(e, targets.get(e.get('step')))}  [dim](step {escape(e.get('step', ''))})[/]")
    for hint in _next_steps(sess, view):
        out.print(hint)


def _next_steps(sess: _Session, view: Any) -> list[str]:
    loaded, op, plan = sess.loaded, view.id, view.plan
    if view.status == "failed":
        return [f"Fix the cause, then start it again from the failed step: {_cmd(loaded, f'ops resume {op}')}",
                f"or undo what it did: {_cmd(loaded, f'ops cancel {op}')}"]
    if view.status not in ("succeeded", "partially_succeeded"):
        return []
    if view.kind == "test_failover":
        age = loaded.config.policies.test_failover_max_age
        return [f"The test VMs run in isolated networks. When the drill is over: "
                f"{_cmd(loaded, f'run --plan {plan} --kind cleanup')}",
                f"(a test failover left alone is cleaned up by force after {_age(age)})."]
    hints = []
    if view.failed_vms:
        hints.append(f"The VMs that failed need attention (the errors above; {_cmd(loaded, f'ops show {op}')}).")
    if view.kind in REAL_FAILOVERS:
        hints.append(f"Once the VMs are checked, make it final: {_cmd(loaded, f'run --plan {plan} --kind commit')}")
    elif view.kind == "commit":
        hints.append(f"Then protect the way back: {_cmd(loaded, f'run --plan {plan} --kind reverse')}")
    elif view.kind == "reverse":
        hints.append(f"The VMs replicate back to {view.source_site}. To return there, when it is time: "
                     f"{_cmd(loaded, f'run --plan {plan} --kind failback')}")
    return hints


def _age(delta: Any) -> str:
    days = delta.total_seconds() / 86400
    return _plural(int(days), "day") if days >= 1 and days == int(days) else _duration(delta.total_seconds())


def _audit_rows(store: Any, op_id: str | None, limit: int) -> list[Any]:
    """The newest ``limit`` audit entries (of one operation, or all), oldest first. (The store's
    ``audit_trail`` gives the oldest ones.)"""

    from sqlalchemy import select

    from agent.engine.store import AuditRow

    with store.session() as s:
        q = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if op_id is not None:
            q = q.where(AuditRow.operation_id == op_id)
        return list(reversed(list(s.scalars(q))))


# ---------------------------------------------------------------------------- run


@app.command(
    "run",
    help="Carry out an operation on a recovery plan, in this process, against the configured sites, "
    "with live progress (a line per step, errors with code and target; on a terminal a progress "
    "bar, counts and elapsed time). Unfinished operations found in the store (an agent stopped "
    "while running them) are resumed first.\n\n"
    "Planned and unplanned failovers and failbacks change production: their plan is shown and "
    "must be confirmed, unless --yes; --checksum runs only if the plan is still the one reviewed "
    "(see 'failover-agent plan'). Without a terminal to ask, they need --yes.\n\n"
    "At a manual pause the instruction is shown and, on a terminal, 'Done?' is asked; otherwise "
    "the command ends with exit code 4 and 'failover-agent ops resume OP' continues later.\n\n"
    "The store is store.url from the config, else agent.sqlite in the data directory.\n\n"
    + EXIT_CODES_HELP,
)
def run_operation(
    plan_name: Annotated[
        str, typer.Option("--plan", "-p", metavar="NAME", help="Recovery plan name (recovery_plans[].name).")
    ],
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            "-k",
            metavar="KIND",
            callback=_kind_option,
            help="prepare: reserve the failover addresses ahead of time. test_failover (test): a drill "
            "in isolated networks. cleanup_test (cleanup): undo the last test failover. "
            "planned_failover (planned): source VMs shut down first, no data loss. "
            "unplanned_failover (unplanned): the primary site is lost. commit: make a failover "
            "final. reverse: replicate back to the old primary. failback: return to it.",
        ),
    ],
    config: ConfigOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask for confirmation before a real failover.")
    ] = False,
    checksum: Annotated[
        str | None,
        typer.Option("--checksum", metavar="SHA", help="Run only if the plan's checksum is still this "
                     "one (printed by 'failover-agent plan'): the plan you reviewed."),
    ] = None,
    take_over: Annotated[
        bool, typer.Option("--take-over", help="Take over the DNS record sets the plan would change that hold "
                           "data the agent does not manage (refused otherwise, naming them); each is "
                           "recorded in the audit trail.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the operation's final state as JSON on stdout, no progress.")
    ] = False,
) -> None:
    mode = _Mode(json=as_json)
    with _reporting(mode):
        loaded = _load(config)
        if checksum is not None and kind in FOLLOW_UPS:
            raise RefusedError(f"--checksum pins a plan computed from the sites; {kind} executes the stored "
                               "plan of the operation it follows")
        interactive = _interactive() and not as_json
        with _session(loaded, as_json=as_json) as sess:
            _resume_unfinished(sess)
            expect = checksum
            if kind in REAL_FAILOVERS:
                expect = _review(sess, kind, plan_name, yes=yes, checksum=checksum, interactive=interactive)
            op_id = _create(sess, kind, plan_name, expect, take_over=take_over)
            if kind not in FOLLOW_UPS and (yes or kind not in REAL_FAILOVERS):
                plan = sess.journal.operation(op_id).plan or {}
                label = "reserving ahead for" if kind == "prepare" else "plan"
                sess.say(f"{label}: {escape(plan.get('summary', '?'))}\nchecksum {plan.get('checksum', '?')}")
            view = _drive(sess, op_id, lambda: sess.engine.run(op_id), interactive=interactive)
            _conclude(sess, view)


# ---------------------------------------------------------------------------- ops

OpArgument = Annotated[
    str, typer.Argument(metavar="OP", help="Operation id (op-...); a unique beginning of it is enough.",
                        show_default=False)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout (nothing else goes to stdout).")]


def _columns(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """Plain aligned columns: the same on a terminal and in a pipe (never wrapped or cut).
    A cell is text, or (text, style)."""

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


@ops_app.command("list", help="List the operations in the store, newest first: kind, plan, status, "
                 "progress, start (UTC), elapsed time and the VMs that failed.")
def ops_list(
    status: Annotated[
        list[str] | None,
        typer.Option("--status", "-s", metavar="STATUS", callback=_status_option,
                     help="Only operations in this status (repeatable): " + ", ".join(STATUSES)
                     + " (or waiting, partial)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 50,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    with _reporting(_Mode(json=as_json)):
        loaded = _load(config)
        with _journal(loaded) as journal:
            views = [journal.view(o.id) for o in journal.operations(status=status, limit=limit)]
            now = _now()
            if as_json:
                _json_out([{k: v for k, v in view.to_json(now).items() if k != "steps"} for view in views])
                return
            if not views:
                what = f" {' or '.join(status)}" if status else ""
                out.print(f"no{what} operations in the store {escape(_shown_url(str(journal.store.engine.url)))}")
                return
            rows = [[v.id, v.kind, v.plan, (v.status, _OP_STYLE.get(v.status, "")), f"{v.percent:.0f}%",
                     _when(v.created_at).removesuffix(" UTC"), _duration(v.elapsed_s(now)),
                     ", ".join(v.failed_vms) or "-"] for v in views]
            for line in _columns(["OPERATION", "KIND", "PLAN", "STATUS", "DONE", "STARTED (UTC)", "ELAPSED",
                                  "FAILED VMS"], rows):
                out.print(line)


@ops_app.command("show", help="Show one operation: status, progress, elapsed time, VMs that failed, "
                 "what it waits for, its steps (status, target, items changed, attempts, time), every "
                 "error with code and target, and the operators' notes.")
def ops_show(op: OpArgument, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    with _reporting(_Mode(json=as_json)):
        loaded = _load(config)
        with _journal(loaded) as journal:
            op_id = _resolve_op(journal, op)
            view, row, now = journal.view(op_id), journal.operation(op_id), _now()
            children = [o for o in journal.operations(limit=100_000) if o.parent_id == op_id]
            if as_json:
                _json_out({**view.to_json(now), "requested_by": row.requested_by,
                           "plan_checksum": row.plan_checksum, "result": row.result,
                           "followed_by": [{"id": c.id, "kind": c.kind, "status": c.status} for c in children]})
                return
            _print_operation(loaded, journal, view, row, children, now)


def _print_operation(loaded: Any, journal: Any, view: Any, row: Any, children: list[Any], now: Any) -> None:
    style = _OP_STYLE.get(view.status, "")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(view.counts.items()))
    facts = [
        ("operation", f"[bold]{view.id}[/] {view.kind} of plan {escape(view.plan)}: "
                      f"{escape(view.source_site)} -> {escape(view.target_site)}"),
        ("status", f"[{style}]{view.status}[/] ({view.percent:.0f}% of {_plural(len(view.steps), 'step')}: "
                   f"{counts or 'none'})"),
        ("started", f"{_when(view.created_at)} by {escape(row.requested_by)}"),
        ("elapsed", _duration(view.elapsed_s(now))
         + (f" (finished {_when(view.finished_at)})" if view.finished_at else "")),
        ("mode", f"{view.mode}; {_POLICY_WORDS.get(view.error_policy, view.error_policy)}"),
        ("plan", row.plan_checksum or "-"),
    ]
    if view.parent_id:
        facts.append(("follows", view.parent_id))
    for c in children:
        facts.append(("followed by", f"{c.id} {c.kind} ({c.status})"))
    if view.succeeded_vms:
        facts.append(("VMs done", escape(", ".join(view.succeeded_vms))))
    if view.failed_vms:
        facts.append(("VMs failed", f"[red]{escape(', '.join(view.failed_vms))}[/]"))
    for label, value in facts:
        out.print(f"{label + ':':<13}{value}")
    if view.status == WAITING:
        out.print(f"\n[bold yellow]waiting for a manual action:[/] {escape(view.waiting_for or '')}")
        out.print(f"when it is done: {_cmd(loaded, f'ops resume {view.id}')}")
    elif view.status in ("failed", "interrupted"):
        out.print(f"\nstart it again from where it stopped: {_cmd(loaded, f'ops resume {view.id}')}")

    out.print("\n[bold]steps[/]")
    rows = []
    skipped = _skipped_items(journal, view.id)
    for s in view.steps:
        took = _duration((s.finished_at - s.started_at).total_seconds()) if s.started_at and s.finished_at else "-"
        tried = s.attempts > 0
        rows.append([str(s.ordinal + 1), (_STEP_WORD.get(s.status, s.status), _STEP_STYLE.get(s.status, "")),
                     s.name, s.target or "agent", str(s.items) if tried else "-", str(s.changed) if tried else "-",
                     str(len(skipped.get(s.ordinal, []))) if tried else "-", str(s.attempts) if tried else "-", took])
    for line in _columns(["#", "STATUS", "STEP", "TARGET", "ITEMS", "CHANGED", "SKIPPED", "TRIES", "TIME"], rows):
        out.print("  " + line)
    if skipped:
        out.print(f"\n[bold]skipped[/] (items not attempted)")
        for ordinal, items in sorted(skipped.items()):
            for line in _skip_lines(items):
                out.print(f"  {ordinal + 1}. {view.steps[ordinal].name}: {line}")
    if view.errors:
        out.print(f"\n[bold]errors[/] ({len(view.errors)})")
        targets = {s.name: s.target for s in view.steps}
        for e in view.errors:
            out.print(f"  - {_error_text(e, targets.get(e['step']))}  [dim](step {escape(e['step'])})[/]")
    out.print(f"\n[bold]notes[/] ({len(view.notes)})")
    for n in view.notes:
        out.print(f"  {n['at'][:19].replace('T', ' ')} UTC  {escape(n['author'])}: {escape(n['text'])}")
    if not view.notes:
        out.print(f"  none; add one with {_cmd(loaded, f'ops note {view.id} TEXT')}")


@ops_app.command("resume", help="Continue an operation: after a manual pause (this says the manual "
                 "action is done), after an error was fixed (the failed step runs again; steps that "
                 "succeeded are not repeated), or after the agent was stopped. Shows progress like "
                 "'run'.\n\n" + EXIT_CODES_HELP)
def ops_resume(op: OpArgument, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    with _reporting(_Mode(json=as_json)):
        loaded = _load(config)
        with _session(loaded, as_json=as_json) as sess:
            op_id = _resolve_op(sess.journal, op)
            row = sess.journal.operation(op_id)
            if row.status in FINAL:
                raise RefusedError(f"{op_id} is {row.status}; it cannot run again"
                                   + (f" ({_cmd(loaded, f'run --plan {row.plan_name} --kind cleanup')} "
                                      "undoes a test failover)" if row.kind == "test_failover" else ""),
                                   operation=op_id)
            if row.status == WAITING:
                view = sess.engine.view(op_id)
                sess.say(f"{op_id}: marking the manual step done: {escape(view.waiting_for or '')}")
            elif row.status == "running":
                sess.say(f"{op_id} is marked running; continuing it from its journal here "
                         "(an agent that stops leaves its operations so).")
            view = _drive(sess, op_id, lambda: sess.engine.resume(op_id, actor=_actor()),
                          interactive=_interactive() and not as_json)
            _conclude(sess, view)


@ops_app.command("cancel", help="Cancel an operation and undo what is safe to undo: a test failover "
                 "is cleaned up; a planned or unplanned failover or failback that has not finished is "
                 "rolled back from its snapshots (Hyper-V Replica failover cancelled, source VMs "
                 "started, failover IPs, routes and DNS put back). Reservations are kept. The undoing "
                 "is an operation of its own, shown as it runs.\n\n" + EXIT_CODES_HELP)
def ops_cancel(op: OpArgument, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    with _reporting(_Mode(json=as_json)):
        loaded = _load(config)
        with _session(loaded, as_json=as_json) as sess:
            op_id = _resolve_op(sess.journal, op)
            row = sess.journal.operation(op_id)
            if row.status in FINAL:
                hint = (f"; {_cmd(loaded, f'run --plan {row.plan_name} --kind cleanup')} cleans up a test "
                        "failover" if row.kind == "test_failover" and row.status != "cancelled" else "")
                raise RefusedError(f"{op_id} is already {row.status}: nothing to cancel{hint}", operation=op_id)
            if row.status == "running":
                view = sess.engine.cancel(op_id, actor=_actor())
                sess.say(f"cancel requested: the agent running {op_id} stops after its current stage and "
                         f"undoes what it did. If no agent runs it any more, {_cmd(loaded, f'ops resume {op_id}')} "
                         "carries out the cancel.")
                if as_json:
                    _json_out(view.to_json(_now()))
                raise typer.Exit(EXIT_OK)
            view = _shown_run(sess, op_id, lambda: sess.engine.cancel(op_id, actor=_actor()))
            comp = (sess.journal.operation(op_id).result or {}).get("compensation") or {}
            if as_json:
                _json_out({**view.to_json(_now()), "compensation": comp})
            else:
                out.print()
                out.print(f"[{_OP_STYLE['cancelled']}]cancelled[/]: {view.kind} {op_id} of plan {escape(view.plan)}")
                if comp.get("operation"):
                    style = _OP_STYLE.get(comp.get("status", ""), "")
                    out.print(f"  undone by {comp['operation']}: [{style}]{comp.get('status')}[/]"
                              + (f"; VMs that failed: {escape(', '.join(comp['failed_vms']))}"
                                 if comp.get("failed_vms") else ""))
                    if comp.get("status") != "succeeded":
                        child = comp["operation"]
                        out.print(f"  see {_cmd(loaded, f'ops show {child}')}; "
                                  f"{_cmd(loaded, f'ops resume {child}')} tries again")
                else:
                    out.print(f"  {escape(comp.get('undone', 'nothing to undo'))}")
            failed = comp.get("operation") and comp.get("status") != "succeeded"
            raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


@ops_app.command("note", help="Add a note to an operation (who did what, what was checked): shown by "
                 "'ops show' and kept in the audit trail.")
def ops_note(
    op: OpArgument,
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The note (quote it).", show_default=False)],
    author: Annotated[str | None, typer.Option("--author", metavar="NAME",
                                               help="Who writes it. Default: your user name.")] = None,
    config: ConfigOption = None,
) -> None:
    with _reporting(_Mode()):
        if not text.strip():
            raise RefusedError("the note is empty")
        loaded = _load(config)
        with _journal(loaded) as journal:
            op_id = _resolve_op(journal, op)
            who = author or _actor()
            journal.add_note(op_id, who, text)
            journal.store.audit(actor=who, action="operation.note", operation_id=op_id, details={"text": text})
            out.print(f"note added to {op_id} by {escape(who)}")


@ops_app.command("audit", help="The audit trail, oldest first: every change the agent made to an outside "
                 "system and every operator action, with time (UTC), actor and target; of one operation, "
                 "or the newest entries of all.")
def ops_audit(
    op: Annotated[str | None, typer.Argument(metavar="[OP]", help="Only this operation.", show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many (the newest).")] = 200,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    with _reporting(_Mode(json=as_json)):
        loaded = _load(config)
        with _journal(loaded) as journal:
            op_id = _resolve_op(journal, op) if op is not None else None
            rows = _audit_rows(journal.store, op_id, limit)
            if as_json:
                _json_out([{"at": r.at.isoformat(), "actor": r.actor, "action": r.action, "target": r.target,
                            "operation": r.operation_id, "details": r.details} for r in rows])
                return
            if not rows:
                out.print("the audit trail is empty" + (f" for {op_id}" if op_id else ""))
                return
            table = [[_when(r.at).removesuffix(" UTC"), r.actor, r.action, r.operation_id or "-", r.target or "-",
                      json.dumps(r.details, sort_keys=True, default=str) if r.details else ""] for r in rows]
            for line in _columns(["AT (UTC)", "ACTOR", "ACTION", "OPERATION", "TARGET", "DETAILS"], table):
                out.print(line)


# ------------------------------------------------------------------------------ demo

DemoStep = Callable[[Any, "DemoOptions"], None]


@dataclass
class DemoOptions:
    reset: bool = False
    headings: int = 0
    """Numbered headings printed so far (each step numbers its own)."""

    def heading(self, text: str) -> None:
        self.headings += 1
        _heading(f"{self.headings}. {text}")


def _demo_validate(loaded: Any, options: DemoOptions) -> None:
    options.heading("Check the demo config against the simulated sites")
    _validate(loaded, reset_sim=options.reset)


def _demo_preview(loaded: Any, options: DemoOptions) -> None:
    from agent.configfile import DEMO_PLAN
    from agent.domain.plan import PLAN_KINDS, render_diff

    order = [k for k in ("planned", "unplanned", "test") if k in PLAN_KINDS]
    for kind in order:
        article = "an" if kind[0] in "aeiou" else "a"
        options.heading(f"Preview {article} {kind} failover of recovery plan {DEMO_PLAN} (nothing changes)")
        typer.echo(render_diff(_plan(loaded, DEMO_PLAN, kind)), nl=False)


def _demo_test_failover(loaded: Any, options: DemoOptions) -> None:
    """Run a test failover of the demo plan on the simulated sites and clean it up, answering the
    manual pause itself, then prove the sites are exactly as they were. Its operations go to a
    store of the demo's own, so 'failover-agent run' on the demo config keeps its history apart."""

    from agent.configfile import DEMO_PLAN

    store_path = loaded.data_dir / DEMO_STORE_NAME
    if options.reset:
        _remove_store(store_path)
    with _session(loaded, as_json=False, store_path=store_path) as sess:
        _resume_unfinished(sess)
        _demo_clean_leftovers(sess)
        before = sess.drivers.world.snapshot()

        options.heading(f"Run a test failover of {DEMO_PLAN} on the simulated sites (isolated networks, "
                        "production untouched)")
        try:
            op_id = _create(sess, "test_failover", DEMO_PLAN, None)
        except RefusedError as exc:
            # Most likely a test failover started with 'failover-agent run' on the same sites.
            _report_error(exc, _Mode())
            err.print("The simulated sites are shared with 'failover-agent run' on the demo config: "
                      "'failover-agent ops list' shows what runs there, 'failover-agent run --plan "
                      f"{DEMO_PLAN} --kind cleanup' cleans up its test failover, and 'failover-agent demo "
                      "--reset' starts the simulated sites afresh.")
            raise typer.Exit(exit_code_for(exc)) from None
        view = _drive(sess, op_id, lambda: sess.engine.run(op_id), interactive=False, answer_manual=True)
        _demo_outcome(sess, view)

        options.heading("Clean up the test failover")
        from agent.engine.model import OperationKind

        cleanup = sess.engine.create(OperationKind.CLEANUP_TEST, DEMO_PLAN, parent_id=op_id, requested_by="demo")
        view = _drive(sess, cleanup, lambda: sess.engine.run(cleanup), interactive=False, answer_manual=True)
        _demo_outcome(sess, view)

        after = sess.drivers.world.snapshot()
        out.print()
        if before == after:
            out.print("[bold green]The simulated sites are back exactly as before the test failover[/] "
                      "(VM networks, IP pools and grants, VMs, replication, failover IPs, DNS records and "
                      "routes compared).")
            return
        changes = _differences(before, after)
        out.print(f"[bold red]The simulated sites differ from before the test failover[/] "
                  f"({_plural(len(changes), 'difference')}):")
        for line in changes[:20]:
            out.print("  " + escape(line))
        raise typer.Exit(EXIT_FAILED)


def _demo_outcome(sess: _Session, view: Any) -> None:
    style = _OP_STYLE.get(view.status, "")
    out.print(f"[{style}]{view.status.replace('_', ' ')}[/]: {view.kind} {view.id} in "
              f"{_duration(view.elapsed_s(_now()))}, {_plural(len(view.steps), 'step')}")
    if view.status != "succeeded":
        _print_outcome(sess, view)
        out.print("'failover-agent demo --reset' starts the simulated sites afresh.")
        raise typer.Exit(_exit_for(view))


def _demo_clean_leftovers(sess: _Session) -> None:
    """An interrupted demo may have left a test failover behind: clean it up before starting."""

    from agent.engine.model import OperationKind

    ops = sess.engine.operations(limit=1000)
    cleaned = {o.parent_id for o in ops if o.kind == "cleanup_test" and o.status in FINAL}
    for op in ops:
        if op.kind != "test_failover" or op.status == "cancelled" or op.id in cleaned:
            continue
        sess.say(f"An earlier demo left test failover {op.id} ({op.status}); cleaning it up first.")
        if op.status in FINAL:
            child = sess.engine.create(OperationKind.CLEANUP_TEST, op.plan_name, parent_id=op.id,
                                       requested_by="demo")
            _shown_run(sess, child, lambda child=child: sess.engine.run(child))
        else:
            _shown_run(sess, op.id, lambda op=op: sess.engine.cancel(op.id, actor="demo"))


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two world snapshots differ, as 'path: before -> after' lines."""

    if isinstance(a, dict) and isinstance(b, dict):
        out_: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out_.append(f"{path}/{key}: {a.get(key, '(none)')} -> {b.get(key, '(none)')}")
            else:
                out_ += _differences(a[key], b[key], f"{path}/{key}")
        return out_
    return [] if a == b else [f"{path}: {a} -> {b}"]


DEMO_STEPS: list[DemoStep] = [_demo_validate, _demo_preview, _demo_test_failover]
"""What ``failover-agent demo`` does, in order. Later versions append steps (serve the API)."""


def _heading(text: str) -> None:
    out.print()
    out.print(f"[bold]== {escape(text)}[/]")


@app.command(
    help="Try the agent on two simulated VMM sites (contoso-east -> contoso-west) shipped with it: "
    "checks the demo config, previews a planned, an unplanned and a test failover of its "
    "recovery plan, then runs a test failover on the simulated sites and cleans it up (answering "
    "its manual step itself) and checks the sites are back exactly as before. Nothing real is "
    "contacted; the simulated sites and the demo's operations are kept in "
    "$FAILOVER_AGENT_DATA_DIR, else ~/.local/state/failover-agent/demo (Linux) or "
    "%LOCALAPPDATA%\\failover-agent\\demo (Windows).\n\n" + EXIT_CODES_HELP
)
def demo(
    reset: Annotated[
        bool, typer.Option("--reset", help="Start the simulated sites (and the demo's operations) afresh "
                           "from the demo inventory.")
    ] = False,
) -> None:
    with _reporting(_Mode()):
        from agent.configfile import DEMO_CONFIG_NAME, demo_dir, load_config

        loaded = load_config(demo_dir() / DEMO_CONFIG_NAME, source="demo")
        options = DemoOptions(reset=reset)
        out.print(f"failover-agent {__version__} demo: config {escape(str(loaded.path))}")
        out.print(f"simulated sites kept in {escape(str(loaded.data_dir))}")
        for step in DEMO_STEPS:
            step(loaded, options)
        out.print()
        out.print("Next: 'failover-agent run --plan contoso-apps --kind test' runs a test failover yourself "
                  "(then 'failover-agent ops list', and '--kind cleanup'); "
                  "'failover-agent plan --plan contoso-apps --kind test --json' gives a plan as JSON; "
                  "'failover-agent config template > site.yaml' starts a real config.")


def main() -> None:
    """Console-script entry point (``failover-agent``)."""

    # Windows consoles may use a legacy code page; the output is ASCII except names from the config.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and os.name == "nt":
            reconfigure(errors="replace")
    app(prog_name="failover-agent")


if __name__ == "__main__":
    main()

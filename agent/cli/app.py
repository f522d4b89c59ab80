"""The frame every command runs in, so they all report and exit alike: the typer app and its
root options, the two consoles, the exit codes, how an error becomes a report and an exit code,
and the --config option."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, ConsoleOptions, RenderableType
from rich.markup import escape
from rich.segment import Segment

from agent import __version__
from agent.errors import AgentError, RefusedError, TransientError
from agent.terminal import is_safe, visible

if TYPE_CHECKING:
    from agent.configfile import LoadedConfig
    from agent.yamlfile import InvalidFileError

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
    "3 a VMM, Hyper-V, DNS or router endpoint (or the agent given by --agent-url) could not be reached "
    "(try again later); "
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


class SafeConsole(Console):
    """A console that shows control characters instead of obeying them (:mod:`agent.terminal`),
    whatever is printed: markup strings, tables, the live progress footer. Only text is touched,
    never the control codes rich emits itself (colours, cursor moves). Strings are escaped before
    rich lays them out; text inside a table cell is escaped after, so there the longer escaped
    form may be cut at the cell's edge."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        # Before rich sees it: rich drops some controls (CR, BS, BEL) silently, and a name that
        # has them should show them.
        super().print(*(visible(o) if isinstance(o, str) else o for o in objects), **kwargs)

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control is None and not is_safe(segment.text):
                yield Segment(visible(segment.text), segment.style)
            else:
                yield segment


# No emoji codes: a name such as ":fire:" is printed as written.
out = SafeConsole(highlight=False, soft_wrap=True, emoji=False)
err = SafeConsole(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def echo(text: str, *, nl: bool = True) -> None:
    """Plain text on stdout (a plan's diff), with control characters made visible."""
    typer.echo(visible(text), nl=nl)


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
RecoveryPointOption = Annotated[
    str | None,
    typer.Option(
        "--recovery-point",
        metavar="POINT",
        help="The recovery point a test, planned or unplanned failover (or failback) brings each VM up "
        "from: latest (each VM's latest state), latest_app_consistent, or the name of a replica "
        "snapshot. Default: the recovery plan's recovery_point (latest when it names none).",
        show_default=False,
    ),
]


# -------------------------------------------------------------------------- plumbing


def _version(value: bool) -> None:
    if value:
        typer.echo(f"failover-agent {__version__}")
        raise typer.Exit(EXIT_OK)


REMOTE_COMMANDS = ("status", "plan", "run", "report", "ops")
"""What works through a running agent's API (``--agent-url``); the rest work on this machine's config."""


@app.callback()
def _root(
    ctx: typer.Context,
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
    new_store: Annotated[
        bool,
        typer.Option(
            "--new-store",
            help="Start with a new, empty store where the one this agent had is missing (deleted, "
            "moved, or its disk not mounted); without it such a command is refused. The new store's "
            "audit trail records which store it replaces.",
        ),
    ] = False,
    agent_url: Annotated[
        str | None,
        typer.Option(
            "--agent-url",
            metavar="URL",
            help="Talk to the agent running at URL ('failover-agent serve', e.g. http://127.0.0.1:8740) "
            "instead of opening the store: status, plan, run, report and the ops commands go through its "
            "API. Default: $FAILOVER_AGENT_URL, else url in ~/.config/failover-agent/client.yaml.",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            help="The API token to show that agent, or where it is: env:NAME or file:PATH (a token typed "
            "here is seen by other users of this machine in its process list). Default: "
            "$FAILOVER_AGENT_TOKEN, else token in the client file.",
            show_default=False,
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            metavar="PEM",
            dir_okay=False,
            help="The CA certificates that issued the agent's TLS certificate (default: the system's).",
            show_default=False,
        ),
    ] = None,
) -> None:
    from agent.logging import LEVELS, configure_logging

    _ROOT_OPTIONS.update(new_store=new_store, agent_url=agent_url, token=token, ca_file=ca_file)
    if agent_url and ctx.invoked_subcommand not in REMOTE_COMMANDS:
        raise typer.BadParameter(f"'{ctx.invoked_subcommand}' works on this machine's config, not through an agent; "
                                 f"--agent-url goes with {', '.join(REMOTE_COMMANDS)}", param_hint="--agent-url")
    if log_level.lower() not in LEVELS:
        raise typer.BadParameter(f"use one of {', '.join(LEVELS)}", param_hint="--log-level")
    _ROOT_OPTIONS["log_level"] = log_level.lower()
    configure_logging(log_level.lower())


_ROOT_OPTIONS: dict[str, Any] = {"new_store": False, "log_level": "warning", "agent_url": None, "token": None,
                                 "ca_file": None}
"""The root options the commands read later (set by the root callback at every invocation)."""


def console_log_level() -> str:
    """The level the command line asked for on stderr (``--log-level``)."""

    return str(_ROOT_OPTIONS["log_level"])


def new_store_asked() -> bool:
    """Whether the command line says ``--new-store``."""

    return bool(_ROOT_OPTIONS["new_store"])


def root_option(name: str) -> Any:
    """A root option as given on this command line (``agent_url``, ``token``, ``ca_file``)."""

    return _ROOT_OPTIONS[name]


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an error."""

    if isinstance(exc, RefusedError):
        return EXIT_REFUSED
    if isinstance(exc, TransientError):
        return EXIT_UNREACHABLE
    return EXIT_FAILED


def escaped_store_error(exc: BaseException) -> AgentError | None:
    """The store's error a database exception stands for, when one escaped the store's own
    boundary (the scheduler's job store shares the database): about the store, not a bug."""

    from sqlalchemy.exc import DatabaseError

    from agent.engine.store import store_error

    return store_error(exc, None) if isinstance(exc, DatabaseError) else None


@contextmanager
def reporting(*, as_json: bool = False) -> Iterator[None]:
    """Turn the agent's errors into a readable report and the documented exit code (with
    ``as_json``, also a JSON error body on stdout, for a caller that parses it)."""

    try:
        yield
    except typer.Exit:
        raise
    except AgentError as exc:
        report_error(exc, as_json=as_json)
        raise typer.Exit(exit_code_for(exc)) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:  # a bug: say so plainly, keep the traceback for the logs
        from agent.logging import get_logger

        mapped = escaped_store_error(exc)
        if mapped is not None:
            report_error(mapped, as_json=as_json)
            raise typer.Exit(EXIT_UNREACHABLE) from None

        get_logger("agent.cli").exception("unexpected error")
        if as_json:
            print_json({"error": {"code": "internal_error", "category": "permanent", "message": str(exc)}})
        err.print(
            f"error: unexpected {type(exc).__name__}: {escape(str(exc))}\n"
            "This is a bug in failover-agent; run again with --log-level debug and report the log."
        )
        raise typer.Exit(EXIT_FAILED) from None


def report_error(exc: AgentError, *, as_json: bool = False) -> None:
    """The report of an error the agent raised on purpose, on stderr (and as JSON on stdout)."""

    from agent.domain.validation import PlanRefused
    from agent.yamlfile import InvalidFileError

    if as_json:
        body = exc.to_dict()
        if isinstance(exc, InvalidFileError):
            body["problems"] = [p.to_dict() for p in exc.problems]
        print_json({"error": body})
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


def _print_problems(exc: InvalidFileError) -> None:
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


def print_json(value: Any) -> None:
    """``value`` as JSON on stdout: what ``--json`` promises (times and paths as text). Left
    exact: ``ensure_ascii`` (the default) escapes every control and bidi character already."""

    typer.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def read_config(config: Path | None) -> LoadedConfig:
    """The config a command was given: ``--config``, else ``$FAILOVER_AGENT_CONFIG``, else the demo."""

    from agent.configfile import ENV_CONFIG, load_config, resolve_config_path

    path, source = resolve_config_path(config)
    if source == "env" and not path.exists():
        # Otherwise the admin sees a path they never typed and no hint where it came from.
        raise RefusedError(f"${ENV_CONFIG} names {path}, which does not exist", file=str(path))
    return load_config(path, source=source)

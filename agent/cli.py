"""The ``failover-agent`` command line: check a config, preview a failover, try the demo.

Results go to stdout, problems and logs to stderr, so ``--json`` output can be piped as is.
Exit codes (also in ``--help`` and the README) follow what the caller does next:

* 0 -- done;
* 1 -- the operation failed (an outside system refused a call, or a bug: see the message);
* 2 -- bad config or refused input: fix the file or the request and run again (nothing changed);
* 3 -- an outside system could not be reached or did not answer in time: try again later.
"""

from __future__ import annotations

import json
import os
import sys
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

ENV_LOG_LEVEL = "FAILOVER_AGENT_LOG_LEVEL"

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 the operation failed; 2 bad config or refused request "
    "(nothing changed; every problem is listed with file, line and key); "
    "3 a VMM, Hyper-V, DNS or router endpoint could not be reached (try again later)."
)

app = typer.Typer(
    name="failover-agent",
    help=(
        "The network side of disaster recovery for Hyper-V / System Center VMM sites: reserves "
        "IP addresses in VMM static pools, sets failover IPs on replica NICs, builds isolated "
        "test networks, moves subnet routes and updates DNS.\n\n"
        "Start with 'failover-agent demo' (two simulated sites, nothing real is touched). "
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
def _open_world(loaded: Any, *, reset_sim: bool = False, dns_purpose: str | None = None) -> Iterator[_World]:
    """Drivers for ``loaded`` and the inventory they read; closed on the way out."""

    from agent.drivers import build_drivers
    from agent.inventory import gather_inventory

    _check_sim_inventory(loaded)
    _prepare_sim_state(loaded, reset=reset_sim)
    drivers = build_drivers(loaded)
    try:
        yield _World(loaded, drivers, gather_inventory(loaded.config, drivers, dns_purpose=dns_purpose))  # type: ignore[arg-type]
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


# ------------------------------------------------------------------------------ demo

DemoStep = Callable[[Any, "DemoOptions"], None]


@dataclass
class DemoOptions:
    reset: bool = False


def _demo_validate(loaded: Any, options: DemoOptions) -> None:
    _heading("1. Check the demo config against the simulated sites")
    _validate(loaded, reset_sim=options.reset)


def _demo_preview(loaded: Any, options: DemoOptions) -> None:
    from agent.configfile import DEMO_PLAN
    from agent.domain.plan import PLAN_KINDS, render_diff

    order = [k for k in ("planned", "unplanned", "test") if k in PLAN_KINDS]
    for n, kind in enumerate(order, start=2):
        _heading(f"{n}. Preview a {kind} failover of recovery plan {DEMO_PLAN} (nothing changes)")
        typer.echo(render_diff(_plan(loaded, DEMO_PLAN, kind)), nl=False)


DEMO_STEPS: list[DemoStep] = [_demo_validate, _demo_preview]
"""What ``failover-agent demo`` does, in order. Later versions append steps (run a test
failover on the simulated sites, serve the API)."""


def _heading(text: str) -> None:
    out.print()
    out.print(f"[bold]== {escape(text)}[/]")


@app.command(
    help="Try the agent on two simulated VMM sites (contoso-east -> contoso-west) shipped with it: "
    "checks the demo config, then previews a planned, an unplanned and a test failover of its "
    "recovery plan. Nothing real is contacted; the simulated sites keep their state in "
    "$FAILOVER_AGENT_DATA_DIR, else ~/.local/state/failover-agent/demo (Linux) or "
    "%LOCALAPPDATA%\\failover-agent\\demo (Windows).\n\n" + EXIT_CODES_HELP
)
def demo(
    reset: Annotated[
        bool, typer.Option("--reset", help="Start the simulated sites afresh from the demo inventory.")
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
        out.print("Next: 'failover-agent plan --plan contoso-apps --kind test --json' for the JSON form; "
                  "'failover-agent config template > site.yaml' to start a real config.")


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

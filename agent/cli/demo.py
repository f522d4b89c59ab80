"""``failover-agent demo``, for trying the agent without a site of one's own: the shipped demo
config checked and previewed, then a test failover run and cleaned up on the simulated sites,
step by step (``DEMO_STEPS``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from agent import __version__
from agent.cli.app import EXIT_CODES_HELP, EXIT_FAILED, app, echo, err, exit_code_for, out, report_error, reporting
from agent.cli.planning import plan_from_sites, validate_config
from agent.cli.session import (
    Session,
    create_operation,
    drive,
    open_session,
    outcome_exit_code,
    print_outcome,
    remove_store,
    resume_unfinished,
    run_shown,
)
from agent.cli.vocabulary import FINAL, OP_STYLE, current_time, duration, plural
from agent.configfile import LoadedConfig
from agent.errors import RefusedError

if TYPE_CHECKING:
    from agent.domain.plan import PlanKind
    from agent.engine.model import OperationView
    from agent.wiring import SimulatedSites

DEMO_STORE_NAME = "demo-operations.sqlite"
"""The demo keeps its operations apart from 'failover-agent run' on the demo config."""


DemoStep = Callable[[LoadedConfig, "DemoOptions"], None]


@dataclass
class DemoOptions:
    reset: bool = False
    headings: int = 0
    """Numbered headings printed so far (each step numbers its own)."""

    def heading(self, text: str) -> None:
        self.headings += 1
        _heading(f"{self.headings}. {text}")


def _demo_validate(loaded: LoadedConfig, options: DemoOptions) -> None:
    options.heading("Check the demo config against the simulated sites")
    validate_config(loaded, reset_simulator=options.reset)


_PREVIEW_ORDER: tuple[PlanKind, ...] = ("planned", "unplanned", "test")


def _demo_preview(loaded: LoadedConfig, options: DemoOptions) -> None:
    from agent.configfile import DEMO_PLAN
    from agent.domain.plan import PLAN_KINDS, render_diff

    order = [k for k in _PREVIEW_ORDER if k in PLAN_KINDS]
    for kind in order:
        article = "an" if kind[0] in "aeiou" else "a"
        options.heading(f"Preview {article} {kind} failover of recovery plan {DEMO_PLAN} (nothing changes)")
        echo(render_diff(plan_from_sites(loaded, DEMO_PLAN, kind)), nl=False)


def _demo_test_failover(loaded: LoadedConfig, options: DemoOptions) -> None:
    """Run a test failover of the demo plan on the simulated sites and clean it up, answering the
    manual pause itself, then prove the sites are exactly as they were. Its operations go to a
    store of the demo's own, so 'failover-agent run' on the demo config keeps its history apart."""

    from agent.configfile import DEMO_PLAN

    store_path = loaded.data_dir / DEMO_STORE_NAME
    if options.reset:
        remove_store(store_path)
    with open_session(loaded, as_json=False, store_path=store_path) as sess:
        simulator = _simulator_of(sess)
        resume_unfinished(sess)
        _demo_clean_leftovers(sess)
        before = simulator.snapshot()

        options.heading(f"Run a test failover of {DEMO_PLAN} on the simulated sites (isolated networks, "
                        "production untouched)")
        try:
            op_id = create_operation(sess, "test_failover", DEMO_PLAN, None)
        except RefusedError as exc:
            # Most likely a test failover started with 'failover-agent run' on the same sites.
            report_error(exc)
            err.print("The simulated sites are shared with 'failover-agent run' on the demo config: "
                      "'failover-agent ops list' shows what runs there, 'failover-agent run --plan "
                      f"{DEMO_PLAN} --kind cleanup' cleans up its test failover, and 'failover-agent demo "
                      "--reset' starts the simulated sites afresh.")
            raise typer.Exit(exit_code_for(exc)) from None
        view = drive(sess, op_id, lambda: sess.engine.run(op_id), answer_manual=True)
        _demo_outcome(sess, view)

        options.heading("Clean up the test failover")
        from agent.engine.model import OperationKind

        cleanup = sess.engine.create(OperationKind.CLEANUP_TEST, DEMO_PLAN, parent_id=op_id, requested_by="demo")
        view = drive(sess, cleanup, lambda: sess.engine.run(cleanup), answer_manual=True)
        _demo_outcome(sess, view)

        after = simulator.snapshot()
        out.print()
        if before == after:
            out.print("[bold green]The simulated sites are back exactly as before the test failover[/] "
                      "(VM networks, IP pools and grants, VMs, replication, failover IPs, DNS records and "
                      "routes compared).")
            return
        changes = _differences(before, after)
        out.print(f"[bold red]The simulated sites differ from before the test failover[/] "
                  f"({plural(len(changes), 'difference')}):")
        for line in changes[:20]:
            out.print("  " + escape(line))
        raise typer.Exit(EXIT_FAILED)


def _simulator_of(sess: Session) -> SimulatedSites:
    """The simulated sites the demo runs on, which it compares before and after."""

    if sess.sites.simulator is None:
        raise RefusedError(
            f"the demo runs on simulated sites only, and {sess.loaded.path} does not use them (its sites "
            "need 'sim' drivers and a simulator section); reinstall failover-agent to restore the shipped "
            "demo config", file=str(sess.loaded.path))
    return sess.sites.simulator


def _demo_outcome(sess: Session, view: OperationView) -> None:
    style = OP_STYLE.get(view.status, "")
    out.print(f"[{style}]{view.status.replace('_', ' ')}[/]: {view.kind} {view.id} in "
              f"{duration(view.elapsed_s(current_time()))}, {plural(len(view.steps), 'step')}")
    if view.status != "succeeded":
        print_outcome(sess.loaded, view)
        out.print("'failover-agent demo --reset' starts the simulated sites afresh.")
        raise typer.Exit(outcome_exit_code(view))


def _demo_clean_leftovers(sess: Session) -> None:
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
            run_shown(sess, child, partial(sess.engine.run, child))
        else:
            run_shown(sess, op.id, partial(sess.engine.cancel, op.id, actor="demo"))


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
    with reporting():
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

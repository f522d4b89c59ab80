"""``failover-agent status``: where each recovery plan stands, from the journal confirmed against
the sites -- its state (the VMs that differ when they are not all alike), the operation that
put it there, the last test failover that succeeded, the addresses held, and what can run next.

The text fits 80 columns; ``--json`` prints the same facts with stable keys."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from agent.cli.app import EXIT_CODES_HELP, ConfigOption, app, out, print_json, read_config, reporting
from agent.cli.operations import JsonOption
from agent.cli.session import open_engine
from agent.cli.vocabulary import command_line, utc_time, wrapped

if TYPE_CHECKING:
    from agent.configfile import LoadedConfig
    from agent.engine.planstate import OpRef, PlanStatus

WIDTH = 80

KIND_ARGUMENT = {"test_failover": "test", "cleanup_test": "cleanup", "planned_failover": "planned",
                 "unplanned_failover": "unplanned"}


def _op(ref: OpRef) -> str:
    return f"{ref.id} {ref.kind} {ref.status}, {utc_time(ref.finished_at or ref.at)}"


def status_lines(loaded: LoadedConfig, st: PlanStatus, allowed: list[str]) -> list[str]:
    """One plan's status as plain text lines of at most 80 characters (rich markup escaped)."""

    from agent.engine.planstate import MIXED, PLAN_WORDS, VM_WORDS

    lines = [f"plan {st.plan}: {PLAN_WORDS[st.state]}"]
    if st.state == MIXED:
        groups = "; ".join(f"{', '.join(vms)}: {VM_WORDS[s]}" for s, vms in st.by_state().items())
        lines += wrapped(groups)
    else:
        lines += wrapped(f"VMs: {', '.join(v.vm for v in st.vms)}")
    down = [v.vm for v in st.vms if v.off_everywhere]
    if down:
        lines += wrapped(f"POWERED OFF AT BOTH SITES: {', '.join(down)}")
    if st.test_failover is not None:
        t = st.test_failover
        lines += wrapped(f"test failover running: {t.id} since {utc_time(t.at)}")
    lines += wrapped(f"last successful test failover: {_op(st.last_test) if st.last_test else 'none'}")
    if st.failover is not None:
        lines += wrapped(f"last failover: {_op(st.failover)}")
    if st.committed_by is not None:
        lines += wrapped(f"committed by: {_op(st.committed_by)}")
    for u in st.unfinished:
        lines += wrapped(f"unfinished: {u.id} {u.kind} {u.status}; continue it with "
                          f"{command_line(loaded, f'ops resume {u.id}')} or undo it with "
                          f"{command_line(loaded, f'ops cancel {u.id}')}")
    held = Counter((r.purpose, r.site, r.operation) for r in st.reservations)
    if not held:
        lines += wrapped("reservations held: none")
    for (purpose, site, op), n in sorted(held.items()):
        lines += wrapped(f"reservations held: {n} {purpose} address{'es' if n != 1 else ''} at {site} "
                          f"(by {op})")
    for note in st.stale:
        lines += wrapped(f"note: {note}")
    if allowed:
        kinds = ", ".join(KIND_ARGUMENT.get(k, k) for k in allowed)
        lines += wrapped(f"can run now: {kinds}")
        lines += wrapped(f"({command_line(loaded, f'run --plan {st.plan} --kind KIND')})", "    ")
    else:
        lines += wrapped("can run now: nothing new until the unfinished operations end")
    if st.state == MIXED or down:
        lines += ["", "  VM" + " " * 10 + "STATE" + " " * 27 + "RUNNING AT"]
        for v in st.vms:
            where = ", ".join(v.running_at) or "off at both sites"
            lines.append(f"  {v.vm:<12}{VM_WORDS[v.state]:<32}{where}".rstrip())
    return [escape(line) for line in lines]


@app.command(
    "status",
    help="Show where each recovery plan stands: protected, test failover running (since when, "
    "which operation), prepared, failed over awaiting commit, committed, reversed, or mixed "
    "(naming the VMs that differ), read from the store and confirmed against Hyper-V Replica "
    "at the sites; the last successful test failover, the addresses held and the operations "
    "that can run now. Nothing is changed.\n\n" + EXIT_CODES_HELP,
)
def status(
    plan_name: Annotated[
        str | None, typer.Option("--plan", "-p", metavar="NAME", help="Only this recovery plan.")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    from agent.engine.planstate import kinds_allowed

    with reporting(as_json=as_json):
        loaded = read_config(config)
        names = [plan_name] if plan_name else [p.name for p in loaded.config.recovery_plans]
        full = loaded.config.agent.mode == "full"
        with open_engine(loaded) as engine:
            found = [engine.status(name) for name in names]
        if as_json:
            body: dict[str, Any] = {"mode": loaded.config.agent.mode, "plans": [
                {**st.to_json(), "kinds_allowed": kinds_allowed(st, full_mode=full)} for st in found]}
            print_json(body)
            return
        for i, st in enumerate(found):
            if i:
                out.print()
            for line in status_lines(loaded, st, kinds_allowed(st, full_mode=full)):
                out.print(line)
        if not found:
            out.print("no recovery plans in the config")

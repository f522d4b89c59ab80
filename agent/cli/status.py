"""``failover-agent status``: where each recovery plan stands, from the journal confirmed against
the sites -- its state (the VMs that differ when they are not all alike), the operation that
put it there, the last test failover that succeeded, the addresses held, and what can run next.

The text fits 80 columns; ``--json`` prints the same facts with stable keys."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from agent.cli.app import EXIT_CODES_HELP, ConfigOption, app, out, print_json, read_config, reporting
from agent.cli.operations import JsonOption
from agent.cli.remote import remote_agent
from agent.cli.session import open_engine
from agent.cli.vocabulary import command_line, utc_time, wrapped

if TYPE_CHECKING:
    from agent.cli.remote import RemoteAgent
    from agent.configfile import LoadedConfig

WIDTH = 80

KIND_ARGUMENT = {"test_failover": "test", "cleanup_test": "cleanup", "planned_failover": "planned",
                 "unplanned_failover": "unplanned"}


def _op(ref: dict[str, Any]) -> str:
    return f"{ref['id']} {ref['kind']} {ref['status']}, {utc_time(_at(ref.get('finished_at') or ref['created_at']))}"


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def status_lines(where: LoadedConfig | RemoteAgent, st: dict[str, Any], allowed: list[str]) -> list[str]:
    """One plan's status (its JSON form, ``PlanStatus.to_json``: as read here or from a running
    agent's API) as plain text lines of at most 80 characters (rich markup escaped)."""

    from agent.engine.planstate import MIXED, PLAN_WORDS, VM_WORDS, VmState

    vms = st["vms"]
    lines = [f"plan {st['plan']}: {PLAN_WORDS[st['state']]}"]
    if st["state"] == MIXED:
        by_state: dict[str, list[str]] = {}
        for v in vms:
            by_state.setdefault(v["state"], []).append(v["vm"])
        groups = "; ".join(f"{', '.join(names)}: {VM_WORDS[VmState(s)]}" for s, names in by_state.items())
        lines += wrapped(groups)
    else:
        lines += wrapped(f"VMs: {', '.join(v['vm'] for v in vms)}")
    down = [v["vm"] for v in vms if v["off_everywhere"]]
    if down:
        lines += wrapped(f"POWERED OFF AT BOTH SITES: {', '.join(down)}")
    if st["test_failover"] is not None:
        t = st["test_failover"]
        lines += wrapped(f"test failover running: {t['id']} since {utc_time(_at(t['created_at']))}")
    last = st["last_test_failover"]
    lines += wrapped(f"last successful test failover: {_op(last) if last else 'none'}")
    if st["failover"] is not None:
        lines += wrapped(f"last failover: {_op(st['failover'])}")
    if st["committed_by"] is not None:
        lines += wrapped(f"committed by: {_op(st['committed_by'])}")
    for u in st["unfinished"]:
        op = u["id"]
        lines += wrapped(f"unfinished: {op} {u['kind']} {u['status']}; continue it with "
                          f"{command_line(where, f'ops resume {op}')} or undo it with "
                          f"{command_line(where, f'ops cancel {op}')}")
    held = Counter((r["purpose"], r["site"], r["operation"]) for r in st["reservations"])
    if not held:
        lines += wrapped("reservations held: none")
    for (purpose, site, op), n in sorted(held.items()):
        lines += wrapped(f"reservations held: {n} {purpose} address{'es' if n != 1 else ''} at {site} "
                          f"(by {op})")
    for note in st["stale"]:
        lines += wrapped(f"note: {note}")
    if allowed:
        kinds = ", ".join(KIND_ARGUMENT.get(k, k) for k in allowed)
        lines += wrapped(f"can run now: {kinds}")
        name = st["plan"]
        lines += wrapped(f"({command_line(where, f'run --plan {name} --kind KIND')})", "    ")
    else:
        lines += wrapped("can run now: nothing new until the unfinished operations end")
    if st["state"] == MIXED or down:
        lines += ["", "  VM" + " " * 10 + "STATE" + " " * 27 + "RUNNING AT"]
        for v in vms:
            at = ", ".join(v["running_at"]) or "off at both sites"
            lines.append(f"  {v['vm']:<12}{VM_WORDS[VmState(v['state'])]:<32}{at}".rstrip())
    return [escape(line) for line in lines]


def print_status(where: LoadedConfig | RemoteAgent, mode: str, plans: list[dict[str, Any]], as_json: bool) -> None:
    """``status``: each plan's JSON form with ``kinds_allowed``, as JSON or as text."""

    if as_json:
        print_json({"mode": mode, "plans": plans})
        return
    for i, st in enumerate(plans):
        if i:
            out.print()
        for line in status_lines(where, st, st["kinds_allowed"]):
            out.print(line)
    if not plans:
        out.print("no recovery plans in the config")


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
        if (agent := remote_agent(config)) is not None:
            from agent.cli.remote_ops import remote_status

            remote_status(agent, plan_name, as_json)
            return
        loaded = read_config(config)
        names = [plan_name] if plan_name else [p.name for p in loaded.config.recovery_plans]
        full = loaded.config.agent.mode == "full"
        with open_engine(loaded) as engine:
            found = [engine.status(name) for name in names]
        print_status(loaded, loaded.config.agent.mode,
                     [{**st.to_json(), "kinds_allowed": kinds_allowed(st, full_mode=full)} for st in found], as_json)

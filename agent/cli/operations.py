"""The commands that change the sites and look after what changed: ``failover-agent run`` and
the ``ops`` commands (list, show, resume, cancel, note, audit)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape

from agent.cli import remote_ops
from agent.cli.app import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    ConfigOption,
    RecoveryPointOption,
    app,
    out,
    print_json,
    read_config,
    report_error,
    reporting,
)
from agent.cli.opfacts import deviations_from_preview, where_vms_are
from agent.cli.progress import error_text, skip_lines, skipped_in
from agent.cli.remote import remote_agent
from agent.cli.session import (
    Session,
    conclude,
    confirm_cancel,
    create_operation,
    current_user,
    drive,
    open_journal,
    open_session,
    refuse_if_led,
    request_cancel_of_led,
    resume_unfinished,
    review,
    run_shown,
    store_location,
)
from agent.cli.trail import print_audit, script_lines
from agent.cli.vocabulary import (
    CONFIRMED,
    FINAL,
    FOLLOW_UPS,
    OP_STYLE,
    POLICY_WORDS,
    REAL_FAILOVERS,
    STATUS_ALIASES,
    STATUSES,
    STEP_STYLE,
    STEP_WORD,
    WAITING,
    Cell,
    columns,
    command_line,
    current_time,
    duration,
    kind_option,
    plural,
    utc_time,
)
from agent.configfile import LoadedConfig
from agent.errors import RefusedError

if TYPE_CHECKING:
    from agent.cli.remote import RemoteAgent
    from agent.engine.journal import Journal
    from agent.engine.model import OperationView
    from agent.engine.store import OperationRow, StepRow

ops_app = typer.Typer(
    help="Look after the operations recorded in the agent's store: list them, show one (steps, "
    "errors, notes), resume one paused for a manual action or stopped by an error, cancel one "
    "(undoing what is safe to undo), add a note, read the audit trail. Commands that only read "
    "work even when the sites cannot be reached.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(ops_app, name="ops")


class UnknownOperation(RefusedError):
    code = "unknown_operation"


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


def _resolve_op(journal: Journal, text: str) -> str:
    """An operation id as typed: the whole id or a unique prefix (``op-3f2a`` or ``3f2a``)."""

    from agent.engine.storecheck import operation_ids

    # Only the ids are read: a damaged row elsewhere in the store must not hide this operation.
    ids = operation_ids(journal.store, limit=100_000)
    if text in ids:
        return text
    # At least 4 characters of the id itself: 'op-' alone must not pick "the only operation".
    long_enough = len(text.removeprefix("op-")) >= 4
    matches = [i for i in ids if i.startswith((text, "op-" + text))] if long_enough else []
    if len(matches) == 1:
        return matches[0]
    where = store_location(str(journal.store.engine.url))
    if matches:
        raise UnknownOperation(f"{text!r} matches {len(matches)} operations ({', '.join(matches[:5])}"
                               f"{' ...' if len(matches) > 5 else ''}); give more of the id", operation=text)
    raise UnknownOperation(f"no operation {text!r} in the store {where}; 'failover-agent ops list' shows "
                           "the operations it holds (is this the same --config?)", operation=text)


# ------------------------------------------------------------------------------- run


@app.command(
    "run",
    help="Carry out an operation on a recovery plan, in this process, against the configured sites, "
    "with live progress (a line per step, errors with code and target; on a terminal a progress "
    "bar, counts and elapsed time). Unfinished operations found in the store (an agent stopped "
    "while running them) are resumed first.\n\n"
    "Planned and unplanned failovers, failbacks, commits and reverses change production: what "
    "they will change is shown and must be confirmed, unless --yes; --checksum runs only if the "
    "plan is still the one reviewed (see 'failover-agent plan --kind KIND'; a commit or reverse "
    "pins the plan of the failover it follows). Without a terminal to ask, they need --yes.\n\n"
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
            callback=kind_option,
            help="prepare: reserve the failover addresses ahead of time. test_failover (test): a drill "
            "in isolated networks. cleanup_test (cleanup): undo the last test failover. "
            "planned_failover (planned): source VMs shut down first, no data loss. "
            "unplanned_failover (unplanned): the primary site is lost. commit: make a failover "
            "final. reverse: replicate back to the old primary. failback: return to it. change_recovery_point: "
            "before the commit, bring failed-over VMs up from another --recovery-point.",
        ),
    ],
    config: ConfigOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask for confirmation before a change to production.")
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
    recovery_point: RecoveryPointOption = None,
) -> None:
    with reporting(as_json=as_json):
        if (agent := remote_agent(config)) is not None:
            remote_ops.remote_run(agent, kind, plan_name, yes=yes, checksum=checksum, take_over=take_over,
                                  as_json=as_json)
        loaded = read_config(config)
        from agent.cli.preflight import preflight_before_run

        refuse_if_led(loaded)
        preflight_before_run(loaded, kind, plan_name, actor=current_user(), as_json=as_json)
        with open_session(loaded, as_json=as_json) as sess:
            resume_unfinished(sess)
            expect, reading = checksum, None
            if kind in CONFIRMED:
                expect, reading = review(sess, kind, plan_name, yes=yes, checksum=checksum,
                                         recovery_point=recovery_point)
            op_id = create_operation(sess, kind, plan_name, expect, take_over=take_over, recovery_point=recovery_point,
                                     reading=reading)
            if kind in CONFIRMED:  # who let it change production, and how
                sess.journal.store.audit(actor=current_user(), action="operation.confirmed", operation_id=op_id,
                                         target=plan_name, details={"by": "--yes" if yes else "answer at the terminal",
                                                                    "checksum": expect or "not pinned"})
            if kind not in FOLLOW_UPS and (yes or kind not in CONFIRMED):
                plan = sess.journal.operation(op_id).plan or {}
                label = "reserving ahead for" if kind == "prepare" else "plan"
                sess.say(f"{label}: {escape(plan.get('summary', '?'))}\nchecksum {plan.get('checksum', '?')}")
            view = drive(sess, op_id, lambda: sess.engine.run(op_id))
            conclude(sess, view)


# ------------------------------------------------------------------------------- ops


OpArgument = Annotated[
    str, typer.Argument(metavar="OP", help="Operation id (op-...); a unique beginning of it is enough.",
                        show_default=False)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout (nothing else goes to stdout).")]


def _remotely(config: Path | None, as_json: bool, command: Callable[..., None], *args: Any) -> bool:
    """``command`` (of :mod:`agent.cli.remote_ops`) when a running agent's URL is given (it may
    leave with an exit code); False: work here."""

    with reporting(as_json=as_json):
        agent = remote_agent(config)
        if agent is None:
            return False
        command(agent, *args)
    return True


@contextmanager
def _store_only(config: Path | None, as_json: bool) -> Iterator[tuple[LoadedConfig, Journal]]:
    """For the commands that only read the store: its journal (no site is contacted, so they work
    while the sites cannot be reached)."""

    with reporting(as_json=as_json):
        loaded = read_config(config)
        with open_journal(loaded) as journal:
            yield loaded, journal


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
    from agent.engine.storecheck import UnreadableOperation, operation_ids, read_operation

    if _remotely(config, as_json, remote_ops.remote_ops_list, status, limit, as_json):
        return
    with _store_only(config, as_json) as (_, journal):
        views: list[OperationView] = []
        damaged: list[UnreadableOperation] = []
        for op_id in operation_ids(journal.store, status=status, limit=limit):
            try:  # a damaged operation is reported, located, after the ones that can be read
                views.append(read_operation(journal.store, op_id, partial(journal.view, op_id)))
            except UnreadableOperation as exc:
                damaged.append(exc)
        now = current_time()
        list_operations(f"in the store {store_location(str(journal.store.engine.url))}", views, status, now, as_json)
        if damaged:
            report_error(UnreadableOperation(damaged[0].fields["operation"],
                                             [c for d in damaged for c in d.cells]))
            raise typer.Exit(EXIT_REFUSED)


def list_operations(place: str, views: list[OperationView], status: list[str] | None, now: datetime,
                    as_json: bool) -> None:
    """The table (or JSON list) of ``ops list`` (``place``: where they are kept, to say none are)."""

    if as_json:
        print_json([{k: v for k, v in view.to_json(now).items() if k != "steps"} for view in views])
        return
    if not views:
        what = f" {' or '.join(status)}" if status else ""
        out.print(f"no{what} operations {escape(place)}")
        return
    rows: list[list[Cell]] = [
        [v.id, v.kind, v.plan, (v.status, OP_STYLE.get(v.status, "")), f"{v.percent:.0f}%",
         utc_time(v.created_at).removesuffix(" UTC"), duration(v.elapsed_s(now)),
         ", ".join(v.failed_vms) or "-"] for v in views]
    for line in columns(["OPERATION", "KIND", "PLAN", "STATUS", "DONE", "STARTED (UTC)", "ELAPSED",
                         "FAILED VMS"], rows):
        out.print(line)


@ops_app.command("show", help="Show one operation: status, progress, elapsed time, VMs that failed, "
                 "what it waits for, its steps (status, target, items changed, attempts, time), every "
                 "error with code and target, what each script printed, the operators' notes, and where it "
                 "did otherwise than its preview (an address VMM granted in place of a planned one that was "
                 "taken meanwhile, and the DNS records written with it).")
def ops_show(op: OpArgument, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    from agent.engine.storecheck import children as children_of
    from agent.engine.storecheck import read_operation

    if _remotely(config, as_json, remote_ops.remote_ops_show, op, as_json):
        return
    with _store_only(config, as_json) as (loaded, journal):
        op_id = _resolve_op(journal, op)
        view, row = read_operation(journal.store, op_id, lambda: (journal.view(op_id), journal.operation(op_id)))
        now = current_time()
        steps = journal.steps(op_id)  # read once: the VMs done, the skipped items, the script runs
        children = children_of(journal.store, op_id)
        deviations = deviations_from_preview(journal, op_id)
        where = where_vms_are(loaded, journal, row, steps) if row.kind in REAL_FAILOVERS and row.status != "succeeded" \
            else None
        if as_json:
            print_json({**view.to_json(now), "requested_by": row.requested_by,
                        "plan_checksum": row.plan_checksum, "result": row.result,
                        "followed_by": [{"id": c, "kind": k, "status": st} for c, k, st in children],
                        "deviations": [d for d, _ in deviations],
                        "scripts": [{"step": name, **record} for name, record in _script_runs(steps)],
                        **({"vms_now": where} if where is not None else {})})
            return
        print_operation(loaded, steps, view, row.requested_by, row.plan_checksum, children, now, where)
        if deviations:
            out.print(f"\n[bold yellow]differs from the preview[/] ({len(deviations)})")
            for _, line in deviations:
                out.print(f"  - {escape(line)}")


def print_operation(loaded: LoadedConfig | RemoteAgent, steps: list[StepRow], view: OperationView,
                    requested_by: str | None, plan_checksum: str | None, children: list[tuple[str, str, str]],
                    now: datetime, where: dict[str, Any] | None) -> None:
    """``ops show`` as text (``steps``: the journal's rows, for what was skipped and what scripts
    printed; none from a running agent's API)."""
    style = OP_STYLE.get(view.status, "")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(view.counts.items()))
    facts = [
        ("operation", f"[bold]{view.id}[/] {view.kind} of plan {escape(view.plan)}: "
                      f"{escape(view.source_site)} -> {escape(view.target_site)}"),
        ("status", f"[{style}]{view.status}[/] ({view.percent:.0f}% of {plural(len(view.steps), 'step')}: "
                   f"{counts or 'none'})"),
        ("started", utc_time(view.created_at) + (f" by {escape(requested_by)}" if requested_by else "")),
        ("elapsed", duration(view.elapsed_s(now))
         + (f" (finished {utc_time(view.finished_at)})" if view.finished_at else "")),
        ("mode", f"{view.mode}; {POLICY_WORDS.get(view.error_policy, view.error_policy)}"),
    ]
    if plan_checksum is not None or isinstance(loaded, LoadedConfig):
        facts.append(("plan", plan_checksum or "-"))
    if view.parent_id:
        facts.append(("follows", view.parent_id))
    for c, k, st in children:
        facts.append(("followed by", f"{c} {k} ({st})"))
    if view.succeeded_vms:
        facts.append(("VMs done", escape(", ".join(view.succeeded_vms))))
    elif where is not None:
        facts.append(("VMs done", escape(", ".join(f"{vm} (running at {view.target_site})" for vm in where["done"])
                                         if where["sites_read"] else ", ".join(where["done"]) + " (as the journal "
                                         f"says; the sites were not all read: {where['reason']})") or "none"))
    if view.failed_vms:
        facts.append(("VMs failed", f"[red]{escape(', '.join(view.failed_vms))}[/]"))
    if where is not None and where["vms"]:
        from agent.engine.planstate import VM_WORDS, VmState

        for i, v in enumerate(where["vms"]):
            at = f"running at {', '.join(v['running_at'])}" if v["running_at"] else "off at both sites"
            facts.append(("" if i else "VMs now", escape(f"{v['vm']:<12}{VM_WORDS[VmState(v['state'])]:<32}{at}")))
    if where is not None and where["off_everywhere"]:
        facts.append(("[red]DOWN[/]", f"[bold red]{escape(', '.join(where['off_everywhere']))} powered off at both "
                      f"sites[/]: {escape(command_line(loaded, f'ops resume {view.id}'))} finishes the failover, "
                      f"{escape(command_line(loaded, f'ops cancel {view.id}'))} undoes it"))
    for label, value in facts:
        pad = 13 + len(label) - len(label.replace("[red]", "").replace("[/]", ""))
        out.print(f"{label + ':' if label else '':<{pad}}{value}")
    if view.status == WAITING:
        out.print(f"\n[bold yellow]waiting for a manual action:[/] {escape(view.waiting_for or '')}")
        out.print(f"when it is done: {command_line(loaded, f'ops resume {view.id}')}")
    elif view.status in ("failed", "interrupted"):
        out.print(f"\nstart it again from where it stopped: {command_line(loaded, f'ops resume {view.id}')}")

    out.print("\n[bold]steps[/]")
    rows: list[list[Cell]] = []
    skipped = skipped_in(steps)
    for s in view.steps:
        took = duration((s.finished_at - s.started_at).total_seconds()) if s.started_at and s.finished_at else "-"
        tried = s.attempts > 0
        rows.append([str(s.ordinal + 1), (STEP_WORD.get(s.status, s.status), STEP_STYLE.get(s.status, "")),
                     s.name, s.target or "agent", str(s.items) if tried else "-", str(s.changed) if tried else "-",
                     str(len(skipped.get(s.ordinal, []))) if tried else "-", str(s.attempts) if tried else "-", took])
    for line in columns(["#", "STATUS", "STEP", "TARGET", "ITEMS", "CHANGED", "SKIPPED", "TRIES", "TIME"], rows):
        out.print("  " + line)
    if skipped:
        out.print("\n[bold]skipped[/] (items not attempted)")
        for ordinal, items in sorted(skipped.items()):
            for line in skip_lines(items):
                out.print(f"  {ordinal + 1}. {view.steps[ordinal].name}: {line}")
    if view.errors:
        out.print(f"\n[bold]errors[/] ({len(view.errors)})")
        targets = {s.name: s.target for s in view.steps}
        for e in view.errors:
            out.print(f"  - {error_text(e, targets.get(e['step']))}  [dim](step {escape(e['step'])})[/]")
    runs = _script_runs(steps)
    if runs:
        out.print(f"\n[bold]script output[/] ({plural(len(runs), 'run')})")
        for name, record in runs:
            out.print(f"  {escape(name)}:")
            for text in script_lines(record):
                out.print("    " + text, markup=False)
    out.print(f"\n[bold]notes[/] ({len(view.notes)})")
    for n in view.notes:
        out.print(f"  {n['at'][:19].replace('T', ' ')} UTC  {escape(n['author'])}: {escape(n['text'])}")
    if not view.notes:
        out.print(f"  none; add one with {command_line(loaded, f'ops note {view.id} TEXT')}")


def _script_runs(steps: list[StepRow]) -> list[tuple[str, dict]]:
    """(step name, what was kept of the run) of each script step that ran."""
    return [(r.name, it["value"]) for r in steps if r.action == "script" and r.outcome
            for it in r.outcome.get("items", []) if isinstance(it.get("value"), dict)]


@contextmanager
def _stored_operation(op: str, config: Path | None, as_json: bool) -> Iterator[tuple[Session, OperationRow]]:
    """For the commands that act on one stored operation with the sites: a session, and the
    operation ``op`` names in its store."""

    from agent.engine.storecheck import read_operation

    with reporting(as_json=as_json), open_session(read_config(config), as_json=as_json) as sess:
        op_id = _resolve_op(sess.journal, op)
        yield sess, read_operation(sess.journal.store, op_id, partial(sess.journal.operation, op_id))


def _say_cancel_requested(loaded: LoadedConfig, op_id: str, who: str, as_json: bool) -> NoReturn:
    if as_json:
        with open_journal(loaded) as journal:
            print_json(journal.view(op_id).to_json(current_time()))
    else:
        out.print(f"cancel requested: {escape(who)} starts no new step, finishes the ones in hand and undoes "
                  f"what it did. If no agent runs it any more, {command_line(loaded, f'ops resume {op_id}')} "
                  "carries out the cancel.")
    raise typer.Exit(EXIT_OK)


@ops_app.command("resume", help="Continue an operation: after a manual pause (this says the manual "
                 "action is done), after an error was fixed (the failed step runs again; steps that "
                 "succeeded are not repeated), or after the agent was stopped. Shows progress like "
                 "'run'.\n\n" + EXIT_CODES_HELP)
def ops_resume(op: OpArgument, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    _remotely(config, as_json, remote_ops.remote_ops_resume, op, as_json)
    with _stored_operation(op, config, as_json) as (sess, row):
        loaded, op_id = sess.loaded, row.id
        if row.status in FINAL:
            from agent.engine.compensation import can_compensate_again

            parent = sess.journal.operation(row.parent_id) if row.kind == "cancel" and row.parent_id else None
            raise RefusedError(f"{op_id} is {row.status}; it cannot run again"
                               + (f" ({command_line(loaded, f'run --plan {row.plan_name} --kind cleanup')} "
                                  "undoes a test failover)" if row.kind == "test_failover" else "")
                               + (f" ({command_line(loaded, f'ops cancel {parent.id}')} undoes what it left)"
                                  if parent is not None and can_compensate_again(parent) else ""),
                               operation=op_id)
        if row.status == WAITING:
            view = sess.engine.view(op_id)
            if any(s.status == "waiting" and s.action == "hyperv.await_failover" for s in view.steps):
                sess.say(f"{op_id}: reading replication again before anything moves: {escape(view.waiting_for or '')}")
            else:
                sess.say(f"{op_id}: marking the manual step done: {escape(view.waiting_for or '')}")
        elif row.status == "running":
            sess.say(f"{op_id} is marked running; continuing it from its journal here "
                     "(an agent that stops leaves its operations so).")
        view = drive(sess, op_id, lambda: sess.engine.resume(op_id, actor=current_user()))
        conclude(sess, view)


@ops_app.command("cancel", help="Cancel an operation and undo what is safe to undo: a test failover "
                 "is cleaned up; a planned or unplanned failover or failback that has not finished is "
                 "rolled back from its snapshots (Hyper-V Replica failover cancelled where each VM's "
                 "replication is, source VMs that were running started again, failover IPs, routes and "
                 "DNS put back). Reservations are kept. The undoing is an operation of its own, shown as "
                 "it runs; when it could not put every VM back, cancelling again once the cause is fixed "
                 "undoes the rest. Cancelling a failover changes production: what it undoes is shown and "
                 "must be confirmed, unless --yes.\n\n" + EXIT_CODES_HELP)
def ops_cancel(
    op: OpArgument,
    config: ConfigOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before rolling a failover back.")] = False,
    as_json: JsonOption = False,
) -> None:
    from agent.engine.compensation import can_compensate_again

    _remotely(config, as_json, remote_ops.remote_ops_cancel, op, yes, as_json)
    with reporting(as_json=as_json):
        loaded = read_config(config)
        with open_journal(loaded) as journal:
            op_id = _resolve_op(journal, op)
            kind = journal.operation(op_id).kind
        leader = request_cancel_of_led(loaded, op_id, kind, yes=yes)
        if leader is not None:
            _say_cancel_requested(loaded, op_id, f"{leader}, which runs {op_id},", as_json)
    with _stored_operation(op, config, as_json) as (sess, row):
        loaded, op_id = sess.loaded, row.id
        if row.status in FINAL and not can_compensate_again(row):
            hint = (f"; {command_line(loaded, f'run --plan {row.plan_name} --kind cleanup')} cleans up a test "
                    "failover" if row.kind == "test_failover" and row.status != "cancelled" else "")
            raise RefusedError(f"{op_id} is already {row.status}: nothing to cancel{hint}", operation=op_id)
        if row.kind in REAL_FAILOVERS:
            confirm_cancel(sess, row, yes=yes)
        if row.status == "running":
            sess.engine.cancel(op_id, actor=current_user())
            _say_cancel_requested(loaded, op_id, f"the agent running {op_id}", as_json)
        view = run_shown(sess, op_id, lambda: sess.engine.cancel(op_id, actor=current_user()))
        comp = (sess.journal.operation(op_id).result or {}).get("compensation") or {}
        if as_json:
            print_json({**view.to_json(current_time()), "compensation": comp})
        else:
            out.print()
            out.print(f"[{OP_STYLE['cancelled']}]cancelled[/]: {view.kind} {op_id} of plan {escape(view.plan)}")
            if comp.get("operation"):
                style = OP_STYLE.get(comp.get("status", ""), "")
                out.print(f"  undone by {comp['operation']}: [{style}]{comp.get('status')}[/]"
                          + (f"; VMs that failed: {escape(', '.join(comp['failed_vms']))}"
                             if comp.get("failed_vms") else ""))
                if comp.get("not_restored"):
                    child = comp["operation"]
                    out.print(f"  not put back as they were: [red]{escape(', '.join(comp['not_restored']))}[/]; "
                              f"see {command_line(loaded, f'ops show {child}')}, fix the cause, then "
                              f"{command_line(loaded, f'ops cancel {op_id}')} undoes the rest")
                if comp.get("cannot_undo"):
                    out.print(f"  failed over for good (completed): [red]{escape(', '.join(comp['cannot_undo']))}[/]; "
                              "no cancel undoes that, a failback does")
            else:
                out.print(f"  {escape(comp.get('undone', 'nothing to undo'))}")
        failed = comp.get("operation") and (comp.get("status") != "succeeded" or comp.get("not_restored")
                                            or comp.get("cannot_undo"))
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
    with reporting():
        if not text.strip():
            raise RefusedError("the note is empty")
    if _remotely(config, False, remote_ops.remote_ops_note, op, text, author):
        return
    with reporting():
        loaded = read_config(config)
        with open_journal(loaded) as journal:
            op_id = _resolve_op(journal, op)
            who = author or current_user()
            journal.add_note(op_id, who, text)
            journal.store.audit(actor=who, action="operation.note", operation_id=op_id, details={"text": text})
            out.print(f"note added to {op_id} by {escape(who)}")


@ops_app.command("audit", help="The audit trail, oldest first: every change the agent made to an outside "
                 "system and every operator action, with time (UTC), actor, target, how it ended and what "
                 "was there before and after; of one operation, "
                 "or the newest entries of all.")
def ops_audit(
    op: Annotated[str | None, typer.Argument(metavar="[OP]", help="Only this operation.", show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many (the newest).")] = 200,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    from agent.engine.storecheck import UnreadableOperation, audit_entries

    if _remotely(config, as_json, remote_ops.remote_ops_audit, op, limit, as_json):
        return
    with _store_only(config, as_json) as (_, journal):
        op_id = _resolve_op(journal, op) if op is not None else None
        rows, damaged = audit_entries(journal.store, op_id, limit)
        print_audit(rows, op_id, as_json)
        if damaged:  # reported, located, after the entries that can be read
            report_error(UnreadableOperation(damaged[0].operation, damaged))
            raise typer.Exit(EXIT_REFUSED)

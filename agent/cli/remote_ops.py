"""The commands against a running agent (``--agent-url``, :mod:`agent.cli.remote`): status, plan,
run, report and the ops commands, through its API, with the output of the local commands -- the
same renderers fed the API's JSON, which has the keys of the CLI's ``--json``.

What the API does not serve is left out, and only that: the items a step skipped and what
scripts printed (``ops show``, the live display), and the details of an undo (``ops cancel``). A
failover's confirmation is recorded by the agent under the token's name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import typer
from rich.markup import escape

from agent.cli.app import EXIT_FAILED, EXIT_OK, echo, err, out, print_json
from agent.cli.progress import Display
from agent.cli.remote import WAITING, AgentClient, RemoteAgent, started
from agent.cli.vocabulary import CONFIRMED, FINAL, OP_STYLE, REAL_FAILOVERS, command_line, current_time
from agent.engine.model import OperationView
from agent.errors import AgentError, RefusedError

PICKED_UP_S = 5.0
"""How long a resume or cancel waits for the agent's worker to take the operation up before
following it anyway (until then it still shows the state it was asked to leave)."""


@dataclass
class RemoteSession:
    """What a command working through a running agent works with (the counterpart of
    :class:`agent.cli.session.Session`)."""

    agent: RemoteAgent
    client: AgentClient
    display: Display
    as_json: bool

    @property
    def can_ask(self) -> bool:
        from agent.cli.session import is_interactive

        return is_interactive() and not self.as_json

    def say(self, text: str = "") -> None:
        (err if self.as_json else out).print(text)


def _session(agent: RemoteAgent, as_json: bool) -> RemoteSession:
    return RemoteSession(agent, AgentClient(agent), Display.for_output(as_json), as_json)


def _path(*parts: str) -> str:
    return "/v1/" + "/".join(quote(p, safe="") for p in parts)


def resolve(rs: RemoteSession, text: str) -> dict[str, Any]:
    """The operation ``text`` names at the agent: its whole id or a unique beginning of it."""

    from agent.cli.operations import UnknownOperation

    try:
        op: dict[str, Any] = rs.client.get(_path("operations", text))
        return op
    except AgentError as exc:
        if exc.code not in ("not_found", "unknown_operation"):
            raise
    matches: list[dict[str, Any]] = []
    if len(text.removeprefix("op-")) >= 4:  # as locally: 'op-' alone must not pick "the only operation"
        listed = rs.client.get("/v1/operations", limit=1000)["operations"]
        matches = [o for o in listed if o["id"].startswith((text, "op-" + text))]
    if len(matches) == 1:
        whole: dict[str, Any] = rs.client.get(_path("operations", matches[0]["id"]))
        return whole
    if matches:
        raise UnknownOperation(f"{text!r} matches {len(matches)} operations "
                               f"({', '.join(o['id'] for o in matches[:5])}{' ...' if len(matches) > 5 else ''}); "
                               "give more of the id", operation=text)
    raise UnknownOperation(f"no operation {text!r} at the agent {rs.agent.url}; "
                           f"'{command_line(rs.agent, 'ops list')}' shows the operations it holds", operation=text)


# ------------------------------------------------------------------------ read

def remote_status(agent: RemoteAgent, plan_name: str | None, as_json: bool) -> None:
    from agent.cli.status import print_status

    with AgentClient(agent) as client:
        found = client.get("/v1/plans", refresh="true")
    plans = found["plans"]
    if plan_name is not None:
        plans = [p for p in plans if p["plan"].lower() == plan_name.lower()]
        if not plans:
            known = ", ".join(p["plan"] for p in found["plans"]) or "none"
            raise RefusedError(f"no recovery plan named {plan_name!r} at the agent {agent.url} (known: {known})",
                               plan=plan_name)
    print_status(agent, found.get("mode", "?"), plans, as_json)


def remote_plan(agent: RemoteAgent, plan_name: str, kind: str, as_json: bool) -> None:
    with AgentClient(agent) as client:
        shown = client.post(_path("plans", plan_name, "preview"), {"kind": kind})
    if as_json:
        print_json({k: v for k, v in shown.items() if k not in ("text", "operation_kind")})
    else:
        echo(shown["text"], nl=False)


def remote_ops_list(agent: RemoteAgent, status: list[str] | None, limit: int, as_json: bool) -> None:
    from agent.cli.operations import list_operations

    with AgentClient(agent) as client:
        listed = client.get("/v1/operations", status=status, limit=min(limit, 1000))["operations"]
    list_operations(f"at the agent {agent.url}", [OperationView.from_json(o) for o in listed], status,
                    current_time(), as_json)


def remote_ops_show(agent: RemoteAgent, op: str, as_json: bool) -> None:
    from agent.cli.operations import print_operation

    rs = _session(agent, as_json)
    with rs.client:
        found = resolve(rs, op)
    if as_json:
        print_json(found)
        return
    print_operation(agent, [], OperationView.from_json(found), found.get("requested_by"), found.get("plan_checksum"),
                    [], current_time(), None)


def remote_ops_audit(agent: RemoteAgent, op: str | None, limit: int, as_json: bool) -> None:
    from datetime import datetime

    from agent.cli.trail import print_audit
    from agent.engine.store import AuditRow

    rs = _session(agent, as_json)
    rows: list[AuditRow] = []
    with rs.client:
        op_id = resolve(rs, op)["id"] if op is not None else None
        after: int | None = 0
        while after is not None:  # oldest first, a page at a time: the newest ``limit`` are kept
            page = rs.client.get("/v1/audit", after=after, limit=1000, operation=op_id)
            rows += [AuditRow(id=e["id"], at=datetime.fromisoformat(e["at"]), actor=e["actor"], action=e["action"],
                              target=e["target"], operation_id=e["operation_id"], details=e["details"])
                     for e in page["entries"]]
            rows = rows[-limit:]
            after = page["next_after"]
    print_audit(rows, op_id, as_json)


def remote_report(agent: RemoteAgent, op: str, form: str, output: Path | None) -> None:
    import sys

    from agent.cli.report import _write

    rs = _session(agent, False)
    with rs.client:
        op_id = resolve(rs, op)["id"]
        text = rs.client.text(_path("operations", op_id, "report"), format=form)
    if form == "json":  # as the local command prints it
        import json

        text = json.dumps(json.loads(text), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    _write(output, text)
    out.print(f"report of {op_id} written to {output}", markup=False)


# ---------------------------------------------------------------------- acting

def remote_ops_note(agent: RemoteAgent, op: str, text: str, author: str | None) -> None:
    if author is not None:
        raise RefusedError("--author: the agent records a note under the name of the token that adds it; drop "
                           "--author (or add the note on the agent's machine)")
    rs = _session(agent, False)
    with rs.client:
        op_id = resolve(rs, op)["id"]
        noted = rs.client.post(_path("operations", op_id, "notes"), {"text": text})
    who = noted["notes"][-1]["author"] if noted.get("notes") else "?"
    out.print(f"note added to {op_id} by {escape(who)}")


def remote_run(agent: RemoteAgent, kind: str, plan_name: str, *, yes: bool, checksum: str | None, take_over: bool,
               as_json: bool) -> NoReturn:
    rs = _session(agent, as_json)
    with rs.client:
        expect, shown = checksum, None
        if kind in CONFIRMED:
            expect, shown = _review(rs, kind, plan_name, yes=yes, checksum=checksum)
        options: dict[str, Any] = {"take_over_dns": take_over}
        if kind in CONFIRMED:
            options["confirmed"] = "yes" if yes else "terminal"
        body: dict[str, Any] = {"kind": kind, "plan": plan_name, "options": options}
        if expect is not None:
            body["plan_checksum"] = expect
        op = started(rs.client, body)
        if shown is not None and kind not in ("commit", "reverse") and yes:
            rs.say(f"plan: {escape(shown.get('summary', '?'))}\nchecksum {shown.get('checksum', '?')}")
        _conclude(rs, _drive(rs, op))


def remote_ops_resume(agent: RemoteAgent, op: str, as_json: bool) -> NoReturn:
    rs = _session(agent, as_json)
    with rs.client:
        found = resolve(rs, op)
        op_id, status = found["id"], found["status"]
        if status in FINAL:
            cleanup = command_line(agent, f"run --plan {found['plan']} --kind cleanup")
            raise RefusedError(f"{op_id} is {status}; it cannot run again"
                               + (f" ({cleanup} undoes a test failover)" if found["kind"] == "test_failover" else ""),
                               operation=op_id)
        if status == WAITING:
            waiting = [s for s in found["steps"] if s["status"] == "waiting"]
            what = "reading replication again before anything moves" if any(
                s["action"] == "hyperv.await_failover" for s in waiting) else "marking the manual step done"
            rs.say(f"{op_id}: {what}: {escape(found.get('waiting_for') or '')}")
        elif status == "running":
            rs.say(f"{op_id} is marked running; the agent continues it from its journal")
        _conclude(rs, _drive(rs, _acted(rs, found, "resume")))


def remote_ops_cancel(agent: RemoteAgent, op: str, yes: bool, as_json: bool) -> NoReturn:
    from agent.cli.session import _confirm

    rs = _session(agent, as_json)
    with rs.client:
        found = resolve(rs, op)
        op_id, kind = found["id"], found["kind"]
        if kind in REAL_FAILOVERS and not yes:
            label = kind.replace("_", " ")
            _confirm(rs, lambda: f"{label} {op_id} of plan {found['plan']} ({found['status']}): cancelling it rolls "
                     f"the failover back, VM by VM, from its snapshots (reservations are kept).\n",
                     f"Cancel {op_id} and undo it now?",
                     f"cancelling {label} {op_id} changes production (it rolls the failover back) and needs a "
                     "confirmation",
                     f"Review it with {command_line(agent, f'ops show {op_id}')}, then run again with --yes",
                     operation=op_id)
        view = _follow(rs, _acted(rs, found, "cancel"))
    if as_json:
        print_json(view.to_json(current_time()))
    elif view.status == "cancelled":
        out.print()
        out.print(f"[{OP_STYLE['cancelled']}]cancelled[/]: {view.kind} {op_id} of plan {escape(view.plan)}; "
                  f"what was undone: {command_line(agent, f'ops show {op_id}')} and its audit trail")
    else:
        from agent.cli.session import print_outcome

        print_outcome(agent, view)
    raise typer.Exit(EXIT_OK if view.status == "cancelled" else EXIT_FAILED)


# ------------------------------------------------------------------- following

def _review(rs: RemoteSession, kind: str, plan_name: str, *, yes: bool,
            checksum: str | None) -> tuple[str | None, dict[str, Any] | None]:
    """As a local run reviews (:func:`agent.cli.session.review`): the agent's preview shown and
    confirmed, and its checksum sent with the start so that a plan changed since is refused."""

    from agent.cli.session import _confirm
    from agent.engine.service import PlanChanged

    if yes and checksum is None:
        return None, None
    shown: dict[str, Any] = rs.client.post(_path("plans", plan_name, "preview"), {"kind": kind, "strict": True})
    actual = shown["checksum"]
    if checksum is not None and checksum != actual:
        raise PlanChanged(f"the plan for {plan_name} changed since it was reviewed (reviewed {checksum}, now "
                          f"{actual}); preview it again with "
                          f"'{command_line(rs.agent, f'plan --plan {plan_name} --kind {kind}')}'",
                          plan=plan_name, expected=checksum, actual=actual)
    if yes:
        return actual, shown
    label = kind.replace("_", " ")
    where = "with " + command_line(rs.agent, f"plan --plan {plan_name} --kind {kind}") if rs.as_json else "above"
    _confirm(rs, lambda: str(shown["text"]),
             f"Run this {label} of {plan_name} now ({len(shown['vms'])} VMs, "
             f"{shown['source_site']} -> {shown['target_site']})?",
             f"a {label} changes production and needs a confirmation",
             f"Review it {where}, then run again with --yes --checksum {actual}")
    return actual, shown


def _acted(rs: RemoteSession, op: dict[str, Any], action: str) -> dict[str, Any]:
    """POST the resume or cancel of ``op``, then its state once the agent's worker has it."""

    def moved(o: dict[str, Any]) -> tuple[Any, ...]:
        return (o["status"], tuple((s["ordinal"], s["status"], s["attempts"]) for s in o["steps"]))

    before = moved(op)
    now: dict[str, Any] = rs.client.post(_path("operations", op["id"], action))
    deadline = time.monotonic() + PICKED_UP_S
    while moved(now) == before and time.monotonic() < deadline:
        time.sleep(0.1)
        now = rs.client.get(_path("operations", op["id"]))
    return now


def _follow(rs: RemoteSession, op: dict[str, Any]) -> OperationView:
    """Show ``op`` as its event stream tells, until it settles; its last state."""

    op_id = op["id"]
    last = {op_id: op}
    rs.display.source = lambda i: OperationView.from_json(last[i])
    try:
        with rs.display.following(op_id):
            for snapshot in rs.client.events(op_id):
                last[op_id] = snapshot
                rs.display.progress(op_id)
    except KeyboardInterrupt:
        err.print(f"\n{op_id} goes on at the agent; follow it with {command_line(rs.agent, f'ops show {op_id}')}")
        raise
    return OperationView.from_json(last[op_id])


def _drive(rs: RemoteSession, op: dict[str, Any]) -> OperationView:
    """As :func:`agent.cli.session.drive`: at a manual pause the instruction, and 'Done?' when
    someone can answer (then the agent resumes it)."""

    from agent.cli.session import _ask, _show_waiting

    view = _follow(rs, op)
    while view.status == WAITING:
        _show_waiting(rs, view)
        if not rs.can_ask or not _ask("Done?"):
            return view
        view = _follow(rs, _acted(rs, rs.client.get(_path("operations", view.id)), "resume"))
    return view


def _conclude(rs: RemoteSession, view: OperationView) -> NoReturn:
    from agent.cli.session import outcome_exit_code, print_outcome

    if rs.as_json:
        print_json(view.to_json(current_time()))
    else:
        print_outcome(rs.agent, view)
    raise typer.Exit(outcome_exit_code(view))


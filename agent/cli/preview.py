"""What an operation of any kind would change, as 'plan' shows it and 'run' (and 'ops cancel')
asks about: a failover's full plan; for a prepare and the follow-ups (cleanup, commit, reverse)
and a cancel, the operation they follow, the VMs as the sites report them, and the steps they
would run. Each with the checksum 'run --checksum' accepts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.cli.vocabulary import wrapped
from agent.errors import ConflictError, NotFoundError, RefusedError

if TYPE_CHECKING:
    from agent.domain.plan import Plan
    from agent.engine.model import StepSpec
    from agent.engine.planstate import PlanStatus
    from agent.engine.reading import Reading
    from agent.engine.service import Engine
    from agent.engine.store import OperationRow

ITEMS_SHOWN = 6
"""Items named per step; the rest are counted (a step of a large plan holds hundreds)."""

FULL_DIFF = ("test_failover", "planned_failover", "unplanned_failover", "failback")
"""Kinds shown as the plan's full diff; the others as the steps they would run."""


@dataclass(frozen=True)
class Preview:
    kind: str
    plan: Plan
    text: str
    """Lines of at most 80 characters, ending in a newline (a failover's diff may be wider)."""
    body: dict[str, Any]
    """The JSON form: the plan's, with what the operation would do under ``operation``."""
    reading: Reading | None = None
    """What it was planned from: ``Engine.create`` of this plan plans from it, not from a new read."""

    @property
    def checksum(self) -> str:
        return self.plan.checksum()


def _what(kind: str, plan: Plan, parent: OperationRow | None) -> str:
    follows = f"{parent.kind} {parent.id}" if parent else ""
    return {
        "prepare": f"reserves the failover addresses at {plan.target_site} ahead of a failover; nothing else "
                   "changes",
        "cleanup_test": f"removes test failover {follows}: test VMs, test addresses, test DNS records and the "
                        "test networks it created",
        "commit": f"makes {follows} final: completes the Hyper-V Replica failover of its VMs at "
                  f"{plan.target_site} (their recovery points are merged; it cannot be cancelled any more) "
                  "and gives the DNS records it wrote their original TTL back",
        "reverse": f"reverses replication after {follows}: the VMs at {plan.target_site} replicate back to "
                   f"{plan.source_site}, then addresses are reserved at {plan.source_site} for the way back",
        "change_recovery_point": f"brings the VMs of {follows} up from recovery point {plan.recovery_point} "
                                 f"at {plan.target_site}: each pending failover is stopped (the replica turns off), "
                                 "failed over again to that point and started; failover IPs, routes and DNS stay",
        "cancel": f"undoes {follows}: Hyper-V Replica failovers cancelled where each VM's replication is, "
                  f"the source VMs at {plan.source_site} that were running started again, failover IPs, "
                  "routes and DNS records put back from their snapshots (reservations are kept)",
    }[kind]


def _steps(steps: list[StepSpec]) -> tuple[list[str], list[dict[str, Any]]]:
    lines = [f"steps ({len(steps)}):"] if steps else ["steps: none (nothing to change)"]
    body = []
    for i, s in enumerate(steps, 1):
        keys = [it.key for it in s.args.items]
        shown = ", ".join(keys[:ITEMS_SHOWN]) + (f" (+{len(keys) - ITEMS_SHOWN} more)" if len(keys) > ITEMS_SHOWN
                                                 else "")
        lines += wrapped(f"{i}. {s.name} at {s.target or 'agent'}" + (f": {shown}" if shown else ""),
                         hanging="       ")
        body.append({"name": s.name, "action": s.action, "target": s.target, "items": keys})
    return lines, body


def _vms(status: PlanStatus) -> list[str]:
    from agent.engine.planstate import VM_WORDS

    lines = ["VMs, as the sites report them now:"]
    for v in status.vms:
        where = ", ".join(v.running_at) or "off at both sites"
        lines.append(f"  {v.vm:<12}{VM_WORDS[v.state]:<32}{where}".rstrip())
    return lines


def _operation_text(kind: str, plan: Plan, parent: OperationRow | None, status: PlanStatus,
                    step_lines: list[str]) -> str:
    label = kind.replace("_", " ")
    lines = wrapped(f"{label} of plan {plan.plan}: {_what(kind, plan, parent)}", "", hanging="  ")
    if kind != "cancel":
        lines.append(f"checksum {plan.checksum()}")
        if parent is not None:
            lines += wrapped(f"(the checksum of the plan of {parent.id}: 'run --kind {kind} --checksum' "
                             "accepts it)", "")
    lines += ["", *_vms(status), ""]
    lines += step_lines
    if plan.notes:
        lines += ["", "notes:"]
        for n in plan.notes:
            lines += wrapped(f"- {n}", hanging="    ")
    return "\n".join(lines) + "\n"


def preview(engine: Engine, kind: str, plan_name: str, *, strict: bool = False,
            recovery_point: str | None = None) -> Preview:
    """What ``run --kind kind`` of ``plan_name`` would change now (``strict``: refused when the
    plan's state does not allow it; otherwise that is said in the first note)."""

    from agent.domain.plan import render_diff
    from agent.engine.model import OperationKind
    from agent.engine.operations import steps_for

    op_kind = OperationKind(kind)
    parent = None
    try:
        plan, reading = engine.review(op_kind, plan_name, strict=strict, recovery_point=recovery_point)
        if kind in FULL_DIFF or kind == "prepare":
            steps = steps_for(op_kind, engine.config, plan, None)
        else:
            parent, steps = engine.follow_up(op_kind, plan_name, recovery_point)
        step_lines, step_body = _steps(steps)
        # The VMs shown are those the plan was checked against (one read), not a second read's.
        text = render_diff(plan) if kind in FULL_DIFF else _operation_text(
            kind, plan, parent, engine.status(plan.plan, reading.inventory, reading.states), step_lines)
    except (NotFoundError, ConflictError) as exc:  # nothing to follow up: a refused request
        raise RefusedError(exc.message, **exc.fields) from exc
    body = {**plan.to_json(), "operation": {
        "kind": kind, "checksum": plan.checksum(),
        "follows": {"id": parent.id, "kind": parent.kind, "status": parent.status} if parent else None,
        "steps": step_body}}
    return Preview(kind, plan, text, body, reading)


def cancel_preview(engine: Engine, op: OperationRow) -> str:
    """What cancelling ``op`` would undo, as text (80 columns)."""

    from agent.engine.planio import plan_from_json

    steps = engine.cancel_steps(op.id)
    plan = plan_from_json(op.plan)
    return _operation_text("cancel", plan, op, engine.status(op.plan_name), _steps(steps)[0])

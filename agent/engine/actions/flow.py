"""Step actions between groups of a recovery plan: a manual pause for an operator, and a
recovery-plan script run on a host (its output kept with the step); and the record of the VMs an
unplanned failover leaves out."""

from __future__ import annotations

from agent.engine.actions.base import ActionContext, action, error_json
from agent.engine.audit import script_record
from agent.engine.model import ItemOutcome, StepResult
from agent.engine.steps import LeftOutArgs, ManualArgs, ScriptArgs
from agent.errors import PermanentError


class VmLeftOut(PermanentError):
    """An unplanned failover went on without this VM: its state could not be read when planned."""

    code = "vm_left_out"


@action("manual", ManualArgs)
def manual(ctx: ActionContext, args: ManualArgs) -> StepResult:
    """Wait for an operator. The step succeeds only when an operator resumes the operation."""
    return StepResult(waiting=args.instruction)


@action("left_out", LeftOutArgs)
def left_out(ctx: ActionContext, args: LeftOutArgs) -> StepResult:
    """Changes nothing: journals each VM the plan left out as failed, with why, so the operation
    cannot end ``succeeded`` without it and names it wherever its failed VMs are shown."""
    return StepResult(items=[ItemOutcome(key=it.key, vm=it.vm, error=error_json(VmLeftOut(
        f"VM {it.vm} was left out of this failover, nothing was done for it: {it.reason}",
        vm=it.vm))) for it in args.items])


@action("script", ScriptArgs)
def script(ctx: ActionContext, args: ScriptArgs) -> StepResult:
    """Run the script; what it wrote and printed is kept with the step (capped, secret
    parameters scrubbed), shown by 'ops show' and in the audit trail."""
    parameters = args.bound()
    result = ctx.call(f"script@{args.host}", lambda: ctx.ports.scripts.run_script(
        args.host, args.path, parameters, args.timeout_s))
    # The record names the config's parameters: the Context is the agent's own, shown by the plan.
    item = ItemOutcome(key=f"{args.host}:{args.path}", changed=True,
                       value=script_record(result, dict(args.parameters)))
    if not result.succeeded:
        item.error = {"code": "script_failed", "category": "permanent", "host": args.host,
                      "message": f"script {args.path} on {args.host} failed: {result.error or ''}"}
    return StepResult(items=[item])

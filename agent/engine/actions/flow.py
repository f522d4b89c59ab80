"""Step actions between groups of a recovery plan: a manual pause for an operator, and a
recovery-plan script run on a host (its output kept with the step)."""

from __future__ import annotations

from agent.engine.actions.base import ActionContext, action
from agent.engine.audit import script_record
from agent.engine.model import ItemOutcome, StepResult
from agent.engine.steps import ManualArgs, ScriptArgs


@action("manual", ManualArgs)
def manual(ctx: ActionContext, args: ManualArgs) -> StepResult:
    """Wait for an operator. The step succeeds only when an operator resumes the operation."""
    return StepResult(waiting=args.instruction)


@action("script", ScriptArgs)
def script(ctx: ActionContext, args: ScriptArgs) -> StepResult:
    """Run the script; what it wrote and printed is kept with the step (capped, secret
    parameters scrubbed), shown by 'ops show' and in the audit trail."""
    result = ctx.call(f"script@{args.host}", lambda: ctx.ports.scripts.run_script(
        args.host, args.path, dict(args.parameters), args.timeout_s))
    item = ItemOutcome(key=f"{args.host}:{args.path}", changed=True,
                       value=script_record(result, dict(args.parameters)))
    if not result.succeeded:
        item.error = {"code": "script_failed", "category": "permanent", "host": args.host,
                      "message": f"script {args.path} on {args.host} failed: {result.error or ''}"}
    return StepResult(items=[item])

"""What a Hyper-V host answers to ``powershell/scripts/Invoke-AgentPlanScript``, computed from the
simulated script runner (``agent/drivers/sim/scripts.py``): the simulated run does the work and
the handler reports it as the wrapper would -- what the script printed as ``output`` (its JSON
document as the last line, the convention the port's ``output`` stands for), a failed run as a
terminating error of the operator's script, with the output written before it kept. At a
router's endpoint the wrapper runs a ``script`` router's script: :func:`tests.remotesim.routes.router_script`."""

from __future__ import annotations

import json
from typing import Any

from tests.remotesim import Call, Handler


def invoke_plan_script(call: Call) -> dict[str, Any]:
    if call.target.role == "router":  # a router of kind script: the operator's script drives it
        from tests.remotesim.routes import router_script

        return router_script(call)
    p = call.parameters
    host = call.target.name
    # The wrapper splats the decoded object by name: the operator's script sees exactly these.
    bound = json.loads(p["ParametersJson"])
    path = p["Key"].split(":", 1)[1]
    result = call.world.scripts().run_script(host, path, bound, 600)
    output = result.stdout + (json.dumps(result.output) + "\n" if result.succeeded else "")
    error = None if result.succeeded else {"id": "Agent.script_failed", "message": result.error or "",
                                           "code": "script_failed"}
    return {"schema": call.script.schema_id, "items": [
        {"key": p["Key"], "changed": True, "before": None, "after": {"output": output, "errors": []},
         "error": error}]}


HANDLERS: dict[str, Handler] = {"Invoke-AgentPlanScript": invoke_plan_script}

"""The demo's recovery-plan script step on the wire: engine -> PsScripts -> pypsrp -> HTTP -> the
PSRP test server -> the wrapper's handler -> the simulated runner. The text the server receives
is the shipped wrapper, byte for byte; a hostile parameter value arrives intact inside the bound
JSON; what the script printed is in the journal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.drivers.remoting import load_script
from agent.drivers.sim import SimWorld
from agent.engine.model import OperationKind, OpStatus
from tests.integration.test_wire_hostile_values import HOSTILE
from tests.psrpserver import serving
from tests.remotesim import over_psrp, targets_for
from tests.rigs import Rig, Templates, copy_demo

WRAPPER = "scripts/Invoke-AgentPlanScript"
HOSTILE_URL = "\n".join(HOSTILE[:16])


def test_the_demo_script_step_over_the_wire(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with serving(monkeypatch) as server:
        to_psrp = over_psrp(("hyperv",), port=server.port)

        def edit(data: dict[str, Any]) -> None:
            to_psrp(data)
            data["recovery_plans"][0]["groups"][1]["after"][0]["script"]["parameters"]["Url"] = HOSTILE_URL

        templates = Templates.build(copy_demo(tmp_path / "demo", edit=edit))
        state, store = templates.copy_to(tmp_path / "rig")
        assert templates.loaded.simulator_inventory is not None
        server.world = SimWorld.open(templates.loaded.simulator_inventory, state)
        server.targets = targets_for(templates.loaded.config)
        rig = Rig(templates.loaded, state, store)
        try:
            op = rig.start(OperationKind.TEST_FAILOVER)
            assert op.status == OpStatus.SUCCEEDED.value, op.errors
            [step] = [s for s in rig.engine.journal.steps(op.id) if s.action == "script"]
        finally:
            rig.close()
    runs = [r for r in server.received if r.script_text == load_script(WRAPPER).text]
    assert len(runs) == 1
    bound = json.loads(runs[0].parameters["ParametersJson"])
    assert bound["Url"] == HOSTILE_URL and json.loads(bound["Context"])["kind"] == "test_failover"
    kept = step.outcome["items"][0]["value"]
    assert kept["output"]["parameters"]["Url"] == HOSTILE_URL
    assert f"Url = {HOSTILE_URL}\n" in kept["stdout"]

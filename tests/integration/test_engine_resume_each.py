"""Start-up resume takes every unfinished operation on its own: one that cannot be resumed is
reported and audited, and the ones after it still run. Before, the first refusal stopped the
start-up resume and every later operation stayed unfinished."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from agent.engine.model import OperationKind, OpStatus
from agent.errors import AgentError
from tests.rigs import Templates, copy_demo


def two_plans(config: dict[str, Any]) -> None:
    """The demo plan split in two, so that two operations can be unfinished at once (its
    subnet declared stretched, so that neither plan must take it whole)."""
    config["subnets"][0] = {"prefix": config["subnets"][0]["prefix"], "stretched": True}
    [plan] = config["recovery_plans"]
    web = plan["groups"].pop()
    config["recovery_plans"].append({"name": "contoso-web", "groups": [web]})


def test_an_operation_that_cannot_be_resumed_does_not_stop_the_others(new_rig, tmp_path: Path) -> None:
    rig = new_rig(templates=Templates.build(copy_demo(tmp_path / "two-plans", edit=two_plans)))
    first = rig.engine.create(OperationKind.PREPARE, "contoso-apps")
    second = rig.engine.create(OperationKind.PREPARE, "contoso-web")
    rig.close()
    with sqlite3.connect(rig.store_path) as db:  # a step of the first this agent cannot read
        assert db.execute("UPDATE steps SET spec_version = 99 WHERE operation_id = ? AND ordinal = 0",
                          (first,)).rowcount == 1

    rig.restart()
    refused: list[tuple[str, AgentError]] = []
    views = rig.engine.resume_unfinished(on_failure=lambda op_id, exc: refused.append((op_id, exc)))

    assert [(op_id, "schema version 99" in exc.message) for op_id, exc in refused] == [(first, True)]
    assert [(v.id, v.status) for v in views] == [(second, OpStatus.SUCCEEDED.value)]
    assert rig.engine.view(first).status == OpStatus.PENDING.value
    trail = [(a.action, a.operation_id) for a in rig.store.audit_trail()]
    assert ("operation.resume_failed", first) in trail

"""A group's recovery-plan script runs at the site the operation makes active: the failover's
target on the way out, the original site on a failback -- with the Context telling it which."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from agent.engine.model import OperationKind, OpStatus
from tests.rigs import Rig

ROUND_TRIP = [OperationKind.PLANNED_FAILOVER, OperationKind.COMMIT, OperationKind.REVERSE, OperationKind.FAILBACK]


def test_failback_runs_the_script_at_the_site_it_returns_to(new_rig: Callable[..., Rig]) -> None:
    rig = new_rig()
    sites = {h.name: s.name for s in rig.config.sites for h in s.hyperv_hosts}
    ran: dict[OperationKind, Any] = {}
    for kind in ROUND_TRIP:
        view = rig.start(kind)
        assert view.status == OpStatus.SUCCEEDED.value, (kind, view.errors)
        runs = [s for s in rig.engine.journal.steps(view.id) if s.action == "script"]
        if runs:
            [item] = runs[0].outcome["items"]
            host = item["key"].split(":", 1)[0]
            context = json.loads(item["value"]["output"]["parameters"]["Context"])
            ran[kind] = (sites[host], context["kind"], context["direction"])
    east, west = "contoso-east", "contoso-west"
    assert ran == {OperationKind.PLANNED_FAILOVER: (west, "planned_failover", {"from": east, "to": west}),
                   OperationKind.FAILBACK: (east, "failback", {"from": west, "to": east})}

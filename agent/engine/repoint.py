"""The plan of a change of recovery point: the failover's own plan, each VM's point resolved
anew against the points its replica host lists now (``agent.domain.recovery``).

Everything else -- reservations, failover IPs, routes, DNS -- is the failover's and stays as it
left it; only which snapshot each replica comes up from changes, so the change's checksum differs
from the failover's exactly by the points.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import UTC

from agent.domain.model import Replication
from agent.domain.plan import Plan, PlannedVm
from agent.domain.recovery import resolve_point
from agent.domain.validation import PlanRefused, Refusal
from agent.errors import RefusedError
from agent.ports import Ports


def repoint(plan: Plan, choice: str | None, ports: Ports) -> Plan:
    """``plan`` (a failover's, as stored) with every VM brought up from ``choice``. Refused,
    naming each VM and the points it has, when a replica holds no such point; nothing changes."""
    if choice is None:
        raise RefusedError(f"a change_recovery_point of plan {plan.plan} names the point to change to: "
                           "--recovery-point latest, latest_app_consistent or a replica snapshot's name",
                           plan=plan.plan)
    by_host: dict[tuple[str, str], list[str]] = defaultdict(list)
    for v in plan.vms:
        by_host[(v.target_site, v.target_host)].append(v.name)
    reps: dict[str, Replication] = {}
    for (site, host), names in sorted(by_host.items()):
        reps.update((r.vm, r) for r in ports.hyperv[site].get_replications(host, names))
    vms: list[PlannedVm] = []
    refusals: list[Refusal] = []
    for v in plan.vms:
        rep = reps.get(v.name)
        found = resolve_point(v.name, choice, rep.recovery_points if rep is not None else ())
        if isinstance(found, Refusal):
            refusals.append(found)
            continue
        vms.append(replace(v, recovery_point=found.name if found else None,
                           recovery_point_at=found.created.astimezone(UTC).isoformat() if found else None,
                           recovery_point_app_consistent=found.app_consistent if found else False))
    if refusals:
        raise PlanRefused.of(refusals, plan=plan.plan, kind=plan.kind)
    return replace(plan, vms=tuple(vms), recovery_point=choice, _checksum=[])

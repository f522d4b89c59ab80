"""Checking address overrides against the sites, for ``validate`` and ``addresses import``.

The planner is the one judge of an override (which pool holds it, whether it is free): each
recovery plan with an overridden VM is planned -- a failover if one of its overrides gives a
failover address, a test failover if one gives a test address -- and the refusals about
overrides are kept. What one plan cannot see is checked here: a VM in no recovery plan, and the
same address given to VMs of different plans.
"""

from __future__ import annotations

from typing import NamedTuple

from agent.config import AgentConfig
from agent.domain import validation as v
from agent.domain.model import Inventory
from agent.domain.plan import PlanKind, ReserveIp
from agent.domain.planning import build_plan

Key = tuple[str, str, int]


class OverrideIssue(NamedTuple):
    """What is wrong with the override of ``key`` (VM, NIC, IP configuration); ``field`` is the
    field of :class:`~agent.config.AddressOverride` at fault (``vm``, ``nic``, ``failover`` ...)."""

    key: Key
    field: str
    message: str


def check_overrides(config: AgentConfig, inventory: Inventory) -> list[OverrideIssue]:
    overrides = {o.key: o for o in config.overrides}
    if not overrides:
        return []
    issues: list[OverrideIssue] = []
    in_plans = {vm for p in config.recovery_plans for vm in p.vms}
    for o in overrides.values():
        if o.vm not in in_plans:
            issues.append(OverrideIssue(o.key, "vm", f"VM {o.vm} is in no recovery plan: the override would never "
                                                     f"apply"))
    claimed: dict[tuple[str, str, str, str], Key] = {}
    for plan in config.recovery_plans:
        vms = set(plan.vms)
        mine = [o for o in overrides.values() if o.vm in vms]
        kinds: list[PlanKind] = []
        if any(o.failover for o in mine):
            kinds.append("planned")
        if any(o.test for o in mine):
            kinds.append("test")
        for kind in kinds:
            try:
                built = build_plan(config, inventory, plan.name, kind)
            except v.PlanRefused as exc:
                issues += [_issue(r) for r in exc.reasons if r.code in v.OVERRIDE_CODES]
                continue
            for c in built.of(ReserveIp):
                if not c.override:
                    continue
                key, place = (c.vm, c.nic, c.ip_index), (c.site, c.pool, c.address, c.purpose)
                first = claimed.setdefault(place, key)
                if first != key:
                    issues.append(OverrideIssue(key, c.purpose, (
                        f"VM {c.vm} NIC {c.nic} IP configuration {c.ip_index}: {c.purpose} override {c.address} in "
                        f"pool {c.pool} at {c.site} is also the override of VM {first[0]} NIC {first[1]} IP "
                        f"configuration {first[2]} (recovery plan {plan.name} and another)")))
    return list(dict.fromkeys(issues))


def _issue(r: v.Refusal) -> OverrideIssue:
    key = (str(r.fields["vm"]), str(r.fields["nic"]), int(r.fields["ip_configuration"]))
    return OverrideIssue(key, str(r.fields.get("field") or r.fields.get("purpose") or "vm"), r.message)


__all__ = ["OverrideIssue", "check_overrides"]
